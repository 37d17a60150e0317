//! Queue order, idempotent insert and exact acknowledgement.

use std::collections::{BTreeMap, BTreeSet};

use relay_core::EntryId;
use relay_core::store::{Ack, AckedKeys, InsertOutcome, NewEntry};

use super::helpers::*;
use crate::{AckNext, QueueStore};

/// An empty store has nothing for anyone, and acknowledging on it is harmless.
pub fn empty_store(store: &dyn QueueStore) {
    assert_eq!(
        queued(store, "dest.example"),
        0,
        "queued() on an empty store"
    );
    assert_eq!(
        next(store, "dest.example", None),
        None,
        "next on an empty store"
    );
    for id in [0, 1, 2, u64::MAX] {
        assert_eq!(
            next(store, "dest.example", Some(EntryId(id))),
            None,
            "ack of {id} on an empty store"
        );
    }
}

/// Many entries for one destination come back in insert order, exactly.
pub fn fifo_per_destination(store: &dyn QueueStore) {
    let origins = ["a.example", "b.example:8448", "c.example"];
    let mut want = Vec::new();
    for i in 0..250 {
        let t = format!("txn-{i}");
        let e = entry(origins[i % 3], "dest.example", &t, &body(&t));
        let id = store_new(store, &e);
        if let Some((prev, _)) = want.last() {
            assert!(
                id > *prev,
                "insert {i} got {id:?}, not above the previous {prev:?}"
            );
        }
        want.push((id, e));
    }
    assert_eq!(
        queued(store, "dest.example"),
        250,
        "queued() after 250 inserts"
    );
    let got = drain(store, "dest.example");
    assert_eq!(got.len(), want.len(), "entries drained");
    for (g, (id, e)) in got.iter().zip(&want) {
        assert_entry(g, *id, e);
    }
    assert_eq!(
        next(store, "dest.example", None),
        None,
        "next after draining"
    );
}

/// Each destination sees only its own entries, and draining one leaves the
/// others alone.
pub fn destinations_isolated(store: &dyn QueueStore) {
    let dests = ["d1.example", "d2.example", "d3.example"];
    let mut want: BTreeMap<&str, Vec<(EntryId, NewEntry)>> = BTreeMap::new();
    for i in 0..60 {
        let d = dests[i % 3];
        let t = format!("t{i}");
        let e = entry("origin.example", d, &t, &body(&t));
        want.entry(d).or_default().push((store_new(store, &e), e));
    }
    assert_eq!(
        queued(store, "other.example"),
        0,
        "queued() for a destination with nothing"
    );
    assert_eq!(
        next(store, "other.example", None),
        None,
        "next for a destination with nothing"
    );
    for (i, d) in dests.iter().enumerate() {
        let got = drain(store, d);
        let w = &want[d];
        assert_eq!(got.len(), w.len(), "{d}: entries drained");
        for (g, (id, e)) in got.iter().zip(w) {
            assert_entry(g, *id, e);
        }
        for later in &dests[i + 1..] {
            assert_eq!(
                queued(store, later),
                20,
                "{later}: queued() after draining {d}"
            );
        }
    }
}

/// Bodies come back byte for byte, whatever their size or content; long and
/// unusual identifiers round-trip.
pub fn payload_round_trips(store: &dyn QueueStore) {
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let long_txn = "x".repeat(relay_core::id::MAX_TXN_ID_BYTES);
    let long_origin = format!("{}.example:65535", "o".repeat(200));
    let cases = [
        entry("origin.example", "dest.example", "empty", b""),
        entry("origin.example", "dest.example", "big", &big),
        entry(
            "origin.example",
            "dest.example",
            "binary",
            &[0, 0xff, 0x80, b'\'', b'"', 0],
        ),
        entry(
            "origin.example",
            "dest.example",
            "m1.\u{e9}\u{1f600}/'\"%",
            "{\"k\":\"\u{2603}\"}".as_bytes(),
        ),
        entry("origin.example", "dest.example", &long_txn, b"{}"),
        entry(&long_origin, "dest.example", "t", b"{}"),
        entry("[2001:db8::1]:8448", "dest.example", "t", b"{}"),
        entry(&"ab".repeat(32), "dest.example", "t", b"{}"),
    ];
    let ids: Vec<EntryId> = cases.iter().map(|e| store_new(store, e)).collect();
    let got = drain(store, "dest.example");
    assert_eq!(got.len(), cases.len(), "entries drained");
    for ((g, id), e) in got.iter().zip(&ids).zip(&cases) {
        assert_entry(g, *id, e);
    }
}

