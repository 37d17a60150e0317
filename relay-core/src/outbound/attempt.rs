//! The attempt flow of [`Outbound`]: forming a transaction, the direct
//! try, the relay fan-out, and how an attempt ends.

use super::destination::{
    Attempt, AttemptStage, RelayTry, Verdict, asked_wait, backoff, blacklist_threshold,
    offline_threshold,
};
use super::txn::{self, Txn};
use super::*;
use crate::backoff::later;

impl Outbound {
    /// Forms a transaction if none is in flight and sends it directly.
    /// `false` if it could not be sent at all (and was dropped).
    pub(super) fn start_attempt(&mut self, unix: UnixMillis, name: &ServerName) -> bool {
        let Some(d) = self.destinations.get_mut(name) else {
            return true;
        };
        if d.txn.is_none() {
            let n = txn::prefix_len(&d.queue, self.config.max_pdus, self.config.max_edus);
            let items: Vec<Item> = d.queue.drain(..n).collect();
            let own_id = match items.as_slice() {
                [item] if item.kind == ItemKind::Transaction => {
                    txn::whole_transaction(&item.json, usize::MAX, usize::MAX).ok()
                }
                _ => None,
            };
            let id =
                own_id.unwrap_or_else(|| txn::new_txn_id(unix, self.sink.fresh(), &mut self.rng));
            let t = Txn::new(id, &items, &self.config.server_name, unix);
            let op = self.sink.persist(OutboundChange::TxnStarted {
                destination: name.clone(),
                txn_id: t.id.clone(),
                items: t.items.clone(),
            });
            d.txn = Some(t);
            // Sent once it is stored (see `handle_persisted`).
            d.unpersisted = Some(op);
            self.persist_waits.insert(op, name.clone());
            return true;
        }
        let Some(t) = &d.txn else {
            return true;
        };
        match t.request(&self.config, name, &Target::Direct) {
            Ok(request) => {
                let attempt = AttemptId(self.sink.fresh());
                d.attempt = Some(Attempt::direct(attempt));
                self.requests.insert(attempt, name.clone());
                self.sink.outputs.push(Output::Transmit {
                    attempt,
                    destination: name.clone(),
                    target: Target::Direct,
                    request,
                });
                true
            }
            Err(error) => {
                self.drop_txn(name, error);
                false
            }
        }
    }

    /// The direct try of `name`'s attempt ended.
    pub(super) fn on_direct(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        name: &ServerName,
        verdict: Verdict,
    ) {
        match verdict {
            Verdict::Accepted => {
                let was_offline = self.is_offline(name);
                let Some((txn_id, items)) = self.finish_txn(name) else {
                    return;
                };
                if let Some(d) = self.destinations.get_mut(name) {
                    d.retry_at = None;
                }
                self.update_retry(name, |r| *r = RetryState::default());
                if was_offline {
                    self.sink.event(Event::BackOnline {
                        destination: name.clone(),
                    });
                }
                self.sink.event(Event::Delivered {
                    destination: name.clone(),
                    txn_id,
                    via: Via::Direct,
                    items,
                    errors: Vec::new(),
                });
                self.settle(now, unix, name);
            }
            Verdict::Permanent(error) => {
                self.drop_txn(name, error);
                self.settle(now, unix, name);
            }
            Verdict::Transient {
                error,
                retry_after_ms,
            } => {
                if let Some(a) = self
                    .destinations
                    .get_mut(name)
                    .and_then(|d| d.attempt.as_mut())
                {
                    a.direct_error = Some(error);
                    a.note_retry_after(retry_after_ms);
                }
                let threshold = offline_threshold(&self.config);
                let (old, new) = self.update_retry(name, |r| {
                    r.direct_failures = r.direct_failures.saturating_add(1);
                });
                if old.direct_failures < threshold && new.direct_failures >= threshold {
                    self.sink.event(Event::AssumedOffline {
                        destination: name.clone(),
                    });
                }
                if new.direct_failures >= threshold {
                    self.fan_out(name);
                }
                self.finish_if_complete(now, unix, name);
            }
        }
    }

    /// A relay of `name`'s fan-out answered request `attempt`.
    pub(super) fn on_relay(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        name: &ServerName,
        attempt: AttemptId,
        verdict: Verdict,
    ) {
        let Some(a) = self
            .destinations
            .get_mut(name)
            .and_then(|d| d.attempt.as_mut())
        else {
            return;
        };
        let AttemptStage::AwaitingRelays(tries) = &mut a.stage else {
            return;
        };
        let Some(t) = tries.iter_mut().find(|t| t.id == attempt) else {
            return;
        };
        let (result, retry_after_ms) = match verdict {
            Verdict::Accepted => (Ok(()), None),
            Verdict::Permanent(error) => (Err(error), None),
            Verdict::Transient {
                error,
                retry_after_ms,
            } => (Err(error), retry_after_ms),
        };
        t.result = Some(result);
        a.note_retry_after(retry_after_ms);
        self.finish_if_complete(now, unix, name);
    }

