//! The pure checks a driver runs off the machine's task: a request body
//! ([`BodyCheck`]) and a fetched key document ([`KeyCheck`]). Each carries
//! what it needs, decided by the machine beforehand, and gives a result
//! the machine takes in O(1).

use serde_json::Value;

mod envelope;

use self::envelope::RawTransaction;
use super::RequestId;
use super::config::{
    MAX_BATCH_ACKS, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_BATCH_WAIT_MS, MAX_EDUS, MAX_PDU_BYTES,
    MAX_PDUS,
};
use crate::auth::{self, AuthError, Claimed};
use crate::canonical;
use crate::error::{ErrCode, MatrixError};
use crate::http::HttpOutcome;
use crate::id::{EntryId, ServerName, TxnId};
use crate::server_keys::{self, FetchedKeys};
use crate::signing::VerifyKey;
use crate::store::Take;
use crate::time::UnixMillis;

/// What an authenticated request asks for, once its permission was
/// decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Intent {
    /// `send_relay`: store a transaction for `destination`.
    Store {
        destination: ServerName,
        txn_id: TxnId,
    },
    /// `relay_txn` (or, `batch`, the batch drain): acknowledge and read
    /// `destination`'s queue.
    Fetch {
        destination: ServerName,
        batch: bool,
    },
}

/// A request whose header parsed and whose permission is decided, waiting
/// for its origin's key: all the machine holds of a request before its
/// body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClaimedHead {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) claimed: Claimed,
    /// The permission and path checks, decided now and reported only once
    /// the signature verified (a stranger learns nothing from them).
    pub(super) decision: Result<Intent, MatrixError>,
}

impl ClaimedHead {
    /// Roughly the bytes it holds, for the bound on held heads.
    pub(super) fn held_bytes(&self) -> usize {
        const OVERHEAD: usize = 256;
        let decided = match &self.decision {
            Ok(Intent::Store {
                destination,
                txn_id,
            }) => destination.as_str().len() + txn_id.as_str().len(),
            Ok(Intent::Fetch { destination, .. }) => destination.as_str().len(),
            Err(e) => e.message.len(),
        };
        OVERHEAD
            + self.method.len()
            + self.target.len()
            + self.claimed.origin.as_str().len()
            + self.claimed.key_id.as_str().len()
            + self.claimed.sig.len()
            + decided
    }

    /// The check of its body, with the origin's key now resolved.
    pub(super) fn into_check(
        self,
        request: RequestId,
        key: VerifyKey,
        our_name: ServerName,
        limit: usize,
    ) -> BodyCheck {
        BodyCheck {
            request,
            head: self,
            key,
            our_name,
            limit,
        }
    }
}

/// Everything needed to judge a request's body: the signature (with the
/// origin's resolved key), then the permission decided from the head, then
/// the content. Run it with [`BodyCheck::run`] on the body, or
/// [`BodyCheck::too_large`] when the body went over the limit; both are
/// pure, and may run on any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCheck {
    request: RequestId,
    head: ClaimedHead,
    key: VerifyKey,
    our_name: ServerName,
    limit: usize,
}

impl BodyCheck {
    /// The request it checks.
    pub fn request(&self) -> RequestId {
        self.request
    }

    /// The origin the request claims, whose key is known.
    pub fn origin(&self) -> &ServerName {
        &self.head.claimed.origin
    }

    /// Judges the whole `body` (at most the limit of
    /// [`Output::ReadBody`](super::Output::ReadBody)): JSON (400
    /// `M_NOT_JSON`), the signature (401), the permission (403, or 400 for
    /// a bad path parameter), then the content (400 `M_BAD_JSON`, 413 for a
    /// PDU over [`MAX_PDU_BYTES`] as sent).
    ///
    /// Implementation note: the signature and the checks see the body
    /// parsed; what is stored is the body's own bytes (see `transaction`),
    /// so numbers such as `-0` or `1e2`, escapes and key order reach the
    /// destination as their sender signed them.
    pub fn run(self, body: &[u8]) -> Checked {
        let request = self.request;
        let verdict = self.verdict(body).unwrap_or_else(Verdict::Refused);
        Checked { request, verdict }
    }

