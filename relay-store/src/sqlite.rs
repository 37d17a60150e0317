//! The SQLite backend: WAL, `synchronous=FULL`, group commit.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use relay_core::outbound::{DestinationRecord, OutboundChange};
use relay_core::retriever::{self, DedupeKey};
use relay_core::store::{Ack, InsertOutcome, NewEntry, Quota, StoreError};
use relay_core::{ServerName, UnixMillis};

use crate::shared::{self, Reply};
use crate::{
    AckBatch, AckNext, DedupeStore, DestinationUsage, OutboundStore, QueueStore, QueueTotals, Take,
};

mod dedupe_sql;
mod disk;
mod outbound_sql;
mod queue_sql;
mod rows;
mod schema;

pub use disk::{
    DEFAULT_DISK_REFRESH, DEFAULT_DISK_RESERVE_BYTES, DEFAULT_MIN_FREE_DISK_BYTES, DiskGuard,
    FreeSpace, Statvfs,
};
pub use schema::SQLITE_SCHEMA_VERSION;

use disk::Disk;

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay's queue ([`QueueStore`]), a node's sender state
/// ([`OutboundStore`]) and its recipient's de-duplication window
/// ([`DedupeStore`]) in an SQLite file (WAL, `synchronous=FULL`), in tables
/// of their own under one schema version. One store may serve all three,
/// and several stores (or processes) may open one file.
///
/// Implementation note: group commit. One writer thread owns the write
/// connection. Callers send their operation over a channel and block on the
/// reply; the writer takes one operation, drains whatever else is already
/// waiting (up to 512), runs them all in one `BEGIN IMMEDIATE … COMMIT`,
/// each inside its own savepoint so a failing operation is rolled back
/// alone, and answers every caller only after `COMMIT` returned. One fsync
/// then covers a whole batch. If the batch cannot commit, every operation
/// in it fails and nothing is half-stored; if a write in it found the disk
/// full, it is rolled back whole, its inserts are answered
/// [`InsertOutcome::DiskLow`] and its other operations are written again
/// without them (after the [`DiskGuard`]'s reserve is released). An `apply` or `apply_window` is
/// one operation, so its changes share one savepoint. Reads that change
/// nothing (`ack_and_next` without an ack, `queued`, `load`,
/// `load_window`) use a separate reader connection and never wait for a
/// commit. Dropping the store stops and joins the writer.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    ops: Option<Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
}

/// One operation for the writer, with where its answer goes.
#[derive(Debug)]
enum Op {
    Insert {
        entry: NewEntry,
        quota: Quota,
        reply: Reply<InsertOutcome>,
    },
    AckAndNext {
        destination: ServerName,
        ack: Ack,
        expired_before: UnixMillis,
        reply: Reply<AckNext>,
    },
    Apply {
        changes: Vec<OutboundChange>,
        reply: Reply<()>,
    },
    ApplyWindow {
        changes: Vec<retriever::WindowChange>,
        reply: Reply<()>,
    },
    AckBatch {
        destination: ServerName,
        acks: Vec<Ack>,
        take: Take,
        expired_before: UnixMillis,
        reply: Reply<AckBatch>,
    },
    PurgeSome {
        destination: ServerName,
        limit: usize,
        reply: Reply<QueueTotals>,
    },
    Expire {
        expired_before: UnixMillis,
        limit: usize,
        reply: Reply<QueueTotals>,
    },
}

/// An operation's result, held until its batch has committed.
enum Answer {
    Insert(Reply<InsertOutcome>, Result<InsertOutcome, StoreError>),
    Next(Reply<AckNext>, Result<AckNext, StoreError>),
    Batch(Reply<AckBatch>, Result<AckBatch, StoreError>),
    Applied(Reply<()>, Result<(), StoreError>),
    Purged(Reply<QueueTotals>, Result<QueueTotals, StoreError>),
}

thread_local! {
    /// Whether a statement on this thread failed with `SQLITE_FULL` since
    /// the writer last cleared it.
    ///
    /// Implementation note: the SQL helpers answer [`StoreError`], which
    /// has no kinds; every rusqlite error passes through [`db_err`], which
    /// notes this one here, so the writer learns of a full disk without
    /// reading error text.
    static DISK_FULL: Cell<bool> = const { Cell::new(false) };
}

