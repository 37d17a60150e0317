//! The `relay_txn` exchange as the recipient sees it: the signed request it
//! sends, and the relay's answer checked and reduced to what the machine
//! needs.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::DedupeKey;
use crate::auth::sign_request;
use crate::canonical::{CanonicalJsonError, MAX_SAFE_INTEGER, to_canonical_string};
use crate::http::{DEFAULT_MAX_RESPONSE_BYTES, HttpOutcome, OutgoingRequest};
use crate::id::{EntryId, ServerName, TxnId};
use crate::request::percent_encode_segment;
use crate::signing::SigningKey;

/// The `relay_txn` request of `us` to `relay`, acknowledging `ack` (or
/// nothing: `entry_id` 0).
///
/// Implementation note: the user ID is `@user:<our name>`, as Dendrite's
/// retriever sends it; the relay only looks at its server name.
pub(super) fn relay_txn_request(
    us: &ServerName,
    key: &SigningKey,
    relay: &ServerName,
    ack: Option<EntryId>,
) -> Result<OutgoingRequest, CanonicalJsonError> {
    let user = format!("@user:{}", us.as_str());
    let target = format!(
        "/_matrix/federation/v1/relay_txn/{}",
        percent_encode_segment(&user)
    );
    let content = serde_json::json!({ "entry_id": ack.map_or(0, |e| e.0) });
    let authorization = sign_request(key, us, relay, "GET", &target, Some(&content))?;
    Ok(OutgoingRequest {
        server: relay.clone(),
        method: "GET",
        target,
        authorization,
        body: content.to_string().into_bytes(),
        max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
    })
}

/// The batch drain request of `us` to `relay` (this project's
/// extension), acknowledging `acks` and asking for as many entries as the
/// relay hands out at once, and to wait up to `wait` for one when none is
/// queued.
pub(super) fn relay_txns_request(
    us: &ServerName,
    key: &SigningKey,
    relay: &ServerName,
    acks: &[EntryId],
    wait: Option<std::time::Duration>,
) -> Result<OutgoingRequest, CanonicalJsonError> {
    let user = format!("@user:{}", us.as_str());
    let target = crate::request::relay_txns_path(&percent_encode_segment(&user));
    let ids: Vec<u64> = acks.iter().map(|e| e.0).collect();
    let mut content = serde_json::json!({ "ack": ids });
    if let Some(wait) = wait {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        content["timeout_ms"] = serde_json::json!(ms.min(MAX_SAFE_INTEGER.unsigned_abs()));
    }
    let authorization = sign_request(key, us, relay, "POST", &target, Some(&content))?;
    Ok(OutgoingRequest {
        server: relay.clone(),
        method: "POST",
        target,
        authorization,
        body: content.to_string().into_bytes(),
        // 100 entries of at most 1 MiB past the first (itself at most a
        // request body) and the envelope: the relay's bounds.
        max_response_bytes: BATCH_MAX_RESPONSE_BYTES,
    })
}

/// The most a batch drain answer may take: the relay's bound on the
/// entries past the first (1 MiB), the first (up to a 4 MiB body), and
/// room for the envelope.
const BATCH_MAX_RESPONSE_BYTES: usize = 6 << 20;

/// A well-formed batch drain answer: the entries in order. Whether more
/// are queued does not matter: the next request, which carries their
/// acknowledgements, asks.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) entries: Vec<Entry>,
}

/// The batch answer's fields.
#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow, default)]
    transactions: Option<Vec<WireAnswer<'a>>>,
    #[serde(default)]
    entries_queued: Option<Value>,
}

/// Whether `outcome` says the relay lacks the batch drain: a 404, 405 or
/// 501 (a Dendrite relay), a 400 `M_UNRECOGNIZED` (as some servers answer
/// an unknown endpoint), or a 200 that is a `relay_txn` answer (a relay
/// that routes by less than the whole path). None of these applied the
/// request's acknowledgements.
pub(super) fn lacks_batch(outcome: &HttpOutcome) -> bool {
    let HttpOutcome::Response { status, body, .. } = outcome else {
        return false;
    };
    let json = || serde_json::from_slice::<Value>(body).ok();
    match status {
        404 | 405 | 501 => true,
        400 => json().is_some_and(|v| v["errcode"] == "M_UNRECOGNIZED"),
        200 => json()
            .is_some_and(|v| v.get("transactions").is_none() && v.get("entries_queued").is_some()),
        _ => false,
    }
}

/// Checks how a batch drain request ended; each entry as
/// [`parse_answer`] checks one.
pub(super) fn parse_batch(outcome: &HttpOutcome) -> Result<Batch, Failure> {
    let body = match outcome {
        HttpOutcome::Response {
            status: 200, body, ..
        } => body,
        other => return Err(Failure::Request(other.describe())),
    };
    let malformed = |what: &str| Failure::Malformed(what.to_owned());
    let wire: WireBatch<'_> = serde_json::from_slice(body)
        .map_err(|e| Failure::Malformed(format!("not a batch drain answer: {e}")))?;
    let more = match wire.entries_queued {
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(malformed("entries_queued is not a boolean")),
        None => return Err(malformed("entries_queued is missing")),
    };
    let list = wire
        .transactions
        .ok_or_else(|| malformed("transactions is missing"))?;
    if more && list.is_empty() {
        return Err(malformed("entries_queued is true but no transaction came"));
    }
    let entries = list.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    Ok(Batch { entries })
}

