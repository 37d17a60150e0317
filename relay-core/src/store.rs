//! The records the relay asks its storage adapter to keep, and the answers it
//! expects back.
//!
//! Queue semantics every backend implements (and the conformance suite in
//! `relay-store` checks): one FIFO per destination, oldest first; insert is
//! idempotent on (origin, destination, txn ID), while the entry is queued
//! and, for [`AckedKeys::retention_ms`], after it was acknowledged;
//! acknowledgement deletes exactly one entry of one destination; a
//! successful insert is durable before it is reported.

use crate::id::{EntryId, ServerName, TxnId};
use crate::time::UnixMillis;

/// A transaction to store for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The authenticated sender.
    pub origin: ServerName,
    /// The server the transaction is for.
    pub destination: ServerName,
    /// The sender's transaction ID.
    pub txn_id: TxnId,
    /// The transaction as JSON, its `origin` set to [`NewEntry::origin`].
    pub transaction: Vec<u8>,
    /// When the relay received it: what a remembered acknowledgement's age,
    /// and the entry's own age (expiry), are measured against.
    pub received: UnixMillis,
}

/// An acknowledgement of one entry by its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The entry to delete.
    pub entry_id: EntryId,
    /// When the destination acknowledged it.
    pub at: UnixMillis,
    /// How the key of the deleted entry is remembered.
    pub keys: AckedKeys,
}

/// A stored transaction, as handed to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    /// Its ID in this relay's queue.
    pub entry_id: EntryId,
    /// Who sent it.
    pub origin: ServerName,
    /// The sender's transaction ID.
    pub txn_id: TxnId,
    /// The transaction as JSON.
    pub transaction: Vec<u8>,
}

/// How many entries a batch fetch hands out: at most `entries`, and past
/// the first, at most `bytes` of transactions in all (the first is handed
/// out whatever its size, so no entry is too large to drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Most entries (0 hands out none: acknowledges only).
    pub entries: usize,
    /// Most transaction bytes in all, past the first entry.
    pub bytes: u64,
}

impl Take {
    /// Cuts `rows` (the oldest first, at most `entries + 1` of them) to
    /// what this admits, and says whether any were left out.
    pub fn cut(self, mut rows: Vec<QueuedEntry>) -> (Vec<QueuedEntry>, bool) {
        let mut bytes = 0u64;
        let mut keep = 0;
        for (i, row) in rows.iter().enumerate() {
            let len = row.transaction.len() as u64;
            if i >= self.entries || (i > 0 && bytes.saturating_add(len) > self.bytes) {
                break;
            }
            bytes = bytes.saturating_add(len);
            keep = i + 1;
        }
        let more = rows.len() > keep;
        rows.truncate(keep);
        (rows, more)
    }
}

/// What a batch fetch (`QueueStore::ack_and_next_batch` in relay-store) did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckBatch {
    /// How many of the acknowledged entries it deleted.
    pub acked: u64,
    /// The oldest entries queued now, in order.
    pub entries: Vec<QueuedEntry>,
    /// Whether more entries are queued past them.
    pub more: bool,
}

/// Limits on what senders can make the relay store. An insert that would
/// go past any of them is refused whole.
///
/// Bytes are what an entry costs the store, not only its transaction:
/// [`entry_cost`] adds the names and txn ID as the row and its indexes hold
/// them, and a fixed overhead, so that a byte limit bounds the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Entries queued for one destination.
    pub destination_entries: u64,
    /// Bytes queued for one destination.
    pub destination_bytes: u64,
    /// The most one origin may hold of one destination's queue, in percent
    /// of `destination_entries` and of `destination_bytes` (at least one
    /// entry), so that one sender cannot lock the others out.
    pub origin_share_percent: u8,
    /// Entries queued by one origin, over all destinations.
    pub origin_entries: u64,
    /// Bytes queued by one origin, over all destinations.
    pub origin_bytes: u64,
    /// Entries queued in all.
    pub total_entries: u64,
    /// Bytes queued in all.
    pub total_bytes: u64,
    /// How long, and how many, keys of acknowledged entries are remembered
    /// (a remembered key is a duplicate, never stored again).
    pub acked: AckedKeys,
}

