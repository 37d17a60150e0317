//! A relay: the real [`Relay`] machine over a [`MemoryStore`], its storage
//! operations performed synchronously as the machine asks for them.

use std::net::IpAddr;

use relay_core::auth::KeyRing;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::relay::{Output, Relay, RelayConfig, RequestHead, ServePolicy};
use relay_core::signing::SigningKey;
use relay_core::{EntryId, Instant, ServerName, TxnId, UnixMillis};
use relay_store::{InsertOutcome, MemoryStore, QueueStore};

/// What serving one request did to the relay's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A `send_relay` stored `txn_id` of `origin` for `destination` as
    /// `entry` (`fresh` false: it was queued already).
    Stored {
        /// The sender.
        origin: ServerName,
        /// Whom it is for.
        destination: ServerName,
        /// The sender's txn ID.
        txn_id: TxnId,
        /// Its entry.
        entry: EntryId,
        /// Whether the insert made a new entry.
        fresh: bool,
    },
    /// A `relay_txn` acknowledged `ack` (if any) and handed out `next`.
    Fetched {
        /// Whose queue.
        destination: ServerName,
        /// The entry acknowledged.
        ack: Option<EntryId>,
        /// The entry handed out.
        next: Option<EntryId>,
    },
    /// A batch drain acknowledged `acks` and handed out `handed`.
    FetchedBatch {
        /// Whose queue.
        destination: ServerName,
        /// The entries acknowledged (listed; some may have been gone).
        acks: Vec<EntryId>,
        /// The entries handed out, in order.
        handed: Vec<EntryId>,
    },
    /// Nothing stored or read (an error answer, or a `send_relay` of a
    /// transaction acknowledged already).
    None,
}

/// One relay server.
#[derive(Debug)]
pub struct RelayHost {
    /// Its server name.
    pub name: ServerName,
    machine: Relay,
    store: MemoryStore,
    /// Whether it is reachable (a relay that is down keeps its queue).
    pub up: bool,
}

impl RelayHost {
    /// An open relay named `name` that knows the keys in `keys`.
    pub fn new(name: ServerName, key: SigningKey, keys: KeyRing) -> Self {
        let mut config = RelayConfig::new(name.clone(), key);
        config.serve = ServePolicy::Open;
        config.keys = keys;
        Self {
            name,
            machine: Relay::new(config),
            store: MemoryStore::new(),
            up: true,
        }
    }

    /// Entries queued for `destination`.
    pub fn queued(&self, destination: &ServerName) -> u64 {
        self.store.queued(destination).unwrap_or(u64::MAX)
    }

    /// Serves `request`, sent from `peer`, by the machine's drive rule
    /// (handle its head, drain every output, reading and checking the body
    /// and performing storage at once, re-arm the timer) and returns the
    /// response and what it did.
    pub fn serve(
        &mut self,
        (now, unix): (Instant, UnixMillis),
        peer: IpAddr,
        request: &OutgoingRequest,
    ) -> (HttpOutcome, Effect) {
        let id = self.machine.handle_head(
            now,
            unix,
            RequestHead {
                method: request.method.to_owned(),
                target: request.target.clone(),
                authorization: vec![request.authorization.clone()],
                content_length: Some(request.body.len() as u64),
                peer,
                forwarded_for: Vec::new(),
            },
        );
        let mut effect = Effect::None;
        let mut answer = None;
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::ReadBody {
                    request: r, check, ..
                } => {
                    assert_eq!(r, id, "a relay read another request's body");
                    self.machine
                        .handle_body(now, unix, check.run(&request.body));
                }
                Output::Store { op, entry, quota } => {
                    let (origin, destination, txn_id) = (
                        entry.origin.clone(),
                        entry.destination.clone(),
                        entry.txn_id.clone(),
                    );
                    let result = self.store.insert(entry, &quota);
                    if let Ok(InsertOutcome::Stored(e) | InsertOutcome::Duplicate(e)) = &result {
                        effect = Effect::Stored {
                            origin,
                            destination,
                            txn_id,
                            entry: *e,
                            fresh: matches!(result, Ok(InsertOutcome::Stored(_))),
                        };
                    }
                    self.machine.handle_stored(now, op, result);
                }
                Output::Fetch {
                    op,
                    destination,
                    ack,
                    expired_before,
                } => {
                    let result = self
                        .store
                        .ack_and_next_unexpired(&destination, ack, expired_before)
                        .map(|found| found.next);
                    if let Ok(next) = &result {
                        effect = Effect::Fetched {
                            destination,
                            ack: ack.map(|a| a.entry_id),
                            next: next.as_ref().map(|e| e.entry_id),
                        };
                    }
                    self.machine.handle_fetched(now, op, result);
                }
                Output::FetchBatch {
                    op,
                    destination,
                    acks,
                    take,
                    expired_before,
                } => {
                    let result =
                        self.store
                            .ack_and_next_batch(&destination, &acks, take, expired_before);
                    if let Ok(batch) = &result {
                        effect = Effect::FetchedBatch {
                            destination,
                            acks: acks.iter().map(|a| a.entry_id).collect(),
                            handed: batch.entries.iter().map(|e| e.entry_id).collect(),
                        };
                    }
                    self.machine.handle_fetched_batch(now, op, result);
                }
                Output::FetchKeys { op, check, .. } => {
                    // Keys are pinned, and fetching is off: never asked.
                    let failed =
                        HttpOutcome::ConnectionFailed("the simulation fetches no keys".into());
                    self.machine
                        .handle_keys(now, unix, op, check.run(unix, &failed));
                }
                Output::Respond { request, response } => {
                    assert_eq!(request, id, "a relay answered another request");
                    answer = Some(HttpOutcome::Response {
                        status: response.status,
                        body: response.body,
                        retry_after: response.retry_after_secs.map(|s| s.to_string()),
                    });
                }
            }
        }
        // The relay keeps no timers: with its output drained there is
        // nothing to re-arm.
        assert_eq!(self.machine.poll_timeout(), None, "a relay armed a timer");
        assert_eq!(self.machine.pending_ops(), 0, "a relay left an operation");
        let answer = answer.expect("the relay answered the request");
        (answer, effect)
    }
}
