//! Resolving a request's key once its head has passed: known (pinned, a
//! P2P name, cached), or fetched within the limits on key fetches, or 401;
//! and, for a request that goes on, its origin counted against its client
//! address's new origins.

use super::check::{ClaimedHead, KeyCheck, unauthorized};
use super::limits::Client;
use super::{
    MAX_HELD_BYTES, MAX_HELD_REQUESTS, OpId, Output, PendingOp, Relay, RequestId, Response,
    handlers,
};
use crate::auth::{self, AuthError};
use crate::http::OutgoingRequest;
use crate::id::ServerName;
use crate::server_keys::MAX_KEY_DOCUMENT_BYTES;
use crate::time::{Instant, UnixMillis};

/// How a request whose origin's key is unknown gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchPlan {
    /// By waiting for the fetch under way.
    Join,
    /// By a fetch of its own.
    Start,
}

/// Whether a request whose origin's key is unknown may wait for the
/// origin's keys to be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFetch {
    /// Yes, if the configuration and the limits allow it.
    Allowed,
    /// No: they were fetched (or tried) for this request already.
    Tried,
}

impl Relay {
    /// Resolves the origin's key: then the body is to be read; or its keys
    /// are to be fetched first; or 401. An origin new to `client` counts
    /// against its new origins (429 past them) before either.
    pub(super) fn authenticate(
        &mut self,
        (now, unix): (Instant, UnixMillis),
        id: RequestId,
        client: Client,
        head: ClaimedHead,
        fetch: KeyFetch,
    ) {
        let keys = handlers::VerifyKeys {
            configured: &self.config.keys,
            fetched: &self.fetched_keys,
        };
        let key = match auth::resolve_key(&head.claimed, &keys, unix) {
            Ok(key) => Ok(key),
            Err(e) => {
                let plan = match e {
                    AuthError::UnknownKey { .. } if fetch == KeyFetch::Allowed => {
                        self.key_fetch(now, &head)
                    }
                    _ => None,
                };
                let Some(plan) = plan else {
                    self.respond(id, Response::error(&unauthorized(e)));
                    return;
                };
                Err((plan, e))
            }
        };
        // Counted only for a request that goes on, to its body or to wait
        // for keys; an origin pinned by the operator is no stranger's.
        let origin = &head.claimed.origin;
        if !self.config.keys.is_pinned(origin)
            && let Err(e) = self.limits.bring(now, client, origin)
        {
            self.respond(id, Response::error(&e));
            return;
        }
        match key {
            Ok(key) => {
                let limit = self.config.max_body_bytes;
                let check = head.into_check(id, key, self.config.server_name.clone(), limit);
                self.outputs.push(Output::ReadBody {
                    request: id,
                    limit,
                    check,
                });
            }
            Err((FetchPlan::Join, _)) => self.hold(id, client, head),
            Err((FetchPlan::Start, e)) => {
                if self.limits.start_fetch(now, origin) {
                    self.fetch_keys(origin.clone());
                    self.hold(id, client, head);
                } else {
                    self.respond(id, Response::error(&unauthorized(e)));
                }
            }
        }
    }

    /// Whether `head`, whose origin has no known key, may wait for the
    /// origin's keys, and whether a fetch is to start for it: not past the
    /// bounds on held heads, nor for a pinned origin, nor within the
    /// origin's interval since its last fetch.
    fn key_fetch(&self, now: Instant, head: &ClaimedHead) -> Option<FetchPlan> {
        let origin = &head.claimed.origin;
        if !self.config.fetch_keys
            || self.config.keys.is_pinned(origin)
            || self.held >= MAX_HELD_REQUESTS
            || self.held_bytes + head.held_bytes() > MAX_HELD_BYTES
        {
            return None;
        }
        if self.awaiting_keys.contains_key(origin) {
            Some(FetchPlan::Join)
        } else {
            self.limits
                .fetch_due(now, origin)
                .then_some(FetchPlan::Start)
        }
    }

    /// Holds `head` until its origin's keys come.
    fn hold(&mut self, id: RequestId, client: Client, head: ClaimedHead) {
        self.held += 1;
        self.held_bytes += head.held_bytes();
        self.awaiting_keys
            .entry(head.claimed.origin.clone())
            .or_default()
            .push((id, client, head));
    }

    /// Asks for `server`'s keys.
    fn fetch_keys(&mut self, server: ServerName) {
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
                max_response_bytes: MAX_KEY_DOCUMENT_BYTES,
            },
            check: KeyCheck { server },
        });
    }
}
