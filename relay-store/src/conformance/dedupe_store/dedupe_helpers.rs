//! Shared helpers of the de-duplication window checks: building keys and
//! changes, calling the store with context in every panic message.

use std::fmt::Write;

use relay_core::retriever::{DedupeKey, WindowChange};

use super::super::helpers::{server, txn};
use crate::DedupeStore;

/// The key of `origin`'s transaction `txn_id`.
pub(super) fn txn_key(origin: &str, txn_id: &str) -> DedupeKey {
    DedupeKey::Txn(server(origin), txn(txn_id))
}

/// A digest made from `n`, distinct for distinct `n`.
pub(super) fn digest(n: u32) -> DedupeKey {
    let mut bytes = [0xa5; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    DedupeKey::Digest(bytes)
}

pub(super) fn seen(keys: &[&DedupeKey]) -> WindowChange {
    WindowChange::Seen(keys.iter().map(|k| (*k).clone()).collect())
}

pub(super) fn forget(keys: &[&DedupeKey]) -> WindowChange {
    WindowChange::Forget(keys.iter().map(|k| (*k).clone()).collect())
}

/// The window `groups` describe.
pub(super) fn window(groups: &[&[&DedupeKey]]) -> Vec<Vec<DedupeKey>> {
    groups
        .iter()
        .map(|g| g.iter().map(|k| (*k).clone()).collect())
        .collect()
}

pub(super) fn apply(store: &dyn DedupeStore, changes: &[WindowChange]) {
    if let Err(err) = store.apply_window(changes) {
        panic!(
            "apply_window of {} changes failed: {err}\n{changes:?}",
            changes.len()
        );
    }
}

pub(super) fn load(store: &dyn DedupeStore) -> Vec<Vec<DedupeKey>> {
    store
        .load_window()
        .unwrap_or_else(|err| panic!("load_window failed: {err}"))
}

/// One line per group, digests in hex, so a failure is readable.
pub(super) fn show(groups: &[Vec<DedupeKey>]) -> String {
    let mut out = String::new();
    for (n, keys) in groups.iter().enumerate() {
        let _ = write!(out, "\n  {n}:");
        for key in keys {
            match key {
                DedupeKey::Txn(origin, txn_id) => {
                    let _ = write!(out, " txn({origin}, {:?})", txn_id.as_str());
                }
                DedupeKey::Digest(d) | DedupeKey::TxnDigest(d) => {
                    let kind = if matches!(key, DedupeKey::Digest(_)) {
                        "digest"
                    } else {
                        "txn-digest"
                    };
                    let _ = write!(out, " {kind}(");
                    for b in d {
                        let _ = write!(out, "{b:02x}");
                    }
                    out.push(')');
                }
            }
        }
    }
    out
}

#[track_caller]
pub(super) fn assert_window(store: &dyn DedupeStore, want: &[Vec<DedupeKey>], context: &str) {
    let got = load(store);
    assert!(
        got == want,
        "{context}: the window differs\ngot:{}\nwant:{}",
        show(&got),
        show(want)
    );
}
