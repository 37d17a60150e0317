//! `matrix-relay send` (PROTOCOL §4): directly to the destination, then
//! through the relays after `--attempts` failed direct tries; one JSON line
//! out, exit 0 when delivered, 1 when not.
//!
//! The destination is a [`StubServer`] (a real HTTP server in this process
//! that records what it gets), or a closed port; relays are real
//! `matrix-relay serve` processes, stubs or closed ports.

use std::time::Duration;

use relay_tests::api::{drain, txn_body};
use relay_tests::*;
use serde_json::{Value, json};

const A_NAME: &str = "a.example";

/// Node A (sender), destination B's identity (to drain the relay as B),
/// and the standard relay serving B and trusting both.
fn setup() -> (Node, Server, RelayProcess) {
    let a = Node::new(Server::named(A_NAME));
    let b = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[a.server(), &b]);
    (a, b, relay)
}

/// A transaction file's contents: two PDUs and an EDU, recognisable by
/// `marker`; its `origin` claims someone else (the sender must put its own).
fn transaction(marker: &str) -> Value {
    json!({
        "origin": "liar.example",
        "origin_server_ts": 1_700_000_000_123_u64,
        "pdus": [
            {"type": "m.room.message", "content": {"body": marker}},
            {"type": "m.room.message", "content": {"body": format!("{marker}-2"), "n": 2}},
        ],
        "edus": [{"edu_type": "m.typing", "content": {"typing": true, "marker": marker}}],
    })
}

