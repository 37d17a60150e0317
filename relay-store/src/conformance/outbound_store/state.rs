//! Transactions in flight, retry states, and batches: order, atomicity,
//! concurrency.

use std::sync::Barrier;

use relay_core::UnixMillis;
use relay_core::outbound::{Item, ItemKind, OutboundChange, RetryState};

use super::outbound_helpers::*;
use crate::OutboundStore;

/// `TxnStarted` records the transaction and replaces an earlier one;
/// `TxnFinished` deletes its items and forgets it; a record lasts while
/// items or a transaction do.
pub fn txn_started_and_finished(store: &dyn OutboundStore) {
    let items: Vec<Item> = (1..=5).map(pdu).collect();
    let all: Vec<OutboundChange> = items.iter().map(|i| enqueued("d.example", i)).collect();
    apply(store, &all);
    let r = |items: &[&Item], txn_in_flight| {
        record("d.example", items, txn_in_flight, RetryState::default())
    };
    let [i1, i2, i3, i4, i5] = [&items[0], &items[1], &items[2], &items[3], &items[4]];

    apply(store, &[started("d.example", "t1", &[1, 2, 3])]);
    assert_loads(
        store,
        &[r(&[i1, i2, i3, i4, i5], Some(("t1", &[1, 2, 3])))],
        "a transaction started",
    );
    apply(store, &[started("d.example", "t2", &[1, 2])]);
    assert_loads(
        store,
        &[r(&[i1, i2, i3, i4, i5], Some(("t2", &[1, 2])))],
        "a transaction replaced",
    );
    apply(store, &[finished("d.example", &[1, 2])]);
    assert_loads(store, &[r(&[i3, i4, i5], None)], "a transaction finished");

    apply(
        store,
        &[
            started("d.example", "t3", &[3, 4, 5]),
            finished("d.example", &[3, 4, 5]),
        ],
    );
    assert_loads(store, &[], "everything sent: the destination is forgotten");

    // A transaction is kept as given, even with no or unknown items, and
    // keeps its destination's record alive.
    apply(
        store,
        &[
            started("e.example", "empty", &[]),
            started("f.example", "unknown", &[7, 9, 8]),
        ],
    );
    assert_loads(
        store,
        &[
            record(
                "e.example",
                &[],
                Some(("empty", &[])),
                RetryState::default(),
            ),
            record(
                "f.example",
                &[],
                Some(("unknown", &[7, 9, 8])),
                RetryState::default(),
            ),
        ],
        "transactions without queued items",
    );
    apply(
        store,
        &[
            finished("e.example", &[]),
            finished("f.example", &[7, 9, 8]),
        ],
    );
    assert_loads(store, &[], "after finishing them");
}

/// `TxnFinished` deletes only listed items of its own destination: other
/// destinations' items and gone IDs are left alone, unlisted items stay.
pub fn txn_finished_is_exact(store: &dyn OutboundStore) {
    let (a1, a2, a3, b4) = (pdu(1), pdu(2), pdu(3), pdu(4));
    apply(
        store,
        &[
            enqueued("a.example", &a1),
            enqueued("a.example", &a2),
            enqueued("a.example", &a3),
            enqueued("b.example", &b4),
            started("a.example", "ta", &[1, 2]),
            started("b.example", "tb", &[4]),
        ],
    );
    apply(store, &[finished("a.example", &[2, 4, 99])]);
    assert_loads(
        store,
        &[
            record("a.example", &[&a1, &a3], None, RetryState::default()),
            record(
                "b.example",
                &[&b4],
                Some(("tb", &[4])),
                RetryState::default(),
            ),
        ],
        "finished with a middle item, another destination's item and a gone ID",
    );
}

/// Retry states are stored as given, replaced, clamped past `i64::MAX` ms,
/// and cleared by the default state; a record lasts while a non-default
/// state or items do.
pub fn retry_set_and_cleared(store: &dyn OutboundStore) {
    let first = backing_off(1, Some(1_700_000_000_000));
    apply(store, &[retry("d.example", first)]);
    assert_loads(
        store,
        &[record("d.example", &[], None, first)],
        "a retry state alone",
    );

    let blacklisted = RetryState {
        direct_failures: 3,
        failed_attempts: 16,
        next_retry: None,
        blacklisted: true,
    };
    apply(store, &[retry("d.example", blacklisted)]);
    assert_loads(
        store,
        &[record("d.example", &[], None, blacklisted)],
        "replaced",
    );

    let largest = RetryState {
        direct_failures: u32::MAX,
        failed_attempts: u32::MAX,
        next_retry: Some(UnixMillis(i64::MAX.unsigned_abs())),
        blacklisted: true,
    };
    apply(store, &[retry("d.example", largest)]);
    assert_loads(
        store,
        &[record("d.example", &[], None, largest)],
        "largest values",
    );
    apply(store, &[retry("d.example", backing_off(2, Some(u64::MAX)))]);
    assert_loads(
        store,
        &[record(
            "d.example",
            &[],
            None,
            backing_off(2, Some(i64::MAX.unsigned_abs())),
        )],
        "next_retry past i64::MAX ms is clamped",
    );
    let only_offline = RetryState {
        direct_failures: 1,
        ..RetryState::default()
    };
    apply(store, &[retry("d.example", only_offline)]);
    assert_loads(
        store,
        &[record("d.example", &[], None, only_offline)],
        "one field set",
    );

    apply(store, &[retry("d.example", RetryState::default())]);
    assert_loads(store, &[], "cleared");

    // With items: clearing keeps the record, deleting the items keeps the
    // state's record.
    let a = pdu(1);
    apply(
        store,
        &[enqueued("e.example", &a), retry("e.example", first)],
    );
    apply(store, &[retry("e.example", RetryState::default())]);
    assert_loads(
        store,
        &[record("e.example", &[&a], None, RetryState::default())],
        "cleared with items queued",
    );
    apply(
        store,
        &[
            retry("e.example", first),
            started("e.example", "t", &[1]),
            finished("e.example", &[1]),
        ],
    );
    assert_loads(
        store,
        &[record("e.example", &[], None, first)],
        "items gone, retry state kept",
    );
}