/// Maps a rusqlite error to a [`StoreError`] saying what was being done.
fn db_err(what: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            DISK_FULL.set(true);
        }
        StoreError(format!("sqlite: {what}: {e}"))
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `path`, and
    /// starts the writer thread. Refuses a database whose schema version is
    /// newer than [`SQLITE_SCHEMA_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), true, None)
    }

    /// [`SqliteStore::open`], keeping room on the disk as `guard` says:
    /// inserts are refused ([`InsertOutcome::DiskLow`]) while free space
    /// is short, and a reserve file lets acknowledgements through when the
    /// disk fills. Without a guard an insert is refused only once a write
    /// found the disk full. One process should guard a database file.
    pub fn open_guarded(path: impl AsRef<Path>, guard: DiskGuard) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), true, Some(guard))
    }

    /// Opens an existing relay database at `path` without changing its
    /// schema: refuses a missing file, and one that is not a relay
    /// database of exactly [`SQLITE_SCHEMA_VERSION`] (for tools that must not
    /// create or migrate one under a running relay).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError(format!(
                "sqlite: {}: no such file",
                path.display()
            )));
        }
        Self::open_inner(path, false, None)
    }

    fn open_inner(
        path: &Path,
        migrate: bool,
        guard: Option<DiskGuard>,
    ) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let mut writer = connect(&path)?;
        if !migrate {
            schema::check(&writer)?;
        }
        let mode: String = if migrate {
            writer
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(db_err("enable WAL"))?
        } else {
            writer
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .map_err(db_err("read the journal mode"))?
        };
        // WAL is what lets the reader work beside the writer, and what makes
        // FULL cheap; a database that cannot use it is refused.
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!(
                "sqlite: {} cannot use WAL journal mode (got {mode:?})",
                path.display()
            )));
        }
        if migrate {
            schema::migrate(&mut writer)?;
        }

        let reader = connect(&path)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(db_err("configure reader"))?;

        if let Some(guard) = &guard {
            bound_wal(&writer, guard.wal_bytes)?;
        }
        let disk = guard.map(|guard| Disk::open(&path, guard, &writer));
        let (ops, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relay-store-writer".into())
            .spawn(move || write_loop(writer, queue, disk))
            .map_err(|e| StoreError(format!("cannot start the SQLite writer thread: {e}")))?;
        tracing::debug!(path = %path.display(), "opened SQLite queue store");
        Ok(Self {
            path,
            ops: Some(ops),
            writer: Some(thread),
            reader: Mutex::new(reader),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands an operation to the writer and waits for its answer.
    fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        shared::call(self.ops.as_ref(), "SQLite", op)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        // The connection holds no Rust-side invariants a panic could break.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection with the settings every connection of the store needs.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError(format!("sqlite: open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err("set busy timeout"))?;
    // FULL: a commit is on disk before the relay answers 200, even across
    // power loss (NORMAL in WAL mode only survives a process crash).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err("set synchronous=FULL"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(db_err("enable foreign keys"))?;
    bound_wal(&conn, DEFAULT_WAL_BYTES)?;
    // Sorts and temporary tables in memory: no file to write when the disk
    // is full.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db_err("set temp_store=MEMORY"))?;
    Ok(conn)
}

/// Bounds the WAL of `conn`'s database to about `bytes`: a commit past
/// them checkpoints, and a checkpointed WAL is cut back to them. So the
/// byte quota, which counts rows, bounds the files on disk too.
///
/// Implementation note: the smaller the WAL, the more often the same
/// pages are copied into the database: 512 KiB instead of SQLite's 4 MiB
/// cost a third of the ingest rate in the benchmark. Hence the WAL follows
/// the relay's quota ([`wal_bytes_for`]).
fn bound_wal(conn: &Connection, bytes: u64) -> Result<(), StoreError> {
    let pages = i64::try_from(bytes / 4096).unwrap_or(i64::MAX).max(1);
    conn.pragma_update(None, "wal_autocheckpoint", pages)
        .map_err(db_err("set wal_autocheckpoint"))?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        i64::try_from(bytes).unwrap_or(i64::MAX),
    )
    .map_err(db_err("set journal_size_limit"))?;
    Ok(())
}

/// SQLite's own WAL bound: 1,000 pages of 4 KiB.
pub const DEFAULT_WAL_BYTES: u64 = 4_096_000;

/// The WAL bound for a relay holding at most `total_bytes`: half of it,
/// within 512 KiB and [`DEFAULT_WAL_BYTES`], so that the files stay within
/// 1.5 times the quota plus 2 MiB.
pub fn wal_bytes_for(total_bytes: u64) -> u64 {
    (total_bytes / 2).clamp(512 << 10, DEFAULT_WAL_BYTES)
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it is idle.
        drop(self.ops.take());
        if let Some(thread) = self.writer.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite writer thread panicked");
        }
    }
}

