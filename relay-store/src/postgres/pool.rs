//! A small pool of blocking PostgreSQL connections.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement};

use relay_core::store::StoreError;

use super::{pg_err, schema};

/// How long an operation waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an operation is tried when its connection broke or
/// PostgreSQL aborted it (deadlock, serialization failure).
const ATTEMPTS: usize = 3;

/// The statements of the queue, prepared once per connection.
pub(super) struct Statements {
    pub lock_total: Statement,
    pub insert: Statement,
    pub existing: Statement,
    pub ack: Statement,
    pub forget_expired: Statement,
    pub forget_oldest: Statement,
    pub acked_bytes: Statement,
    pub forget_bytes: Statement,
    pub next: Statement,
    pub queued: Statement,
    pub totals: Statement,
}

/// An insert in one round trip: the duplicate checks and the counters
/// (returned, so the caller can say why nothing was stored) and, if the key
/// is neither queued nor remembered and the entry fits every quota, the
/// insert. `$1` destination, `$2` origin, `$3` txn ID, `$4` the cutoff of
/// remembered keys, `$5` the body, `$6` when it was received, `$7` its
/// cost, `$8`..`$15` the limits as decimal text: destination entries and
/// bytes, the origin's share of them, origin entries and bytes, total
/// entries and bytes.
///
/// Implementation note: the limits are `u64` and compared as `numeric`, so
/// the test is [`refused_by`](crate::quota_rules::refused_by)'s exactly (counters
/// below zero or missing count as zero; no sum can reach `u64::MAX`, so
/// its saturation never matters). All parts of a statement see one
/// snapshot: the counters are those from before the insert.
const INSERT: &str = "\
WITH c AS (
    SELECT (SELECT entry_id FROM queue
            WHERE origin = $2 AND destination = $1 AND txn_id = $3) AS queued,
           d.entries AS d_entries, d.bytes AS d_bytes,
           p.entries AS p_entries, p.bytes AS p_bytes,
           o.entries AS o_entries, o.bytes AS o_bytes,
           t.entries AS t_entries, t.bytes AS t_bytes,
           EXISTS (SELECT 1 FROM acked
                   WHERE origin = $2 AND destination = $1 AND txn_id = $3
                   AND acked_at > $4::bigint) AS acked
    FROM total_usage t
    LEFT JOIN destination_usage d ON d.destination = $1
    LEFT JOIN pair_usage p ON p.destination = $1 AND p.origin = $2
    LEFT JOIN origin_usage o ON o.origin = $2
    WHERE t.id = 0
), stored AS (
    INSERT INTO queue (destination, origin, txn_id, body, received, cost)
    SELECT $1, $2, $3, $5::bytea, $6::bigint, $7::bigint FROM c
    WHERE c.queued IS NULL AND NOT c.acked
      AND greatest(c.d_entries, 0)::numeric + 1 <= $8::text::numeric
      AND greatest(c.d_bytes, 0)::numeric + $7::bigint <= $9::text::numeric
      AND greatest(c.p_entries, 0)::numeric + 1 <= $10::text::numeric
      AND greatest(c.p_bytes, 0)::numeric + $7::bigint <= $11::text::numeric
      AND greatest(c.o_entries, 0)::numeric + 1 <= $12::text::numeric
      AND greatest(c.o_bytes, 0)::numeric + $7::bigint <= $13::text::numeric
      AND greatest(c.t_entries, 0)::numeric + 1 <= $14::text::numeric
      AND greatest(c.t_bytes, 0)::numeric + $7::bigint <= $15::text::numeric
    ON CONFLICT (origin, destination, txn_id) DO NOTHING
    RETURNING entry_id
)
SELECT c.queued, c.d_entries, c.d_bytes, c.p_entries, c.p_bytes, c.o_entries, c.o_bytes,
       c.t_entries, c.t_bytes, c.acked, (SELECT entry_id FROM stored)
FROM c";

