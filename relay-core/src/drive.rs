//! What the three machines keep the same way for their drive rule: the
//! latest `now`, the outputs waiting to be drained, and the counter their
//! correlation ids come from.

use std::collections::VecDeque;

use crate::time::Instant;

/// The latest `now` a machine was told. It never goes backwards: a `now`
/// earlier than one already seen is taken as that one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LastNow(Option<Instant>);

impl LastNow {
    /// Records `now` and returns the machine's time: `now`, or the latest
    /// one seen if that is later.
    pub(crate) fn advance(&mut self, now: Instant) -> Instant {
        let now = self.0.map_or(now, |last| last.max(now));
        self.0 = Some(now);
        now
    }

    /// The latest `now`, if any was told.
    pub(crate) fn get(self) -> Option<Instant> {
        self.0
    }
}

/// Outputs waiting to be drained, oldest first.
#[derive(Debug)]
pub(crate) struct Outputs<O>(VecDeque<O>);

impl<O> Default for Outputs<O> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<O> Outputs<O> {
    /// Queues `output` after every other.
    pub(crate) fn push(&mut self, output: O) {
        self.0.push_back(output);
    }

    /// The oldest output.
    pub(crate) fn pop(&mut self) -> Option<O> {
        self.0.pop_front()
    }

    /// When the driver should call `handle_timeout`: the last `now` while
    /// output is queued, so no driver sleeps on pending work; else `next`,
    /// the machine's earliest deadline.
    pub(crate) fn timeout(
        &self,
        last_now: LastNow,
        next: impl FnOnce() -> Option<Instant>,
    ) -> Option<Instant> {
        match last_now.get() {
            Some(now) if !self.0.is_empty() => Some(now),
            _ => next(),
        }
    }
}

/// Hands out a machine's ids: 1, 2, 3, …
///
/// Implementation note: wrapping, as 2^64 ids are never reached; the
/// adapter cannot build ids, so uniqueness is all that matters.
#[derive(Debug, Clone)]
pub(crate) struct IdCounter(u64);

impl Default for IdCounter {
    fn default() -> Self {
        Self(1)
    }
}

impl IdCounter {
    /// A counter whose first id is `first`.
    pub(crate) fn starting_at(first: u64) -> Self {
        Self(first)
    }

    /// A new id.
    pub(crate) fn fresh(&mut self) -> u64 {
        let id = self.0;
        self.0 = self.0.wrapping_add(1);
        id
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::epoch::epoch;

    #[test]
    fn now_never_goes_back_and_queued_output_is_due_at_it() {
        let t0 = epoch();
        let later = t0 + Duration::from_secs(5);
        let mut last = LastNow::default();
        let mut outputs = Outputs::default();
        assert_eq!(outputs.timeout(last, || Some(later)), Some(later));
        assert_eq!(last.advance(later), later);
        assert_eq!(last.advance(t0), later, "an earlier now is the latest one");
        assert_eq!(last.get(), Some(later));
        outputs.push("x");
        assert_eq!(outputs.timeout(last, || None), Some(later));
        assert_eq!(outputs.pop(), Some("x"));
        assert_eq!(outputs.timeout(last, || None), None);
        let mut ids = IdCounter::default();
        assert_eq!((ids.fresh(), ids.fresh()), (1, 2));
        assert_eq!(IdCounter::starting_at(7).fresh(), 7);
    }
}
