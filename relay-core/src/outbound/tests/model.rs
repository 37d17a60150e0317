//! Model-based property test: random sequences of enqueues, answers,
//! timeouts, relay changes, peers seen alive and restarts, with the
//! protocol's invariants checked after every output and every step.
//!
//! The driver persists every change synchronously and in order into a
//! [`MemStore`], and a restart rebuilds the machine from it, so the model
//! holds the machine to "an item whose `TxnFinished` was persisted is never
//! sent again".

use crate::epoch::epoch;
use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::*;

const DESTS: [&str; 3] = ["a.example", "b.example", "c.example"];
const RELAYS: [&str; 3] = ["r1.example", "r2.example", "r3.example"];

#[derive(Debug, Clone)]
enum Reply {
    Ok(u16),
    Status(u16),
    Limited(u64),
    Timeout,
    ConnectionFailed,
}

impl Reply {
    fn outcome(&self) -> HttpOutcome {
        match self {
            Self::Ok(code) | Self::Status(code) => status(*code),
            Self::Limited(ms) => limited(*ms),
            Self::Timeout => HttpOutcome::Timeout,
            Self::ConnectionFailed => HttpOutcome::ConnectionFailed("refused".into()),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Enqueue { dest: usize, edu: bool },
    Answer { pick: usize, reply: Reply },
    AnswerAgain { pick: usize },
    Advance { ms: u64 },
    SetRelays { dest: usize, mask: u8 },
    PeerAlive { dest: usize },
    Restart { seed: u8 },
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => prop_oneof![Just(200u16), Just(202)].prop_map(Reply::Ok),
        1 => prop_oneof![Just(400u16), Just(403), Just(404)].prop_map(Reply::Status),
        3 => prop_oneof![Just(408u16), Just(500), Just(502), Just(503)].prop_map(Reply::Status),
        1 => (0u64..120_000).prop_map(Reply::Limited),
        1 => Just(Reply::Timeout),
        1 => Just(Reply::ConnectionFailed),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..DESTS.len(), any::<bool>()).prop_map(|(dest, edu)| Step::Enqueue { dest, edu }),
        6 => (any::<usize>(), reply()).prop_map(|(pick, reply)| Step::Answer { pick, reply }),
        1 => any::<usize>().prop_map(|pick| Step::AnswerAgain { pick }),
        3 => prop_oneof![3 => 0u64..3_000, 1 => 0u64..200_000].prop_map(|ms| Step::Advance { ms }),
        2 => (0..DESTS.len(), 0u8..8).prop_map(|(dest, mask)| Step::SetRelays { dest, mask }),
        1 => (0..DESTS.len()).prop_map(|dest| Step::PeerAlive { dest }),
        1 => any::<u8>().prop_map(|seed| Step::Restart { seed }),
    ]
}

fn model_config() -> impl Strategy<Value = OutboundConfig> {
    (1u32..=3, 2u32..=6, 1usize..=3, 1usize..=3).prop_map(|(offline, blacklist, pdus, edus)| {
        OutboundConfig {
            retries_until_assumed_offline: offline,
            failures_until_blacklist: blacklist,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            max_pdus: pdus,
            max_edus: edus,
            max_queued_items: 1000,
            ..config()
        }
    })
}

/// A request out, as the driver sees it.
#[derive(Debug, Clone)]
struct Out {
    attempt: AttemptId,
    dest: usize,
    target: Target,
    txn: String,
}

/// The reference model, and the driver of the machine under test.
struct World {
    out: Outbound,
    now: Instant,
    unix: UnixMillis,
    store: MemStore,
    restarts: u64,
    relays: [Vec<ServerName>; 3],
    /// Requests of this incarnation not yet answered, and answered ones.
    outstanding: Vec<Out>,
    answered: Vec<AttemptId>,
    /// The relays of each destination's fan-out under way, in order, and
    /// those that accepted.
    fan_out: [Vec<ServerName>; 3],
    accepted: [HashSet<ServerName>; 3],
    /// Items: each has a number `n` in its JSON.
    next_n: u64,
    kind: HashMap<u64, ItemKind>,
    live: HashMap<ItemId, u64>,
    pending: [VecDeque<u64>; 3],
    done: HashMap<u64, u32>,
    /// Every transaction ever started: its items, by number and by ID.
    txn_items: HashMap<String, Vec<u64>>,
    txn_ids: HashMap<String, Vec<ItemId>>,
    item_txn: HashMap<u64, String>,
    /// No attempt before this (from the last failed attempt; `Blocked`
    /// while blacklisted), until the peer is seen alive.
    not_before: [Gate; 3],
}

