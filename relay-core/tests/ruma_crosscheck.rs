//! Cross-checks canonical JSON and Signing JSON against ruma, an independent
//! implementation (dev-dependency only).
#![allow(
    clippy::unwrap_used,
    reason = "a test: its helpers may unwrap, a failure fails the test"
)]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use proptest::prelude::*;
use relay_core::KeyId;
use relay_core::auth::request_json;
use relay_core::canonical::{MAX_SAFE_INTEGER, to_canonical_string};
use relay_core::signing::{SigningKey, sign_json, verify_json};
use ruma_common::CanonicalJsonValue;
use ruma_common::canonical_json::{CanonicalJsonObject, try_from_json_map};
use ruma_common::serde::Base64;
use ruma_signatures::{Ed25519KeyPair, PublicKeyMap};
use serde_json::{Map, Value, json};

const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
const P2P_NAME: &str = "5c65f42514b601fddb7b7927cf67c18916c0a639b60e1eb58170c903c91c24d2";

/// ruma's canonical text of `value`, or `None` if ruma has no canonical form.
fn ruma_canonical(value: &Value) -> Option<String> {
    let value = CanonicalJsonValue::try_from(value.clone()).ok()?;
    serde_json::to_string(&value).ok()
}

fn spec_seed() -> [u8; 32] {
    relay_core::b64::decode(SPEC_SEED)
        .unwrap()
        .try_into()
        .unwrap()
}

/// ruma's key pair for a 32-byte seed, through a PKCS#8 v1 document.
fn ruma_key(seed: [u8; 32], version: &str) -> Ed25519KeyPair {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
}

fn public_key_map(entity: &str, key_id: &str, key: &SigningKey) -> PublicKeyMap {
    let keys = BTreeMap::from([(key_id.to_owned(), Base64::new(key.verify_key().0.to_vec()))]);
    BTreeMap::from([(entity.to_owned(), keys)])
}

fn to_ruma_object(value: &Value) -> CanonicalJsonObject {
    let Value::Object(map) = value else {
        panic!("not an object: {value}");
    };
    try_from_json_map(map.clone()).unwrap()
}

fn from_ruma_object(object: CanonicalJsonObject) -> Value {
    CanonicalJsonValue::Object(object).into()
}

#[test]
fn spec_canonical_vectors_agree_with_ruma() {
    for text in [
        "{}",
        r#"{ "one": 1, "two": "Two" }"#,
        r#"{ "b": "2", "a": "1" }"#,
        r#"{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"medium":"email","address":"john.doe@example.org"},{"medium":"msisdn","address":"123456789"}]}}}"#,
        r#"{ "a": "日本語" }"#,
        r#"{ "本": 2, "日": 1 }"#,
        r#"{ "a": "\u65E5" }"#,
        r#"{ "a": null }"#,
        r#"{ "a": "\u0001\u001F\b\/\u007f\"\\" }"#,
    ] {
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            Some(to_canonical_string(&value).unwrap()),
            ruma_canonical(&value),
            "{text}"
        );
    }
    // Where the two disagree: ruma rejects the spec's own integral-float
    // vector, which we (and the spec) write as integers.
    let floats: Value = serde_json::from_str(r#"{ "a": -0, "b": 1e10 }"#).unwrap();
    assert_eq!(
        to_canonical_string(&floats).unwrap(),
        r#"{"a":0,"b":10000000000}"#
    );
    assert_eq!(ruma_canonical(&floats), None);
    // Both reject numbers outside ±(2^53−1).
    for bad in [json!(1u64 << 53), json!(-(1i64 << 53)), json!(1.5)] {
        assert!(to_canonical_string(&bad).is_err());
        assert_eq!(ruma_canonical(&bad), None, "{bad}");
    }
}

#[test]
fn spec_signing_vectors_agree_with_ruma() {
    let ours = SigningKey::from_seed(KeyId::parse("ed25519:1").unwrap(), spec_seed());
    let theirs = ruma_key(spec_seed(), "1");
    for value in [json!({}), json!({"one": 1, "two": "Two"})] {
        let mut signed_by_us = value.clone();
        sign_json("domain", &ours, &mut signed_by_us).unwrap();
        let mut signed_by_ruma = to_ruma_object(&value);
        ruma_signatures::sign_json("domain", &theirs, &mut signed_by_ruma).unwrap();
        assert_eq!(signed_by_us, from_ruma_object(signed_by_ruma));
    }
}