    /// Sends `name`'s transaction to every relay known for it now.
    fn fan_out(&mut self, name: &ServerName) {
        let Some(relays) = self.relays.get(name) else {
            return;
        };
        let Some(d) = self.destinations.get_mut(name) else {
            return;
        };
        let (Some(t), Some(a)) = (&d.txn, &mut d.attempt) else {
            return;
        };
        let mut tries = Vec::with_capacity(relays.len());
        for relay in relays {
            let id = AttemptId(self.sink.fresh());
            let target = Target::Relay(relay.clone());
            let result = match t.request(&self.config, name, &target) {
                Ok(request) => {
                    self.requests.insert(id, name.clone());
                    self.sink.outputs.push(Output::Transmit {
                        attempt: id,
                        destination: name.clone(),
                        target,
                        request,
                    });
                    None
                }
                Err(error) => Some(Err(error)),
            };
            tries.push(RelayTry {
                relay: relay.clone(),
                id,
                result,
            });
        }
        a.stage = AttemptStage::AwaitingRelays(tries);
    }

    /// Ends `name`'s attempt if every request of it has answered (or the
    /// direct try failed and no relay was asked).
    fn finish_if_complete(&mut self, now: Instant, unix: UnixMillis, name: &ServerName) {
        let Some(a) = self
            .destinations
            .get_mut(name)
            .and_then(|d| d.attempt.as_ref())
        else {
            return;
        };
        let no_relays =
            matches!(a.stage, AttemptStage::AwaitingDirect(_)) && a.direct_error.is_some();
        if !(no_relays || a.complete()) {
            return;
        }
        let accepted = a.accepted();
        let errors = a.errors();
        if accepted.is_empty() {
            self.fail_attempt(now, unix, name);
            return;
        }
        let Some((txn_id, items)) = self.finish_txn(name) else {
            return;
        };
        if let Some(d) = self.destinations.get_mut(name) {
            d.retry_at = None;
        }
        self.update_retry(name, |r| {
            r.failed_attempts = 0;
            r.next_retry = None;
            r.blacklisted = false;
        });
        self.sink.event(Event::Delivered {
            destination: name.clone(),
            txn_id,
            via: Via::Relays(accepted),
            items,
            errors,
        });
        self.settle(now, unix, name);
    }

    /// Nobody accepted `name`'s transaction in this attempt: back off, or
    /// blacklist.
    fn fail_attempt(&mut self, now: Instant, unix: UnixMillis, name: &ServerName) {
        let Some(d) = self.destinations.get_mut(name) else {
            return;
        };
        let (Some(a), Some(t)) = (d.attempt.take(), &d.txn) else {
            return;
        };
        let txn_id = t.id.clone();
        let failures = d.retry.failed_attempts.saturating_add(1);
        let blacklisted = failures >= blacklist_threshold(&self.config);
        let (retry_at, next_retry) = if blacklisted {
            (None, None)
        } else {
            let wait = backoff(&self.config)
                .wait(failures, &mut self.rng)
                .max(asked_wait(a.retry_after_ms));
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            (Some(later(now, wait)), Some(unix.saturating_add_ms(ms)))
        };
        d.retry_at = retry_at;
        self.update_retry(name, |r| {
            r.failed_attempts = failures;
            r.next_retry = next_retry;
            r.blacklisted = blacklisted;
        });
        self.sink.event(Event::AttemptFailed {
            destination: name.clone(),
            txn_id,
            errors: a.errors(),
            relays_tried: a.relays_tried(),
            retry_at,
        });
        if blacklisted {
            self.sink.event(Event::Blacklisted {
                destination: name.clone(),
            });
        }
        self.settle(now, unix, name);
    }

    /// Ends `name`'s transaction (delivered or dropped) and persists that.
    fn finish_txn(&mut self, name: &ServerName) -> Option<(TxnId, Vec<ItemId>)> {
        let d = self.destinations.get_mut(name)?;
        d.attempt = None;
        let t = d.txn.take()?;
        self.sink.persist(OutboundChange::TxnFinished {
            destination: name.clone(),
            items: t.items.clone(),
        });
        Some((t.id, t.items))
    }

    /// Drops `name`'s transaction for good.
    fn drop_txn(&mut self, name: &ServerName, error: String) {
        if let Some((txn_id, items)) = self.finish_txn(name) {
            self.sink.event(Event::FailedPermanently {
                destination: name.clone(),
                txn_id,
                items,
                error,
            });
        }
    }

    /// Changes `name`'s failure state, persisting it if it changed.
    /// Returns the old and the new state.
    pub(super) fn update_retry(
        &mut self,
        name: &ServerName,
        change: impl FnOnce(&mut RetryState),
    ) -> (RetryState, RetryState) {
        let Some(d) = self.destinations.get_mut(name) else {
            return Default::default();
        };
        let old = d.retry;
        change(&mut d.retry);
        let new = d.retry;
        if new != old {
            self.sink.persist(OutboundChange::Retry {
                destination: name.clone(),
                state: new,
            });
        }
        (old, new)
    }
}
