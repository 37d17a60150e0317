//! The records the relay asks its storage adapter to keep, and the answers it
//! expects back.
//!
//! Queue semantics every backend implements (and the conformance suite in
//! `relay-store` checks): one FIFO per destination, oldest first; insert is
//! idempotent on (origin, destination, txn ID); acknowledgement deletes
//! exactly one entry of one destination; a successful insert is durable
//! before it is reported.

use crate::id::{EntryId, ServerName, TxnId};

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

/// Limits on what senders can make the relay store. An insert that would
/// go past any of them is refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Entries queued for one destination.
    pub destination_entries: u64,
    /// Transaction bytes queued for one destination.
    pub destination_bytes: u64,
    /// Entries queued by one origin, over all destinations.
    pub origin_entries: u64,
    /// Transaction bytes queued by one origin, over all destinations.
    pub origin_bytes: u64,
    /// Transaction bytes queued in all.
    pub total_bytes: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            destination_entries: 100_000,
            destination_bytes: 1 << 30,
            origin_entries: 100_000,
            origin_bytes: 1 << 30,
            total_bytes: 16 << 30,
        }
    }
}

/// Which quota refused an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// The destination's queue is full.
    Destination,
    /// The origin has queued too much.
    Origin,
    /// The relay as a whole is full.
    Total,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Newly stored, durably.
    Stored(EntryId),
    /// The same (origin, destination, txn ID) was already queued; nothing
    /// changed.
    Duplicate(EntryId),
    /// Refused: a quota is full. Nothing was stored.
    QuotaExceeded(QuotaKind),
}

/// The storage backend failed; the operation had no effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);
