//! Batch fetches: many acknowledgements and many entries in one call.

use relay_core::store::{Ack, AckedKeys, InsertOutcome, NewEntry, QueuedEntry};
use relay_core::{EntryId, UnixMillis};

use super::helpers::*;
use crate::{AckBatch, QueueStore, Take};

fn batch(
    store: &dyn QueueStore,
    destination: &str,
    acks: &[EntryId],
    take: Take,
    expired_before: u64,
) -> AckBatch {
    let acks: Vec<Ack> = acks
        .iter()
        .map(|&entry_id| Ack {
            entry_id,
            at: NOW,
            keys: AckedKeys::default(),
        })
        .collect();
    store
        .ack_and_next_batch(
            &server(destination),
            &acks,
            take,
            UnixMillis(expired_before),
        )
        .unwrap_or_else(|err| panic!("ack_and_next_batch({destination}) failed: {err}"))
}

fn ids(entries: &[QueuedEntry]) -> Vec<EntryId> {
    entries.iter().map(|e| e.entry_id).collect()
}

const ALL: Take = Take {
    entries: usize::MAX,
    bytes: u64::MAX,
};

/// Entries come oldest first, at most `take.entries`, and past the first
/// at most `take.bytes` of transactions; `more` says whether any were left
/// out. Nothing is acknowledged without an ack.
pub fn batch_fetch_takes_the_oldest_within_the_caps(store: &dyn QueueStore) {
    assert_eq!(batch(store, "d.example", &[], ALL, 0), AckBatch::default());
    let sizes = [30, 10, 10, 50, 10];
    let es: Vec<NewEntry> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| entry("o.example", "d.example", &format!("t{i}"), &vec![b' '; n]))
        .collect();
    let stored: Vec<EntryId> = es.iter().map(|e| store_new(store, e)).collect();
    store_new(store, &entry("o.example", "other.example", "t", b"{}"));

    let all = batch(store, "d.example", &[], ALL, 0);
    assert_eq!(ids(&all.entries), stored, "every entry, in order");
    assert!(!all.more);
    assert_entry(&all.entries[3], stored[3], &es[3]);
    let two = batch(
        store,
        "d.example",
        &[],
        Take {
            entries: 2,
            bytes: u64::MAX,
        },
        0,
    );
    assert_eq!((ids(&two.entries), two.more), (stored[..2].to_vec(), true));
    // 30 + 10 + 10 = 50 fit in 50 bytes; the 50-byte fourth does not.
    let bytes = batch(
        store,
        "d.example",
        &[],
        Take {
            entries: 10,
            bytes: 50,
        },
        0,
    );
    assert_eq!(
        (ids(&bytes.entries), bytes.more),
        (stored[..3].to_vec(), true)
    );
    // The first is handed out whatever its size.
    let tiny = batch(
        store,
        "d.example",
        &[],
        Take {
            entries: 10,
            bytes: 1,
        },
        0,
    );
    assert_eq!(
        (ids(&tiny.entries), tiny.more),
        (stored[..1].to_vec(), true)
    );
    let none = batch(
        store,
        "d.example",
        &[],
        Take {
            entries: 0,
            bytes: u64::MAX,
        },
        0,
    );
    assert_eq!((none.entries.len(), none.more), (0, true));
    assert_eq!(queued(store, "d.example"), 5, "reading deletes nothing");
}

/// A batch acknowledgement deletes exactly the listed entries of the
/// destination (in any order; gone ones and other destinations' are not
/// counted), remembers their keys, and the entries returned are those
/// left.
pub fn batch_ack_is_exact(store: &dyn QueueStore) {
    let es: Vec<NewEntry> = (0..5)
        .map(|i| entry("o.example", "d.example", &format!("t{i}"), b"{}"))
        .collect();
    let stored: Vec<EntryId> = es.iter().map(|e| store_new(store, e)).collect();
    let other = store_new(store, &entry("o.example", "other.example", "t", b"{}"));
    let got = batch(store, "d.example", &[stored[3], stored[0], other], ALL, 0);
    assert_eq!(got.acked, 2, "two of the destination's own");
    assert_eq!(ids(&got.entries), [stored[1], stored[2], stored[4]]);
    assert!(!got.more);
    assert_eq!(queued(store, "other.example"), 1, "another's entry stays");
    let again = batch(store, "d.example", &[stored[3], stored[1]], ALL, 0);
    assert_eq!(again.acked, 1, "a gone entry is not counted twice");
    assert_eq!(ids(&again.entries), [stored[2], stored[4]]);
    assert_eq!(
        insert(store, &es[0], &unlimited()),
        InsertOutcome::AlreadyDelivered,
        "an entry acknowledged in a batch is remembered"
    );
    let last = batch(store, "d.example", &[stored[2], stored[4]], ALL, 0);
    assert_eq!((last.acked, last.entries.len(), last.more), (2, 0, false));
}

/// A batch never hands out an expired entry.
pub fn batch_fetch_skips_expired_entries(store: &dyn QueueStore) {
    let at = |txn: &str, ms: u64| NewEntry {
        received: UnixMillis(ms),
        ..entry("o.example", "d.example", txn, b"{}")
    };
    store_new(store, &at("old", 1_000));
    let young = store_new(store, &at("young", 5_000));
    let got = batch(store, "d.example", &[], ALL, 2_000);
    assert_eq!((ids(&got.entries), got.more), (vec![young], false));
}
