//! Queued items: order, payloads, idempotent enqueue, item ID limits.

use relay_core::outbound::{Item, ItemId, ItemKind, OutboundChange, RetryState};

use super::outbound_helpers::*;
use crate::OutboundStore;

/// An empty store loads nothing; empty batches, finishing nothing and
/// clearing a retry state nobody has change nothing.
pub fn empty_store(store: &dyn OutboundStore) {
    assert_loads(store, &[], "empty store");
    apply(store, &[]);
    apply(
        store,
        &[
            finished("d.example", &[1, 2]),
            retry("d.example", RetryState::default()),
        ],
    );
    assert_loads(store, &[], "after no-op changes");
}

/// Items interleaved over three destinations, in batches of several sizes,
/// load per destination in item ID order, destinations in name order; an
/// item with a lower ID enqueued later still comes first.
pub fn items_load_in_id_order(store: &dyn OutboundStore) {
    let dests = ["c.example", "a.example:8448", "b.example"];
    let items: Vec<Item> = (1..=60)
        .map(|i| {
            item(
                i,
                if i % 3 == 0 {
                    ItemKind::Edu
                } else {
                    ItemKind::Pdu
                },
            )
        })
        .collect();
    let changes: Vec<OutboundChange> = items
        .iter()
        .enumerate()
        .map(|(n, it)| enqueued(dests[n % 3], it))
        .collect();
    let mut rest = &changes[..];
    for size in 1.. {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        apply(store, batch);
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    // A lower ID, enqueued last, for c.example.
    let early = pdu(0);
    apply(store, &[enqueued("c.example", &early)]);

    let of = |d: usize| -> Vec<&Item> {
        items
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 3 == d)
            .map(|(_, it)| it)
            .collect()
    };
    let mut c = vec![&early];
    c.extend(of(0));
    assert_loads(
        store,
        &[
            record("a.example:8448", &of(1), None, RetryState::default()),
            record("b.example", &of(2), None, RetryState::default()),
            record("c.example", &c, None, RetryState::default()),
        ],
        "interleaved enqueues",
    );
}

/// Payloads come back byte for byte: empty, every byte value, not UTF-8,
/// large; kinds with them.
pub fn payloads_round_trip(store: &dyn OutboundStore) {
    let payloads: Vec<Vec<u8>> = vec![
        Vec::new(),
        (0..=255).collect(),
        b"\xff\xfe not UTF-8 \x00 with a NUL".to_vec(),
        br#"{"type":"m.room.message","content":{"body":"h\u00e9llo \ud83d\ude00"}}"#.to_vec(),
        (0..300_000u32).map(|i| (i % 251) as u8).collect(),
    ];
    let items: Vec<Item> = payloads
        .into_iter()
        .zip(1..)
        .map(|(json, id)| Item {
            id: ItemId(id),
            kind: if id % 2 == 0 {
                ItemKind::Edu
            } else {
                ItemKind::Pdu
            },
            json,
        })
        .collect();
    let changes: Vec<OutboundChange> = items.iter().map(|i| enqueued("d.example", i)).collect();
    apply(store, &changes);
    let want: Vec<&Item> = items.iter().collect();
    assert_loads(
        store,
        &[record("d.example", &want, None, RetryState::default())],
        "payloads",
    );
}

/// Enqueueing an identical item again, alone or in the same batch, stores
/// it once. Once deleted, its ID is free again.
pub fn identical_enqueue_is_idempotent(store: &dyn OutboundStore) {
    let a = pdu(1);
    let b = item(2, ItemKind::Edu);
    apply(store, &[enqueued("d.example", &a)]);
    apply(store, &[enqueued("d.example", &a)]);
    apply(
        store,
        &[
            enqueued("d.example", &b),
            enqueued("d.example", &b),
            enqueued("d.example", &a),
        ],
    );
    assert_loads(
        store,
        &[record("d.example", &[&a, &b], None, RetryState::default())],
        "after repeated enqueues",
    );

    apply(store, &[finished("d.example", &[1])]);
    let a2 = Item {
        json: b"{\"new\":true}".to_vec(),
        ..a.clone()
    };
    apply(store, &[enqueued("other.example", &a2)]);
    assert_loads(
        store,
        &[
            record("d.example", &[&b], None, RetryState::default()),
            record("other.example", &[&a2], None, RetryState::default()),
        ],
        "an ID enqueued again after its item was deleted",
    );
}

/// An ID queued already with another destination, kind or JSON is refused,
/// whether it was queued before or earlier in the same batch.
pub fn conflicting_enqueue_is_refused(store: &dyn OutboundStore) {
    let a = pdu(1);
    apply(store, &[enqueued("d.example", &a)]);
    let want = [record("d.example", &[&a], None, RetryState::default())];
    let other_json = Item {
        json: b"{\"item\":\"other\"}".to_vec(),
        ..a.clone()
    };
    let other_kind = Item {
        kind: ItemKind::Edu,
        ..a.clone()
    };
    refused(store, &[enqueued("d.example", &other_json)], "other JSON");
    refused(store, &[enqueued("d.example", &other_kind)], "other kind");
    refused(store, &[enqueued("e.example", &a)], "other destination");
    assert_loads(store, &want, "after refused enqueues");

    let b = pdu(2);
    let b2 = Item {
        json: b"{}".to_vec(),
        ..b.clone()
    };
    refused(
        store,
        &[enqueued("d.example", &b), enqueued("d.example", &b2)],
        "a conflict within one batch",
    );
    assert_loads(store, &want, "after a batch with a conflict in itself");
}

/// Item IDs up to `i64::MAX` are stored; larger ones are refused in every
/// kind of change.
pub fn item_id_limit(store: &dyn OutboundStore) {
    let max = i64::MAX.unsigned_abs();
    let (zero, top) = (pdu(0), pdu(max));
    apply(
        store,
        &[
            enqueued("d.example", &top),
            enqueued("d.example", &zero),
            started("d.example", "t", &[0, max]),
        ],
    );
    let want = [record(
        "d.example",
        &[&zero, &top],
        Some(("t", &[0, max])),
        RetryState::default(),
    )];
    assert_loads(store, &want, "IDs 0 and i64::MAX");
    for id in [max + 1, u64::MAX] {
        refused(
            store,
            &[enqueued("d.example", &pdu(id))],
            "enqueue past i64::MAX",
        );
        refused(
            store,
            &[started("d.example", "t2", &[0, id])],
            "txn past i64::MAX",
        );
        refused(
            store,
            &[finished("d.example", &[0, id])],
            "finish past i64::MAX",
        );
    }
    assert_loads(store, &want, "after refused IDs");
    apply(store, &[finished("d.example", &[0, max])]);
    assert_loads(store, &[], "after finishing them");
}
