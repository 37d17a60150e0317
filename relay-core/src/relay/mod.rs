//! The relay server machine: request in, storage effects out, response back.
//!
//! # Driving a `Relay`
//!
//! The machine is owned by one caller (`&mut self`, no locks inside). The
//! adapter drives it with one loop:
//!
//! 1. Feed an event: [`Relay::handle_request`] for each complete request,
//!    [`Relay::handle_stored`] / [`Relay::handle_fetched`] when a storage
//!    operation it asked for has finished, [`Relay::handle_keys`] when a key
//!    document it asked for has arrived (or not), [`Relay::handle_timeout`]
//!    when the timer fires.
//! 2. Drain [`Relay::poll_output`] until it returns `None`, performing each
//!    [`Output`]: run `Store` / `Fetch` on the storage backend (off the
//!    event loop) and report each result back with the operation's
//!    [`OpId`]; send `FetchKeys`' request and report its outcome; send each
//!    `Respond` to the connection that made the request.
//! 3. Re-arm the timer from [`Relay::poll_timeout`].
//!
//! ```no_run
//! # use relay_core::relay::*;
//! # use relay_core::{Instant, UnixMillis};
//! # fn store(_: &relay_core::store::NewEntry) -> Result<relay_core::store::InsertOutcome, relay_core::store::StoreError> { Ok(relay_core::store::InsertOutcome::Stored(relay_core::EntryId(1))) }
//! # fn send(_: RequestId, _: Response) {}
//! # fn drive(relay: &mut Relay, request: Request) {
//! relay.handle_request(Instant::now(), UnixMillis(1_700_000_000_000), request);
//! while let Some(output) = relay.poll_output() {
//!     match output {
//!         Output::Store { op, entry, quota: _ } => {
//!             let result = store(&entry); // on a blocking pool, in real code
//!             relay.handle_stored(Instant::now(), op, result);
//!         }
//!         Output::Fetch { op, .. } => relay.handle_fetched(Instant::now(), op, Ok(None)),
//!         Output::FetchKeys { op, .. } => {
//!             let unix = UnixMillis(1_700_000_000_000);
//!             relay.handle_keys(Instant::now(), unix, op, relay_core::http::HttpOutcome::Timeout);
//!         }
//!         Output::Respond { request, response } => send(request, response),
//!     }
//! }
//! # }
//! ```
//!
//! All policy lives here: the order of checks (route, size, `X-Matrix`
//! header, body, key, signature, path parameters, permission, content), the
//! serving policy, the `relay_txn` origin check, quotas and limits, and every
//! error of the protocol tables.

mod config;
mod handlers;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use config::{
    DEFAULT_MAX_BODY_BYTES, MAX_EDUS, MAX_PDU_BYTES, MAX_PDUS, RelayConfig, ServePolicy,
};

use crate::auth::KeyCache;
use crate::drive::{IdCounter, LastNow, Outputs};
use crate::error::MatrixError;
use crate::http::{HttpOutcome, OutgoingRequest};
use crate::id::ServerName;
use crate::server_keys;
use crate::store::{Ack, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError};
use crate::time::{Instant, UnixMillis};

/// One HTTP request as the adapter received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, upper case (`GET`, `PUT`).
    pub method: String,
    /// The raw request target (path and query) exactly as received.
    pub target: String,
    /// Every `Authorization` header value, in order.
    pub authorization: Vec<String>,
    /// The body.
    pub body: RequestBody,
}

/// A request body, or the fact that it was over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// The whole body (possibly empty).
    Complete(Vec<u8>),
    /// The body exceeded [`Relay::max_body_bytes`]; the adapter stopped
    /// reading it.
    TooLarge,
}

/// An HTTP response to send. The content type is always
/// `application/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// For 429: the `Retry-After` header, in seconds.
    pub retry_after_secs: Option<u64>,
}

impl Response {
    fn ok(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            body,
            retry_after_secs: None,
        }
    }

    /// The response carrying `e`: its status, JSON body and, for a 429,
    /// `Retry-After`. Also for errors the adapter answers itself (a body
    /// that took too long, a relay shutting down).
    pub fn error(e: &MatrixError) -> Self {
        Self {
            status: e.status(),
            body: e.to_json(),
            retry_after_secs: e.retry_after_ms.map(|ms| ms.div_ceil(1000)),
        }
    }
}

/// Names a request the machine is answering; it comes back in
/// [`Output::Respond`]. Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

/// Names a storage operation; echo it in `handle_stored` / `handle_fetched`.
/// Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(u64);