/// A well-formed `relay_txn` answer.
#[derive(Debug)]
pub(super) enum Answer {
    /// `entries_queued: false`: nothing left.
    Drained,
    /// One queued transaction.
    Entry(Entry),
}

/// A transaction a relay handed out, with the keys it is known by.
#[derive(Debug)]
pub(super) struct Entry {
    /// Its entry on the relay.
    pub(super) entry_id: EntryId,
    /// The transaction's `origin` (the relay's authenticated sender).
    pub(super) origin: ServerName,
    /// The sender's txn ID, when the relay sent one.
    pub(super) txn_id: Option<TxnId>,
    /// The transaction's JSON as the relay sent it.
    pub(super) transaction: Vec<u8>,
    /// The keys it is remembered by: `Txn` and `TxnDigest` when `txn_id`
    /// is known, else `Digest`.
    pub(super) keys: Vec<DedupeKey>,
    /// The keys its copies were remembered by: `Txn` and `Digest` when
    /// `txn_id` is known, else `Digest` and `TxnDigest`.
    pub(super) lookup: Vec<DedupeKey>,
}

/// Why an answer is not usable.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// No answer, or not a 200.
    Request(String),
    /// A 200 whose body is not a `relay_txn` answer.
    Malformed(String),
}

/// The answer's fields, loosely typed so that every defect gets its own
/// message.
#[derive(Deserialize)]
struct WireAnswer<'a> {
    #[serde(borrow, default)]
    transaction: Option<&'a RawValue>,
    #[serde(default)]
    entry_id: Option<Value>,
    #[serde(default)]
    entries_queued: Option<Value>,
    #[serde(default)]
    txn_id: Option<Value>,
}

/// Checks how a `relay_txn` request ended.
///
/// Implementation note: with `entries_queued: false` the rest of the
/// answer is not looked at (Dendrite and this project send an empty
/// transaction there, but nothing depends on it). With `entries_queued:
/// true`, `entry_id` must be an integer in 1..=2^53−1 (0 cannot be
/// acknowledged, and a larger one could not be signed back in canonical
/// JSON), `transaction` an object with a valid server name as `origin` and
/// a canonical JSON form, and `txn_id` absent, `null`, or a valid txn ID.
pub(super) fn parse_answer(outcome: &HttpOutcome) -> Result<Answer, Failure> {
    let body = match outcome {
        HttpOutcome::Response {
            status: 200, body, ..
        } => body,
        other => return Err(Failure::Request(other.describe())),
    };
    let malformed = |what: &str| Failure::Malformed(what.to_owned());
    let wire: WireAnswer<'_> = serde_json::from_slice(body)
        .map_err(|e| Failure::Malformed(format!("not a relay_txn answer: {e}")))?;
    match wire.entries_queued {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Answer::Drained),
        Some(_) => return Err(malformed("entries_queued is not a boolean")),
        None => return Err(malformed("entries_queued is missing")),
    }
    entry(wire).map(Answer::Entry)
}

/// One handed-out entry: `entry_id`, `transaction` and `txn_id` checked.
fn entry(wire: WireAnswer<'_>) -> Result<Entry, Failure> {
    let malformed = |what: &str| Failure::Malformed(what.to_owned());
    let entry_id = match wire.entry_id.as_ref().map(Value::as_u64) {
        Some(Some(id)) if (1..=MAX_SAFE_INTEGER.unsigned_abs()).contains(&id) => EntryId(id),
        Some(_) => return Err(malformed("entry_id is not an integer in 1..=2^53-1")),
        None => return Err(malformed("entries_queued is true but entry_id is missing")),
    };
    let raw = wire
        .transaction
        .ok_or_else(|| malformed("transaction is missing"))?;
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| Failure::Malformed(format!("transaction: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| malformed("transaction is not an object"))?;
    let origin = object
        .get("origin")
        .and_then(Value::as_str)
        .and_then(|s| ServerName::parse(s).ok())
        .ok_or_else(|| malformed("transaction origin is not a server name"))?;
    let txn_id = match wire.txn_id {
        None | Some(Value::Null) => None,
        // A txn ID this node could not use (empty, too long, a control
        // character) is as good as none: the copy is known by its digest.
        Some(Value::String(s)) => TxnId::try_from(s).ok(),
        Some(_) => return Err(malformed("txn_id is not a string")),
    };
    let canonical = to_canonical_string(&value)
        .map_err(|e| Failure::Malformed(format!("transaction has no canonical form: {e}")))?;
    let content = digest(canonical.as_bytes());
    let (keys, lookup) = match &txn_id {
        Some(txn_id) => {
            let key = DedupeKey::Txn(origin.clone(), txn_id.clone());
            (
                vec![key.clone(), DedupeKey::TxnDigest(content)],
                vec![key, DedupeKey::Digest(content)],
            )
        }
        None => (
            vec![DedupeKey::Digest(content)],
            vec![DedupeKey::Digest(content), DedupeKey::TxnDigest(content)],
        ),
    };
    Ok(Entry {
        entry_id,
        origin,
        txn_id,
        transaction: raw.get().as_bytes().to_vec(),
        keys,
        lookup,
    })
}

/// SHA-256 of `bytes`.
pub(super) fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
