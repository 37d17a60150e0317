//! Per-request policy: everything between the raw request and the storage
//! operation or response it leads to.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::config::{MAX_EDUS, MAX_PDU_BYTES, MAX_PDUS, RelayConfig};
use super::{Request, RequestBody, Response};
use crate::auth::{self, AuthError, KeyCache, KeyLookup, KeyRing};
use crate::canonical;
use crate::error::{ErrCode, MatrixError};
use crate::id::{EntryId, KeyId, ServerName};
use crate::request::{self, Route};
use crate::server_keys;
use crate::signing::VerifyKey;
use crate::store::{InsertOutcome, NewEntry, QueuedEntry, QuotaKind, StoreError};
use crate::time::UnixMillis;

/// What a request leads to.
pub(super) enum Action {
    Respond(Response),
    Store(NewEntry),
    Fetch {
        destination: ServerName,
        ack: Option<EntryId>,
    },
    /// The origin's key is unknown but may be fetched: ask again once the
    /// keys of this server were fetched.
    NeedKeys(ServerName),
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

/// Why a request got no further.
enum Fail {
    Refuse(MatrixError),
    NeedKeys(ServerName),
}

impl From<MatrixError> for Fail {
    fn from(e: MatrixError) -> Self {
        Self::Refuse(e)
    }
}

/// Handles `request`; `may_fetch` says whether an unknown origin's keys
/// may be fetched (else an unknown key is 401 at once).
pub(super) fn handle(
    config: &RelayConfig,
    keys: &VerifyKeys<'_>,
    unix: UnixMillis,
    request: &Request,
    may_fetch: &dyn Fn(&ServerName) -> bool,
) -> Action {
    match handle_inner(config, keys, unix, request, may_fetch) {
        Ok(action) => action,
        Err(Fail::Refuse(e)) => Action::Respond(Response::error(&e)),
        Err(Fail::NeedKeys(server)) => Action::NeedKeys(server),
    }
}

fn handle_inner(
    config: &RelayConfig,
    keys: &VerifyKeys<'_>,
    unix: UnixMillis,
    request: &Request,
    may_fetch: &dyn Fn(&ServerName) -> bool,
) -> Result<Action, Fail> {
    match request::route(&request.method, &request.target)? {
        Route::ServerKeys => Ok(Action::Respond(server_keys(config, unix)?)),
        Route::Version => {
            let body = json!({"server": {"name": "matrix-relay", "version": config.version}});
            Ok(Action::Respond(Response::ok(body.to_string().into_bytes())))
        }
        Route::SendRelay { txn_id, user_id } => {
            let (origin, content) = authenticate(config, keys, unix, request, may_fetch)?;
            // A bad user ID names no destination to check policy for; a
            // bad txn ID is content, checked after policy.
            let destination = request::user_id(user_id)?.server_name();
            if config.denied_origins.contains(&origin) {
                return Err(forbidden(format!("{origin} may not use this relay")).into());
            }
            if !config.serve.serves(&destination) {
                return Err(forbidden(format!("this relay does not serve {destination}")).into());
            }
            let txn_id = request::txn_id(txn_id)?;
            canonical_content(content.as_ref())?;
            let transaction = transaction(content, &origin)?;
            Ok(Action::Store(NewEntry {
                origin,
                destination,
                txn_id,
                transaction,
                received: unix,
            }))
        }
        Route::RelayTxn { user_id } => {
            let (origin, content) = authenticate(config, keys, unix, request, may_fetch)?;
            let destination = request::user_id(user_id)?.server_name();
            if origin != destination {
                return Err(forbidden("only the destination may read its queue").into());
            }
            let ack = entry_id(content.as_ref())?;
            canonical_content(content.as_ref())?;
            Ok(Action::Fetch { destination, ack })
        }
    }
}

fn forbidden(message: impl Into<String>) -> MatrixError {
    MatrixError::new(ErrCode::Forbidden, message)
}

fn bad_json(message: impl Into<String>) -> MatrixError {
    MatrixError::new(ErrCode::BadJson, message)
}

/// Size (413) → header (401) → destination (401) → body parses (400) →
/// key (401, or fetch it first) → signature (401). Returns the verified
/// origin and the parsed body.
fn authenticate(
    config: &RelayConfig,
    keys: &VerifyKeys<'_>,
    unix: UnixMillis,
    request: &Request,
    may_fetch: &dyn Fn(&ServerName) -> bool,
) -> Result<(ServerName, Option<Value>), Fail> {
    let RequestBody::Complete(body) = &request.body else {
        return Err(MatrixError::new(
            ErrCode::TooLarge,
            format!("request body is over {} bytes", config.max_body_bytes),
        )
        .into());
    };
    let unauthorized = |e: AuthError| MatrixError::new(ErrCode::Unauthorized, e.to_string());
    let claimed = auth::parse_authorization(
        request.authorization.iter().map(String::as_str),
        &config.server_name,
    )
    .map_err(unauthorized)?;
    let content = if body.is_empty() {
        None
    } else {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| MatrixError::new(ErrCode::NotJson, format!("body is not JSON: {e}")))?;
        Some(value)
    };
    let verified = auth::verify_claimed(
        &claimed,
        &config.server_name,
        &request.method,
        &request.target,
        content.as_ref(),
        keys,
        unix,
    );
    match verified {
        Ok(()) => Ok((claimed.origin, content)),
        Err(AuthError::UnknownKey { origin, .. })
            if !config.keys.is_pinned(&origin) && may_fetch(&origin) =>
        {
            Err(Fail::NeedKeys(origin))
        }
        Err(e) => Err(unauthorized(e).into()),
    }
}