impl QueueStore for SqliteStore {
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError> {
        let quota = *quota;
        self.call(|reply| Op::Insert {
            entry,
            quota,
            reply,
        })
    }

    fn ack_and_next_unexpired(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) -> Result<AckNext, StoreError> {
        match ack {
            Some(ack) => self.call(|reply| Op::AckAndNext {
                destination: destination.clone(),
                ack,
                expired_before,
                reply,
            }),
            None => Ok(AckNext {
                acked: false,
                next: queue_sql::next(&self.reader(), destination, expired_before)?,
            }),
        }
    }

    fn ack_and_next_batch(
        &self,
        destination: &ServerName,
        acks: &[Ack],
        take: Take,
        expired_before: UnixMillis,
    ) -> Result<AckBatch, StoreError> {
        if acks.is_empty() {
            let rows = queue_sql::oldest(
                &self.reader(),
                destination,
                expired_before,
                take.entries.saturating_add(1),
            )?;
            let (entries, more) = take.cut(rows);
            return Ok(AckBatch {
                acked: 0,
                entries,
                more,
            });
        }
        self.call(|reply| Op::AckBatch {
            destination: destination.clone(),
            acks: acks.to_vec(),
            take,
            expired_before,
            reply,
        })
    }

    fn expire(&self, expired_before: UnixMillis, limit: usize) -> Result<QueueTotals, StoreError> {
        self.call(|reply| Op::Expire {
            expired_before,
            limit,
            reply,
        })
    }

    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError> {
        queue_sql::queued(&self.reader(), destination)
    }

    fn totals(&self) -> Result<QueueTotals, StoreError> {
        queue_sql::totals(&self.reader())
    }

    fn destinations(&self, limit: usize) -> Result<Vec<DestinationUsage>, StoreError> {
        queue_sql::destinations(&self.reader(), limit)
    }

    /// Implementation note: in chunks of 1,000 entries, each a write of its
    /// own, so that a long queue does not hold the database's write lock
    /// past the relay's busy timeout.
    fn purge(&self, destination: &ServerName) -> Result<QueueTotals, StoreError> {
        shared::purge_in_chunks(|limit| {
            self.call(|reply| Op::PurgeSome {
                destination: destination.clone(),
                limit,
                reply,
            })
        })
    }
}