/// What the machine asks its driver to do.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Store `entry` durably, within `quota`, unless its key is queued or
    /// was acknowledged within `quota.acked` before `entry.received`; then
    /// call [`Relay::handle_stored`] with `op`.
    Store {
        /// Echo this back.
        op: OpId,
        /// What to store.
        entry: NewEntry,
        /// The limits the insert must respect.
        quota: Quota,
    },
    /// Acknowledge (delete) `ack` of `destination` if given, remembering
    /// its key as `ack.keys` says, then read the destination's oldest
    /// entry, and call [`Relay::handle_fetched`] with `op`.
    Fetch {
        /// Echo this back.
        op: OpId,
        /// Whose queue.
        destination: ServerName,
        /// The entry to delete first, with the time of the request.
        ack: Option<Ack>,
    },
    /// Send `request` (`GET /_matrix/key/v2/server` of an origin whose key
    /// is unknown), then call [`Relay::handle_keys`] with `op`. Only with
    /// [`RelayConfig::fetch_keys`].
    FetchKeys {
        /// Echo this back.
        op: OpId,
        /// The unsigned request.
        request: OutgoingRequest,
    },
    /// Send `response` for `request`.
    Respond {
        /// The request being answered.
        request: RequestId,
        /// The answer.
        response: Response,
    },
}

/// What an operation is waiting for.
#[derive(Debug)]
// States are named for what they wait for.
#[allow(clippy::enum_variant_names)]
enum PendingOp {
    AwaitingStore { request: RequestId },
    AwaitingFetch { request: RequestId },
    AwaitingKeys { server: ServerName },
}

impl PendingOp {
    /// The request a store answers.
    fn stored(&self) -> Option<RequestId> {
        match self {
            Self::AwaitingStore { request } => Some(*request),
            _ => None,
        }
    }

    /// The request a fetch answers.
    fn fetched(&self) -> Option<RequestId> {
        match self {
            Self::AwaitingFetch { request } => Some(*request),
            _ => None,
        }
    }

    /// The server whose keys a key fetch brings.
    fn keys_of(&self) -> Option<ServerName> {
        match self {
            Self::AwaitingKeys { server } => Some(server.clone()),
            _ => None,
        }
    }
}

/// Whether a request whose origin's key is unknown may wait for the
/// origin's keys to be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFetch {
    /// Yes, if the configuration and the limits allow it.
    Allowed,
    /// No: they were fetched (or tried) for this request already.
    Tried,
}

/// Most requests held while their origin's keys are fetched; past it, an
/// unknown key is 401 at once.
pub const MAX_HELD_REQUESTS: usize = 1024;
/// How long a server whose keys could not be fetched is not asked again.
pub const KEY_FETCH_RETRY_MS: u64 = 60_000;
/// Most servers remembered as failing to give their keys.
const MAX_FAILED_FETCHES: usize = 10_000;

/// The relay server's request logic. See the [module docs](self) for how to
/// drive it.
#[derive(Debug)]
pub struct Relay {
    /// As given to [`Relay::new`]; never changed.
    config: RelayConfig,
    /// Keys fetched from servers, apart from the configured ones.
    fetched_keys: KeyCache,
    pending: HashMap<OpId, PendingOp>,
    /// Requests waiting for a server's keys.
    awaiting_keys: HashMap<ServerName, Vec<(RequestId, Request)>>,
    held: usize,
    fetch_failed: HashMap<ServerName, UnixMillis>,
    outputs: Outputs<Output>,
    ids: IdCounter,
    last_now: LastNow,
}

