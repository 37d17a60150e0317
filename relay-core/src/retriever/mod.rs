//! The recipient machine: drains the node's relays, hands each transaction
//! to the application, acknowledges it only once processed, and drops
//! copies that arrive through several relays or again after a crash.
//!
//! # Driving a `Retriever`
//!
//! 1. Feed an event: [`Retriever::handle_online`] when the node comes
//!    online, [`Retriever::handle_response`] when a request it asked for has
//!    ended, [`Retriever::handle_processed`] when the application has
//!    processed a delivered transaction, [`Retriever::handle_persisted`] when
//!    a de-duplication change was written, [`Retriever::handle_timeout`]
//!    when the timer fires.
//! 2. Drain [`Retriever::poll_output`] until `None`: send each
//!    [`Output::Transmit`], process each [`Output::Deliver`] (then report
//!    it), apply each [`Output::Persist`] in order, act on each
//!    [`Output::Event`].
//! 3. Re-arm the timer from [`Retriever::poll_timeout`].
//!
//! ```no_run
//! # use relay_core::retriever::*;
//! # use relay_core::{Instant, ServerName};
//! # fn send(_: &relay_core::http::OutgoingRequest) -> relay_core::http::HttpOutcome { relay_core::http::HttpOutcome::Timeout }
//! # fn process(_: &Delivery) {}
//! # fn persist(_: &WindowChange) -> Result<(), relay_core::store::StoreError> { Ok(()) }
//! # fn drive(config: RetrieverConfig, relays: Vec<ServerName>, seen: Vec<Vec<DedupeKey>>) {
//! let mut retriever = Retriever::restore(config, [0; 32], seen);
//! retriever.set_relays(Instant::now(), relays);
//! retriever.handle_timeout(Instant::now());
//! while let Some(output) = retriever.poll_output() {
//!     match output {
//!         Output::Transmit { attempt, request, .. } => {
//!             let outcome = send(&request); // concurrently, in real code
//!             retriever.handle_response(Instant::now(), attempt, outcome);
//!         }
//!         Output::Deliver(delivery) => {
//!             process(&delivery);
//!             retriever.handle_processed(Instant::now(), delivery.id);
//!         }
//!         Output::Persist { op, change } => {
//!             let result = persist(&change);
//!             retriever.handle_persisted(Instant::now(), op, result);
//!         }
//!         Output::Event(event) => println!("{event:?}"),
//!     }
//! }
//! let _sleep_until = retriever.poll_timeout();
//! # }
//! ```
//!
//! # Rules
//!
//! - Every relay is drained on start (the first [`Retriever::handle_timeout`]
//!   is due at once), when the node comes online, and every
//!   `poll_interval` after its last drain (or failure): with the batch
//!   drain (this project's extension: up to 100 entries a request, each
//!   request acknowledging every entry finished since the last), until a
//!   request hands out nothing; a relay that answers it 404 or 405 (a
//!   Dendrite relay) is drained with `relay_txn` from then on: `entry_id`
//!   0, then the previous entry's ID, until `entries_queued` is false.
//!   Relays drain concurrently, each with one request at a time, and the
//!   entries of a batch are handed over one after the other. Polling drained relays too matters: a sender that
//!   missed this node once while it was online leaves its transaction on a
//!   relay, and nothing else would fetch it before the next online event.
//! - A transaction is handed over with [`Output::Deliver`]; its entry is
//!   acknowledged (by the next request to that relay) only after
//!   [`Retriever::handle_processed`] and after its de-duplication record was
//!   persisted, so a crash in between re-delivers, and the persisted window
//!   drops the copy.
//! - De-duplication: a transaction that came with a `txn_id` is known by
//!   (origin, `txn_id`); one that came without (from a Dendrite relay) by a
//!   digest of its content. The two meet through the digest: a copy without
//!   `txn_id` matches any transaction of the same content, a copy with one
//!   matches by its key or the content of a transaction that came without.
//!   Two transactions with distinct txn IDs are never taken for copies, even
//!   with identical content. A match is not handed over again, but is
//!   acknowledged. The window keeps the newest `dedupe_window`
//!   transactions; it is persisted ([`WindowChange`]) and loaded back with
//!   [`Retriever::restore`].
//! - A relay that fails (connection, timeout, non-200, malformed answer) is
//!   retried with exponential backoff and jitter, without holding back the
//!   others; a malformed answer is an [`Event::Malformed`], never a panic.

mod machine;
#[cfg(test)]
mod tests;
mod window;
mod wire;

