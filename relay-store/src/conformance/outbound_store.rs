//! The sender-state semantics every [`OutboundStore`] backend must have,
//! written once (see the trait for the rules).
//!
//! Each check takes a fresh, empty store and panics with a message that
//! says what went wrong. Run them all with [`run_all`], or get one `#[test]`
//! per check with [`outbound_conformance_tests!`](crate::outbound_conformance_tests):
//!
//! ```no_run
//! mod memory_outbound {
//!     relay_store::outbound_conformance_tests!(|| Box::new(relay_store::MemoryOutboundStore::new()));
//! }
//! ```
//!
//! What is checked:
//! - Items load per destination, in item ID order, with their kind and
//!   bytes; destinations in order, isolated from each other.
//! - Enqueue is idempotent for an identical item and an error for a
//!   different one under the same ID.
//! - `TxnStarted` records and replaces; `TxnFinished` deletes exactly the
//!   listed items of its destination and forgets the transaction.
//! - Retry states are stored, replaced, clamped and cleared; a record lasts
//!   while any state does.
//! - Changes apply in order within a batch, a refused batch leaves nothing,
//!   and item IDs above `i64::MAX` are refused.
//! - Concurrent batches from several threads.

mod items;
mod outbound_helpers;
mod state;

use crate::OutboundStore;

pub use items::{
    conflicting_enqueue_is_refused, empty_store, identical_enqueue_is_idempotent, item_id_limit,
    items_load_in_id_order, payloads_round_trip,
};
pub use state::{
    apply_is_atomic, changes_apply_in_order, concurrent_applies, retry_set_and_cleared,
    txn_finished_is_exact, txn_started_and_finished,
};

/// A conformance check: takes a fresh, empty store, panics on failure.
pub type Check = fn(&dyn OutboundStore);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("empty_store", empty_store),
    ("items_load_in_id_order", items_load_in_id_order),
    ("payloads_round_trip", payloads_round_trip),
    (
        "identical_enqueue_is_idempotent",
        identical_enqueue_is_idempotent,
    ),
    (
        "conflicting_enqueue_is_refused",
        conflicting_enqueue_is_refused,
    ),
    ("txn_started_and_finished", txn_started_and_finished),
    ("txn_finished_is_exact", txn_finished_is_exact),
    ("retry_set_and_cleared", retry_set_and_cleared),
    ("changes_apply_in_order", changes_apply_in_order),
    ("apply_is_atomic", apply_is_atomic),
    ("item_id_limit", item_id_limit),
    ("concurrent_applies", concurrent_applies),
];

/// Runs every check in [`CHECKS`], each on a fresh store from `factory`.
pub fn run_all(factory: &dyn Fn() -> Box<dyn OutboundStore>) {
    for (name, check) in CHECKS {
        eprintln!("outbound conformance: {name}");
        let store = factory();
        check(&*store);
    }
}
