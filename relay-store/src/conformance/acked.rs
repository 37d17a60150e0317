//! Remembered acknowledgements: a transaction the destination has taken is
//! not stored again, for a bounded time and in bounded number.

use std::sync::Barrier;

use relay_core::store::{Ack, AckedKeys, InsertOutcome, NewEntry, Quota, QuotaKind};
use relay_core::{EntryId, UnixMillis};

use super::helpers::*;
use crate::QueueStore;

/// A short retention, so checks can step past it.
const RETENTION_MS: u64 = 60_000;

fn keys(retention_ms: u64, max: u64) -> AckedKeys {
    AckedKeys {
        retention_ms,
        max,
        max_bytes: u64::MAX,
    }
}

fn quota(keys: AckedKeys) -> Quota {
    Quota {
        acked: keys,
        ..unlimited()
    }
}

fn at(e: &NewEntry, received: UnixMillis) -> NewEntry {
    NewEntry {
        received,
        ..e.clone()
    }
}

/// Acknowledges entry `id` of `destination` at `when`, remembering as
/// `keys` says.
fn ack(store: &dyn QueueStore, destination: &str, id: EntryId, when: UnixMillis, keys: AckedKeys) {
    next_after(
        store,
        destination,
        Some(Ack {
            entry_id: id,
            at: when,
            keys,
        }),
    );
}

/// Stores `e` and has its destination acknowledge it at `when`.
fn deliver(store: &dyn QueueStore, e: &NewEntry, when: UnixMillis, keys: AckedKeys) -> EntryId {
    let id = store_new(store, e);
    ack(store, e.destination.as_str(), id, when, keys);
    id
}

fn expect(got: InsertOutcome, want: InsertOutcome, what: &str) {
    assert_eq!(got, want, "{what}");
}

/// Insert, acknowledge, insert again: the second insert is
/// `AlreadyDelivered`, stores nothing and counts against no quota (it is
/// checked before the quotas).
pub fn reinsert_after_ack_is_already_delivered(store: &dyn QueueStore) {
    let e = entry("o.example", "d.example", "t", b"{}");
    let id = store_new(store, &e);
    assert_eq!(
        next(store, "d.example", Some(id)),
        None,
        "ack of the only entry"
    );
    for (what, q) in [
        ("default quota", unlimited()),
        (
            "destination full",
            Quota {
                destination_entries: 0,
                ..unlimited()
            },
        ),
    ] {
        expect(
            insert(store, &e, &q),
            InsertOutcome::AlreadyDelivered,
            &format!("re-insert after ack ({what})"),
        );
    }
    let other_body = entry("o.example", "d.example", "t", b"{\"other\":1}");
    expect(
        insert(store, &other_body, &unlimited()),
        InsertOutcome::AlreadyDelivered,
        "re-insert after ack with another body",
    );
    assert_eq!(queued(store, "d.example"), 0, "queued() after re-inserts");
    assert_eq!(next(store, "d.example", None), None, "nothing to hand out");
    // A new key is stored as usual, and a full quota still refuses it.
    let full = Quota {
        destination_entries: 0,
        ..unlimited()
    };
    let new = entry("o.example", "d.example", "t2", b"{}");
    expect(
        insert(store, &new, &full),
        InsertOutcome::QuotaExceeded(QuotaKind::Destination),
        "a new key over quota",
    );
    let id2 = store_new(store, &new);
    assert!(id2 > id, "{id2:?} is not above {id:?}");
}

/// A key is remembered for `retention_ms` after its acknowledgement, and
/// insertable again (as a new entry) from then on.
pub fn retention_expiry_allows_reinsert(store: &dyn QueueStore) {
    let k = keys(RETENTION_MS, 1_000);
    let e = entry("o.example", "d.example", "t", b"{}");
    let acked_at = UnixMillis(NOW.0 + 5_000);
    let first = deliver(store, &e, acked_at, k);
    for (offset, want) in [
        (0, InsertOutcome::AlreadyDelivered),
        (RETENTION_MS - 1, InsertOutcome::AlreadyDelivered),
    ] {
        expect(
            insert(
                store,
                &at(&e, acked_at.saturating_add_ms(offset)),
                &quota(k),
            ),
            want,
            &format!("insert {offset} ms after the ack"),
        );
    }
    // Received before the ack (a clock behind): still remembered.
    expect(
        insert(store, &at(&e, NOW), &quota(k)),
        InsertOutcome::AlreadyDelivered,
        "insert received before the ack",
    );
    let expired = at(&e, acked_at.saturating_add_ms(RETENTION_MS));
    let InsertOutcome::Stored(second) = insert(store, &expired, &quota(k)) else {
        panic!("insert {RETENTION_MS} ms after the ack: expected Stored");
    };
    assert!(second > first, "{second:?} is not above {first:?}");
    assert_eq!(queued(store, "d.example"), 1, "queued() after re-insert");
    // Acknowledged again, it is remembered again, from the new ack.
    let again = acked_at.saturating_add_ms(2 * RETENTION_MS);
    ack(store, "d.example", second, again, k);
    expect(
        insert(
            store,
            &at(&e, again.saturating_add_ms(RETENTION_MS - 1)),
            &quota(k),
        ),
        InsertOutcome::AlreadyDelivered,
        "re-insert after the second ack",
    );
    // Other acknowledgements, long after, forget it (pruning), and an insert
    // after the retention stores it whatever pruning did.
    let late = again.saturating_add_ms(10 * RETENTION_MS);
    deliver(store, &entry("o.example", "d.example", "u", b"{}"), late, k);
    let InsertOutcome::Stored(_) = insert(store, &at(&e, late), &quota(k)) else {
        panic!("insert long after the second ack: expected Stored");
    };
}

