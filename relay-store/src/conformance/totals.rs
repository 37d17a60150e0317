//! What is queued in all.

use relay_core::store::{AckedKeys, InsertOutcome, Quota, QuotaKind};

use super::helpers::*;
use crate::{DestinationUsage, QueueStore, QueueTotals};

fn totals(store: &dyn QueueStore) -> QueueTotals {
    store
        .totals()
        .unwrap_or_else(|err| panic!("totals() failed: {err}"))
}

fn want(entries: u64, bytes: u64) -> QueueTotals {
    QueueTotals { entries, bytes }
}

/// `totals` counts the entries and bytes of every destination; duplicates,
/// refusals and acknowledgements of gone entries change nothing, an
/// acknowledgement frees its entry.
pub fn totals_count_every_destination(store: &dyn QueueStore) {
    assert_eq!(totals(store), want(0, 0), "totals() of an empty store");
    let a1 = entry("o.example", "a.example", "t1", &[b'x'; 10]);
    let a2 = entry("p.example", "a.example", "t2", &[b'y'; 20]);
    let b1 = entry("o.example", "b.example", "t1", &[b'z'; 5]);
    let id_a1 = store_new(store, &a1);
    store_new(store, &a2);
    let id_b1 = store_new(store, &b1);
    let (ca1, ca2, cb1) = (cost(&a1), cost(&a2), cost(&b1));
    assert_eq!(totals(store), want(3, ca1 + ca2 + cb1), "after 3 inserts");

    assert_eq!(
        insert(store, &a1, &unlimited()),
        InsertOutcome::Duplicate(id_a1),
        "a repeat of a queued key"
    );
    let tight = Quota {
        total_bytes: ca1 + ca2 + cb1 + 1,
        ..unlimited()
    };
    assert_eq!(
        insert(
            store,
            &entry("q.example", "c.example", "t", &[b'w'; 6]),
            &tight
        ),
        InsertOutcome::QuotaExceeded(QuotaKind::Total),
        "an insert over the total quota"
    );
    assert_eq!(
        totals(store),
        want(3, ca1 + ca2 + cb1),
        "a duplicate and a refusal store nothing"
    );

    assert_eq!(
        next(store, "a.example", Some(id_a1)).map(|e| e.txn_id),
        Some(txn("t2"))
    );
    assert_eq!(totals(store), want(2, ca2 + cb1), "after acknowledging a1");
    // Gone, or of another destination: nothing changes.
    next(store, "a.example", Some(id_a1));
    next(store, "a.example", Some(id_b1));
    assert_eq!(
        totals(store),
        want(2, ca2 + cb1),
        "after acknowledgements that delete nothing"
    );
    assert_eq!(
        insert(store, &a1, &unlimited()),
        InsertOutcome::AlreadyDelivered,
        "a repeat of an acknowledged key (remembered by default: {:?})",
        AckedKeys::default()
    );
    assert_eq!(
        totals(store),
        want(2, ca2 + cb1),
        "a remembered key stores nothing"
    );
    drain(store, "a.example");
    drain(store, "b.example");
    assert_eq!(totals(store), want(0, 0), "after draining everything");
}

fn usage(destination: &str, entries: u64, bytes: u64) -> DestinationUsage {
    DestinationUsage {
        destination: server(destination),
        entries,
        bytes,
        oldest_received: Some(NOW),
    }
}

/// `destinations` lists what each destination has queued, most bytes first
/// and ties by name, at most `limit`; a destination emptied by
/// acknowledgements is gone from the list.
pub fn destinations_by_bytes(store: &dyn QueueStore) {
    let list = |limit| {
        store
            .destinations(limit)
            .unwrap_or_else(|err| panic!("destinations({limit}) failed: {err}"))
    };
    assert_eq!(list(10), vec![], "an empty store");
    let a1 = entry("o.example", "a.example", "t1", &[b'x'; 10]);
    let a2 = entry("p.example", "a.example", "t2", &[b'x'; 10]);
    let b1 = entry("o.example", "b.example", "t1", &[b'x'; 300]);
    let c1 = entry("o.example", "c.example", "t1", &[b'x'; 20]);
    let d1 = entry("o.example", "d.example", "t1", &[b'x'; 20]);
    store_new(store, &a1);
    store_new(store, &a2);
    let b = store_new(store, &b1);
    store_new(store, &c1);
    store_new(store, &d1);
    let a = cost(&a1) + cost(&a2);
    assert_eq!(
        list(10),
        vec![
            usage("b.example", 1, cost(&b1)),
            usage("a.example", 2, a),
            usage("c.example", 1, cost(&c1)),
            usage("d.example", 1, cost(&d1)),
        ]
    );
    assert_eq!(
        list(2),
        vec![usage("b.example", 1, cost(&b1)), usage("a.example", 2, a)]
    );
    assert_eq!(list(0), vec![]);
    next(store, "b.example", Some(b));
    assert_eq!(list(1), vec![usage("a.example", 2, a)], "b.example emptied");
}

/// `purge` deletes every entry of one destination and nothing else, frees
/// its quota, and remembers nothing: the same transaction may be stored
/// again.
pub fn purge_deletes_one_destination_whole(store: &dyn QueueStore) {
    let purge = |destination: &str| {
        store
            .purge(&server(destination))
            .unwrap_or_else(|err| panic!("purge({destination}) failed: {err}"))
    };
    assert_eq!(purge("a.example"), want(0, 0), "nothing queued");
    let a1 = entry("o.example", "a.example", "t1", &[b'x'; 10]);
    let a2 = entry("p.example", "a.example", "t2", &[b'y'; 20]);
    let b1 = entry("o.example", "b.example", "t1", &[b'z'; 5]);
    store_new(store, &a1);
    store_new(store, &a2);
    let id_b1 = store_new(store, &b1);

    assert_eq!(purge("a.example"), want(2, cost(&a1) + cost(&a2)));
    assert_eq!(queued(store, "a.example"), 0);
    assert!(
        next(store, "a.example", None).is_none(),
        "a.example emptied"
    );
    assert_eq!(
        totals(store),
        want(1, cost(&b1)),
        "only b.example's entry is left"
    );
    let head = next(store, "b.example", None).expect("b.example's entry stays");
    assert_entry(&head, id_b1, &b1);
    assert_eq!(purge("a.example"), want(0, 0), "purged again");

    // The origin's quota is free again, and the key is not remembered.
    let tight = Quota {
        origin_entries: 2,
        ..unlimited()
    };
    assert!(
        matches!(insert(store, &a1, &tight), InsertOutcome::Stored(_)),
        "a purged transaction is stored again"
    );
}
