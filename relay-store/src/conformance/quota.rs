//! Quotas of every kind.

use relay_core::EntryId;
use relay_core::store::{AckedKeys, InsertOutcome, NewEntry, Quota, QuotaKind};

use super::helpers::*;
use crate::QueueStore;

fn expect(store: &dyn QueueStore, e: &NewEntry, quota: &Quota, want: InsertOutcome, what: &str) {
    assert_eq!(insert(store, e, quota), want, "{what}");
}

fn expect_stored(store: &dyn QueueStore, e: &NewEntry, quota: &Quota, what: &str) -> EntryId {
    match insert(store, e, quota) {
        InsertOutcome::Stored(id) => id,
        other => panic!("{what}: expected Stored, got {other:?}"),
    }
}

/// `destination_entries` caps one destination's queue, not others'.
pub fn quota_destination_entries(store: &dyn QueueStore) {
    let q = Quota {
        destination_entries: 3,
        ..unlimited()
    };
    for i in 0..3 {
        expect_stored(
            store,
            &entry(&format!("o{i}.example"), "d.example", "t", b"{}"),
            &q,
            "entry within the destination quota",
        );
    }
    let refused = InsertOutcome::QuotaExceeded(QuotaKind::Destination);
    expect(
        store,
        &entry("o9.example", "d.example", "t", b"{}"),
        &q,
        refused,
        "4th entry for a destination capped at 3",
    );
    assert_eq!(queued(store, "d.example"), 3, "queued() after a refusal");
    expect_stored(
        store,
        &entry("o9.example", "other.example", "t", b"{}"),
        &q,
        "another destination is not capped",
    );
}

/// `destination_bytes` caps one destination's bytes, counted as
/// [`entry_cost`](relay_core::store::entry_cost); the limit itself fits.
pub fn quota_destination_bytes(store: &dyn QueueStore) {
    // Room for two entries with 100 bytes of transaction between them.
    let oh = overhead("o.example", "d.example", "t1");
    let q = Quota {
        destination_bytes: 100 + 2 * oh,
        ..unlimited()
    };
    let refused = InsertOutcome::QuotaExceeded(QuotaKind::Destination);
    let huge = q.destination_bytes - overhead("o.example", "d.example", "huge") + 1;
    expect(
        store,
        &entry("o.example", "d.example", "huge", &vec![b' '; huge as usize]),
        &q,
        refused,
        "one entry costing one byte more than the quota",
    );
    expect_stored(
        store,
        &entry("o.example", "d.example", "t1", &[b' '; 60]),
        &q,
        "60 of 100 bytes",
    );
    expect(
        store,
        &entry("o.example", "d.example", "t2", &[b' '; 41]),
        &q,
        refused,
        "60 + 41 of 100 bytes",
    );
    expect_stored(
        store,
        &entry("o.example", "d.example", "t3", &[b' '; 40]),
        &q,
        "60 + 40 of 100 bytes (exactly full)",
    );
    expect(
        store,
        &entry("o.example", "d.example", "t5", b""),
        &q,
        refused,
        "an empty body into a full destination (it still costs its row)",
    );
    expect_stored(
        store,
        &entry("o.example", "other.example", "t6", &[b' '; 100]),
        &q,
        "another destination",
    );
}

/// `origin_entries` caps what one origin has queued over all destinations.
pub fn quota_origin_entries(store: &dyn QueueStore) {
    let q = Quota {
        origin_entries: 3,
        ..unlimited()
    };
    for i in 0..3 {
        expect_stored(
            store,
            &entry("o.example", &format!("d{i}.example"), "t", b"{}"),
            &q,
            "entry within the origin quota",
        );
    }
    let refused = InsertOutcome::QuotaExceeded(QuotaKind::Origin);
    expect(
        store,
        &entry("o.example", "d9.example", "t", b"{}"),
        &q,
        refused,
        "4th entry of an origin capped at 3",
    );
    assert_eq!(queued(store, "d9.example"), 0, "queued() after a refusal");
    expect_stored(
        store,
        &entry("other.example", "d9.example", "t", b"{}"),
        &q,
        "another origin is not capped",
    );
}

/// `origin_bytes` caps one origin's bytes over all destinations.
pub fn quota_origin_bytes(store: &dyn QueueStore) {
    let oh = overhead("o.example", "d1.example", "t1");
    let q = Quota {
        origin_bytes: 100 + 2 * oh,
        ..unlimited()
    };
    let refused = InsertOutcome::QuotaExceeded(QuotaKind::Origin);
    expect_stored(
        store,
        &entry("o.example", "d1.example", "t1", &[b' '; 70]),
        &q,
        "70 of 100 bytes",
    );
    expect(
        store,
        &entry("o.example", "d2.example", "t2", &[b' '; 31]),
        &q,
        refused,
        "70 + 31 of 100 bytes, other destination",
    );
    expect_stored(
        store,
        &entry("o.example", "d2.example", "t3", &[b' '; 30]),
        &q,
        "70 + 30 of 100 bytes (exactly full)",
    );
    expect_stored(
        store,
        &entry("other.example", "d2.example", "t4", &[b' '; 100]),
        &q,
        "another origin",
    );
}

