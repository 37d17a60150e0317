//! Transactions: which items go in one, its ID, its body, and the signed
//! requests that carry it.

use serde_json::{Map, Value};

use super::{Item, ItemId, ItemKind, OutboundConfig, Target};
use crate::auth::sign_request;
use crate::canonical::{MAX_SAFE_INTEGER, to_canonical_string};
use crate::http::{DEFAULT_MAX_RESPONSE_BYTES, OutgoingRequest};
use crate::id::{ServerName, TxnId};
use crate::request::percent_encode_segment;
use crate::rng::Rng;
use crate::time::UnixMillis;

/// A transaction: fixed items under one txn ID until it is done.
#[derive(Debug)]
pub(super) struct Txn {
    /// Kept across every retry and restart.
    pub(super) id: TxnId,
    /// What it carries, in queue order.
    pub(super) items: Vec<ItemId>,
    /// Its body, or why it cannot be built.
    body: Result<Body, String>,
}

/// A transaction body: the JSON to sign and the bytes to send.
#[derive(Debug)]
struct Body {
    content: Value,
    bytes: Vec<u8>,
}

impl Txn {
    /// A transaction of `items` from `origin`, started at `started`.
    ///
    /// Implementation note: items were checked by [`parse_item`] when they
    /// were queued, so building only fails for a restored item that storage
    /// corrupted; such a transaction can never be sent, and the machine
    /// drops it as a permanent failure when it tries.
    pub(super) fn new(id: TxnId, items: &[Item], origin: &ServerName, started: UnixMillis) -> Self {
        let mut pdus = Vec::new();
        let mut edus = Vec::new();
        let mut bad = None;
        if let [item] = items
            && item.kind == ItemKind::Transaction
        {
            return Self {
                id,
                items: vec![item.id],
                body: whole_body(item, origin, started),
            };
        }
        for item in items {
            match parse_item(&item.json) {
                Some(value) if item.kind == ItemKind::Pdu => pdus.push(value),
                Some(value) => edus.push(value),
                None => {
                    bad.get_or_insert(item.id);
                }
            }
        }
        let body = match bad {
            Some(ItemId(n)) => Err(format!("stored item {n} is not a canonical JSON object")),
            None => {
                let mut content = Map::new();
                content.insert("origin".to_owned(), Value::from(origin.as_str()));
                let ts = started.0.min(MAX_SAFE_INTEGER as u64);
                content.insert("origin_server_ts".to_owned(), Value::from(ts));
                content.insert("pdus".to_owned(), Value::Array(pdus));
                content.insert("edus".to_owned(), Value::Array(edus));
                let content = Value::Object(content);
                let bytes = content.to_string().into_bytes();
                Ok(Body { content, bytes })
            }
        };
        Self {
            id,
            items: items.iter().map(|item| item.id).collect(),
            body,
        }
    }