#[derive(Debug, Clone, Copy, Default)]
enum Gate {
    #[default]
    Open,
    Until(Instant),
    Blocked,
}

fn dest_index(name: &ServerName) -> usize {
    DESTS.iter().position(|d| *d == name.as_str()).unwrap()
}

impl World {
    fn new(config: OutboundConfig) -> Self {
        Self {
            out: Outbound::new(config, [0; 32]),
            now: epoch(),
            unix: T0,
            store: MemStore::default(),
            restarts: 0,
            relays: Default::default(),
            outstanding: Vec::new(),
            answered: Vec::new(),
            fan_out: Default::default(),
            accepted: Default::default(),
            next_n: 1,
            kind: HashMap::new(),
            live: HashMap::new(),
            pending: Default::default(),
            done: HashMap::new(),
            txn_items: HashMap::new(),
            txn_ids: HashMap::new(),
            item_txn: HashMap::new(),
            not_before: Default::default(),
        }
    }

    /// Drains the machine, checking each output against the model, then
    /// fires due timers as a driver would.
    fn drive(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        let mut finished = HashSet::new();
        for round in 0.. {
            loop {
                let timeout = self.out.poll_timeout();
                let Some(output) = self.out.poll_output() else {
                    break;
                };
                assert_eq!(timeout, Some(self.now), "output waits: timer is now");
                self.check_output(&output, &mut finished);
                outputs.push(output);
            }
            match self.out.poll_timeout() {
                Some(at) if at <= self.now => {
                    assert!(round < 1, "timer still due after handle_timeout");
                    self.out.handle_timeout(self.now, self.unix);
                }
                _ => break,
            }
        }
        self.check_state();
        outputs
    }

    fn check_output(&mut self, output: &Output, finished: &mut HashSet<String>) {
        match output {
            Output::Persist { op, change } => {
                self.store.apply(change);
                self.out.handle_persisted(self.now, *op, Ok(()));
                self.check_change(change, finished);
            }
            Output::Transmit {
                attempt,
                destination,
                target,
                request,
            } => {
                let d = dest_index(destination);
                let body: Value = serde_json::from_slice(&request.body).unwrap();
                let txn = request.target.split('/').nth(5).unwrap().to_owned();
                let items = &self.txn_items[&txn];
                for kind in [ItemKind::Pdu, ItemKind::Edu] {
                    let key = if kind == ItemKind::Pdu {
                        "pdus"
                    } else {
                        "edus"
                    };
                    let sent: Vec<u64> = body[key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v["n"].as_u64().unwrap())
                        .collect();
                    let expected: Vec<u64> = items
                        .iter()
                        .copied()
                        .filter(|n| self.kind[n] == kind)
                        .collect();
                    assert_eq!(sent, expected, "same txn ID, same items");
                }
                // Persisted before it is sent.
                let record = &self.store.dests[destination];
                assert_eq!(record.txn.as_ref().unwrap().0.as_str(), txn);
                let others: Vec<&Out> = self.outstanding.iter().filter(|o| o.dest == d).collect();
                match target {
                    Target::Direct => {
                        assert_eq!(request.server, *destination);
                        assert!(others.is_empty(), "one attempt at a time");
                        match self.not_before[d] {
                            Gate::Open => {}
                            Gate::Until(at) => assert!(self.now >= at, "backoff respected"),
                            Gate::Blocked => panic!("sent while blacklisted"),
                        }
                    }
                    Target::Relay(relay) => {
                        assert_eq!(request.server, *relay);
                        assert!(
                            others
                                .iter()
                                .all(|o| o.txn == txn && o.target != Target::Direct)
                        );
                    }
                }
                self.outstanding.push(Out {
                    attempt: *attempt,
                    dest: d,
                    target: target.clone(),
                    txn,
                });
            }
            Output::Event(event) => self.check_event(event, finished),
        }
    }

