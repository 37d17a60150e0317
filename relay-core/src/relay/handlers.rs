//! Per-request policy before the body: everything between a request's
//! head and the key its body will be checked with, and the responses to
//! storage results.

use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::check::{ClaimedHead, Intent, too_large, unauthorized};
use super::config::RelayConfig;
use super::limits::Endpoint;
use super::{RequestHead, Response};
use crate::auth::{self, KeyCache, KeyLookup, KeyRing};
use crate::error::{ErrCode, MatrixError};
use crate::id::{EntryId, KeyId, ServerName};
use crate::request::{self, Route};
use crate::server_keys;
use crate::signing::VerifyKey;
use crate::store::{AckBatch, InsertOutcome, QueuedEntry, QuotaKind, StoreError};
use crate::time::UnixMillis;

/// What a request's head leads to.
pub(super) enum Head {
    /// An answer without the body: an endpoint that needs none, or a
    /// refusal.
    Respond(Response),
    /// Its origin's key is to be resolved, then its body read.
    Authenticate(ClaimedHead),
}

/// The keys requests are verified with: the configured ones, then those
/// fetched at run time.
pub(super) struct VerifyKeys<'a> {
    pub(super) configured: &'a KeyRing,
    pub(super) fetched: &'a KeyCache,
}

impl KeyLookup for VerifyKeys<'_> {
    fn verify_key(&self, origin: &ServerName, key_id: &KeyId, at: UnixMillis) -> Option<VerifyKey> {
        self.configured
            .verify_key(origin, key_id, at)
            .or_else(|| self.fetched.verify_key(origin, key_id, at))
    }
}

/// Route (404, 405) → the endpoint's request budget for the client,
/// which `admit` takes (429) → declared size (413) → `X-Matrix` header
/// (401) → its destination (401); the permission is decided here too, and
/// reported only after the signature.
pub(super) fn head(
    config: &RelayConfig,
    unix: UnixMillis,
    head: RequestHead,
    admit: impl FnOnce(Endpoint) -> Result<(), MatrixError>,
) -> Head {
    match head_inner(config, unix, head, admit) {
        Ok(next) => next,
        Err(e) => Head::Respond(Response::error(&e)),
    }
}

fn head_inner(
    config: &RelayConfig,
    unix: UnixMillis,
    head: RequestHead,
    admit: impl FnOnce(Endpoint) -> Result<(), MatrixError>,
) -> Result<Head, MatrixError> {
    let decision = match request::route(&head.method, &head.target)? {
        Route::ServerKeys => return Ok(Head::Respond(server_keys(config, unix)?)),
        Route::Version => {
            let body = json!({"server": {"name": "matrix-relay", "version": config.version}});
            return Ok(Head::Respond(Response::ok(body.to_string().into_bytes())));
        }
        Route::SendRelay { txn_id, user_id } => {
            admit(Endpoint::SendRelay)?;
            let claimed = claim(config, &head)?;
            let decision = may_store(config, &claimed.origin, txn_id, user_id);
            (claimed, decision)
        }
        Route::RelayTxn { user_id } => {
            admit(Endpoint::RelayTxn)?;
            let claimed = claim(config, &head)?;
            let decision = may_fetch(&claimed.origin, user_id).map(|destination| Intent::Fetch {
                destination,
                batch: false,
            });
            (claimed, decision)
        }
        // The batch drain shares relay_txn's request budget: it is the same
        // work, done more per request.
        Route::RelayTxns { user_id } => {
            admit(Endpoint::RelayTxn)?;
            let claimed = claim(config, &head)?;
            let decision = may_fetch(&claimed.origin, user_id).map(|destination| Intent::Fetch {
                destination,
                batch: true,
            });
            (claimed, decision)
        }
    };
    let (claimed, decision) = decision;
    Ok(Head::Authenticate(ClaimedHead {
        method: head.method,
        target: head.target,
        claimed,
        decision,
    }))
}

/// The declared size, then the `X-Matrix` header and its destination.
fn claim(config: &RelayConfig, head: &RequestHead) -> Result<auth::Claimed, MatrixError> {
    if head
        .content_length
        .is_some_and(|n| n > config.max_body_bytes as u64)
    {
        return Err(too_large(config.max_body_bytes));
    }
    auth::parse_authorization(
        head.authorization.iter().map(String::as_str),
        &config.server_name,
    )
    .map_err(unauthorized)
}

/// Whether `origin` may store for the user of `user_id` under `txn_id`. A
/// bad user ID names no destination to check policy for; a bad txn ID is
/// content, checked after policy.
fn may_store(
    config: &RelayConfig,
    origin: &ServerName,
    txn_id: &str,
    user_id: &str,
) -> Result<Intent, MatrixError> {
    let destination = request::user_id(user_id)?.server_name();
    if config.denied_origins.contains(origin) {
        return Err(forbidden(format!("{origin} may not use this relay")));
    }
    if !config.serve.serves(&destination) {
        return Err(forbidden(format!(
            "this relay does not serve {destination}"
        )));
    }
    let txn_id = request::txn_id(txn_id)?;
    Ok(Intent::Store {
        destination,
        txn_id,
    })
}

/// Whether `origin` may read the queue of `user_id`'s server (only that
/// server may); the destination if so.
fn may_fetch(origin: &ServerName, user_id: &str) -> Result<ServerName, MatrixError> {
    let destination = request::user_id(user_id)?.server_name();
    if *origin != destination {
        return Err(forbidden("only the destination may read its queue"));
    }
    Ok(destination)
}