/// An acknowledgement in one round trip: deletes entry `$2` if it belongs
/// to destination `$1` and, if it did and `$4`, remembers its key as
/// acknowledged at `$3` (a new `seq`, also for a key remembered already).
/// Returns whether an entry was deleted, and the key's `seq` if it was
/// remembered.
///
/// Implementation note: forgetting the keys past the cap stays a statement
/// of its own (`forget_oldest`), run only once the cap is reached. Inside
/// this one, its bound would be unknown when the plan is made, and
/// PostgreSQL may then scan all of `acked` instead of a range of its
/// primary key; as a parameter of its own statement, the plan sees it.
const ACK: &str = "\
WITH gone AS (
    DELETE FROM queue WHERE destination = $1::text AND entry_id = $2::bigint
    RETURNING origin, txn_id
), remembered AS (
    INSERT INTO acked (destination, origin, txn_id, acked_at, cost)
    SELECT $1, origin, txn_id, $3::bigint,
           2 * (octet_length(origin) + octet_length($1::text) + octet_length(txn_id)) + 64
    FROM gone WHERE $4::boolean
    ON CONFLICT (origin, destination, txn_id)
    DO UPDATE SET acked_at = EXCLUDED.acked_at, seq = EXCLUDED.seq
    RETURNING seq
)
SELECT EXISTS (SELECT 1 FROM gone), (SELECT seq FROM remembered)";

/// Forgets the oldest remembered keys whose costs add up to at least `$1`
/// bytes (the fewest that do), among the oldest 1,000: the caller repeats
/// it while the bytes are past their bound.
const FORGET_BYTES: &str = "\
DELETE FROM acked WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, cost, sum(cost) OVER (ORDER BY seq) AS run
        FROM (SELECT seq, cost FROM acked ORDER BY seq LIMIT 1000) oldest
    ) w
    WHERE w.run - w.cost < $1::bigint
)";

/// One connection with its prepared statements.
pub(super) struct Conn {
    pub client: Client,
    pub stmts: Statements,
}

/// Up to `max` connections, opened on demand and kept while they work.
pub(super) struct Pool {
    config: Config,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Conn>,
    /// Connections in existence: idle, lent out, or being opened.
    open: usize,
}

