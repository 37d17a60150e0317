//! The [`Retriever`] state machine.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::window::Window;
use super::wire::{self, Answer, Batch, Entry, Failure};
use super::*;
use crate::backoff::{Backoff, later};
use crate::drive::{IdCounter, LastNow, Outputs};
use crate::http::HttpOutcome;
use crate::rng::Rng;
use crate::store::StoreError;

/// The recipient's state machine. See the [module docs](super) for the
/// rules and how to drive it.
///
/// Implementation notes:
///
/// - A copy that arrives while a transaction with one of its keys is handed
///   over but not finished (processed, and its [`WindowChange::Seen`] reported)
///   waits, unacknowledged and without further requests to its relay, until
///   that delivery finishes; then it is dropped as a duplicate and
///   acknowledged together with the original. So a transaction is never
///   handed over twice at once, and no copy is acknowledged before some
///   copy was processed and remembered. If the original's relay is removed
///   meanwhile, its delivery still finishes on
///   [`Retriever::handle_processed`] and releases the waiting copies.
/// - A [`WindowChange::Seen`] that fails to persist is an
///   [`Event::PersistFailed`]; the entry is acknowledged all the same (the
///   application has processed it, and the window in memory still holds its
///   keys). The persisted window lacks those keys, so after a restart a
///   copy still queued on another relay is handed over again.
/// - The wait after the n-th consecutive failure of a relay is
///   `backoff_base × 2^(n−1) × jitter(0.8..1.4)`, capped at `backoff_cap`
///   and, since a relay not yet drained is tried at least every
///   `poll_interval`, at `poll_interval`; rounded up to whole
///   milliseconds, as the sender's waits are. A request carrying an
///   acknowledgement that fails is retried with the same acknowledgement
///   (acknowledging a gone entry is harmless), so no processed entry stays
///   on its relay.
/// - A request in flight is never given up by the machine: the driver
///   reports every [`Output::Transmit`], with [`HttpOutcome::Timeout`] if
///   need be.
#[derive(Debug)]
pub struct Retriever {
    config: RetrieverConfig,
    rng: Rng,
    window: Window,
    relays: BTreeMap<ServerName, Drain>,
    /// Requests out, and what they carried.
    requests: HashMap<AttemptId, Sent>,
    /// Handed over and not finished.
    deliveries: HashMap<DeliveryId, PendingDelivery>,
    /// The keys of `deliveries`, and whose they are.
    claimed: HashMap<DedupeKey, DeliveryId>,
    /// Persist operations not yet reported: a delivery's `Seen`, or `None`
    /// for a `Forget`.
    ops: HashMap<OpId, Option<DeliveryId>>,
    outputs: Outputs<Output>,
    ids: IdCounter,
    last_now: LastNow,
}

/// The wait between two long-polls of one relay.
const LONG_POLL_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// A request out.
#[derive(Debug)]
struct Sent {
    relay: ServerName,
    /// How many of the drain's `acks` it carried (the first ones).
    acks: usize,
    /// A batch drain, not a `relay_txn`.
    batch: bool,
}

/// One relay's drain.
#[derive(Debug)]
struct Drain {
    state: DrainState,
    /// The entries the next request acknowledges, oldest first (a batch
    /// drain carries them all, a `relay_txn` the first).
    acks: Vec<EntryId>,
    /// Whether the relay has the batch drain.
    batch: Support,
    /// Entries a batch handed out, not yet handed over, in order.
    buffered: VecDeque<Entry>,
    /// Consecutive failed requests.
    failures: u32,
    /// Handed over since the last `Drained`.
    delivered: u64,
}

impl Drain {
    fn new(due: Instant) -> Self {
        Self {
            state: DrainState::Idle { due: Some(due) },
            acks: Vec::new(),
            batch: Support::Unknown,
            buffered: VecDeque::new(),
            failures: 0,
            delivered: 0,
        }
    }
}

