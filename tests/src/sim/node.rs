//! A node: its `Outbound` (sending) and `Retriever` (receiving), each
//! driven exactly by its rustdoc drive rule, their persisted state, the
//! node's `/send` handler and its application.
//!
//! Every `handle_*` call is followed by draining `poll_output` to `None`
//! and re-arming the machine's timer from `poll_timeout`. Effects leave as
//! [`NodeOutput`]s for the world to perform; state changes queue up and
//! are applied to storage in order, one [`Node::persist_done`] at a time,
//! then reported. A crash loses the changes not applied yet.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use relay_core::auth::parse_authorization;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::outbound::{self, ItemId, ItemKind, Outbound, OutboundConfig};
use relay_core::request::percent_decode;
use relay_core::retriever::{self, DedupeKey, Delivery, Retriever, RetrieverConfig};
use relay_core::{Instant, ServerName, TxnId, UnixMillis};
use relay_store::{MemoryOutboundStore, OutboundStore};

use super::app::{self, App, Marker, Path};
use super::network::Reply;
use crate::rng::Rng;

/// Which machine of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Machine {
    /// The sender.
    Outbound,
    /// The recipient.
    Retriever,
}

/// What a node asks the world to do or to know.
#[derive(Debug)]
pub enum NodeOutput {
    /// Send `request`; report its outcome with `reply`.
    Transmit {
        /// Whom to report to.
        reply: Reply,
        /// The request.
        request: OutgoingRequest,
    },
    /// Let the application process `delivery`, then call
    /// [`Node::processed`].
    Deliver(Delivery),
    /// A change of `machine` waits for storage: call [`Node::persist_done`]
    /// after the storage latency.
    PersistDue(Machine),
    /// An `Outbound` event.
    Sent(outbound::Event),
    /// A `Retriever` event.
    Received(retriever::Event),
}

/// What a crash lost.
#[derive(Debug, Default)]
pub struct CrashLoss {
    /// PDUs whose `Enqueued` change was not applied.
    pub unqueued: Vec<Marker>,
    /// PDUs of transactions whose `TxnStarted` was not applied although
    /// the transaction may have been sent: a restart sends them again
    /// under another txn ID.
    pub unstarted: Vec<Marker>,
    /// Transactions the retriever handed over whose `Seen` was not applied:
    /// a restart may hand them over again.
    pub unremembered: Vec<(ServerName, TxnId)>,
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Its index.
    pub index: usize,
    /// Its server name.
    pub name: ServerName,
    /// Whether it has a network.
    pub online: bool,
    /// Whether it runs (false while crashed).
    pub up: bool,
    /// Incremented by each crash; outcomes for an older generation are
    /// dropped.
    pub generation: u32,
    outbound_config: OutboundConfig,
    retriever_config: RetrieverConfig,
    outbound: Option<Outbound>,
    retriever: Option<Retriever>,
    /// When the `Outbound` wants `handle_timeout`.
    pub outbound_timer: Option<Instant>,
    /// When the `Retriever` wants `handle_timeout`.
    pub retriever_timer: Option<Instant>,
    /// The sender's persisted state.
    pub outbound_store: MemoryOutboundStore,
    /// The retriever's persisted window, oldest first.
    pub window_store: Vec<Vec<DedupeKey>>,
    outbound_pending: VecDeque<(outbound::OpId, outbound::OutboundChange)>,
    retriever_pending: VecDeque<(retriever::OpId, retriever::WindowChange)>,
    /// The node's own relays (its retriever drains them).
    pub own_relays: Vec<ServerName>,
    /// The relays it knows for each destination.
    pub known_relays: BTreeMap<ServerName, Vec<ServerName>>,
    /// Its application.
    pub app: App,
    /// Markers of the items the live `Outbound` knows.
    item_markers: BTreeMap<ItemId, Marker>,
    /// Handed over by the live `Retriever`, `Seen` not yet applied.
    unremembered: BTreeSet<(ServerName, TxnId)>,
    seeds: u64,
}

