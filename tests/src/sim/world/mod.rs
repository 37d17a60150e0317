//! The world: nodes, relays and the network on one clock, stepping to the
//! earliest deadline of all parties; `traffic` performs what they ask.

use std::collections::BTreeMap;
use std::time::Duration;

use relay_core::auth::KeyRing;
use relay_core::outbound::OutboundConfig;
use relay_core::retriever::{Delivery, RetrieverConfig};
use relay_core::signing::SigningKey;
use relay_core::{KeyId, ServerName};

use super::app::{self, Marker};
use super::clock::{Clock, Scheduler, secs};
use super::ledger::{Ledger, Stats};
use super::network::{NetEvent, Network, Party};
use super::node::{Machine, Node};
use super::relay_host::RelayHost;
use super::scenario::{Action, Plan};
use crate::rng::Rng;
use relay_store::OutboundStore;

mod traffic;

/// Most steps a run may take before it counts as a livelock.
const MAX_STEPS: u64 = 2_000_000;
/// How long after healing everything must have settled.
const SETTLE: Duration = Duration::from_secs(8 * 3600);
/// How long the world must stay settled before a run ends.
const GRACE: Duration = Duration::from_secs(120);

/// What is scheduled.
#[derive(Debug)]
enum Event {
    Net(NetEvent),
    Plan(Action),
    Heal,
    Restart {
        node: usize,
        generation: u32,
    },
    Processed {
        node: usize,
        generation: u32,
        delivery: Delivery,
    },
    PersistDone {
        node: usize,
        generation: u32,
        machine: Machine,
    },
}

/// What a run that passed saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The oracle's counters.
    pub stats: Stats,
    /// Steps taken.
    pub steps: u64,
    /// Requests sent.
    pub requests: u64,
    /// Virtual time at the end.
    pub duration: Duration,
    /// Some application processed an origin's PDUs out of enqueue order
    /// (across paths; allowed).
    pub reordered: bool,
    /// When the last transaction that came through a relay was processed.
    pub last_relay_handover: Option<Duration>,
}

/// The whole simulated system.
pub struct World {
    plan: Plan,
    clock: Clock,
    events: Scheduler<Event>,
    net: Network,
    nodes: Vec<Node>,
    relays: Vec<RelayHost>,
    names: BTreeMap<ServerName, Party>,
    ledger: Ledger,
    rng: Rng,
    next_seq: Vec<u64>,
    /// Enqueues that came while their node was down, done at restart.
    backlog: Vec<Vec<(usize, Marker)>>,
    /// Crashes waiting for their node to be busy: the downtime.
    armed: Vec<Option<Duration>>,
    /// Deliveries handed to each node's application and not processed.
    processing: Vec<u32>,
    steps: u64,
    requests: u64,
    trace: Option<Vec<String>>,
}

fn node_name(i: usize) -> ServerName {
    let letter = char::from(b'a' + i as u8);
    ServerName::parse(&format!("{letter}.sim")).expect("node name")
}

fn relay_name(i: usize) -> ServerName {
    ServerName::parse(&format!("relay{i}.sim")).expect("relay name")
}

