//! The relay server machine: a request's head in, the check of its body
//! out, storage effects out, response back.
//!
//! # Driving a `Relay`
//!
//! The machine is owned by one caller (`&mut self`, no locks inside), and
//! does O(1) work per event; what costs time in proportion to a body or a
//! key document (JSON, canonical form, signatures) is a pure check it hands
//! out, for the adapter to run on any thread. The adapter drives it with
//! one loop:
//!
//! 1. Feed an event: [`Relay::handle_head`] for each request as soon as
//!    its head has arrived, before reading its body;
//!    [`Relay::handle_body`] with the [`Checked`] body of a request it
//!    asked to read; [`Relay::handle_stored`] / [`Relay::handle_fetched`]
//!    when a storage operation it asked for has finished;
//!    [`Relay::handle_keys`] with the [`CheckedKeys`] of a key document it
//!    asked for; [`Relay::handle_timeout`] when the timer fires.
//! 2. Drain [`Relay::poll_output`] until it returns `None`, performing each
//!    [`Output`]: for `ReadBody`, read at most `limit` bytes of the body,
//!    run the [`BodyCheck`] on it ([`BodyCheck::too_large`] past the
//!    limit) off the task that owns the machine, and feed the result back;
//!    run `Store` / `Fetch` on the storage backend (off the event loop)
//!    and report each result back with the operation's [`OpId`]; send
//!    `FetchKeys`' request, run its [`KeyCheck`] on the outcome off the
//!    machine's task, and report back; send each `Respond` to the
//!    connection that made the request, closing the connection after it if
//!    the body was never read.
//! 3. Re-arm the timer from [`Relay::poll_timeout`] (long-polls wait for
//!    their deadlines there), and call [`Relay::release_waits`] when the
//!    server begins to shut down.
//!
//! ```no_run
//! # use relay_core::relay::*;
//! # use relay_core::{Instant, UnixMillis};
//! # fn store(_: &relay_core::store::NewEntry) -> Result<relay_core::store::InsertOutcome, relay_core::store::StoreError> { Ok(relay_core::store::InsertOutcome::Stored(relay_core::EntryId(1))) }
//! # fn send(_: RequestId, _: Response) {}
//! # fn read_body(_: RequestId, _limit: usize) -> Option<Vec<u8>> { Some(Vec::new()) }
//! # fn fetch(_: &relay_core::http::OutgoingRequest) -> relay_core::http::HttpOutcome { relay_core::http::HttpOutcome::Timeout }
//! # fn drive(relay: &mut Relay, head: RequestHead) {
//! let unix = UnixMillis(1_700_000_000_000);
//! relay.handle_head(Instant::now(), unix, head);
//! while let Some(output) = relay.poll_output() {
//!     match output {
//!         Output::ReadBody { request, limit, check } => {
//!             // On the connection's task, in real code.
//!             let checked = match read_body(request, limit) {
//!                 Some(body) => check.run(&body),
//!                 None => check.too_large(),
//!             };
//!             relay.handle_body(Instant::now(), unix, checked);
//!         }
//!         Output::Store { op, entry, quota: _ } => {
//!             let result = store(&entry); // on a blocking pool, in real code
//!             relay.handle_stored(Instant::now(), op, result);
//!         }
//!         Output::Fetch { op, .. } => relay.handle_fetched(Instant::now(), op, Ok(None)),
//!         Output::FetchBatch { op, .. } => {
//!             relay.handle_fetched_batch(Instant::now(), op, Ok(Default::default()));
//!         }
//!         Output::FetchKeys { op, request, check } => {
//!             let checked = check.run(unix, &fetch(&request)); // off the loop
//!             relay.handle_keys(Instant::now(), unix, op, checked);
//!         }
//!         Output::Respond { request, response } => send(request, response),
//!     }
//! }
//! # }
//! ```
//!
//! All policy lives here: the order of checks (route, request rate per
//! client address, declared size, `X-Matrix` header, key with new origins
//! per client address and key fetch limits, then the body: size, JSON,
//! signature, path parameters, permission, content), the serving policy,
//! the `relay_txn` origin check, quotas and limits, and every error of the
//! protocol tables.

mod check;
mod client;
mod config;
mod handlers;
mod keys;
mod limits;
mod waits;

use self::waits::{Parked, Waits};
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;

pub use check::{BodyCheck, Checked, CheckedKeys, KeyCheck};
pub use config::{
    DEFAULT_KEY_FETCH_INTERVAL, DEFAULT_KEY_FETCH_RATE, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ENTRY_AGE_MS, DEFAULT_NEW_ORIGINS_PER_HOUR, DEFAULT_RELAY_TXN_RATE,
    DEFAULT_SEND_RELAY_RATE, MAX_BATCH_ACKS, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_BATCH_WAIT_MS,
    MAX_EDUS, MAX_PDU_BYTES, MAX_PDUS, NEW_ORIGINS_WINDOW, RateLimits, RelayConfig, ServePolicy,
};
pub use limits::{MAX_COUNTED_ORIGINS, MAX_FETCH_RECORDS, MAX_LIMITED_ADDRESSES};

