//! Storage backends for matrix-relay's queues, the sender's state and the
//! recipient's de-duplication window.
//!
//! Three blocking traits that the async adapters call from their blocking
//! pools: [`QueueStore`] (the relay's queue), [`OutboundStore`] (the
//! persisted state of a node's [`Outbound`](relay_core::outbound::Outbound)
//! machine) and [`DedupeStore`] (the persisted de-duplication window of a
//! node's [`Retriever`](relay_core::retriever::Retriever) machine). Their
//! backends:
//!
//! - [`MemoryStore`], [`MemoryOutboundStore`], [`MemoryDedupeStore`]: the
//!   reference models; no durability.
//! - [`SqliteStore`] (all three traits): the embedded default; WAL,
//!   `synchronous=FULL`, group commit on one writer thread, and a
//!   [`DiskGuard`] that refuses inserts before the disk is full. A relay
//!   and a node may share one database file or use their own.
//! - [`PostgresStore`] ([`QueueStore`] only): the relay's queue in
//!   PostgreSQL, shared by any number of relay processes.
//!
//! [`open`] ([`open_with`]), [`open_outbound`] and [`open_dedupe`] pick a
//! backend from a database URL. The semantics every backend implements are
//! written down once, as the conformance suite (`conformance`, with the
//! feature of that name; `testing` has the PostgreSQL test databases).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No function over 80 lines of code (clippy.toml), but for tests: a
// table test reads best whole.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

use std::sync::Arc;

pub use relay_core::outbound::{
    DestinationRecord, Item, ItemId, ItemKind, OutboundChange, RetryState,
};
pub use relay_core::retriever::{DedupeKey, WindowChange};
pub use relay_core::store::{
    Ack, AckBatch, AckedKeys, ENTRY_OVERHEAD, InsertOutcome, NewEntry, QueuedEntry, Quota,
    QuotaKind, StoreError, Take, acked_key_cost, entry_cost,
};
pub use relay_core::{EntryId, ServerName, TxnId, UnixMillis};

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
mod outbound_rules;
mod postgres;
mod quota_rules;
mod shared;
mod sqlite;
#[cfg(feature = "conformance")]
pub mod testing;

pub use memory::{MemoryDedupeStore, MemoryOutboundStore, MemoryStore};
pub use postgres::{DEFAULT_MAX_CONNECTIONS, POSTGRES_SCHEMA_VERSION, PostgresStore};
pub use sqlite::{
    DEFAULT_DISK_REFRESH, DEFAULT_DISK_RESERVE_BYTES, DEFAULT_MIN_FREE_DISK_BYTES,
    DEFAULT_WAL_BYTES, DiskGuard, FreeSpace, SQLITE_SCHEMA_VERSION, SqliteStore, Statvfs,
    wal_bytes_for,
};