/// IDs grow with every insert, also past acknowledged ones: an
/// acknowledged ID (even the newest) is never handed out again.
pub fn ids_increase_and_are_never_reused(store: &dyn QueueStore) {
    let mut seen = BTreeSet::new();
    let mut last = EntryId(0);
    for round in 0..5 {
        let mut ids = Vec::new();
        for i in 0..4 {
            let id = store_new(
                store,
                &entry("o.example", "d.example", &format!("r{round}-{i}"), b"{}"),
            );
            assert!(id > last, "round {round}: {id:?} is not above {last:?}");
            assert!(seen.insert(id), "{id:?} handed out twice");
            last = id;
            ids.push(id);
        }
        // Acknowledge everything, newest first, so the top ID is gone too.
        for id in ids.iter().rev() {
            next(store, "d.example", Some(*id));
        }
        assert_eq!(
            queued(store, "d.example"),
            0,
            "round {round}: queued() after acknowledging all"
        );
    }
}

// ---- idempotence -----------------------------------------------------------

/// The same (origin, destination, txn ID) again gives `Duplicate` with the
/// original ID and stores nothing, even after other inserts and with a
/// different body.
pub fn duplicate_insert_is_idempotent(store: &dyn QueueStore) {
    let first = entry("o.example", "d.example", "t1", &body("t1"));
    let id = store_new(store, &first);
    assert_eq!(
        insert(store, &first, &unlimited()),
        InsertOutcome::Duplicate(id),
        "immediate repeat"
    );
    let others: Vec<EntryId> = (0..10)
        .map(|i| {
            store_new(
                store,
                &entry("o.example", "d.example", &format!("other{i}"), b"{}"),
            )
        })
        .collect();
    let mut changed = first.clone();
    changed.transaction = b"{\"different\":true}".to_vec();
    assert_eq!(
        insert(store, &changed, &unlimited()),
        InsertOutcome::Duplicate(id),
        "repeat after other inserts, other body"
    );
    assert_eq!(queued(store, "d.example"), 11, "queued() after duplicates");
    let got = drain(store, "d.example");
    assert_entry(&got[0], id, &first);
    let rest: Vec<EntryId> = got[1..].iter().map(|e| e.entry_id).collect();
    assert_eq!(rest, others, "entries after the duplicated one");
}

/// Origin, destination and txn ID together make the key: the same txn ID
/// from another origin or for another destination is a separate entry.
pub fn duplicate_key_is_origin_destination_txn(store: &dyn QueueStore) {
    let a = store_new(store, &entry("o1.example", "d1.example", "same", b"1"));
    let b = store_new(store, &entry("o2.example", "d1.example", "same", b"2"));
    let c = store_new(store, &entry("o1.example", "d2.example", "same", b"3"));
    assert!(
        a != b && b != c && a != c,
        "distinct keys got IDs {a:?} {b:?} {c:?}"
    );
    assert_eq!(queued(store, "d1.example"), 2, "queued(d1)");
    assert_eq!(queued(store, "d2.example"), 1, "queued(d2)");
}

// ---- acknowledgement -------------------------------------------------------

/// Acknowledging the head returns the following entry, down to `None`.
pub fn ack_then_next_returns_following(store: &dyn QueueStore) {
    let es: Vec<NewEntry> = (0..3)
        .map(|i| {
            entry(
                "o.example",
                "d.example",
                &format!("t{i}"),
                &body(&format!("t{i}")),
            )
        })
        .collect();
    let ids: Vec<EntryId> = es.iter().map(|e| store_new(store, e)).collect();
    let head = next(store, "d.example", None).unwrap_or_else(|| panic!("no head after 3 inserts"));
    assert_entry(&head, ids[0], &es[0]);
    let again =
        next(store, "d.example", None).unwrap_or_else(|| panic!("head vanished on a second look"));
    assert_entry(&again, ids[0], &es[0]);
    for i in 0..2 {
        let n = next(store, "d.example", Some(ids[i]))
            .unwrap_or_else(|| panic!("nothing after acking entry {i}"));
        assert_entry(&n, ids[i + 1], &es[i + 1]);
        assert_eq!(
            queued(store, "d.example"),
            2 - i as u64,
            "queued() after acking entry {i}"
        );
    }
    assert_eq!(
        next(store, "d.example", Some(ids[2])),
        None,
        "after acking the last entry"
    );
    assert_eq!(
        next(store, "d.example", Some(ids[2])),
        None,
        "acking the last entry again"
    );
}

