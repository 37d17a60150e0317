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

/// Which quota, if any, refuses one more entry of `len` bytes. Checked in
/// the order destination, origin, total.
pub(crate) fn refused_by(
    quota: &Quota,
    destination: Usage,
    origin: Usage,
    total: Usage,
    len: u64,
) -> Option<QuotaKind> {
    // Saturating: a refused insert must never wrap around into "fits".
    let over = |u: Usage, max_entries: u64, max_bytes: u64| {
        u.entries.saturating_add(1) > max_entries || u.bytes.saturating_add(len) > max_bytes
    };
    if over(
        destination,
        quota.destination_entries,
        quota.destination_bytes,
    ) {
        Some(QuotaKind::Destination)
    } else if over(origin, quota.origin_entries, quota.origin_bytes) {
        Some(QuotaKind::Origin)
    } else if total.bytes.saturating_add(len) > quota.total_bytes {
        Some(QuotaKind::Total)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_ordered() {
        let q = Quota {
            destination_entries: 2,
            destination_bytes: 10,
            origin_entries: 2,
            origin_bytes: 10,
            total_bytes: 10,
            acked: relay_core::store::AckedKeys::default(),
        };
        let u = |entries, bytes| Usage { entries, bytes };
        assert_eq!(refused_by(&q, u(1, 5), u(1, 5), u(1, 5), 5), None);
        assert_eq!(
            refused_by(&q, u(2, 0), u(2, 0), u(0, 0), 0),
            Some(QuotaKind::Destination)
        );
        assert_eq!(
            refused_by(&q, u(0, 6), u(0, 6), u(0, 6), 5),
            Some(QuotaKind::Destination)
        );
        assert_eq!(
            refused_by(&q, u(0, 0), u(2, 0), u(0, 11), 0),
            Some(QuotaKind::Origin)
        );
        assert_eq!(
            refused_by(&q, u(0, 0), u(0, 0), u(0, 6), 5),
            Some(QuotaKind::Total)
        );
        assert_eq!(
            refused_by(&q, u(0, u64::MAX), u(0, 0), u(0, 0), u64::MAX),
            Some(QuotaKind::Destination)
        );
    }
}
