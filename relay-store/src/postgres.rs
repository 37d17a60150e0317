//! The PostgreSQL backend of the relay's queue: several relay processes may
//! share one database.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use postgres::Config;

use relay_core::store::{Ack, InsertOutcome, NewEntry, Quota, StoreError};
use relay_core::{ServerName, UnixMillis};

use crate::shared;
use crate::{AckBatch, AckNext, DestinationUsage, QueueStore, QueueTotals, Take};

mod pool;
mod schema;
mod sql;
mod writer;

pub use schema::POSTGRES_SCHEMA_VERSION;
#[cfg(feature = "conformance")]
pub(crate) use schema::migrate_to;

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// How long connecting may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an insert is tried when the duplicate it met was acknowledged
/// before its ID could be read.
const INSERT_ATTEMPTS: usize = 5;

/// The relay's queue ([`QueueStore`]) in a PostgreSQL database, with the
/// same semantics as [`SqliteStore`](crate::SqliteStore), correct across
/// processes: several relays may serve from one database.
///
/// - Idempotent insert by a unique key (`INSERT … ON CONFLICT DO NOTHING`,
///   then the existing row's ID), never check-then-insert.
/// - Quotas are checked in the inserting transaction, on usage counters
///   that triggers keep, under a lock every writer takes first.
/// - Entry IDs come from an identity column; "oldest" is the lowest
///   committed entry ID of the destination.
/// - Acknowledgement deletes exactly one entry of one destination and
///   remembers its key in the same transaction; an insert of a remembered
///   key is `AlreadyDelivered`. The same lock orders the two.
/// - Every session runs with `synchronous_commit = on`, so an operation has
///   been flushed when it returns.
///
/// Implementation note: blocking, like SQLite's backend, on the sync
/// `postgres` client, with a small pool of its own (at most
/// [`DEFAULT_MAX_CONNECTIONS`] unless opened with
/// [`PostgresStore::open_with`]). Exact quotas need writers serialised:
/// every write transaction first locks the one `total_usage` row, across
/// processes. So writes are group-committed, as in SQLite: one writer
/// thread per store takes an insert or acknowledgement, drains whatever
/// else is waiting (up to 256), runs them in one transaction and answers
/// each caller after the commit; if the batch fails, each of its operations
/// runs again in a transaction of its own, so one bad operation fails
/// alone. Reads (`ack_and_next`'s read, `queued`) run on pooled connections
/// beside it. A connection that broke is dropped, and the work tried again
/// on a new one: inserts and acknowledgements are idempotent, so a retry
/// after a commit whose answer was lost is harmless (an insert then answers
/// `Duplicate`).
pub struct PostgresStore {
    // Dropped first: the writer's thread uses the pool until it stops.
    writer: writer::Writer,
    pool: Arc<pool::Pool>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration holds the password: never printed.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// Maps a `postgres` error to a [`StoreError`] saying what was being done.
/// The client's errors never contain the connection's password.
fn pg_err(what: &str) -> impl Fn(postgres::Error) -> StoreError + '_ {
    move |e| {
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        StoreError(format!("PostgreSQL: {what}: {detail}"))
    }
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://…` or
    /// `postgresql://…`, as libpq reads it) and migrates its schema; refuses
    /// a database whose schema version is newer than
    /// [`POSTGRES_SCHEMA_VERSION`]. Errors never repeat the URL.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, DEFAULT_MAX_CONNECTIONS)
    }

    /// [`open`](Self::open), with at most `max_connections` connections
    /// (at least one).
    pub fn open_with(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        Self::open_inner(url, max_connections, true)
    }

    /// Opens the relay's tables without changing their schema: refuses a
    /// database that does not hold them at exactly
    /// [`POSTGRES_SCHEMA_VERSION`] (for tools that must not create or
    /// migrate them under a running relay).
    pub fn open_existing(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        Self::open_inner(url, max_connections, false)
    }

    fn open_inner(url: &str, max_connections: usize, migrate: bool) -> Result<Self, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("matrix-relay");
        }
        let pool = Arc::new(pool::Pool::open(config, max_connections, migrate)?);
        let writer = writer::Writer::start(Arc::clone(&pool))?;
        tracing::debug!("opened PostgreSQL queue store");
        Ok(Self { writer, pool })
    }
}

impl QueueStore for PostgresStore {
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError> {
        for _ in 0..INSERT_ATTEMPTS {
            let inserted = self.writer.insert(entry.clone(), *quota)?;
            if let Some(outcome) = sql::outcome(inserted)? {
                return Ok(outcome);
            }
        }
        Err(StoreError(format!(
            "PostgreSQL: insert entry: its duplicate kept vanishing ({INSERT_ATTEMPTS} attempts)"
        )))
    }

    fn ack_and_next_unexpired(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) -> Result<AckNext, StoreError> {
        let acked = match ack {
            Some(ack) => self.writer.ack(destination, vec![ack])? > 0,
            None => false,
        };
        let rows = self.pool.run("read next entry", |conn| {
            sql::oldest(conn, destination, expired_before, 1)
        })?;
        Ok(AckNext {
            acked,
            next: sql::decode(rows)?.pop(),
        })
    }

    fn ack_and_next_batch(
        &self,
        destination: &ServerName,
        acks: &[Ack],
        take: Take,
        expired_before: UnixMillis,
    ) -> Result<AckBatch, StoreError> {
        let acked = if acks.is_empty() {
            0
        } else {
            self.writer.ack(destination, acks.to_vec())?
        };
        let rows = self.pool.run("read the oldest entries", |conn| {
            sql::oldest(
                conn,
                destination,
                expired_before,
                take.entries.saturating_add(1),
            )
        })?;
        let (entries, more) = take.cut(sql::decode(rows)?);
        Ok(AckBatch {
            acked,
            entries,
            more,
        })
    }

    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError> {
        let n = self.pool.run("count queued entries", |conn| {
            sql::queued(conn, destination)
        })?;
        u64::try_from(n).map_err(|_| {
            StoreError(format!(
                "usage counters in the database are negative ({n} entries)"
            ))
        })
    }

    fn totals(&self) -> Result<QueueTotals, StoreError> {
        let (entries, bytes) = self.pool.run("read total usage", sql::totals)?;
        shared::counters(entries, bytes)
    }

    fn destinations(&self, limit: usize) -> Result<Vec<DestinationUsage>, StoreError> {
        let rows = self.pool.run("read destination usage", |conn| {
            sql::destinations(conn, limit)
        })?;
        rows.into_iter()
            .map(|(name, entries, bytes, oldest)| {
                shared::destination_usage(&name, entries, bytes, oldest)
            })
            .collect()
    }

    fn expire(&self, expired_before: UnixMillis, limit: usize) -> Result<QueueTotals, StoreError> {
        let (entries, bytes) = self.pool.run("delete expired entries", |conn| {
            sql::expire(conn, expired_before, limit)
        })?;
        shared::counters(entries, bytes)
    }

    /// Implementation note: in chunks of 1,000 entries, each a transaction
    /// of its own, so that the `total_usage` lock every writer takes is
    /// never held long.
    fn purge(&self, destination: &ServerName) -> Result<QueueTotals, StoreError> {
        shared::purge_in_chunks(|limit| {
            let (entries, bytes) = self.pool.run("purge a destination", |conn| {
                sql::purge_some(conn, destination, limit)
            })?;
            shared::counters(entries, bytes)
        })
    }
}