    /// The body went over the limit: 413.
    pub fn too_large(self) -> Checked {
        Checked {
            request: self.request,
            verdict: Verdict::Refused(too_large(self.limit)),
        }
    }

    fn verdict(self, body: &[u8]) -> Result<Verdict, MatrixError> {
        let content = if body.is_empty() {
            None
        } else {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                MatrixError::new(ErrCode::NotJson, format!("body is not JSON: {e}"))
            })?;
            Some(value)
        };
        let ClaimedHead {
            method,
            target,
            claimed,
            decision,
        } = self.head;
        auth::verify_signature(
            &claimed,
            &self.key,
            &self.our_name,
            &method,
            &target,
            content.as_ref(),
        )
        .map_err(unauthorized)?;
        match decision? {
            Intent::Store {
                destination,
                txn_id,
            } => {
                canonical_content(content.as_ref())?;
                let transaction = transaction(body, content.as_ref(), &claimed.origin)?;
                Ok(Verdict::Store {
                    origin: claimed.origin,
                    destination,
                    txn_id,
                    transaction,
                })
            }
            Intent::Fetch {
                destination,
                batch: false,
            } => {
                let ack = entry_id(content.as_ref())?;
                canonical_content(content.as_ref())?;
                Ok(Verdict::Fetch { destination, ack })
            }
            Intent::Fetch {
                destination,
                batch: true,
            } => {
                let BatchRequest {
                    acks,
                    take,
                    wait_ms,
                } = batch_request(content.as_ref())?;
                canonical_content(content.as_ref())?;
                Ok(Verdict::FetchBatch {
                    destination,
                    acks,
                    take,
                    wait_ms,
                })
            }
        }
    }
}

/// A judged request body, for [`Relay::handle_body`](super::Relay::handle_body).
/// Only [`BodyCheck`] makes these.
#[derive(Debug)]
pub struct Checked {
    pub(super) request: RequestId,
    pub(super) verdict: Verdict,
}

impl Checked {
    /// The request it belongs to.
    pub fn request(&self) -> RequestId {
        self.request
    }
}

/// What a judged body leads to.
#[derive(Debug)]
pub(super) enum Verdict {
    Refused(MatrixError),
    Store {
        origin: ServerName,
        destination: ServerName,
        txn_id: TxnId,
        transaction: Vec<u8>,
    },
    Fetch {
        destination: ServerName,
        ack: Option<EntryId>,
    },
    FetchBatch {
        destination: ServerName,
        acks: Vec<EntryId>,
        take: Take,
        wait_ms: u64,
    },
}

/// A batch drain's body, read.
struct BatchRequest {
    acks: Vec<EntryId>,
    take: Take,
    /// How long to wait for an entry when none is queued.
    wait_ms: u64,
}

/// The check of a fetched key document: run [`KeyCheck::run`] on the
/// outcome of [`Output::FetchKeys`](super::Output::FetchKeys)' request. It
/// is pure, and may run on any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub(super) server: ServerName,
}

impl KeyCheck {
    /// Checks `outcome` at `unix`: a 200 whose body is the server's valid,
    /// self-signed key document (see [`server_keys::check_document`]).
    pub fn run(self, unix: UnixMillis, outcome: &HttpOutcome) -> CheckedKeys {
        let keys = match outcome {
            HttpOutcome::Response {
                status: 200, body, ..
            } => server_keys::check_document(body, &self.server, unix).map_err(|e| e.to_string()),
            other => Err(other.describe()),
        };
        CheckedKeys {
            server: self.server,
            keys,
        }
    }
}

/// A checked key fetch, for [`Relay::handle_keys`](super::Relay::handle_keys).
/// Only [`KeyCheck`] makes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKeys {
    pub(super) server: ServerName,
    pub(super) keys: Result<FetchedKeys, String>,
}