/// Past `max` remembered keys, the oldest are forgotten first.
pub fn acked_cap_forgets_oldest_first(store: &dyn QueueStore) {
    let k = keys(RETENTION_MS, 2);
    let es: Vec<NewEntry> = ["a", "b", "c"]
        .iter()
        .map(|t| entry("o.example", "d.example", t, b"{}"))
        .collect();
    for (i, e) in es.iter().enumerate() {
        deliver(store, e, NOW.saturating_add_ms(i as u64), k);
    }
    let now = NOW.saturating_add_ms(10);
    expect(
        insert(store, &at(&es[1], now), &quota(k)),
        InsertOutcome::AlreadyDelivered,
        "second newest key (b)",
    );
    expect(
        insert(store, &at(&es[2], now), &quota(k)),
        InsertOutcome::AlreadyDelivered,
        "newest key (c)",
    );
    let InsertOutcome::Stored(a) = insert(store, &at(&es[0], now), &quota(k)) else {
        panic!("oldest key (a) past the cap of 2: expected Stored");
    };
    // Acknowledging a again remembers it as the newest: b goes.
    ack(store, "d.example", a, now, k);
    expect(
        insert(store, &at(&es[0], now), &quota(k)),
        InsertOutcome::AlreadyDelivered,
        "a, remembered again",
    );
    expect(
        insert(store, &at(&es[2], now), &quota(k)),
        InsertOutcome::AlreadyDelivered,
        "c, still among the newest two",
    );
    let InsertOutcome::Stored(_) = insert(store, &at(&es[1], now), &quota(k)) else {
        panic!("b, now the oldest of three: expected Stored");
    };
}

/// Past `max_bytes` of remembered keys (each counted as
/// [`acked_key_cost`](relay_core::store::acked_key_cost)), the oldest are
/// forgotten first, as many as it takes and no more.
pub fn acked_bytes_forget_oldest_first(store: &dyn QueueStore) {
    let es: Vec<NewEntry> = ["a", "b", "c"]
        .iter()
        .map(|t| entry("o.example", "d.example", t, b"{}"))
        .collect();
    let one = relay_core::store::acked_key_cost("o.example", "d.example", "a");
    let k = AckedKeys {
        max_bytes: 2 * one,
        ..keys(RETENTION_MS, 1_000)
    };
    for (i, e) in es.iter().enumerate() {
        deliver(store, e, NOW.saturating_add_ms(i as u64), k);
    }
    let now = NOW.saturating_add_ms(10);
    for (e, what) in [(&es[1], "b"), (&es[2], "c")] {
        expect(
            insert(store, &at(e, now), &quota(k)),
            InsertOutcome::AlreadyDelivered,
            &format!("{what}, among the newest two keys' bytes"),
        );
    }
    let InsertOutcome::Stored(_) = insert(store, &at(&es[0], now), &quota(k)) else {
        panic!("oldest key (a) past the bytes of two: expected Stored");
    };
    // A key larger than the bound is not kept at all.
    let long = entry("o.example", "d.example", "a-much-longer-txn-id", b"{}");
    let tight = AckedKeys {
        max_bytes: one,
        ..k
    };
    deliver(store, &long, now, tight);
    let InsertOutcome::Stored(_) = insert(store, &at(&long, now), &quota(tight)) else {
        panic!("a key costing more than max_bytes: expected Stored");
    };
}

/// An acknowledgement that deletes nothing (the entry is gone, or is
/// another destination's) remembers nothing and refreshes nothing.
pub fn ack_of_gone_entry_remembers_nothing(store: &dyn QueueStore) {
    let k = keys(RETENTION_MS, 1);
    let e = entry("o.example", "d.example", "t", b"{}");
    let id = deliver(store, &e, NOW, k);
    // The same ack again, late: must not restart the retention.
    ack(
        store,
        "d.example",
        id,
        NOW.saturating_add_ms(RETENTION_MS - 1),
        k,
    );
    let expired = NOW.saturating_add_ms(RETENTION_MS);
    let InsertOutcome::Stored(id2) = insert(store, &at(&e, expired), &quota(k)) else {
        panic!("a repeated ack restarted the retention");
    };
    // Another destination's ack of it deletes and remembers nothing.
    ack(store, "other.example", id2, expired, k);
    assert_eq!(queued(store, "d.example"), 1, "another destination's ack");
    // Gone IDs do not push a remembered key out of a cap of 1.
    let f = entry("o.example", "d.example", "f", b"{}");
    let fid = store_new(store, &f);
    ack(store, "d.example", fid, expired, k);
    for gone in [fid, EntryId(fid.0 + 1_000), EntryId(u64::MAX)] {
        ack(store, "d.example", gone, expired, k);
    }
    expect(
        insert(store, &at(&f, expired), &quota(k)),
        InsertOutcome::AlreadyDelivered,
        "f, after acks of gone entries",
    );
    let head = next(store, "d.example", None)
        .unwrap_or_else(|| panic!("t's second entry vanished"))
        .entry_id;
    assert_eq!(head, id2, "the queued entry is t's second");
}

