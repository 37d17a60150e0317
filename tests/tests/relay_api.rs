//! The happy paths of `send_relay` and `relay_txn` (PROTOCOL §2, §5), the
//! extra endpoints, and what a Dendrite client decodes.

use relay_core::KeyId;
use relay_core::signing::{SigningKey, verify_json};
use relay_tests::api::{markers, put_txn_bytes};
use relay_tests::dendrite::{EmptyResp, RespGetRelayTransaction};
use relay_tests::http::Request;
use relay_tests::*;
use serde_json::{Value, json};

const ALICE: &str = "@alice:dest.example";
const ALICE_ENCODED: &str = "%40alice%3Adest.example";

fn empty_answer() -> Value {
    json!({"transaction": {"origin": "", "origin_server_ts": 0, "pdus": [], "edus": []}, "entries_queued": false})
}

#[test]
fn exchange_of_protocol_section_5_with_raw_user_id() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);

    // The body claims another origin: the stored one is the authenticated sender.
    let body = json!({"origin": "liar.example", "origin_server_ts": 1, "pdus": [{"marker": "m1"}], "edus": []});
    let resp = put_txn(&relay, &origin, "txn1", ALICE, &body);
    resp.assert_status(200);
    assert!(
        resp.is_json(),
        "PUT 200 must be application/json:\n{resp:?}"
    );
    assert_eq!(resp.json(), json!({}), "PUT answers exactly {{}}");

    let resp = relay_txn(&relay, &dest, ALICE_ENCODED, Some(0));
    let got = resp.ok_json();
    assert_eq!(
        got["transaction"],
        json!({"origin": "origin.example", "origin_server_ts": 1, "pdus": [{"marker": "m1"}], "edus": []}),
        "{resp:?}"
    );
    assert_eq!(got["entries_queued"], json!(true), "{resp:?}");
    assert_eq!(got["txn_id"], json!("txn1"), "{resp:?}");
    let entry = got["entry_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no entry_id:\n{resp:?}"));
    assert!(
        entry >= 1,
        "entry ids start at 1 (0 means no ack):\n{resp:?}"
    );

    let resp = relay_txn(&relay, &dest, ALICE_ENCODED, Some(entry));
    assert_eq!(resp.ok_json(), empty_answer(), "{resp:?}");
    // Nothing left, and asking again is still fine.
    assert_eq!(
        relay_txn(&relay, &dest, ALICE, Some(entry)).ok_json(),
        empty_answer()
    );
}

#[test]
fn percent_encoded_and_raw_user_ids_name_the_same_queue() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "t-enc", ALICE_ENCODED, "encoded");
    store(&relay, &origin, "t-raw", ALICE, "raw");
    // Mixed forms, and lower-case hex escapes.
    store(&relay, &origin, "t-mixed", "%40alice:dest.example", "mixed");
    store(
        &relay,
        &origin,
        "t-lower",
        "%40alice%3adest.example",
        "lower",
    );
    let pulled = drain(&relay, &dest, "@alice%3Adest.example");
    assert_eq!(markers(&pulled), ["encoded", "raw", "mixed", "lower"]);
    let txn_ids: Vec<_> = pulled
        .iter()
        .map(|p| p.txn_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(txn_ids, ["t-enc", "t-raw", "t-mixed", "t-lower"]);
}

#[test]
fn queue_belongs_to_the_destination_server_not_the_user() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "a", "@alice:dest.example", "for-alice");
    store(&relay, &origin, "b", "@bob:dest.example", "for-bob");
    let pulled = drain(&relay, &dest, "@carol:dest.example");
    assert_eq!(markers(&pulled), ["for-alice", "for-bob"]);
}