/// Acknowledgement removes exactly one entry of the acknowledging
/// destination: never a later or an earlier one, never another destination's.
pub fn ack_is_exact(store: &dyn QueueStore) {
    let es: Vec<NewEntry> = (0..4)
        .map(|i| entry("o.example", "a.example", &format!("t{i}"), b"{}"))
        .collect();
    let ids: Vec<EntryId> = es.iter().map(|e| store_new(store, e)).collect();
    let other = entry("o.example", "b.example", "t-b", b"{}");
    let other_id = store_new(store, &other);

    // A non-head entry: only it goes; the head stays the head.
    let n = next(store, "a.example", Some(ids[2]))
        .unwrap_or_else(|| panic!("a.example empty after acking one of four"));
    assert_entry(&n, ids[0], &es[0]);
    assert_eq!(
        queued(store, "a.example"),
        3,
        "a.example after acking its third entry"
    );

    // Another destination's entry, acknowledged by a.example: nothing changes.
    let n = next(store, "a.example", Some(other_id)).unwrap_or_else(|| panic!("a.example empty"));
    assert_entry(&n, ids[0], &es[0]);
    assert_eq!(
        queued(store, "b.example"),
        1,
        "b.example after a.example acked b's entry"
    );
    assert_eq!(
        queued(store, "a.example"),
        3,
        "a.example after acking b's entry"
    );
    // ... and the other way round.
    let n = next(store, "b.example", Some(ids[0])).unwrap_or_else(|| panic!("b.example empty"));
    assert_entry(&n, other_id, &other);
    assert_eq!(
        queued(store, "a.example"),
        3,
        "a.example after b.example acked a's entry"
    );

    // IDs that name nothing.
    for id in [0, u64::MAX, i64::MAX as u64, other_id.0 + 1000] {
        let n = next(store, "a.example", Some(EntryId(id)))
            .unwrap_or_else(|| panic!("a.example empty"));
        assert_entry(&n, ids[0], &es[0]);
    }
    assert_eq!(
        queued(store, "a.example"),
        3,
        "a.example after acking IDs that name nothing"
    );

    let rest: Vec<EntryId> = drain(store, "a.example")
        .iter()
        .map(|e| e.entry_id)
        .collect();
    assert_eq!(
        rest,
        vec![ids[0], ids[1], ids[3]],
        "a.example's remaining entries"
    );
    assert_eq!(
        queued(store, "b.example"),
        1,
        "b.example after draining a.example"
    );
}

/// `acked` says whether the acknowledgement deleted an entry: once for
/// each entry, never for a repeat, another destination's entry, an ID that
/// names nothing, or no acknowledgement at all.
pub fn ack_reports_whether_it_deleted(store: &dyn QueueStore) {
    let a = entry("o.example", "a.example", "t0", b"{}");
    let b = entry("o.example", "b.example", "t0", b"{}");
    let (a_id, b_id) = (store_new(store, &a), store_new(store, &b));
    let ack = |destination: &str, id: Option<EntryId>| {
        let ack = id.map(|entry_id| Ack {
            entry_id,
            at: NOW,
            keys: AckedKeys::default(),
        });
        store
            .ack_and_next(&server(destination), ack)
            .unwrap_or_else(|err| panic!("ack_and_next({destination}, {ack:?}) failed: {err}"))
    };
    let found = ack("a.example", None);
    assert!(!found.acked, "no acknowledgement, nothing deleted");
    assert_entry(
        &found.next.unwrap_or_else(|| panic!("a.example empty")),
        a_id,
        &a,
    );
    assert!(
        !ack("a.example", Some(b_id)).acked,
        "another destination's entry"
    );
    assert!(
        !ack("a.example", Some(EntryId(b_id.0 + 1000))).acked,
        "an ID that names nothing"
    );
    assert_eq!(
        ack("a.example", Some(a_id)),
        AckNext {
            acked: true,
            next: None
        },
        "its own entry"
    );
    assert!(!ack("a.example", Some(a_id)).acked, "a repeated ack");
    assert!(ack("b.example", Some(b_id)).acked, "b.example's own entry");
}

/// Acknowledging an entry that is already gone (the answer to the first ack
/// got lost) is not an error and returns the oldest remaining entry.
pub fn ack_of_gone_entry_returns_oldest(store: &dyn QueueStore) {
    let es: Vec<NewEntry> = (0..3)
        .map(|i| entry("o.example", "d.example", &format!("t{i}"), b"{}"))
        .collect();
    let ids: Vec<EntryId> = es.iter().map(|e| store_new(store, e)).collect();
    let n =
        next(store, "d.example", Some(ids[0])).unwrap_or_else(|| panic!("empty after first ack"));
    assert_entry(&n, ids[1], &es[1]);
    let n = next(store, "d.example", Some(ids[0]))
        .unwrap_or_else(|| panic!("empty after repeated ack"));
    assert_entry(&n, ids[1], &es[1]);
    assert_eq!(
        queued(store, "d.example"),
        2,
        "queued() after a repeated ack"
    );
}
