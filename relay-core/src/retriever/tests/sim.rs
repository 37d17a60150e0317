//! Test support: a relay made of the real [`Relay`] machine over an
//! in-memory queue, and helpers to read a retriever's outputs.

use crate::epoch::epoch;
use serde_json::{Value, json};

use super::super::*;
use crate::auth::KeyRing;
use crate::http::HttpOutcome;
use crate::id::KeyId;
use crate::relay::{self, Relay, RelayConfig, RequestHead, ServePolicy};
use crate::signing::SigningKey;
use crate::store::QueuedEntry;
use crate::time::UnixMillis;

/// The node under test.
pub(crate) const NODE: &str = "dest.example";

pub(crate) fn name(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(KeyId::parse("ed25519:1").expect("key id"), [seed; 32])
}

/// The node's configuration: poll every 30 s, backoff 2 s to 5 min, window
/// of 100.
pub(crate) fn config() -> RetrieverConfig {
    let mut config = RetrieverConfig::new(name(NODE), key(1));
    config.dedupe_window = 100;
    config
}

/// A transaction from `origin`, made distinct by `n`.
pub(crate) fn txn(origin: &str, n: u64) -> Value {
    json!({"origin": origin, "origin_server_ts": n, "pdus": [{"n": n}], "edus": []})
}

/// A 200 with `body`.
pub(crate) fn ok(body: impl Into<Vec<u8>>) -> HttpOutcome {
    HttpOutcome::Response {
        status: 200,
        body: body.into(),
        retry_after: None,
    }
}

/// A relay's answer carrying `transaction` as entry `entry_id`.
pub(crate) fn entry(entry_id: u64, transaction: &Value, txn_id: Option<&str>) -> HttpOutcome {
    let mut body =
        json!({"transaction": transaction, "entry_id": entry_id, "entries_queued": true});
    if let Some(t) = txn_id {
        body["txn_id"] = json!(t);
    }
    ok(body.to_string())
}

/// A 404, as a relay without the batch drain answers it.
pub(crate) fn not_found() -> HttpOutcome {
    HttpOutcome::Response {
        status: 404,
        body: br#"{"errcode":"M_UNRECOGNIZED","error":"unrecognized request"}"#.to_vec(),
        retry_after: None,
    }
}

/// A relay's answer when nothing is queued.
pub(crate) fn empty() -> HttpOutcome {
    ok(
        r#"{"transaction":{"origin":"","origin_server_ts":0,"pdus":[],"edus":[]},"entries_queued":false}"#,
    )
}

/// The `entry_id` a `relay_txn` request acknowledges.
pub(crate) fn ack_of(request: &OutgoingRequest) -> u64 {
    let body: Value = serde_json::from_slice(&request.body).expect("request body is JSON");
    body["entry_id"].as_u64().expect("entry_id")
}

/// The requests among `outputs`: (attempt, relay, acknowledged entry).
pub(crate) fn transmits(outputs: &[Output]) -> Vec<(AttemptId, ServerName, u64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit {
                attempt,
                relay,
                request,
            } => {
                assert_eq!(&request.server, relay);
                Some((*attempt, relay.clone(), ack_of(request)))
            }
            _ => None,
        })
        .collect()
}

/// The requests among `outputs`.
pub(crate) fn requests(outputs: &[Output]) -> Vec<(AttemptId, OutgoingRequest)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit {
                attempt, request, ..
            } => Some((*attempt, request.clone())),
            _ => None,
        })
        .collect()
}

/// The deliveries among `outputs`.
pub(crate) fn deliveries(outputs: &[Output]) -> Vec<Delivery> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Deliver(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// The persist operations among `outputs`.
pub(crate) fn persists(outputs: &[Output]) -> Vec<(OpId, WindowChange)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Persist { op, change } => Some((*op, change.clone())),
            _ => None,
        })
        .collect()
}

