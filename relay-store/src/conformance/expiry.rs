//! Entries that expire: never handed out once expired, deleted oldest
//! first in bounded chunks, and the oldest entry's age per destination.

use relay_core::UnixMillis;
use relay_core::store::{Ack, AckedKeys, InsertOutcome, NewEntry};

use super::helpers::*;
use crate::{AckNext, QueueStore, QueueTotals};

fn received(origin: &str, destination: &str, txn_id: &str, at: u64) -> NewEntry {
    NewEntry {
        received: UnixMillis(at),
        ..entry(origin, destination, txn_id, b"{}")
    }
}

fn unexpired(
    store: &dyn QueueStore,
    destination: &str,
    ack: Option<Ack>,
    expired_before: u64,
) -> AckNext {
    store
        .ack_and_next_unexpired(&server(destination), ack, UnixMillis(expired_before))
        .unwrap_or_else(|err| panic!("ack_and_next_unexpired({destination}) failed: {err}"))
}

fn expire(store: &dyn QueueStore, expired_before: u64, limit: usize) -> QueueTotals {
    store
        .expire(UnixMillis(expired_before), limit)
        .unwrap_or_else(|err| panic!("expire({expired_before}, {limit}) failed: {err}"))
}

/// An entry received before `expired_before` is skipped, whether or not
/// an acknowledgement comes with the fetch; a newer one behind it is
/// handed out; `expired_before` 0 hands out everything.
pub fn expired_entries_are_not_handed_out(store: &dyn QueueStore) {
    let old = received("o.example", "d.example", "old", 1_000);
    let new = received("o.example", "d.example", "new", 5_000);
    store_new(store, &old);
    let new_id = store_new(store, &new);
    let got = unexpired(store, "d.example", None, 2_000).next;
    assert_eq!(got.map(|e| e.entry_id), Some(new_id), "the old one skipped");
    let got = unexpired(store, "d.example", None, 0).next;
    assert_eq!(
        got.map(|e| e.txn_id),
        Some(txn("old")),
        "nothing expires at 0"
    );
    let ack = Ack {
        entry_id: new_id,
        at: UnixMillis(6_000),
        keys: AckedKeys::default(),
    };
    let after = unexpired(store, "d.example", Some(ack), 2_000);
    assert!(after.acked, "the new one acknowledged");
    assert_eq!(after.next, None, "only an expired entry is left");
    assert_eq!(queued(store, "d.example"), 1, "skipped is not deleted");
    // Received exactly at the bound: not expired.
    assert!(unexpired(store, "d.example", None, 1_000).next.is_some());
}

/// `expire` deletes the entries received before the bound, oldest first,
/// at most `limit` per call, over every destination, frees their quota and
/// remembers nothing: the same key may be stored again.
pub fn expire_deletes_oldest_first_in_chunks(store: &dyn QueueStore) {
    let es = [
        received("o.example", "a.example", "t1", 1_000),
        received("o.example", "b.example", "t1", 2_000),
        received("p.example", "a.example", "t2", 3_000),
        received("o.example", "a.example", "t3", 9_000),
    ];
    for e in &es {
        store_new(store, e);
    }
    assert_eq!(
        expire(store, 500, 10),
        QueueTotals::default(),
        "none so old"
    );
    let first = expire(store, 5_000, 2);
    assert_eq!(
        first,
        QueueTotals {
            entries: 2,
            bytes: cost(&es[0]) + cost(&es[1])
        },
        "the two oldest first"
    );
    assert_eq!(queued(store, "b.example"), 0);
    let rest = expire(store, 5_000, 2);
    assert_eq!(rest.entries, 1, "then the third");
    assert_eq!(expire(store, 5_000, 2), QueueTotals::default());
    let left = drain(store, "a.example");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].txn_id, txn("t3"), "the young entry stays");
    let totals = store.totals().expect("totals");
    assert_eq!(totals, QueueTotals::default(), "counters follow");
    assert!(
        matches!(
            insert(store, &es[0], &unlimited()),
            InsertOutcome::Stored(_)
        ),
        "an expired key is not remembered as delivered"
    );
}

/// `destinations` says when each destination's oldest entry was received.
pub fn destinations_show_the_oldest_received(store: &dyn QueueStore) {
    let a1 = store_new(store, &received("o.example", "a.example", "t1", 1_000));
    store_new(store, &received("o.example", "a.example", "t2", 4_000));
    store_new(store, &received("o.example", "b.example", "t1", 2_000));
    let oldest = |store: &dyn QueueStore| -> Vec<(String, Option<UnixMillis>)> {
        let mut list: Vec<_> = store
            .destinations(10)
            .expect("destinations")
            .into_iter()
            .map(|u| (u.destination.as_str().to_owned(), u.oldest_received))
            .collect();
        list.sort();
        list
    };
    assert_eq!(
        oldest(store),
        vec![
            ("a.example".to_owned(), Some(UnixMillis(1_000))),
            ("b.example".to_owned(), Some(UnixMillis(2_000))),
        ]
    );
    next(store, "a.example", Some(a1));
    assert_eq!(oldest(store)[0].1, Some(UnixMillis(4_000)), "after an ack");
}