impl OutboundStore for SqliteStore {
    fn apply(&self, changes: &[OutboundChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.call(|reply| Op::Apply {
            changes: changes.to_vec(),
            reply,
        })
    }

    fn load(&self) -> Result<Vec<DestinationRecord>, StoreError> {
        outbound_sql::load(&mut self.reader())
    }
}

impl DedupeStore for SqliteStore {
    fn apply_window(&self, changes: &[retriever::WindowChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.call(|reply| Op::ApplyWindow {
            changes: changes.to_vec(),
            reply,
        })
    }

    fn load_window(&self) -> Result<Vec<Vec<DedupeKey>>, StoreError> {
        dedupe_sql::load(&self.reader())
    }
}

/// The writer thread: batches until every sender is gone.
fn write_loop(mut conn: Connection, ops: Receiver<Op>, mut disk: Option<Disk>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(disk) = disk.as_mut() {
            disk.refresh(&conn, Instant::now());
        }
        for answer in write_batch(&mut conn, &batch, disk.as_mut()) {
            answer.send();
        }
    }
}

/// Runs `batch` in one transaction. If a write found the disk full, nothing
/// of it was stored: its inserts are refused as [`InsertOutcome::DiskLow`],
/// the disk reserve is given back, and the other operations (which free
/// space, or hold a node's state) run again, in a transaction without the
/// inserts.
fn write_batch(conn: &mut Connection, batch: &[Op], mut disk: Option<&mut Disk>) -> Vec<Answer> {
    let all: Vec<&Op> = batch.iter().collect();
    let first = run_batch(conn, &all, &mut |len| {
        disk.as_deref_mut().is_none_or(|d| d.admit(len))
    });
    let Err(DiskFull) = first else {
        return first.unwrap_or_default();
    };
    let released = disk.is_some_and(|d| d.hit_full(Instant::now()));
    let (inserts, rest): (Vec<&Op>, Vec<&Op>) = all.into_iter().partition(|op| op.is_insert());
    tracing::warn!(
        inserts = inserts.len(),
        others = rest.len(),
        released,
        "the disk is full: refusing the batch's inserts, writing the rest again"
    );
    let mut answers: Vec<Answer> = inserts.into_iter().map(Op::disk_low).collect();
    if rest.is_empty() {
        return answers;
    }
    match run_batch(conn, &rest, &mut |_| false) {
        Ok(done) => answers.extend(done),
        Err(DiskFull) => {
            let err = StoreError("sqlite: the disk is full".into());
            tracing::error!(%err, size = rest.len(), "storage batch failed; nothing of it was stored");
            answers.extend(rest.into_iter().map(|op| op.fail(err.clone())));
        }
    }
    answers
}

/// A write found the disk full; the batch was rolled back whole.
#[derive(Debug)]
struct DiskFull;

/// Runs `batch` in one transaction and returns the answers to send, which
/// are all errors unless the transaction committed; `room` admits each
/// insert's bytes. `Err` if a write found the disk full (then nothing was
/// committed).
fn run_batch(
    conn: &mut Connection,
    batch: &[&Op],
    room: &mut dyn FnMut(u64) -> bool,
) -> Result<Vec<Answer>, DiskFull> {
    DISK_FULL.set(false);
    let size = batch.len();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let err = db_err("begin transaction")(e);
            if DISK_FULL.get() {
                return Err(DiskFull);
            }
            tracing::error!(%err, size, "storage batch failed");
            return Ok(batch.iter().map(|op| op.fail(err.clone())).collect());
        }
    };
    let mut answers = Vec::with_capacity(size);
    let mut broken = None;
    for op in batch {
        if let Some(err) = &broken {
            answers.push(op.fail(StoreError::clone(err)));
            continue;
        }
        let (answer, state) = run_in_savepoint(&tx, op, room);
        answers.push(answer);
        if let Err(err) = state {
            broken = Some(err);
        }
    }
    // Nothing of a batch that found the disk full is kept, even if what
    // is left could commit: its inserts are refused, the rest tried again.
    if DISK_FULL.get() {
        return Err(DiskFull);
    }
    let outcome = match broken {
        // The transaction is unusable; dropping it rolls back what is left.
        Some(err) => Err(err),
        None => tx.commit().map_err(db_err("commit")),
    };
    match outcome {
        Ok(()) => {
            tracing::trace!(size, "committed storage batch");
            Ok(answers)
        }
        Err(_) if DISK_FULL.get() => Err(DiskFull),
        Err(err) => {
            tracing::error!(%err, size, "storage batch failed; nothing of it was stored");
            Ok(answers.into_iter().map(|a| a.fail(err.clone())).collect())
        }
    }
}

/// Runs one operation inside a savepoint, rolling it back alone if it
/// fails. The second result is an error when the enclosing transaction can
/// no longer commit.
fn run_in_savepoint(
    conn: &Connection,
    op: &Op,
    room: &mut dyn FnMut(u64) -> bool,
) -> (Answer, Result<(), StoreError>) {
    if let Err(e) = conn.execute_batch("SAVEPOINT op") {
        let err = db_err("begin savepoint")(e);
        return (op.fail(err.clone()), Err(err));
    }
    let answer = op.run(conn, room);
    let end = if answer.error().is_none() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    let state = conn.execute_batch(end).map_err(db_err("end savepoint"));
    // Some errors (disk full, I/O) make SQLite roll back the whole
    // transaction; later statements would then run in autocommit mode.
    let state = state.and_then(|()| {
        if conn.is_autocommit() {
            Err(StoreError("sqlite: the transaction was rolled back".into()))
        } else {
            Ok(())
        }
    });
    if let Some(err) = answer.error() {
        tracing::warn!(%err, "storage operation failed");
    }
    (answer, state)
}

