//! The [`Outbound`] state machine.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::destination::{
    AttemptStage, Destination, Verdict, offline_threshold, restored_deadline,
};
use super::txn::{self, Txn};
use super::*;
use crate::drive::{IdCounter, LastNow, Outputs};
use crate::http::HttpOutcome;
use crate::rng::Rng;
use crate::store::StoreError;

/// The sender's state machine. See the [module docs](super) for the rules
/// and how to drive it.
///
/// Implementation note: every destination that has work and waits for a
/// deadline sits in one ordered timer set, so [`Outbound::poll_timeout`]
/// and [`Outbound::handle_timeout`] cost no scan of all destinations; a
/// destination that can send now starts at once, inside the `handle_*`
/// call that made it ready.
#[derive(Debug)]
pub struct Outbound {
    pub(super) config: OutboundConfig,
    pub(super) rng: Rng,
    pub(super) destinations: HashMap<ServerName, Destination>,
    pub(super) relays: HashMap<ServerName, Vec<ServerName>>,
    /// Requests out, and whose they are.
    pub(super) requests: HashMap<AttemptId, ServerName>,
    /// (deadline, destination) for every destination waiting for one.
    pub(super) timers: BTreeSet<(Instant, ServerName)>,
    pub(super) sink: Sink,
    /// Where item IDs come from.
    pub(super) item_ids: IdCounter,
    pub(super) last_now: LastNow,
    /// The wall time of the last call that told it.
    pub(super) last_unix: UnixMillis,
    /// `TxnStarted` changes not yet reported stored, and whose they are.
    pub(super) persist_waits: HashMap<OpId, ServerName>,
}

/// Outputs waiting to be drained, and the ids that name them.
#[derive(Debug, Default)]
pub(super) struct Sink {
    pub(super) outputs: Outputs<Output>,
    /// Persist ops not yet reported, with the item of an `Enqueued`: its
    /// report answers the enqueue.
    pub(super) pending_ops: HashMap<OpId, Option<ItemId>>,
    /// Where op and attempt ids, and the counter in txn IDs, come from.
    pub(super) ids: IdCounter,
}

impl Sink {
    /// A fresh id for an op, an attempt or a txn ID.
    pub(super) fn fresh(&mut self) -> u64 {
        self.ids.fresh()
    }

    /// Queues `change` to persist.
    pub(super) fn persist(&mut self, change: OutboundChange) -> OpId {
        let op = OpId(self.fresh());
        let enqueued = match &change {
            OutboundChange::Enqueued { item, .. } => Some(item.id),
            _ => None,
        };
        self.pending_ops.insert(op, enqueued);
        self.outputs.push(Output::Persist { op, change });
        op
    }

    /// Queues `event`.
    pub(super) fn event(&mut self, event: Event) {
        self.outputs.push(Output::Event(event));
    }
}

impl Outbound {
    /// A machine with nothing queued; `seed` drives jitter and txn IDs.
    pub fn new(config: OutboundConfig, seed: [u8; 32]) -> Self {
        Self {
            config,
            rng: Rng::from_seed(seed),
            destinations: HashMap::new(),
            relays: HashMap::new(),
            requests: HashMap::new(),
            timers: BTreeSet::new(),
            sink: Sink::default(),
            item_ids: IdCounter::default(),
            last_now: LastNow::default(),
            last_unix: UnixMillis(0),
            persist_waits: HashMap::new(),
        }
    }

    /// A machine rebuilt from persisted `records`: queues, transactions in
    /// flight (with their txn IDs) and failure state. Wall-clock retry times
    /// are mapped to [`Instant`]s relative to (`now`, `unix`), clamped to at
    /// most `backoff_cap` ahead.
    ///
    /// Implementation note: nothing is sent from here; destinations that
    /// are due get a deadline of `now`, so the driver's first
    /// [`Outbound::handle_timeout`] resumes them. A transaction's items are
    /// taken from the record's queue by ID; items missing from the queue
    /// are skipped, and records for the same destination are merged.
    pub fn restore(
        config: OutboundConfig,
        seed: [u8; 32],
        now: Instant,
        unix: UnixMillis,
        records: Vec<DestinationRecord>,
    ) -> Self {
        let mut machine = Self::new(config, seed);
        let now = machine.last_now.advance(now);
        machine.last_unix = unix;
        let max_item = records
            .iter()
            .flat_map(|r| r.items.iter().map(|item| item.id.0))
            .max();
        if let Some(max) = max_item {
            let first = max.saturating_add(1);
            machine.item_ids = IdCounter::starting_at(first);
            machine.sink.ids = IdCounter::starting_at(first);
        }
        for record in records {
            machine.restore_record(unix, record);
        }
        let cap = machine.config.backoff_cap;
        let mut idle = Vec::new();
        for (name, d) in &mut machine.destinations {
            d.retry_at = d
                .retry
                .next_retry
                .map(|at| restored_deadline(now, unix, at, cap));
            if !d.has_work() {
                if d.retry == RetryState::default() {
                    idle.push(name.clone());
                }
            } else if !d.retry.blacklisted {
                let at = d.retry_at.unwrap_or(now);
                d.armed = Some(at);
                machine.timers.insert((at, name.clone()));
            }
        }
        for name in idle {
            machine.destinations.remove(&name);
        }
        machine
    }