/// `total_bytes` caps the whole relay, over all origins and destinations.
pub fn quota_total_bytes(store: &dyn QueueStore) {
    let oh = overhead("o1.example", "d1.example", "t");
    let q = Quota {
        total_bytes: 100 + 2 * oh,
        ..unlimited()
    };
    let refused = InsertOutcome::QuotaExceeded(QuotaKind::Total);
    expect_stored(
        store,
        &entry("o1.example", "d1.example", "t", &[b' '; 50]),
        &q,
        "50 of 100 bytes",
    );
    expect_stored(
        store,
        &entry("o2.example", "d2.example", "t", &[b' '; 50]),
        &q,
        "50 + 50 of 100 bytes",
    );
    expect(
        store,
        &entry("o3.example", "d3.example", "t", b""),
        &q,
        refused,
        "an empty body into a full relay (it still costs its row)",
    );
}

/// `total_entries` caps the entries of the whole relay; an acknowledgement
/// makes room.
pub fn quota_total_entries(store: &dyn QueueStore) {
    let q = Quota {
        total_entries: 3,
        ..unlimited()
    };
    let mut first = None;
    for i in 0..3 {
        let id = expect_stored(
            store,
            &entry(
                &format!("o{i}.example"),
                &format!("d{i}.example"),
                "t",
                b"{}",
            ),
            &q,
            "within the total entries",
        );
        first.get_or_insert(id);
    }
    let fourth = entry("o9.example", "d9.example", "t", b"{}");
    expect(
        store,
        &fourth,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::TotalEntries),
        "a 4th entry in a relay capped at 3",
    );
    next(store, "d0.example", first);
    expect_stored(store, &fourth, &q, "the 4th once one was acknowledged");
}

/// No origin holds more than its share of one destination's queue, in
/// entries and in bytes; other origins still store there, and the same
/// origin still stores for other destinations.
pub fn quota_origin_share(store: &dyn QueueStore) {
    let q = Quota {
        destination_entries: 10,
        origin_share_percent: 50,
        ..unlimited()
    };
    for i in 0..5 {
        expect_stored(
            store,
            &entry("a.example", "d.example", &format!("t{i}"), b"{}"),
            &q,
            "within the origin's half",
        );
    }
    let refused = InsertOutcome::QuotaExceeded(QuotaKind::OriginShare);
    let sixth = entry("a.example", "d.example", "t5", b"{}");
    expect(store, &sixth, &q, refused, "a 6th of 10 from one origin");
    for i in 0..5 {
        expect_stored(
            store,
            &entry("b.example", "d.example", &format!("t{i}"), b"{}"),
            &q,
            "another origin, same destination",
        );
    }
    expect_stored(
        store,
        &entry("a.example", "other.example", "t5", b"{}"),
        &q,
        "the same origin, another destination",
    );
    let a0 = drain(store, "d.example")
        .first()
        .map(|e| e.entry_id)
        .expect("entries for d.example");
    assert!(a0.0 > 0);
    expect_stored(store, &sixth, &q, "the 6th once the queue drained");

    // Bytes: half of a queue with room for two 100-byte entries.
    let e = |origin: &str, txn_id: &str| entry(origin, "bytes.example", txn_id, &[b' '; 100]);
    let q = Quota {
        destination_bytes: 2 * cost(&e("a.example", "t1")),
        origin_share_percent: 50,
        ..unlimited()
    };
    expect_stored(store, &e("a.example", "t1"), &q, "one of two");
    expect(
        store,
        &e("a.example", "t2"),
        &q,
        refused,
        "past the half in bytes",
    );
    expect_stored(store, &e("b.example", "t1"), &q, "another origin's half");
}

/// A refused insert leaves no trace: not queued, not a duplicate later.
pub fn quota_refusal_stores_nothing(store: &dyn QueueStore) {
    let q = Quota {
        destination_entries: 1,
        ..unlimited()
    };
    let first = expect_stored(
        store,
        &entry("o.example", "d.example", "t1", b"{}"),
        &q,
        "first entry",
    );
    let refused = entry("o.example", "d.example", "t2", b"{}");
    expect(
        store,
        &refused,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::Destination),
        "second entry, capped at 1",
    );
    let got: Vec<EntryId> = drain(store, "d.example")
        .iter()
        .map(|e| e.entry_id)
        .collect();
    assert_eq!(got, vec![first], "entries after a refusal");
    let id = expect_stored(store, &refused, &q, "the refused entry, once there is room");
    assert!(
        id > first,
        "entry stored after a refusal got {id:?}, not above {first:?}"
    );
}