#[test]
fn every_valid_user_id_form_is_accepted() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let longest = format!("@{}:dest.example", "x".repeat(255 - "@:dest.example".len()));
    assert_eq!(longest.len(), 255);
    let user_ids = [
        "@Alice:dest.example".to_owned(),
        "@a+b=c/d_e.f-g!~*'()$&;,:dest.example".to_owned(),
        "@0:dest.example".to_owned(),
        longest,
    ];
    for (i, user) in user_ids.iter().enumerate() {
        store(
            &relay,
            &origin,
            &format!("t{i}"),
            &percent_encode(user),
            user,
        );
    }
    let pulled = drain(&relay, &dest, ALICE);
    assert_eq!(markers(&pulled), user_ids);
}

#[test]
fn empty_get_body_means_entry_zero() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    // Empty queue, empty body.
    assert_eq!(
        relay_txn(&relay, &dest, ALICE, None).ok_json(),
        empty_answer()
    );
    store(&relay, &origin, "t1", ALICE, "one");
    store(&relay, &origin, "t2", ALICE, "two");
    let first = relay_txn(&relay, &dest, ALICE, None).ok_json();
    assert_eq!(first["transaction"]["pdus"][0]["marker"], "one");
    // An empty body acknowledges nothing: the same entry again.
    let again = relay_txn(&relay, &dest, ALICE, None).ok_json();
    assert_eq!(again, first);
    let entry = first["entry_id"].as_u64().expect("entry_id");
    let second = relay_txn(&relay, &dest, ALICE, Some(entry)).ok_json();
    assert_eq!(second["transaction"]["pdus"][0]["marker"], "two");
}

#[test]
fn transactions_come_back_exactly_as_sent() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let pdus: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "type": "m.room.message", "room_id": "!r:origin.example", "sender": "@a:origin.example",
                "content": {"body": format!("héllo ☃ \u{1F600} \"quoted\" \\ {i}"), "n": i, "neg": -42, "nested": [[], {}, [null, true, false]]},
                "depth": 9_007_199_254_740_991_i64,
            })
        })
        .collect();
    let edus = json!([
        {"edu_type": "m.typing", "content": {"room_id": "!r:origin.example", "user_id": "@a:origin.example", "typing": true}},
        {"edu_type": "m.presence", "content": {"push": []}},
    ]);
    let body = json!({"origin": ORIGIN_NAME, "origin_server_ts": 1_234_567_890_123_u64, "pdus": pdus, "edus": edus});
    // Whitespace and key order of the body do not matter.
    let pretty = serde_json::to_vec_pretty(&body).expect("serialise");
    let resp = put_txn_bytes(&relay, &origin, "exact", ALICE, &pretty);
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    let pulled = drain(&relay, &dest, ALICE);
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].transaction, body);
}

/// PDUs and EDUs whose numbers, escapes and key order a re-serialiser
/// would change (`-0` to `-0.0`, `1e2` to `100.0`, `\u00e9` to `é`).
const RAW_PDUS: [&str; 2] = [
    r#"{"type":"m.room.message","z":-0,"depth":1e2,"a":1.0,"content":{"body":"caf\u00e9 \"\/ \ud83d\ude00","b":[1E2, -0.0]},"origin_server_ts":1700000000000}"#,
    "{ \"sender\" : \"@a:origin.example\",\n  \"n\": -0e5 }",
];
const RAW_EDU: &str = r#"{"edu_type":"m.typing","content":{"typing":true,"n":2E0}}"#;

#[test]
fn pdus_and_edus_are_handed_out_byte_for_byte() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let [pdu1, pdu2] = RAW_PDUS;
    let body = format!(
        "{{\"origin\":\"liar.example\",\"origin_server_ts\":1.7e12,\"pdus\":[{pdu1},\n{pdu2}],\"edus\":[{RAW_EDU}],\"x-extra\":{{\"k\": 2.0}}}}"
    );
    let resp = put_txn_bytes(&relay, &origin, "raw", ALICE, body.as_bytes());
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    let resp = relay_txn(&relay, &dest, ALICE, Some(0));
    resp.assert_status(200);
    // The answer's text, not its parsed meaning: every element as sent,
    // `origin` replaced and first, the other fields as sent (only the
    // whitespace between PDUs is gone).
    let expected = format!(
        "{{\"transaction\":{{\"origin\":\"origin.example\",\"origin_server_ts\":1.7e12,\"pdus\":[{pdu1},{pdu2}],\"edus\":[{RAW_EDU}],\"x-extra\":{{\"k\": 2.0}}}},"
    );
    let text = resp.text();
    assert!(
        text.starts_with(&expected),
        "expected {expected}…\ngot {text}"
    );
}