/// How long, and how many, keys (origin, destination, txn ID) of
/// acknowledged entries the relay remembers, so that a sender's
/// retransmission after the destination took the entry is not stored a
/// second time.
///
/// Implementation note: both bounds are needed against strangers: every
/// remembered key was acknowledged by its destination, but any origin can
/// make a destination acknowledge many. Past `max` the oldest are
/// forgotten first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedKeys {
    /// How long a key is remembered after its acknowledgement, in
    /// milliseconds; 0 remembers nothing.
    pub retention_ms: u64,
    /// Most keys remembered; 0 remembers nothing.
    pub max: u64,
    /// Most bytes of keys remembered, each counted as [`acked_key_cost`];
    /// 0 remembers nothing.
    pub max_bytes: u64,
}

impl AckedKeys {
    /// Remembers nothing: an acknowledged key may be stored again at once.
    pub const OFF: Self = Self {
        retention_ms: 0,
        max: 0,
        max_bytes: 0,
    };

    /// Whether keys are remembered at all.
    pub fn enabled(&self) -> bool {
        self.retention_ms > 0 && self.max > 0 && self.max_bytes > 0
    }
}

impl Default for AckedKeys {
    /// A day, a million keys, and 256 MiB.
    fn default() -> Self {
        Self {
            retention_ms: 24 * 60 * 60 * 1000,
            max: 1_000_000,
            max_bytes: 256 << 20,
        }
    }
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            destination_entries: 100_000,
            destination_bytes: 1 << 30,
            origin_share_percent: 50,
            origin_entries: 100_000,
            origin_bytes: 1 << 30,
            total_entries: 10_000_000,
            total_bytes: 16 << 30,
            acked: AckedKeys::default(),
        }
    }
}

/// Which quota refused an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// The destination's queue is full.
    Destination,
    /// The origin holds its share of the destination's queue.
    OriginShare,
    /// The origin has queued too much, over all destinations.
    Origin,
    /// The relay holds its most entries.
    TotalEntries,
    /// The relay holds its most bytes.
    Total,
}

/// The fixed part of what one queued entry costs the store: its row's and
/// index entries' headers, IDs and times, the usage counters' share, and
/// B-tree pages left part empty.
pub const ENTRY_OVERHEAD: u64 = 192;

/// What an entry costs the store, in bytes: its transaction, its names and
/// txn ID as often as the row and its indexes (and the usage counters) hold
/// them, and [`ENTRY_OVERHEAD`]. Every backend counts this in its byte
/// quotas, so `Quota::total_bytes` bounds the database's size.
pub fn entry_cost(origin: &str, destination: &str, txn_id: &str, transaction_len: usize) -> u64 {
    // The row, the destination index, the unique key, and the usage rows of
    // the destination, the origin and the pair.
    let names = 5 * destination.len() + 4 * origin.len() + 2 * txn_id.len();
    (transaction_len as u64)
        .saturating_add(names as u64)
        .saturating_add(ENTRY_OVERHEAD)
}

/// What one remembered acknowledged key costs the store, in bytes: its
/// names and txn ID in the row and the unique index, and a fixed overhead.
pub fn acked_key_cost(origin: &str, destination: &str, txn_id: &str) -> u64 {
    (2 * (origin.len() + destination.len() + txn_id.len()) + 64) as u64
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Newly stored, durably.
    Stored(EntryId),
    /// The same (origin, destination, txn ID) was already queued; nothing
    /// changed.
    Duplicate(EntryId),
    /// The same (origin, destination, txn ID) was queued and acknowledged
    /// within [`AckedKeys::retention_ms`]; nothing changed.
    AlreadyDelivered,
    /// Refused: a quota is full. Nothing was stored.
    QuotaExceeded(QuotaKind),
    /// Refused: the disk holding the store is short of free space (below
    /// the store's floor, or a write found it full). Nothing was stored;
    /// room comes back as destinations acknowledge their entries.
    DiskLow,
}

/// The storage backend failed; the operation had no effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);
