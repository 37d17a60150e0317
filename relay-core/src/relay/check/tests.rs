//! Unit tables for the body check: what a send_relay body stores.

use super::*;
use crate::auth::{parse_authorization, sign_request};
use crate::id::KeyId;
use crate::signing::SigningKey;

const TARGET: &str = "/_matrix/federation/v1/send_relay/t/@a:dest.example";

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), [7; 32])
}

/// Checks `body` as a send_relay from origin.example whose signature
/// was made over `signed` (parsed: only its meaning is signed).
fn check(signed: &str, body: &str) -> Verdict {
    let relay = name("relay.example");
    let content: Value = serde_json::from_str(signed).unwrap();
    let header = sign_request(
        &key(),
        &name("origin.example"),
        &relay,
        "PUT",
        TARGET,
        Some(&content),
    )
    .unwrap();
    let head = ClaimedHead {
        method: "PUT".into(),
        target: TARGET.into(),
        claimed: parse_authorization([header.as_str()], &relay).unwrap(),
        decision: Ok(Intent::Store {
            destination: name("dest.example"),
            txn_id: TxnId::parse("t").unwrap(),
        }),
    };
    let check = head.into_check(RequestId(1), key().verify_key(), relay, usize::MAX);
    check.run(body.as_bytes()).verdict
}

/// The stored transaction of `body`, signed as sent.
fn stored(body: &str) -> String {
    match check(body, body) {
        Verdict::Store { transaction, .. } => String::from_utf8(transaction).unwrap(),
        other => panic!("{body}: expected a store, got {other:?}"),
    }
}

fn refused(signed: &str, body: &str) -> (u16, ErrCode) {
    match check(signed, body) {
        Verdict::Refused(e) => (e.code.status(), e.code),
        other => panic!("{body}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn pdus_and_edus_are_stored_byte_for_byte() {
    let pdu = r#"{"type":"m.room.message", "depth":1e2,"z":-0,"a":1.0,"body":"caf\u00e9 \"\/","nested":{"y":[ -0 ,1E2],"x":null}}"#;
    let edu = "{\"edu_type\" : \"m.typing\",\n \"content\":{\"b\":-0.0,\"a\":\"\\u00E9\"}}";
    let cases = [
        (
            format!(
                r#"{{"origin":"liar.example","origin_server_ts":1e12,"pdus":[{pdu}],"edus":[{edu}]}}"#
            ),
            format!(
                r#"{{"origin":"origin.example","origin_server_ts":1e12,"pdus":[{pdu}],"edus":[{edu}]}}"#
            ),
        ),
        // Other top-level fields are kept as sent, in the order sent,
        // `origin` first; whitespace inside each value survives, not
        // between PDUs.
        (
            format!(
                "{{ \"pdus\" : [ {pdu} ,\n{pdu}],\"x-extra\":{{\"k\": 2.0}},\"origin_server_ts\":-0,\"origin\":\"liar.example\" }}"
            ),
            format!(
                "{{\"origin\":\"origin.example\",\"pdus\":[{pdu},{pdu}],\"x-extra\":{{\"k\": 2.0}},\"origin_server_ts\":-0}}"
            ),
        ),
        // No `origin` sent, no `edus`; `edus: null` stays null.
        (
            format!(r#"{{"pdus":[{pdu}]}}"#),
            format!(r#"{{"origin":"origin.example","pdus":[{pdu}]}}"#),
        ),
        (
            r#"{"edus":null,"pdus":[]}"#.to_owned(),
            r#"{"origin":"origin.example","edus":null,"pdus":[]}"#.to_owned(),
        ),
        // A field sent twice is stored once, with the value that was
        // checked and signed: the last.
        (
            r#"{"pdus":[{"a":1}],"origin":"x","k":1,"pdus":[{"b":-0}],"k":2,"origin":"y"}"#
                .to_owned(),
            r#"{"origin":"origin.example","pdus":[{"b":-0}],"k":2}"#.to_owned(),
        ),
    ];
    for (body, expected) in cases {
        let stored = stored(&body);
        assert_eq!(stored, expected, "{body}");
        let value: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(value["origin"], "origin.example");
    }
}

#[test]
fn every_pdus_must_be_an_array() {
    // The last `pdus` is the one checked and stored; an earlier one that
    // is not an array makes the body no transaction.
    let body = r#"{"pdus":{"a":1},"pdus":[]}"#;
    assert_eq!(refused(body, body), (400, ErrCode::BadJson));
    assert_eq!(
        stored(r#"{"pdus":[{"a":1}],"pdus":[]}"#),
        r#"{"origin":"origin.example","pdus":[]}"#
    );
}

#[test]
fn the_signature_is_checked_on_the_canonical_form() {
    // Signed over one text, sent as another with the same meaning.
    let signed = r#"{"edus":[],"origin":"origin.example","origin_server_ts":1,"pdus":[{"a":100,"b":0,"c":"é"}]}"#;
    let sent = "{\"pdus\": [ {\"c\":\"\\u00e9\", \"b\": -0, \"a\": 1e2} ],\n\t\"origin_server_ts\": 1.0, \"edus\": [], \"origin\": \"origin.example\"}";
    assert_eq!(
        stored(sent),
        "{\"origin\":\"origin.example\",\"pdus\":[{\"c\":\"\\u00e9\", \"b\": -0, \"a\": 1e2}],\"origin_server_ts\":1.0,\"edus\":[]}"
    );
    assert!(matches!(check(signed, sent), Verdict::Store { .. }));
    // Another meaning is another signature.
    let changed = sent.replace("1e2", "1e3");
    assert_eq!(
        refused(signed, &changed),
        (401, ErrCode::Unauthorized),
        "{changed}"
    );
}

#[test]
fn pdu_size_is_measured_as_sent() {
    // `{"x":"…"}` of exactly `len` bytes, padded with `pad` spaces.
    let pdu = |len: usize, pad: usize| {
        format!(
            r#"{{"x":"{}"{}}}"#,
            "y".repeat(len - 8 - pad),
            " ".repeat(pad)
        )
    };
    let body = |pdu: &str| format!(r#"{{"pdus":[{{"a":1}}, {pdu}]}}"#);
    for (pdu, fits) in [
        (pdu(MAX_PDU_BYTES, 0), true),
        (pdu(MAX_PDU_BYTES, 1_000), true),
        (pdu(MAX_PDU_BYTES + 1, 0), false),
        // Its compact form would fit; what was sent does not.
        (pdu(MAX_PDU_BYTES + 1, 1_000), false),
    ] {
        assert_eq!(pdu.len(), MAX_PDU_BYTES + usize::from(!fits));
        let body = body(&pdu);
        match check(&body, &body) {
            Verdict::Store { transaction, .. } => {
                assert!(fits, "{} bytes stored", pdu.len());
                let text = String::from_utf8(transaction).unwrap();
                assert!(text.ends_with(&format!(",{pdu}]}}")), "{text}");
            }
            Verdict::Refused(e) => {
                assert!(!fits, "{} bytes refused: {e:?}", pdu.len());
                assert_eq!(e.code, ErrCode::TooLarge);
            }
            Verdict::Fetch { .. } | Verdict::FetchBatch { .. } => panic!("a fetch"),
        }
    }
}
