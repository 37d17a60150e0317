//! The quota decision and the bounds of remembered acknowledgements,
//! shared by every backend so they decide alike.

use relay_core::UnixMillis;
use relay_core::store::{Quota, QuotaKind};

/// Most expired acknowledged keys one acknowledgement forgets, so a
/// backlog (after a long stop) is worked off in small steps instead of one
/// long transaction.
pub(crate) const PRUNE_BATCH: i64 = 100;

/// `t` as an SQL integer (saturating).
pub(crate) fn millis(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

/// Acknowledged keys whose `acked_at` is at or below this are no longer
/// remembered at `now`: `acked_at + retention_ms > now` is
/// `acked_at > now - retention_ms`.
pub(crate) fn acked_cutoff(now: UnixMillis, retention_ms: u64) -> i64 {
    millis(now).saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX))
}

/// What is queued for one destination, one origin, or in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

/// What is queued where a new entry would go: for its destination, for
/// its origin in that destination (`pair`), for its origin over all
/// destinations, and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usages {
    pub destination: Usage,
    pub pair: Usage,
    pub origin: Usage,
    pub total: Usage,
}

/// An origin's most entries and bytes in one destination's queue.
pub(crate) fn share_limits(quota: &Quota) -> (u64, u64) {
    let percent = u64::from(quota.origin_share_percent.min(100));
    let share = |n: u64| u64::try_from(u128::from(n) * u128::from(percent) / 100).unwrap_or(n);
    (
        share(quota.destination_entries).max(1),
        share(quota.destination_bytes),
    )
}

/// Which quota, if any, refuses one more entry costing `cost` bytes.
/// Checked in the order destination, origin's share, origin, total
/// entries, total bytes.
pub(crate) fn refused_by(quota: &Quota, usage: &Usages, cost: u64) -> Option<QuotaKind> {
    // Saturating: a refused insert must never wrap around into "fits".
    let over = |u: Usage, max_entries: u64, max_bytes: u64| {
        u.entries.saturating_add(1) > max_entries || u.bytes.saturating_add(cost) > max_bytes
    };
    let (share_entries, share_bytes) = share_limits(quota);
    if over(
        usage.destination,
        quota.destination_entries,
        quota.destination_bytes,
    ) {
        Some(QuotaKind::Destination)
    } else if over(usage.pair, share_entries, share_bytes) {
        Some(QuotaKind::OriginShare)
    } else if over(usage.origin, quota.origin_entries, quota.origin_bytes) {
        Some(QuotaKind::Origin)
    } else if usage.total.entries.saturating_add(1) > quota.total_entries {
        Some(QuotaKind::TotalEntries)
    } else if usage.total.bytes.saturating_add(cost) > quota.total_bytes {
        Some(QuotaKind::Total)
    } else {
        None
    }
}

/// The cost of `entry` ([`relay_core::store::entry_cost`]).
pub(crate) fn cost_of(entry: &relay_core::store::NewEntry) -> u64 {
    relay_core::store::entry_cost(
        entry.origin.as_str(),
        entry.destination.as_str(),
        entry.txn_id.as_str(),
        entry.transaction.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_ordered() {
        let q = Quota {
            destination_entries: 4,
            destination_bytes: 20,
            origin_share_percent: 50,
            origin_entries: 3,
            origin_bytes: 15,
            total_entries: 5,
            total_bytes: 25,
            acked: relay_core::store::AckedKeys::default(),
        };
        let u = |entries, bytes| Usage { entries, bytes };
        let all = |d, p, o, t| Usages {
            destination: d,
            pair: p,
            origin: o,
            total: t,
        };
        let zero = u(0, 0);
        // Exactly at every limit after the insert: fits.
        assert_eq!(
            refused_by(&q, &all(u(3, 15), u(1, 5), u(2, 10), u(4, 20)), 5),
            None
        );
        let cases = [
            (all(u(4, 0), zero, zero, zero), 0, QuotaKind::Destination),
            (all(u(0, 16), zero, zero, zero), 5, QuotaKind::Destination),
            // Half of 4 entries and of 20 bytes.
            (all(zero, u(2, 0), zero, zero), 0, QuotaKind::OriginShare),
            (all(zero, u(0, 6), zero, zero), 5, QuotaKind::OriginShare),
            (all(zero, zero, u(3, 0), zero), 0, QuotaKind::Origin),
            (all(zero, zero, u(0, 11), zero), 5, QuotaKind::Origin),
            (all(zero, zero, zero, u(5, 0)), 0, QuotaKind::TotalEntries),
            (all(zero, zero, zero, u(0, 21)), 5, QuotaKind::Total),
            // The first that refuses names it.
            (
                all(u(4, 0), u(2, 0), u(3, 0), u(5, 0)),
                0,
                QuotaKind::Destination,
            ),
            (
                all(zero, u(2, 0), u(3, 0), u(5, 0)),
                0,
                QuotaKind::OriginShare,
            ),
            (all(zero, zero, u(3, 0), u(5, 0)), 0, QuotaKind::Origin),
            (
                all(u(0, u64::MAX), zero, zero, zero),
                u64::MAX,
                QuotaKind::Destination,
            ),
        ];
        for (usage, cost, kind) in cases {
            assert_eq!(
                refused_by(&q, &usage, cost),
                Some(kind),
                "{usage:?} + {cost}"
            );
        }
    }

    #[test]
    fn a_share_is_at_least_one_entry_and_never_past_the_queue() {
        let mut q = Quota {
            destination_entries: 1,
            destination_bytes: 1000,
            origin_share_percent: 50,
            ..Quota::default()
        };
        assert_eq!(share_limits(&q), (1, 500));
        q.origin_share_percent = 200;
        q.destination_entries = u64::MAX;
        assert_eq!(share_limits(&q), (u64::MAX, 1000));
        q.origin_share_percent = 100;
        q.destination_entries = 10;
        assert_eq!(share_limits(&q), (10, 1000));
    }
}
