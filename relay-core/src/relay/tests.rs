//! Unit tables for the relay machine: request in, outputs out.

mod limits;
mod phases;

use crate::epoch::epoch;
use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::*;
use crate::auth::sign_request;
use crate::id::{EntryId, KeyId, TxnId};
use crate::signing::SigningKey;
use crate::store::{Ack, AckedKeys, QuotaKind};

const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const VECTOR_A_SIG: &str =
    "STBA1xu0p9jKYatO5IAB/Um7OEkoMewBqfy6Anp5JbAOubPnQvKeAl3yn0wEw0IMPo5QVBTzKVOaFZxsV78FBA";
const NOW_MS: UnixMillis = UnixMillis(1_700_000_000_000);
/// Where the tables' requests come from.
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// A whole request, as the tables write it; [`run`] feeds its head, then
/// its body when the machine asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    authorization: Vec<String>,
    body: RequestBody,
}

/// A request body, or the fact that it turns out over the limit as it is
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestBody {
    Complete(Vec<u8>),
    TooLarge,
}

impl Request {
    /// Its head: the length of a complete body is declared; one that turns
    /// out too large is sent without a length (chunked).
    fn head(&self) -> RequestHead {
        self.head_from(PEER)
    }

    /// Its head, as it came from `peer`.
    fn head_from(&self, peer: IpAddr) -> RequestHead {
        let content_length = match &self.body {
            RequestBody::Complete(body) => Some(body.len() as u64),
            RequestBody::TooLarge => None,
        };
        RequestHead {
            method: self.method.clone(),
            target: self.target.clone(),
            authorization: self.authorization.clone(),
            content_length,
            peer,
            forwarded_for: Vec::new(),
        }
    }
}

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn spec_key() -> SigningKey {
    SigningKey::parse_synapse(&format!("ed25519 1 {SPEC_SEED}")).unwrap()
}

fn key_for(seed_byte: u8) -> SigningKey {
    SigningKey::from_seed(KeyId::parse("ed25519:k").unwrap(), [seed_byte; 32])
}

/// relay.example serving dest.example; origin.example (spec key) and
/// dest.example (seed 2) pinned; stranger.example (seed 3) pinned too.
fn config() -> RelayConfig {
    let mut c = RelayConfig::new(name("relay.example"), key_for(9));
    c.serve = ServePolicy::Only(HashSet::from([name("dest.example")]));
    c.keys.pin(
        name("origin.example"),
        KeyId::parse("ed25519:1").unwrap(),
        spec_key().verify_key(),
    );
    for (server, seed) in [("dest.example", 2), ("stranger.example", 3)] {
        let k = key_for(seed);
        c.keys.pin(name(server), k.key_id().clone(), k.verify_key());
    }
    c
}

fn signed(method: &str, target: &str, origin: &str, key: &SigningKey, body: &str) -> Request {
    let content: Option<Value> = (!body.is_empty()).then(|| serde_json::from_str(body).unwrap());
    let header = sign_request(
        key,
        &name(origin),
        &name("relay.example"),
        method,
        target,
        content.as_ref(),
    )
    .unwrap();
    Request {
        method: method.into(),
        target: target.into(),
        authorization: vec![header],
        body: RequestBody::Complete(body.as_bytes().to_vec()),
    }
}

fn put(txn: &str, user: &str, body: &str) -> Request {
    let target = format!("/_matrix/federation/v1/send_relay/{txn}/{user}");
    signed("PUT", &target, "origin.example", &spec_key(), body)
}

fn get(user: &str, origin: &str, key: &SigningKey, body: &str) -> Request {
    signed(
        "GET",
        &format!("/_matrix/federation/v1/relay_txn/{user}"),
        origin,
        key,
        body,
    )
}

const TXN: &str = r#"{"origin":"liar.example","origin_server_ts":1,"pdus":[{"a":1}],"edus":[]}"#;

/// Feeds one request and returns every output it produced at once.
fn run(relay: &mut Relay, request: Request) -> (RequestId, Vec<Output>) {
    run_at(relay, NOW_MS, request)
}

/// [`run`] at `unix`, the monotonic clock as far past [`epoch`] as `unix`
/// is past [`NOW_MS`].
fn run_at(relay: &mut Relay, unix: UnixMillis, request: Request) -> (RequestId, Vec<Output>) {
    let id = relay.handle_head(instant_at(unix), unix, request.head());
    (id, drain(relay, unix, &request.body))
}

/// The monotonic time that goes with `unix`.
fn instant_at(unix: UnixMillis) -> Instant {
    epoch() + std::time::Duration::from_millis(unix.0.saturating_sub(NOW_MS.0))
}

/// Drains the relay's outputs as a driver does, reading `body` for every
/// request whose body it asks for; returns the other outputs.
fn drain(relay: &mut Relay, unix: UnixMillis, body: &RequestBody) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(output) = relay.poll_output() {
        let Output::ReadBody {
            request,
            limit,
            check,
        } = output
        else {
            outputs.push(output);
            continue;
        };
        assert_eq!(check.request(), request);
        let checked = match body {
            RequestBody::Complete(bytes) if bytes.len() <= limit => check.run(bytes),
            _ => check.too_large(),
        };
        assert_eq!(checked.request(), request);
        relay.handle_body(epoch(), unix, checked);
    }
    outputs
}

fn only_response(outputs: Vec<Output>) -> Response {
    match outputs.as_slice() {
        [Output::Respond { response, .. }] => response.clone(),
        other => panic!("expected one response, got {other:?}"),
    }
}

