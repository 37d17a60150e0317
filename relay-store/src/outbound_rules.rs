//! The rules for the sender's persisted state that every backend shares, so
//! they accept, refuse and round off alike.

use relay_core::UnixMillis;
use relay_core::outbound::{ItemId, OutboundChange, RetryState};
use relay_core::store::StoreError;

/// The largest storable item ID and wall time: the largest SQL integer.
const MAX_STORED: u64 = i64::MAX.unsigned_abs();

/// `id` as an SQL integer; IDs above `i64::MAX` are refused.
pub(crate) fn sql_item_id(id: ItemId) -> Result<i64, StoreError> {
    i64::try_from(id.0).map_err(|_| {
        StoreError(format!(
            "item ID {} is above the largest storable item ID {MAX_STORED}",
            id.0
        ))
    })
}

/// Refuses `change` if it names an item ID that cannot be stored.
pub(crate) fn check_item_ids(change: &OutboundChange) -> Result<(), StoreError> {
    match change {
        OutboundChange::Enqueued { item, .. } => sql_item_id(item.id).map(drop),
        OutboundChange::TxnStarted { items, .. } | OutboundChange::TxnFinished { items, .. } => {
            items.iter().try_for_each(|id| sql_item_id(*id).map(drop))
        }
        OutboundChange::Retry { .. } => Ok(()),
    }
}

/// `t` as an SQL integer, clamped to `i64::MAX` (some 292 million years).
pub(crate) fn sql_millis(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

/// `state` as it is stored and loaded again: `next_retry` clamped as
/// [`sql_millis`] does.
pub(crate) fn stored_retry(state: RetryState) -> RetryState {
    RetryState {
        next_retry: state.next_retry.map(|t| UnixMillis(t.0.min(MAX_STORED))),
        ..state
    }
}

/// The error for enqueueing an item ID that is queued with other content.
pub(crate) fn conflicting_item(id: ItemId) -> StoreError {
    StoreError(format!(
        "item {} is queued already with a different destination, kind or JSON",
        id.0
    ))
}
