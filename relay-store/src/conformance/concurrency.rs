//! Several threads on one store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;

use relay_core::EntryId;
use relay_core::store::{InsertOutcome, QueuedEntry};

use super::helpers::*;
use crate::QueueStore;

const THREADS: usize = 8;
const PER_THREAD: usize = 200;
const DESTS: usize = 4;

/// 8 threads × 200 inserts over 4 destinations: everything stored once,
/// IDs unique, and each thread's entries for a destination in its order.
pub fn concurrent_inserts(store: &dyn QueueStore) {
    let start = Barrier::new(THREADS);
    let results: Vec<Vec<(usize, EntryId)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            let e = entry(
                                &format!("o{t}.example"),
                                &format!("d{}.example", i % DESTS),
                                &format!("{t}-{i}"),
                                &body(&format!("{t}-{i}")),
                            );
                            (i, store_new(store, &e))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("an inserting thread panicked"))
            })
            .collect()
    });

    let mut by_txn = BTreeMap::new();
    for (t, ids) in results.iter().enumerate() {
        for &(i, id) in ids {
            assert!(
                by_txn
                    .insert((format!("o{t}.example"), format!("{t}-{i}")), id)
                    .is_none()
            );
        }
    }
    let unique: BTreeSet<EntryId> = by_txn.values().copied().collect();
    assert_eq!(
        unique.len(),
        THREADS * PER_THREAD,
        "distinct entry IDs handed out"
    );

    for d in 0..DESTS {
        let dest = format!("d{d}.example");
        assert_eq!(
            queued(store, &dest),
            (THREADS * PER_THREAD / DESTS) as u64,
            "queued({dest})"
        );
    }
    // Drained side by side: acks are writes too, and may share commits.
    let drained: Vec<Vec<QueuedEntry>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..DESTS)
            .map(|d| s.spawn(move || drain(store, &format!("d{d}.example"))))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a draining thread panicked"))
            })
            .collect()
    });
    let mut seen = 0;
    for (d, entries) in drained.into_iter().enumerate() {
        let dest = format!("d{d}.example");
        let mut last_of_thread: BTreeMap<String, usize> = BTreeMap::new();
        for e in entries {
            let key = (e.origin.to_string(), e.txn_id.to_string());
            assert_eq!(
                by_txn.get(&key),
                Some(&e.entry_id),
                "{dest}: entry {:?} is not the one inserted as {key:?}",
                e.entry_id
            );
            assert!(
                e.transaction == body(e.txn_id.as_str()),
                "{dest}: body of {}",
                e.txn_id
            );
            let (t, i) = e
                .txn_id
                .as_str()
                .split_once('-')
                .unwrap_or_else(|| panic!("txn ID {}", e.txn_id));
            let i: usize = i.parse().unwrap_or_else(|_| panic!("txn ID {}", e.txn_id));
            assert_eq!(
                i % DESTS,
                d,
                "{dest}: got {}, which is for another destination",
                e.txn_id
            );
            if let Some(prev) = last_of_thread.insert(t.to_owned(), i) {
                assert!(
                    i > prev,
                    "{dest}: thread {t}'s entry {i} came after its entry {prev}"
                );
            }
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        THREADS * PER_THREAD,
        "entries drained over all destinations"
    );
}