/// A durable queue of transactions, one FIFO per destination.
///
/// Semantics (checked by the conformance suite, `conformance`):
/// - Entry IDs are positive, unique within a store, never reused, and
///   increase in insert order; "oldest" means the lowest entry ID.
/// - Insert is idempotent on (origin, destination, txn ID) while the entry
///   is queued (`Duplicate`), and after its acknowledgement while the key
///   is remembered (`AlreadyDelivered`). The duplicate check comes before
///   the quota checks, and a duplicate does not count against any quota.
/// - An acknowledgement that deletes an entry remembers its key, in the
///   same transaction, with the acknowledgement's time, if
///   [`AckedKeys::enabled`]. A key is remembered for inserts received less
///   than `retention_ms` after it was acknowledged (both times as the
///   caller gives them), and until `max` later keys have been remembered
///   (oldest forgotten first; a backend with concurrent writers may forget
///   a little earlier, never later). An acknowledgement that deletes
///   nothing remembers nothing. Remembering a key again restarts both.
/// - Quotas are checked in the order destination, origin's share of the
///   destination, origin, total entries, total bytes; an insert that would
///   go past a limit (`usage + new > limit`) is refused whole. Bytes are
///   [`entry_cost`] (a remembered key: [`acked_key_cost`]).
/// - Acknowledgement deletes exactly one entry of one destination.
/// - An entry received before a fetch's `expired_before` is never handed
///   out; [`QueueStore::expire`] deletes such entries, oldest first.
///
/// Implementation note: blocking on purpose. The async adapters call it
/// from a bounded thread pool of their own, so one implementation serves
/// every runtime.
pub trait QueueStore: Send + Sync + 'static {
    /// Stores `entry` unless the same (origin, destination, txn ID) is queued
    /// already (`Duplicate` with the existing ID), was acknowledged within
    /// `quota.acked` before `entry.received` (`AlreadyDelivered`), or a
    /// quota would be exceeded (`QuotaExceeded`, nothing stored), or (a
    /// SQLite store) its disk is short of space (`DiskLow`, nothing
    /// stored; checked last). Durable before it returns `Ok(Stored(_))`.
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError>;

    /// If `ack` is given, deletes entry `ack.entry_id` if it is queued for
    /// `destination`, and remembers its key as `ack.keys` says (an ID that
    /// is gone or belongs to another destination changes nothing and is not
    /// an error). Then returns whether that deleted an entry, and the
    /// oldest remaining entry for `destination`.
    fn ack_and_next(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
    ) -> Result<AckNext, StoreError> {
        self.ack_and_next_unexpired(destination, ack, UnixMillis(0))
    }

    /// As [`QueueStore::ack_and_next`], but the entry returned is the
    /// oldest one received at or after `expired_before`: an expired entry
    /// is never handed out, even before [`QueueStore::expire`] deletes it.
    fn ack_and_next_unexpired(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) -> Result<AckNext, StoreError>;

    /// As [`QueueStore::ack_and_next_unexpired`], for many at once: deletes
    /// each entry of `acks` that is queued for `destination` (remembering
    /// its key as its `keys` say), then returns the oldest entries received
    /// at or after `expired_before`, in order, as many as `take` admits.
    /// Exact: only the listed entries are deleted, whatever their order.
    fn ack_and_next_batch(
        &self,
        destination: &ServerName,
        acks: &[Ack],
        take: Take,
        expired_before: UnixMillis,
    ) -> Result<AckBatch, StoreError>;

    /// Deletes up to `limit` entries received before `expired_before`,
    /// oldest first, and returns what it deleted. Nothing is remembered as
    /// delivered. Finds them by an index on the received time: no scan,
    /// and one short transaction.
    fn expire(&self, expired_before: UnixMillis, limit: usize) -> Result<QueueTotals, StoreError>;

    /// Number of entries queued for `destination`.
    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError>;

    /// Entries and bytes queued over all destinations, from the counters
    /// the quota checks use (never a scan of the queue).
    fn totals(&self) -> Result<QueueTotals, StoreError>;

    /// The destinations that have something queued, with their entries and
    /// bytes, most bytes first (ties by name), at most `limit`; read from
    /// the counters the quota checks use.
    fn destinations(&self, limit: usize) -> Result<Vec<DestinationUsage>, StoreError>;

    /// Deletes everything queued for `destination`, at once and for good
    /// (an operator's decision: that server is gone), and returns what was
    /// deleted. Nothing is remembered as delivered: a sender that sends one
    /// of these again has it stored again.
    fn purge(&self, destination: &ServerName) -> Result<QueueTotals, StoreError>;
}

/// One destination's queue, as [`QueueStore::destinations`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationUsage {
    /// The destination.
    pub destination: ServerName,
    /// Entries queued for it.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When its oldest entry was received.
    pub oldest_received: Option<UnixMillis>,
}

/// What [`QueueStore::ack_and_next`] did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckNext {
    /// Whether the acknowledgement deleted an entry: `false` without one,
    /// and for an ID that is gone (acknowledged before) or another
    /// destination's.
    pub acked: bool,
    /// The oldest entry queued for the destination now, if any.
    pub next: Option<QueuedEntry>,
}

/// What is queued in all, as [`QueueStore::totals`] reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Entries queued.
    pub entries: u64,
    /// Their bytes ([`entry_cost`] summed).
    pub bytes: u64,
}

