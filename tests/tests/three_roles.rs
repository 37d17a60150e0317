//! The three roles of PROTOCOL §1 as real processes: two relays
//! (`matrix-relay serve`), a sender A (`matrix-relay send`) whose
//! destination B is offline, and B coming back (`matrix-relay pull`).

use std::collections::BTreeSet;

use relay_tests::api::drain;
use relay_tests::*;
use serde_json::{Value, json};

const N: usize = 5;

fn transaction(i: usize) -> Value {
    json!({
        "pdus": [{"type": "m.room.message", "content": {"body": format!("message {i}")}}],
        "edus": [],
    })
}

/// A sends `N` transactions to B while B is offline, through both relays;
/// B pulls from both and gets each exactly once; a second pull gets
/// nothing; then B is online and A's next send goes directly.
fn scenario(a: &Node, b: &Node, r1: &RelayProcess, r2: &RelayProcess) {
    let b_offline = closed_addr();
    let txn_ids: Vec<String> = (0..N).map(|i| format!("a-to-b.{i}")).collect();
    for (i, txn_id) in txn_ids.iter().enumerate() {
        let out = a
            .send(b.name(), txn_id, &transaction(i))
            .relay(r1)
            .relay(r2)
            .resolve(b.name(), b_offline)
            .timeout_ms(2_000)
            .run();
        out.assert_code(0);
        let report = out.json();
        assert_eq!(report["delivered"], "relay", "{out:?}");
        assert_eq!(
            report["relays_accepted"],
            json!([r1.server_name(), r2.server_name()]),
            "{out:?}"
        );
    }

    let out = b.pull().relay(r1).relay(r2).run();
    out.assert_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), N, "each transaction once:\n{out:?}");
    let mut seen = BTreeSet::new();
    for line in &lines {
        assert_eq!(line["origin"], a.name(), "{out:?}");
        let txn_id = line["txn_id"].as_str().expect("a txn_id").to_owned();
        let i = txn_ids
            .iter()
            .position(|t| *t == txn_id)
            .unwrap_or_else(|| panic!("unknown txn_id {txn_id}: {out:?}"));
        assert_eq!(
            line["transaction"]["pdus"],
            transaction(i)["pdus"],
            "{out:?}"
        );
        assert_eq!(line["transaction"]["origin"], a.name(), "{out:?}");
        assert!(
            [r1.server_name(), r2.server_name()].contains(&line["relay"].as_str().unwrap_or("")),
            "{out:?}"
        );
        assert!(seen.insert(txn_id), "printed twice: {out:?}");
    }
    // Per relay, in the order A sent them.
    for relay in [r1.server_name(), r2.server_name()] {
        let order: Vec<usize> = lines
            .iter()
            .filter(|l| l["relay"] == relay)
            .filter_map(|l| txn_ids.iter().position(|t| l["txn_id"] == t.as_str()))
            .collect();
        assert!(order.is_sorted(), "{relay} out of order: {out:?}");
    }

    let again = b.pull().relay(r1).relay(r2).run();
    again.assert_code(0);
    assert!(again.lines().is_empty(), "{again:?}");
    for relay in [r1, r2] {
        assert!(
            drain(relay, b.server(), &b.server().user("x")).is_empty(),
            "{} not empty",
            relay.server_name()
        );
    }

    // B is back online: the next transaction goes directly.
    let b_online = StubServer::ok();
    let out = a
        .send(b.name(), "a-to-b.direct", &transaction(N))
        .relay(r1)
        .relay(r2)
        .resolve(b.name(), b_online.addr())
        .run();
    out.assert_code(0);
    assert_eq!(
        out.json(),
        json!({"delivered": "direct", "relays_accepted": [], "errors": []})
    );
    let got = b_online.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    got[0]
        .verify_signed_by(a.server(), b.name())
        .expect("signed by A for B");
}

#[test]
fn p2p_nodes_through_two_open_relays() {
    let a = Node::new(Server::p2p([0xA1; 32]));
    let b = Node::new(Server::p2p([0xB2; 32]));
    let relay = |name: &str| {
        RelayProcess::builder()
            .server_name(name)
            .open()
            .p2p_keys()
            .start()
    };
    let (r1, r2) = (relay("r1.example"), relay("r2.example"));
    scenario(&a, &b, &r1, &r2);
}

#[test]
fn named_nodes_through_two_relays_with_pinned_keys() {
    let a = Node::new(Server::named("a.example"));
    let b = Node::new(Server::named("b.example"));
    let relay = |name: &str| {
        RelayProcess::builder()
            .server_name(name)
            .serve_for(b.name())
            .trust(a.server())
            .trust(b.server())
            .start()
    };
    let (r1, r2) = (relay("r1.example"), relay("r2.example"));
    scenario(&a, &b, &r1, &r2);
}