    fn restore_record(&mut self, unix: UnixMillis, record: DestinationRecord) {
        let DestinationRecord {
            destination,
            items,
            txn,
            retry,
        } = record;
        let d = self.destinations.entry(destination).or_default();
        let mut seen: HashSet<ItemId> = d.queue.iter().map(|item| item.id).collect();
        if let Some(t) = &d.txn {
            seen.extend(t.items.iter().copied());
        }
        let mut queue: Vec<Item> = items.into_iter().filter(|i| seen.insert(i.id)).collect();
        if let Some((txn_id, ids)) = txn
            && d.txn.is_none()
        {
            let mut taken = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(pos) = queue.iter().position(|item| item.id == id) {
                    taken.push(queue.remove(pos));
                }
            }
            if !taken.is_empty() {
                let started = txn::started_at(&txn_id).unwrap_or(unix);
                d.txn = Some(Txn::new(txn_id, &taken, &self.config.server_name, started));
            }
        }
        d.queue.extend(queue);
        if d.retry == RetryState::default() {
            d.retry = retry;
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Sets the relays known for `destination` (replacing the previous
    /// set); used from the next relay fan-out on.
    pub fn set_relays(&mut self, now: Instant, destination: ServerName, relays: Vec<ServerName>) {
        self.last_now.advance(now);
        let mut seen = HashSet::new();
        let relays: Vec<ServerName> = relays
            .into_iter()
            .filter(|r| seen.insert(r.clone()))
            .collect();
        if relays.is_empty() {
            self.relays.remove(&destination);
        } else {
            self.relays.insert(destination, relays);
        }
    }

    /// Queues a PDU or EDU (a JSON object), or a whole transaction, for
    /// `destination`.
    pub fn handle_enqueue(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        destination: ServerName,
        kind: ItemKind,
        json: Vec<u8>,
    ) -> Result<ItemId, EnqueueError> {
        let now = self.last_now.advance(now);
        self.last_unix = unix;
        if destination == self.config.server_name {
            return Err(EnqueueError::SelfDestination);
        }
        if txn::parse_item(&json).is_none() {
            return Err(EnqueueError::NotJson);
        }
        if kind == ItemKind::Transaction {
            txn::whole_transaction(&json, self.config.max_pdus, self.config.max_edus)
                .map_err(EnqueueError::BadTransaction)?;
        }
        let queued = self
            .destinations
            .get(&destination)
            .map_or(0, Destination::len);
        if queued >= self.config.max_queued_items {
            return Err(EnqueueError::QueueFull(destination));
        }
        let id = ItemId(self.item_ids.fresh());
        let item = Item { id, kind, json };
        self.sink.persist(OutboundChange::Enqueued {
            destination: destination.clone(),
            item: item.clone(),
        });
        self.destinations
            .entry(destination.clone())
            .or_default()
            .queue
            .push_back(item);
        self.settle(now, unix, &destination);
        Ok(id)
    }

    /// Reports how the request of `attempt` ended. Unknown attempts are
    /// ignored.
    pub fn handle_send_result(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        attempt: AttemptId,
        outcome: HttpOutcome,
    ) {
        let now = self.last_now.advance(now);
        self.last_unix = unix;
        let Some(name) = self.requests.remove(&attempt) else {
            return;
        };
        let Some(a) = self
            .destinations
            .get_mut(&name)
            .and_then(|d| d.attempt.as_mut())
        else {
            return;
        };
        let verdict = Verdict::of(&outcome);
        match a.stage {
            AttemptStage::AwaitingDirect(id) if id == attempt => {
                self.on_direct(now, unix, &name, verdict)
            }
            AttemptStage::AwaitingDirect(_) => {}
            AttemptStage::AwaitingRelays(_) => self.on_relay(now, unix, &name, attempt, verdict),
        }
    }

    /// Reports that the change of `op` was persisted, or not.
    ///
    /// The report of an item's `Enqueued` answers its enqueue
    /// ([`Event::Queued`]), stored or not: the item is queued in memory
    /// either way, and a failure is an [`Event::PersistFailed`] first.
    ///
    /// A new transaction's first try waits for its `TxnStarted` to be
    /// reported (stored or not), so that a crash cannot resend its items
    /// under another txn ID after they were sent under this one.
    pub fn handle_persisted(&mut self, now: Instant, op: OpId, result: Result<(), StoreError>) {
        let now = self.last_now.advance(now);
        if let Some(enqueued) = self.sink.pending_ops.remove(&op) {
            if let Err(e) = result {
                self.sink.event(Event::PersistFailed {
                    error: e.to_string(),
                });
            }
            if let Some(item) = enqueued {
                self.sink.event(Event::Queued { item });
            }
        }
        if let Some(name) = self.persist_waits.remove(&op) {
            if let Some(d) = self.destinations.get_mut(&name)
                && d.unpersisted == Some(op)
            {
                d.unpersisted = None;
            }
            self.settle(now, self.last_unix, &name);
        }
    }

    /// The application saw `destination` alive: clears blacklist and
    /// backoff and retries now (offline stays until a direct success).
    pub fn handle_peer_alive(&mut self, now: Instant, unix: UnixMillis, destination: &ServerName) {
        let now = self.last_now.advance(now);
        self.last_unix = unix;
        let Some(d) = self.destinations.get_mut(destination) else {
            return;
        };
        d.retry_at = None;
        self.update_retry(destination, |r| {
            r.failed_attempts = 0;
            r.next_retry = None;
            r.blacklisted = false;
        });
        self.settle(now, unix, destination);
    }

    /// Starts the attempts that are due. Early calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant, unix: UnixMillis) {
        let now = self.last_now.advance(now);
        self.last_unix = unix;
        while let Some((at, _)) = self.timers.first()
            && *at <= now
        {
            if let Some((_, name)) = self.timers.pop_first() {
                self.settle(now, unix, &name);
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.sink.outputs.pop()
    }

    /// When to call [`Outbound::handle_timeout`]: the last `now` while
    /// output is waiting, else the earliest due retry, else never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sink
            .outputs
            .timeout(self.last_now, || self.timers.first().map(|(at, _)| *at))
    }

    /// Items queued for `destination`, the transaction in flight included.
    pub fn queued(&self, destination: &ServerName) -> usize {
        self.destinations
            .get(destination)
            .map_or(0, Destination::len)
    }

    /// The txn ID in flight for `destination`.
    pub fn in_flight(&self, destination: &ServerName) -> Option<&TxnId> {
        Some(&self.destinations.get(destination)?.txn.as_ref()?.id)
    }

    /// Whether `destination` is assumed offline.
    pub fn is_offline(&self, destination: &ServerName) -> bool {
        self.retry_state(destination).direct_failures >= offline_threshold(&self.config)
    }

    /// Destinations with any state (queued items or failures).
    pub fn tracked_destinations(&self) -> usize {
        self.destinations.len()
    }

    /// The failure state of `destination` (the default if it has none).
    pub fn retry_state(&self, destination: &ServerName) -> RetryState {
        self.destinations
            .get(destination)
            .map_or_else(RetryState::default, |d| d.retry)
    }

    /// The relays known for `destination`.
    pub fn relays(&self, destination: &ServerName) -> &[ServerName] {
        self.relays.get(destination).map_or(&[], Vec::as_slice)
    }

    /// Re-evaluates `name` after a change: starts its next attempt if it
    /// has work and may send now, arms its timer if it must wait, and
    /// forgets it if it holds nothing worth keeping.
    pub(super) fn settle(&mut self, now: Instant, unix: UnixMillis, name: &ServerName) {
        loop {
            let Some(d) = self.destinations.get_mut(name) else {
                return;
            };
            if let Some(at) = d.armed.take() {
                self.timers.remove(&(at, name.clone()));
            }
            if d.attempt.is_some() || d.retry.blacklisted || d.unpersisted.is_some() {
                return;
            }
            if !d.has_work() {
                if d.retry == RetryState::default() {
                    self.destinations.remove(name);
                }
                return;
            }
            if let Some(at) = d.retry_at
                && at > now
            {
                d.armed = Some(at);
                self.timers.insert((at, name.clone()));
                return;
            }
            d.retry_at = None;
            if self.start_attempt(unix, name) {
                return;
            }
            // The transaction could not be built or signed and was
            // dropped: go on with the rest of the queue.
        }
    }
}

#[cfg(test)]
impl Outbound {
    /// Checks the machine's internal invariants.
    pub(super) fn check_invariants(&self) {
        let mut armed = 0;
        for (name, d) in &self.destinations {
            assert!(
                d.has_work() || d.retry != RetryState::default() || d.attempt.is_some(),
                "{name} is idle but kept"
            );
            if d.attempt.is_some() {
                assert!(d.txn.is_some(), "{name}: an attempt without a transaction");
            }
            let waits = d.has_work() && d.attempt.is_none() && !d.retry.blacklisted;
            assert_eq!(waits, d.armed.is_some(), "{name}: timer");
            if let Some(at) = d.armed {
                armed += 1;
                assert!(
                    self.timers.contains(&(at, name.clone())),
                    "{name}: timer set"
                );
            }
        }
        assert_eq!(armed, self.timers.len(), "stray timers");
    }
}
