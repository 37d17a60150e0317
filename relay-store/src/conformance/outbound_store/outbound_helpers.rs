//! Shared helpers of the sender-state checks: building changes and
//! records, calling the store with context in every panic message.

use relay_core::UnixMillis;
use relay_core::outbound::{DestinationRecord, Item, ItemId, ItemKind, OutboundChange, RetryState};

use super::super::helpers::{server, txn};
use crate::OutboundStore;

pub(super) fn item(id: u64, kind: ItemKind) -> Item {
    Item {
        id: ItemId(id),
        kind,
        json: format!(r#"{{"item":{id}}}"#).into_bytes(),
    }
}

pub(super) fn pdu(id: u64) -> Item {
    item(id, ItemKind::Pdu)
}

pub(super) fn enqueued(destination: &str, item: &Item) -> OutboundChange {
    OutboundChange::Enqueued {
        destination: server(destination),
        item: item.clone(),
    }
}

pub(super) fn ids(ids: &[u64]) -> Vec<ItemId> {
    ids.iter().copied().map(ItemId).collect()
}

pub(super) fn started(destination: &str, txn_id: &str, items: &[u64]) -> OutboundChange {
    OutboundChange::TxnStarted {
        destination: server(destination),
        txn_id: txn(txn_id),
        items: ids(items),
    }
}

pub(super) fn finished(destination: &str, items: &[u64]) -> OutboundChange {
    OutboundChange::TxnFinished {
        destination: server(destination),
        items: ids(items),
    }
}

pub(super) fn retry(destination: &str, state: RetryState) -> OutboundChange {
    OutboundChange::Retry {
        destination: server(destination),
        state,
    }
}

pub(super) fn backing_off(failures: u32, next_retry: Option<u64>) -> RetryState {
    RetryState {
        direct_failures: failures,
        failed_attempts: failures,
        next_retry: next_retry.map(UnixMillis),
        blacklisted: false,
    }
}

pub(super) fn record(
    destination: &str,
    items: &[&Item],
    txn_in_flight: Option<(&str, &[u64])>,
    retry: RetryState,
) -> DestinationRecord {
    DestinationRecord {
        destination: server(destination),
        items: items.iter().map(|i| (*i).clone()).collect(),
        txn: txn_in_flight.map(|(t, items)| (txn(t), ids(items))),
        retry,
    }
}

pub(super) fn apply(store: &dyn OutboundStore, changes: &[OutboundChange]) {
    if let Err(err) = store.apply(changes) {
        panic!(
            "apply of {} changes failed: {err}\n{changes:?}",
            changes.len()
        );
    }
}

pub(super) fn refused(store: &dyn OutboundStore, changes: &[OutboundChange], why: &str) {
    assert!(
        store.apply(changes).is_err(),
        "{why}: expected an error, the batch was applied"
    );
}

pub(super) fn load(store: &dyn OutboundStore) -> Vec<DestinationRecord> {
    store
        .load()
        .unwrap_or_else(|err| panic!("load failed: {err}"))
}

/// Compares the records without printing megabytes of payload.
#[track_caller]
pub(super) fn assert_loads(store: &dyn OutboundStore, want: &[DestinationRecord], context: &str) {
    let got = load(store);
    let names = |r: &[DestinationRecord]| {
        r.iter()
            .map(|r| r.destination.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(want), "{context}: destinations loaded");
    for (g, w) in got.iter().zip(want) {
        let d = &w.destination;
        let item_ids = |r: &DestinationRecord| r.items.iter().map(|i| i.id.0).collect::<Vec<_>>();
        assert_eq!(
            item_ids(g),
            item_ids(w),
            "{context}: {d}: item IDs in order"
        );
        for (gi, wi) in g.items.iter().zip(&w.items) {
            assert_eq!(gi.kind, wi.kind, "{context}: {d}: kind of item {}", wi.id.0);
            assert!(
                gi.json == wi.json,
                "{context}: {d}: JSON of item {} ({} bytes) differs from what was stored ({} bytes)",
                wi.id.0,
                gi.json.len(),
                wi.json.len()
            );
        }
        assert_eq!(g.txn, w.txn, "{context}: {d}: transaction in flight");
        assert_eq!(g.retry, w.retry, "{context}: {d}: retry state");
    }
}