#[test]
fn a_hundred_transactions_come_back_oldest_first() {
    let origin = Server::origin_example();
    let other = Server::named("other.example");
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &other, &dest]);
    let mut expected = Vec::new();
    for i in 0..100 {
        // Two origins interleaved, txn ids that do not sort like the order.
        let from = if i % 3 == 0 { &other } else { &origin };
        let marker = format!("m{i:03}");
        store(&relay, from, &format!("z{}", 100 - i), ALICE, &marker);
        expected.push((from.name().to_owned(), marker));
    }
    let pulled = drain(&relay, &dest, ALICE);
    let got: Vec<_> = pulled
        .iter()
        .map(|p| {
            (
                p.origin().to_owned(),
                p.marker().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let mut ids: Vec<u64> = pulled.iter().map(|p| p.entry_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 100, "entry ids are distinct");
}

#[test]
fn storing_is_idempotent_per_origin_txn_and_destination() {
    let origin = Server::origin_example();
    let other = Server::named("other.example");
    let dest = Server::named(DEST_NAME);
    let dest2 = Server::named("dest2.example");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for("dest2.example")
        .trust(&origin)
        .trust(&other)
        .trust(&dest)
        .trust(&dest2)
        .start();
    store(&relay, &origin, "same", ALICE, "first");
    // A retransmission (even to another user of the same server, even with
    // another body) is answered 200 and not stored again.
    store(&relay, &origin, "same", ALICE, "first");
    store(
        &relay,
        &origin,
        "same",
        "@bob:dest.example",
        "retransmit-other-user",
    );
    // Same txn id from another origin, or to another destination: new.
    store(&relay, &other, "same", ALICE, "other-origin");
    store(
        &relay,
        &origin,
        "same",
        "@alice:dest2.example",
        "other-destination",
    );
    let pulled = drain(&relay, &dest, ALICE);
    assert_eq!(markers(&pulled), ["first", "other-origin"]);
    let pulled2 = drain(&relay, &dest2, "@alice:dest2.example");
    assert_eq!(markers(&pulled2), ["other-destination"]);
}

/// A retransmission after the destination acknowledged the transaction
/// (the sender's first 200 was lost) is answered 200 `{}` and not stored
/// again, also after a restart.
#[test]
fn a_retransmission_after_the_acknowledgement_is_not_stored_again() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    let body = json!({"origin_server_ts": 1, "pdus": [{"marker": "m1"}], "edus": []});
    let resp = put_txn(&relay, &origin, "txn1", ALICE, &body);
    assert_eq!(resp.ok_json(), json!({}), "{resp:?}");

    let resp = relay_txn(&relay, &dest, ALICE, Some(0));
    let got = resp.ok_json();
    assert_eq!(got["txn_id"], json!("txn1"), "{resp:?}");
    assert_eq!(got["transaction"]["pdus"], json!([{"marker": "m1"}]));
    let entry = got["entry_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no entry_id:\n{resp:?}"));
    let resp = relay_txn(&relay, &dest, ALICE, Some(entry));
    assert_eq!(resp.ok_json(), empty_answer(), "{resp:?}");

    for when in ["after the ack", "after a restart"] {
        if when == "after a restart" {
            relay.restart();
        }
        let resp = put_txn(&relay, &origin, "txn1", ALICE, &body);
        resp.assert_status(200);
        assert!(resp.is_json(), "{when}: not JSON:\n{resp:?}");
        assert_eq!(resp.json(), json!({}), "{when}: {resp:?}");
        let resp = relay_txn(&relay, &dest, ALICE, Some(0));
        let got = resp.ok_json();
        assert_eq!(
            got["entries_queued"],
            json!(false),
            "{when}: the retransmission was stored again:\n{resp:?}"
        );
        assert_eq!(got, empty_answer(), "{when}: {resp:?}");
    }
    // Another txn ID is a new transaction, as ever.
    store(&relay, &origin, "txn2", ALICE, "m2");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["m2"]);
}