/// Operations run by reference, their replies cloned into the answers, so
/// that a batch that found the disk full can run again.
impl Op {
    fn run(&self, conn: &Connection, room: &mut dyn FnMut(u64) -> bool) -> Answer {
        match self {
            Op::Insert {
                entry,
                quota,
                reply,
            } => Answer::Insert(reply.clone(), queue_sql::insert(conn, entry, quota, room)),
            Op::AckAndNext {
                destination,
                ack,
                expired_before,
                reply,
            } => {
                let result = queue_sql::ack(conn, destination, ack).and_then(|acked| {
                    let next = queue_sql::next(conn, destination, *expired_before)?;
                    Ok(AckNext { acked, next })
                });
                Answer::Next(reply.clone(), result)
            }
            Op::AckBatch {
                destination,
                acks,
                take,
                expired_before,
                reply,
            } => {
                let result = acks
                    .iter()
                    .try_fold(0, |n, ack| {
                        Ok::<_, StoreError>(n + u64::from(queue_sql::ack(conn, destination, ack)?))
                    })
                    .and_then(|acked| {
                        let rows = queue_sql::oldest(
                            conn,
                            destination,
                            *expired_before,
                            take.entries.saturating_add(1),
                        )?;
                        let (entries, more) = take.cut(rows);
                        Ok(AckBatch {
                            acked,
                            entries,
                            more,
                        })
                    });
                Answer::Batch(reply.clone(), result)
            }
            Op::Apply { changes, reply } => {
                Answer::Applied(reply.clone(), outbound_sql::apply(conn, changes))
            }
            Op::ApplyWindow { changes, reply } => {
                Answer::Applied(reply.clone(), dedupe_sql::apply(conn, changes))
            }
            Op::PurgeSome {
                destination,
                limit,
                reply,
            } => Answer::Purged(
                reply.clone(),
                queue_sql::purge_some(conn, destination, *limit),
            ),
            Op::Expire {
                expired_before,
                limit,
                reply,
            } => Answer::Purged(
                reply.clone(),
                queue_sql::expire(conn, *expired_before, *limit),
            ),
        }
    }

    fn is_insert(&self) -> bool {
        matches!(self, Op::Insert { .. })
    }

    /// The answer to an insert refused for want of disk space (to any other
    /// operation, that the disk is full).
    fn disk_low(&self) -> Answer {
        match self {
            Op::Insert { reply, .. } => Answer::Insert(reply.clone(), Ok(InsertOutcome::DiskLow)),
            other => other.fail(StoreError("sqlite: the disk is full".into())),
        }
    }

    fn fail(&self, err: StoreError) -> Answer {
        match self {
            Op::Insert { reply, .. } => Answer::Insert(reply.clone(), Err(err)),
            Op::AckAndNext { reply, .. } => Answer::Next(reply.clone(), Err(err)),
            Op::AckBatch { reply, .. } => Answer::Batch(reply.clone(), Err(err)),
            Op::Apply { reply, .. } | Op::ApplyWindow { reply, .. } => {
                Answer::Applied(reply.clone(), Err(err))
            }
            Op::PurgeSome { reply, .. } | Op::Expire { reply, .. } => {
                Answer::Purged(reply.clone(), Err(err))
            }
        }
    }
}

impl Answer {
    fn error(&self) -> Option<&StoreError> {
        match self {
            Answer::Insert(_, r) => r.as_ref().err(),
            Answer::Next(_, r) => r.as_ref().err(),
            Answer::Batch(_, r) => r.as_ref().err(),
            Answer::Applied(_, r) => r.as_ref().err(),
            Answer::Purged(_, r) => r.as_ref().err(),
        }
    }

    fn fail(self, err: StoreError) -> Answer {
        match self {
            Answer::Insert(reply, _) => Answer::Insert(reply, Err(err)),
            Answer::Next(reply, _) => Answer::Next(reply, Err(err)),
            Answer::Batch(reply, _) => Answer::Batch(reply, Err(err)),
            Answer::Applied(reply, _) => Answer::Applied(reply, Err(err)),
            Answer::Purged(reply, _) => Answer::Purged(reply, Err(err)),
        }
    }

    fn send(self) {
        // A caller that stopped waiting (its thread is gone) needs no answer.
        match self {
            Answer::Insert(reply, r) => drop(reply.send(r)),
            Answer::Next(reply, r) => drop(reply.send(r)),
            Answer::Batch(reply, r) => drop(reply.send(r)),
            Answer::Applied(reply, r) => drop(reply.send(r)),
            Answer::Purged(reply, r) => drop(reply.send(r)),
        }
    }
}

#[cfg(test)]
mod tests;
