//! The window itself: group order, keys, `Seen` and `Forget`.

use super::dedupe_helpers::*;
use crate::{DedupeKey, DedupeStore, WindowChange};

/// An empty store loads nothing; empty batches, `Seen` of no keys and
/// forgetting keys nobody remembers change nothing.
pub fn empty_store(store: &dyn DedupeStore) {
    assert_window(store, &[], "empty store");
    apply(store, &[]);
    apply(
        store,
        &[
            seen(&[]),
            forget(&[]),
            forget(&[&digest(1), &txn_key("o.example", "t1")]),
        ],
    );
    assert_window(store, &[], "after no-op changes");
}

/// 40 groups of one to three keys, in batches of several sizes, load in
/// the order they were seen, each with its keys in the order given, even
/// where that is not the keys' own order.
pub fn groups_load_in_order(store: &dyn DedupeStore) {
    // Later groups have smaller origins and digests, and digests come
    // before txn keys, so no sort by key can pass for the order seen.
    let groups: Vec<Vec<DedupeKey>> = (0..40u32)
        .map(|n| {
            let origin = format!("o{:02}.example", 99 - n);
            let mut keys = vec![digest(1000 - n)];
            if n % 4 != 3 {
                keys.push(txn_key(&origin, &format!("t{n}")));
            }
            if n % 3 == 0 {
                keys.push(txn_key("a.example", &format!("extra{n}")));
            }
            keys
        })
        .collect();
    let changes: Vec<_> = groups.iter().cloned().map(WindowChange::Seen).collect();
    let mut rest = &changes[..];
    for size in 1.. {
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        apply(store, batch);
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    assert_window(store, &groups, "40 groups in batches");
}

/// Keys come back exactly: every byte value in digests; origins with ports
/// and IP literals; txn IDs that look like numbers, have spaces, non-ASCII,
/// a NUL or the longest length. Keys that differ only in origin, only in
/// txn ID, or only in kind are distinct.
pub fn keys_round_trip(store: &dyn DedupeStore) {
    let mut all_bytes = [0u8; 32];
    all_bytes.iter_mut().zip(0u8..).for_each(|(b, n)| *b = n);
    let long = "x".repeat(relay_core::id::MAX_TXN_ID_BYTES);
    let keys = [
        DedupeKey::Digest([0; 32]),
        DedupeKey::Digest([0xff; 32]),
        DedupeKey::Digest(all_bytes),
        txn_key("o.example", "123"),
        txn_key("o.example", "0"),
        txn_key("o.example", "1e5"),
        txn_key("o.example", " spaced  out "),
        txn_key("o.example", "h\u{e9}llo \u{1f600}"),
        txn_key("o.example", "quote\"back\\slash"),
        txn_key("o.example", &long),
        txn_key("o.example", "txn"),
        txn_key("o.example:8448", "123"),
        txn_key("[::1]:8448", "123"),
        txn_key("1.2.3.4", "t"),
        txn_key("O.example", "t"),
        txn_key("o.example", "T"),
        DedupeKey::TxnDigest([0; 32]),
        DedupeKey::TxnDigest(all_bytes),
    ];
    let groups: Vec<Vec<DedupeKey>> = keys.chunks(3).map(<[DedupeKey]>::to_vec).collect();
    let changes: Vec<_> = groups.iter().cloned().map(WindowChange::Seen).collect();
    apply(store, &changes);
    assert_window(store, &groups, "unusual keys");

    // Forgetting one of each near pair leaves the other.
    apply(
        store,
        &[forget(&[
            &txn_key("o.example", "123"),
            &txn_key("o.example", "t"),
            &DedupeKey::Digest([0; 32]),
        ])],
    );
    let mut want = groups;
    want[0].remove(0);
    want[1].remove(0);
    assert_window(store, &want, "after forgetting near twins");
}

/// `Forget` removes exactly the listed keys from whichever groups hold
/// them, ignores keys nobody remembers, and a group left without keys is
/// gone; new groups still come last.
pub fn forget_removes_listed_keys(store: &dyn DedupeStore) {
    let (a1, a2) = (txn_key("a.example", "1"), digest(1));
    let (b1, b2, b3) = (
        txn_key("b.example", "1"),
        digest(2),
        txn_key("b.example", "3"),
    );
    let c1 = digest(3);
    apply(
        store,
        &[seen(&[&a1, &a2]), seen(&[&b1, &b2, &b3]), seen(&[&c1])],
    );
    apply(
        store,
        &[forget(&[
            &b2,
            &a1,
            &digest(99),
            &txn_key("c.example", "1"),
            &b2,
        ])],
    );
    assert_window(
        store,
        &window(&[&[&a2], &[&b1, &b3], &[&c1]]),
        "a key from each of two groups, unknown keys, a key twice",
    );
    apply(store, &[forget(&[&a2])]);
    assert_window(
        store,
        &window(&[&[&b1, &b3], &[&c1]]),
        "the oldest group's last key",
    );
    apply(store, &[forget(&[&c1])]);
    assert_window(
        store,
        &window(&[&[&b1, &b3]]),
        "the newest group's last key",
    );
    let d = digest(4);
    apply(store, &[seen(&[&d])]);
    assert_window(
        store,
        &window(&[&[&b1, &b3], &[&d]]),
        "a group seen after the newest was forgotten",
    );
    apply(store, &[forget(&[&d, &b3, &b1])]);
    assert_window(store, &[], "everything forgotten");
    apply(store, &[seen(&[&a1]), seen(&[&b1])]);
    assert_window(store, &window(&[&[&a1], &[&b1]]), "seen again after that");
}

/// A key seen again while remembered moves to the end of the new group,
/// and the group it left disappears if that was its last key; a key listed
/// twice in one `Seen` is remembered once, at its last place.
pub fn seen_again_moves_key(store: &dyn DedupeStore) {
    let (a1, a2) = (txn_key("a.example", "1"), digest(1));
    let b1 = txn_key("b.example", "1");
    let c1 = digest(3);
    apply(store, &[seen(&[&a1, &a2]), seen(&[&b1])]);
    apply(store, &[seen(&[&a1, &c1])]);
    assert_window(
        store,
        &window(&[&[&a2], &[&b1], &[&a1, &c1]]),
        "a key of the oldest group seen again",
    );
    apply(store, &[seen(&[&b1])]);
    assert_window(
        store,
        &window(&[&[&a2], &[&a1, &c1], &[&b1]]),
        "a whole group seen again",
    );
    let (d1, d2) = (digest(4), txn_key("d.example", "2"));
    apply(store, &[seen(&[&d1, &d2, &d1]), seen(&[&a2, &a2])]);
    assert_window(
        store,
        &window(&[&[&a1, &c1], &[&b1], &[&d2, &d1], &[&a2]]),
        "keys listed twice",
    );
    apply(store, &[forget(&[&a1, &c1])]);
    assert_window(
        store,
        &window(&[&[&b1], &[&d2, &d1], &[&a2]]),
        "forgetting the moved keys",
    );
}

/// The window as the machine keeps it: every transaction's `Seen` with a
/// `Forget` of the one that fell out, in one batch or two.
pub fn sliding_window(store: &dyn DedupeStore) {
    const CAPACITY: usize = 4;
    let keys_of = |n: u32| vec![txn_key("o.example", &format!("t{n}")), digest(n)];
    for n in 0..30u32 {
        let mut batch = vec![WindowChange::Seen(keys_of(n))];
        if let Some(old) = n.checked_sub(CAPACITY as u32) {
            batch.push(WindowChange::Forget(keys_of(old)));
        }
        if n % 2 == 0 {
            apply(store, &batch);
        } else {
            batch
                .iter()
                .for_each(|c| apply(store, std::slice::from_ref(c)));
        }
    }
    let want: Vec<_> = (30 - CAPACITY as u32..30).map(keys_of).collect();
    assert_window(store, &want, "the newest transactions");
}