fn errors(report: &Value) -> Vec<String> {
    report["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("`errors` is not an array: {report}"))
        .iter()
        .map(|e| {
            e.as_str()
                .unwrap_or_else(|| panic!("an error is not a string: {report}"))
                .to_owned()
        })
        .collect()
}

/// Asserts the report's `delivered` and `relays_accepted`, and that
/// `errors` is an array of strings; returns the errors.
#[track_caller]
fn assert_report(out: &CliOutput, delivered: &str, relays_accepted: &[&str]) -> Vec<String> {
    let report = out.json();
    assert_eq!(
        (&report["delivered"], &report["relays_accepted"]),
        (&json!(delivered), &json!(relays_accepted)),
        "{out:?}"
    );
    let keys: Vec<&String> = report.as_object().expect("an object").keys().collect();
    assert_eq!(
        keys.len(),
        3,
        "exactly delivered, relays_accepted, errors: {out:?}"
    );
    // In the protocol's order, as text too.
    let text = out.stdout.trim_end();
    let at = |key: &str| text.find(&format!("\"{key}\":"));
    assert!(
        text.starts_with("{\"delivered\":") && at("relays_accepted") < at("errors"),
        "{text}"
    );
    errors(&report)
}

/// Percent-decodes a path segment.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Checks a direct request: `PUT /_matrix/federation/v1/send/<txn_id>`,
/// signed by `sender` for `destination` over the raw target and the body,
/// and a body carrying the file's PDUs and EDUs with `origin` the sender.
#[track_caller]
fn assert_direct_request(
    req: &Recorded,
    sender: &Server,
    destination: &str,
    txn_id: &str,
    file: &Value,
) {
    assert_eq!(req.method, "PUT", "{req:?}");
    let segment = req
        .target
        .strip_prefix("/_matrix/federation/v1/send/")
        .unwrap_or_else(|| panic!("not a send request: {req:?}"));
    assert!(!segment.contains('/'), "txn ID not encoded: {req:?}");
    assert_eq!(percent_decode(segment), txn_id.as_bytes(), "{req:?}");
    let auth = req.header_values("authorization");
    assert_eq!(auth.len(), 1, "{req:?}");
    assert!(auth[0].starts_with("X-Matrix "), "{req:?}");
    if let Err(e) = req.verify_signed_by(sender, destination) {
        panic!(
            "the request is not signed by {} for {destination}: {e}\n{req:?}",
            sender.name()
        );
    }
    let body = req.json();
    assert_eq!(body["origin"], sender.name(), "{body}");
    assert_eq!(body["pdus"], file["pdus"], "{body}");
    assert_eq!(body["edus"], file["edus"], "{body}");
}

#[test]
fn destination_up_delivers_directly_with_a_signed_request() {
    let (a, b, relay) = setup();
    let dest = StubServer::ok();
    let file = transaction("direct");
    let out = a
        .send(b.name(), "txn-direct.1", &file)
        .relay(&relay)
        .resolve(b.name(), dest.addr())
        .run();
    out.assert_code(0);
    assert_eq!(
        out.json(),
        json!({"delivered": "direct", "relays_accepted": [], "errors": []}),
        "{out:?}"
    );
    let got = dest.requests();
    assert_eq!(got.len(), 1, "one direct request: {got:?}");
    assert_direct_request(&got[0], a.server(), b.name(), "txn-direct.1", &file);
    assert_eq!(
        got[0].target, "/_matrix/federation/v1/send/txn-direct.1",
        "a plain txn ID is sent as is"
    );
    assert!(
        drain(&relay, &b, &b.user("alice")).is_empty(),
        "relay not used"
    );
}

#[test]
fn txn_ids_are_percent_encoded_and_signed_as_sent() {
    let (a, b, _relay) = setup();
    let dest = StubServer::ok();
    let file = transaction("encoded");
    let txn_id = "t x/1?#%é";
    let out = a
        .send(b.name(), txn_id, &file)
        .resolve(b.name(), dest.addr())
        .run();
    out.assert_code(0);
    assert_eq!(out.json()["delivered"], "direct", "{out:?}");
    let got = dest.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_direct_request(&got[0], a.server(), b.name(), txn_id, &file);
}

#[test]
fn destination_down_goes_to_the_relay() {
    let (a, b, relay) = setup();
    let file = transaction("via-relay");
    let out = a
        .send(b.name(), "txn-relay.1", &file)
        .relay(&relay)
        .resolve(b.name(), closed_addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(0);
    let errors = assert_report(&out, "relay", &[RELAY_NAME]);
    assert_eq!(errors.len(), 1, "the direct failure only: {out:?}");
    assert!(errors[0].contains("direct"), "{out:?}");
    let held = drain(&relay, &b, &b.user("alice"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].txn_id.as_deref(), Some("txn-relay.1"));
    assert_eq!(held[0].origin(), A_NAME);
    assert_eq!(held[0].transaction["pdus"], file["pdus"]);
    assert_eq!(held[0].transaction["edus"], file["edus"]);
}

#[test]
fn every_relay_down_is_exit_1_with_every_error() {
    let (a, b, _relay) = setup();
    let out = a
        .send(b.name(), "txn-none.1", &transaction("nobody"))
        .resolve(b.name(), closed_addr())
        .relay_at("r1.example", closed_addr())
        .relay_at("r2.example", closed_addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(1);
    let errors = assert_report(&out, "none", &[]);
    assert_eq!(errors.len(), 3, "direct and both relays: {out:?}");
    assert!(errors.iter().any(|e| e.contains("direct")), "{out:?}");
    for relay in ["r1.example", "r2.example"] {
        assert!(errors.iter().any(|e| e.contains(relay)), "{relay}: {out:?}");
    }
}

#[test]
fn no_relay_and_destination_down_is_exit_1() {
    let (a, b, _relay) = setup();
    let out = a
        .send(b.name(), "txn-alone.1", &transaction("alone"))
        .resolve(b.name(), closed_addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(1);
    let errors = assert_report(&out, "none", &[]);
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(errors[0].contains("direct"), "{out:?}");
}

#[test]
fn attempts_3_tries_the_destination_exactly_3_times_before_the_relays() {
    let (a, b, relay) = setup();
    let dest = StubServer::always(Reply::error(503, "M_UNKNOWN"));
    let out = a
        .send(b.name(), "txn-three.1", &transaction("three"))
        .relay(&relay)
        .resolve(b.name(), dest.addr())
        .attempts(3)
        .backoff_ms(20)
        .timeout_ms(2_000)
        .run();
    out.assert_code(0);
    let errors = assert_report(&out, "relay", &[RELAY_NAME]);
    assert_eq!(dest.count(), 3, "exactly 3 direct tries: {out:?}");
    let direct = errors.iter().filter(|e| e.contains("direct")).count();
    assert!(direct >= 1, "{out:?}");
    // Every try is the same transaction under the same txn ID.
    for req in dest.requests() {
        assert_eq!(req.target, "/_matrix/federation/v1/send/txn-three.1");
    }
    let held = drain(&relay, &b, &b.user("alice"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].txn_id.as_deref(), Some("txn-three.1"));
}

#[test]
fn attempts_3_with_every_relay_down_tries_the_destination_3_times() {
    let (a, b, _relay) = setup();
    let dest = StubServer::always(Reply::error(502, "M_UNKNOWN"));
    let out = a
        .send(b.name(), "txn-three.2", &transaction("three-none"))
        .relay_at("r1.example", closed_addr())
        .resolve(b.name(), dest.addr())
        .attempts(3)
        .backoff_ms(20)
        .timeout_ms(2_000)
        .run();
    out.assert_code(1);
    assert_report(&out, "none", &[]);
    assert_eq!(dest.count(), 3, "exactly 3 direct tries: {out:?}");
}

#[test]
fn a_timeout_is_a_failed_try() {
    let (a, b, relay) = setup();
    let dest = StubServer::always(Reply::Hang);
    let out = a
        .send(b.name(), "txn-slow.1", &transaction("slow"))
        .relay(&relay)
        .resolve(b.name(), dest.addr())
        .timeout_ms(300)
        .run();
    out.assert_code(0);
    let errors = assert_report(&out, "relay", &[RELAY_NAME]);
    assert_eq!(dest.count(), 1, "{out:?}");
    assert!(errors.iter().any(|e| e.contains("direct")), "{out:?}");
    assert_eq!(drain(&relay, &b, &b.user("alice")).len(), 1);
}

#[test]
fn one_of_three_relays_accepting_is_enough() {
    let a = Node::new(Server::named(A_NAME));
    let b = Server::named(DEST_NAME);
    let good = RelayProcess::builder()
        .server_name("r3.example")
        .serve_for(b.name())
        .trust(a.server())
        .trust(&b)
        .start();
    let busy = StubServer::always(Reply::error(503, "M_UNKNOWN"));
    let out = a
        .send(b.name(), "txn-one-of-3", &transaction("one-of-three"))
        .relay_at("r1.example", busy.addr())
        .relay_at("r2.example", closed_addr())
        .relay(&good)
        .resolve(b.name(), closed_addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(0);
    let errors = assert_report(&out, "relay", &["r3.example"]);
    for who in ["direct", "r1.example", "r2.example"] {
        assert!(errors.iter().any(|e| e.contains(who)), "{who}: {out:?}");
    }
    assert!(!errors.iter().any(|e| e.contains("r3.example")), "{out:?}");
    // The busy relay was asked: a send_relay for B, signed for it.
    let asked = busy.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0]
            .target
            .starts_with("/_matrix/federation/v1/send_relay/txn-one-of-3/"),
        "{asked:?}"
    );
    asked[0]
        .verify_signed_by(a.server(), "r1.example")
        .expect("signed for r1.example");
    let held = drain(&good, &b, &b.user("alice"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].txn_id.as_deref(), Some("txn-one-of-3"));
}

#[test]
fn a_400_from_the_destination_is_permanent() {
    let (a, b, relay) = setup();
    let dest = StubServer::always(Reply::error(400, "M_BAD_JSON"));
    let out = a
        .send(b.name(), "txn-400", &transaction("refused"))
        .relay(&relay)
        .resolve(b.name(), dest.addr())
        .attempts(3)
        .backoff_ms(20)
        .run();
    out.assert_code(1);
    let errors = assert_report(&out, "none", &[]);
    assert_eq!(
        dest.count(),
        1,
        "a permanent refusal is not retried: {out:?}"
    );
    assert!(errors.iter().any(|e| e.contains("400")), "{out:?}");
    assert!(
        drain(&relay, &b, &b.user("alice")).is_empty(),
        "the relay must not be used"
    );
}

#[test]
fn a_500_from_the_destination_uses_the_relay() {
    let (a, b, relay) = setup();
    let dest = StubServer::always(Reply::error(500, "M_UNKNOWN"));
    let out = a
        .send(b.name(), "txn-500", &transaction("server-error"))
        .relay(&relay)
        .resolve(b.name(), dest.addr())
        .run();
    out.assert_code(0);
    let errors = assert_report(&out, "relay", &[RELAY_NAME]);
    assert_eq!(dest.count(), 1, "{out:?}");
    assert!(errors.iter().any(|e| e.contains("500")), "{out:?}");
    let held = drain(&relay, &b, &b.user("alice"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].txn_id.as_deref(), Some("txn-500"));
}

#[test]
fn a_relay_refusing_is_an_error_not_a_delivery() {
    // The relay does not trust A's key: 401, so nobody accepted.
    let a = Node::new(Server::named(A_NAME));
    let b = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&b]);
    let out = a
        .send(b.name(), "txn-untrusted", &transaction("untrusted"))
        .relay(&relay)
        .resolve(b.name(), closed_addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(1);
    let errors = assert_report(&out, "none", &[]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains(RELAY_NAME) && e.contains("401")),
        "{out:?}"
    );
    assert!(drain(&relay, &b, &b.user("alice")).is_empty());
}

// ---- bad input ----

/// `send` with every required flag given explicitly.
fn bare_send<'a>(
    a: &'a Node,
    server_name: &str,
    key: &std::path::Path,
    file: &std::path::Path,
) -> CliCommand<'a> {
    CliCommand::bare(a, "send")
        .arg("--server-name")
        .arg(server_name)
        .arg("--signing-key")
        .arg(key)
        .arg("--destination")
        .arg(DEST_NAME)
        .arg("--txn-id")
        .arg("t1")
        .arg("--file")
        .arg(file)
}

