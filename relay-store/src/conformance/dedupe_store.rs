//! The de-duplication window semantics every [`DedupeStore`] backend must
//! have, written once (see the trait for the rules).
//!
//! Each check takes a fresh, empty store and panics with a message that
//! says what went wrong. Run them all with [`run_all`], or get one `#[test]`
//! per check with [`dedupe_conformance_tests!`](crate::dedupe_conformance_tests):
//!
//! ```no_run
//! mod memory_dedupe {
//!     relay_store::dedupe_conformance_tests!(|| Box::new(relay_store::MemoryDedupeStore::new()));
//! }
//! ```
//!
//! What is checked:
//! - Groups load in the order they were seen, keys in the order given;
//!   keys of both kinds come back exactly, and near twins stay apart.
//! - `Forget` removes exactly the listed keys; a group left empty is gone.
//! - A key seen again moves into the new group.
//! - The window as the machine slides it.
//! - Changes apply in order within a batch; loads beside applies see each
//!   batch whole or not at all; concurrent batches from several threads.
//!
//! Durability across reopen is backend-specific and checked by each
//! durable backend's own tests.

mod batches;
mod dedupe_helpers;
mod window;

use crate::DedupeStore;

pub use batches::{apply_is_atomic, changes_apply_in_order, concurrent_applies};
pub use window::{
    empty_store, forget_removes_listed_keys, groups_load_in_order, keys_round_trip,
    seen_again_moves_key, sliding_window,
};

/// A conformance check: takes a fresh, empty store, panics on failure.
pub type Check = fn(&dyn DedupeStore);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("empty_store", empty_store),
    ("groups_load_in_order", groups_load_in_order),
    ("keys_round_trip", keys_round_trip),
    ("forget_removes_listed_keys", forget_removes_listed_keys),
    ("seen_again_moves_key", seen_again_moves_key),
    ("sliding_window", sliding_window),
    ("changes_apply_in_order", changes_apply_in_order),
    ("apply_is_atomic", apply_is_atomic),
    ("concurrent_applies", concurrent_applies),
];

/// Runs every check in [`CHECKS`], each on a fresh store from `factory`.
pub fn run_all(factory: &dyn Fn() -> Box<dyn DedupeStore>) {
    for (name, check) in CHECKS {
        eprintln!("dedupe conformance: {name}");
        let store = factory();
        check(&*store);
    }
}