    /// The signed request that sends this transaction to `destination`
    /// directly or through a relay.
    pub(super) fn request(
        &self,
        config: &OutboundConfig,
        destination: &ServerName,
        target: &Target,
    ) -> Result<OutgoingRequest, String> {
        let body = self.body.as_ref().map_err(Clone::clone)?;
        let txn = percent_encode_segment(self.id.as_str());
        let (server, path) = match target {
            Target::Direct => (
                destination.clone(),
                format!("/_matrix/federation/v1/send/{txn}"),
            ),
            Target::Relay(relay) => {
                let user = percent_encode_segment(&format!("@user:{destination}"));
                (
                    relay.clone(),
                    format!("/_matrix/federation/v1/send_relay/{txn}/{user}"),
                )
            }
        };
        let authorization = sign_request(
            &config.signing_key,
            &config.server_name,
            &server,
            "PUT",
            &path,
            Some(&body.content),
        )
        .map_err(|e| format!("cannot sign the transaction: {e}"))?;
        Ok(OutgoingRequest {
            server,
            method: "PUT",
            target: path,
            authorization,
            body: body.bytes.clone(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }
}

/// The body of an [`ItemKind::Transaction`] item: its transaction, with
/// `origin` set, and `origin_server_ts` set where it is missing.
fn whole_body(item: &Item, origin: &ServerName, started: UnixMillis) -> Result<Body, String> {
    let Some(Value::Object(mut content)) =
        parse_item(&item.json).and_then(|mut v| v.get_mut("transaction").map(Value::take))
    else {
        return Err(format!("stored item {} is not a transaction", item.id.0));
    };
    content.insert("origin".to_owned(), Value::from(origin.as_str()));
    content
        .entry("origin_server_ts")
        .or_insert_with(|| Value::from(started.0.min(MAX_SAFE_INTEGER as u64)));
    let content = Value::Object(content);
    let bytes = content.to_string().into_bytes();
    Ok(Body { content, bytes })
}

/// The txn ID and checked transaction of an [`ItemKind::Transaction`]
/// item's JSON, or what is wrong with it.
pub(super) fn whole_transaction(
    json: &[u8],
    max_pdus: usize,
    max_edus: usize,
) -> Result<TxnId, String> {
    let value = parse_item(json).ok_or("not a canonical JSON object")?;
    let txn_id = value
        .get("txn_id")
        .and_then(Value::as_str)
        .and_then(|s| TxnId::parse(s).ok())
        .ok_or("`txn_id` must be 1 to 255 bytes")?;
    let txn = value
        .get("transaction")
        .and_then(Value::as_object)
        .ok_or("`transaction` must be an object")?;
    match txn.get("pdus") {
        Some(Value::Array(pdus)) if pdus.len() <= max_pdus => {}
        Some(Value::Array(_)) => return Err(format!("more than {max_pdus} pdus")),
        _ => return Err("`pdus` must be an array".into()),
    }
    match txn.get("edus") {
        None | Some(Value::Null) => {}
        Some(Value::Array(edus)) if edus.len() <= max_edus => {}
        Some(Value::Array(_)) => return Err(format!("more than {max_edus} edus")),
        Some(_) => return Err("`edus` must be an array".into()),
    }
    Ok(txn_id)
}

/// An item as JSON: an object that canonical JSON can encode (so the
/// transaction carrying it can be signed).
pub(super) fn parse_item(json: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(json).ok()?;
    (value.is_object() && to_canonical_string(&value).is_ok()).then_some(value)
}

/// How many items from the front of `queue` go into the next transaction:
/// the longest prefix with at most `max_pdus` PDUs and `max_edus` EDUs,
/// stopping at the first item that does not fit.
///
/// A whole-transaction item goes alone.
///
/// Implementation note: at least one item, even if a limit is zero, so a
/// misconfigured limit cannot wedge the queue.
pub(super) fn prefix_len<'a>(
    queue: impl IntoIterator<Item = &'a Item>,
    max_pdus: usize,
    max_edus: usize,
) -> usize {
    let (mut pdus, mut edus, mut n) = (0usize, 0usize, 0usize);
    for item in queue {
        let (count, max) = match item.kind {
            ItemKind::Pdu => (&mut pdus, max_pdus),
            ItemKind::Edu => (&mut edus, max_edus),
            ItemKind::Transaction if n == 0 => return 1,
            ItemKind::Transaction => break,
        };
        if *count >= max && n > 0 {
            break;
        }
        *count += 1;
        n += 1;
    }
    n
}

/// A fresh txn ID: `{unix_ms}.{seq}.{64 random bits in hex}`.
///
/// Implementation note: `seq` is unique within one machine, and the wall
/// time and the seeded random part make a clash with an ID of an earlier
/// run (whose counter may have restarted lower) unlikely; the ID is a
/// function of the seed, the time and the machine's history only.
pub(super) fn new_txn_id(unix: UnixMillis, seq: u64, rng: &mut Rng) -> TxnId {
    let id = format!("{}.{seq}.{:016x}", unix.0, rng.next_u64());
    TxnId::parse(&id).expect("a generated txn ID is short and non-empty")
}

/// When a transaction whose ID [`new_txn_id`] made was started, so a
/// restored transaction is resent with the same body.
pub(super) fn started_at(id: &TxnId) -> Option<UnixMillis> {
    let mut parts = id.as_str().split('.');
    let (ms, seq, rand) = (parts.next()?, parts.next()?, parts.next()?);
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = rand.len() == 16 && rand.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.next().is_some() || !decimal(seq) || !hex {
        return None;
    }
    ms.parse().ok().filter(|_| decimal(ms)).map(UnixMillis)
}
