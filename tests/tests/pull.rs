//! `matrix-relay pull` (PROTOCOL §4): drains every relay as node B, prints
//! each transaction once as `{"relay","origin","txn_id","transaction"}`,
//! acknowledges what it printed; exit 0 when every relay was drained, 1
//! when any failed (after printing what it got).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use relay_tests::api::{drain, txn_body};
use relay_tests::*;
use serde_json::{Value, json};

fn origins() -> (Server, Server) {
    (Server::named("o1.example"), Server::named("o2.example"))
}

/// B as a node, with its identity for the harness.
fn node_b() -> (Node, Server) {
    let b = Server::named(DEST_NAME);
    (Node::new(b.clone()), b)
}

/// A relay called `name` serving B and trusting `trusted`.
fn relay_named(name: &str, trusted: &[&Server]) -> RelayProcess {
    trusted
        .iter()
        .fold(
            RelayProcess::builder()
                .server_name(name)
                .serve_for(DEST_NAME),
            |r, s| r.trust(s),
        )
        .start()
}

/// Checks that `line` is exactly `{"relay","origin","txn_id","transaction"}`
/// and returns (relay, origin, txn_id, transaction).
#[track_caller]
fn fields(line: &Value) -> (String, String, String, Value) {
    let keys: BTreeSet<&str> = line
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["relay", "origin", "txn_id", "transaction"]),
        "{line}"
    );
    let text = |k: &str| {
        line[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is not a string: {line}"))
            .to_owned()
    };
    (
        text("relay"),
        text("origin"),
        text("txn_id"),
        line["transaction"].clone(),
    )
}

#[test]
fn prints_each_queued_transaction_in_order_then_nothing() {
    let (o1, o2) = origins();
    let (node, b) = node_b();
    let relay = RelayProcess::standard(&[&o1, &o2, &b]);
    let alice = b.user("alice");
    // The same txn ID from two origins is two transactions.
    let stored = [
        (&o1, "t1", "m1"),
        (&o2, "t2", "m2"),
        (&o1, "t3", "m3"),
        (&o2, "t1", "m4"),
    ];
    for (origin, txn_id, marker) in stored {
        store(&relay, origin, txn_id, &alice, marker);
    }
    let out = node.pull().relay(&relay).run();
    out.assert_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), stored.len(), "{out:?}");
    for (line, (origin, txn_id, marker)) in lines.iter().zip(stored) {
        let (r, o, t, transaction) = fields(line);
        assert_eq!(
            (r.as_str(), o.as_str(), t.as_str()),
            (RELAY_NAME, origin.name(), txn_id),
            "{out:?}"
        );
        assert_eq!(transaction, txn_body(origin.name(), marker), "{out:?}");
    }
    // Everything printed was acknowledged.
    assert!(drain(&relay, &b, &alice).is_empty(), "entries left");
    let again = node.pull().relay(&relay).run();
    again.assert_code(0);
    assert!(again.lines().is_empty(), "{again:?}");
}

#[test]
fn an_empty_relay_prints_nothing_and_exits_0() {
    let (node, b) = node_b();
    let relay = RelayProcess::standard(&[&b]);
    let out = node.pull().relay(&relay).run();
    out.assert_code(0);
    assert!(out.lines().is_empty(), "{out:?}");
}

#[test]
fn a_transaction_on_two_relays_is_printed_once() {
    let (o1, o2) = origins();
    let (node, b) = node_b();
    let r1 = relay_named("r1.example", &[&o1, &o2, &b]);
    let r2 = relay_named("r2.example", &[&o1, &o2, &b]);
    let alice = b.user("alice");
    store(&r1, &o1, "both", &alice, "m-both");
    store(&r2, &o1, "both", &alice, "m-both");
    store(&r1, &o2, "only-r1", &alice, "m-r1");
    store(&r2, &o1, "only-r2", &alice, "m-r2");
    // Same txn ID, other origin: not a copy.
    store(&r2, &o2, "both", &alice, "m-both-o2");
    let out = node.pull().relay(&r1).relay(&r2).run();
    out.assert_code(0);
    let got: Vec<(String, String, String, Value)> = out.json_lines().iter().map(fields).collect();
    let keys: BTreeSet<(&str, &str)> = got
        .iter()
        .map(|(_, o, t, _)| (o.as_str(), t.as_str()))
        .collect();
    assert_eq!(got.len(), 4, "{out:?}");
    assert_eq!(
        keys,
        BTreeSet::from([
            (o1.name(), "both"),
            (o2.name(), "only-r1"),
            (o1.name(), "only-r2"),
            (o2.name(), "both"),
        ]),
        "{out:?}"
    );
    for (relay, _, txn_id, _) in &got {
        match txn_id.as_str() {
            "only-r1" => assert_eq!(relay, "r1.example", "{out:?}"),
            "only-r2" => assert_eq!(relay, "r2.example", "{out:?}"),
            _ => assert!(["r1.example", "r2.example"].contains(&relay.as_str())),
        }
    }
    // Per relay, oldest first: r2 held only-r2 before the o2 copy of "both".
    let order: Vec<(&str, &str)> = got
        .iter()
        .filter(|(r, ..)| r == "r2.example")
        .map(|(_, o, t, _)| (o.as_str(), t.as_str()))
        .collect();
    let pos = |key: (&str, &str)| order.iter().position(|k| *k == key);
    assert!(
        pos((o1.name(), "only-r2")) < pos((o2.name(), "both")),
        "{out:?}"
    );
    // Both copies were acknowledged.
    assert!(drain(&r1, &b, &alice).is_empty(), "r1 not empty");
    assert!(drain(&r2, &b, &alice).is_empty(), "r2 not empty");
    let again = node.pull().relay(&r1).relay(&r2).run();
    again.assert_code(0);
    assert!(again.lines().is_empty(), "{again:?}");
}

