//! The simulated network: every request a node sends goes through it, with
//! seeded latency, loss, late delivery and partitions.
//!
//! A request either reaches its server (which then processes it) or is
//! lost; the answer either reaches the sender or is lost. The sender's HTTP
//! client gives up after `timeout` and reports [`HttpOutcome::Timeout`],
//! so a lost answer looks the same as a lost request to the sender, though
//! the server did the work. A *late* request reaches its server after its
//! sender stopped waiting (timed out, or crashed); its answer goes nowhere.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use relay_core::http::{HttpOutcome, OutgoingRequest};

use crate::rng::Rng;

/// A party on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Party {
    /// Node by index.
    Node(usize),
    /// Relay by index.
    Relay(usize),
}

/// Which machine of a node sent a request, and its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The node's `Outbound`.
    Outbound(relay_core::outbound::AttemptId),
    /// The node's `Retriever`.
    Retriever(relay_core::retriever::AttemptId),
}

/// Names a request on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(u64);

impl std::fmt::Display for ReqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the network schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// The request reaches its server.
    Arrive(ReqId),
    /// The server's answer (or a connection failure) reaches the sender.
    Answer(ReqId, HttpOutcome),
    /// The sender's client stops waiting.
    GiveUp(ReqId),
}

/// The network's behaviour; probabilities are in parts per thousand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// One-way latency, inclusive range in milliseconds.
    pub latency_ms: (u64, u64),
    /// Requests lost, per mille.
    pub request_loss: u64,
    /// Answers lost, per mille.
    pub answer_loss: u64,
    /// Requests that arrive after the sender's timeout, per mille.
    pub late: u64,
    /// Of the requests to an unreachable party, those refused at once
    /// (`ConnectionFailed`) rather than left to time out, per mille.
    pub refused: u64,
    /// The senders' HTTP timeout.
    pub timeout: Duration,
}

impl NetConfig {
    /// A network that loses nothing and delivers nothing late.
    pub fn healthy(&self) -> Self {
        Self {
            request_loss: 0,
            answer_loss: 0,
            late: 0,
            ..self.clone()
        }
    }
}

/// A request on its way.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The sending node.
    pub from: usize,
    /// The sender's generation (it changes when the node restarts).
    pub generation: u32,
    /// Whom to report to.
    pub reply: Reply,
    /// The server it is for.
    pub to: Party,
    /// The request.
    pub request: OutgoingRequest,
    /// The sender has its outcome (an answer or a timeout).
    pub resolved: bool,
    /// It has yet to arrive (or be lost on the way).
    pub arriving: bool,
}

/// The network: its configuration, its partitions, and what is in flight.
#[derive(Debug)]
pub struct Network {
    /// How it behaves now.
    pub config: NetConfig,
    rng: Rng,
    cuts: BTreeSet<(Party, Party)>,
    flights: BTreeMap<ReqId, InFlight>,
    next_id: u64,
}

/// The events to schedule for a request, with their delays.
pub type Schedule = Vec<(Duration, NetEvent)>;

impl Network {
    /// A network behaving as `config`, its randomness from `seed`.
    pub fn new(config: NetConfig, seed: u64) -> Self {
        Self {
            config,
            rng: Rng::new(seed),
            cuts: BTreeSet::new(),
            flights: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn pair(a: Party, b: Party) -> (Party, Party) {
        if a <= b { (a, b) } else { (b, a) }
    }

    /// Cuts (or mends) the link between `a` and `b`.
    pub fn set_cut(&mut self, a: Party, b: Party, cut: bool) {
        if cut {
            self.cuts.insert(Self::pair(a, b));
        } else {
            self.cuts.remove(&Self::pair(a, b));
        }
    }

    /// Mends every link.
    pub fn mend_all(&mut self) {
        self.cuts.clear();
    }

    /// Whether the link between `a` and `b` is cut.
    pub fn is_cut(&self, a: Party, b: Party) -> bool {
        self.cuts.contains(&Self::pair(a, b))
    }

    /// A one-way latency.
    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.config.latency_ms;
        let ms = self.rng.range(lo as usize, hi as usize) as u64;
        // Sub-millisecond jitter keeps events apart.
        Duration::from_millis(ms) + Duration::from_micros(self.rng.below(1000) as u64)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        per_mille > 0 && self.rng.chance(per_mille, 1000)
    }

    /// Sends `flight`. `sender_online`: the sender has a network;
    /// `reachable`: the server is up and online. Returns the events to
    /// schedule, by delay from now.
    pub fn send(
        &mut self,
        flight: InFlight,
        sender_online: bool,
        reachable: bool,
    ) -> (ReqId, Schedule) {
        self.next_id += 1;
        let id = ReqId(self.next_id);
        let from = Party::Node(flight.from);
        let to = flight.to;
        let mut flight = flight;
        let mut events = Vec::new();
        let timeout = self.config.timeout;
        if !sender_online {
            events.push((
                Duration::from_millis(1),
                NetEvent::Answer(id, HttpOutcome::ConnectionFailed("no network".into())),
            ));
        } else if !reachable || self.is_cut(from, to) {
            if self.chance(self.config.refused) {
                let failure = HttpOutcome::ConnectionFailed("unreachable".into());
                events.push((self.latency(), NetEvent::Answer(id, failure)));
            } else {
                events.push((timeout, NetEvent::GiveUp(id)));
            }
        } else if self.chance(self.config.request_loss) {
            events.push((timeout, NetEvent::GiveUp(id)));
        } else {
            let mut latency = self.latency();
            if self.chance(self.config.late) {
                let extra = Duration::from_millis(1 + self.rng.below(60_000) as u64);
                latency = timeout + extra;
            }
            flight.arriving = true;
            events.push((latency, NetEvent::Arrive(id)));
            events.push((timeout, NetEvent::GiveUp(id)));
        }
        self.flights.insert(id, flight);
        (id, events)
    }

    /// `id` reached its server: returns it, and marks it arrived.
    pub fn arrive(&mut self, id: ReqId) -> Option<InFlight> {
        let flight = self.flights.get_mut(&id)?;
        flight.arriving = false;
        let copy = flight.clone();
        self.forget_if_done(id);
        Some(copy)
    }

    /// The server answered `id` with `outcome`: the answer to schedule, if
    /// it is not lost.
    pub fn answer(&mut self, id: ReqId, outcome: HttpOutcome) -> Option<(Duration, NetEvent)> {
        if self.chance(self.config.answer_loss) {
            return None;
        }
        Some((self.latency(), NetEvent::Answer(id, outcome)))
    }

    /// The sender's outcome of `id` is now known: returns the request if
    /// this is the first outcome (later ones are dropped).
    pub fn resolve(&mut self, id: ReqId) -> Option<InFlight> {
        let flight = self.flights.get_mut(&id)?;
        if flight.resolved {
            return None;
        }
        flight.resolved = true;
        let copy = flight.clone();
        self.forget_if_done(id);
        Some(copy)
    }

    fn forget_if_done(&mut self, id: ReqId) {
        if self
            .flights
            .get(&id)
            .is_some_and(|f| f.resolved && !f.arriving)
        {
            self.flights.remove(&id);
        }
    }

    /// Requests still tracked (in flight, or awaiting their outcome).
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Requests on their way other than retrievers' polls (`relay_txn`
    /// and the batch drain).
    pub fn in_flight_but_polls(&self) -> usize {
        self.flights
            .values()
            .filter(|f| {
                let target = &f.request.target;
                !(target.contains("/relay_txn/") || target.contains("/relay_txns/"))
            })
            .count()
    }
}