/// The duplicate check comes first: a duplicate into a full queue is
/// `Duplicate`, and duplicates use no quota.
pub fn quota_ignores_duplicates(store: &dyn QueueStore) {
    let e1 = entry("o.example", "d.example", "t1", &[b' '; 5]);
    let full = 2 * cost(&e1);
    let q = Quota {
        destination_entries: 2,
        destination_bytes: full,
        origin_share_percent: 100,
        origin_entries: 2,
        origin_bytes: full,
        total_entries: 2,
        total_bytes: full,
        acked: AckedKeys::default(),
    };
    let id1 = expect_stored(store, &e1, &q, "first entry");
    for _ in 0..5 {
        expect(
            store,
            &e1,
            &q,
            InsertOutcome::Duplicate(id1),
            "duplicate within quota",
        );
    }
    let e2 = entry("o.example", "d.example", "t2", &[b' '; 5]);
    let id2 = expect_stored(store, &e2, &q, "second entry (duplicates used no quota)");
    expect(
        store,
        &e1,
        &q,
        InsertOutcome::Duplicate(id1),
        "duplicate into a full queue",
    );
    expect(
        store,
        &e2,
        &q,
        InsertOutcome::Duplicate(id2),
        "duplicate into a full queue",
    );
}

/// Acknowledging frees the entries and bytes it held, for every quota.
pub fn quota_freed_by_ack(store: &dyn QueueStore) {
    let half = cost(&entry("o.example", "d.example", "a", &[b' '; 50]));
    let q = Quota {
        destination_entries: 2,
        destination_bytes: 2 * half,
        origin_share_percent: 100,
        origin_entries: 2,
        origin_bytes: 2 * half,
        total_entries: u64::MAX,
        total_bytes: 2 * half,
        acked: AckedKeys::default(),
    };
    let a = expect_stored(
        store,
        &entry("o.example", "d.example", "a", &[b' '; 50]),
        &q,
        "a",
    );
    expect_stored(
        store,
        &entry("o.example", "d.example", "b", &[b' '; 50]),
        &q,
        "b",
    );
    let c = entry("o.example", "d.example", "c", &[b' '; 50]);
    expect(
        store,
        &c,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::Destination),
        "c into a full queue",
    );
    next(store, "d.example", Some(a));
    expect_stored(store, &c, &q, "c after acking a");
    // Bytes too: a quota holding b and c takes no more until both are
    // gone, then takes their bytes at once.
    let big_len = 2 * half - overhead("o2.example", "d2.example", "big");
    let big = entry(
        "o2.example",
        "d2.example",
        "big",
        &vec![b' '; big_len as usize],
    );
    expect(
        store,
        &big,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::Total),
        "a full quota's bytes into a full relay",
    );
    drain(store, "d.example");
    expect_stored(store, &big, &q, "a full quota's bytes after draining");
}

/// When several quotas are full, the refusal names the first of
/// destination, origin's share, origin, total entries, total bytes.
pub fn quota_check_order(store: &dyn QueueStore) {
    let first = entry("o.example", "d.example", "t", &[b' '; 10]);
    let q = Quota {
        destination_entries: 1,
        destination_bytes: u64::MAX,
        origin_share_percent: 100,
        origin_entries: 1,
        origin_bytes: u64::MAX,
        total_entries: u64::MAX,
        total_bytes: cost(&first),
        acked: AckedKeys::default(),
    };
    expect_stored(store, &first, &q, "first entry");
    let all_full = entry("o.example", "d.example", "t2", b"x");
    expect(
        store,
        &all_full,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::Destination),
        "destination, origin and total all full",
    );
    let origin_full = entry("o.example", "d2.example", "t2", b"x");
    expect(
        store,
        &origin_full,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::Origin),
        "origin and total full",
    );
    let total_full = entry("o2.example", "d2.example", "t2", b"x");
    expect(
        store,
        &total_full,
        &q,
        InsertOutcome::QuotaExceeded(QuotaKind::Total),
        "only total full",
    );
    let share = Quota {
        destination_entries: 2,
        origin_share_percent: 50,
        total_entries: 1,
        ..q
    };
    expect(
        store,
        &all_full,
        &share,
        InsertOutcome::QuotaExceeded(QuotaKind::OriginShare),
        "origin's share, origin and totals full",
    );
    let entries = Quota {
        origin_entries: u64::MAX,
        total_entries: 1,
        ..q
    };
    expect(
        store,
        &total_full,
        &entries,
        InsertOutcome::QuotaExceeded(QuotaKind::TotalEntries),
        "total entries and bytes full",
    );
}