impl Relay {
    /// A relay with `config`.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            fetched_keys: KeyCache::default(),
            pending: HashMap::new(),
            awaiting_keys: HashMap::new(),
            held: 0,
            fetch_failed: HashMap::new(),
            outputs: Outputs::default(),
            ids: IdCounter::default(),
            last_now: LastNow::default(),
        }
    }

    /// The configuration, as given to [`Relay::new`].
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// The largest request body to read; past it, pass
    /// [`RequestBody::TooLarge`].
    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// Takes a complete request. Its response comes out of
    /// [`Relay::poll_output`] as [`Output::Respond`] with the returned id,
    /// at once or after the storage operation it needs.
    pub fn handle_request(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        request: Request,
    ) -> RequestId {
        self.last_now.advance(now);
        let id = RequestId(self.fresh_id());
        self.process(unix, id, request, KeyFetch::Allowed);
        id
    }

    /// Reports the outcome of [`Output::FetchKeys`] `op`, and goes on with
    /// the requests that waited for it. An unknown `op` is ignored.
    pub fn handle_keys(&mut self, now: Instant, unix: UnixMillis, op: OpId, outcome: HttpOutcome) {
        self.last_now.advance(now);
        let Some(server) = self.take_pending(op, PendingOp::keys_of) else {
            return;
        };
        let checked = match &outcome {
            HttpOutcome::Response {
                status: 200, body, ..
            } => server_keys::check_document(body, &server, unix).map_err(|e| e.to_string()),
            other => Err(other.describe()),
        };
        match checked {
            Ok(keys) => {
                self.fetch_failed.remove(&server);
                self.fetched_keys.insert(server.clone(), keys, unix);
            }
            Err(_) => {
                if self.fetch_failed.len() >= MAX_FAILED_FETCHES {
                    self.fetch_failed.retain(|_, until| *until > unix);
                }
                if self.fetch_failed.len() < MAX_FAILED_FETCHES {
                    self.fetch_failed
                        .insert(server.clone(), unix.saturating_add_ms(KEY_FETCH_RETRY_MS));
                }
            }
        }
        let Some(held) = self.awaiting_keys.remove(&server) else {
            return;
        };
        self.held -= held.len();
        for (id, request) in held {
            // No second fetch: a key still unknown now is 401.
            self.process(unix, id, request, KeyFetch::Tried);
        }
    }

    fn process(&mut self, unix: UnixMillis, id: RequestId, request: Request, fetch: KeyFetch) {
        let may_fetch = |origin: &ServerName| {
            fetch == KeyFetch::Allowed
                && self.config.fetch_keys
                && self.held < MAX_HELD_REQUESTS
                && self
                    .fetch_failed
                    .get(origin)
                    .is_none_or(|until| *until <= unix)
        };
        let keys = handlers::VerifyKeys {
            configured: &self.config.keys,
            fetched: &self.fetched_keys,
        };
        match handlers::handle(&self.config, &keys, unix, &request, &may_fetch) {
            handlers::Action::Respond(response) => self.respond(id, response),
            handlers::Action::Store(entry) => {
                let op = OpId(self.fresh_id());
                self.pending
                    .insert(op, PendingOp::AwaitingStore { request: id });
                self.outputs.push(Output::Store {
                    op,
                    entry,
                    quota: self.config.quota,
                });
            }
            handlers::Action::Fetch { destination, ack } => {
                let op = OpId(self.fresh_id());
                self.pending
                    .insert(op, PendingOp::AwaitingFetch { request: id });
                let ack = ack.map(|entry_id| Ack {
                    entry_id,
                    at: unix,
                    keys: self.config.quota.acked,
                });
                self.outputs.push(Output::Fetch {
                    op,
                    destination,
                    ack,
                });
            }
            handlers::Action::NeedKeys(server) => {
                self.held += 1;
                if let Some(held) = self.awaiting_keys.get_mut(&server) {
                    held.push((id, request));
                    return;
                }
                let op = OpId(self.fresh_id());
                self.pending.insert(
                    op,
                    PendingOp::AwaitingKeys {
                        server: server.clone(),
                    },
                );
                self.outputs.push(Output::FetchKeys {
                    op,
                    request: OutgoingRequest {
                        server: server.clone(),
                        method: "GET",
                        target: "/_matrix/key/v2/server".to_owned(),
                        authorization: String::new(),
                        body: Vec::new(),
                        max_response_bytes: server_keys::MAX_KEY_DOCUMENT_BYTES,
                    },
                });
                self.awaiting_keys.insert(server, vec![(id, request)]);
            }
        }
    }

    /// Reports the result of [`Output::Store`] `op`. An unknown or
    /// mismatched `op` is ignored.
    pub fn handle_stored(
        &mut self,
        now: Instant,
        op: OpId,
        result: Result<InsertOutcome, StoreError>,
    ) {
        self.last_now.advance(now);
        let Some(request) = self.take_pending(op, PendingOp::stored) else {
            return;
        };
        self.respond(request, handlers::stored_response(result));
    }

    /// Reports the result of [`Output::Fetch`] `op`. An unknown or
    /// mismatched `op` is ignored.
    pub fn handle_fetched(
        &mut self,
        now: Instant,
        op: OpId,
        result: Result<Option<QueuedEntry>, StoreError>,
    ) {
        self.last_now.advance(now);
        let Some(request) = self.take_pending(op, PendingOp::fetched) else {
            return;
        };
        self.respond(request, handlers::fetched_response(result));
    }

    /// The relay keeps no timers; this only records `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now.advance(now);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop()
    }

    /// When to call [`Relay::handle_timeout`]: the last `now` while output
    /// is waiting, so no driver sleeps on pending work; otherwise never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outputs.timeout(self.last_now, || None)
    }

    /// Storage operations issued and not yet reported back.
    pub fn pending_ops(&self) -> usize {
        self.pending.len()
    }

    /// Takes `op` if it waits for what `waits_for` picks out of it; an op
    /// reported as something it does not wait for stays.
    fn take_pending<T>(&mut self, op: OpId, waits_for: fn(&PendingOp) -> Option<T>) -> Option<T> {
        let found = waits_for(self.pending.get(&op)?)?;
        self.pending.remove(&op);
        Some(found)
    }

    fn respond(&mut self, request: RequestId, response: Response) {
        self.outputs.push(Output::Respond { request, response });
    }

    fn fresh_id(&mut self) -> u64 {
        self.ids.fresh()
    }
}