/// `--acked-retention-secs 0` remembers nothing: a retransmission after the
/// acknowledgement is stored again. `--acked-max 1` remembers the newest
/// acknowledged transaction only.
#[test]
fn acked_flags_bound_what_is_remembered() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let start = |args: [&str; 2]| {
        RelayProcess::builder()
            .serve_for(DEST_NAME)
            .trust(&origin)
            .trust(&dest)
            .args(args)
            .start()
    };

    let off = start(["--acked-retention-secs", "0"]);
    store(&off, &origin, "t1", ALICE, "first");
    assert_eq!(markers(&drain(&off, &dest, ALICE)), ["first"]);
    store(&off, &origin, "t1", ALICE, "again");
    assert_eq!(markers(&drain(&off, &dest, ALICE)), ["again"]);

    let one = start(["--acked-max", "1"]);
    store(&one, &origin, "t1", ALICE, "m1");
    store(&one, &origin, "t2", ALICE, "m2");
    assert_eq!(markers(&drain(&one, &dest, ALICE)), ["m1", "m2"]);
    // t1 was pushed out by t2; t2 is remembered.
    store(&one, &origin, "t1", ALICE, "m1-again");
    store(&one, &origin, "t2", ALICE, "m2-again");
    assert_eq!(markers(&drain(&one, &dest, ALICE)), ["m1-again"]);
}

#[test]
fn acknowledgement_is_exact() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    for i in 1..=3 {
        store(&relay, &origin, &format!("t{i}"), ALICE, &format!("m{i}"));
    }
    let first = pull_one(&relay, &dest, ALICE, 0).expect("first entry");
    assert_eq!(first.marker(), Some("m1"));
    // Asking again without an ack: the same entry.
    let again = pull_one(&relay, &dest, ALICE, 0).expect("first entry again");
    assert_eq!(again, first);
    // Acknowledging other (later, or unknown) ids never removes entry 1: an
    // ack is never "everything up to N".
    for other in
        (first.entry_id + 1..first.entry_id + 40).chain([u64::from(u32::MAX), (1 << 53) - 1])
    {
        let still = pull_one(&relay, &dest, ALICE, other).expect("entry 1 is still there");
        assert_eq!(
            still.entry_id, first.entry_id,
            "ack of {other} removed entry {}",
            first.entry_id
        );
    }
    // Exact ack of entry 1, twice (the first answer may have been lost).
    let next = pull_one(&relay, &dest, ALICE, first.entry_id);
    let next_again = pull_one(&relay, &dest, ALICE, first.entry_id);
    assert_eq!(next, next_again);
    if let Some(next) = next {
        assert_ne!(next.entry_id, first.entry_id);
        assert_ne!(next.marker(), Some("m1"));
    }
}

#[test]
fn acknowledging_the_earlier_of_two_keeps_the_later() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "t1", ALICE, "m1");
    store(&relay, &origin, "t2", ALICE, "m2");
    store(&relay, &origin, "t3", ALICE, "m3");
    let e1 = pull_one(&relay, &dest, ALICE, 0).expect("e1");
    let e2 = pull_one(&relay, &dest, ALICE, e1.entry_id).expect("e2");
    assert_eq!(e2.marker(), Some("m2"));
    // Re-acknowledging the gone e1 does not touch e2.
    let e2_again = pull_one(&relay, &dest, ALICE, e1.entry_id).expect("e2 again");
    assert_eq!(e2_again, e2);
    let e3 = pull_one(&relay, &dest, ALICE, e2.entry_id).expect("e3");
    assert_eq!(e3.marker(), Some("m3"));
    assert!(pull_one(&relay, &dest, ALICE, e3.entry_id).is_none());
}