/// The events among `outputs`.
pub(crate) fn events(outputs: &[Output]) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A retriever on virtual time. Unless `batch`, its relays lack the batch
/// drain: [`Node::drain`] answers each batch request 404, as a Dendrite
/// relay does, and returns what follows (its `relay_txn`s).
pub(crate) struct Node {
    pub(crate) r: Retriever,
    pub(crate) now: Instant,
    pub(crate) batch: bool,
}

impl Node {
    /// A fresh node with `relays`, its first timeout handled.
    pub(crate) fn new(config: RetrieverConfig, relays: &[&str]) -> Self {
        Self::restore(config, relays, Vec::new())
    }

    /// A node restored from `seen`, with `relays`, its first timeout handled.
    pub(crate) fn restore(
        config: RetrieverConfig,
        relays: &[&str],
        seen: Vec<Vec<DedupeKey>>,
    ) -> Self {
        let now = epoch();
        let mut r = Retriever::restore(config, [7; 32], seen);
        r.set_relays(now, relays.iter().map(|s| name(s)).collect());
        r.handle_timeout(now);
        Self {
            r,
            now,
            batch: false,
        }
    }

    /// A fresh node with `relays` that have the batch drain.
    pub(crate) fn batching(config: RetrieverConfig, relays: &[&str]) -> Self {
        Self {
            batch: true,
            ..Self::new(config, relays)
        }
    }

    /// Everything queued (batch requests answered 404 unless `batch`).
    pub(crate) fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(output) = self.r.poll_output() {
            match output {
                Output::Transmit {
                    attempt, request, ..
                } if !self.batch && request.method == "POST" => {
                    self.r.handle_response(self.now, attempt, not_found());
                }
                other => out.push(other),
            }
        }
        out
    }

    /// Moves the clock on by `secs` and handles the timeout.
    pub(crate) fn advance(&mut self, secs: f64) -> Vec<Output> {
        self.now += Duration::from_secs_f64(secs);
        self.r.handle_timeout(self.now);
        self.drain()
    }
}

/// A relay: the real [`Relay`] machine over an in-memory queue for
/// [`NODE`], optionally answering as Dendrite does (without `txn_id`).
pub(crate) struct FakeRelay {
    pub(crate) name: ServerName,
    relay: Relay,
    /// The node's queue, oldest first.
    pub(crate) queue: Vec<QueuedEntry>,
    /// Every entry acknowledged, in order.
    pub(crate) acked: Vec<u64>,
    next_entry: u64,
    dendrite: bool,
}

impl FakeRelay {
    pub(crate) fn new(relay_name: &str, first_entry: u64, dendrite: bool) -> Self {
        let mut keys = KeyRing::default();
        keys.pin(
            name(NODE),
            KeyId::parse("ed25519:1").expect("key id"),
            key(1).verify_key(),
        );
        let mut config = RelayConfig::new(name(relay_name), key(2));
        config.serve = ServePolicy::Open;
        config.keys = keys;
        Self {
            name: name(relay_name),
            relay: Relay::new(config),
            queue: Vec::new(),
            acked: Vec::new(),
            next_entry: first_entry,
            dendrite,
        }
    }

    /// Queues `transaction` (its `origin` set to `origin`) for the node.
    pub(crate) fn push(&mut self, origin: &str, txn_id: &str, transaction: &Value) -> u64 {
        let mut transaction = transaction.clone();
        transaction["origin"] = json!(origin);
        let entry_id = self.next_entry;
        self.next_entry += 1;
        self.queue.push(QueuedEntry {
            entry_id: EntryId(entry_id),
            origin: name(origin),
            txn_id: TxnId::parse(txn_id).expect("txn id"),
            transaction: transaction.to_string().into_bytes(),
        });
        entry_id
    }

