//! What both SQL backends share: reading queue rows, which come from
//! outside and may be bad, and handing an operation to a writer thread.

use std::sync::mpsc::{self, Sender, SyncSender};

use relay_core::store::{QueuedEntry, StoreError};
use relay_core::{EntryId, ServerName, TxnId, UnixMillis};

use crate::{DestinationUsage, QueueTotals};

/// Most entries one write of a purge deletes: a long queue goes in many
/// short writes, so no writer waits long behind it.
pub(crate) const PURGE_CHUNK: usize = 1_000;

/// Where a writer thread sends an operation's result.
pub(crate) type Reply<T> = SyncSender<Result<T, StoreError>>;

/// An entry ID read from the database: positive, or an error.
pub(crate) fn entry_id(id: i64) -> Result<EntryId, StoreError> {
    match u64::try_from(id) {
        Ok(id) if id > 0 => Ok(EntryId(id)),
        _ => Err(StoreError(format!(
            "entry ID {id} in the database is not positive"
        ))),
    }
}

/// A queue row as a [`QueuedEntry`]; a bad row is an error, never a panic.
pub(crate) fn queued_entry(
    id: i64,
    origin: &str,
    txn_id: &str,
    transaction: Vec<u8>,
) -> Result<QueuedEntry, StoreError> {
    let bad = |what: &str| StoreError(format!("entry {id} in the database has an invalid {what}"));
    Ok(QueuedEntry {
        entry_id: entry_id(id)?,
        origin: ServerName::parse(origin).map_err(|_| bad("origin"))?,
        // Stored before control characters were refused: shown with
        // U+FFFD in their place rather than blocking the queue.
        txn_id: TxnId::parse(txn_id)
            .or_else(|_| TxnId::parse(&txn_id.replace(char::is_control, "\u{fffd}")))
            .map_err(|_| bad("txn_id"))?,
        transaction,
    })
}

/// A `destination_usage` row as a [`DestinationUsage`]; a bad row is an
/// error, never a panic.
pub(crate) fn destination_usage(
    name: &str,
    entries: i64,
    bytes: i64,
    oldest_received: Option<i64>,
) -> Result<DestinationUsage, StoreError> {
    let destination = ServerName::parse(name).map_err(|_| {
        StoreError(format!(
            "destination_usage holds a bad server name {name:?}"
        ))
    })?;
    let QueueTotals { entries, bytes } = counters(entries, bytes)?;
    Ok(DestinationUsage {
        destination,
        entries,
        bytes,
        oldest_received: oldest_received.map(|ms| UnixMillis(u64::try_from(ms).unwrap_or(0))),
    })
}

/// Usage counters as read from the database, which never makes them
/// negative unless something else wrote there.
pub(crate) fn counters(entries: i64, bytes: i64) -> Result<QueueTotals, StoreError> {
    match (u64::try_from(entries), u64::try_from(bytes)) {
        (Ok(entries), Ok(bytes)) => Ok(QueueTotals { entries, bytes }),
        _ => Err(StoreError(format!(
            "usage counters in the database are negative ({entries} entries, {bytes} bytes)"
        ))),
    }
}

/// Deletes a destination's queue with `purge_some(PURGE_CHUNK)` (one short
/// write each) until a chunk comes back short; what went in all.
pub(crate) fn purge_in_chunks(
    mut purge_some: impl FnMut(usize) -> Result<QueueTotals, StoreError>,
) -> Result<QueueTotals, StoreError> {
    let mut purged = QueueTotals::default();
    loop {
        let chunk = purge_some(PURGE_CHUNK)?;
        purged.entries += chunk.entries;
        purged.bytes += chunk.bytes;
        if chunk.entries < PURGE_CHUNK as u64 {
            return Ok(purged);
        }
    }
}

/// Hands the operation `op` builds to the writer behind `ops` and waits
/// for its answer; `engine` names the backend in the error when the
/// writer has stopped.
pub(crate) fn call<Op, T>(
    ops: Option<&Sender<Op>>,
    engine: &str,
    op: impl FnOnce(Reply<T>) -> Op,
) -> Result<T, StoreError> {
    let stopped = || StoreError(format!("the {engine} writer thread has stopped"));
    let (reply, answer) = mpsc::sync_channel(1);
    ops.ok_or_else(stopped)?
        .send(op(reply))
        .map_err(|_| stopped())?;
    answer.recv().map_err(|_| stopped())?
}