/// Threads racing to insert the same keys store each exactly once; every
/// racer gets that entry's ID.
pub fn concurrent_duplicate_inserts(store: &dyn QueueStore) {
    const KEYS: usize = 25;
    let start = Barrier::new(THREADS);
    let results: Vec<Vec<InsertOutcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    (0..KEYS)
                        .map(|k| {
                            insert(
                                store,
                                &entry(
                                    "o.example",
                                    "d.example",
                                    &format!("k{k}"),
                                    &body(&format!("k{k}")),
                                ),
                                &unlimited(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("an inserting thread panicked"))
            })
            .collect()
    });
    for k in 0..KEYS {
        let outcomes: Vec<InsertOutcome> = results.iter().map(|r| r[k]).collect();
        let stored: Vec<EntryId> = outcomes
            .iter()
            .filter_map(|o| match o {
                InsertOutcome::Stored(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(
            stored.len(),
            1,
            "key k{k}: {outcomes:?}; expected one Stored"
        );
        for o in &outcomes {
            assert!(
                matches!(o, InsertOutcome::Stored(id) | InsertOutcome::Duplicate(id) if *id == stored[0]),
                "key k{k}: {outcomes:?}; every racer should get the stored entry's ID"
            );
        }
    }
    assert_eq!(
        queued(store, "d.example"),
        KEYS as u64,
        "queued() after racing duplicates"
    );
    assert_eq!(drain(store, "d.example").len(), KEYS, "entries drained");
}

/// Inserting threads and a draining thread at once: every entry is
/// delivered exactly once, each sender's entries in its order.
pub fn concurrent_inserts_and_acks(store: &dyn QueueStore) {
    const SENDERS: usize = 4;
    const EACH: usize = 100;
    let delivered = std::thread::scope(|s| {
        for t in 0..SENDERS {
            s.spawn(move || {
                for i in 0..EACH {
                    store_new(
                        store,
                        &entry(
                            &format!("o{t}.example"),
                            "d.example",
                            &format!("{t}-{i}"),
                            b"{}",
                        ),
                    );
                }
            });
        }
        let drainer = s.spawn(move || {
            let mut got = Vec::new();
            let mut ack = None;
            // Ends once every entry has arrived; a lost one would spin, so cap it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while got.len() < SENDERS * EACH && std::time::Instant::now() < deadline {
                match next(store, "d.example", ack) {
                    Some(e) => {
                        ack = Some(e.entry_id);
                        got.push(e);
                    }
                    None => {
                        ack = None;
                        std::thread::yield_now();
                    }
                }
            }
            if let Some(last) = ack {
                next(store, "d.example", Some(last));
            }
            got
        });
        drainer
            .join()
            .unwrap_or_else(|_| panic!("the draining thread panicked"))
    });
    assert_eq!(delivered.len(), SENDERS * EACH, "entries delivered");
    let mut last_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    for e in &delivered {
        assert!(
            keys.insert(e.txn_id.to_string()),
            "{} delivered twice",
            e.txn_id
        );
        let (t, i) = e
            .txn_id
            .as_str()
            .split_once('-')
            .unwrap_or_else(|| panic!("txn ID {}", e.txn_id));
        let i: usize = i.parse().unwrap_or_else(|_| panic!("txn ID {}", e.txn_id));
        if let Some(prev) = last_of.insert(t.to_owned(), i) {
            assert!(
                i > prev,
                "sender {t}'s entry {i} delivered after its entry {prev}"
            );
        }
    }
    assert_eq!(
        queued(store, "d.example"),
        0,
        "queued() after delivering everything"
    );
}

/// A purge longer than one of its chunks (1,000 entries) deletes every
/// entry of the destination, while other destinations keep theirs and the
/// counters stay exact.
pub fn purge_of_a_long_queue(store: &dyn QueueStore) {
    const LONG: usize = 2_050;
    let threads = 8;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..LONG).step_by(threads) {
                    store_new(
                        store,
                        &entry("o.example", "long.example", &format!("t{i}"), b"{}"),
                    );
                }
            });
        }
    });
    store_new(store, &entry("o.example", "other.example", "t0", b"{}"));
    let purged = store
        .purge(&server("long.example"))
        .unwrap_or_else(|err| panic!("purge failed: {err}"));
    assert_eq!(
        purged,
        crate::QueueTotals {
            entries: LONG as u64,
            bytes: (0..LONG)
                .map(|i| cost(&entry("o.example", "long.example", &format!("t{i}"), b"{}")))
                .sum()
        }
    );
    assert_eq!(queued(store, "long.example"), 0);
    assert!(next(store, "long.example", None).is_none());
    assert_eq!(queued(store, "other.example"), 1);
    assert_eq!(
        store
            .totals()
            .unwrap_or_else(|err| panic!("totals failed: {err}")),
        crate::QueueTotals {
            entries: 1,
            bytes: cost(&entry("o.example", "other.example", "t0", b"{}"))
        }
    );
}
