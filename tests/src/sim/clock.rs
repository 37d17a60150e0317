//! Virtual time: one clock for every party, and the queue of scheduled
//! events that it jumps between.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use relay_core::{Instant, UnixMillis};

/// The wall-clock time at virtual time zero (2023-11-14).
pub const UNIX_BASE_MS: u64 = 1_700_000_000_000;

/// The simulation's only clock: a base [`Instant`] plus the virtual time
/// elapsed. [`UnixMillis`] is derived from it, so wall and monotonic time
/// never drift apart.
///
/// Implementation note: the base is read once per process from the OS, but
/// nothing depends on its value: machines only compare and add to the
/// instants they are given. Sharing it between runs makes their traces
/// (which print instants inside machine events) comparable.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    now: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock at virtual time zero.
    pub fn new() -> Self {
        static BASE: OnceLock<Instant> = OnceLock::new();
        Self {
            base: *BASE.get_or_init(Instant::now),
            now: Duration::ZERO,
        }
    }

    /// The current virtual time, as an offset from zero.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// The current time as machines see it.
    pub fn now(&self) -> Instant {
        self.base + self.now
    }

    /// The current wall-clock time.
    pub fn unix(&self) -> UnixMillis {
        UnixMillis(UNIX_BASE_MS + u64::try_from(self.now.as_millis()).unwrap_or(u64::MAX / 2))
    }

    /// `t` as an offset from zero (instants before zero count as zero).
    pub fn offset(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.base)
    }

    /// Moves the clock to `t`; time never goes back.
    pub fn advance_to(&mut self, t: Duration) {
        assert!(t >= self.now, "time went back: {t:?} < {:?}", self.now);
        self.now = t;
    }
}

/// Events due at virtual times; equal times keep the order they were
/// scheduled in.
#[derive(Debug)]
pub struct Scheduler<E> {
    queue: BTreeMap<(Duration, u64), E>,
    seq: u64,
}

impl<E> Default for Scheduler<E> {
    fn default() -> Self {
        Self {
            queue: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> Scheduler<E> {
    /// Schedules `event` at `at`.
    pub fn at(&mut self, at: Duration, event: E) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    /// Whether any scheduled event satisfies `f`.
    pub fn any(&self, f: impl Fn(&E) -> bool) -> bool {
        self.queue.values().any(f)
    }

    /// When the next event is due.
    pub fn next_time(&self) -> Option<Duration> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Takes the next event.
    pub fn pop(&mut self) -> Option<(Duration, E)> {
        self.queue.pop_first().map(|((at, _), e)| (at, e))
    }

    /// Events scheduled and not yet taken.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// `d` as seconds with millisecond precision, for traces.
pub fn secs(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}
