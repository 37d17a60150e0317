//! Tests of the sender machine on virtual time: unit tables per rule
//! (`rules`), restarts (`restore`), and a model-based property test
//! (`model`). This file holds the harness they share.

mod failures;
mod model;
mod queue;
mod restore;
mod rules;

use crate::epoch::epoch;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::http::HttpOutcome;
use crate::id::KeyId;

/// The wall time the harness starts at.
const T0: UnixMillis = UnixMillis(1_700_000_000_000);

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), [1; 32])
}

/// Sending as origin.example with Dendrite's defaults.
fn config() -> OutboundConfig {
    OutboundConfig::new(name("origin.example"), key())
}

fn pdu(n: u64) -> Vec<u8> {
    format!(r#"{{"type":"m.room.message","n":{n}}}"#).into_bytes()
}

fn edu(n: u64) -> Vec<u8> {
    format!(r#"{{"edu_type":"m.typing","n":{n}}}"#).into_bytes()
}

fn status(code: u16) -> HttpOutcome {
    HttpOutcome::Response {
        status: code,
        body: b"{}".to_vec(),
        retry_after: None,
    }
}

fn ok() -> HttpOutcome {
    status(200)
}

/// A 429 asking for `ms` in its Matrix error body.
fn limited(ms: u64) -> HttpOutcome {
    HttpOutcome::Response {
        status: 429,
        body: format!(r#"{{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":{ms}}}"#).into_bytes(),
        retry_after: None,
    }
}

/// The destination most tests send to.
const DEST: &str = "dest.example";

/// A harness that knows `relays` for [`DEST`].
fn with_relays(config: OutboundConfig, relays: &[&str]) -> Harness {
    let mut h = Harness::new(config);
    let now = h.now;
    h.out
        .set_relays(now, name(DEST), relays.iter().map(|r| name(r)).collect());
    h
}

/// Offline after `n` direct failures.
fn offline_after(n: u32) -> OutboundConfig {
    OutboundConfig {
        retries_until_assumed_offline: n,
        ..config()
    }
}

/// The persisted state: every [`OutboundChange`] applied in order, as a storage
/// backend would.
#[derive(Debug, Default, Clone)]
struct MemStore {
    dests: BTreeMap<ServerName, DestinationRecord>,
}

impl MemStore {
    fn apply(&mut self, change: &OutboundChange) {
        let dest = match change {
            OutboundChange::Enqueued { destination, .. }
            | OutboundChange::TxnStarted { destination, .. }
            | OutboundChange::TxnFinished { destination, .. }
            | OutboundChange::Retry { destination, .. } => destination.clone(),
        };
        let record = self
            .dests
            .entry(dest.clone())
            .or_insert_with(|| DestinationRecord {
                destination: dest.clone(),
                items: Vec::new(),
                txn: None,
                retry: RetryState::default(),
            });
        match change {
            OutboundChange::Enqueued { item, .. } => record.items.push(item.clone()),
            OutboundChange::TxnStarted { txn_id, items, .. } => {
                record.txn = Some((txn_id.clone(), items.clone()));
            }
            OutboundChange::TxnFinished { items, .. } => {
                record.items.retain(|item| !items.contains(&item.id));
                record.txn = None;
            }
            OutboundChange::Retry { state, .. } => record.retry = *state,
        }
        if record.items.is_empty() && record.txn.is_none() && record.retry == RetryState::default()
        {
            self.dests.remove(&dest);
        }
    }

    fn records(&self) -> Vec<DestinationRecord> {
        self.dests.values().cloned().collect()
    }
}

/// A machine on virtual time whose driver persists every change at once.
struct Harness {
    out: Outbound,
    now: Instant,
    unix: UnixMillis,
    store: MemStore,
}

impl Harness {
    fn new(config: OutboundConfig) -> Self {
        Self::with_seed(config, [7; 32])
    }

    fn with_seed(config: OutboundConfig, seed: [u8; 32]) -> Self {
        Self {
            out: Outbound::new(config, seed),
            now: epoch(),
            unix: T0,
            store: MemStore::default(),
        }
    }

    /// Drains every output, persisting changes as they come. Enqueue
    /// answers ([`Event::Queued`]) are left out: the tables list what goes
    /// to the network and to storage, and `queue.rs` checks the answers.
    fn drain(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some(output) = self.out.poll_output() {
            if let Output::Persist { op, change } = &output {
                self.store.apply(change);
                self.out.handle_persisted(self.now, *op, Ok(()));
            }
            if !matches!(output, Output::Event(Event::Queued { .. })) {
                outputs.push(output);
            }
        }
        self.out.check_invariants();
        outputs
    }

    fn enqueue(&mut self, dest: &str, kind: ItemKind, json: Vec<u8>) -> (ItemId, Vec<Output>) {
        let id = self
            .out
            .handle_enqueue(self.now, self.unix, name(dest), kind, json)
            .unwrap();
        (id, self.drain())
    }

    fn pdu(&mut self, dest: &str, n: u64) -> Vec<Output> {
        self.enqueue(dest, ItemKind::Pdu, pdu(n)).1
    }

    fn answer(&mut self, attempt: AttemptId, outcome: HttpOutcome) -> Vec<Output> {
        self.out
            .handle_send_result(self.now, self.unix, attempt, outcome);
        self.drain()
    }

    fn advance(&mut self, by: Duration) -> Vec<Output> {
        self.now += by;
        self.unix = self.unix.saturating_add_ms(by.as_millis() as u64);
        self.out.handle_timeout(self.now, self.unix);
        self.drain()
    }

    /// Sleeps until the machine's timer and fires it.
    fn advance_to_timeout(&mut self) -> Vec<Output> {
        let at = self.out.poll_timeout().expect("a timer");
        self.advance(at.saturating_duration_since(self.now))
    }

    fn peer_alive(&mut self, dest: &str) -> Vec<Output> {
        self.out.handle_peer_alive(self.now, self.unix, &name(dest));
        self.drain()
    }

    /// Restarts from the store, `by` later.
    fn restart(&mut self, by: Duration, seed: [u8; 32]) {
        self.now += by;
        self.unix = self.unix.saturating_add_ms(by.as_millis() as u64);
        let config = self.out.config().clone();
        self.out = Outbound::restore(config, seed, self.now, self.unix, self.store.records());
        self.out.check_invariants();
    }
}

/// A request the machine asked for.
#[derive(Debug, Clone)]
struct Sent {
    attempt: AttemptId,
    target: Target,
    request: crate::http::OutgoingRequest,
}

impl Sent {
    fn body(&self) -> Value {
        serde_json::from_slice(&self.request.body).unwrap()
    }

    /// The txn ID in the request path.
    fn txn(&self) -> String {
        let rest = self
            .request
            .target
            .strip_prefix("/_matrix/federation/v1/")
            .unwrap();
        rest.split('/').nth(1).unwrap().to_owned()
    }

    /// The `n` of every item in the body: PDUs, then EDUs.
    fn ns(&self) -> (Vec<u64>, Vec<u64>) {
        let body = self.body();
        let ns = |key: &str| -> Vec<u64> {
            body[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["n"].as_u64().unwrap())
                .collect()
        };
        (ns("pdus"), ns("edus"))
    }
}

fn transmits(outputs: &[Output]) -> Vec<Sent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit {
                attempt,
                target,
                request,
                ..
            } => Some(Sent {
                attempt: *attempt,
                target: target.clone(),
                request: request.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn events(outputs: &[Output]) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn changes(outputs: &[Output]) -> Vec<OutboundChange> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Persist { change, .. } => Some(change.clone()),
            _ => None,
        })
        .collect()
}

/// Outputs as short names, for tables of expected sequences.
fn kinds(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Transmit {
                target: Target::Direct,
                ..
            } => "transmit direct".to_owned(),
            Output::Transmit {
                target: Target::Relay(r),
                ..
            } => format!("transmit {r}"),
            Output::Persist { change, .. } => match change {
                OutboundChange::Enqueued { .. } => "persist enqueued",
                OutboundChange::TxnStarted { .. } => "persist txn_started",
                OutboundChange::TxnFinished { .. } => "persist txn_finished",
                OutboundChange::Retry { .. } => "persist retry",
            }
            .to_owned(),
            Output::Event(e) => match e {
                Event::Queued { .. } => "queued",
                Event::Delivered { .. } => "delivered",
                Event::FailedPermanently { .. } => "failed_permanently",
                Event::AttemptFailed { .. } => "attempt_failed",
                Event::AssumedOffline { .. } => "assumed_offline",
                Event::BackOnline { .. } => "back_online",
                Event::Blacklisted { .. } => "blacklisted",
                Event::PersistFailed { .. } => "persist_failed",
            }
            .to_owned(),
        })
        .collect()
}

/// The one request in `outputs`.
fn only_transmit(outputs: &[Output]) -> Sent {
    let mut sent = transmits(outputs);
    assert_eq!(sent.len(), 1, "{:?}", kinds(outputs));
    sent.remove(0)
}

/// The `retry_at` of the one `AttemptFailed` in `outputs`.
fn retry_at(outputs: &[Output]) -> Option<Instant> {
    let failed: Vec<Option<Instant>> = events(outputs)
        .into_iter()
        .filter_map(|e| match e {
            Event::AttemptFailed { retry_at, .. } => Some(retry_at),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", kinds(outputs));
    failed[0]
}
