//! The sender machine: per-destination queues, transactions, backoff, and
//! fallback to the destination's relays.
//!
//! # Driving an `Outbound`
//!
//! 1. Feed an event: [`Outbound::handle_enqueue`] for each PDU or EDU to
//!    send, [`Outbound::handle_send_result`] when a request it asked for has
//!    ended, [`Outbound::handle_persisted`] when a state change was written,
//!    [`Outbound::handle_peer_alive`] when the application learns that a
//!    destination is up, [`Outbound::handle_timeout`] when the timer fires.
//! 2. Drain [`Outbound::poll_output`] until `None`: send each
//!    [`Output::Transmit`] (and report its outcome with its [`AttemptId`]),
//!    apply each [`Output::Persist`] to storage *in order* (and report it
//!    with its [`OpId`]), and act on each [`Output::Event`]: answer an
//!    enqueue on its [`Event::Queued`].
//! 3. Re-arm the timer from [`Outbound::poll_timeout`].
//!
//! ```no_run
//! # use relay_core::outbound::*;
//! # use relay_core::{Instant, UnixMillis, ServerName};
//! # fn send(_: &relay_core::http::OutgoingRequest) -> relay_core::http::HttpOutcome { relay_core::http::HttpOutcome::Timeout }
//! # fn persist(_: &OutboundChange) -> Result<(), relay_core::store::StoreError> { Ok(()) }
//! # fn drive(out: &mut Outbound, dest: ServerName) {
//! let now = Instant::now();
//! let unix = UnixMillis(1_700_000_000_000);
//! out.handle_enqueue(now, unix, dest, ItemKind::Pdu, br#"{"type":"m.room.message"}"#.to_vec()).unwrap();
//! while let Some(output) = out.poll_output() {
//!     match output {
//!         Output::Transmit { attempt, request, .. } => {
//!             let outcome = send(&request); // concurrently, in real code
//!             out.handle_send_result(Instant::now(), unix, attempt, outcome);
//!         }
//!         Output::Persist { op, change } => {
//!             let result = persist(&change);
//!             out.handle_persisted(Instant::now(), op, result);
//!         }
//!         Output::Event(event) => println!("{event:?}"),
//!     }
//! }
//! let _sleep_until = out.poll_timeout();
//! # }
//! ```
//!
//! # Rules
//!
//! - One queue per destination; transactions of at most 50 PDUs and 100 EDUs
//!   taken from the front of the queue in enqueue order; one transaction in
//!   flight per destination; a transaction keeps its txn ID across every
//!   retry, and across a restart, until it is done.
//! - An enqueue is answered ([`Event::Queued`]) once the `Enqueued` change
//!   of its item was reported persisted, stored or not (a failure is an
//!   [`Event::PersistFailed`]), so "queued" survives a crash whenever
//!   storage works.
//! - Each attempt tries the destination directly. After
//!   `retries_until_assumed_offline` consecutive direct failures the
//!   destination is assumed offline, and from then on (in the same attempt
//!   that reached the count, too) a failed direct try is followed by a
//!   `send_relay` of the same transaction to every relay known for the
//!   destination. The transaction is done when the destination or at least
//!   one relay answered 2xx.
//! - An attempt in which nobody accepted the transaction is a failed
//!   attempt: the next one waits `backoff_base × 2^(n−1)` for the n-th
//!   consecutive failed attempt, times a jitter in ×0.8–1.4 from the
//!   machine's seeded RNG, capped at `backoff_cap`; a 429 or a 503 waits at
//!   least its `retry_after_ms` (or `Retry-After`). After
//!   `failures_until_blacklist` consecutive failed attempts the destination
//!   is blacklisted: nothing is sent until [`Outbound::handle_peer_alive`].
//! - A direct 2xx clears offline, backoff and blacklist. A direct 4xx other
//!   than 408 and 429 is permanent for that transaction: it is dropped
//!   (event [`Event::FailedPermanently`]) and the queue moves on. 408, 429,
//!   5xx, timeouts and connection failures are transient. A relay's answer
//!   is never permanent: a relay that refuses is an error of that attempt.
//! - A destination with nothing queued, nothing in flight and no failure
//!   state is forgotten, so memory does not grow with idle destinations.

mod attempt;
mod destination;
mod machine;
#[cfg(test)]
mod tests;
mod txn;

