//! The `relay_request` target: one whole request through a [`Relay`].

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::Value;

use super::lossy;
use crate::auth::{KeyRing, sign_request};
use crate::error::ErrCode;
use crate::http::HttpOutcome;
use crate::id::{EntryId, KeyId, ServerName, TxnId};
use crate::relay::{MAX_PDUS, Output, Relay, RelayConfig, RequestHead, Response, ServePolicy};
use crate::request::{self, Route};
use crate::server_keys::MAX_KEY_DOCUMENT_BYTES;
use crate::signing::SigningKey;
use crate::store::{InsertOutcome, QueuedEntry, QuotaKind, StoreError};
use crate::time::{Instant, UnixMillis};

/// `relay_request` flag: sign the request properly with one of the
/// fixture's keys.
pub const FLAG_SIGN: u8 = 0x01;
/// `relay_request` flags: which key signs (with [`FLAG_SIGN`]), see
/// [`relay_request`].
pub const FLAG_SIGNER_MASK: u8 = 0x06;
/// `relay_request` flag: P2P names on (`KeyRing::with_p2p_names()`).
pub const FLAG_P2P: u8 = 0x08;
/// `relay_request` flag: serve every destination.
pub const FLAG_OPEN: u8 = 0x10;
/// `relay_request` flag: `origin.example` is a denied origin.
pub const FLAG_DENY: u8 = 0x20;
/// `relay_request` flag: the body is over the limit (declared so when the
/// body field is empty, found so while it is read otherwise).
pub const FLAG_TOO_LARGE: u8 = 0x40;
/// `relay_request` flag: the signed header goes after the fuzzed
/// `Authorization` values instead of before them.
pub const FLAG_SIGNED_LAST: u8 = 0x80;

/// `relay_request` answers bit: the relay fetches unknown keys.
const ANSWER_FETCH_KEYS: u8 = 0x40;
/// `relay_request` answers bit: a key fetch gets `unknown.example`'s
/// valid document (else it times out).
const ANSWER_KEYS_VALID: u8 = 0x80;

/// The relay's name in [`relay_request`].
pub const RELAY_NAME: &str = "relay.example";

/// The fixed world [`relay_request`] runs in.
struct Fixture {
    relay_name: ServerName,
    /// Indexed by the signer bits.
    signers: [(ServerName, SigningKey); 4],
    /// Relay configuration without the input's flags.
    base: RelayConfig,
    /// Origins with a pinned key.
    pinned: HashSet<ServerName>,
    /// `unknown.example`'s key document, as its server would serve it.
    unknown_keys: Vec<u8>,
}

/// The spec's test seed `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`.
const SPEC_SEED: [u8; 32] = [
    96, 144, 193, 3, 213, 231, 175, 107, 21, 169, 112, 253, 86, 62, 215, 85, 73, 230, 21, 151, 25,
    174, 92, 60, 49, 222, 228, 49, 111, 183, 92, 13,
];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let name = |s: &str| ServerName::parse(s).expect("fixture server name");
        let key_id = |s: &str| KeyId::parse(s).expect("fixture key ID");
        let p2p_key = SigningKey::from_seed(key_id("ed25519:dendrite-demo-yggdrasil"), [5; 32]);
        let p2p_name = name(&p2p_key.verify_key().to_hex());
        let signers = [
            (
                name("origin.example"),
                SigningKey::from_seed(key_id("ed25519:1"), SPEC_SEED),
            ),
            (
                name("dest.example"),
                SigningKey::from_seed(key_id("ed25519:k"), [2; 32]),
            ),
            (p2p_name.clone(), p2p_key),
            (
                name("unknown.example"),
                SigningKey::from_seed(key_id("ed25519:k"), [3; 32]),
            ),
        ];
        let mut base = RelayConfig::new(
            name(RELAY_NAME),
            SigningKey::from_seed(key_id("ed25519:k"), [9; 32]),
        );
        base.serve = ServePolicy::Only(HashSet::from([name("dest.example"), p2p_name.clone()]));
        let mut pinned = HashSet::new();
        for (server, key) in &signers[..2] {
            base.keys
                .pin(server.clone(), key.key_id().clone(), key.verify_key());
            pinned.insert(server.clone());
        }
        let (unknown, unknown_key) = &signers[3];
        let unknown_keys = crate::server_keys::document(
            unknown,
            unknown_key,
            UnixMillis(1_700_000_000_000 + 3_600_000),
        )
        .expect("fixture key document")
        .to_string()
        .into_bytes();
        Fixture {
            relay_name: name(RELAY_NAME),
            signers,
            base,
            pinned,
            unknown_keys,
        }
    })
}

