//! The queue semantics every [`QueueStore`] backend must have, written once;
//! the sender-state semantics of every [`OutboundStore`](crate::OutboundStore)
//! backend are in [`outbound_store`], the de-duplication window semantics of
//! every [`DedupeStore`](crate::DedupeStore) backend in [`dedupe_store`].
//!
//! Each check is a function taking a fresh, empty store and panicking with a
//! message that says what went wrong. Run them all with [`run_all`], or get
//! one `#[test]` per check with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```no_run
//! mod memory {
//!     relay_store::conformance_tests!(|| Box::new(relay_store::MemoryStore::new()));
//! }
//! ```
//!
//! What is checked:
//! - FIFO per destination, oldest (lowest entry ID) first; destinations are
//!   isolated from each other.
//! - Entry IDs are positive, increase in insert order and are never reused.
//! - Insert is idempotent on (origin, destination, txn ID) while the entry
//!   is queued: `Duplicate` with the original ID, stored once; and after
//!   its acknowledgement, while the key is remembered: `AlreadyDelivered`.
//! - Acknowledged keys are remembered for the retention and up to the cap
//!   (oldest forgotten first), per destination, only when an entry was
//!   deleted, and not at all with retention 0.
//! - Acknowledgement is exact: only that entry, only for its destination;
//!   acknowledging a gone ID is harmless.
//! - Quotas for each [`QuotaKind`]: refused whole, checked after the
//!   duplicate check, freed by acknowledgement, in the order destination,
//!   origin, total.
//! - Totals over all destinations, kept by inserts and acknowledgements.
//! - Concurrent inserts, acknowledgements and duplicate races.
// Test support: a check reads best as one scenario; the 80-line limit is
// for the library.
#![allow(clippy::too_many_lines)]

use crate::QueueStore;
#[cfg(doc)]
use relay_core::store::QuotaKind;

mod acked;
mod batch;
mod concurrency;
pub mod dedupe_store;
mod expiry;
mod helpers;
pub mod outbound_store;
mod queue;
mod quota;
mod totals;

pub use acked::{
    ack_of_gone_entry_remembers_nothing, acked_bytes_forget_oldest_first,
    acked_cap_forgets_oldest_first, acked_key_is_per_destination, concurrent_ack_and_reinsert,
    reinsert_after_ack_is_already_delivered, retention_expiry_allows_reinsert,
    zero_retention_remembers_nothing,
};
pub use batch::{
    batch_ack_is_exact, batch_fetch_skips_expired_entries,
    batch_fetch_takes_the_oldest_within_the_caps,
};
pub use concurrency::{
    concurrent_duplicate_inserts, concurrent_inserts, concurrent_inserts_and_acks,
    purge_of_a_long_queue,
};
pub use expiry::{
    destinations_show_the_oldest_received, expire_deletes_oldest_first_in_chunks,
    expired_entries_are_not_handed_out,
};
pub use queue::{
    ack_is_exact, ack_of_gone_entry_returns_oldest, ack_reports_whether_it_deleted,
    ack_then_next_returns_following, destinations_isolated, duplicate_insert_is_idempotent,
    duplicate_key_is_origin_destination_txn, empty_store, fifo_per_destination,
    ids_increase_and_are_never_reused, payload_round_trips,
};
pub use quota::{
    quota_check_order, quota_destination_bytes, quota_destination_entries, quota_freed_by_ack,
    quota_ignores_duplicates, quota_origin_bytes, quota_origin_entries, quota_origin_share,
    quota_refusal_stores_nothing, quota_total_bytes, quota_total_entries,
};
pub use totals::{
    destinations_by_bytes, purge_deletes_one_destination_whole, totals_count_every_destination,
};

