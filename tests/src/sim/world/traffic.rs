//! The traffic of the world: performing what nodes ask for (requests,
//! deliveries, storage), serving requests at relays and nodes, and
//! reporting outcomes back.

use std::net::{IpAddr, Ipv4Addr};

use relay_core::http::HttpOutcome;
use relay_core::outbound;
use relay_core::retriever::{self, Delivery};

use super::{Event, World};
use crate::sim::app;
use crate::sim::network::{InFlight, NetEvent, Party, ReqId};
use crate::sim::node::NodeOutput;
use crate::sim::relay_host;

impl World {
    /// Performs what node `i` asked for.
    pub(super) fn perform(&mut self, i: usize, outputs: Vec<NodeOutput>) -> Result<(), String> {
        for output in outputs {
            match output {
                NodeOutput::Transmit { reply, request } => {
                    let to = *self.names.get(&request.server).ok_or_else(|| {
                        self.fail(format!("request to unknown {}", request.server))
                    })?;
                    let reachable = self.reachable(to);
                    let flight = InFlight {
                        from: i,
                        generation: self.nodes[i].generation,
                        reply,
                        to,
                        request,
                        resolved: false,
                        arriving: false,
                    };
                    self.requests += 1;
                    let online = self.nodes[i].online;
                    let summary = self.trace.is_some().then(|| {
                        format!(
                            "node {i} sends {} {}",
                            flight.request.method, flight.request.target
                        )
                    });
                    let (id, schedule) = self.net.send(flight, online, reachable);
                    if let Some(s) = summary {
                        self.log(|| format!("{s} to {to:?} as {id}: {schedule:?}"));
                    }
                    for (delay, event) in schedule {
                        self.after(delay, Event::Net(event));
                    }
                }
                NodeOutput::Deliver(delivery) => {
                    self.handed_over(i, &delivery)?;
                    self.processing[i] += 1;
                    let generation = self.nodes[i].generation;
                    let delay = self.delay(self.plan.app_delay_ms);
                    self.after(
                        delay,
                        Event::Processed {
                            node: i,
                            generation,
                            delivery,
                        },
                    );
                }
                NodeOutput::PersistDue(machine) => {
                    let generation = self.nodes[i].generation;
                    let delay = self.delay(self.plan.persist_delay_ms);
                    self.after(
                        delay,
                        Event::PersistDone {
                            node: i,
                            generation,
                            machine,
                        },
                    );
                }
                NodeOutput::Sent(event) => self.outbound_event(i, event)?,
                NodeOutput::Received(event) => self.retriever_event(i, event)?,
            }
        }
        Ok(())
    }

    fn handed_over(&mut self, i: usize, delivery: &Delivery) -> Result<(), String> {
        let (origin, markers) =
            app::parse_transaction(&delivery.transaction).map_err(|e| self.fail(e))?;
        let Some(&Party::Node(origin_index)) = self.names.get(&origin) else {
            return Err(self.fail(format!("a delivery from unknown origin {origin}")));
        };
        let Some(&Party::Relay(relay)) = self.names.get(&delivery.relay) else {
            return Err(self.fail(format!("a delivery from unknown relay {}", delivery.relay)));
        };
        let txn_id = delivery
            .txn_id
            .clone()
            .ok_or_else(|| self.fail("a delivery without txn_id"))?;
        self.log(|| {
            format!(
                "node {i} handed over txn {txn_id} of {origin} from relay {relay} entry {}: {markers:?}",
                delivery.entry_id.0
            )
        });
        let r = self.ledger.handed_over(
            i,
            relay,
            delivery.entry_id,
            &origin,
            origin_index,
            &txn_id,
            markers,
        );
        r.map_err(|e| self.fail(e))
    }

    fn outbound_event(&mut self, i: usize, event: outbound::Event) -> Result<(), String> {
        self.log(|| format!("node {i} outbound: {event:?}"));
        match event {
            outbound::Event::FailedPermanently { .. } | outbound::Event::PersistFailed { .. } => {
                Err(self.fail(format!("node {i}: unexpected {event:?}")))
            }
            _ => Ok(()),
        }
    }