use self::check::{ClaimedHead, Verdict};
use self::keys::KeyFetch;
use self::limits::{Client, Limits};
use crate::auth::KeyCache;
use crate::drive::{IdCounter, LastNow, Outputs};
use crate::error::MatrixError;
use crate::http::OutgoingRequest;
use crate::id::ServerName;
use crate::store::{Ack, AckBatch, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError, Take};
use crate::time::{Instant, UnixMillis};

/// The head of one HTTP request as the adapter received it: all of it but
/// the body, which is read only once the machine asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, upper case (`GET`, `PUT`).
    pub method: String,
    /// The raw request target (path and query) exactly as received.
    pub target: String,
    /// Every `Authorization` header value, in order.
    pub authorization: Vec<String>,
    /// The declared `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// The address of the connection's peer.
    pub peer: IpAddr,
    /// Every `X-Forwarded-For` header value, in order; read only when
    /// `peer` is one of [`RelayConfig::trusted_proxies`].
    pub forwarded_for: Vec<String>,
}

/// An HTTP response to send. The content type is always
/// `application/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// For 429 and 503: the `Retry-After` header, in seconds.
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

    /// The response carrying `e`: its status, JSON body and, where it says
    /// how long to wait, `Retry-After`. Also for errors the adapter answers itself (a body
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// Names a storage operation; echo it in `handle_stored` / `handle_fetched`.
/// Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(u64);

/// What the machine asks its driver to do.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Read `request`'s body, at most `limit` bytes, judge it with `check`
    /// (off the machine's task: it is pure, and costs time in proportion
    /// to the body), then call [`Relay::handle_body`] with the result.
    ReadBody {
        /// The request whose body to read.
        request: RequestId,
        /// The most bytes to read; past it, use [`BodyCheck::too_large`].
        limit: usize,
        /// What judges the body.
        check: BodyCheck,
    },
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
        /// Entries received before this have expired: hand none of them
        /// out.
        expired_before: UnixMillis,
    },
    /// Acknowledge (delete) each of `acks` that is `destination`'s,
    /// remembering their keys as their `keys` say, then read the
    /// destination's oldest unexpired entries, as many as `take` admits,
    /// and call [`Relay::handle_fetched_batch`] with `op`.
    FetchBatch {
        /// Echo this back.
        op: OpId,
        /// Whose queue.
        destination: ServerName,
        /// The entries to delete first, with the time of the request.
        acks: Vec<Ack>,
        /// How many entries to hand out.
        take: Take,
        /// Entries received before this have expired: hand none of them
        /// out.
        expired_before: UnixMillis,
    },
    /// Send `request` (`GET /_matrix/key/v2/server` of an origin whose key
    /// is unknown), judge its outcome with `check` (off the machine's
    /// task), then call [`Relay::handle_keys`] with `op` and the result.
    /// Only with [`RelayConfig::fetch_keys`].
    FetchKeys {
        /// Echo this back.
        op: OpId,
        /// The unsigned request.
        request: OutgoingRequest,
        /// What judges the answer.
        check: KeyCheck,
    },
    /// Send `response` for `request`.
    Respond {
        /// The request being answered.
        request: RequestId,
        /// The answer.
        response: Response,
    },
}

/// How a batch drain that finds nothing waits for an entry.
#[derive(Debug, Clone)]
struct Wait {
    destination: ServerName,
    take: Take,
    expired_before: UnixMillis,
    deadline: Instant,
    /// What [`Waits::fetching`] gave when its fetch was issued.
    since: u64,
}

/// What an operation is waiting for.
#[derive(Debug)]
// States are named for what they wait for.
#[allow(clippy::enum_variant_names)]
enum PendingOp {
    AwaitingStore {
        request: RequestId,
        destination: ServerName,
    },
    AwaitingFetch {
        request: RequestId,
    },
    AwaitingBatch {
        request: RequestId,
        /// Whether, and until when, it waits for an entry if none is
        /// queued.
        wait: Option<Wait>,
    },
    AwaitingKeys {
        server: ServerName,
    },
}