/// A batch's changes apply in order and see the ones before them.
pub fn changes_apply_in_order(store: &dyn OutboundStore) {
    let a = pdu(1);
    let a_new = Item {
        kind: ItemKind::Edu,
        json: b"{\"again\":1}".to_vec(),
        ..a.clone()
    };
    let b = pdu(2);
    apply(
        store,
        &[
            enqueued("d.example", &a),
            enqueued("d.example", &b),
            started("d.example", "t1", &[1]),
            retry("d.example", backing_off(1, Some(5))),
            finished("d.example", &[1]),
            // ID 1 is free again within the same batch.
            enqueued("d.example", &a_new),
            started("d.example", "t2", &[1, 2]),
            retry("d.example", backing_off(2, None)),
            retry("d.example", RetryState::default()),
        ],
    );
    assert_loads(
        store,
        &[record(
            "d.example",
            &[&a_new, &b],
            Some(("t2", &[1, 2])),
            RetryState::default(),
        )],
        "one batch of many changes",
    );
}

/// A batch whose last change is an error stores nothing of the batch, and
/// the store carries on.
pub fn apply_is_atomic(store: &dyn OutboundStore) {
    let (a, b, c) = (pdu(1), pdu(2), pdu(3));
    let state = backing_off(1, Some(1_000));
    apply(
        store,
        &[
            enqueued("d.example", &a),
            enqueued("d.example", &b),
            started("d.example", "t1", &[1]),
            retry("d.example", state),
            enqueued("e.example", &c),
        ],
    );
    let before = [
        record("d.example", &[&a, &b], Some(("t1", &[1])), state),
        record("e.example", &[&c], None, RetryState::default()),
    ];
    let conflicting = Item {
        json: b"{\"item\":\"conflict\"}".to_vec(),
        ..b.clone()
    };
    let good = vec![
        enqueued("f.example", &pdu(10)),
        enqueued("d.example", &pdu(11)),
        finished("d.example", &[1]),
        started("d.example", "t2", &[2, 11]),
        retry("d.example", RetryState::default()),
        retry("e.example", backing_off(5, None)),
        finished("e.example", &[3]),
    ];
    for (bad, why) in [
        (enqueued("d.example", &conflicting), "a conflicting enqueue"),
        (
            enqueued("d.example", &pdu(1 << 63)),
            "an item ID past i64::MAX",
        ),
    ] {
        let mut batch = good.clone();
        batch.push(bad);
        refused(store, &batch, why);
        assert_loads(store, &before, &format!("after a batch ending in {why}"));
    }

    apply(store, &good);
    let (i10, i11) = (pdu(10), pdu(11));
    assert_loads(
        store,
        &[
            record(
                "d.example",
                &[&b, &i11],
                Some(("t2", &[2, 11])),
                RetryState::default(),
            ),
            record("e.example", &[], None, backing_off(5, None)),
            record("f.example", &[&i10], None, RetryState::default()),
        ],
        "the same batch without the bad change",
    );
}

const THREADS: u64 = 4;
const BATCHES: u64 = 25;

/// 4 threads × 25 batches, each thread on its own destination: everything
/// stored, each queue in order.
pub fn concurrent_applies(store: &dyn OutboundStore) {
    let start = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let start = &start;
            s.spawn(move || {
                start.wait();
                let d = format!("d{t}.example");
                for n in 0..BATCHES {
                    let id = 1 + t * BATCHES + n;
                    let mut batch = vec![enqueued(&d, &pdu(id))];
                    if n % 5 == 4 {
                        batch.push(started(&d, &format!("t{n}"), &[id - 1, id]));
                        batch.push(retry(&d, backing_off(n as u32, None)));
                    }
                    apply(store, &batch);
                }
            });
        }
    });
    let mut want = Vec::new();
    for t in 0..THREADS {
        let items: Vec<Item> = (0..BATCHES).map(|n| pdu(1 + t * BATCHES + n)).collect();
        let last = t * BATCHES + BATCHES;
        want.push(record(
            &format!("d{t}.example"),
            &items.iter().collect::<Vec<_>>(),
            Some((&format!("t{}", BATCHES - 1), &[last - 1, last])),
            backing_off(BATCHES as u32 - 1, None),
        ));
    }
    assert_loads(store, &want, "after concurrent batches");
}