    fn check_change(&mut self, change: &OutboundChange, finished: &mut HashSet<String>) {
        match change {
            OutboundChange::Enqueued { item, .. } => {
                let n = serde_json::from_slice::<Value>(&item.json).unwrap()["n"]
                    .as_u64()
                    .unwrap();
                assert!(
                    self.live.insert(item.id, n).is_none(),
                    "item IDs are unique"
                );
            }
            OutboundChange::TxnStarted {
                destination,
                txn_id,
                items,
            } => {
                let d = dest_index(destination);
                let ns: Vec<u64> = items.iter().map(|id| self.live[id]).collect();
                let front: Vec<u64> = self.pending[d].iter().copied().take(ns.len()).collect();
                assert_eq!(ns, front, "a transaction takes the front of the queue");
                // The longest prefix within the limits.
                let config = self.out.config();
                let count = |kind| ns.iter().filter(|n| self.kind[*n] == kind).count();
                let (pdus, edus) = (count(ItemKind::Pdu), count(ItemKind::Edu));
                assert!(pdus <= config.max_pdus && edus <= config.max_edus);
                if let Some(next) = self.pending[d].get(ns.len()) {
                    match self.kind[next] {
                        ItemKind::Pdu => assert_eq!(pdus, config.max_pdus, "room for a PDU"),
                        ItemKind::Edu => assert_eq!(edus, config.max_edus, "room for an EDU"),
                        // The model enqueues no whole transactions.
                        ItemKind::Transaction => unreachable!("not generated"),
                    }
                }
                let key = txn_id.as_str().to_owned();
                assert!(!self.txn_items.contains_key(&key), "fresh txn ID");
                for n in &ns {
                    assert!(self.item_txn.insert(*n, key.clone()).is_none());
                }
                self.txn_items.insert(key.clone(), ns);
                self.txn_ids.insert(key, items.clone());
            }
            OutboundChange::TxnFinished { destination, items } => {
                let d = dest_index(destination);
                let ns: Vec<u64> = items.iter().map(|id| self.live[id]).collect();
                let txn = self.item_txn[&ns[0]].clone();
                assert_eq!(self.txn_items[&txn], ns);
                for (n, id) in ns.iter().zip(items) {
                    assert_eq!(self.pending[d].pop_front(), Some(*n), "completed in order");
                    *self.done.entry(*n).or_default() += 1;
                    self.live.remove(id);
                }
                finished.insert(txn);
            }
            OutboundChange::Retry { .. } => {}
        }
    }

    fn check_event(&mut self, event: &Event, finished: &HashSet<String>) {
        match event {
            Event::Delivered {
                destination,
                txn_id,
                items,
                ..
            }
            | Event::FailedPermanently {
                destination,
                txn_id,
                items,
                ..
            } => {
                assert!(finished.contains(txn_id.as_str()), "finish persisted first");
                assert_eq!(self.txn_ids[txn_id.as_str()], *items);
                self.not_before[dest_index(destination)] = Gate::Open;
            }
            Event::AttemptFailed {
                destination,
                txn_id,
                retry_at,
                ..
            } => {
                assert_eq!(self.out.in_flight(destination), Some(txn_id));
                let gate = match retry_at {
                    Some(at) => {
                        assert!(*at > self.now);
                        Gate::Until(*at)
                    }
                    None => Gate::Blocked,
                };
                self.not_before[dest_index(destination)] = gate;
            }
            Event::Queued { item } => {
                assert!(self.live.contains_key(item), "answered once stored");
            }
            Event::PersistFailed { .. } => panic!("nothing fails to persist here"),
            Event::AssumedOffline { .. } | Event::BackOnline { .. } | Event::Blacklisted { .. } => {
            }
        }
    }

    fn check_state(&self) {
        self.out.check_invariants();
        if let Some(at) = self.out.poll_timeout() {
            assert!(at > self.now, "no due timer left behind");
        }
        let mut waiting = false;
        for (d, dest) in DESTS.iter().enumerate() {
            let dest = name(dest);
            let record = self.store.dests.get(&dest);
            let state = self.out.retry_state(&dest);
            assert_eq!(self.out.queued(&dest), self.pending[d].len());
            assert_eq!(record.map_or(0, |r| r.items.len()), self.pending[d].len());
            assert_eq!(
                self.out.in_flight(&dest),
                record.and_then(|r| r.txn.as_ref()).map(|t| &t.0)
            );
            assert_eq!(record.map_or_else(RetryState::default, |r| r.retry), state);
            let out: Vec<&Out> = self.outstanding.iter().filter(|o| o.dest == d).collect();
            for o in &out {
                assert_eq!(
                    Some(o.txn.as_str()),
                    self.out.in_flight(&dest).map(TxnId::as_str)
                );
            }
            if self.out.queued(&dest) > 0 && out.is_empty() && !state.blacklisted {
                waiting = true;
            }
        }
        if waiting {
            assert!(self.out.poll_timeout().is_some(), "work waits for a timer");
        }
    }