    fn retriever_event(&mut self, i: usize, event: retriever::Event) -> Result<(), String> {
        self.log(|| format!("node {i} retriever: {event:?}"));
        match event {
            retriever::Event::Malformed { .. } | retriever::Event::PersistFailed { .. } => {
                Err(self.fail(format!("node {i}: unexpected {event:?}")))
            }
            _ => Ok(()),
        }
    }

    /// Whether `party` takes requests now.
    fn reachable(&self, party: Party) -> bool {
        match party {
            Party::Node(n) => self.nodes[n].up && self.nodes[n].online,
            Party::Relay(r) => self.relays[r].up,
        }
    }

    pub(super) fn network_event(&mut self, event: NetEvent) -> Result<(), String> {
        let (now, unix) = (self.clock.now(), self.clock.unix());
        match event {
            NetEvent::Arrive(id) => {
                let Some(flight) = self.net.arrive(id) else {
                    return Ok(());
                };
                let from = Party::Node(flight.from);
                let sender = &self.nodes[flight.from];
                if !self.reachable(flight.to) || self.net.is_cut(from, flight.to) || !sender.online
                {
                    self.log(|| format!("{id} lost on arrival"));
                    return Ok(());
                }
                let late = flight.resolved || !self.current(flight.from, flight.generation);
                if late {
                    self.ledger.late_arrival();
                }
                let outcome = match flight.to {
                    Party::Relay(r) => {
                        // Each node has an address of its own.
                        let peer = IpAddr::from(Ipv4Addr::from((10u32 << 24) | flight.from as u32));
                        let served = self.relays[r].serve((now, unix), peer, &flight.request);
                        let (outcome, effect) = served;
                        self.log(|| format!("{id} at relay {r} (late: {late}): {effect:?}"));
                        if !matches!(outcome, HttpOutcome::Response { status: 200, .. }) {
                            return Err(self.fail(format!(
                                "relay {r} refused {} {}: {}",
                                flight.request.method,
                                flight.request.target,
                                outcome.describe()
                            )));
                        }
                        if late
                            && let relay_host::Effect::Stored {
                                entry, fresh: true, ..
                            } = effect
                        {
                            self.ledger.late_entry(r, entry);
                        }
                        outcome
                    }
                    Party::Node(n) => {
                        let served = self.nodes[n].serve_send(self.clock.now(), &flight.request);
                        let (outcome, origin, markers) = served.map_err(|e| self.fail(e))?;
                        self.log(|| format!("{id} at node {n} (late: {late}): {markers:?}"));
                        if self.names.get(&origin) != Some(&from) {
                            return Err(
                                self.fail(format!("node {n} got {origin}'s txn from {from:?}"))
                            );
                        }
                        self.ledger.direct(n, flight.from, markers, late);
                        outcome
                    }
                };
                if !late && let Some((delay, answer)) = self.net.answer(id, outcome) {
                    self.after(delay, Event::Net(answer));
                }
                Ok(())
            }
            NetEvent::Answer(id, outcome) => self.resolve(id, outcome),
            NetEvent::GiveUp(id) => self.resolve(id, HttpOutcome::Timeout),
        }
    }

    /// The sender of `id` learns `outcome` (unless it already has one).
    fn resolve(&mut self, id: ReqId, outcome: HttpOutcome) -> Result<(), String> {
        let Some(flight) = self.net.resolve(id) else {
            return Ok(());
        };
        if !self.current(flight.from, flight.generation) {
            return Ok(());
        }
        self.log(|| format!("{id} ends for node {}: {}", flight.from, outcome.describe()));
        let (now, unix) = (self.clock.now(), self.clock.unix());
        let outputs = self.nodes[flight.from].request_ended(now, unix, flight.reply, outcome);
        let outputs = outputs.map_err(|e| self.fail(e))?;
        self.perform(flight.from, outputs)
    }
}