/// Whether a relay has the batch drain: asked first, and a 404 or 405
/// (a Dendrite relay) means no, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    Unknown,
    Yes,
    No,
}

/// What a relay's drain waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainState {
    /// Nothing in flight: due at `Some(when)`, or drained (`None`).
    Idle { due: Option<Instant> },
    /// The answer to `attempt`.
    AwaitingAnswer { attempt: AttemptId },
    /// `delivery` (its entry `entry`) to be processed and remembered.
    AwaitingDelivery {
        delivery: DeliveryId,
        entry: EntryId,
    },
    /// `delivery`, of which `entry` is a copy, to be processed and
    /// remembered.
    AwaitingOriginal {
        delivery: DeliveryId,
        entry: EntryId,
    },
}

/// A transaction handed over and not finished.
#[derive(Debug)]
struct PendingDelivery {
    keys: Vec<DedupeKey>,
    stage: DeliveryStage,
}

/// Where a handed-over transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeliveryStage {
    /// With the application.
    Processing,
    /// Its `Seen` change `OpId` is being persisted.
    Remembering(OpId),
}

impl Retriever {
    /// A machine with an empty window; every relay is due at once.
    pub fn new(config: RetrieverConfig, seed: [u8; 32]) -> Self {
        Self::restore(config, seed, Vec::new())
    }

    /// A machine whose window holds `seen` (each entry one transaction's
    /// keys, oldest first, as persisted); every relay is due at once.
    ///
    /// Implementation note: when `seen` holds more than `dedupe_window`
    /// transactions, the oldest are dropped, and a [`WindowChange::Forget`] for
    /// each is the first output.
    pub fn restore(config: RetrieverConfig, seed: [u8; 32], seen: Vec<Vec<DedupeKey>>) -> Self {
        let mut window = Window::new(config.dedupe_window);
        let mut machine = Self {
            window: Window::new(0),
            rng: Rng::from_seed(seed),
            config,
            relays: BTreeMap::new(),
            requests: HashMap::new(),
            deliveries: HashMap::new(),
            claimed: HashMap::new(),
            ops: HashMap::new(),
            outputs: Outputs::default(),
            ids: IdCounter::default(),
            last_now: LastNow::default(),
        };
        for keys in seen {
            for old in window.insert(keys) {
                machine.persist(WindowChange::Forget(old));
            }
        }
        machine.window = window;
        machine
    }

    /// The configuration.
    pub fn config(&self) -> &RetrieverConfig {
        &self.config
    }

    /// Sets the node's relays. New relays are due at once; removed ones are
    /// forgotten (answers from them are ignored).
    pub fn set_relays(&mut self, now: Instant, relays: Vec<ServerName>) {
        let now = self.last_now.advance(now);
        let mut kept = BTreeMap::new();
        for relay in relays {
            let drain = self
                .relays
                .remove(&relay)
                .unwrap_or_else(|| Drain::new(now));
            kept.entry(relay).or_insert(drain);
        }
        self.relays = kept;
    }

    /// The node came online: every relay not draining now is due at once.
    pub fn handle_online(&mut self, now: Instant) {
        let now = self.last_now.advance(now);
        for drain in self.relays.values_mut() {
            if let DrainState::Idle { due } = &mut drain.state {
                *due = Some(now);
            }
        }
        self.start_due(now);
    }

