//! One destination's state: its queue, its transaction, the attempt in
//! progress, and its failure state.

use std::collections::VecDeque;
use std::time::Duration;

use super::txn::Txn;
use super::{AttemptId, Item, OpId, OutboundConfig, RetryState, Target};
use crate::backoff::{Backoff, MAX_WAIT, later};
use crate::http::HttpOutcome;
use crate::id::ServerName;
use crate::time::{Instant, UnixMillis};

/// Everything the machine holds for one destination.
#[derive(Debug, Default)]
pub(super) struct Destination {
    /// Items not yet in a transaction, oldest first.
    pub(super) queue: VecDeque<Item>,
    /// The transaction being sent (or waiting for its next attempt).
    pub(super) txn: Option<Txn>,
    /// The attempt whose requests are out.
    pub(super) attempt: Option<Attempt>,
    /// The failure state, as persisted.
    pub(super) retry: RetryState,
    /// When the next attempt is due; `None` for now.
    pub(super) retry_at: Option<Instant>,
    /// The deadline this destination has in the machine's timer set.
    pub(super) armed: Option<Instant>,
    /// The `TxnStarted` of its new transaction, not yet reported stored:
    /// the first try waits for it.
    pub(super) unpersisted: Option<OpId>,
}

impl Destination {
    /// Whether anything is waiting to be sent.
    pub(super) fn has_work(&self) -> bool {
        self.txn.is_some() || !self.queue.is_empty()
    }

    /// Items held, the transaction's included.
    pub(super) fn len(&self) -> usize {
        self.queue.len() + self.txn.as_ref().map_or(0, |t| t.items.len())
    }
}

/// One attempt to send a transaction: the direct try, then maybe relays.
#[derive(Debug)]
pub(super) struct Attempt {
    /// What it waits for.
    pub(super) stage: AttemptStage,
    /// Why the direct try failed, once it has.
    pub(super) direct_error: Option<String>,
    /// The longest wait any 429 of this attempt asked for.
    pub(super) retry_after_ms: Option<u64>,
}

/// What an attempt waits for.
#[derive(Debug)]
pub(super) enum AttemptStage {
    /// The answer to the direct request.
    AwaitingDirect(AttemptId),
    /// The answers of every relay, in the order the relays were known.
    AwaitingRelays(Vec<RelayTry>),
}

/// One relay's part of a fan-out.
#[derive(Debug)]
pub(super) struct RelayTry {
    /// The relay.
    pub(super) relay: ServerName,
    /// Its request.
    pub(super) id: AttemptId,
    /// `None` until it answered; then accepted, or why not.
    pub(super) result: Option<Result<(), String>>,
}

impl Attempt {
    /// An attempt whose direct request `id` is out.
    pub(super) fn direct(id: AttemptId) -> Self {
        Self {
            stage: AttemptStage::AwaitingDirect(id),
            direct_error: None,
            retry_after_ms: None,
        }
    }

    /// Notes a 429's wait.
    pub(super) fn note_retry_after(&mut self, ms: Option<u64>) {
        self.retry_after_ms = self.retry_after_ms.max(ms);
    }

    /// Whether relays were asked.
    pub(super) fn relays_tried(&self) -> bool {
        matches!(self.stage, AttemptStage::AwaitingRelays(_))
    }

    /// Whether every request of the attempt has answered.
    pub(super) fn complete(&self) -> bool {
        match &self.stage {
            AttemptStage::AwaitingDirect(_) => false,
            AttemptStage::AwaitingRelays(tries) => tries.iter().all(|t| t.result.is_some()),
        }
    }

    /// The relays that accepted, in relay order.
    pub(super) fn accepted(&self) -> Vec<ServerName> {
        match &self.stage {
            AttemptStage::AwaitingDirect(_) => Vec::new(),
            AttemptStage::AwaitingRelays(tries) => tries
                .iter()
                .filter(|t| matches!(t.result, Some(Ok(()))))
                .map(|t| t.relay.clone())
                .collect(),
        }
    }

    /// Every failure so far: the direct try first, then relays in order.
    pub(super) fn errors(&self) -> Vec<(Target, String)> {
        let mut errors: Vec<(Target, String)> = self
            .direct_error
            .iter()
            .map(|e| (Target::Direct, e.clone()))
            .collect();
        if let AttemptStage::AwaitingRelays(tries) = &self.stage {
            for t in tries {
                if let Some(Err(e)) = &t.result {
                    errors.push((Target::Relay(t.relay.clone()), e.clone()));
                }
            }
        }
        errors
    }
}

/// What an answer means for the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// 2xx.
    Accepted,
    /// A 4xx other than 408 and 429: never retry (from the destination).
    Permanent(String),
    /// Anything else: retry later.
    Transient {
        /// What happened.
        error: String,
        /// A 429's wait.
        retry_after_ms: Option<u64>,
    },
}

impl Verdict {
    /// Classifies how a request ended.
    pub(super) fn of(outcome: &HttpOutcome) -> Self {
        match outcome {
            HttpOutcome::Response { status, .. } if (200..300).contains(status) => Self::Accepted,
            HttpOutcome::Response { status, .. }
                if (400..500).contains(status) && *status != 408 && *status != 429 =>
            {
                Self::Permanent(outcome.describe())
            }
            _ => Self::Transient {
                error: outcome.describe(),
                retry_after_ms: outcome.retry_after_ms(),
            },
        }
    }
}

/// Consecutive direct failures at which a destination is offline (a
/// configured 0 counts as 1).
pub(super) fn offline_threshold(config: &OutboundConfig) -> u32 {
    config.retries_until_assumed_offline.max(1)
}

/// Consecutive failed attempts at which a destination is blacklisted (a
/// configured 0 counts as 1).
pub(super) fn blacklist_threshold(config: &OutboundConfig) -> u32 {
    config.failures_until_blacklist.max(1)
}

/// The backoff between failed attempts.
pub(super) fn backoff(config: &OutboundConfig) -> Backoff {
    Backoff {
        base: config.backoff_base,
        cap: config.backoff_cap,
    }
}

/// A 429's `retry_after_ms` as a wait, at most [`MAX_WAIT`].
pub(super) fn asked_wait(retry_after_ms: Option<u64>) -> Duration {
    Duration::from_millis(retry_after_ms.unwrap_or(0)).min(MAX_WAIT)
}

/// Maps a persisted wall-clock deadline to an [`Instant`] relative to
/// (`now`, `unix`), clamped to `[now, now + cap]`.
pub(super) fn restored_deadline(
    now: Instant,
    unix: UnixMillis,
    next_retry: UnixMillis,
    cap: Duration,
) -> Instant {
    let ahead = Duration::from_millis(next_retry.0.saturating_sub(unix.0));
    later(now, ahead.min(cap).min(MAX_WAIT))
}