/// A run that failed before sending: non-zero, nothing on stdout, a
/// message on stderr containing `needle`; the destination got nothing.
#[track_caller]
fn assert_refused(out: &CliOutput, needle: &str, dest: &StubServer) {
    assert!(
        out.code().is_some_and(|c| c != 0),
        "expected a non-zero exit:\n{out:?}"
    );
    assert!(out.stdout.trim().is_empty(), "nothing on stdout:\n{out:?}");
    assert!(
        out.stderr.contains(needle),
        "stderr should mention {needle:?}:\n{out:?}"
    );
    assert_eq!(dest.count(), 0, "nothing sent:\n{out:?}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let a = Node::new(Server::named(A_NAME));
    let dest = StubServer::ok();
    let send_file = |file: &std::path::Path| {
        a.send_file(DEST_NAME, "t1", file)
            .resolve(DEST_NAME, dest.addr())
            .run()
    };
    // The transaction file.
    let not_json = a.write_file("this is not json");
    let out = send_file(&not_json);
    assert_refused(&out, &not_json.display().to_string(), &dest);
    assert!(out.stderr.contains("not JSON"), "{out:?}");
    let out = send_file(&a.write_file(r#"{"edus": []}"#));
    assert_refused(&out, "pdus", &dest);
    let out = send_file(&a.write_file(r#"{"pdus": {}}"#));
    assert_refused(&out, "pdus", &dest);
    let out = send_file(&a.write_file(r#"[{"pdus": []}]"#));
    assert_refused(&out, "JSON object", &dest);
    let too_many: Vec<Value> = (0..51).map(|i| json!({"n": i})).collect();
    let out = send_file(&a.write_file(json!({"pdus": too_many}).to_string()));
    assert_refused(&out, "50", &dest);
    let missing = a.dir().join("no-such-file.json");
    assert_refused(&send_file(&missing), "no-such-file.json", &dest);

    let good = a.write_file(txn_body(A_NAME, "x").to_string());
    // The key file.
    let out = bare_send(&a, A_NAME, &a.dir().join("missing.key"), &good)
        .resolve(DEST_NAME, dest.addr())
        .run();
    assert_refused(&out, "missing.key", &dest);
    let out = bare_send(&a, A_NAME, &good, &good)
        .resolve(DEST_NAME, dest.addr())
        .run();
    assert_refused(&out, "ed25519", &dest);
    // Names, IDs and flags.
    let out = bare_send(&a, "not a name!", a.key_path(), &good)
        .resolve(DEST_NAME, dest.addr())
        .run();
    assert_refused(&out, "--server-name", &dest);
    let out = a
        .send_file("bad destination", "t1", &good)
        .resolve(DEST_NAME, dest.addr())
        .run();
    assert_refused(&out, "--destination", &dest);
    let out = a
        .send_file(DEST_NAME, "", &good)
        .resolve(DEST_NAME, dest.addr())
        .run();
    assert_refused(&out, "--txn-id", &dest);
    let out = a
        .send_file(DEST_NAME, "t1", &good)
        .resolve(DEST_NAME, dest.addr())
        .attempts(0)
        .run();
    assert_refused(&out, "--attempts", &dest);
    let out = a
        .send_file(DEST_NAME, "t1", &good)
        .resolve(DEST_NAME, dest.addr())
        .arg("--resolve")
        .arg("nonsense")
        .run();
    assert_refused(&out, "--resolve", &dest);
    let out = a
        .send_file(DEST_NAME, "t1", &good)
        .resolve(DEST_NAME, dest.addr())
        .arg("--relay")
        .arg("bad relay")
        .run();
    assert_refused(&out, "--relay", &dest);
    let out = a
        .send_file(A_NAME, "t1", &good)
        .resolve(A_NAME, dest.addr())
        .run();
    assert_refused(&out, "itself", &dest);
    assert!(out.stderr.contains("--destination"), "{out:?}");
    let out = CliCommand::bare(&a, "send")
        .arg("--server-name")
        .arg(A_NAME)
        .resolve(DEST_NAME, dest.addr())
        .run();
    assert_refused(&out, "--signing-key", &dest);
}

#[test]
fn a_slow_destination_is_given_up_on_after_timeout_ms() {
    let (a, b, _relay) = setup();
    let dest = StubServer::always(Reply::Hang);
    let out = a
        .send(b.name(), "txn-slow.2", &transaction("slow"))
        .resolve(b.name(), dest.addr())
        .timeout_ms(200)
        .time_limit(Duration::from_secs(10))
        .run();
    out.assert_code(1);
    assert_report(&out, "none", &[]);
    assert!(out.elapsed < Duration::from_secs(5), "{out:?}");
}

#[test]
fn a_429_asking_for_too_long_a_wait_gives_up() {
    let (a, b, relay) = setup();
    let dest = StubServer::always(Reply::Json(
        429,
        r#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":3600000}"#.into(),
    ));
    let started = std::time::Instant::now();
    let out = a
        .send(b.name(), "txn-429.1", &transaction("limited"))
        .relay(&relay)
        .resolve(b.name(), dest.addr())
        .attempts(2)
        .backoff_ms(20)
        .arg("--max-wait-ms")
        .arg("1000")
        .run();
    out.assert_code(1);
    let errors = assert_report(&out, "none", &[]);
    assert!(
        errors.iter().any(|e| e.contains("--max-wait-ms")),
        "{out:?}"
    );
    assert_eq!(dest.count(), 1, "no second try within the hour");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        drain(&relay, &b, &b.user("alice")).is_empty(),
        "relays wait for the attempts"
    );
}