#[test]
fn a_destination_cannot_acknowledge_another_destinations_entry() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let dest2 = Server::named("dest2.example");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for("dest2.example")
        .trust(&origin)
        .trust(&dest)
        .trust(&dest2)
        .start();
    store(
        &relay,
        &origin,
        "for-2",
        "@bob:dest2.example",
        "dest2-entry",
    );
    let theirs = pull_one(&relay, &dest2, "@bob:dest2.example", 0).expect("dest2's entry");
    // dest.example "acknowledges" dest2's entry id on its own queue.
    assert!(pull_one(&relay, &dest, ALICE, theirs.entry_id).is_none());
    let still = pull_one(&relay, &dest2, "@bob:dest2.example", 0).expect("dest2's entry is kept");
    assert_eq!(still, theirs);
}

#[test]
fn open_relay_serves_every_destination() {
    let origin = Server::origin_example();
    let anyone = Server::named("anyone.example");
    let relay = RelayProcess::builder()
        .open()
        .trust(&origin)
        .trust(&anyone)
        .start();
    store(&relay, &origin, "t1", "@zed:anyone.example", "open");
    let pulled = drain(&relay, &anyone, "@zed:anyone.example");
    assert_eq!(markers(&pulled), ["open"]);
    assert_eq!(pulled[0].origin(), ORIGIN_NAME);
}

#[test]
fn dendrite_client_decodes_every_answer() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let resp = put_txn(
        &relay,
        &origin,
        "d1",
        ALICE,
        &txn_body(ORIGIN_NAME, "dendrite"),
    );
    let _: EmptyResp = serde_json::from_slice(&resp.body).expect("PUT answer decodes as EmptyResp");
    assert_eq!(
        resp.body
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<_>>(),
        [&b'{', &b'}']
    );

    let resp = relay_txn(&relay, &dest, ALICE, Some(0));
    let full: RespGetRelayTransaction = serde_json::from_slice(&resp.body).expect("decodes");
    assert!(full.entries_queued);
    assert!(full.entry_id > 0);
    assert_eq!(full.transaction.origin, ORIGIN_NAME);
    assert_eq!(full.transaction.pdus, vec![json!({"marker": "dendrite"})]);

    let resp = relay_txn(
        &relay,
        &dest,
        ALICE,
        Some(u64::try_from(full.entry_id).expect("positive")),
    );
    let empty: RespGetRelayTransaction = serde_json::from_slice(&resp.body).expect("decodes");
    assert!(!empty.entries_queued);
    assert_eq!(empty.entry_id, 0);
    let raw = resp.json();
    assert!(
        raw.get("entry_id").is_none(),
        "entry_id is omitted when nothing is queued: {raw}"
    );
    assert_eq!(
        raw["transaction"]["pdus"],
        json!([]),
        "pdus is [] (not null): {raw}"
    );
    assert_eq!(
        raw["transaction"]["edus"],
        json!([]),
        "edus is [] (not null): {raw}"
    );
}

#[test]
fn key_server_endpoint_is_self_signed_with_the_key_file() {
    let relay = RelayProcess::builder().start();
    let resp = Request::new("GET", "/_matrix/key/v2/server").send(relay.addr());
    let body = resp.ok_json();
    assert_eq!(body["server_name"], RELAY_NAME, "{resp:?}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let valid_until = body["valid_until_ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("valid_until_ts:\n{resp:?}"));
    assert!(
        valid_until > now_ms,
        "valid_until_ts {valid_until} is in the past:\n{resp:?}"
    );
    let file =
        std::fs::read_to_string(relay.signing_key_path()).expect("the relay created its key file");
    let key = SigningKey::parse_synapse(&file).expect("the key file is in Synapse's format");
    let verify_keys = body["verify_keys"]
        .as_object()
        .unwrap_or_else(|| panic!("verify_keys:\n{resp:?}"));
    let published = verify_keys
        .get(key.key_id().as_str())
        .and_then(|k| k["key"].as_str())
        .unwrap_or_else(|| {
            panic!(
                "key {} of the key file is not published:\n{resp:?}",
                key.key_id()
            )
        });
    assert_eq!(published, key.verify_key().to_base64());
    verify_json(RELAY_NAME, key.key_id(), &key.verify_key(), &body)
        .unwrap_or_else(|e| panic!("self-signature does not verify ({e}):\n{resp:?}"));
    // Tampering breaks it (the check above can fail).
    let mut tampered = body.clone();
    tampered["valid_until_ts"] = json!(valid_until + 1);
    assert!(verify_json(RELAY_NAME, key.key_id(), &key.verify_key(), &tampered).is_err());
}

