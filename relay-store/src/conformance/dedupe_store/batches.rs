//! Batches: order within one, atomicity beside loads, concurrency.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use super::dedupe_helpers::*;
use crate::{DedupeKey, DedupeStore, WindowChange};

/// A batch's changes apply in order and see the ones before them.
pub fn changes_apply_in_order(store: &dyn DedupeStore) {
    let (a, b, c, d) = (
        txn_key("a.example", "1"),
        digest(2),
        txn_key("c.example", "3"),
        digest(4),
    );
    let x = txn_key("x.example", "gone");
    apply(store, &[seen(&[&x])]);
    apply(
        store,
        &[
            seen(&[&a]),
            seen(&[&b]),
            forget(&[&a, &x]),
            seen(&[&a, &c]),
            forget(&[&b]),
            seen(&[&d]),
            forget(&[&d]),
            seen(&[&d]),
            forget(&[&x]),
            seen(&[&x]),
            forget(&[&x]),
        ],
    );
    assert_window(
        store,
        &window(&[&[&a, &c], &[&d]]),
        "one batch of many changes",
    );
}

const ATOMIC_BATCHES: u32 = 30;

/// A load beside `apply_window` sees each batch whole or not at all: every
/// batch forgets the two groups of the one before and adds two of its own,
/// so any other state seen is half a batch.
pub fn apply_is_atomic(store: &dyn DedupeStore) {
    let pair = |n: u32| {
        window(&[
            &[&txn_key("o.example", &format!("a{n}")), &digest(2 * n)],
            &[&digest(2 * n + 1)],
        ])
    };
    let done = AtomicBool::new(false);
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            let mut last = None;
            let mut loads = 0u32;
            // At least a few loads, even if the writer is done first.
            while !done.load(Ordering::Acquire) || loads < 3 {
                loads += 1;
                let got = load(store);
                if got.is_empty() {
                    assert!(last.is_none(), "the window emptied after batch {last:?}");
                    continue;
                }
                let n = (0..ATOMIC_BATCHES)
                    .find(|&n| got == pair(n))
                    .unwrap_or_else(|| panic!("a load saw half a batch:{}", show(&got)));
                assert!(
                    last.is_none_or(|l| l <= n),
                    "batch {n} loaded after batch {last:?}"
                );
                last = Some(n);
            }
        });
        start.wait();
        let mut previous: Vec<DedupeKey> = Vec::new();
        for n in 0..ATOMIC_BATCHES {
            let groups = pair(n);
            let mut batch = vec![WindowChange::Forget(previous)];
            batch.extend(groups.iter().cloned().map(WindowChange::Seen));
            apply(store, &batch);
            previous = groups.concat();
        }
        done.store(true, Ordering::Release);
    });
    assert_window(store, &pair(ATOMIC_BATCHES - 1), "after the last batch");
}

const THREADS: u32 = 4;
const BATCHES: u32 = 20;

/// 4 threads × 20 batches, each of a `Seen` and every other one with a
/// `Forget` of the thread's oldest group: everything applied, each group
/// whole, each thread's groups in its order.
pub fn concurrent_applies(store: &dyn DedupeStore) {
    let keys_of = |t: u32, n: u32| {
        vec![
            txn_key(&format!("o{t}.example"), &format!("t{n}")),
            digest(t * BATCHES + n),
        ]
    };
    let start = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let start = &start;
            s.spawn(move || {
                start.wait();
                for n in 0..BATCHES {
                    let mut batch = vec![WindowChange::Seen(keys_of(t, n))];
                    if n % 2 == 1 {
                        batch.push(WindowChange::Forget(keys_of(t, n / 2)));
                    }
                    apply(store, &batch);
                }
            });
        }
    });
    let got = load(store);
    for t in 0..THREADS {
        let origin = format!("o{t}.example");
        let of_thread: Vec<Vec<DedupeKey>> = got
            .iter()
            .filter(|g| {
                g.iter()
                    .any(|k| matches!(k, DedupeKey::Txn(o, _) if o.as_str() == origin))
            })
            .cloned()
            .collect();
        let want: Vec<_> = (BATCHES / 2..BATCHES).map(|n| keys_of(t, n)).collect();
        assert!(
            of_thread == want,
            "thread {t}'s groups after concurrent batches\ngot:{}\nwant:{}",
            show(&of_thread),
            show(&want)
        );
    }
    assert_eq!(
        got.len(),
        (THREADS * BATCHES / 2) as usize,
        "groups after concurrent batches:{}",
        show(&got)
    );
}