    /// Reports how the request of `attempt` ended. Unknown attempts are
    /// ignored.
    pub fn handle_response(&mut self, now: Instant, attempt: AttemptId, outcome: HttpOutcome) {
        let now = self.last_now.advance(now);
        if let Some(sent) = self.requests.remove(&attempt)
            && self
                .relays
                .get(&sent.relay)
                .is_some_and(|d| d.state == DrainState::AwaitingAnswer { attempt })
        {
            let Sent { relay, acks, batch } = sent;
            let parsed = if !batch {
                wire::parse_answer(&outcome).map(|answer| self.on_answer(now, &relay, acks, answer))
            } else if wire::lacks_batch(&outcome) {
                // A Dendrite relay: drain it with relay_txn from now on.
                if let Some(drain) = self.relays.get_mut(&relay) {
                    drain.batch = Support::No;
                }
                self.fetch(now, &relay);
                Ok(())
            } else {
                wire::parse_batch(&outcome).map(|batch| self.on_batch(now, &relay, acks, batch))
            };
            match parsed {
                Ok(()) => {}
                Err(Failure::Request(error)) => self.fail(now, &relay, error),
                Err(Failure::Malformed(error)) => {
                    self.event(Event::Malformed {
                        relay: relay.clone(),
                        error: error.clone(),
                    });
                    self.fail(now, &relay, format!("malformed answer: {error}"));
                }
            }
        }
        self.start_due(now);
    }

    /// The application has processed delivery `id`.
    pub fn handle_processed(&mut self, now: Instant, id: DeliveryId) {
        let now = self.last_now.advance(now);
        if let Some(pending) = self.deliveries.get(&id)
            && pending.stage == DeliveryStage::Processing
        {
            let keys = pending.keys.clone();
            let evicted = self.window.insert(keys.clone());
            let op = self.persist(WindowChange::Seen(keys));
            self.ops.insert(op, Some(id));
            if let Some(pending) = self.deliveries.get_mut(&id) {
                pending.stage = DeliveryStage::Remembering(op);
            }
            for old in evicted {
                self.persist(WindowChange::Forget(old));
            }
        }
        self.start_due(now);
    }

    /// Reports that the change of `op` was persisted, or not.
    pub fn handle_persisted(&mut self, now: Instant, op: OpId, result: Result<(), StoreError>) {
        let now = self.last_now.advance(now);
        if let Some(of) = self.ops.remove(&op) {
            if let Err(e) = result {
                self.event(Event::PersistFailed {
                    error: e.to_string(),
                });
            }
            if let Some(delivery) = of {
                self.finish(now, delivery);
            }
        }
        self.start_due(now);
    }