fn errcode(r: &Response) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["errcode"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn errors_table() {
    let dest = key_for(2);
    let stranger = key_for(3);
    let mut unsigned = put("t", "@a:dest.example", TXN);
    unsigned.authorization.clear();
    let mut wrong_sig = put("t", "@a:dest.example", TXN);
    wrong_sig.body = RequestBody::Complete(TXN.replace("\"a\":1", "\"a\":2").into_bytes());
    let mut too_large = put("t", "@a:dest.example", TXN);
    too_large.body = RequestBody::TooLarge;
    let mut not_json = put("t", "@a:dest.example", TXN);
    not_json.body = RequestBody::Complete(b"{nope".to_vec());
    let unknown_key = signed(
        "PUT",
        "/_matrix/federation/v1/send_relay/t/@a:dest.example",
        "unknown.example",
        &spec_key(),
        TXN,
    );
    let mut wrong_destination = put("t", "@a:dest.example", TXN);
    wrong_destination.authorization = vec![
        sign_request(
            &spec_key(),
            &name("origin.example"),
            &name("other-relay.example"),
            "PUT",
            "/_matrix/federation/v1/send_relay/t/@a:dest.example",
            Some(&serde_json::from_str(TXN).unwrap()),
        )
        .unwrap(),
    ];
    // A body with no canonical form, signed as JSON libraries write it: the
    // sender is known first (401, 403), then the body is bad JSON.
    let float_put = |origin: &str, key: &SigningKey, target: &str| {
        let body = r#"{"pdus":[1.5]}"#;
        let object = crate::auth::request_json(
            "PUT",
            target,
            origin,
            "relay.example",
            Some(&serde_json::from_str(body).unwrap()),
        );
        let sig = key.sign(
            crate::canonical::to_lenient_string(&object)
                .unwrap()
                .as_bytes(),
        );
        Request {
            method: "PUT".into(),
            target: target.into(),
            authorization: vec![format!(
                "X-Matrix origin=\"{origin}\",destination=\"relay.example\",key=\"{}\",sig=\"{sig}\"",
                key.key_id()
            )],
            body: RequestBody::Complete(body.as_bytes().to_vec()),
        }
    };
    let served = "/_matrix/federation/v1/send_relay/t/@a:dest.example";
    let float_body = float_put("origin.example", &spec_key(), served);
    let float_body_unknown_key = float_put("unknown.example", &spec_key(), served);
    // The pinned key ID, another key.
    let forger = SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), [7; 32]);
    let float_body_forged = float_put("origin.example", &forger, served);
    let float_body_not_served = float_put(
        "origin.example",
        &spec_key(),
        "/_matrix/federation/v1/send_relay/t/@a:elsewhere.example",
    );
    let pdus = |n: usize| json!({"pdus": vec![json!({}); n]}).to_string();
    let edus = |n: usize| json!({"pdus": [], "edus": vec![json!({}); n]}).to_string();
    let big_pdu = json!({"pdus": [{"x": "y".repeat(70_000)}]}).to_string();
    let big_pdu_many_edus =
        json!({"pdus": [{"x": "y".repeat(70_000)}], "edus": vec![json!({}); 101]}).to_string();
    let cases: Vec<(&str, Request, u16, &str)> = vec![
        (
            "unknown path",
            put("t", "@a:dest.example", TXN).with_target("/_matrix/nope"),
            404,
            "M_UNRECOGNIZED",
        ),
        (
            "wrong method",
            signed(
                "POST",
                "/_matrix/federation/v1/send_relay/t/@a:dest.example",
                "origin.example",
                &spec_key(),
                TXN,
            ),
            405,
            "M_UNRECOGNIZED",
        ),
        ("too large", too_large, 413, "M_TOO_LARGE"),
        ("no header", unsigned, 401, "M_UNAUTHORIZED"),
        (
            "wrong destination",
            wrong_destination,
            401,
            "M_UNAUTHORIZED",
        ),
        ("not json", not_json, 400, "M_NOT_JSON"),
        ("unknown key", unknown_key, 401, "M_UNAUTHORIZED"),
        ("tampered body", wrong_sig, 401, "M_UNAUTHORIZED"),
        (
            "bad user id",
            put("t", "alice", TXN),
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "bad user id (encoding)",
            put("t", "%40a%3", TXN),
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "bad user id (unserved host)",
            put("t", "@a:bad_host", TXN),
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "not served",
            put("t", "@a:elsewhere.example", TXN),
            403,
            "M_FORBIDDEN",
        ),
        (
            "not served, and a txn ID too long: policy first",
            put(&"t".repeat(256), "@a:elsewhere.example", TXN),
            403,
            "M_FORBIDDEN",
        ),
        (
            "txn ID too long",
            put(&"t".repeat(256), "@a:dest.example", TXN),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "txn ID with a NUL",
            put("a%00b", "@a:dest.example", TXN),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "pdus missing",
            put("t", "@a:dest.example", r#"{"edus":[]}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "pdus not array",
            put("t", "@a:dest.example", r#"{"pdus":{}}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "not an object",
            put("t", "@a:dest.example", "[1]"),
            400,
            "M_BAD_JSON",
        ),
        (
            "51 pdus",
            put("t", "@a:dest.example", &pdus(51)),
            400,
            "M_BAD_JSON",
        ),
        (
            "101 edus",
            put("t", "@a:dest.example", &edus(101)),
            400,
            "M_BAD_JSON",
        ),
        (
            "edus not array",
            put("t", "@a:dest.example", r#"{"pdus":[],"edus":1}"#),
            400,
            "M_BAD_JSON",
        ),
        ("float in body", float_body, 400, "M_BAD_JSON"),
        (
            "float in body, unknown key",
            float_body_unknown_key,
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "float in body, forged signature",
            float_body_forged,
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "float in body, destination not served",
            float_body_not_served,
            403,
            "M_FORBIDDEN",
        ),
        (
            "pdu over 64 KiB",
            put("t", "@a:dest.example", &big_pdu),
            413,
            "M_TOO_LARGE",
        ),
        (
            "pdu over 64 KiB and 101 edus: the shape first",
            put("t", "@a:dest.example", &big_pdu_many_edus),
            400,
            "M_BAD_JSON",
        ),
        (
            "another server's queue",
            get("@a:dest.example", "stranger.example", &stranger, ""),
            403,
            "M_FORBIDDEN",
        ),
        (
            "sender reads queue",
            get("@a:dest.example", "origin.example", &spec_key(), ""),
            403,
            "M_FORBIDDEN",
        ),
        (
            "get bad user",
            get("nobody", "dest.example", &dest, ""),
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "get negative",
            get(
                "@a:dest.example",
                "dest.example",
                &dest,
                r#"{"entry_id":-1}"#,
            ),
            400,
            "M_BAD_JSON",
        ),
        (
            "get float id",
            get(
                "@a:dest.example",
                "dest.example",
                &dest,
                r#"{"entry_id":"1"}"#,
            ),
            400,
            "M_BAD_JSON",
        ),
        (
            "get no id",
            get("@a:dest.example", "dest.example", &dest, r#"{}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "get array",
            get("@a:dest.example", "dest.example", &dest, r#"[0]"#),
            400,
            "M_BAD_JSON",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut relay = Relay::new(config());
        let response = only_response(run(&mut relay, request).1);
        assert_eq!(
            (response.status, errcode(&response).as_str()),
            (status, code),
            "{what}"
        );
        assert_eq!(relay.pending_ops(), 0, "{what}");
    }
}

impl Request {
    fn with_target(mut self, target: &str) -> Self {
        self.target = target.into();
        self
    }
}

#[test]
fn store_then_respond() {
    let mut relay = Relay::new(config());
    let (id, outputs) = run(&mut relay, put("txn%2F1", "%40alice%3Adest.example", TXN));
    let [Output::Store { op, entry, quota }] = outputs.as_slice() else {
        panic!("expected a store, got {outputs:?}");
    };
    assert_eq!(entry.origin, name("origin.example"));
    assert_eq!(entry.destination, name("dest.example"));
    assert_eq!(entry.txn_id, TxnId::parse("txn/1").unwrap());
    assert_eq!(
        entry.received, NOW_MS,
        "the request's time goes to the store"
    );
    assert_eq!(*quota, relay.config().quota);
    assert_eq!(quota.acked, AckedKeys::default());
    let stored: Value = serde_json::from_slice(&entry.transaction).unwrap();
    assert_eq!(
        stored["origin"], "origin.example",
        "origin is the authenticated sender"
    );
    assert_eq!(stored["pdus"], json!([{"a": 1}]));
    assert!(relay.poll_timeout().is_none());

    // A report for an unknown or wrong-kind op changes nothing.
    relay.handle_fetched(epoch(), *op, Ok(None));
    relay.handle_stored(epoch(), OpId(999), Ok(InsertOutcome::Stored(EntryId(1))));
    assert!(relay.poll_output().is_none());

    relay.handle_stored(epoch(), *op, Ok(InsertOutcome::Stored(EntryId(1))));
    assert!(
        relay.poll_timeout().is_some(),
        "output waiting: timer is now"
    );
    let out = relay.poll_output().unwrap();
    assert_eq!(
        out,
        Output::Respond {
            request: id,
            response: Response::ok(b"{}".to_vec())
        }
    );
    assert_eq!(relay.pending_ops(), 0);
}

#[test]
fn store_outcomes() {
    let cases = [
        (Ok(InsertOutcome::Duplicate(EntryId(3))), 200, ""),
        (Ok(InsertOutcome::AlreadyDelivered), 200, ""),
        (
            Ok(InsertOutcome::QuotaExceeded(QuotaKind::Destination)),
            429,
            "M_LIMIT_EXCEEDED",
        ),
        (
            Ok(InsertOutcome::QuotaExceeded(QuotaKind::Origin)),
            429,
            "M_LIMIT_EXCEEDED",
        ),
        (
            Ok(InsertOutcome::QuotaExceeded(QuotaKind::Total)),
            429,
            "M_LIMIT_EXCEEDED",
        ),
        (
            Ok(InsertOutcome::QuotaExceeded(QuotaKind::OriginShare)),
            429,
            "M_LIMIT_EXCEEDED",
        ),
        (
            Ok(InsertOutcome::QuotaExceeded(QuotaKind::TotalEntries)),
            429,
            "M_LIMIT_EXCEEDED",
        ),
        (Err(StoreError("disk".into())), 500, "M_UNKNOWN"),
        (Ok(InsertOutcome::DiskLow), 503, "M_LIMIT_EXCEEDED"),
    ];
    for (result, status, code) in cases {
        let mut relay = Relay::new(config());
        let (_, outputs) = run(&mut relay, put("t", "@a:dest.example", TXN));
        let Some(Output::Store { op, .. }) = outputs.into_iter().next() else {
            panic!("no store");
        };
        relay.handle_stored(epoch(), op, result);
        let response = only_response(relay.poll_output().into_iter().collect());
        assert_eq!(
            (response.status, errcode(&response).as_str()),
            (status, code)
        );
        // Only a shortage the relay will get over asks for a wait.
        let retry = (status == 503).then_some(30);
        assert_eq!(response.retry_after_secs, retry);
    }
}

#[test]
fn remembered_key_answers_200_empty() {
    let mut relay = Relay::new(config());
    let (id, outputs) = run(&mut relay, put("t", "@a:dest.example", TXN));
    let [Output::Store { op, .. }] = outputs.as_slice() else {
        panic!("expected a store, got {outputs:?}");
    };
    relay.handle_stored(epoch(), *op, Ok(InsertOutcome::AlreadyDelivered));
    assert_eq!(
        relay.poll_output(),
        Some(Output::Respond {
            request: id,
            response: Response::ok(b"{}".to_vec())
        })
    );
    assert_eq!(relay.pending_ops(), 0);
}

#[test]
fn acked_keys_setting_reaches_the_store() {
    let keys = AckedKeys {
        retention_ms: 5_000,
        max: 7,
        max_bytes: 900,
    };
    let mut c = config();
    c.quota.acked = keys;
    let mut relay = Relay::new(c);
    let later = NOW_MS.saturating_add_ms(1_234);

    let (id, outputs) = run_at(&mut relay, later, put("t", "@a:dest.example", TXN));
    let Some(Output::Store { entry, quota, .. }) = outputs.into_iter().next() else {
        panic!("expected a store for {id:?}");
    };
    assert_eq!((entry.received, quota.acked), (later, keys));

    let get = get(
        "@b:dest.example",
        "dest.example",
        &key_for(2),
        r#"{"entry_id":3}"#,
    );
    let (_, outputs) = run_at(&mut relay, later, get);
    let Some(Output::Fetch { ack, .. }) = outputs.into_iter().next() else {
        panic!("expected a fetch");
    };
    assert_eq!(
        ack,
        Some(Ack {
            entry_id: EntryId(3),
            at: later,
            keys
        })
    );
}

#[test]
fn vector_a_from_the_protocol_example() {
    let body = r#"{"origin":"origin.example","origin_server_ts":1,"pdus":[],"edus":[]}"#;
    let request = Request {
        method: "PUT".into(),
        target: "/_matrix/federation/v1/send_relay/txn1/@alice:dest.example".into(),
        authorization: vec![format!(
            r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{VECTOR_A_SIG}""#
        )],
        body: RequestBody::Complete(body.as_bytes().to_vec()),
    };
    let (_, outputs) = run(&mut Relay::new(config()), request);
    assert!(
        matches!(outputs.as_slice(), [Output::Store { .. }]),
        "{outputs:?}"
    );
}

#[test]
fn fetch_and_ack() {
    let dest = key_for(2);
    let mut relay = Relay::new(config());
    for (body, ack) in [
        ("", None),
        (r#"{"entry_id":0}"#, None),
        (
            r#"{"entry_id":7}"#,
            Some(Ack {
                entry_id: EntryId(7),
                at: NOW_MS,
                keys: AckedKeys::default(),
            }),
        ),
    ] {
        let (id, outputs) = run(
            &mut relay,
            get("%40bob%3Adest.example", "dest.example", &dest, body),
        );
        let [
            Output::Fetch {
                op,
                destination,
                ack: got,
                expired_before,
            },
        ] = outputs.as_slice()
        else {
            panic!("expected a fetch, got {outputs:?}");
        };
        assert_eq!((destination, *got), (&name("dest.example"), ack));
        // The default age (30 days) before the request's time.
        assert_eq!(
            expired_before.0,
            NOW_MS.0 - crate::relay::DEFAULT_MAX_ENTRY_AGE_MS
        );
        let entry = QueuedEntry {
            entry_id: EntryId(8),
            origin: name("origin.example"),
            txn_id: TxnId::parse("t8").unwrap(),
            transaction: br#"{"origin":"origin.example","pdus":[]}"#.to_vec(),
        };
        relay.handle_fetched(epoch(), *op, Ok(Some(entry)));
        let Some(Output::Respond { request, response }) = relay.poll_output() else {
            panic!("no response");
        };
        assert_eq!((request, response.status), (id, 200));
        let v: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            v,
            json!({"transaction": {"origin":"origin.example","pdus":[]}, "entry_id": 8, "entries_queued": true, "txn_id": "t8"})
        );
    }
    let (_, outputs) = run(
        &mut relay,
        get("@bob:dest.example", "dest.example", &dest, ""),
    );
    let [Output::Fetch { op, .. }] = outputs.as_slice() else {
        panic!("expected a fetch");
    };
    relay.handle_fetched(epoch(), *op, Ok(None));
    let response = only_response(relay.poll_output().into_iter().collect());
    let v: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        v,
        json!({"transaction": {"origin":"","origin_server_ts":0,"pdus":[],"edus":[]}, "entries_queued": false})
    );
    assert!(
        v.get("entry_id").is_none(),
        "no entry_id when nothing is queued"
    );

    let (_, outputs) = run(
        &mut relay,
        get("@bob:dest.example", "dest.example", &dest, ""),
    );
    let [Output::Fetch { op, .. }] = outputs.as_slice() else {
        panic!("expected a fetch");
    };
    relay.handle_fetched(epoch(), *op, Err(StoreError("gone".into())));
    let response = only_response(relay.poll_output().into_iter().collect());
    assert_eq!(
        (response.status, errcode(&response).as_str()),
        (500, "M_UNKNOWN")
    );
}

#[test]
fn policies() {
    let mut c = config();
    c.denied_origins.insert(name("origin.example"));
    let response = only_response(run(&mut Relay::new(c), put("t", "@a:dest.example", TXN)).1);
    assert_eq!(response.status, 403);

    let mut c = config();
    c.serve = ServePolicy::Open;
    let (_, outputs) = run(&mut Relay::new(c), put("t", "@a:anyone.example", TXN));
    assert!(matches!(outputs.as_slice(), [Output::Store { .. }]));
}

#[test]
fn p2p_origin_without_pinned_key() {
    let node = SigningKey::from_seed(
        KeyId::parse("ed25519:dendrite-demo-yggdrasil").unwrap(),
        [5; 32],
    );
    let hex = node.verify_key().to_hex();
    let target = format!("/_matrix/federation/v1/relay_txn/@alice:{hex}");
    let mut c = config();
    let request = signed("GET", &target, &hex, &node, r#"{"entry_id":0}"#);
    let response = only_response(run(&mut Relay::new(c.clone()), request.clone()).1);
    assert_eq!(response.status, 401, "P2P names are off by default");
    c.keys = crate::auth::KeyRing::with_p2p_names();
    let (_, outputs) = run(&mut Relay::new(c), request);
    assert!(
        matches!(outputs.as_slice(), [Output::Fetch { .. }]),
        "{outputs:?}"
    );
}

#[test]
fn key_and_version_documents() {
    let c = config();
    let mut relay = Relay::new(c.clone());
    let request = Request {
        method: "GET".into(),
        target: "/_matrix/key/v2/server".into(),
        authorization: vec![],
        body: RequestBody::Complete(vec![]),
    };
    let response = only_response(run(&mut relay, request).1);
    let doc: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(doc["server_name"], "relay.example");
    assert_eq!(doc["valid_until_ts"], NOW_MS.0 + c.key_validity_ms);
    let key = c.signing_key.verify_key();
    assert_eq!(doc["verify_keys"]["ed25519:k"]["key"], key.to_base64());
    crate::signing::verify_json("relay.example", c.signing_key.key_id(), &key, &doc).unwrap();

    let request = Request {
        method: "GET".into(),
        target: "/_matrix/federation/v1/version".into(),
        authorization: vec![],
        body: RequestBody::Complete(vec![]),
    };
    let doc: Value =
        serde_json::from_slice(&only_response(run(&mut relay, request).1).body).unwrap();
    assert_eq!(doc["server"]["name"], "matrix-relay");
}

mod fetch_keys {
    use super::*;
    use crate::http::HttpOutcome;
    use crate::server_keys;

    /// The default interval between two fetches of one origin, in ms.
    const INTERVAL: u64 = 300_000;

    fn keyed() -> SigningKey {
        SigningKey::from_seed(KeyId::parse("ed25519:f").unwrap(), [6; 32])
    }

    fn from_far(txn: &str) -> Request {
        let target = format!("/_matrix/federation/v1/send_relay/{txn}/@a:dest.example");
        signed("PUT", &target, "far.example", &keyed(), TXN)
    }

    fn doc(valid_until: UnixMillis) -> HttpOutcome {
        let body = server_keys::document(&name("far.example"), &keyed(), valid_until).unwrap();
        HttpOutcome::Response {
            status: 200,
            body: body.to_string().into_bytes(),
            retry_after: None,
        }
    }

    fn relay() -> Relay {
        let mut c = config();
        c.fetch_keys = true;
        Relay::new(c)
    }

    #[test]
    fn the_interval_is_the_default() {
        assert_eq!(
            RateLimits::default().key_fetch_interval,
            std::time::Duration::from_millis(INTERVAL)
        );
    }

    fn at(relay: &mut Relay, unix: UnixMillis, request: Request) -> Vec<Output> {
        run_at(relay, unix, request).1
    }

    /// The key fetch's outcome, checked as a driver does.
    fn checked(outcome: &HttpOutcome) -> CheckedKeys {
        let check = KeyCheck {
            server: name("far.example"),
        };
        check.run(NOW_MS, outcome)
    }

    /// What follows the keys: the held requests, their bodies read.
    fn after_keys(relay: &mut Relay) -> Vec<Output> {
        drain(
            relay,
            NOW_MS,
            &RequestBody::Complete(TXN.as_bytes().to_vec()),
        )
    }

    fn fetch_op(outputs: &[Output]) -> OpId {
        match outputs {
            [Output::FetchKeys { op, request, check }] => {
                assert_eq!(check.server, request.server);
                assert_eq!(
                    request.max_response_bytes,
                    crate::server_keys::MAX_KEY_DOCUMENT_BYTES
                );
                assert_eq!(
                    (request.method, request.target.as_str()),
                    ("GET", "/_matrix/key/v2/server")
                );
                assert_eq!(request.server, name("far.example"));
                assert!(request.authorization.is_empty());
                *op
            }
            other => panic!("expected one key fetch, got {other:?}"),
        }
    }

    #[test]
    fn unknown_origin_waits_for_its_keys_once() {
        let mut relay = relay();
        let op = fetch_op(&at(&mut relay, NOW_MS, from_far("t1")));
        assert!(
            at(&mut relay, NOW_MS, from_far("t2")).is_empty(),
            "one fetch per server"
        );
        let keys = checked(&doc(NOW_MS.saturating_add_ms(60_000)));
        relay.handle_keys(epoch(), NOW_MS, op, keys);
        let outputs = after_keys(&mut relay);
        assert_eq!(outputs.len(), 2);
        assert!(outputs.iter().all(
            |o| matches!(o, Output::Store { entry, .. } if entry.origin == name("far.example"))
        ));
        // Cached: no fetch now; once expired, fetched again when the
        // interval since the last fetch is over.
        assert!(matches!(
            at(&mut relay, NOW_MS, from_far("t3")).as_slice(),
            [Output::Store { .. }]
        ));
        let expired = only_response(at(
            &mut relay,
            NOW_MS.saturating_add_ms(60_000),
            from_far("t4"),
        ));
        assert_eq!(expired.status, 401);
        fetch_op(&at(
            &mut relay,
            NOW_MS.saturating_add_ms(INTERVAL),
            from_far("t5"),
        ));
    }

    #[test]
    fn bad_documents_and_failures_are_401_and_not_refetched_for_a_while() {
        let other_key = SigningKey::from_seed(KeyId::parse("ed25519:f").unwrap(), [7; 32]);
        let wrong_key = server_keys::document(
            &name("far.example"),
            &other_key,
            NOW_MS.saturating_add_ms(60_000),
        );
        let cases = [
            HttpOutcome::Timeout,
            HttpOutcome::ConnectionFailed("refused".into()),
            HttpOutcome::Response {
                status: 404,
                body: b"{}".to_vec(),
                retry_after: None,
            },
            HttpOutcome::Response {
                status: 200,
                body: b"nope".to_vec(),
                retry_after: None,
            },
            HttpOutcome::Response {
                status: 200,
                body: wrong_key.unwrap().to_string().into_bytes(),
                retry_after: None,
            },
            doc(NOW_MS),
        ];
        for outcome in cases {
            let mut relay = relay();
            let op = fetch_op(&at(&mut relay, NOW_MS, from_far("t1")));
            relay.handle_keys(epoch(), NOW_MS, op, checked(&outcome));
            let response = only_response(after_keys(&mut relay));
            assert_eq!(
                (response.status, errcode(&response).as_str()),
                (401, "M_UNAUTHORIZED"),
                "{outcome:?}"
            );
            let again = only_response(at(
                &mut relay,
                NOW_MS.saturating_add_ms(INTERVAL - 1),
                from_far("t2"),
            ));
            assert_eq!(again.status, 401, "no refetch within the interval");
            fetch_op(&at(
                &mut relay,
                NOW_MS.saturating_add_ms(INTERVAL),
                from_far("t3"),
            ));
        }
    }

    #[test]
    fn a_pinned_origin_with_an_unknown_key_id_is_401_without_a_fetch() {
        // stranger.example is pinned under `ed25519:k`; `ed25519:f` is not.
        let target = "/_matrix/federation/v1/send_relay/t/@a:dest.example";
        let request = signed("PUT", target, "stranger.example", &keyed(), TXN);
        let response = only_response(at(&mut relay(), NOW_MS, request));
        assert_eq!(
            (response.status, errcode(&response).as_str()),
            (401, "M_UNAUTHORIZED")
        );
    }

    #[test]
    fn off_by_default() {
        let response = only_response(run(&mut Relay::new(config()), from_far("t")).1);
        assert_eq!(response.status, 401);
    }
}

#[test]
fn entries_expire_by_the_configured_age_or_never() {
    let mut c = config();
    c.max_entry_age_ms = 2_000;
    assert_eq!(c.expired_before(UnixMillis(10_000)), UnixMillis(8_000));
    // Young clocks do not wrap into the far future.
    assert_eq!(c.expired_before(UnixMillis(1_000)), UnixMillis(0));
    c.max_entry_age_ms = 0;
    assert_eq!(c.expired_before(NOW_MS), UnixMillis(0));
}

fn batch_post(user: &str, origin: &str, key: &SigningKey, body: &str) -> Request {
    signed(
        "POST",
        &crate::request::relay_txns_path(user),
        origin,
        key,
        body,
    )
}

#[test]
fn batch_drain_bodies_become_acks_and_caps_within_the_relay_bounds() {
    use crate::relay::{MAX_BATCH_BYTES, MAX_BATCH_ENTRIES};
    use crate::store::Take;
    let dest = key_for(2);
    let all = Take {
        entries: MAX_BATCH_ENTRIES,
        bytes: MAX_BATCH_BYTES,
    };
    for (body, acks, take) in [
        ("", vec![], all),
        ("{}", vec![], all),
        (
            r#"{"ack":[3,1],"limit":5,"max_bytes":1000}"#,
            vec![3, 1],
            Take {
                entries: 5,
                bytes: 1000,
            },
        ),
        (r#"{"limit":100000,"max_bytes":99999999999}"#, vec![], all),
        (
            r#"{"ack":[7],"limit":0}"#,
            vec![7],
            Take {
                entries: 0,
                bytes: MAX_BATCH_BYTES,
            },
        ),
    ] {
        let mut relay = Relay::new(config());
        let (_, outputs) = run(
            &mut relay,
            batch_post("%40bob%3Adest.example", "dest.example", &dest, body),
        );
        let [
            Output::FetchBatch {
                destination,
                acks: got,
                take: got_take,
                ..
            },
        ] = outputs.as_slice()
        else {
            panic!("{body}: expected a batch fetch, got {outputs:?}");
        };
        assert_eq!(destination, &name("dest.example"));
        let ids: Vec<u64> = got.iter().map(|a| a.entry_id.0).collect();
        assert_eq!((ids, *got_take), (acks, take), "{body}");
        assert!(got.iter().all(|a| a.at == NOW_MS));
    }
}

#[test]
fn batch_drain_refuses_bad_bodies_and_other_servers() {
    let dest = key_for(2);
    let many = format!(
        r#"{{"ack":[{}]}}"#,
        vec!["1"; crate::relay::MAX_BATCH_ACKS + 1].join(",")
    );
    for (body, status, code) in [
        ("[]", 400, "M_BAD_JSON"),
        (r#"{"ack":[0]}"#, 400, "M_BAD_JSON"),
        (r#"{"ack":[-1]}"#, 400, "M_BAD_JSON"),
        (r#"{"ack":"1"}"#, 400, "M_BAD_JSON"),
        (r#"{"limit":-1}"#, 400, "M_BAD_JSON"),
        (r#"{"max_bytes":"big"}"#, 400, "M_BAD_JSON"),
        (many.as_str(), 400, "M_BAD_JSON"),
    ] {
        let mut relay = Relay::new(config());
        let (_, outputs) = run(
            &mut relay,
            batch_post("%40bob%3Adest.example", "dest.example", &dest, body),
        );
        let response = only_response(outputs);
        assert_eq!(
            (response.status, errcode(&response).as_str()),
            (status, code),
            "{body}"
        );
    }
    // Only the destination reads its queue.
    let mut relay = Relay::new(config());
    let (_, outputs) = run(
        &mut relay,
        batch_post("%40bob%3Adest.example", "origin.example", &spec_key(), "{}"),
    );
    let response = only_response(outputs);
    assert_eq!(response.status, 403);
    // The batch drain is a POST.
    let mut relay = Relay::new(config());
    let (_, outputs) = run(
        &mut relay,
        signed(
            "GET",
            &crate::request::relay_txns_path("%40bob%3Adest.example"),
            "dest.example",
            &dest,
            "",
        ),
    );
    assert_eq!(only_response(outputs).status, 405);
}

#[test]
fn batch_drain_answers_with_the_entries_verbatim_in_order() {
    let dest = key_for(2);
    let mut relay = Relay::new(config());
    let (_, outputs) = run(
        &mut relay,
        batch_post("%40bob%3Adest.example", "dest.example", &dest, "{}"),
    );
    let [Output::FetchBatch { op, .. }] = outputs.as_slice() else {
        panic!("expected a batch fetch, got {outputs:?}");
    };
    let entry = |id: u64, txn: &str, body: &str| QueuedEntry {
        entry_id: EntryId(id),
        origin: name("origin.example"),
        txn_id: crate::id::TxnId::parse(txn).unwrap(),
        transaction: body.as_bytes().to_vec(),
    };
    let batch = crate::store::AckBatch {
        acked: 0,
        entries: vec![
            entry(4, "a", r#"{"pdus":[{"n":-0}],"origin":"origin.example"}"#),
            entry(9, "b", r#"{"pdus":[],"origin":"origin.example"}"#),
        ],
        more: true,
    };
    relay.handle_fetched_batch(epoch(), *op, Ok(batch));
    let response = only_response(relay.poll_output().into_iter().collect());
    assert_eq!(response.status, 200);
    assert_eq!(
        std::str::from_utf8(&response.body).unwrap(),
        concat!(
            r#"{"transactions":[{"entry_id":4,"txn_id":"a","transaction":{"pdus":[{"n":-0}],"origin":"origin.example"}},"#,
            r#"{"entry_id":9,"txn_id":"b","transaction":{"pdus":[],"origin":"origin.example"}}],"entries_queued":true}"#
        )
    );
    assert_eq!(relay.pending_ops(), 0);
}

/// A batch drain by dest.example with `body`, answered by the store with
/// nothing queued; what follows.
fn long_poll(relay: &mut Relay, body: &str) -> Vec<Output> {
    let (_, outputs) = run(
        relay,
        batch_post("%40bob%3Adest.example", "dest.example", &key_for(2), body),
    );
    let [Output::FetchBatch { op, .. }] = outputs.as_slice() else {
        panic!("expected a batch fetch, got {outputs:?}");
    };
    relay.handle_fetched_batch(epoch(), *op, Ok(crate::store::AckBatch::default()));
    std::iter::from_fn(|| relay.poll_output()).collect()
}

const EMPTY_BATCH: &str = r#"{"transactions":[],"entries_queued":false}"#;

#[test]
fn a_long_poll_waits_until_an_entry_of_its_destination_is_stored() {
    let mut c = config();
    c.serve = ServePolicy::Open;
    let mut relay = Relay::new(c);
    assert!(
        long_poll(&mut relay, r#"{"timeout_ms":5000}"#).is_empty(),
        "parked"
    );
    assert_eq!(relay.waiting(), 1);
    assert_eq!(
        relay.poll_timeout(),
        Some(epoch() + std::time::Duration::from_secs(5))
    );
    // An entry for another destination wakes nothing.
    let (_, outputs) = run(&mut relay, put("t", "@a:other.example", TXN));
    let Some(Output::Store { op, .. }) = outputs.into_iter().next() else {
        panic!("no store");
    };
    relay.handle_stored(epoch(), op, Ok(InsertOutcome::Stored(EntryId(1))));
    let outputs: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
    assert!(matches!(outputs.as_slice(), [Output::Respond { .. }]));
    assert_eq!(relay.waiting(), 1);
    // One for it: the long-poll fetches again, without acks, and answers.
    let (_, outputs) = run(&mut relay, put("t", "@a:dest.example", TXN));
    let Some(Output::Store { op, .. }) = outputs.into_iter().next() else {
        panic!("no store");
    };
    relay.handle_stored(epoch(), op, Ok(InsertOutcome::Stored(EntryId(2))));
    let outputs: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
    let fetch = outputs
        .iter()
        .find_map(|o| match o {
            Output::FetchBatch {
                op,
                destination,
                acks,
                ..
            } => Some((*op, destination.clone(), acks.len())),
            _ => None,
        })
        .expect("a fetch again");
    assert_eq!((fetch.1, fetch.2), (name("dest.example"), 0));
    assert_eq!(relay.waiting(), 0);
    let entry = QueuedEntry {
        entry_id: EntryId(2),
        origin: name("origin.example"),
        txn_id: crate::id::TxnId::parse("t").unwrap(),
        transaction: br#"{"origin":"origin.example"}"#.to_vec(),
    };
    let batch = crate::store::AckBatch {
        acked: 0,
        entries: vec![entry],
        more: false,
    };
    relay.handle_fetched_batch(epoch(), fetch.0, Ok(batch));
    let response = only_response(relay.poll_output().into_iter().collect());
    assert!(
        String::from_utf8(response.body)
            .unwrap()
            .contains(r#""entry_id":2"#)
    );
    assert_eq!(relay.poll_timeout(), None, "nothing waits");
}

#[test]
fn a_long_poll_answers_empty_at_its_deadline_or_at_shutdown() {
    let mut relay = Relay::new(config());
    // Asked for 10 minutes: waits at most the relay's bound.
    assert!(long_poll(&mut relay, r#"{"timeout_ms":600000}"#).is_empty());
    let deadline = epoch() + std::time::Duration::from_millis(crate::relay::MAX_BATCH_WAIT_MS);
    assert_eq!(relay.poll_timeout(), Some(deadline));
    relay.handle_timeout(deadline - std::time::Duration::from_millis(1));
    assert!(relay.poll_output().is_none(), "not yet");
    relay.handle_timeout(deadline);
    let response = only_response(relay.poll_output().into_iter().collect());
    assert_eq!(std::str::from_utf8(&response.body).unwrap(), EMPTY_BATCH);
    // Shutdown answers every waiting one at once (a clock read late
    // never goes back: their deadlines count from the last one).
    assert!(long_poll(&mut relay, r#"{"timeout_ms":5000}"#).is_empty());
    assert!(long_poll(&mut relay, r#"{"timeout_ms":5000}"#).is_empty());
    assert_eq!(
        relay.poll_timeout(),
        Some(deadline + std::time::Duration::from_secs(5))
    );
    relay.release_waits(deadline);
    let responses: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
    assert_eq!(responses.len(), 2);
    assert_eq!(relay.waiting(), 0);
    // Without timeout_ms an empty queue is answered at once.
    let outputs = long_poll(&mut relay, "{}");
    assert_eq!(outputs.len(), 1, "{outputs:?}");
}

/// Stores `txn_id` for `user` and reports it stored as entry `entry`.
fn store_reported(relay: &mut Relay, txn_id: &str, user: &str, entry: u64) {
    let (_, outputs) = run(relay, put(txn_id, user, TXN));
    let Some(Output::Store { op, .. }) = outputs.into_iter().next() else {
        panic!("no store");
    };
    relay.handle_stored(epoch(), op, Ok(InsertOutcome::Stored(EntryId(entry))));
    let outputs: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
    assert!(
        matches!(outputs.as_slice(), [Output::Respond { .. }]),
        "{outputs:?}"
    );
}

#[test]
fn a_long_poll_whose_empty_fetch_is_reported_after_a_store_for_it_fetches_again() {
    let mut c = config();
    c.serve = ServePolicy::Open;
    let mut relay = Relay::new(c);
    let long_poll_fetch = |relay: &mut Relay| {
        let (_, outputs) = run(
            relay,
            batch_post(
                "%40bob%3Adest.example",
                "dest.example",
                &key_for(2),
                r#"{"timeout_ms":5000}"#,
            ),
        );
        let [Output::FetchBatch { op, .. }] = outputs.as_slice() else {
            panic!("expected a batch fetch, got {outputs:?}");
        };
        *op
    };
    // A store for another destination between the fetch and its report:
    // the empty fetch parks.
    let op = long_poll_fetch(&mut relay);
    store_reported(&mut relay, "t1", "@a:other.example", 1);
    relay.handle_fetched_batch(epoch(), op, Ok(crate::store::AckBatch::default()));
    assert!(relay.poll_output().is_none());
    assert_eq!(relay.waiting(), 1);
    relay.release_waits(epoch());
    let _ = std::iter::from_fn(|| relay.poll_output()).count();
    // A store for its destination reported first: the fetch may have read
    // the queue before that entry was there, so it fetches again, without
    // acks, instead of parking until its deadline.
    let op = long_poll_fetch(&mut relay);
    store_reported(&mut relay, "t2", "@a:dest.example", 2);
    relay.handle_fetched_batch(epoch(), op, Ok(crate::store::AckBatch::default()));
    let outputs: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
    let [
        Output::FetchBatch {
            op,
            destination,
            acks,
            ..
        },
    ] = outputs.as_slice()
    else {
        panic!("expected a fetch again, got {outputs:?}");
    };
    assert_eq!((destination, acks.len()), (&name("dest.example"), 0));
    assert_eq!(relay.waiting(), 0);
    // That one finds nothing with no store since: it parks.
    relay.handle_fetched_batch(epoch(), *op, Ok(crate::store::AckBatch::default()));
    assert!(relay.poll_output().is_none());
    assert_eq!(relay.waiting(), 1);
}