use std::time::Duration;

pub use machine::Outbound;

use crate::http::OutgoingRequest;
use crate::id::{ServerName, TxnId};
use crate::signing::SigningKey;
use crate::time::{Instant, UnixMillis};

/// What an [`Outbound`] is told at start.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// This node's server name (the `origin`).
    pub server_name: ServerName,
    /// The key requests are signed with.
    pub signing_key: SigningKey,
    /// Consecutive direct failures before the destination is assumed
    /// offline and relays are used (Dendrite's
    /// `p2p_retries_until_assumed_offline`).
    pub retries_until_assumed_offline: u32,
    /// Consecutive failed attempts before the destination is blacklisted.
    pub failures_until_blacklist: u32,
    /// The wait after the first failed attempt; it doubles with each one.
    pub backoff_base: Duration,
    /// The longest wait between attempts (before a 429's own wait).
    pub backoff_cap: Duration,
    /// Most PDUs in one transaction.
    pub max_pdus: usize,
    /// Most EDUs in one transaction.
    pub max_edus: usize,
    /// Most items queued for one destination; past it, enqueue fails.
    pub max_queued_items: usize,
}

impl OutboundConfig {
    /// Defaults as Dendrite's: offline after 1 failure, blacklist after 16,
    /// backoff from 2 s doubling to at most an hour.
    pub fn new(server_name: ServerName, signing_key: SigningKey) -> Self {
        Self {
            server_name,
            signing_key,
            retries_until_assumed_offline: 1,
            failures_until_blacklist: 16,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(3600),
            max_pdus: 50,
            max_edus: 100,
            max_queued_items: 100_000,
        }
    }
}

/// Whether an item is a PDU or an EDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A persistent data unit (an event).
    Pdu,
    /// An ephemeral data unit.
    Edu,
    /// A whole transaction, sent alone and as is under its own txn ID (for
    /// senders that form their transactions themselves). Its JSON is
    /// `{"txn_id": "…", "transaction": {"pdus": […], "edus": […], …}}`;
    /// [`whole_transaction_item`] builds it. The transaction's `origin` is
    /// set to this node's name; its other fields are kept.
    Transaction,
}

/// The item JSON of an [`ItemKind::Transaction`]: `transaction` (a JSON
/// object with `pdus` and optionally `edus`) under `txn_id`.
pub fn whole_transaction_item(txn_id: &TxnId, transaction: &[u8]) -> Result<Vec<u8>, EnqueueError> {
    let transaction: serde_json::Value =
        serde_json::from_slice(transaction).map_err(|_| EnqueueError::NotJson)?;
    Ok(
        serde_json::json!({"txn_id": txn_id.as_str(), "transaction": transaction})
            .to_string()
            .into_bytes(),
    )
}

/// An item's ID, unique within one [`Outbound`] and its persisted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(pub u64);

/// A queued PDU or EDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its ID.
    pub id: ItemId,
    /// PDU or EDU.
    pub kind: ItemKind,
    /// The item as JSON.
    pub json: Vec<u8>,
}

/// Where a transaction is sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `PUT /_matrix/federation/v1/send/{txnId}` to the destination.
    Direct,
    /// `PUT /_matrix/federation/v1/send_relay/{txnId}/@user:{destination}`
    /// to this relay.
    Relay(ServerName),
}

/// How a transaction was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The destination accepted it.
    Direct,
    /// These relays accepted it (at least one).
    Relays(Vec<ServerName>),
}

/// Names one request the machine asked for. Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(pub(crate) u64);

/// Names one state change to persist. Only the machine makes these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId(pub(crate) u64);

/// The failure state of a destination that survives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryState {
    /// Consecutive failed direct tries (offline at
    /// `retries_until_assumed_offline`).
    pub direct_failures: u32,
    /// Consecutive attempts nobody accepted (backoff and blacklist).
    pub failed_attempts: u32,
    /// When the next attempt is due, as wall time; `None` for now.
    pub next_retry: Option<UnixMillis>,
    /// Blacklisted: nothing is sent until the destination is seen alive.
    pub blacklisted: bool,
}