/// The persisted state of a node's sender machine
/// ([`Outbound`](relay_core::outbound::Outbound)): it applies the machine's
/// [`OutboundChange`]s and hands back [`DestinationRecord`]s to restore it from.
///
/// Semantics (checked by `conformance::outbound_store`):
/// - `Enqueued` adds the item to its destination's queue. Item IDs are
///   unique across destinations, and a queue is in item ID order (the
///   machine hands IDs out in increasing order). Enqueueing an ID that is
///   queued already changes nothing if the item is identical (destination,
///   kind and JSON) and is an error otherwise.
/// - `TxnStarted` records the destination's transaction in flight, its txn
///   ID and item list as given, replacing any previous one. The items are
///   not checked against the queue.
/// - `TxnFinished` deletes those of the listed items that are queued for
///   that destination (others, and gone ones, are left alone) and forgets
///   the destination's transaction.
/// - `Retry` stores the failure state; the default state deletes it. A
///   `next_retry` past `i64::MAX` ms is stored as `i64::MAX` ms.
/// - Item IDs above `i64::MAX` (the largest SQL integer) are an error in
///   every change.
/// - `apply` is all or nothing: when it fails, nothing of the batch is
///   stored. A batch's changes see the ones before them.
/// - `load` returns one record per destination that has queued items, a
///   transaction in flight or a non-default failure state, in destination
///   order, items oldest (lowest ID) first.
///
/// Implementation note: blocking on purpose, as [`QueueStore`] is. The
/// machine emits one change per [`Output::Persist`](relay_core::outbound::Output::Persist);
/// a driver may pass several at once, in order, and report them all with
/// the one result.
pub trait OutboundStore: Send + Sync + 'static {
    /// Applies `changes` in order, atomically (all or nothing), durably
    /// before returning `Ok`.
    fn apply(&self, changes: &[OutboundChange]) -> Result<(), StoreError>;

    /// Everything persisted: one record per destination that has queued
    /// items, a transaction in flight or a non-default [`RetryState`];
    /// items oldest first.
    fn load(&self) -> Result<Vec<DestinationRecord>, StoreError>;
}

/// The persisted de-duplication window of a node's recipient machine
/// ([`Retriever`](relay_core::retriever::Retriever)): it applies the
/// machine's [`WindowChange`]s and hands back the window to restore it
/// with ([`Retriever::restore`](relay_core::retriever::Retriever::restore)).
///
/// Semantics (checked by `conformance::dedupe_store`):
/// - The window is a list of groups, oldest first; a group is the keys of
///   one transaction, in the order they were remembered. A key is in one
///   group at most, and a group without keys does not exist.
/// - `Seen(keys)` adds a group at the end and moves each listed key, in
///   turn, to the end of it: a key remembered already, in an older group or
///   earlier in the same list, is remembered once, in the new group. An
///   older group left without keys disappears. `Seen` of no keys changes
///   nothing.
/// - `Forget(keys)` forgets every listed key, in whichever group it is;
///   keys not remembered are ignored. A group left without keys disappears.
/// - `apply_window` is all or nothing: when it fails, nothing of the batch
///   is stored. A batch's changes see the ones before them.
/// - `load_window` returns the groups oldest first (the order their `Seen`
///   changes were applied).
///
/// Implementation note: the methods are named apart from
/// [`OutboundStore`]'s `apply` and `load`, so that [`SqliteStore`], which
/// implements both traits, needs no trait-qualified calls. A key is
/// remembered once, not counted per group as in the machine's own window:
/// the machine never sends `Seen` with a key its window holds (that
/// transaction is dropped as a duplicate), so moving a key only matters
/// for changes the machine did not make, and there a later `Forget` of the
/// older group's keys forgets the moved key too. Blocking on purpose, as
/// [`QueueStore`] is; a driver may pass several changes at once, in order,
/// and report them all with the one result.
pub trait DedupeStore: Send + Sync + 'static {
    /// Applies `changes` in order, atomically (all or nothing), durably
    /// before returning `Ok`.
    fn apply_window(&self, changes: &[WindowChange]) -> Result<(), StoreError>;

    /// The window: one list of keys per remembered transaction, oldest
    /// first.
    fn load_window(&self) -> Result<Vec<Vec<DedupeKey>>, StoreError>;
}

/// Opens the store a database URL names.
///
/// - `sqlite:PATH` or `sqlite://PATH` (so `sqlite:///abs/path` is absolute):
///   a [`SqliteStore`], created if missing.
/// - `postgres://…` / `postgresql://…`: a [`PostgresStore`] (the database
///   must exist; its tables are created).
///
/// Implementation note: errors never repeat a PostgreSQL URL, which may
/// carry a password.
pub fn open(url: &str) -> Result<Arc<dyn QueueStore>, StoreError> {
    open_with(url, &OpenOptions::default())
}

/// Settings of [`open_with`] beyond the URL; the default is what [`open`]
/// uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Most connections a PostgreSQL store opens (at least one is); a
    /// SQLite store ignores it. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Open only an existing relay database of this build's schema version,
    /// creating and migrating nothing (as operator tools must, beside a
    /// running relay). Default `false`.
    pub existing: bool,
    /// Free bytes below which a SQLite store refuses inserts
    /// ([`InsertOutcome::DiskLow`]), with the rest of [`DiskGuard`] at its
    /// defaults (not for `existing`, which leaves the disk to the relay);
    /// PostgreSQL ignores it. Default [`DEFAULT_MIN_FREE_DISK_BYTES`].
    pub min_free_disk_bytes: u64,
    /// How large a SQLite store's WAL may grow ([`wal_bytes_for`] the
    /// relay's total quota); PostgreSQL ignores it. Default
    /// [`DEFAULT_WAL_BYTES`].
    pub wal_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            existing: false,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK_BYTES,
            wal_bytes: DEFAULT_WAL_BYTES,
        }
    }
}