use std::time::Duration;

pub use machine::Retriever;

use crate::http::OutgoingRequest;
use crate::id::{EntryId, ServerName, TxnId};
use crate::signing::SigningKey;
use crate::time::Instant;

/// What a [`Retriever`] is told at start.
#[derive(Debug, Clone)]
pub struct RetrieverConfig {
    /// This node's server name: whose queue it drains.
    pub server_name: ServerName,
    /// The key requests are signed with.
    pub signing_key: SigningKey,
    /// How often every relay is drained again (Dendrite's Pinecone demo
    /// polls every 30 s).
    pub poll_interval: Duration,
    /// Wait after a relay's first failure; doubles with each further one.
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_cap: Duration,
    /// How many transactions the de-duplication window remembers.
    pub dedupe_window: usize,
    /// Long-poll relays that have the batch drain: each request asks the
    /// relay to wait this long for an entry when it has none, and a relay
    /// drained is asked again at once, so an entry reaches this node as
    /// soon as it is stored. `None` polls every `poll_interval` instead.
    /// The driver's request timeout must be longer.
    pub long_poll: Option<Duration>,
}

impl RetrieverConfig {
    /// Defaults: poll every 30 s, backoff from 2 s to 5 min, remember 10,000
    /// transactions.
    pub fn new(server_name: ServerName, signing_key: SigningKey) -> Self {
        Self {
            server_name,
            signing_key,
            poll_interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            dedupe_window: 10_000,
            long_poll: None,
        }
    }
}

/// One key a transaction is known by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DedupeKey {
    /// The sender's (origin, txn ID).
    Txn(ServerName, TxnId),
    /// SHA-256 of the canonical JSON of a transaction that came without a
    /// `txn_id`.
    Digest([u8; 32]),
    /// SHA-256 of the canonical JSON of a transaction that came with a
    /// `txn_id` (matched only by copies without one).
    TxnDigest([u8; 32]),
}

/// A change to the persisted de-duplication window, to apply in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowChange {
    /// Remember these keys (one transaction's).
    Seen(Vec<DedupeKey>),
    /// Forget these keys (fell out of the window).
    Forget(Vec<DedupeKey>),
}

/// Names one request. Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(pub(crate) u64);

/// Names one delivered transaction. Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId(pub(crate) u64);

/// Names one persisted change. Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u64);

/// A transaction handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Report with this once processed.
    pub id: DeliveryId,
    /// The relay it came through.
    pub relay: ServerName,
    /// Its entry on that relay.
    pub entry_id: EntryId,
    /// The sender, as the relay authenticated it.
    pub origin: ServerName,
    /// The sender's txn ID, when the relay sent one.
    pub txn_id: Option<TxnId>,
    /// The transaction as JSON.
    pub transaction: Vec<u8>,
}

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `relay` had nothing more queued; `delivered` transactions came from it
    /// in this drain (duplicates not counted).
    Drained {
        /// The relay.
        relay: ServerName,
        /// How many were handed over.
        delivered: u64,
    },
    /// A transaction already handed over came again and was acknowledged
    /// without being handed over.
    DuplicateDropped {
        /// The relay it came through.
        relay: ServerName,
        /// Its entry there.
        entry_id: EntryId,
    },
    /// A request to `relay` failed; retried at `retry_at`.
    RelayFailed {
        /// The relay.
        relay: ServerName,
        /// What happened.
        error: String,
        /// When it is tried again.
        retry_at: Instant,
    },
    /// `relay` answered something that is not a relay_txn answer; it is
    /// treated as a failure of that relay.
    Malformed {
        /// The relay.
        relay: ServerName,
        /// What was wrong.
        error: String,
    },
    /// A de-duplication change could not be persisted.
    PersistFailed {
        /// The storage error.
        error: String,
    },
}

/// What the machine asks its driver to do.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `request`, then call [`Retriever::handle_response`] with
    /// `attempt`.
    Transmit {
        /// Echo this back.
        attempt: AttemptId,
        /// The relay asked.
        relay: ServerName,
        /// The signed `relay_txn` request.
        request: OutgoingRequest,
    },
    /// Process this transaction, then call
    /// [`Retriever::handle_processed`] with its id.
    Deliver(Delivery),
    /// Apply `change` (after every earlier one), then call
    /// [`Retriever::handle_persisted`] with `op`.
    Persist {
        /// Echo this back.
        op: OpId,
        /// The change.
        change: WindowChange,
    },
    /// Tell the application.
    Event(Event),
}