/// A change to the persisted state, to apply in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundChange {
    /// Append `item` to `destination`'s queue.
    Enqueued {
        /// Whose queue.
        destination: ServerName,
        /// The new item.
        item: Item,
    },
    /// A transaction with `txn_id` now carries `items` (the front of the
    /// queue).
    TxnStarted {
        /// Whose queue.
        destination: ServerName,
        /// The transaction's ID, kept across retries and restarts.
        txn_id: TxnId,
        /// Its items, in order.
        items: Vec<ItemId>,
    },
    /// The transaction in flight is done (delivered or dropped): delete its
    /// items and forget its txn ID.
    TxnFinished {
        /// Whose queue.
        destination: ServerName,
        /// The items to delete.
        items: Vec<ItemId>,
    },
    /// The destination's failure state is now `state`.
    Retry {
        /// Whose state.
        destination: ServerName,
        /// The new state.
        state: RetryState,
    },
}

/// Everything persisted about one destination, to rebuild a machine with
/// [`Outbound::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRecord {
    /// The destination.
    pub destination: ServerName,
    /// Its queue, oldest first.
    pub items: Vec<Item>,
    /// The transaction in flight: its ID and items.
    pub txn: Option<(TxnId, Vec<ItemId>)>,
    /// Its failure state.
    pub retry: RetryState,
}

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The `Enqueued` change of `item` was reported persisted (or failing,
    /// reported just before as [`Event::PersistFailed`]): its enqueue may
    /// be answered, and an application told "queued" only now can rely on
    /// it across a crash.
    Queued {
        /// The item, as [`Outbound::handle_enqueue`] returned it.
        item: ItemId,
    },
    /// A transaction was accepted by the destination or by relays.
    Delivered {
        /// The destination.
        destination: ServerName,
        /// The transaction.
        txn_id: TxnId,
        /// Who accepted it.
        via: Via,
        /// The items it carried.
        items: Vec<ItemId>,
        /// What failed on the way (the direct try, refusing relays).
        errors: Vec<(Target, String)>,
    },
    /// The destination refused a transaction for good; its items are
    /// dropped.
    FailedPermanently {
        /// The destination.
        destination: ServerName,
        /// The transaction.
        txn_id: TxnId,
        /// The items dropped.
        items: Vec<ItemId>,
        /// What the destination said.
        error: String,
    },
    /// An attempt ended with nobody accepting the transaction; it will be
    /// retried at `retry_at` (never, while blacklisted).
    AttemptFailed {
        /// The destination.
        destination: ServerName,
        /// The transaction.
        txn_id: TxnId,
        /// Every failure of the attempt.
        errors: Vec<(Target, String)>,
        /// Whether relays were tried in this attempt.
        relays_tried: bool,
        /// When the next attempt is due.
        retry_at: Option<Instant>,
    },
    /// The destination is now assumed offline: relays are used.
    AssumedOffline {
        /// The destination.
        destination: ServerName,
    },
    /// A direct send succeeded after the destination was assumed offline.
    BackOnline {
        /// The destination.
        destination: ServerName,
    },
    /// Too many failed attempts: nothing more is sent until the destination
    /// is seen alive.
    Blacklisted {
        /// The destination.
        destination: ServerName,
    },
    /// A state change could not be persisted; the machine carries on, but
    /// a restart may resend or forget what that change recorded.
    PersistFailed {
        /// The storage error.
        error: String,
    },
}

/// What the machine asks its driver to do.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `request`, then call [`Outbound::handle_send_result`] with
    /// `attempt`.
    Transmit {
        /// Echo this back.
        attempt: AttemptId,
        /// The destination the transaction is for.
        destination: ServerName,
        /// Direct or which relay.
        target: Target,
        /// The signed request.
        request: OutgoingRequest,
    },
    /// Apply `change` to storage (after every earlier one), then call
    /// [`Outbound::handle_persisted`] with `op`.
    Persist {
        /// Echo this back.
        op: OpId,
        /// The change.
        change: OutboundChange,
    },
    /// Tell the application.
    Event(Event),
}

/// Why an item was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// The destination's queue holds `max_queued_items` already.
    #[error("the queue for {0} is full")]
    QueueFull(ServerName),
    /// The item is not a JSON object.
    #[error("the item is not a JSON object")]
    NotJson,
    /// An [`ItemKind::Transaction`] item is not a valid transaction.
    #[error("not a transaction: {0}")]
    BadTransaction(String),
    /// The destination is this node.
    #[error("cannot send to this node itself")]
    SelfDestination,
}