impl PendingOp {
    /// The request a store answers, and the destination it stores for.
    fn stored(&self) -> Option<(RequestId, ServerName)> {
        match self {
            Self::AwaitingStore {
                request,
                destination,
            } => Some((*request, destination.clone())),
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

    /// The request a batch fetch answers, and how it may wait.
    fn batch_fetched(&self) -> Option<(RequestId, Option<Wait>)> {
        match self {
            Self::AwaitingBatch { request, wait } => Some((*request, wait.clone())),
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

/// Most requests held while their origin's keys are fetched; past it, an
/// unknown key is 401 at once.
pub const MAX_HELD_REQUESTS: usize = 1024;
/// Most bytes of request heads held while their origins' keys are fetched
/// (a head is held without its body); past it, an unknown key is 401 at
/// once.
pub const MAX_HELD_BYTES: usize = 1 << 20;

/// The relay server's request logic. See the [module docs](self) for how to
/// drive it.
#[derive(Debug)]
pub struct Relay {
    /// As given to [`Relay::new`]; never changed.
    config: RelayConfig,
    /// Keys fetched from servers, apart from the configured ones.
    fetched_keys: KeyCache,
    pending: HashMap<OpId, PendingOp>,
    /// Request heads waiting for a server's keys, with their clients.
    awaiting_keys: HashMap<ServerName, Vec<(RequestId, Client, ClaimedHead)>>,
    /// How many heads `awaiting_keys` holds, and roughly how many bytes.
    held: usize,
    held_bytes: usize,
    /// Rate limits, and when each origin's keys were last fetched.
    limits: Limits,
    /// Long-polls waiting for an entry.
    waits: Waits,
    outputs: Outputs<Output>,
    ids: IdCounter,
    last_now: LastNow,
}

impl Relay {
    /// A relay with `config`.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            limits: Limits::new(&config.limits),
            config,
            fetched_keys: KeyCache::default(),
            pending: HashMap::new(),
            awaiting_keys: HashMap::new(),
            held: 0,
            held_bytes: 0,
            waits: Waits::default(),
            outputs: Outputs::default(),
            ids: IdCounter::default(),
            last_now: LastNow::default(),
        }
    }

    /// The configuration, as given to [`Relay::new`].
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Takes a request's head, before its body is read. What follows comes
    /// out of [`Relay::poll_output`] with the returned id: an
    /// [`Output::Respond`] (an endpoint that needs no body, or a refusal:
    /// the body is then never read), or an [`Output::ReadBody`], at once or
    /// once the origin's keys were fetched.
    pub fn handle_head(&mut self, now: Instant, unix: UnixMillis, head: RequestHead) -> RequestId {
        let now = self.last_now.advance(now);
        let id = RequestId(self.fresh_id());
        let client = Client::of(&head, &self.config);
        let limits = &mut self.limits;
        let admit = |endpoint| limits.request(now, client, endpoint);
        match handlers::head(&self.config, unix, head, admit) {
            handlers::Head::Respond(response) => self.respond(id, response),
            handlers::Head::Authenticate(head) => {
                let at = (now, unix);
                self.authenticate(at, id, client, head, KeyFetch::Allowed);
            }
        }
        id
    }

    /// Takes the judged body of [`Output::ReadBody`]; its request's
    /// response follows, at once or after the storage operation it needs.
    pub fn handle_body(&mut self, now: Instant, unix: UnixMillis, checked: Checked) {
        let now = self.last_now.advance(now);
        let Checked { request, verdict } = checked;
        match verdict {
            Verdict::Refused(e) => self.respond(request, Response::error(&e)),
            Verdict::Store {
                origin,
                destination,
                txn_id,
                transaction,
            } => {
                let op = OpId(self.fresh_id());
                self.pending.insert(
                    op,
                    PendingOp::AwaitingStore {
                        request,
                        destination: destination.clone(),
                    },
                );
                let entry = NewEntry {
                    origin,
                    destination,
                    txn_id,
                    transaction,
                    received: unix,
                };
                self.outputs.push(Output::Store {
                    op,
                    entry,
                    quota: self.config.quota,
                });
            }
            Verdict::Fetch { destination, ack } => {
                let op = OpId(self.fresh_id());
                self.pending
                    .insert(op, PendingOp::AwaitingFetch { request });
                let ack = ack.map(|entry_id| Ack {
                    entry_id,
                    at: unix,
                    keys: self.config.quota.acked,
                });
                self.outputs.push(Output::Fetch {
                    op,
                    destination,
                    ack,
                    expired_before: self.config.expired_before(unix),
                });
            }
            Verdict::FetchBatch {
                destination,
                acks,
                take,
                wait_ms,
            } => {
                let keys = self.config.quota.acked;
                let acks = acks
                    .into_iter()
                    .map(|entry_id| Ack {
                        entry_id,
                        at: unix,
                        keys,
                    })
                    .collect();
                let wait = (wait_ms > 0).then(|| Wait {
                    destination: destination.clone(),
                    take,
                    expired_before: self.config.expired_before(unix),
                    deadline: now + std::time::Duration::from_millis(wait_ms),
                    since: 0,
                });
                self.fetch_batch(request, acks, wait, (destination, take, unix));
            }
        }
    }

    /// Reports the checked outcome of [`Output::FetchKeys`] `op`, and goes
    /// on with the requests that waited for it. An unknown `op` is
    /// ignored.
    pub fn handle_keys(&mut self, now: Instant, unix: UnixMillis, op: OpId, checked: CheckedKeys) {
        let now = self.last_now.advance(now);
        let Some(server) = self.take_pending(op, PendingOp::keys_of) else {
            return;
        };
        // Whatever the outcome, the fetch was recorded as it started: the
        // origin is not asked again before its interval ends.
        if let Ok(keys) = checked.keys
            && checked.server == server
        {
            self.fetched_keys.insert(server.clone(), keys, unix);
        }
        let Some(held) = self.awaiting_keys.remove(&server) else {
            return;
        };
        for (id, client, head) in held {
            self.held -= 1;
            self.held_bytes -= head.held_bytes();
            // No second fetch: a key still unknown now is 401.
            self.authenticate((now, unix), id, client, head, KeyFetch::Tried);
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
        let Some((request, destination)) = self.take_pending(op, PendingOp::stored) else {
            return;
        };
        if matches!(result, Ok(InsertOutcome::Stored(_))) {
            for parked in self.waits.wake(&destination) {
                let wait = Wait {
                    destination: parked.destination,
                    take: parked.take,
                    expired_before: parked.expired_before,
                    deadline: parked.deadline,
                    since: 0,
                };
                self.refetch(parked.request, wait);
            }
        }
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

    /// Reports the result of [`Output::FetchBatch`] `op`; its request's
    /// response follows. An unknown `op` is ignored.
    pub fn handle_fetched_batch(
        &mut self,
        now: Instant,
        op: OpId,
        result: Result<AckBatch, StoreError>,
    ) {
        let now = self.last_now.advance(now);
        let Some((request, wait)) = self.take_pending(op, PendingOp::batch_fetched) else {
            return;
        };
        let missed = wait
            .as_ref()
            .is_some_and(|w| self.waits.fetched(&w.destination, w.since));
        match (wait, &result) {
            (Some(wait), Ok(batch)) if batch.entries.is_empty() && wait.deadline > now => {
                if missed {
                    self.refetch(request, wait);
                    return;
                }
                self.waits.park(Parked {
                    request,
                    destination: wait.destination,
                    take: wait.take,
                    expired_before: wait.expired_before,
                    deadline: wait.deadline,
                });
            }
            _ => self.respond(request, handlers::batch_response(result)),
        }
    }

    /// Answers the long-polls whose time is up: nothing came.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.last_now.advance(now);
        for request in self.waits.expired(now) {
            self.respond(request, handlers::batch_response(Ok(AckBatch::default())));
        }
    }

    /// Answers every long-poll at once (nothing came): the server is
    /// shutting down.
    pub fn release_waits(&mut self, now: Instant) {
        self.last_now.advance(now);
        for request in self.waits.all() {
            self.respond(request, handlers::batch_response(Ok(AckBatch::default())));
        }
    }

    /// How many long-polls wait for an entry.
    pub fn waiting(&self) -> usize {
        self.waits.len()
    }

    /// Issues the batch fetch of `request`.
    fn fetch_batch(
        &mut self,
        request: RequestId,
        acks: Vec<Ack>,
        mut wait: Option<Wait>,
        (destination, take, unix): (ServerName, Take, UnixMillis),
    ) {
        if let Some(wait) = &mut wait {
            wait.since = self.waits.fetching(&wait.destination);
        }
        let op = OpId(self.fresh_id());
        self.pending
            .insert(op, PendingOp::AwaitingBatch { request, wait });
        self.outputs.push(Output::FetchBatch {
            op,
            destination,
            acks,
            take,
            expired_before: self.config.expired_before(unix),
        });
    }

    /// Fetches again for a long-poll an entry of its destination woke.
    fn refetch(&mut self, request: RequestId, mut wait: Wait) {
        wait.since = self.waits.fetching(&wait.destination);
        let op = OpId(self.fresh_id());
        let (destination, take, expired_before) =
            (wait.destination.clone(), wait.take, wait.expired_before);
        self.pending.insert(
            op,
            PendingOp::AwaitingBatch {
                request,
                wait: Some(wait),
            },
        );
        self.outputs.push(Output::FetchBatch {
            op,
            destination,
            acks: Vec::new(),
            take,
            expired_before,
        });
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop()
    }

    /// When to call [`Relay::handle_timeout`]: the last `now` while output
    /// is waiting, so no driver sleeps on pending work; otherwise the
    /// earliest deadline of a long-poll, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outputs
            .timeout(self.last_now, || self.waits.next_deadline())
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