#[test]
fn key_server_endpoint_uses_a_given_key_file_and_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.key");
    let key = Server::with_seed(RELAY_NAME, "a_Bc9", [7; 32])
        .key()
        .clone();
    std::fs::write(&path, key.to_synapse_line()).expect("write key file");
    let mut relay = RelayProcess::builder().signing_key(&path).start();
    for round in 0..2 {
        let body = Request::new("GET", "/_matrix/key/v2/server")
            .send(relay.addr())
            .ok_json();
        let key_id = KeyId::ed25519("a_Bc9").expect("key id");
        assert_eq!(
            body["verify_keys"]["ed25519:a_Bc9"]["key"].as_str(),
            Some(key.verify_key().to_base64().as_str()),
            "round {round}: {body}"
        );
        verify_json(RELAY_NAME, &key_id, &key.verify_key(), &body).expect("self-signed");
        relay.restart();
    }
    assert_eq!(
        std::fs::read_to_string(&path).expect("key file"),
        key.to_synapse_line()
    );
}

#[test]
fn version_endpoint_names_the_server() {
    let relay = RelayProcess::builder().start();
    let resp = Request::new("GET", "/_matrix/federation/v1/version").send(relay.addr());
    let body = resp.ok_json();
    let name = body["server"]["name"].as_str().unwrap_or_default();
    let version = body["server"]["version"].as_str().unwrap_or_default();
    assert!(!name.is_empty() && !version.is_empty(), "{resp:?}");
}

#[test]
fn txn_ids_are_percent_decoded() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "m%2Ftxn%20%C3%A9", ALICE, "decoded");
    // The same txn ID written differently is a retransmission.
    store(&relay, &origin, "m%2ftxn%20%c3%a9", ALICE, "decoded-again");
    store(&relay, &origin, "t1", ALICE, "plain");
    store(&relay, &origin, "t%31", ALICE, "plain-again");
    let pulled = drain(&relay, &dest, ALICE);
    assert_eq!(markers(&pulled), ["decoded", "plain"]);
    assert_eq!(pulled[0].txn_id.as_deref(), Some("m/txn é"));
    assert_eq!(pulled[1].txn_id.as_deref(), Some("t1"));
}

#[test]
fn an_empty_txn_id_is_refused() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let resp = put_txn(&relay, &origin, "", ALICE, &txn_body(ORIGIN_NAME, "x"));
    assert!((400..500).contains(&resp.status), "{resp:?}");
    resp.assert_matrix_error_shape();
    assert!(drain(&relay, &dest, ALICE).is_empty());
}

#[test]
fn a_query_string_is_signed_and_ignored_by_routing() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "query")).expect("serialise");
    let target = format!("{}?v=1&x=%40", relay_tests::send_relay_path("q1", ALICE));
    let resp = signed_request(&origin, RELAY_NAME, "PUT", &target, &body).send(relay.addr());
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    let target = format!("{}?since=0", relay_tests::relay_txn_path(ALICE));
    let resp =
        signed_request(&dest, RELAY_NAME, "GET", &target, br#"{"entry_id":0}"#).send(relay.addr());
    assert_eq!(
        resp.ok_json()["transaction"]["pdus"][0]["marker"],
        "query",
        "{resp:?}"
    );
}