    /// Serves `request` as a relay does: applies its ack, answers with the
    /// oldest entry left.
    pub(crate) fn serve(&mut self, now: Instant, request: &OutgoingRequest) -> HttpOutcome {
        assert_eq!(request.server, self.name);
        if self.dendrite && request.method == "POST" {
            return not_found();
        }
        let unix = UnixMillis(1_700_000_000_000);
        self.relay.handle_head(
            now,
            unix,
            RequestHead {
                method: request.method.to_owned(),
                target: request.target.clone(),
                authorization: vec![request.authorization.clone()],
                content_length: Some(request.body.len() as u64),
                peer: std::net::IpAddr::from([192, 0, 2, 1]),
                forwarded_for: Vec::new(),
            },
        );
        while let Some(output) = self.relay.poll_output() {
            match output {
                relay::Output::ReadBody { check, .. } => {
                    self.relay.handle_body(now, unix, check.run(&request.body));
                }
                relay::Output::Fetch {
                    op,
                    destination,
                    ack,
                    ..
                } => {
                    assert_eq!(destination, name(NODE));
                    if let Some(ack) = ack.map(|a| a.entry_id.0) {
                        self.queue.retain(|e| e.entry_id.0 != ack);
                        self.acked.push(ack);
                    }
                    let oldest = self.queue.first().cloned();
                    self.relay.handle_fetched(now, op, Ok(oldest));
                }
                relay::Output::Respond { response, .. } => {
                    let mut body = response.body;
                    if self.dendrite && response.status == 200 {
                        let mut value: Value = serde_json::from_slice(&body).expect("JSON");
                        if let Some(o) = value.as_object_mut() {
                            o.remove("txn_id");
                        }
                        body = value.to_string().into_bytes();
                    }
                    return HttpOutcome::Response {
                        status: response.status,
                        body,
                        retry_after: None,
                    };
                }
                relay::Output::FetchBatch {
                    op,
                    destination,
                    acks,
                    take,
                    ..
                } => {
                    assert_eq!(destination, name(NODE));
                    let mut acked = 0;
                    for ack in acks.iter().map(|a| a.entry_id.0) {
                        let before = self.queue.len();
                        self.queue.retain(|e| e.entry_id.0 != ack);
                        acked += (before - self.queue.len()) as u64;
                        // Every acknowledgement sent, as for relay_txn.
                        self.acked.push(ack);
                    }
                    let rows = self.queue.iter().take(take.entries + 1).cloned().collect();
                    let (entries, more) = take.cut(rows);
                    let batch = crate::store::AckBatch {
                        acked,
                        entries,
                        more,
                    };
                    self.relay.handle_fetched_batch(now, op, Ok(batch));
                }
                relay::Output::Store { .. } => panic!("a drain stores nothing"),
                relay::Output::FetchKeys { .. } => panic!("every key is pinned"),
            }
        }
        panic!("the relay did not answer");
    }
}

/// What [`pump`] saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) delivered: Vec<Delivery>,
    pub(crate) events: Vec<Event>,
    pub(crate) changes: Vec<WindowChange>,
}

/// Runs `node` against `relays` with every effect succeeding at once, until
/// nothing is left to do now.
pub(crate) fn pump(node: &mut Node, relays: &mut [FakeRelay]) -> Seen {
    let mut seen = Seen::default();
    for _ in 0..10_000 {
        let Some(output) = node.r.poll_output() else {
            return seen;
        };
        match output {
            Output::Transmit {
                attempt, request, ..
            } => {
                let relay = relays
                    .iter_mut()
                    .find(|r| r.name == request.server)
                    .expect("a known relay");
                let outcome = relay.serve(node.now, &request);
                node.r.handle_response(node.now, attempt, outcome);
            }
            Output::Deliver(d) => {
                node.r.handle_processed(node.now, d.id);
                seen.delivered.push(d);
            }
            Output::Persist { op, change } => {
                node.r.handle_persisted(node.now, op, Ok(()));
                seen.changes.push(change);
            }
            Output::Event(e) => seen.events.push(e),
        }
    }
    panic!("the node does not settle");
}