fn forbidden(message: impl Into<String>) -> MatrixError {
    MatrixError::new(ErrCode::Forbidden, message)
}

fn server_keys(config: &RelayConfig, unix: UnixMillis) -> Result<Response, MatrixError> {
    let valid_until = unix.saturating_add_ms(config.key_validity_ms);
    let doc = server_keys::document(&config.server_name, &config.signing_key, valid_until)
        .map_err(|e| MatrixError::new(ErrCode::Unknown, e.to_string()))?;
    Ok(Response::ok(doc.to_string().into_bytes()))
}

/// How long a sender is asked to wait when the disk is short: the
/// recipient's poll interval, within which an online destination drains
/// its queue and so gives room back.
const DISK_LOW_RETRY_AFTER_MS: u64 = 30_000;

pub(super) fn stored_response(result: Result<InsertOutcome, StoreError>) -> Response {
    let error = match result {
        Ok(
            InsertOutcome::Stored(_)
            | InsertOutcome::Duplicate(_)
            | InsertOutcome::AlreadyDelivered,
        ) => {
            return Response::ok(b"{}".to_vec());
        }
        Ok(InsertOutcome::QuotaExceeded(kind)) => {
            let what = match kind {
                QuotaKind::Destination => "the destination's queue is full",
                QuotaKind::OriginShare => "the origin holds its share of the destination's queue",
                QuotaKind::Origin => "this origin has queued too much",
                QuotaKind::TotalEntries => "the relay holds its most entries",
                QuotaKind::Total => "the relay is full",
            };
            // No wait is asked: room comes back only as the destination
            // drains, which may be days; the sender's own backoff fits.
            MatrixError::new(ErrCode::LimitExceeded, what)
        }
        Ok(InsertOutcome::DiskLow) => MatrixError {
            retry_after_ms: Some(DISK_LOW_RETRY_AFTER_MS),
            ..MatrixError::new(ErrCode::Unavailable, "the relay is short of disk space")
        },
        Err(e) => MatrixError::new(ErrCode::Unknown, e.to_string()),
    };
    Response::error(&error)
}

/// A batch drain answer: the entries in order, and whether more are
/// queued.
#[derive(Serialize)]
struct RelayTxnsResponse<'a> {
    transactions: Vec<BatchEntry<'a>>,
    entries_queued: bool,
}

/// One entry of a batch drain answer.
#[derive(Serialize)]
struct BatchEntry<'a> {
    entry_id: EntryId,
    txn_id: &'a str,
    transaction: &'a RawValue,
}

pub(super) fn batch_response(result: Result<AckBatch, StoreError>) -> Response {
    let render = |batch: &AckBatch| -> Result<Vec<u8>, MatrixError> {
        let transactions = batch
            .entries
            .iter()
            .map(|e| {
                Ok(BatchEntry {
                    entry_id: e.entry_id,
                    txn_id: e.txn_id.as_str(),
                    transaction: raw_transaction(e)?,
                })
            })
            .collect::<Result<_, MatrixError>>()?;
        let wire = RelayTxnsResponse {
            transactions,
            entries_queued: batch.more,
        };
        serde_json::to_vec(&wire).map_err(|e| internal(&e))
    };
    let rendered = result
        .map_err(|e| MatrixError::new(ErrCode::Unknown, e.to_string()))
        .and_then(|batch| render(&batch));
    match rendered {
        Ok(body) => Response::ok(body),
        Err(e) => Response::error(&e),
    }
}

/// A `relay_txn` answer, with this project's `txn_id` addition.
#[derive(Serialize)]
struct RelayTxnResponse<'a> {
    transaction: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry_id: Option<EntryId>,
    entries_queued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    txn_id: Option<&'a str>,
}

const EMPTY_TRANSACTION: &str = r#"{"origin":"","origin_server_ts":0,"pdus":[],"edus":[]}"#;

fn internal(e: &dyn std::fmt::Display) -> MatrixError {
    MatrixError::new(ErrCode::Unknown, e.to_string())
}

/// A stored transaction as JSON to embed verbatim.
fn raw_transaction(entry: &QueuedEntry) -> Result<&RawValue, MatrixError> {
    let text = std::str::from_utf8(&entry.transaction).map_err(|e| internal(&e))?;
    serde_json::from_str(text).map_err(|e| internal(&e))
}

pub(super) fn fetched_response(result: Result<Option<QueuedEntry>, StoreError>) -> Response {
    let render = |entry: Option<&QueuedEntry>| -> Result<Vec<u8>, MatrixError> {
        let empty: &RawValue = serde_json::from_str(EMPTY_TRANSACTION).map_err(|e| internal(&e))?;
        let raw = match entry {
            Some(e) => raw_transaction(e)?,
            None => empty,
        };
        let wire = RelayTxnResponse {
            transaction: raw,
            entry_id: entry.map(|e| e.entry_id),
            entries_queued: entry.is_some(),
            txn_id: entry.map(|e| e.txn_id.as_str()),
        };
        serde_json::to_vec(&wire).map_err(|e| internal(&e))
    };
    let rendered = match result {
        Ok(entry) => render(entry.as_ref()),
        Err(e) => Err(MatrixError::new(ErrCode::Unknown, e.to_string())),
    };
    match rendered {
        Ok(body) => Response::ok(body),
        Err(e) => Response::error(&e),
    }
}