    /// Starts the drains that are due. Early calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.last_now.advance(now);
        self.start_due(now);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop()
    }

    /// When to call [`Retriever::handle_timeout`]: the last `now` while
    /// output is waiting, else the earliest due drain, else never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outputs.timeout(self.last_now, || {
            self.relays
                .values()
                .filter_map(|d| match d.state {
                    DrainState::Idle { due } => due,
                    _ => None,
                })
                .min()
        })
    }

    /// How many transactions the window remembers, and how many keys.
    #[cfg(test)]
    pub(super) fn window_size(&self) -> (usize, usize) {
        (self.window.len(), self.window.key_count())
    }

    fn fresh_id(&mut self) -> u64 {
        self.ids.fresh()
    }

    fn event(&mut self, event: Event) {
        self.outputs.push(Output::Event(event));
    }

    /// Queues `change`; returns its op.
    fn persist(&mut self, change: WindowChange) -> OpId {
        let op = OpId(self.fresh_id());
        if matches!(change, WindowChange::Forget(_)) {
            self.ops.insert(op, None);
        }
        self.outputs.push(Output::Persist { op, change });
        op
    }

    /// Starts a request on every idle relay whose time has come.
    fn start_due(&mut self, now: Instant) {
        let due: Vec<ServerName> = self
            .relays
            .iter()
            .filter(|(_, d)| matches!(d.state, DrainState::Idle { due: Some(t) } if t <= now))
            .map(|(relay, _)| relay.clone())
            .collect();
        for relay in due {
            self.fetch(now, &relay);
        }
    }

    /// Sends the next request to `relay`, carrying its pending acks: a
    /// batch drain unless the relay lacks it, else a `relay_txn`.
    fn fetch(&mut self, now: Instant, relay: &ServerName) {
        let Some(drain) = self.relays.get(relay) else {
            return;
        };
        let (us, key) = (&self.config.server_name, &self.config.signing_key);
        let batch = drain.batch != Support::No;
        let (request, acks) = if batch {
            let wait = self.config.long_poll;
            let request = wire::relay_txns_request(us, key, relay, &drain.acks, wait);
            (request, drain.acks.len())
        } else {
            let ack = drain.acks.first().copied();
            let request = wire::relay_txn_request(us, key, relay, ack);
            (request, usize::from(ack.is_some()))
        };
        match request {
            Ok(request) => {
                let attempt = AttemptId(self.fresh_id());
                if let Some(drain) = self.relays.get_mut(relay) {
                    drain.state = DrainState::AwaitingAnswer { attempt };
                }
                let sent = Sent {
                    relay: relay.clone(),
                    acks,
                    batch,
                };
                self.requests.insert(attempt, sent);
                self.outputs.push(Output::Transmit {
                    attempt,
                    relay: relay.clone(),
                    request,
                });
            }
            Err(e) => self.fail(now, relay, format!("cannot sign the request: {e}")),
        }
    }

    /// A request to `relay` failed: back off, keeping the pending ack.
    fn fail(&mut self, now: Instant, relay: &ServerName, error: String) {
        let Some(failures) = self.relays.get(relay).map(|d| d.failures.saturating_add(1)) else {
            return;
        };
        let retry_at = later(now, self.backoff().wait(failures, &mut self.rng));
        if let Some(drain) = self.relays.get_mut(relay) {
            drain.failures = failures;
            drain.state = DrainState::Idle {
                due: Some(retry_at),
            };
        }
        self.event(Event::RelayFailed {
            relay: relay.clone(),
            error,
            retry_at,
        });
    }

    /// The backoff after failures: capped at `poll_interval` too, since a
    /// relay not yet drained is tried at least that often.
    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.config.backoff_base,
            cap: self.config.backoff_cap.min(self.config.poll_interval),
        }
    }

    /// A well-formed `relay_txn` answer from `relay`: the `acks` first
    /// acknowledgements it carried are applied.
    fn on_answer(&mut self, now: Instant, relay: &ServerName, acks: usize, answer: Answer) {
        let Some(drain) = self.relays.get_mut(relay) else {
            return;
        };
        drain.failures = 0;
        drain.acks.drain(..acks.min(drain.acks.len()));
        match answer {
            Answer::Drained => self.drained(now, relay),
            Answer::Entry(entry) => self.on_entry(now, relay.clone(), entry),
        }
    }

    /// A well-formed batch answer from `relay`: the `acks` it carried are
    /// applied, and its entries are handed over one after the other.
    fn on_batch(&mut self, now: Instant, relay: &ServerName, acks: usize, batch: Batch) {
        let Some(drain) = self.relays.get_mut(relay) else {
            return;
        };
        drain.failures = 0;
        drain.batch = Support::Yes;
        drain.acks.drain(..acks.min(drain.acks.len()));
        if batch.entries.is_empty() {
            self.drained(now, relay);
        } else {
            drain.buffered = batch.entries.into();
            self.next_buffered(now, relay);
        }
    }

    /// `relay` has nothing more queued.
    fn drained(&mut self, now: Instant, relay: &ServerName) {
        let Some(drain) = self.relays.get_mut(relay) else {
            return;
        };
        let delivered = std::mem::take(&mut drain.delivered);
        // Drained relays are polled again every `poll_interval`: a sender
        // that missed this node while it was online has left its
        // transaction on a relay meanwhile. Long-polled at once instead,
        // where the relay can wait (a short gap keeps a relay that answers
        // at once anyway from being asked in a tight loop).
        let again = match self.config.long_poll {
            Some(_) if drain.batch == Support::Yes => LONG_POLL_GAP,
            _ => self.config.poll_interval,
        };
        drain.state = DrainState::Idle {
            due: Some(later(now, again)),
        };
        self.event(Event::Drained {
            relay: relay.clone(),
            delivered,
        });
    }

    /// Takes up the next entry a batch of `relay` handed out.
    fn next_buffered(&mut self, now: Instant, relay: &ServerName) {
        let next = self
            .relays
            .get_mut(relay)
            .and_then(|d| d.buffered.pop_front());
        if let Some(entry) = next {
            self.on_entry(now, relay.clone(), entry);
        }
    }

    /// `relay` handed out `entry`: wait for its original, drop it, or hand
    /// it over.
    fn on_entry(&mut self, now: Instant, relay: ServerName, entry: Entry) {
        let entry_id = entry.entry_id;
        let original = entry
            .lookup
            .iter()
            .find_map(|k| self.claimed.get(k))
            .copied();
        if let Some(delivery) = original {
            self.set_state(
                &relay,
                DrainState::AwaitingOriginal {
                    delivery,
                    entry: entry_id,
                },
            );
        } else if self.window.contains_any(&entry.lookup) {
            self.drop_duplicate(now, &relay, entry_id);
        } else {
            let id = DeliveryId(self.fresh_id());
            for key in &entry.keys {
                self.claimed.insert(key.clone(), id);
            }
            self.deliveries.insert(
                id,
                PendingDelivery {
                    keys: entry.keys,
                    stage: DeliveryStage::Processing,
                },
            );
            if let Some(drain) = self.relays.get_mut(&relay) {
                drain.delivered += 1;
                drain.state = DrainState::AwaitingDelivery {
                    delivery: id,
                    entry: entry_id,
                };
            }
            self.outputs.push(Output::Deliver(Delivery {
                id,
                relay,
                entry_id,
                origin: entry.origin,
                txn_id: entry.txn_id,
                transaction: entry.transaction,
            }));
        }
    }

    /// `entry` on `relay` is a copy of a finished transaction: acknowledge
    /// it with the next request.
    fn drop_duplicate(&mut self, now: Instant, relay: &ServerName, entry: EntryId) {
        self.event(Event::DuplicateDropped {
            relay: relay.clone(),
            entry_id: entry,
        });
        self.ack_and_fetch(now, relay, entry);
    }

    /// `entry` of `relay` is done with: acknowledge it with the next
    /// request, and go on with the batch's next entry, or ask for more.
    fn ack_and_fetch(&mut self, now: Instant, relay: &ServerName, entry: EntryId) {
        let Some(drain) = self.relays.get_mut(relay) else {
            return;
        };
        drain.acks.push(entry);
        if drain.buffered.is_empty() {
            self.fetch(now, relay);
        } else {
            self.next_buffered(now, relay);
        }
    }

    fn set_state(&mut self, relay: &ServerName, state: DrainState) {
        if let Some(drain) = self.relays.get_mut(relay) {
            drain.state = state;
        }
    }

    /// `delivery` was processed and its `Seen` reported: acknowledge it and
    /// every copy that waited for it.
    fn finish(&mut self, now: Instant, delivery: DeliveryId) {
        let Some(pending) = self.deliveries.remove(&delivery) else {
            return;
        };
        for key in &pending.keys {
            if self.claimed.get(key) == Some(&delivery) {
                self.claimed.remove(key);
            }
        }
        let mut owners = Vec::new();
        let mut copies = Vec::new();
        for (relay, drain) in &self.relays {
            match drain.state {
                DrainState::AwaitingDelivery { delivery: d, entry } if d == delivery => {
                    owners.push((relay.clone(), entry));
                }
                DrainState::AwaitingOriginal { delivery: d, entry } if d == delivery => {
                    copies.push((relay.clone(), entry));
                }
                _ => {}
            }
        }
        for (relay, entry) in owners {
            self.ack_and_fetch(now, &relay, entry);
        }
        for (relay, entry) in copies {
            self.drop_duplicate(now, &relay, entry);
        }
    }
}
