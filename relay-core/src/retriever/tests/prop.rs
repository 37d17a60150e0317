//! Model-based property test: three relays (one Dendrite-style) holding
//! copies of a small pool of transactions, answers that fail, get lost or
//! are garbage, a slow application, failing storage, and crashes.
//!
//! Invariants: a transaction is never with the application twice at once;
//! it is handed over more than once only after a crash that came between
//! its processing and the successful persisting of its `Seen`; once the
//! faults stop, every queued transaction was handed over and every entry on
//! every relay acknowledged.

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::super::*;
use super::sim::*;
use crate::canonical::to_canonical_string;
use crate::http::HttpOutcome;
use crate::store::StoreError;

const POOL: u64 = 6;
const RELAYS: [&str; 3] = ["relay.a", "relay.b", "relay.c"];

fn origin_of(t: u64) -> &'static str {
    if t.is_multiple_of(2) {
        "a.example"
    } else {
        "b.example"
    }
}

#[derive(Debug, Clone)]
enum Fault {
    /// Answered as the relay answers.
    None,
    /// Never reached the relay.
    ConnectionFailed,
    /// The relay applied it; the answer was lost.
    LostAnswer,
    /// The relay refused it.
    ServerError,
    /// The relay applied it and answered garbage.
    Garbage,
}

#[derive(Debug, Clone)]
enum Step {
    /// Ends one request in flight (index modulo their number).
    Answer(usize, Fault),
    /// The application processes one pending delivery.
    Process(usize),
    /// Storage applies the oldest pending change, or fails it.
    Persist { fail: bool },
    /// A sender queues pool transaction `t` on relay `relay`.
    Enqueue { relay: usize, t: u64 },
    /// Time passes.
    Advance(u16),
    /// The node comes online.
    Online,
    /// The node crashes and restarts from its persisted window.
    Crash,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        5 => Just(Fault::None),
        1 => Just(Fault::ConnectionFailed),
        1 => Just(Fault::LostAnswer),
        1 => Just(Fault::ServerError),
        1 => Just(Fault::Garbage),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (any::<usize>(), fault()).prop_map(|(i, f)| Step::Answer(i, f)),
        3 => any::<usize>().prop_map(Step::Process),
        3 => prop::bool::weighted(0.15).prop_map(|fail| Step::Persist { fail }),
        2 => (0..RELAYS.len(), 0..POOL).prop_map(|(relay, t)| Step::Enqueue { relay, t }),
        1 => (1..120u16).prop_map(Step::Advance),
        1 => Just(Step::Online),
        1 => Just(Step::Crash),
    ]
}

struct World {
    node: Node,
    relays: Vec<FakeRelay>,
    in_flight: Vec<(AttemptId, OutgoingRequest)>,
    with_app: Vec<(Delivery, u64)>,
    to_persist: VecDeque<(OpId, WindowChange)>,
    /// The persisted window.
    store: Vec<Vec<DedupeKey>>,
    digests: HashMap<DedupeKey, u64>,
    queued: HashSet<u64>,
    processed: HashMap<u64, u32>,
    /// Processed, its `Seen` not yet persisted.
    exposed: HashSet<u64>,
    /// Crashes that hit a transaction while exposed.
    allowance: HashMap<u64, u32>,
}

impl World {
    fn new() -> Self {
        let digests = (0..POOL)
            .flat_map(|t| {
                let canonical = to_canonical_string(&txn(origin_of(t), t)).expect("canonical");
                let digest = super::super::wire::digest(canonical.as_bytes());
                [
                    (DedupeKey::Digest(digest), t),
                    (DedupeKey::TxnDigest(digest), t),
                ]
            })
            .collect();
        Self {
            node: Node::new(config(), &RELAYS),
            relays: RELAYS
                .iter()
                .enumerate()
                .map(|(i, r)| FakeRelay::new(r, 1 + 1000 * i as u64, i == 2))
                .collect(),
            in_flight: Vec::new(),
            with_app: Vec::new(),
            to_persist: VecDeque::new(),
            store: Vec::new(),
            digests,
            queued: HashSet::new(),
            processed: HashMap::new(),
            exposed: HashSet::new(),
            allowance: HashMap::new(),
        }
    }

    fn enqueue(&mut self, relay: usize, t: u64) {
        let origin = origin_of(t);
        let txn_id = format!("t{t}");
        let r = &mut self.relays[relay];
        if !r
            .queue
            .iter()
            .any(|e| e.origin.as_str() == origin && e.txn_id.as_str() == txn_id)
        {
            r.push(origin, &txn_id, &txn(origin, t));
        }
        self.queued.insert(t);
    }

    fn pool_index(&self, keys: &[DedupeKey]) -> u64 {
        keys.iter()
            .find_map(|k| self.digests.get(k))
            .copied()
            .expect("a pool transaction")
    }