    fn enqueue(&mut self, d: usize, edu: bool) {
        let n = self.next_n;
        self.next_n += 1;
        let (kind, json) = if edu {
            (ItemKind::Edu, super::edu(n))
        } else {
            (ItemKind::Pdu, pdu(n))
        };
        self.kind.insert(n, kind);
        self.pending[d].push_back(n);
        self.out
            .handle_enqueue(self.now, self.unix, name(DESTS[d]), kind, json)
            .unwrap();
        let outputs = self.drive();
        assert_eq!(verdicts(&outputs), 0);
    }

    fn answer(&mut self, pick: usize, reply: &Reply) {
        if self.outstanding.is_empty() {
            return;
        }
        let o = self.outstanding.remove(pick % self.outstanding.len());
        self.answered.push(o.attempt);
        let dest = name(DESTS[o.dest]);
        let was_offline = self.out.is_offline(&dest);
        let last = !self.outstanding.iter().any(|x| x.dest == o.dest);
        self.out
            .handle_send_result(self.now, self.unix, o.attempt, reply.outcome());
        let outputs = self.drive();
        let evs: Vec<Event> = events(&outputs);
        let verdict: Vec<&Event> = evs.iter().filter(|e| is_verdict(e)).collect();
        let txn = TxnId::parse(&o.txn).unwrap();
        let is_ok = matches!(reply, Reply::Ok(_));
        match &o.target {
            Target::Direct => {
                let permanent =
                    matches!(reply, Reply::Status(c) if (400..500).contains(c) && *c != 408);
                let relays_out = transmits(&outputs)
                    .into_iter()
                    .filter(|s| s.target != Target::Direct)
                    .count();
                if is_ok {
                    assert!(
                        matches!(verdict[..], [Event::Delivered { via: Via::Direct, txn_id, .. }] if *txn_id == txn)
                    );
                    let back = evs.iter().any(|e| matches!(e, Event::BackOnline { .. }));
                    assert_eq!(back, was_offline);
                    assert!(!self.out.is_offline(&dest));
                } else if permanent {
                    assert!(
                        matches!(verdict[..], [Event::FailedPermanently { txn_id, .. }] if *txn_id == txn)
                    );
                } else if self.out.is_offline(&dest) && !self.relays[o.dest].is_empty() {
                    assert!(verdict.is_empty());
                    self.fan_out[o.dest] = self.relays[o.dest].clone();
                    self.accepted[o.dest].clear();
                    let targets: Vec<Target> =
                        transmits(&outputs).into_iter().map(|s| s.target).collect();
                    let expected: Vec<Target> = self.relays[o.dest]
                        .iter()
                        .cloned()
                        .map(Target::Relay)
                        .collect();
                    assert_eq!(targets, expected, "fan-out to every relay known now");
                } else {
                    assert!(
                        matches!(verdict[..], [Event::AttemptFailed { relays_tried: false, txn_id, .. }] if *txn_id == txn)
                    );
                    assert_eq!(relays_out, 0);
                }
            }
            Target::Relay(relay) => {
                if is_ok {
                    self.accepted[o.dest].insert(relay.clone());
                }
                if !last {
                    assert!(outputs.is_empty(), "the attempt waits for every relay");
                } else if self.accepted[o.dest].is_empty() {
                    assert!(
                        matches!(verdict[..], [Event::AttemptFailed { relays_tried: true, txn_id, .. }] if *txn_id == txn)
                    );
                } else {
                    let expected: Vec<ServerName> = self.fan_out[o.dest]
                        .iter()
                        .filter(|r| self.accepted[o.dest].contains(*r))
                        .cloned()
                        .collect();
                    assert!(
                        matches!(verdict[..], [Event::Delivered { via: Via::Relays(via), txn_id, .. }] if *txn_id == txn && *via == expected)
                    );
                }
            }
        }
    }