impl Pool {
    /// A pool of at most `max` connections made with `config`; opens one
    /// connection now, migrating the schema on it (or, without `migrate`,
    /// checking that it is current), so a bad URL or a newer schema fails
    /// here.
    pub(super) fn open(config: Config, max: usize, migrate: bool) -> Result<Self, StoreError> {
        let mut client = connect(&config)?;
        if migrate {
            schema::migrate(&mut client)?;
        } else {
            schema::check(&mut client)?;
        }
        let first = Conn::new(client)?;
        Ok(Self {
            config,
            max: max.max(1),
            state: Mutex::new(State {
                idle: vec![first],
                open: 1,
            }),
            freed: Condvar::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a list and a count; a panic cannot break them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on a pooled connection. When the connection turns out to
    /// be broken, or PostgreSQL aborted the transaction to break a deadlock
    /// or a serialization conflict, `f` is run again (on a new connection
    /// if the old one broke), up to [`ATTEMPTS`] times in all; `f` must
    /// therefore be one transaction, or safe to repeat.
    pub(super) fn run<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let mut conn = self.acquire()?;
            let result = f(&mut conn);
            let broken = conn.client.is_closed();
            let err = match result {
                Ok(value) => {
                    self.release(conn, false);
                    return Ok(value);
                }
                Err(err) => err,
            };
            self.release(conn, broken);
            let retry = broken
                || matches!(
                    err.code(),
                    Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
                );
            if retry && attempt < ATTEMPTS {
                tracing::warn!(%err, attempt, "PostgreSQL operation failed; retrying");
                attempt += 1;
                continue;
            }
            return Err(pg_err(what)(err));
        }
    }

    /// An idle connection, or a new one if fewer than `max` exist; else
    /// waits for one to be released.
    fn acquire(&self) -> Result<Conn, StoreError> {
        let mut state = self.state();
        loop {
            if let Some(conn) = state.idle.pop() {
                if !conn.client.is_closed() {
                    return Ok(conn);
                }
                state.open -= 1;
                drop(state);
                close(vec![conn]);
                state = self.state();
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                let conn = connect(&self.config).and_then(Conn::new);
                if conn.is_err() {
                    self.state().open -= 1;
                    self.freed.notify_one();
                }
                return conn;
            }
            let (next, timeout) = self
                .freed
                .wait_timeout(state, ACQUIRE_TIMEOUT)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if timeout.timed_out() && state.idle.is_empty() && state.open >= self.max {
                return Err(StoreError(format!(
                    "PostgreSQL: no free connection after {ACQUIRE_TIMEOUT:?} ({} in use)",
                    self.max
                )));
            }
        }
    }

    /// Puts `conn` back, or closes it (and every idle one, which likely
    /// broke the same way) when it is `broken`.
    fn release(&self, conn: Conn, broken: bool) {
        let mut state = self.state();
        if broken {
            let mut dead = std::mem::take(&mut state.idle);
            dead.push(conn);
            state.open -= dead.len();
            drop(state);
            self.freed.notify_all();
            close(dead);
        } else {
            state.idle.push(conn);
            drop(state);
            self.freed.notify_one();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state().idle);
        close(idle);
    }
}

impl Conn {
    fn new(mut client: Client) -> Result<Self, StoreError> {
        let mut prepare = |sql: &str| client.prepare(sql).map_err(pg_err("prepare statement"));
        let stmts = Statements {
            lock_total: prepare("SELECT 1 FROM total_usage WHERE id = 0 FOR UPDATE")?,
            insert: prepare(INSERT)?,
            existing: prepare(
                "SELECT entry_id FROM queue WHERE origin = $1 AND destination = $2 AND txn_id = $3",
            )?,
            ack: prepare(ACK)?,
            forget_expired: prepare(
                "DELETE FROM acked WHERE seq IN \
                 (SELECT seq FROM acked WHERE acked_at <= $1 ORDER BY acked_at LIMIT $2)",
            )?,
            forget_oldest: prepare("DELETE FROM acked WHERE seq <= $1")?,
            acked_bytes: prepare("SELECT acked_bytes FROM total_usage WHERE id = 0")?,
            forget_bytes: prepare(FORGET_BYTES)?,
            next: prepare(
                "SELECT entry_id, origin, txn_id, body FROM queue WHERE destination = $1 \
                 AND received >= $2 ORDER BY entry_id LIMIT $3",
            )?,
            queued: prepare("SELECT entries FROM destination_usage WHERE destination = $1")?,
            totals: prepare("SELECT entries, bytes FROM total_usage WHERE id = 0")?,
        };
        Ok(Self { client, stmts })
    }
}

/// A new connection with the session settings the store relies on.
fn connect(config: &Config) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls).map_err(pg_err("connect"))?;
    // On, whatever the server's default: a commit is flushed to disk (and
    // to synchronous standbys) before the relay answers 200.
    client
        .batch_execute("SET synchronous_commit = on")
        .map_err(pg_err("set synchronous_commit"))?;
    Ok(client)
}

/// Closes connections on a thread of its own.
///
/// Implementation note: the blocking client runs its own small runtime;
/// closing it from inside an async runtime (a store dropped by a task)
/// would panic, so closing never happens on the caller's thread.
fn close(conns: Vec<Conn>) {
    if conns.is_empty() {
        return;
    }
    let closer = std::thread::Builder::new()
        .name("relay-store-pg-close".into())
        .spawn(move || drop(conns));
    match closer {
        Ok(thread) => {
            if thread.join().is_err() {
                tracing::warn!("closing PostgreSQL connections panicked");
            }
        }
        Err(e) => tracing::warn!(%e, "cannot start a thread to close PostgreSQL connections"),
    }
}