    /// Collects the node's outputs into the world's queues.
    fn collect(&mut self) {
        while let Some(output) = self.node.r.poll_output() {
            match output {
                Output::Transmit {
                    attempt, request, ..
                } => self.in_flight.push((attempt, request)),
                Output::Deliver(d) => {
                    let value: serde_json::Value =
                        serde_json::from_slice(&d.transaction).expect("JSON");
                    let t = value["origin_server_ts"].as_u64().expect("pool index");
                    assert!(
                        self.with_app.iter().all(|(_, u)| *u != t),
                        "transaction {t} handed over twice at once"
                    );
                    self.with_app.push((d, t));
                }
                Output::Persist { op, change } => self.to_persist.push_back((op, change)),
                Output::Event(_) => {}
            }
        }
    }

    fn apply(&mut self, step: Step) {
        let now = self.node.now;
        match step {
            Step::Answer(i, fault) if !self.in_flight.is_empty() => {
                let (attempt, request) = self.in_flight.remove(i % self.in_flight.len());
                let relay = self
                    .relays
                    .iter_mut()
                    .find(|r| r.name == request.server)
                    .expect("a known relay");
                let outcome = match fault {
                    Fault::None => relay.serve(now, &request),
                    Fault::ConnectionFailed => HttpOutcome::ConnectionFailed("refused".into()),
                    Fault::LostAnswer => {
                        let _ = relay.serve(now, &request);
                        HttpOutcome::Timeout
                    }
                    Fault::ServerError => HttpOutcome::Response {
                        status: 500,
                        body: br#"{"errcode":"M_UNKNOWN","error":"db"}"#.to_vec(),
                        retry_after: None,
                    },
                    Fault::Garbage => {
                        let _ = relay.serve(now, &request);
                        ok(r#"{"entries_queued":true,"transaction":[]}"#)
                    }
                };
                self.node.r.handle_response(now, attempt, outcome);
            }
            Step::Process(i) if !self.with_app.is_empty() => {
                let (d, t) = self.with_app.remove(i % self.with_app.len());
                *self.processed.entry(t).or_default() += 1;
                self.exposed.insert(t);
                self.node.r.handle_processed(now, d.id);
            }
            Step::Persist { fail } => {
                if let Some((op, change)) = self.to_persist.pop_front() {
                    let result = if fail {
                        Err(StoreError("injected".into()))
                    } else {
                        match &change {
                            WindowChange::Seen(keys) => {
                                let t = self.pool_index(keys);
                                self.exposed.remove(&t);
                                self.store.push(keys.clone());
                            }
                            WindowChange::Forget(keys) => {
                                if let Some(i) = self.store.iter().position(|k| k == keys) {
                                    self.store.remove(i);
                                }
                            }
                        }
                        Ok(())
                    };
                    self.node.r.handle_persisted(now, op, result);
                }
            }
            Step::Enqueue { relay, t } => self.enqueue(relay, t),
            Step::Advance(secs) => {
                self.node.now += Duration::from_secs(u64::from(secs));
                self.node.r.handle_timeout(self.node.now);
            }
            Step::Online => self.node.r.handle_online(now),
            Step::Crash => {
                for t in &self.exposed {
                    *self.allowance.entry(*t).or_default() += 1;
                }
                self.node = Node::restore(config(), &RELAYS, self.store.clone());
                self.in_flight.clear();
                self.with_app.clear();
                self.to_persist.clear();
            }
            Step::Answer(..) | Step::Process(_) => {}
        }
        self.collect();
        self.check_counts();
    }

    fn check_counts(&self) {
        for (t, n) in &self.processed {
            let allowed = 1 + self.allowance.get(t).copied().unwrap_or(0);
            assert!(*n <= allowed, "transaction {t} processed {n} times");
        }
    }

    /// No more faults: run until nothing is left to do.
    fn settle(&mut self) {
        self.node.r.handle_online(self.node.now);
        self.collect();
        for _ in 0..10_000 {
            let idle =
                self.in_flight.is_empty() && self.with_app.is_empty() && self.to_persist.is_empty();
            if idle && self.relays.iter().all(|r| r.queue.is_empty()) {
                // Drained relays keep being polled; nothing is left for them.
                return;
            }
            if !self.in_flight.is_empty() {
                self.apply(Step::Answer(0, Fault::None));
            } else if !self.with_app.is_empty() {
                self.apply(Step::Process(0));
            } else if !self.to_persist.is_empty() {
                self.apply(Step::Persist { fail: false });
            } else if let Some(next) = self.node.r.poll_timeout() {
                self.node.now = self.node.now.max(next);
                self.node.r.handle_timeout(self.node.now);
                self.collect();
            } else {
                return;
            }
        }
        panic!("the world does not settle");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_transaction_once_every_entry_acked(
        initial in prop::collection::vec((0..RELAYS.len(), 0..POOL), 0..12),
        steps in prop::collection::vec(step(), 0..80),
    ) {
        let mut world = World::new();
        for (relay, t) in initial {
            world.enqueue(relay, t);
        }
        world.collect();
        for step in steps {
            world.apply(step);
        }
        world.settle();
        for relay in &world.relays {
            prop_assert!(relay.queue.is_empty(), "{} still holds {:?}", relay.name, relay.queue);
        }
        for t in 0..POOL {
            let n = world.processed.get(&t).copied().unwrap_or(0);
            if world.queued.contains(&t) {
                prop_assert!(n >= 1, "transaction {} never handed over", t);
            } else {
                prop_assert_eq!(n, 0);
            }
        }
        world.check_counts();
    }
}