/// A body must have a canonical JSON form (no fractions, no integers beyond
/// ±(2^53−1)): what is stored is relayed and signed again, and Matrix has
/// no such numbers. Checked after authentication and permission.
fn canonical_content(content: Option<&Value>) -> Result<(), MatrixError> {
    match content.map(canonical::to_canonical_string) {
        Some(Err(e)) => Err(bad_json(e.to_string())),
        _ => Ok(()),
    }
}

/// Checks a send_relay body and returns the transaction to store, its
/// `origin` set to the authenticated sender.
fn transaction(content: Option<Value>, origin: &ServerName) -> Result<Vec<u8>, MatrixError> {
    let Some(content) = content else {
        return Err(MatrixError::new(
            ErrCode::NotJson,
            "a transaction body is required",
        ));
    };
    let Value::Object(mut txn) = content else {
        return Err(bad_json("the transaction must be a JSON object"));
    };
    let Some(Value::Array(pdus)) = txn.get("pdus") else {
        return Err(bad_json("`pdus` must be an array"));
    };
    if pdus.len() > MAX_PDUS {
        return Err(bad_json(format!("max {MAX_PDUS} pdus / {MAX_EDUS} edus")));
    }
    // The shape first (400), then the sizes within it (413).
    match txn.get("edus") {
        None | Some(Value::Null) => {}
        Some(Value::Array(edus)) if edus.len() <= MAX_EDUS => {}
        Some(Value::Array(_)) => {
            return Err(bad_json(format!("max {MAX_PDUS} pdus / {MAX_EDUS} edus")));
        }
        Some(_) => return Err(bad_json("`edus` must be an array")),
    }
    for pdu in pdus {
        let size = serde_json::to_vec(pdu).map_or(usize::MAX, |v| v.len());
        if size > MAX_PDU_BYTES {
            return Err(MatrixError::new(
                ErrCode::TooLarge,
                format!("a PDU is over {MAX_PDU_BYTES} bytes"),
            ));
        }
    }
    txn.insert(
        "origin".to_owned(),
        Value::String(origin.as_str().to_owned()),
    );
    serde_json::to_vec(&txn).map_err(|e| bad_json(e.to_string()))
}

/// The `entry_id` of a relay_txn body: absent body means 0, which acks
/// nothing.
fn entry_id(content: Option<&Value>) -> Result<Option<EntryId>, MatrixError> {
    let Some(content) = content else {
        return Ok(None);
    };
    let id = content
        .as_object()
        .and_then(|o| o.get("entry_id"))
        .ok_or_else(|| bad_json("expected {\"entry_id\": <integer >= 0>}"))?;
    match id.as_u64() {
        Some(0) => Ok(None),
        Some(n) => Ok(Some(EntryId(n))),
        None if id.as_i64().is_some() => Err(bad_json("entry_id must not be negative")),
        None => Err(bad_json("entry_id must be an integer")),
    }
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
                QuotaKind::Origin => "this origin has queued too much",
                QuotaKind::Total => "the relay is full",
            };
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

pub(super) fn fetched_response(result: Result<Option<QueuedEntry>, StoreError>) -> Response {
    let render = |entry: Option<&QueuedEntry>| -> Result<Vec<u8>, MatrixError> {
        let internal =
            |e: &dyn std::fmt::Display| MatrixError::new(ErrCode::Unknown, e.to_string());
        let raw: Box<RawValue> = match entry {
            Some(e) => {
                let text = std::str::from_utf8(&e.transaction).map_err(|e| internal(&e))?;
                RawValue::from_string(text.to_owned()).map_err(|e| internal(&e))?
            }
            None => {
                RawValue::from_string(EMPTY_TRANSACTION.to_owned()).map_err(|e| internal(&e))?
            }
        };
        let wire = RelayTxnResponse {
            transaction: &raw,
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