/// A conformance check: takes a fresh, empty store, panics on failure.
pub type Check = fn(&dyn QueueStore);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("empty_store", empty_store),
    ("fifo_per_destination", fifo_per_destination),
    ("destinations_isolated", destinations_isolated),
    ("payload_round_trips", payload_round_trips),
    (
        "ids_increase_and_are_never_reused",
        ids_increase_and_are_never_reused,
    ),
    (
        "duplicate_insert_is_idempotent",
        duplicate_insert_is_idempotent,
    ),
    (
        "duplicate_key_is_origin_destination_txn",
        duplicate_key_is_origin_destination_txn,
    ),
    (
        "ack_then_next_returns_following",
        ack_then_next_returns_following,
    ),
    ("ack_is_exact", ack_is_exact),
    (
        "ack_of_gone_entry_returns_oldest",
        ack_of_gone_entry_returns_oldest,
    ),
    (
        "ack_reports_whether_it_deleted",
        ack_reports_whether_it_deleted,
    ),
    ("quota_destination_entries", quota_destination_entries),
    ("quota_destination_bytes", quota_destination_bytes),
    ("quota_origin_entries", quota_origin_entries),
    ("quota_origin_bytes", quota_origin_bytes),
    ("quota_total_bytes", quota_total_bytes),
    ("quota_total_entries", quota_total_entries),
    ("quota_origin_share", quota_origin_share),
    ("quota_refusal_stores_nothing", quota_refusal_stores_nothing),
    ("quota_ignores_duplicates", quota_ignores_duplicates),
    ("quota_freed_by_ack", quota_freed_by_ack),
    ("quota_check_order", quota_check_order),
    (
        "totals_count_every_destination",
        totals_count_every_destination,
    ),
    ("destinations_by_bytes", destinations_by_bytes),
    (
        "purge_deletes_one_destination_whole",
        purge_deletes_one_destination_whole,
    ),
    ("purge_of_a_long_queue", purge_of_a_long_queue),
    ("concurrent_inserts", concurrent_inserts),
    ("concurrent_duplicate_inserts", concurrent_duplicate_inserts),
    ("concurrent_inserts_and_acks", concurrent_inserts_and_acks),
    (
        "reinsert_after_ack_is_already_delivered",
        reinsert_after_ack_is_already_delivered,
    ),
    (
        "retention_expiry_allows_reinsert",
        retention_expiry_allows_reinsert,
    ),
    (
        "acked_cap_forgets_oldest_first",
        acked_cap_forgets_oldest_first,
    ),
    (
        "acked_bytes_forget_oldest_first",
        acked_bytes_forget_oldest_first,
    ),
    (
        "ack_of_gone_entry_remembers_nothing",
        ack_of_gone_entry_remembers_nothing,
    ),
    ("acked_key_is_per_destination", acked_key_is_per_destination),
    (
        "zero_retention_remembers_nothing",
        zero_retention_remembers_nothing,
    ),
    ("concurrent_ack_and_reinsert", concurrent_ack_and_reinsert),
    (
        "expired_entries_are_not_handed_out",
        expired_entries_are_not_handed_out,
    ),
    (
        "expire_deletes_oldest_first_in_chunks",
        expire_deletes_oldest_first_in_chunks,
    ),
    (
        "destinations_show_the_oldest_received",
        destinations_show_the_oldest_received,
    ),
    (
        "batch_fetch_takes_the_oldest_within_the_caps",
        batch_fetch_takes_the_oldest_within_the_caps,
    ),
    ("batch_ack_is_exact", batch_ack_is_exact),
    (
        "batch_fetch_skips_expired_entries",
        batch_fetch_skips_expired_entries,
    ),
];

/// Runs every check in [`CHECKS`], each on a fresh store from `factory`.
pub fn run_all(factory: &dyn Fn() -> Box<dyn QueueStore>) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name}");
        let store = factory();
        check(&*store);
    }
}