#[test]
fn x_matrix_vectors_verify_with_ruma() {
    let content_a =
        json!({"origin": "origin.example", "origin_server_ts": 1, "pdus": [], "edus": []});
    let uri_b = format!("/_matrix/federation/v1/relay_txn/@alice:{P2P_NAME}");
    let content_b = json!({"entry_id": 0});
    for (version, origin, method, uri, content, sig) in [
        (
            "1",
            "origin.example",
            "PUT",
            "/_matrix/federation/v1/send_relay/txn1/@alice:dest.example",
            &content_a,
            "STBA1xu0p9jKYatO5IAB/Um7OEkoMewBqfy6Anp5JbAOubPnQvKeAl3yn0wEw0IMPo5QVBTzKVOaFZxsV78FBA",
        ),
        (
            "dendrite-demo-yggdrasil",
            P2P_NAME,
            "GET",
            uri_b.as_str(),
            &content_b,
            "gE/9/hruZZSqaGhXDxFlZ+r/Wa2Q1JlNkE5aZ0nGABBrAQcd1ZhExBXiTcnEK+wbW9jXtpIPhl/o8tLwCZx0CA",
        ),
    ] {
        let key = SigningKey::from_seed(KeyId::ed25519(version).unwrap(), spec_seed());
        let key_id = key.key_id().as_str().to_owned();
        let mut object = request_json(method, uri, origin, "relay.example", Some(content));
        sign_json(origin, &key, &mut object).unwrap();
        assert_eq!(object["signatures"][origin][&key_id], sig);
        verify_json(origin, key.key_id(), &key.verify_key(), &object).unwrap();
        ruma_signatures::verify_json(
            &public_key_map(origin, &key_id, &key),
            &to_ruma_object(&object),
        )
        .unwrap();
    }
}

/// A few key pairs, ours and ruma's from the same seeds.
///
/// Implementation note: derived once, because ed25519 is slow in debug
/// builds; the proptest picks one per case.
static KEYS: LazyLock<Vec<(SigningKey, Ed25519KeyPair)>> = LazyLock::new(|| {
    let seeds = [
        spec_seed(),
        [0; 32],
        [0xff; 32],
        *b"a seed that is 32 bytes long....",
    ];
    seeds
        .into_iter()
        .enumerate()
        .map(|(i, seed)| {
            let version = format!("k_{i}");
            let ours = SigningKey::from_seed(KeyId::ed25519(&version).unwrap(), seed);
            (ours, ruma_key(seed, &version))
        })
        .collect()
});

/// Strings with the characters that canonical JSON treats specially.
fn json_string() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '"',
        '\\',
        '/',
        '\0',
        '\u{8}',
        '\t',
        '\n',
        '\u{b}',
        '\u{c}',
        '\r',
        '\u{1f}',
        '\u{7f}',
        '\u{80}',
        '\u{e9}',
        '\u{2028}',
        '\u{65e5}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{1f600}',
        '\u{10ffff}',
    ]);
    let ch = prop_oneof![3 => any::<char>(), 2 => special, 3 => prop::char::range('a', 'e')];
    prop::collection::vec(ch, 0..8).prop_map(String::from_iter)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(Value::from),
        prop::sample::select(vec![0, -1, 1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
            .prop_map(Value::from),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            json_map(inner).prop_map(Value::Object),
        ]
    })
}

fn json_map(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(json_string(), values, 0..6).prop_map(|m| m.into_iter().collect())
}

/// An object to sign, sometimes with an `unsigned` section.
fn json_object() -> impl Strategy<Value = Value> {
    (json_map(json_value()), prop::option::of(json_value())).prop_map(|(mut map, unsigned)| {
        if let Some(unsigned) = unsigned {
            map.insert("unsigned".to_owned(), unsigned);
        }
        Value::Object(map)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_json_matches_ruma(value in json_value()) {
        prop_assert_eq!(Some(to_canonical_string(&value).unwrap()), ruma_canonical(&value));
    }

    #[test]
    fn signatures_interoperate_with_ruma(value in json_object(), which in 0..KEYS.len()) {
        let (ours, theirs) = &KEYS[which];
        let key_id = ours.key_id();
        let keys = public_key_map("origin.example", key_id.as_str(), ours);

        let mut signed_by_us = value.clone();
        sign_json("origin.example", ours, &mut signed_by_us).unwrap();
        prop_assert!(ruma_signatures::verify_json(&keys, &to_ruma_object(&signed_by_us)).is_ok());

        let mut signed_by_ruma = to_ruma_object(&value);
        ruma_signatures::sign_json("origin.example", theirs, &mut signed_by_ruma).unwrap();
        let signed_by_ruma = from_ruma_object(signed_by_ruma);
        prop_assert_eq!(verify_json("origin.example", key_id, &ours.verify_key(), &signed_by_ruma), Ok(()));
        // ed25519 is deterministic: both wrote the same signature.
        prop_assert_eq!(signed_by_us, signed_by_ruma);
    }
}