/// Runs one whole request through a fresh [`Relay`] at `now`, playing its
/// storage. Any `now` does: its only timers are long-polls, which the
/// harness ends at once.
///
/// Input: `flags`, `answers`, then `method \n target \n authorization \n
/// body` (missing fields are empty; the body is everything after the third
/// `\n`). `authorization` holds zero or more header values separated by
/// `\r`. Method and target are read lossily as UTF-8.
///
/// - `flags` (the `FLAG_*` constants): bit 0 signs the request properly
///   for `relay.example` with the key chosen by bits 1–2 (0:
///   `origin.example` `ed25519:1`, the spec key, pinned; 1: `dest.example`,
///   pinned; 2: a P2P hex name, known only with P2P on; 3: `unknown.example`,
///   unknown); bit 3 turns P2P names on; bit 4 serves every destination
///   (else `dest.example` and the P2P name); bit 5 denies `origin.example`;
///   bit 6 makes the body over the limit (an empty body field declares a
///   `Content-Length` over it; a non-empty one is sent without a length
///   and turns out over it as it is read); bit 7 puts the signed header
///   last.
/// - `answers`: the low nibble picks the insert result (mod 7: stored,
///   duplicate, already delivered, three quotas, storage error), bits 4–5
///   the fetch result (nothing queued, an entry, an entry that is not JSON,
///   storage error); bit 6 turns key fetching on (`fetch_keys`), and bit 7
///   answers a key fetch with `unknown.example`'s valid key document
///   instead of a timeout.
///
/// The relay is driven in two phases, as an adapter does: the head first,
/// then, if the relay asks for it, the body, judged by the check it hands
/// out.
///
/// Invariants: the request gets exactly one response, with its request ID;
/// every response body is a JSON object; a status other than 200 carries a
/// Matrix error whose `errcode` maps to that status; `Retry-After` only
/// with 429; the body is asked for at most once, only for an origin whose
/// key the relay knows, never when the declared length is over the limit,
/// and with the configured limit; a request refused before its body is read
/// is refused with 401, 404, 405 or 413 only; at most one storage
/// operation, only for an origin whose key the relay knows, matching the
/// path and policy (a store of a valid transaction whose `origin` is the
/// sender, for a served destination and an allowed origin; a fetch for the
/// sender's own queue); a request properly signed with a key the relay
/// knows is never refused with 401; a key fetch reads at most
/// [`MAX_KEY_DOCUMENT_BYTES`]; reports for an operation already answered,
/// or of the wrong kind, are ignored; nothing is pending at the end.
pub fn relay_request(now: Instant, data: &[u8]) {
    let [flags, answers, rest @ ..] = data else {
        return;
    };
    let (flags, answers) = (*flags, *answers);
    let fx = fixture();

    let mut fields = rest.splitn(4, |&b| b == b'\n');
    let method = lossy(fields.next().unwrap_or_default()).into_owned();
    let target = lossy(fields.next().unwrap_or_default()).into_owned();
    let auth_field = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();

    let mut authorization: Vec<String> = if auth_field.is_empty() {
        Vec::new()
    } else {
        auth_field
            .split(|&b| b == b'\r')
            .map(|v| lossy(v).into_owned())
            .collect()
    };
    // The origin of a properly signed header that the relay reads first.
    let mut signed_first = None;
    if flags & FLAG_SIGN != 0 {
        let (origin, key) = &fx.signers[usize::from((flags & FLAG_SIGNER_MASK) >> 1)];
        let content = if body.is_empty() {
            None
        } else {
            serde_json::from_slice::<Value>(body).ok()
        };
        // No canonical form (floats): nothing can be signed, as for a real sender.
        if let Ok(header) = sign_request(
            key,
            origin,
            &fx.relay_name,
            &method,
            &target,
            content.as_ref(),
        ) {
            if flags & FLAG_SIGNED_LAST == 0 || authorization.is_empty() {
                signed_first = Some(origin);
            }
            if flags & FLAG_SIGNED_LAST != 0 {
                authorization.push(header);
            } else {
                authorization.insert(0, header);
            }
        }
    }

    let mut config = fx.base.clone();
    // Who can authenticate: pinned origins, and with P2P names on, any
    // 64-hex name (signed with the key it spells).
    let p2p = flags & FLAG_P2P != 0;
    let fetch_keys = answers & ANSWER_FETCH_KEYS != 0;
    let fetched = fetch_keys && answers & ANSWER_KEYS_VALID != 0;
    let unknown = &fx.signers[3].0;
    let known = |origin: &ServerName| {
        fx.pinned.contains(origin)
            || p2p && origin.p2p_public_key().is_some()
            || fetched && origin == unknown
    };
    if p2p {
        let mut keys = KeyRing::with_p2p_names();
        for (server, key) in &fx.signers[..2] {
            keys.pin(server.clone(), key.key_id().clone(), key.verify_key());
        }
        config.keys = keys;
    }
    config.fetch_keys = fetch_keys;
    if flags & FLAG_OPEN != 0 {
        config.serve = ServePolicy::Open;
    }
    if flags & FLAG_DENY != 0 {
        config.denied_origins.insert(fx.signers[0].0.clone());
    }
    let too_large = flags & FLAG_TOO_LARGE != 0;
    let declared_too_large = too_large && body.is_empty();
    let content_length = if declared_too_large {
        Some(config.max_body_bytes as u64 + 1)
    } else if too_large {
        None
    } else {
        Some(body.len() as u64)
    };

    let unix = UnixMillis(1_700_000_000_000);
    let mut relay = Relay::new(config);
    let id = relay.handle_head(
        now,
        unix,
        RequestHead {
            method: method.clone(),
            target: target.clone(),
            authorization,
            content_length,
            peer: std::net::IpAddr::from([192, 0, 2, 1]),
            forwarded_for: Vec::new(),
        },
    );

    let mut responses = 0;
    let mut status = 0;
    let mut operations = 0;
    let mut key_fetches = 0;
    let mut body_reads = 0;
    while let Some(output) = relay.poll_output() {
        match output {
            Output::ReadBody {
                request,
                limit,
                check,
            } => {
                assert_eq!(request, id, "a body read for another request");
                assert_eq!(check.request(), id, "a check for another request");
                assert_eq!(limit, relay.config().max_body_bytes, "another body limit");
                assert!(!declared_too_large, "a body read past its declared length");
                assert!(
                    known(check.origin()),
                    "a body read for unauthenticated {}",
                    check.origin()
                );
                body_reads += 1;
                let checked = if too_large {
                    check.too_large()
                } else {
                    check.run(body)
                };
                assert_eq!(checked.request(), id);
                relay.handle_body(now, unix, checked);
            }
            Output::FetchKeys { op, request, check } => {
                assert!(fetch_keys, "a key fetch with fetch_keys off");
                assert!(
                    !fx.pinned.contains(&request.server),
                    "a key fetch for pinned {}",
                    request.server
                );
                assert_eq!(request.method, "GET");
                assert_eq!(request.target, "/_matrix/key/v2/server");
                assert_eq!(request.max_response_bytes, MAX_KEY_DOCUMENT_BYTES);
                key_fetches += 1;
                // Always `unknown.example`'s document: for any other origin
                // it names the wrong server and must be refused.
                let outcome = if answers & ANSWER_KEYS_VALID != 0 {
                    HttpOutcome::Response {
                        status: 200,
                        body: fx.unknown_keys.clone(),
                        retry_after: None,
                    }
                } else {
                    HttpOutcome::Timeout
                };
                let checked = check.run(unix, &outcome);
                relay.handle_keys(now, unix, op, checked.clone());
                relay.handle_keys(now, unix, op, checked);
                relay.handle_stored(now, op, Ok(InsertOutcome::Stored(EntryId(1))));
            }
            Output::Respond { request, response } => {
                assert_eq!(request, id, "response for another request");
                check_response(&response);
                let needs_auth = matches!(
                    request::route(&method, &target),
                    Ok(Route::SendRelay { .. } | Route::RelayTxn { .. } | Route::RelayTxns { .. })
                );
                assert!(
                    body_reads > 0 || !needs_auth || matches!(response.status, 401 | 413),
                    "{} before the body was read",
                    response.status
                );
                responses += 1;
                status = response.status;
            }
            Output::Store { op, entry, quota } => {
                operations += 1;
                assert_eq!(quota, relay.config().quota);
                assert!(
                    known(&entry.origin),
                    "stored for unauthenticated {}",
                    entry.origin
                );
                assert!(
                    !relay.config().denied_origins.contains(&entry.origin),
                    "stored for a denied origin"
                );
                assert!(
                    relay.config().serve.serves(&entry.destination),
                    "stored for an unserved destination"
                );
                let Ok(Route::SendRelay { txn_id, user_id }) = request::route(&method, &target)
                else {
                    panic!("store for a request that is not send_relay: {method} {target:?}");
                };
                assert_eq!(
                    request::user_id(user_id).map(|u| u.server_name()).ok(),
                    Some(entry.destination.clone())
                );
                assert_eq!(request::txn_id(txn_id).ok(), Some(entry.txn_id.clone()));
                let txn: Value = serde_json::from_slice(&entry.transaction)
                    .unwrap_or_else(|e| panic!("stored transaction is not JSON: {e}"));
                assert_eq!(
                    txn["origin"].as_str(),
                    Some(entry.origin.as_str()),
                    "stored origin is not the sender"
                );
                assert!(
                    txn["pdus"].as_array().is_some_and(|p| p.len() <= MAX_PDUS),
                    "stored bad pdus"
                );
                assert_stored_as_sent(&txn, &entry.transaction, body);

                let result = store_answer(answers);
                relay.handle_stored(now, op, result.clone());
                relay.handle_stored(now, op, result);
                relay.handle_fetched(now, op, Ok(None));
            }
            Output::Fetch {
                op,
                destination,
                ack,
                ..
            } => {
                operations += 1;
                assert!(
                    known(&destination),
                    "fetch for unauthenticated {destination}"
                );
                let Ok(Route::RelayTxn { user_id }) = request::route(&method, &target) else {
                    panic!("fetch for a request that is not relay_txn: {method} {target:?}");
                };
                assert_eq!(
                    request::user_id(user_id).map(|u| u.server_name()).ok(),
                    Some(destination)
                );
                assert_ne!(
                    ack.map(|a| a.entry_id),
                    Some(EntryId(0)),
                    "entry 0 acknowledges nothing"
                );
                assert!(
                    ack.is_none_or(|a| a.keys == relay.config().quota.acked),
                    "an acknowledgement that forgets the configured retention"
                );

                let result = fetch_answer(answers);
                relay.handle_fetched(now, op, result.clone());
                relay.handle_fetched(now, op, result);
                relay.handle_stored(now, op, Ok(InsertOutcome::Stored(EntryId(1))));
            }
            Output::FetchBatch {
                op,
                destination,
                acks,
                take,
                ..
            } => {
                operations += 1;
                assert!(
                    known(&destination),
                    "batch fetch for unauthenticated {destination}"
                );
                let Ok(Route::RelayTxns { user_id }) = request::route(&method, &target) else {
                    panic!("batch fetch for a request that is not relay_txns: {method} {target:?}");
                };
                assert_eq!(
                    request::user_id(user_id).map(|u| u.server_name()).ok(),
                    Some(destination)
                );
                assert!(acks.len() <= crate::relay::MAX_BATCH_ACKS, "unbounded acks");
                assert!(
                    acks.iter().all(|a| a.entry_id.0 > 0),
                    "entry 0 acknowledges nothing"
                );
                assert!(
                    take.entries <= crate::relay::MAX_BATCH_ENTRIES,
                    "unbounded batch"
                );
                assert!(
                    take.bytes <= crate::relay::MAX_BATCH_BYTES,
                    "unbounded batch bytes"
                );
                let entries = fetch_answer(answers).map(|e| e.into_iter().collect());
                let result = entries.map(|entries| crate::store::AckBatch {
                    acked: 0,
                    entries,
                    more: false,
                });
                relay.handle_fetched_batch(now, op, result.clone());
                relay.handle_fetched_batch(now, op, result);
                relay.handle_fetched(now, op, Ok(None));
                // A long-poll that found nothing waits: end it now.
                relay.release_waits(now);
            }
        }
    }
    assert_eq!(responses, 1, "every request gets exactly one response");
    assert!(operations <= 1, "at most one storage operation per request");
    assert!(key_fetches <= 1, "at most one key fetch per request");
    assert!(body_reads <= 1, "at most one body read per request");
    if let Some(origin) = signed_first.filter(|o| known(o) && !too_large) {
        assert_ne!(
            status, 401,
            "a request properly signed by {origin} was refused"
        );
    }
    assert_eq!(relay.pending_ops(), 0, "operations left pending");
    assert_eq!(relay.poll_timeout(), None, "a timer with nothing to do");
}