/// One `#[test]` per conformance check, each on a fresh store from the
/// given factory expression (a closure returning a `Box` of a store), plus
/// one test that the list here matches [`conformance::CHECKS`](crate::conformance::CHECKS).
#[macro_export]
macro_rules! conformance_tests {
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $crate::__conformance_tests!(
            [] every_conformance_check_has_a_test, "conformance_tests!";
            $factory; $($check),*
        );
    };
    ($factory:expr) => {
        $crate::conformance_tests!(@tests $factory;
            empty_store,
            fifo_per_destination,
            destinations_isolated,
            payload_round_trips,
            ids_increase_and_are_never_reused,
            duplicate_insert_is_idempotent,
            duplicate_key_is_origin_destination_txn,
            ack_then_next_returns_following,
            ack_is_exact,
            ack_of_gone_entry_returns_oldest,
            ack_reports_whether_it_deleted,
            quota_destination_entries,
            quota_destination_bytes,
            quota_origin_entries,
            quota_origin_bytes,
            quota_total_bytes,
            quota_total_entries,
            quota_origin_share,
            quota_refusal_stores_nothing,
            quota_ignores_duplicates,
            quota_freed_by_ack,
            quota_check_order,
            totals_count_every_destination,
            destinations_by_bytes,
            purge_deletes_one_destination_whole,
            purge_of_a_long_queue,
            concurrent_inserts,
            concurrent_duplicate_inserts,
            concurrent_inserts_and_acks,
            reinsert_after_ack_is_already_delivered,
            retention_expiry_allows_reinsert,
            acked_cap_forgets_oldest_first,
            acked_bytes_forget_oldest_first,
            ack_of_gone_entry_remembers_nothing,
            acked_key_is_per_destination,
            zero_retention_remembers_nothing,
            concurrent_ack_and_reinsert,
            expired_entries_are_not_handed_out,
            expire_deletes_oldest_first_in_chunks,
            destinations_show_the_oldest_received,
            batch_fetch_takes_the_oldest_within_the_caps,
            batch_ack_is_exact,
            batch_fetch_skips_expired_entries,
        );
    };
}

/// One `#[test]` per [`conformance::outbound_store`](crate::conformance::outbound_store)
/// check, each on a fresh store from the given factory expression (a closure
/// returning a `Box` of an [`OutboundStore`](crate::OutboundStore)), plus
/// one test that the list here matches
/// [`conformance::outbound_store::CHECKS`](crate::conformance::outbound_store::CHECKS).
#[macro_export]
macro_rules! outbound_conformance_tests {
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $crate::__conformance_tests!(
            [outbound_store] every_outbound_conformance_check_has_a_test, "outbound_conformance_tests!";
            $factory; $($check),*
        );
    };
    ($factory:expr) => {
        $crate::outbound_conformance_tests!(@tests $factory;
            empty_store,
            items_load_in_id_order,
            payloads_round_trip,
            identical_enqueue_is_idempotent,
            conflicting_enqueue_is_refused,
            txn_started_and_finished,
            txn_finished_is_exact,
            retry_set_and_cleared,
            changes_apply_in_order,
            apply_is_atomic,
            item_id_limit,
            concurrent_applies,
        );
    };
}

/// One `#[test]` per [`conformance::dedupe_store`](crate::conformance::dedupe_store)
/// check, each on a fresh store from the given factory expression (a closure
/// returning a `Box` of a [`DedupeStore`](crate::DedupeStore)), plus one
/// test that the list here matches
/// [`conformance::dedupe_store::CHECKS`](crate::conformance::dedupe_store::CHECKS).
#[macro_export]
macro_rules! dedupe_conformance_tests {
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $crate::__conformance_tests!(
            [dedupe_store] every_dedupe_conformance_check_has_a_test, "dedupe_conformance_tests!";
            $factory; $($check),*
        );
    };
    ($factory:expr) => {
        $crate::dedupe_conformance_tests!(@tests $factory;
            empty_store,
            groups_load_in_order,
            keys_round_trip,
            forget_removes_listed_keys,
            seen_again_moves_key,
            sliding_window,
            changes_apply_in_order,
            apply_is_atomic,
            concurrent_applies,
        );
    };
}

/// The body of the `*conformance_tests!` macros: one `#[test]` per check of
/// the suite in `conformance::$module` (imported as `__suite`), and one
/// that the list matches its `CHECKS`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ([$($module:ident)?] $every:ident, $macro:literal; $factory:expr; $($check:ident),* $(,)?) => {
        use $crate::conformance $(::$module)? as __suite;

        $(
            #[test]
            fn $check() {
                let factory = $factory;
                let store = factory();
                __suite::$check(&*store);
            }
        )*

        #[test]
        fn $every() {
            let listed: &[&str] = &[$(stringify!($check)),*];
            let all: ::std::vec::Vec<&str> =
                __suite::CHECKS.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, &all[..], "{} and CHECKS disagree", $macro);
        }
    };
}
