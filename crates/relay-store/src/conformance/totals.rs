//! What is queued in all.

use relay_core::store::{AckedKeys, InsertOutcome, Quota, QuotaKind};

use super::helpers::*;
use crate::{QueueStore, QueueTotals};

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
    assert_eq!(totals(store), want(3, 35), "after 3 inserts");

    assert_eq!(
        insert(store, &a1, &unlimited()),
        InsertOutcome::Duplicate(id_a1),
        "a repeat of a queued key"
    );
    let tight = Quota {
        total_bytes: 40,
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
        want(3, 35),
        "a duplicate and a refusal store nothing"
    );

    assert_eq!(
        next(store, "a.example", Some(id_a1)).map(|e| e.txn_id),
        Some(txn("t2"))
    );
    assert_eq!(totals(store), want(2, 25), "after acknowledging 10 bytes");
    // Gone, or of another destination: nothing changes.
    next(store, "a.example", Some(id_a1));
    next(store, "a.example", Some(id_b1));
    assert_eq!(
        totals(store),
        want(2, 25),
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
        want(2, 25),
        "a remembered key stores nothing"
    );
    drain(store, "a.example");
    drain(store, "b.example");
    assert_eq!(totals(store), want(0, 0), "after draining everything");
}
