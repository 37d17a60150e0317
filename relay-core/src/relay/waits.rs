//! Long-polls: batch drains that found nothing and wait for an entry of
//! their destination, or their deadline.
//!
//! Implementation note: a parked request holds its destination, its take
//! and its deadline, nothing else (its acknowledgements were applied by
//! the fetch that found nothing); each is an open connection, so the
//! server's connection limits bound how many there are. A store and a
//! long-poll's fetch are reported back in either order, so a fetch that
//! found nothing may be reported after an entry stored behind it was: the
//! stores of destinations with such a fetch under way are counted, and a
//! fetch that missed one fetches again instead of parking.

use std::collections::{BTreeSet, HashMap};

use super::RequestId;
use crate::id::ServerName;
use crate::store::Take;
use crate::time::{Instant, UnixMillis};

/// A batch drain waiting for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parked {
    pub(super) request: RequestId,
    pub(super) destination: ServerName,
    pub(super) take: Take,
    pub(super) expired_before: UnixMillis,
    pub(super) deadline: Instant,
}

/// Every parked request, by destination and by deadline.
#[derive(Debug, Default)]
pub(super) struct Waits {
    parked: Vec<Parked>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// Stores reported so far: what [`Waits::fetching`] hands out.
    stores: u64,
    /// Destinations with a long-poll's fetch under way: how many, and the
    /// count of the last store of theirs.
    fetching: HashMap<ServerName, (usize, u64)>,
}

impl Waits {
    /// A long-poll's fetch for `destination` is issued; what to hand
    /// [`Waits::fetched`] when it is reported.
    pub(super) fn fetching(&mut self, destination: &ServerName) -> u64 {
        self.fetching.entry(destination.clone()).or_insert((0, 0)).0 += 1;
        self.stores
    }

    /// A long-poll's fetch for `destination`, issued when
    /// [`Waits::fetching`] gave `since`, is reported: whether an entry of
    /// `destination` was stored since, which it may have missed.
    pub(super) fn fetched(&mut self, destination: &ServerName, since: u64) -> bool {
        let Some((under_way, last_store)) = self.fetching.get_mut(destination) else {
            return false;
        };
        let missed = *last_store > since;
        *under_way -= 1;
        if *under_way == 0 {
            self.fetching.remove(destination);
        }
        missed
    }

    pub(super) fn park(&mut self, parked: Parked) {
        self.deadlines.insert((parked.deadline, parked.request));
        self.parked.push(parked);
    }

    /// An entry of `destination` is stored: takes the requests waiting for
    /// it.
    pub(super) fn wake(&mut self, destination: &ServerName) -> Vec<Parked> {
        self.stores += 1;
        if let Some((_, last_store)) = self.fetching.get_mut(destination) {
            *last_store = self.stores;
        }
        if !self.parked.iter().any(|p| p.destination == *destination) {
            return Vec::new();
        }
        let (woken, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.destination == *destination);
        self.parked = kept;
        for p in &woken {
            self.deadlines.remove(&(p.deadline, p.request));
        }
        woken
    }

    /// Takes the requests whose deadline is at or before `now`.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<RequestId> {
        let mut due = Vec::new();
        while let Some(&(deadline, request)) = self.deadlines.first()
            && deadline <= now
        {
            self.deadlines.pop_first();
            due.push(request);
        }
        if !due.is_empty() {
            self.parked.retain(|p| !due.contains(&p.request));
        }
        due
    }

    /// Takes every parked request.
    pub(super) fn all(&mut self) -> Vec<RequestId> {
        self.deadlines.clear();
        std::mem::take(&mut self.parked)
            .into_iter()
            .map(|p| p.request)
            .collect()
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.parked.len()
    }
}