fn store_answer(answers: u8) -> Result<InsertOutcome, StoreError> {
    match (answers & 0x0f) % 8 {
        0 => Ok(InsertOutcome::Stored(EntryId(u64::from(answers) + 1))),
        1 => Ok(InsertOutcome::Duplicate(EntryId(1))),
        2 => Ok(InsertOutcome::QuotaExceeded(QuotaKind::Destination)),
        3 => Ok(InsertOutcome::QuotaExceeded(QuotaKind::Origin)),
        4 => Ok(InsertOutcome::QuotaExceeded(QuotaKind::Total)),
        5 => Ok(InsertOutcome::AlreadyDelivered),
        6 => Ok(InsertOutcome::DiskLow),
        _ => Err(StoreError("disk \"full\"\n\u{0}".to_owned())),
    }
}

fn fetch_answer(answers: u8) -> Result<Option<QueuedEntry>, StoreError> {
    let entry = |transaction: &[u8]| QueuedEntry {
        entry_id: EntryId(u64::from(answers) + 1),
        origin: fixture().signers[0].0.clone(),
        txn_id: TxnId::parse("t\"1").expect("fixture txn ID"),
        transaction: transaction.to_vec(),
    };
    match (answers >> 4) % 4 {
        0 => Ok(None),
        1 => Ok(Some(entry(
            br#"{"origin":"origin.example","origin_server_ts":1,"pdus":[{"a":1}],"edus":[]}"#,
        ))),
        2 => Ok(Some(entry(b"{\"pdus\":[\xff"))),
        _ => Err(StoreError("connection reset".to_owned())),
    }
}