/// [`open`], with `options`.
pub fn open_with(url: &str, options: &OpenOptions) -> Result<Arc<dyn QueueStore>, StoreError> {
    if is_postgres(url) {
        let open = if options.existing {
            PostgresStore::open_existing
        } else {
            PostgresStore::open_with
        };
        return Ok(Arc::new(open(url, options.max_connections)?));
    }
    let path = sqlite_path(url)?;
    if options.existing {
        return Ok(Arc::new(SqliteStore::open_existing(path)?));
    }
    Ok(Arc::new(SqliteStore::open_guarded(
        path,
        DiskGuard::new(options.min_free_disk_bytes).with_wal_bytes(options.wal_bytes),
    )?))
}

/// `url` as it may be logged: the password of a `scheme://user:password@…`
/// URL, any `password=` query parameter and the `password=` of a libpq
/// `key=value` string replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if !url.contains("://") && url.contains('=') {
        // A libpq keyword/value string: `host=… password=… dbname=…`.
        return url
            .split(' ')
            .map(|word| match word.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => word.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
                    None => url.to_owned(),
                },
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if let Some(q) = out.find('?') {
        let params: Vec<String> = out[q + 1..]
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], params.join("&"));
    }
    out
}

/// Whether `url` names a PostgreSQL database (else an SQLite file).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the sender-state store a database URL names, as [`open`] does
/// (same URLs, same errors), except that PostgreSQL URLs are refused. The
/// file may be the one a relay uses.
pub fn open_outbound(url: &str) -> Result<Arc<dyn OutboundStore>, StoreError> {
    Ok(Arc::new(SqliteStore::open(sqlite_path(url)?)?))
}

/// Opens the de-duplication window store a database URL names, as [`open`]
/// does (same URLs, same errors), except that PostgreSQL URLs are
/// refused. The file may be the one a relay or the node's sender uses.
pub fn open_dedupe(url: &str) -> Result<Arc<dyn DedupeStore>, StoreError> {
    Ok(Arc::new(SqliteStore::open(sqlite_path(url)?)?))
}

/// The file a `sqlite:` URL names; every other URL is an error.
fn sqlite_path(url: &str) -> Result<&str, StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(StoreError(format!("database URL {url:?} names no file")));
        }
        // A second connection (the reader) would see a different, empty
        // in-memory database; the memory stores are the in-memory backends.
        if path == ":memory:" || path.starts_with("file::memory:") || path.contains("mode=memory") {
            return Err(StoreError(
                "in-memory SQLite databases are not supported; give a file path".into(),
            ));
        }
        return Ok(path);
    }
    if is_postgres(url) {
        return Err(StoreError(
            "PostgreSQL holds the relay's queue only; a node's sender state and \
             de-duplication window need a sqlite:PATH database URL"
                .into(),
        ));
    }
    // Only a scheme-like prefix is echoed: the rest may hold a password.
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    Err(StoreError(match scheme {
        Some(scheme) => format!("unsupported database URL scheme {scheme:?}; expected sqlite:PATH"),
        None => "unsupported database URL; expected sqlite:PATH".to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_every_password_form() {
        for (url, shown) in [
            (
                "postgres://relay:hunter2@db.example/relay",
                "postgres://relay:***@db.example/relay",
            ),
            (
                "postgresql://relay@db.example/relay?password=hunter2&sslmode=require",
                "postgresql://relay@db.example/relay?password=***&sslmode=require",
            ),
            (
                "host=db.example password=hunter2 dbname=relay",
                "host=db.example password=*** dbname=relay",
            ),
            ("sqlite:relay.db", "sqlite:relay.db"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn an_unsupported_url_is_not_echoed() {
        let err = open_with("host=a password=hun:ter2", &OpenOptions::default())
            .err()
            .expect("refused");
        assert!(!err.0.contains("hun"), "{err}");
        let err = open_with("mysql://u:hunter2@h/d", &OpenOptions::default())
            .err()
            .expect("refused");
        assert_eq!(
            err.0,
            "unsupported database URL scheme \"mysql\"; expected sqlite:PATH"
        );
    }
}