impl Node {
    /// A node that has not started yet.
    pub fn new(
        index: usize,
        outbound_config: OutboundConfig,
        retriever_config: RetrieverConfig,
        seeds: u64,
    ) -> Self {
        Self {
            index,
            name: outbound_config.server_name.clone(),
            online: true,
            up: false,
            generation: 0,
            outbound_config,
            retriever_config,
            outbound: None,
            retriever: None,
            outbound_timer: None,
            retriever_timer: None,
            outbound_store: MemoryOutboundStore::new(),
            window_store: Vec::new(),
            outbound_pending: VecDeque::new(),
            retriever_pending: VecDeque::new(),
            own_relays: Vec::new(),
            known_relays: BTreeMap::new(),
            app: App::default(),
            item_markers: BTreeMap::new(),
            unremembered: BTreeSet::new(),
            seeds,
        }
    }

    /// A machine seed for this generation.
    fn seed(&self, machine: Machine) -> [u8; 32] {
        let salt = (u64::from(self.generation) << 8) | machine as u64;
        Rng::new(self.seeds ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)).seed32()
    }

    /// Starts (or restarts) the node: both machines are rebuilt from what
    /// was persisted.
    pub fn start(&mut self, now: Instant, unix: UnixMillis) -> Result<Vec<NodeOutput>, String> {
        let records = self
            .outbound_store
            .load()
            .map_err(|e| format!("outbound store load: {e}"))?;
        self.item_markers.clear();
        for record in &records {
            for item in &record.items {
                self.item_markers.insert(item.id, item_marker(&item.json)?);
            }
        }
        let mut out = Outbound::restore(
            self.outbound_config.clone(),
            self.seed(Machine::Outbound),
            now,
            unix,
            records,
        );
        for (destination, relays) in &self.known_relays {
            out.set_relays(now, destination.clone(), relays.clone());
        }
        let mut ret = Retriever::restore(
            self.retriever_config.clone(),
            self.seed(Machine::Retriever),
            self.window_store.clone(),
        );
        ret.set_relays(now, self.own_relays.clone());
        self.outbound = Some(out);
        self.retriever = Some(ret);
        self.up = true;
        let mut outputs = Vec::new();
        self.drain_outbound(&mut outputs)?;
        self.drain_retriever(&mut outputs);
        Ok(outputs)
    }

    /// The node crashes: its machines, requests in flight, deliveries being
    /// processed and changes not yet applied are gone.
    pub fn crash(&mut self) -> CrashLoss {
        let mut loss = CrashLoss::default();
        for (_, change) in self.outbound_pending.drain(..) {
            match change {
                outbound::OutboundChange::Enqueued { item, .. } => {
                    if let Some(m) = self.item_markers.get(&item.id) {
                        loss.unqueued.push(*m);
                    }
                }
                outbound::OutboundChange::TxnStarted { items, .. } => loss
                    .unstarted
                    .extend(items.iter().filter_map(|id| self.item_markers.get(id))),
                _ => {}
            }
        }
        self.retriever_pending.clear();
        loss.unremembered = std::mem::take(&mut self.unremembered).into_iter().collect();
        self.outbound = None;
        self.retriever = None;
        self.outbound_timer = None;
        self.retriever_timer = None;
        self.up = false;
        self.generation += 1;
        loss
    }

    /// The application queues PDU `marker` for `destination`.
    pub fn enqueue(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        destination: &ServerName,
        marker: Marker,
    ) -> Result<Vec<NodeOutput>, String> {
        let json = app::pdu(marker, &self.name, destination);
        let out = self.outbound.as_mut().ok_or("enqueue on a crashed node")?;
        out.handle_enqueue(now, unix, destination.clone(), ItemKind::Pdu, json)
            .map_err(|e| format!("enqueue refused: {e}"))?;
        let mut outputs = Vec::new();
        self.drain_outbound(&mut outputs)?;
        Ok(outputs)
    }

    /// The application saw `destination` alive.
    pub fn peer_alive(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        destination: &ServerName,
    ) -> Result<Vec<NodeOutput>, String> {
        let mut outputs = Vec::new();
        if let Some(out) = self.outbound.as_mut() {
            out.handle_peer_alive(now, unix, destination);
            self.drain_outbound(&mut outputs)?;
        }
        Ok(outputs)
    }

    /// The node's network comes back: the retriever is told.
    pub fn go_online(&mut self, now: Instant) -> Vec<NodeOutput> {
        self.online = true;
        let mut outputs = Vec::new();
        if let Some(ret) = self.retriever.as_mut() {
            ret.handle_online(now);
            self.drain_retriever(&mut outputs);
        }
        outputs
    }

    /// A timer fired.
    pub fn timeout(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        machine: Machine,
    ) -> Result<Vec<NodeOutput>, String> {
        let mut outputs = Vec::new();
        match machine {
            Machine::Outbound => {
                if let Some(out) = self.outbound.as_mut() {
                    out.handle_timeout(now, unix);
                    self.drain_outbound(&mut outputs)?;
                }
            }
            Machine::Retriever => {
                if let Some(ret) = self.retriever.as_mut() {
                    ret.handle_timeout(now);
                    self.drain_retriever(&mut outputs);
                }
            }
        }
        Ok(outputs)
    }

    /// A request of this node ended with `outcome`.
    pub fn request_ended(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        reply: Reply,
        outcome: HttpOutcome,
    ) -> Result<Vec<NodeOutput>, String> {
        let mut outputs = Vec::new();
        match reply {
            Reply::Outbound(attempt) => {
                if let Some(out) = self.outbound.as_mut() {
                    out.handle_send_result(now, unix, attempt, outcome);
                    self.drain_outbound(&mut outputs)?;
                }
            }
            Reply::Retriever(attempt) => {
                if let Some(ret) = self.retriever.as_mut() {
                    ret.handle_response(now, attempt, outcome);
                    self.drain_retriever(&mut outputs);
                }
            }
        }
        Ok(outputs)
    }

    /// The application processed `delivery`, which came through relay
    /// `relay` (through its idempotent transaction handling); the retriever
    /// is told.
    pub fn processed(
        &mut self,
        now: Instant,
        delivery: &Delivery,
        relay: usize,
    ) -> Result<Vec<NodeOutput>, String> {
        let (origin, markers) = app::parse_transaction(&delivery.transaction)?;
        if origin != delivery.origin {
            return Err(format!(
                "delivery says origin {} but the transaction says {origin}",
                delivery.origin
            ));
        }
        let txn_id = delivery
            .txn_id
            .as_ref()
            .ok_or("a delivery from this project's relay lacks its txn_id")?;
        self.app
            .process(Path::Relay(relay), &origin, txn_id, markers, now)?;
        let mut outputs = Vec::new();
        if let Some(ret) = self.retriever.as_mut() {
            ret.handle_processed(now, delivery.id);
            self.drain_retriever(&mut outputs);
        }
        Ok(outputs)
    }

    /// Storage finished the oldest change of `machine`: it is applied, and
    /// reported.
    pub fn persist_done(
        &mut self,
        now: Instant,
        machine: Machine,
    ) -> Result<Vec<NodeOutput>, String> {
        let mut outputs = Vec::new();
        match machine {
            Machine::Outbound => {
                let (op, change) = self
                    .outbound_pending
                    .pop_front()
                    .ok_or("no outbound change pending")?;
                self.outbound_store
                    .apply(std::slice::from_ref(&change))
                    .map_err(|e| format!("the outbound store refused {change:?}: {e}"))?;
                // Decided before the drain, which schedules the next change
                // itself if the queue was empty.
                if !self.outbound_pending.is_empty() {
                    outputs.push(NodeOutput::PersistDue(Machine::Outbound));
                }
                if let Some(out) = self.outbound.as_mut() {
                    out.handle_persisted(now, op, Ok(()));
                    self.drain_outbound(&mut outputs)?;
                }
            }
            Machine::Retriever => {
                let (op, change) = self
                    .retriever_pending
                    .pop_front()
                    .ok_or("no retriever change pending")?;
                self.apply_window(change);
                if !self.retriever_pending.is_empty() {
                    outputs.push(NodeOutput::PersistDue(Machine::Retriever));
                }
                if let Some(ret) = self.retriever.as_mut() {
                    ret.handle_persisted(now, op, Ok(()));
                    self.drain_retriever(&mut outputs);
                }
            }
        }
        Ok(outputs)
    }

    fn apply_window(&mut self, change: retriever::WindowChange) {
        match change {
            retriever::WindowChange::Seen(keys) => {
                for key in &keys {
                    if let DedupeKey::Txn(origin, txn_id) = key {
                        self.unremembered.remove(&(origin.clone(), txn_id.clone()));
                    }
                }
                self.window_store.push(keys);
            }
            retriever::WindowChange::Forget(keys) => {
                if let Some(pos) = self.window_store.iter().position(|k| *k == keys) {
                    self.window_store.remove(pos);
                }
            }
        }
    }

    /// Serves `PUT /_matrix/federation/v1/send/{txnId}` (the node is up
    /// and online): the transaction goes to the application, idempotent
    /// on (origin, txn ID), and the answer is 200.
    pub fn serve_send(
        &mut self,
        now: Instant,
        request: &OutgoingRequest,
    ) -> Result<(HttpOutcome, ServerName, Vec<Marker>), String> {
        let txn = request
            .target
            .strip_prefix("/_matrix/federation/v1/send/")
            .and_then(percent_decode)
            .and_then(|t| TxnId::parse(&t).ok())
            .ok_or_else(|| format!("not a /send request: {} {}", request.method, request.target))?;
        let claimed = parse_authorization([request.authorization.as_str()], &self.name)
            .map_err(|e| format!("bad X-Matrix on /send: {e}"))?;
        let (origin, markers) = app::parse_transaction(&request.body)?;
        if origin != claimed.origin {
            return Err(format!(
                "/send from {} claims origin {origin}",
                claimed.origin
            ));
        }
        self.app
            .process(Path::Direct, &origin, &txn, markers.clone(), now)?;
        let answer = HttpOutcome::Response {
            status: 200,
            body: br#"{"pdus":{}}"#.to_vec(),
            retry_after: None,
        };
        Ok((answer, origin, markers))
    }

    /// Whether a state change waits for storage.
    pub fn has_unapplied(&self) -> bool {
        !self.outbound_pending.is_empty() || !self.retriever_pending.is_empty()
    }

    /// Items queued for `destination` in the live `Outbound`.
    pub fn queued_for(&self, destination: &ServerName) -> usize {
        self.outbound.as_ref().map_or(0, |o| o.queued(destination))
    }

    /// Drains the `Outbound` (drive rule step 2) and re-arms its timer
    /// (step 3).
    fn drain_outbound(&mut self, outputs: &mut Vec<NodeOutput>) -> Result<(), String> {
        let Some(out) = self.outbound.as_mut() else {
            return Ok(());
        };
        while let Some(output) = out.poll_output() {
            match output {
                outbound::Output::Transmit {
                    attempt, request, ..
                } => outputs.push(NodeOutput::Transmit {
                    reply: Reply::Outbound(attempt),
                    request,
                }),
                outbound::Output::Persist { op, change } => {
                    if let outbound::OutboundChange::Enqueued { item, .. } = &change {
                        self.item_markers.insert(item.id, item_marker(&item.json)?);
                    }
                    if self.outbound_pending.is_empty() {
                        outputs.push(NodeOutput::PersistDue(Machine::Outbound));
                    }
                    self.outbound_pending.push_back((op, change));
                }
                outbound::Output::Event(event) => outputs.push(NodeOutput::Sent(event)),
            }
        }
        self.outbound_timer = out.poll_timeout();
        Ok(())
    }

    /// Drains the `Retriever` and re-arms its timer.
    fn drain_retriever(&mut self, outputs: &mut Vec<NodeOutput>) {
        let Some(ret) = self.retriever.as_mut() else {
            return;
        };
        while let Some(output) = ret.poll_output() {
            match output {
                retriever::Output::Transmit {
                    attempt, request, ..
                } => outputs.push(NodeOutput::Transmit {
                    reply: Reply::Retriever(attempt),
                    request,
                }),
                retriever::Output::Deliver(delivery) => {
                    if let Some(txn_id) = &delivery.txn_id {
                        self.unremembered
                            .insert((delivery.origin.clone(), txn_id.clone()));
                    }
                    outputs.push(NodeOutput::Deliver(delivery));
                }
                retriever::Output::Persist { op, change } => {
                    if self.retriever_pending.is_empty() {
                        outputs.push(NodeOutput::PersistDue(Machine::Retriever));
                    }
                    self.retriever_pending.push_back((op, change));
                }
                retriever::Output::Event(event) => outputs.push(NodeOutput::Received(event)),
            }
        }
        self.retriever_timer = ret.poll_timeout();
    }
}

/// The marker of a queued item's JSON.
fn item_marker(json: &[u8]) -> Result<Marker, String> {
    serde_json::from_slice(json)
        .ok()
        .as_ref()
        .and_then(app::marker_of)
        .ok_or_else(|| format!("item without a marker: {}", String::from_utf8_lossy(json)))
}
