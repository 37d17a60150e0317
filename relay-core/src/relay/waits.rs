//! Long-polls: batch drains that found nothing and wait for an entry of
//! their destination, or their deadline.
//!
//! Implementation note: a parked request holds its destination, its take
//! and its deadline, nothing else (its acknowledgements were applied by
//! the fetch that found nothing); each is an open connection, so the
//! server's connection limits bound how many there are.

use std::collections::BTreeSet;

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
}

impl Waits {
    pub(super) fn park(&mut self, parked: Parked) {
        self.deadlines.insert((parked.deadline, parked.request));
        self.parked.push(parked);
    }

    /// Takes the requests waiting for `destination`.
    pub(super) fn wake(&mut self, destination: &ServerName) -> Vec<Parked> {
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