    fn answer_again(&mut self, pick: usize) {
        if self.answered.is_empty() {
            return;
        }
        let attempt = self.answered[pick % self.answered.len()];
        self.out
            .handle_send_result(self.now, self.unix, attempt, ok());
        assert!(self.drive().is_empty(), "an answered request is ignored");
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.unix = self.unix.saturating_add_ms(ms);
        self.out.handle_timeout(self.now, self.unix);
        let outputs = self.drive();
        assert_eq!(verdicts(&outputs), 0);
    }

    fn set_relays(&mut self, d: usize, mask: u8) {
        let relays: Vec<ServerName> = (0..RELAYS.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| name(RELAYS[i]))
            .collect();
        self.relays[d] = relays.clone();
        self.out.set_relays(self.now, name(DESTS[d]), relays);
    }

    fn peer_alive(&mut self, d: usize) {
        self.not_before[d] = Gate::Open;
        self.out
            .handle_peer_alive(self.now, self.unix, &name(DESTS[d]));
        let outputs = self.drive();
        assert_eq!(verdicts(&outputs), 0);
        assert!(!self.out.retry_state(&name(DESTS[d])).blacklisted);
    }

    /// The process dies (requests out are lost) and starts again from the
    /// store with a fresh seed, as an adapter draws one from the OS.
    fn restart(&mut self, seed: u8) {
        self.restarts += 1;
        // Every word differs between incarnations, as with OS seeds (the
        // first output of xoshiro256** depends on one word only).
        let mut s = [seed; 32];
        for (i, word) in s.chunks_exact_mut(8).enumerate() {
            let mixed = (self.restarts * 4 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            word.copy_from_slice(&(mixed ^ u64::from(seed)).to_le_bytes());
        }
        let config = self.out.config().clone();
        self.out = Outbound::restore(config.clone(), s, self.now, self.unix, self.store.records());
        for (dest, relays) in DESTS.iter().zip(&self.relays) {
            self.out.set_relays(self.now, name(dest), relays.clone());
        }
        self.outstanding.clear();
        self.answered.clear();
        let latest = self.now + config.backoff_cap;
        for gate in &mut self.not_before {
            if let Gate::Until(at) = gate {
                *at = (*at).min(latest);
            }
        }
        let outputs = self.drive();
        assert_eq!(verdicts(&outputs), 0);
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Enqueue { dest, edu } => self.enqueue(*dest, *edu),
            Step::Answer { pick, reply } => self.answer(*pick, reply),
            Step::AnswerAgain { pick } => self.answer_again(*pick),
            Step::Advance { ms } => self.advance(*ms),
            Step::SetRelays { dest, mask } => self.set_relays(*dest, *mask),
            Step::PeerAlive { dest } => self.peer_alive(*dest),
            Step::Restart { seed } => self.restart(*seed),
        }
    }

    /// Everything succeeds from now on: run until nothing is left.
    fn settle(&mut self) {
        for _ in 0..2_000 {
            for d in 0..DESTS.len() {
                self.peer_alive(d);
            }
            if !self.outstanding.is_empty() {
                self.answer(0, &Reply::Ok(200));
            } else if let Some(at) = self.out.poll_timeout() {
                let ms = at.saturating_duration_since(self.now).as_millis() as u64 + 1;
                self.advance(ms);
            } else {
                break;
            }
        }
        for (dest, pending) in DESTS.iter().zip(&self.pending) {
            assert!(pending.is_empty(), "everything sent to {dest}");
            assert_eq!(self.out.queued(&name(dest)), 0);
        }
        assert!(self.outstanding.is_empty());
        assert_eq!(self.done.len() as u64, self.next_n - 1, "nothing lost");
        assert!(self.done.values().all(|&c| c == 1), "nothing done twice");
        assert!(
            self.store
                .dests
                .values()
                .all(|r| r.items.is_empty() && r.txn.is_none())
        );
    }
}

fn is_verdict(event: &Event) -> bool {
    matches!(
        event,
        Event::Delivered { .. } | Event::FailedPermanently { .. } | Event::AttemptFailed { .. }
    )
}

/// How many transactions ended or attempts failed in `outputs`.
fn verdicts(outputs: &[Output]) -> usize {
    events(outputs).iter().filter(|e| is_verdict(e)).count()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn outbound_keeps_its_promises(
        config in model_config(),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut world = World::new(config);
        for step in &steps {
            world.apply(step);
        }
        world.settle();
    }
}