impl CheckedKeys {
    /// Why the keys could not be had, if they could not (for logs).
    pub fn failure(&self) -> Option<&str> {
        self.keys.as_ref().err().map(String::as_str)
    }
}

pub(super) fn unauthorized(e: AuthError) -> MatrixError {
    MatrixError::new(ErrCode::Unauthorized, e.to_string())
}

pub(super) fn too_large(limit: usize) -> MatrixError {
    MatrixError::new(
        ErrCode::TooLarge,
        format!("request body is over {limit} bytes"),
    )
}

fn bad_json(message: impl Into<String>) -> MatrixError {
    MatrixError::new(ErrCode::BadJson, message)
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

/// Checks a send_relay body and returns the transaction to store: `body`
/// as sent, its `origin` set to the authenticated sender. `content` is
/// `body` parsed, for the shape checks.
fn transaction(
    body: &[u8],
    content: Option<&Value>,
    origin: &ServerName,
) -> Result<Vec<u8>, MatrixError> {
    let Some(content) = content else {
        return Err(MatrixError::new(
            ErrCode::NotJson,
            "a transaction body is required",
        ));
    };
    let Value::Object(txn) = content else {
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
    // The body parsed, so only a `pdus` sent twice, the first not an
    // array, fails here.
    let raw = RawTransaction::parse(body)
        .map_err(|e| bad_json(format!("every `pdus` must be an array ({e})")))?;
    if raw.pdus().iter().any(|pdu| pdu.get().len() > MAX_PDU_BYTES) {
        return Err(MatrixError::new(
            ErrCode::TooLarge,
            format!("a PDU is over {MAX_PDU_BYTES} bytes"),
        ));
    }
    Ok(raw.to_stored(origin))
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

/// The batch drain's body: `{"ack": [N, …], "limit": N, "max_bytes": N,
/// "timeout_ms": N}`, each optional (an empty body is `{}`). Entry IDs are
/// positive, at most [`MAX_BATCH_ACKS`] of them; `limit`, `max_bytes` and
/// `timeout_ms` are lowered to the relay's bounds.
fn batch_request(content: Option<&Value>) -> Result<BatchRequest, MatrixError> {
    let mut take = Take {
        entries: MAX_BATCH_ENTRIES,
        bytes: MAX_BATCH_BYTES,
    };
    let Some(content) = content else {
        return Ok(BatchRequest {
            acks: Vec::new(),
            take,
            wait_ms: 0,
        });
    };
    let object = content
        .as_object()
        .ok_or_else(|| bad_json("expected {\"ack\": [...], \"limit\": N, \"max_bytes\": N}"))?;
    let count = |name: &str| -> Result<Option<u64>, MatrixError> {
        object
            .get(name)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| bad_json(format!("{name} must be an integer >= 0")))
            })
            .transpose()
    };
    if let Some(limit) = count("limit")? {
        take.entries = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(MAX_BATCH_ENTRIES);
    }
    if let Some(bytes) = count("max_bytes")? {
        take.bytes = bytes.min(MAX_BATCH_BYTES);
    }
    let wait_ms = count("timeout_ms")?.unwrap_or(0).min(MAX_BATCH_WAIT_MS);
    let acks = match object.get("ack") {
        None => Vec::new(),
        Some(Value::Array(ids)) if ids.len() <= MAX_BATCH_ACKS => ids
            .iter()
            .map(|id| match id.as_u64() {
                Some(n) if n > 0 => Ok(EntryId(n)),
                _ => Err(bad_json("ack must list entry IDs, integers >= 1")),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(bad_json(format!(
                "ack lists at most {MAX_BATCH_ACKS} entry IDs"
            )));
        }
        Some(_) => return Err(bad_json("ack must be an array of entry IDs")),
    };
    Ok(BatchRequest {
        acks,
        take,
        wait_ms,
    })
}

#[cfg(test)]
mod tests;