impl World {
    /// A world for `plan`; `trace` keeps a line per step.
    pub fn new(plan: Plan, trace: bool) -> Self {
        let mut rng = Rng::new(plan.seed ^ 0x9e37_79b9_7f4a_7c15);
        let key_id = KeyId::parse("ed25519:sim").expect("key id");
        let node_keys: Vec<SigningKey> = (0..plan.nodes)
            .map(|_| SigningKey::from_seed(key_id.clone(), rng.seed32()))
            .collect();
        let mut ring = KeyRing::default();
        for (i, key) in node_keys.iter().enumerate() {
            ring.pin(node_name(i), key_id.clone(), key.verify_key());
        }
        let mut names = BTreeMap::new();
        let relays: Vec<RelayHost> = (0..plan.relays)
            .map(|i| {
                names.insert(relay_name(i), Party::Relay(i));
                let key = SigningKey::from_seed(key_id.clone(), rng.seed32());
                RelayHost::new(relay_name(i), key, ring.clone())
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, key) in node_keys.into_iter().enumerate() {
            names.insert(node_name(i), Party::Node(i));
            let mut out = OutboundConfig::new(node_name(i), key.clone());
            out.retries_until_assumed_offline = plan.retries_until_assumed_offline;
            out.failures_until_blacklist = plan.failures_until_blacklist;
            out.backoff_cap = plan.backoff_cap;
            out.max_pdus = plan.max_pdus;
            let ret = RetrieverConfig::new(node_name(i), key);
            let mut node = Node::new(i, out, ret, rng.next_u64());
            node.online = !plan.initially_offline[i];
            node.own_relays = plan.own_relays[i].iter().map(|&r| relay_name(r)).collect();
            for &(from, to) in &plan.flows {
                if from == i {
                    let known = plan
                        .known(from, to)
                        .iter()
                        .map(|&r| relay_name(r))
                        .collect();
                    node.known_relays.insert(node_name(to), known);
                }
            }
            nodes.push(node);
        }
        let net = Network::new(plan.net.clone(), rng.next_u64());
        Self {
            clock: Clock::new(),
            events: Scheduler::default(),
            net,
            next_seq: vec![0; nodes.len()],
            backlog: vec![Vec::new(); nodes.len()],
            armed: vec![None; nodes.len()],
            processing: vec![0; nodes.len()],
            nodes,
            relays,
            names,
            ledger: Ledger::default(),
            rng,
            steps: 0,
            requests: 0,
            trace: trace.then(Vec::new),
            plan,
        }
    }

    /// The trace so far (empty unless tracing).
    pub fn take_trace(&mut self) -> Vec<String> {
        self.trace.take().unwrap_or_default()
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("[{}] {}", secs(self.clock.elapsed()), line()));
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> String {
        format!("at {}: {what}", secs(self.clock.elapsed()))
    }

    /// Runs the plan to the end and checks every property.
    pub fn run(&mut self) -> Result<Report, String> {
        for (at, action) in self.plan.events.clone() {
            self.events.at(at, Event::Plan(action));
        }
        self.events.at(self.plan.heal_at, Event::Heal);
        for i in 0..self.nodes.len() {
            self.restart(i)?;
        }
        let limit = self.plan.heal_at + SETTLE;
        self.run_until_idle(limit)?;
        self.check_end()?;
        let logs: Vec<&[app::Processed]> = self.nodes.iter().map(|n| &n.app.log[..]).collect();
        let checked = self.ledger.check(&logs);
        checked.map_err(|e| format!("at {}: {e}", secs(self.clock.elapsed())))?;
        Ok(Report {
            stats: self.ledger.stats,
            steps: self.steps,
            requests: self.requests,
            duration: self.clock.elapsed(),
            reordered: Ledger::reordered(&logs),
            last_relay_handover: logs
                .iter()
                .flat_map(|log| log.iter())
                .filter(|p| matches!(p.path, app::Path::Relay(_)))
                .map(|p| self.clock.offset(p.at))
                .max(),
        })
    }

    fn relay_backlog(&self) -> u64 {
        let mut n = 0;
        for relay in &self.relays {
            for node in &self.nodes {
                n += relay.queued(&node.name);
            }
        }
        n
    }

    fn check_end(&self) -> Result<(), String> {
        for &(from, to) in &self.plan.flows {
            let left = self.nodes[from].queued_for(&self.nodes[to].name);
            if left > 0 {
                return Err(self.fail(format!(
                    "node {from} still has {left} items queued for node {to}"
                )));
            }
        }
        for relay in &self.relays {
            for node in &self.nodes {
                let left = relay.queued(&node.name);
                if left > 0 {
                    return Err(self.fail(format!(
                        "{} still queues {left} entries for {}",
                        relay.name, node.name
                    )));
                }
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let records = node.outbound_store.load().map_err(|e| self.fail(e))?;
            if let Some(r) = records
                .iter()
                .find(|r| !r.items.is_empty() || r.txn.is_some())
            {
                return Err(self.fail(format!("node {i} still persists {r:?}")));
            }
        }
        // Retrievers keep polling their drained relays; anything else must
        // have landed.
        if self.net.in_flight_but_polls() > 0 {
            return Err(self.fail("requests still in flight at the end"));
        }
        Ok(())
    }

    /// The earliest timer of a running machine: (when, node, machine). A
    /// node without a network keeps its retriever paused.
    fn next_timer(&self) -> Option<(Duration, usize, Machine)> {
        let mut best: Option<(Duration, usize, Machine)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.up {
                continue;
            }
            let timers = [
                (node.outbound_timer, Machine::Outbound),
                (
                    node.retriever_timer.filter(|_| node.online),
                    Machine::Retriever,
                ),
            ];
            for (timer, machine) in timers {
                if let Some(t) = timer {
                    let at = self.clock.offset(t).max(self.clock.elapsed());
                    if best.is_none_or(|(b, _, _)| at < b) {
                        best = Some((at, i, machine));
                    }
                }
            }
        }
        best
    }

    /// Whether only the retrievers' periodic polls are left: no relay holds
    /// anything, no sender has work or a timer, and nothing but network
    /// traffic is scheduled.
    fn settled(&self) -> bool {
        let senders_busy = self
            .nodes
            .iter()
            .any(|n| n.up && n.outbound_timer.is_some())
            || self
                .plan
                .flows
                .iter()
                .any(|&(from, to)| self.nodes[from].queued_for(&self.nodes[to].name) > 0);
        !senders_busy
            && self.relay_backlog() == 0
            && self.net.in_flight_but_polls() == 0
            && !self.events.any(|e| !matches!(e, Event::Net(_)))
    }

    /// Steps until nothing is scheduled and no timer is armed, or until the
    /// world has stayed [`settled`](Self::settled) for [`GRACE`] (long
    /// enough for every request still in flight to land).
    fn run_until_idle(&mut self, limit: Duration) -> Result<(), String> {
        let mut settled_since: Option<Duration> = None;
        loop {
            if self.settled() {
                let since = *settled_since.get_or_insert(self.clock.elapsed());
                if self.clock.elapsed() >= since + GRACE {
                    return Ok(());
                }
            } else {
                settled_since = None;
            }
            let event_at = self.events.next_time();
            let timer = self.next_timer();
            let at = match (event_at, timer) {
                (None, None) => return Ok(()),
                (Some(e), Some((t, _, _))) => e.min(t),
                (Some(e), None) => e,
                (None, Some((t, _, _))) => t,
            };
            if at > limit {
                return Err(self.fail(format!(
                    "not quiescent by {}: {} events, timer {timer:?}",
                    secs(limit),
                    self.events.len()
                )));
            }
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(self.fail("too many steps (livelock?)"));
            }
            self.clock.advance_to(at);
            if event_at == Some(at) {
                let (_, event) = self.events.pop().expect("an event is due");
                self.dispatch(event)?;
            } else if let Some((_, node, machine)) = timer {
                self.log(|| format!("node {node} {machine:?} timer"));
                let (now, unix) = (self.clock.now(), self.clock.unix());
                let outputs = self.nodes[node].timeout(now, unix, machine);
                let outputs = outputs.map_err(|e| self.fail(e))?;
                self.perform(node, outputs)?;
            }
            self.fire_armed_crashes();
        }
    }

