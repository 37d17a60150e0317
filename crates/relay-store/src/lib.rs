//! Storage backends for matrix-relay's queues.
//!
//! One blocking trait, [`QueueStore`], that the async adapters call from
//! their blocking pools, and its backends:
//!
//! - [`MemoryStore`]: the reference model; no durability.
//! - [`SqliteStore`]: the embedded default; WAL, `synchronous=FULL`, group
//!   commit on one writer thread.
//!
//! [`open`] picks a backend from a database URL. The queue semantics every
//! backend implements are written down once, as the [`conformance`] suite.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

pub use relay_core::store::{InsertOutcome, NewEntry, QueuedEntry, Quota, QuotaKind, StoreError};
pub use relay_core::{EntryId, ServerName, TxnId};

pub mod conformance;
mod memory;
mod quota;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

/// A durable queue of transactions, one FIFO per destination.
///
/// Semantics (checked by [`conformance`]):
/// - Entry IDs are positive, unique within a store, never reused, and
///   increase in insert order; "oldest" means the lowest entry ID.
/// - Insert is idempotent on (origin, destination, txn ID) while the entry
///   is queued. The duplicate check comes before the quota checks, and a
///   duplicate does not count against any quota.
/// - Quotas are checked in the order destination, origin, total; an insert
///   that would go past a limit (`usage + new > limit`) is refused whole.
///   Bytes are `transaction.len()`.
/// - Acknowledgement deletes exactly one entry of one destination.
///
/// Implementation note: blocking on purpose. The async adapters call it
/// from their blocking pools (`spawn_blocking`, `blocking::unblock`), so one
/// implementation serves every runtime.
pub trait QueueStore: Send + Sync + 'static {
    /// Stores `entry` unless the same (origin, destination, txn ID) is queued
    /// already (`Duplicate` with the existing ID) or a quota would be
    /// exceeded (`QuotaExceeded`, nothing stored). Durable before it returns
    /// `Ok(Stored(_))`.
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError>;

    /// If `ack` is `Some(id)`, deletes entry `id` if it is queued for
    /// `destination` (an ID that is gone or belongs to another destination
    /// changes nothing and is not an error). Then returns the oldest
    /// remaining entry for `destination`, or `None`.
    fn ack_and_next(
        &self,
        destination: &ServerName,
        ack: Option<EntryId>,
    ) -> Result<Option<QueuedEntry>, StoreError>;

    /// Number of entries queued for `destination`.
    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError>;
}

/// Opens the store a database URL names.
///
/// - `sqlite:PATH` or `sqlite://PATH` (so `sqlite:///abs/path` is absolute):
///   a [`SqliteStore`], created if missing.
/// - `postgres://…` / `postgresql://…`: not supported yet (an error).
///
/// Implementation note: errors never repeat a PostgreSQL URL, which may
/// carry a password.
pub fn open(url: &str) -> Result<Arc<dyn QueueStore>, StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(StoreError(format!("database URL {url:?} names no file")));
        }
        // A second connection (the reader) would see a different, empty
        // in-memory database; MemoryStore is the in-memory backend.
        if path == ":memory:" || path.starts_with("file::memory:") || path.contains("mode=memory") {
            return Err(StoreError(
                "in-memory SQLite databases are not supported; give a file path".into(),
            ));
        }
        return Ok(Arc::new(SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError(
            "PostgreSQL is not supported yet; use a sqlite:PATH database URL".into(),
        ));
    }
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    Err(StoreError(format!(
        "unsupported database URL scheme {scheme:?}; expected sqlite:PATH"
    )))
}