/// Every code, so that a response's `errcode` can be mapped back.
const ALL_CODES: [ErrCode; 12] = [
    ErrCode::Unauthorized,
    ErrCode::Forbidden,
    ErrCode::NotJson,
    ErrCode::BadJson,
    ErrCode::InvalidUsername,
    ErrCode::InvalidParam,
    ErrCode::TooLarge,
    ErrCode::LimitExceeded,
    ErrCode::UnrecognizedPath,
    ErrCode::UnrecognizedMethod,
    ErrCode::Unknown,
    ErrCode::Unavailable,
];

/// Fails to compile when a code is added, as a reminder to list it in
/// [`ALL_CODES`].
const _: fn(ErrCode) = |code| match code {
    ErrCode::Unauthorized
    | ErrCode::Forbidden
    | ErrCode::NotJson
    | ErrCode::BadJson
    | ErrCode::InvalidUsername
    | ErrCode::InvalidParam
    | ErrCode::TooLarge
    | ErrCode::LimitExceeded
    | ErrCode::UnrecognizedPath
    | ErrCode::UnrecognizedMethod
    | ErrCode::Unknown
    | ErrCode::Unavailable => {}
};

fn check_response(response: &Response) {
    let text = lossy(&response.body);
    let body: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "{} response body is not JSON ({e}): {text:?}",
            response.status
        )
    });
    assert!(body.is_object(), "response body is not an object: {text:?}");
    assert!(
        response.retry_after_secs.is_none() || matches!(response.status, 429 | 503),
        "Retry-After on a {} response",
        response.status
    );
    if response.status == 200 {
        assert!(
            body.get("errcode").is_none(),
            "200 with an errcode: {text:?}"
        );
        return;
    }
    let Some(errcode) = body.get("errcode").and_then(Value::as_str) else {
        panic!("{} response without errcode: {text:?}", response.status);
    };
    assert!(
        body.get("error").is_some_and(Value::is_string),
        "error without text: {text:?}"
    );
    assert!(
        ALL_CODES
            .iter()
            .any(|c| c.as_str() == errcode && c.status() == response.status),
        "errcode {errcode} does not go with status {}",
        response.status
    );
}

/// The stored transaction `stored` (parsed: `txn`) is the `body` sent,
/// `origin` aside, and each of its PDUs is in `body` byte for byte.
fn assert_stored_as_sent(txn: &Value, stored: &[u8], body: &[u8]) {
    let without_origin = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().map(|o| o.remove("origin"));
        v
    };
    let sent: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("stored a body that is not JSON: {e}"));
    assert_eq!(
        without_origin(txn),
        without_origin(&sent),
        "stored another transaction than the one sent"
    );
    #[derive(serde::Deserialize)]
    struct Pdus<'a> {
        #[serde(borrow)]
        pdus: Vec<&'a serde_json::value::RawValue>,
    }
    let pdus: Pdus<'_> = serde_json::from_slice(stored)
        .unwrap_or_else(|e| panic!("stored pdus are not an array: {e}"));
    for pdu in pdus.pdus {
        let pdu = pdu.get().as_bytes();
        assert!(
            body.windows(pdu.len()).any(|w| w == pdu),
            "stored PDU {:?} is not as sent",
            String::from_utf8_lossy(pdu)
        );
    }
}