#[test]
fn a_relay_down_is_exit_1_after_printing_the_others() {
    let (o1, _) = origins();
    let (node, b) = node_b();
    let relay = RelayProcess::standard(&[&o1, &b]);
    let alice = b.user("alice");
    store(&relay, &o1, "t1", &alice, "m1");
    store(&relay, &o1, "t2", &alice, "m2");
    let out = node
        .pull()
        .relay(&relay)
        .relay_at("down.example", closed_addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(1);
    let txn_ids: Vec<String> = out.json_lines().iter().map(|l| fields(l).2).collect();
    // Keys in the protocol's order, as text too.
    for line in out.lines() {
        let at = |key: &str| line.find(&format!("\"{key}\":"));
        assert!(
            line.starts_with("{\"relay\":")
                && at("origin") < at("txn_id")
                && at("txn_id") < at("transaction"),
            "{line}"
        );
    }
    assert_eq!(txn_ids, ["t1", "t2"], "{out:?}");
    assert!(out.stderr.contains("down.example"), "{out:?}");
    assert!(
        drain(&relay, &b, &alice).is_empty(),
        "what was printed is acked"
    );
}

#[test]
fn a_refusing_or_garbled_relay_is_exit_1() {
    let (o1, _) = origins();
    let (node, b) = node_b();
    // Does not know B's key: every relay_txn is 401.
    let refusing = RelayProcess::standard(&[&o1]);
    let out = node.pull().relay(&refusing).run();
    out.assert_code(1);
    assert!(out.lines().is_empty(), "{out:?}");
    assert!(out.stderr.contains(RELAY_NAME), "{out:?}");

    let garbled = StubServer::always(Reply::Json(200, r#"{"nonsense":true}"#.to_owned()));
    let out = node
        .pull()
        .relay_at("garbled.example", garbled.addr())
        .timeout_ms(2_000)
        .run();
    out.assert_code(1);
    assert!(out.lines().is_empty(), "{out:?}");
    assert!(out.stderr.contains("garbled.example"), "{out:?}");
    // It asked as B, signed for that relay, with the batch drain first.
    let asked = garbled.requests();
    assert!(!asked.is_empty());
    assert_eq!(asked[0].method, "POST");
    assert!(
        asked[0]
            .target
            .starts_with("/_matrix/federation/unstable/org.matrix_relay/relay_txns/"),
        "{asked:?}"
    );
    asked[0]
        .verify_signed_by(&b, "garbled.example")
        .expect("signed by B for the relay");
    assert_eq!(asked[0].json(), json!({"ack": []}));
}

#[test]
fn a_line_is_out_before_its_entry_is_acknowledged() {
    let (node, b) = node_b();
    let stdout = node.dir().join("pull.out");
    let out_file = stdout.clone();
    let printed_before_ack = Arc::new(Mutex::new(None::<bool>));
    let seen = Arc::clone(&printed_before_ack);
    // A relay holding one entry (7): when the request acknowledging it
    // arrives, the line must be in pull's standard output already. It has
    // no batch drain (404), as a Dendrite relay.
    let relay = StubServer::start(move |_, req| {
        if req.method == "POST" {
            return Reply::Json(
                404,
                r#"{"errcode":"M_UNRECOGNIZED","error":"unrecognized request"}"#.to_owned(),
            );
        }
        let ack = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|b| b["entry_id"].as_u64());
        if ack == Some(7) {
            let text = std::fs::read_to_string(&out_file).unwrap_or_default();
            if let Ok(mut seen) = seen.lock() {
                seen.get_or_insert(text.contains("\"t-ack\""));
            }
            return Reply::Json(
                200,
                json!({"transaction": {"origin": "", "origin_server_ts": 0, "pdus": [], "edus": []}, "entries_queued": false}).to_string(),
            );
        }
        Reply::Json(
            200,
            json!({
                "transaction": txn_body("o1.example", "acked"),
                "entry_id": 7,
                "entries_queued": true,
                "txn_id": "t-ack",
            })
            .to_string(),
        )
    });
    let out = node
        .pull()
        .relay_at("stub.example", relay.addr())
        .stdout_to(&stdout)
        .run();
    out.assert_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert_eq!(fields(&lines[0]).2, "t-ack");
    let acks: Vec<Value> = relay
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(Recorded::json)
        .collect();
    assert_eq!(
        acks,
        [json!({"entry_id": 0}), json!({"entry_id": 7})],
        "{out:?}"
    );
    for req in relay.requests() {
        req.verify_signed_by(&b, "stub.example")
            .expect("signed by B for the relay");
    }
    assert_eq!(
        *printed_before_ack.lock().expect("lock"),
        Some(true),
        "the line was not out when its ack arrived"
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let (node, _) = node_b();
    let relay_addr = closed_addr();
    let refused = |out: &CliOutput, needle: &str| {
        assert!(out.code().is_some_and(|c| c != 0), "{out:?}");
        assert!(out.stdout.trim().is_empty(), "{out:?}");
        assert!(out.stderr.contains(needle), "{needle:?}: {out:?}");
    };
    refused(&node.pull().run(), "--relay");
    let out = CliCommand::bare(&node, "pull")
        .arg("--server-name")
        .arg(DEST_NAME)
        .arg("--signing-key")
        .arg(node.dir().join("missing.key"))
        .relay_at("r.example", relay_addr)
        .run();
    refused(&out, "missing.key");
    let out = CliCommand::bare(&node, "pull")
        .arg("--server-name")
        .arg("not a name!")
        .arg("--signing-key")
        .arg(node.key_path())
        .relay_at("r.example", relay_addr)
        .run();
    refused(&out, "--server-name");
    let out = node.pull().arg("--relay").arg("bad relay").run();
    refused(&out, "--relay");
    let out = node
        .pull()
        .arg("--relay")
        .arg("r.example")
        .arg("--resolve")
        .arg("nonsense")
        .run();
    refused(&out, "--resolve");
}

/// A PDU whose numbers, escapes and key order a re-serialiser would
/// change, pretty-printed across lines.
const RAW_PDU: &str = "{\"type\":\"m.room.message\",\n  \"z\":-0, \"depth\":1e2, \"a\":1.0,\r\n  \"content\":{\"body\":\"caf\\u00e9 \\/\"}}";

#[test]
fn prints_pdus_as_received_on_one_line() {
    let o1 = Server::named("o1.example");
    let (node, b) = node_b();
    let relay = RelayProcess::standard(&[&o1, &b]);
    let body = format!(
        "{{\"origin\":\"o1.example\",\"origin_server_ts\":1e12,\n\"pdus\":[{RAW_PDU}],\"edus\":[]}}"
    );
    let resp =
        relay_tests::api::put_txn_bytes(&relay, &o1, "raw", &b.user("alice"), body.as_bytes());
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    let out = node.pull().relay(&relay).run();
    out.assert_code(0);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{out:?}");
    // Only the line breaks are gone.
    let one_line = RAW_PDU.replace(['\r', '\n'], "");
    let expected = format!(
        "\"transaction\":{{\"origin\":\"o1.example\",\"origin_server_ts\":1e12,\"pdus\":[{one_line}],\"edus\":[]}}"
    );
    assert!(lines[0].contains(&expected), "expected {expected}\n{out:?}");
    let (_, origin, txn_id, _) = fields(&out.json_lines()[0]);
    assert_eq!((origin.as_str(), txn_id.as_str()), ("o1.example", "raw"));
}

#[test]
fn follow_prints_each_transaction_as_it_is_stored_until_interrupted() {
    let (o1, _) = origins();
    let (node, b) = node_b();
    let relay = RelayProcess::standard(&[&o1, &b]);
    let alice = b.user("alice");
    store(&relay, &o1, "t1", &alice, "before");
    let out_path = node.dir().join("follow.out");
    let mut child = std::process::Command::new(relay_tests::process::relay_binary())
        .args(node.pull().relay(&relay).arg("--follow").argv())
        .current_dir(node.dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pull --follow");
    let lines = |want: usize| -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= want || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert_eq!(lines(1).len(), 1, "what was queued before");
    // Stored while it waits: printed without a poll interval's delay.
    store(&relay, &o1, "t2", &alice, "while-following");
    let got = lines(2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(fields(&got[1]).2, "t2");
    assert_eq!(child.try_wait().expect("try_wait"), None, "still following");
    // Both are acknowledged, by the long-poll that follows each (a line is
    // out before its entry is acknowledged).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while relay_tests::api::pull_one(&relay, &b, &alice, 0).is_some() {
        assert!(std::time::Instant::now() < deadline, "entries left");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill");
    let _ = child.wait();
}
