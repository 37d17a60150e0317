//! Shared helpers of the checks: building entries, calling the store with
//! context in every panic message.

use relay_core::store::{Ack, AckedKeys, InsertOutcome, NewEntry, QueuedEntry, Quota};
use relay_core::{EntryId, ServerName, TxnId, UnixMillis};

use crate::QueueStore;

/// The time every entry is received and every acknowledgement made at,
/// unless a check says otherwise.
pub(super) const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

pub(super) fn server(name: &str) -> ServerName {
    ServerName::parse(name).unwrap_or_else(|e| panic!("test server name {name:?}: {e}"))
}

pub(super) fn txn(id: &str) -> TxnId {
    TxnId::parse(id).unwrap_or_else(|e| panic!("test txn ID {id:?}: {e}"))
}

pub(super) fn entry(origin: &str, destination: &str, txn_id: &str, body: &[u8]) -> NewEntry {
    NewEntry {
        origin: server(origin),
        destination: server(destination),
        txn_id: txn(txn_id),
        transaction: body.to_vec(),
        received: NOW,
    }
}

/// A JSON body that names its transaction, so mixed-up payloads show.
pub(super) fn body(txn_id: &str) -> Vec<u8> {
    format!(r#"{{"origin_server_ts":1,"pdus":[],"edus":[],"t":"{txn_id}"}}"#).into_bytes()
}

pub(super) fn unlimited() -> Quota {
    Quota {
        destination_entries: u64::MAX,
        destination_bytes: u64::MAX,
        origin_share_percent: 100,
        origin_entries: u64::MAX,
        origin_bytes: u64::MAX,
        total_entries: u64::MAX,
        total_bytes: u64::MAX,
        acked: AckedKeys::default(),
    }
}

/// What `e` counts in the byte quotas.
pub(super) fn cost(e: &NewEntry) -> u64 {
    relay_core::store::entry_cost(
        e.origin.as_str(),
        e.destination.as_str(),
        e.txn_id.as_str(),
        e.transaction.len(),
    )
}

/// What an entry of `origin`, `destination` and `txn_id` costs besides
/// its transaction.
pub(super) fn overhead(origin: &str, destination: &str, txn_id: &str) -> u64 {
    relay_core::store::entry_cost(origin, destination, txn_id, 0)
}

pub(super) fn insert(store: &dyn QueueStore, e: &NewEntry, quota: &Quota) -> InsertOutcome {
    store.insert(e.clone(), quota).unwrap_or_else(|err| {
        panic!(
            "insert of {}/{} -> {} failed: {err}",
            e.origin, e.txn_id, e.destination
        )
    })
}

/// Inserts `e` without quota and expects it stored.
pub(super) fn store_new(store: &dyn QueueStore, e: &NewEntry) -> EntryId {
    match insert(store, e, &unlimited()) {
        InsertOutcome::Stored(id) => {
            assert!(id.0 > 0, "entry IDs must be positive, got {id:?}");
            id
        }
        other => panic!(
            "insert of new {}/{} -> {}: expected Stored, got {other:?}",
            e.origin, e.txn_id, e.destination
        ),
    }
}

/// Acknowledges `ack` (if given) at [`NOW`], remembering keys by default,
/// and returns the next entry.
pub(super) fn next(
    store: &dyn QueueStore,
    destination: &str,
    ack: Option<EntryId>,
) -> Option<QueuedEntry> {
    let ack = ack.map(|entry_id| Ack {
        entry_id,
        at: NOW,
        keys: AckedKeys::default(),
    });
    next_after(store, destination, ack)
}

/// Acknowledges `ack` (if given), and returns the next entry.
pub(super) fn next_after(
    store: &dyn QueueStore,
    destination: &str,
    ack: Option<Ack>,
) -> Option<QueuedEntry> {
    store
        .ack_and_next(&server(destination), ack)
        .unwrap_or_else(|err| panic!("ack_and_next({destination}, {ack:?}) failed: {err}"))
        .next
}

pub(super) fn queued(store: &dyn QueueStore, destination: &str) -> u64 {
    store
        .queued(&server(destination))
        .unwrap_or_else(|err| panic!("queued({destination}) failed: {err}"))
}

/// Takes everything queued for `destination`, acknowledging as it goes.
pub(super) fn drain(store: &dyn QueueStore, destination: &str) -> Vec<QueuedEntry> {
    let limit = queued(store, destination) + 1;
    let mut out: Vec<QueuedEntry> = Vec::new();
    let mut ack = None;
    while let Some(e) = next(store, destination, ack) {
        assert!(
            out.len() as u64 <= limit,
            "draining {destination} does not end: acknowledgements do not delete"
        );
        if let Some(prev) = out.last() {
            assert!(
                e.entry_id > prev.entry_id,
                "{destination}: entry {:?} came after {:?}; expected increasing IDs",
                e.entry_id,
                prev.entry_id
            );
        }
        ack = Some(e.entry_id);
        out.push(e);
    }
    assert_eq!(
        queued(store, destination),
        0,
        "{destination}: queued() after draining"
    );
    out
}

pub(super) fn assert_entry(got: &QueuedEntry, id: EntryId, want: &NewEntry) {
    assert_eq!(got.entry_id, id, "entry ID of {}", want.txn_id);
    assert_eq!(got.origin, want.origin, "origin of entry {id:?}");
    assert_eq!(got.txn_id, want.txn_id, "txn ID of entry {id:?}");
    assert!(
        got.transaction == want.transaction,
        "transaction of entry {id:?} ({}) differs from what was stored",
        want.txn_id
    );
}