    /// Crashes the nodes whose armed crash finds them busy.
    fn fire_armed_crashes(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(downtime) = self.armed[i]
                && self.nodes[i].up
                && (self.nodes[i].has_unapplied() || self.processing[i] > 0)
            {
                self.armed[i] = None;
                self.crash(i, downtime);
            }
        }
    }

    fn crash(&mut self, node: usize, downtime: Duration) {
        if !self.nodes[node].up {
            return;
        }
        let loss = self.nodes[node].crash();
        self.log(|| {
            format!(
                "node {node} crashes, down for {}: lost {loss:?}",
                secs(downtime)
            )
        });
        self.ledger.crashed(node, &loss);
        self.processing[node] = 0;
        let generation = self.nodes[node].generation;
        self.after(downtime, Event::Restart { node, generation });
    }

    fn dispatch(&mut self, event: Event) -> Result<(), String> {
        let now = self.clock.now();
        match event {
            Event::Net(net) => self.network_event(net),
            Event::Plan(action) => self.action(action),
            Event::Heal => self.heal(),
            Event::Restart { node, generation } => {
                if self.nodes[node].up || self.nodes[node].generation != generation {
                    return Ok(());
                }
                self.log(|| format!("node {node} restarts"));
                self.restart(node)
            }
            Event::Processed {
                node,
                generation,
                delivery,
            } => {
                if !self.current(node, generation) {
                    return Ok(());
                }
                self.log(|| format!("node {node} processed delivery {:?}", delivery.id));
                self.processing[node] -= 1;
                let Some(&Party::Relay(relay)) = self.names.get(&delivery.relay) else {
                    return Err(self.fail(format!("a delivery from {}", delivery.relay)));
                };
                let outputs = self.nodes[node].processed(now, &delivery, relay);
                let outputs = outputs.map_err(|e| self.fail(e))?;
                self.perform(node, outputs)
            }
            Event::PersistDone {
                node,
                generation,
                machine,
            } => {
                if !self.current(node, generation) {
                    return Ok(());
                }
                let outputs = self.nodes[node].persist_done(now, machine);
                let outputs = outputs.map_err(|e| self.fail(e))?;
                self.perform(node, outputs)
            }
        }
    }

    fn current(&self, node: usize, generation: u32) -> bool {
        self.nodes[node].up && self.nodes[node].generation == generation
    }

    fn after(&mut self, delay: Duration, event: Event) {
        self.events.at(self.clock.elapsed() + delay, event);
    }

    fn delay(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(self.rng.range(lo as usize, hi as usize) as u64)
    }

    fn action(&mut self, action: Action) -> Result<(), String> {
        self.log(|| format!("plan: {action:?}"));
        let now = self.clock.now();
        match action {
            Action::Enqueue { from, to } => {
                let marker = (from, self.next_seq[from]);
                self.next_seq[from] += 1;
                self.ledger.enqueued(marker, to);
                if self.nodes[from].up {
                    self.enqueue(from, to, marker)?;
                } else {
                    self.backlog[from].push((to, marker));
                }
            }
            Action::Online { node, online: true } => {
                let outputs = self.nodes[node].go_online(now);
                self.perform(node, outputs)?;
            }
            Action::Online {
                node,
                online: false,
            } => self.nodes[node].online = false,
            Action::RelayUp { relay, up } => self.relays[relay].up = up,
            Action::PeerAlive { from, to } => {
                let (unix, peer) = (self.clock.unix(), self.nodes[to].name.clone());
                let outputs = self.nodes[from].peer_alive(now, unix, &peer);
                let outputs = outputs.map_err(|e| self.fail(e))?;
                self.perform(from, outputs)?;
            }
            Action::Cut { a, b, cut } => self.net.set_cut(a, b, cut),
            Action::Crash {
                node,
                downtime,
                busy,
            } => {
                if busy {
                    self.armed[node] = Some(downtime);
                } else {
                    self.crash(node, downtime);
                }
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, from: usize, to: usize, marker: Marker) -> Result<(), String> {
        let (now, unix) = (self.clock.now(), self.clock.unix());
        let dest = self.nodes[to].name.clone();
        let outputs = self.nodes[from].enqueue(now, unix, &dest, marker);
        let outputs = outputs.map_err(|e| self.fail(e))?;
        self.perform(from, outputs)
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        let (now, unix) = (self.clock.now(), self.clock.unix());
        let outputs = self.nodes[node]
            .start(now, unix)
            .map_err(|e| self.fail(e))?;
        self.perform(node, outputs)?;
        for (to, marker) in std::mem::take(&mut self.backlog[node]) {
            self.enqueue(node, to, marker)?;
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        self.log(|| "heal: no loss, links mended, relays up, nodes online".into());
        let (now, unix) = (self.clock.now(), self.clock.unix());
        self.net.config = self.net.config.healthy();
        self.net.mend_all();
        for relay in &mut self.relays {
            relay.up = true;
        }
        for i in 0..self.nodes.len() {
            self.armed[i] = None;
            if !self.nodes[i].up {
                self.restart(i)?;
            }
            if !self.nodes[i].online {
                let outputs = self.nodes[i].go_online(now);
                self.perform(i, outputs)?;
            }
        }
        for (from, to) in self.plan.flows.clone() {
            let dest = self.nodes[to].name.clone();
            let outputs = self.nodes[from].peer_alive(now, unix, &dest);
            let outputs = outputs.map_err(|e| self.fail(e))?;
            self.perform(from, outputs)?;
        }
        Ok(())
    }
}