/// Remembering is per (origin, destination, txn ID): the same origin and
/// txn ID for another destination, or another origin's same txn ID, is
/// stored as usual.
pub fn acked_key_is_per_destination(store: &dyn QueueStore) {
    let e = entry("o.example", "d.example", "t", b"{}");
    deliver(store, &e, NOW, AckedKeys::default());
    for other in [
        entry("o.example", "d2.example", "t", b"{}"),
        entry("o2.example", "d.example", "t", b"{}"),
        entry("o.example", "d.example", "t2", b"{}"),
    ] {
        let InsertOutcome::Stored(_) = insert(store, &other, &unlimited()) else {
            panic!(
                "{}/{} -> {} after the ack of o.example/t -> d.example: expected Stored",
                other.origin, other.txn_id, other.destination
            );
        };
    }
    expect(
        insert(store, &e, &unlimited()),
        InsertOutcome::AlreadyDelivered,
        "the acknowledged key itself",
    );
}

/// Retention 0 (or a cap of 0) remembers nothing: an acknowledged key is
/// stored again at once; and an insert with retention 0 ignores what an
/// earlier setting remembered.
pub fn zero_retention_remembers_nothing(store: &dyn QueueStore) {
    for (what, k) in [
        ("retention 0", keys(0, 1_000)),
        ("cap 0", keys(RETENTION_MS, 0)),
    ] {
        let e = entry("o.example", "d.example", what, b"{}");
        let first = deliver(store, &e, NOW, k);
        let InsertOutcome::Stored(second) = insert(store, &e, &quota(k)) else {
            panic!("{what}: re-insert after ack: expected Stored");
        };
        assert!(second > first, "{what}: {second:?} is not above {first:?}");
        // Even with remembering on for the insert, nothing was remembered.
        ack(store, "d.example", second, NOW, k);
        let InsertOutcome::Stored(_) = insert(store, &e, &unlimited()) else {
            panic!("{what}: the ack remembered the key");
        };
    }
    let e = entry("o.example", "d.example", "remembered", b"{}");
    deliver(store, &e, NOW, AckedKeys::default());
    let InsertOutcome::Stored(_) = insert(store, &e, &quota(keys(0, 1_000))) else {
        panic!("an insert with retention 0 found a remembered key");
    };
}

/// Threads acknowledge entries while others send the same transactions
/// again: each retransmission is `Duplicate` (before the ack) or
/// `AlreadyDelivered` (after), never a second entry.
pub fn concurrent_ack_and_reinsert(store: &dyn QueueStore) {
    const N: usize = 200;
    let es: Vec<NewEntry> = (0..N)
        .map(|i| {
            entry(
                "o.example",
                "d.example",
                &format!("t{i}"),
                &body(&i.to_string()),
            )
        })
        .collect();
    let ids: Vec<EntryId> = es.iter().map(|e| store_new(store, e)).collect();
    let start = Barrier::new(2);
    let outcomes = std::thread::scope(|s| {
        let acker = s.spawn(|| {
            start.wait();
            for &id in &ids {
                next(store, "d.example", Some(id));
            }
        });
        let sender = s.spawn(|| {
            start.wait();
            es.iter()
                .map(|e| insert(store, e, &unlimited()))
                .collect::<Vec<_>>()
        });
        acker
            .join()
            .unwrap_or_else(|_| panic!("the acknowledging thread panicked"));
        sender
            .join()
            .unwrap_or_else(|_| panic!("the sending thread panicked"))
    });
    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(
            matches!(
                outcome,
                InsertOutcome::AlreadyDelivered | InsertOutcome::Duplicate(_)
            ),
            "retransmission of t{i}: {outcome:?}"
        );
        if let InsertOutcome::Duplicate(id) = outcome {
            assert_eq!(*id, ids[i], "t{i}: Duplicate of another entry");
        }
    }
    assert_eq!(
        next(store, "d.example", None),
        None,
        "an entry is left: a retransmission was stored again"
    );
    for e in &es {
        expect(
            insert(store, e, &unlimited()),
            InsertOutcome::AlreadyDelivered,
            "retransmission after all acks",
        );
    }
}
