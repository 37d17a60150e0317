//! Waiting after failures: exponential backoff with jitter, and deadlines
//! that cannot overflow. One arithmetic for every machine; each machine
//! picks its own `base` and `cap`.

use std::time::Duration;

use crate::rng::Rng;
use crate::time::Instant;

/// The longest wait any machine schedules, whatever its configuration or a
/// peer asks, so deadlines stay far from `Instant` overflow.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The jitter factor a wait is multiplied by: drawn from `[0.8, 1.4)`.
const JITTER: (f64, f64) = (0.8, 1.4);

/// The wait after the n-th consecutive failure: `base × 2^(n−1)`, times a
/// jitter in ×0.8–1.4, capped at `cap` (and at [`MAX_WAIT`]), rounded up
/// to whole milliseconds.
///
/// Implementation note: whole milliseconds, so that a deadline persisted as
/// wall time ([`UnixMillis`](crate::UnixMillis)) is exactly the one the
/// machine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The wait after the first failure, before jitter.
    pub(crate) base: Duration,
    /// The longest wait.
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure, its jitter
    /// drawn from `rng`.
    pub(crate) fn wait(&self, failures: u32, rng: &mut Rng) -> Duration {
        self.jittered(failures, rng.range_f64(JITTER.0, JITTER.1))
    }

    /// The wait after the `failures`-th consecutive failure with the
    /// jitter factor `jitter`.
    fn jittered(&self, failures: u32, jitter: f64) -> Duration {
        let cap = self.cap.min(MAX_WAIT);
        // 2^64 times the smallest base (1 ns) is past any cap, so the
        // product stays finite.
        let doublings = failures.saturating_sub(1).min(64) as i32;
        let secs = self.base.as_secs_f64() * 2f64.powi(doublings) * jitter;
        let wait = if secs < cap.as_secs_f64() {
            Duration::from_secs_f64(secs.max(0.0))
        } else {
            cap
        };
        let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        Duration::from_millis(ms)
    }
}

/// `now + wait`; if that does not fit in an `Instant`, the latest instant
/// on the way there that does.
///
/// Implementation note: an overflow saturates far in the future rather
/// than falling back to `now`, which would turn the longest wait into an
/// immediate retry of whatever just failed.
pub(crate) fn later(now: Instant, wait: Duration) -> Instant {
    let mut wait = wait;
    loop {
        if let Some(at) = now.checked_add(wait) {
            return at;
        }
        wait /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::epoch;

    /// What a row expects.
    enum Expect {
        Exactly(Duration),
        /// Drawn with jitter from a seeded RNG: within `[lo, hi]`.
        Within(Duration, Duration),
    }

    #[test]
    fn backoff_table() {
        use Expect::*;
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let hour = secs(3600);
        // (base, cap, failures, jitter or None for the seeded RNG) → wait.
        let rows: [(Duration, Duration, u32, Option<f64>, Expect); 14] = [
            (secs(2), hour, 1, Some(1.0), Exactly(secs(2))),
            (secs(2), hour, 2, Some(1.0), Exactly(secs(4))),
            (secs(2), hour, 3, Some(1.0), Exactly(secs(8))),
            // Failure 0 counts as the first.
            (secs(2), hour, 0, Some(1.0), Exactly(secs(2))),
            (secs(2), hour, 1, Some(0.8), Exactly(ms(1600))),
            // Rounded up to whole milliseconds.
            (ms(1), hour, 1, Some(1.3333), Exactly(ms(2))),
            (Duration::from_nanos(1), hour, 1, Some(1.0), Exactly(ms(1))),
            (Duration::ZERO, hour, 40, Some(1.4), Exactly(Duration::ZERO)),
            // The cap, before and after jitter.
            (secs(2), secs(60), 6, Some(1.0), Exactly(secs(60))),
            (secs(2), secs(60), 5, Some(1.4), Exactly(ms(44_800))),
            (secs(2), secs(60), 6, Some(0.8), Exactly(ms(51_200))),
            // Overflow: huge counts and bases stop at the cap, and no cap
            // goes past MAX_WAIT.
            (secs(2), hour, u32::MAX, Some(1.4), Exactly(hour)),
            (
                Duration::MAX,
                Duration::MAX,
                u32::MAX,
                None,
                Exactly(MAX_WAIT),
            ),
            (secs(2), hour, 4, None, Within(ms(12_800), ms(22_400))),
        ];
        let mut rng = Rng::from_seed([3; 32]);
        for (i, (base, cap, failures, jitter, expect)) in rows.into_iter().enumerate() {
            let backoff = Backoff { base, cap };
            let wait = match jitter {
                Some(jitter) => backoff.jittered(failures, jitter),
                None => backoff.wait(failures, &mut rng),
            };
            match expect {
                Exactly(expected) => assert_eq!(wait, expected, "row {i}"),
                Within(lo, hi) => assert!(lo <= wait && wait <= hi, "row {i}: {wait:?}"),
            }
        }
        // Deadlines: `later` adds, and saturates far ahead on overflow.
        let now = epoch();
        assert_eq!(later(now, secs(5)), now + secs(5));
        assert_eq!(later(now, Duration::ZERO), now);
        let far = later(now, Duration::MAX);
        assert!(far > now + MAX_WAIT, "an overflow is far ahead, not now");
        assert!(later(far, Duration::MAX) >= far);
    }
}
