//! The batch drain: many entries per request, every acknowledgement on the
//! next one, and relays without it (Dendrite's) drained with `relay_txn`.

use serde_json::{Value, json};
use std::time::Duration;

use super::super::*;
use super::one;
use super::sim::*;
use crate::http::HttpOutcome;

/// A batch answer carrying `entries` (entry ID, transaction, txn ID).
fn batch(entries: &[(u64, &Value, &str)], more: bool) -> HttpOutcome {
    let list: Vec<Value> = entries
        .iter()
        .map(|(id, t, txn_id)| json!({"entry_id": id, "transaction": t, "txn_id": txn_id}))
        .collect();
    ok(json!({"transactions": list, "entries_queued": more}).to_string())
}

/// The body of a request.
fn body(request: &OutgoingRequest) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

/// Hands over, processes and persists the one delivery in `outs`; returns
/// what follows.
fn finish_one(node: &mut Node, outs: &[Output]) -> (Delivery, Vec<Output>) {
    let d = one(deliveries(outs));
    node.r.handle_processed(node.now, d.id);
    let (op, _) = one(persists(&node.drain()));
    node.r.handle_persisted(node.now, op, Ok(()));
    (d, node.drain())
}

#[test]
fn a_batch_is_handed_over_in_order_and_acknowledged_on_the_next_request() {
    let mut node = Node::batching(config(), &["relay.a"]);
    let (attempt, request) = one(requests(&node.drain()));
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.target,
        "/_matrix/federation/unstable/org.matrix_relay/relay_txns/@user:dest.example"
    );
    assert_eq!(body(&request), json!({"ack": []}));

    let (t1, t2, t3) = (
        txn("o.example", 1),
        txn("o.example", 2),
        txn("o.example", 3),
    );
    let answer = batch(&[(4, &t1, "a"), (6, &t2, "b"), (9, &t3, "c")], true);
    node.r.handle_response(node.now, attempt, answer);
    let mut outs = node.drain();
    let mut handed = Vec::new();
    for _ in 0..3 {
        assert!(
            requests(&outs).is_empty(),
            "no request while the batch is handed over"
        );
        let (d, next) = finish_one(&mut node, &outs);
        handed.push(d.entry_id.0);
        outs = next;
    }
    assert_eq!(handed, [4, 6, 9], "one at a time, in order");
    let (attempt, request) = one(requests(&outs));
    assert_eq!(body(&request), json!({"ack": [4, 6, 9]}));
    node.r.handle_response(node.now, attempt, batch(&[], false));
    assert_eq!(
        node.drain(),
        vec![Output::Event(Event::Drained {
            relay: name("relay.a"),
            delivered: 3
        })]
    );
    // Polled again with a batch request.
    let (_, request) = one(requests(&node.advance(30.0)));
    assert_eq!(
        (request.method, body(&request)),
        ("POST", json!({"ack": []}))
    );
}

#[test]
fn a_relay_without_the_batch_drain_is_drained_with_relay_txn_for_good() {
    let mut node = Node::batching(config(), &["relay.a"]);
    let (attempt, _) = one(requests(&node.drain()));
    node.r.handle_response(node.now, attempt, not_found());
    let outs = node.drain();
    assert!(
        events(&outs).is_empty(),
        "a 404 here is no failure: {outs:?}"
    );
    let (attempt, request) = one(requests(&outs));
    assert_eq!((request.method, ack_of(&request)), ("GET", 0));
    node.r.handle_response(node.now, attempt, empty());
    assert_eq!(events(&node.drain()).len(), 1, "drained");
    let (_, request) = one(requests(&node.advance(30.0)));
    assert_eq!(request.method, "GET", "not asked again");
}

#[test]
fn a_copy_inside_one_batch_is_dropped_and_acknowledged_with_the_original() {
    let mut node = Node::batching(config(), &["relay.a"]);
    let (attempt, _) = one(requests(&node.drain()));
    let t = txn("o.example", 1);
    node.r.handle_response(
        node.now,
        attempt,
        batch(&[(1, &t, "a"), (2, &t, "a")], false),
    );
    let outs = node.drain();
    let (_, outs) = finish_one(&mut node, &outs);
    assert_eq!(
        events(&outs),
        [Event::DuplicateDropped {
            relay: name("relay.a"),
            entry_id: EntryId(2)
        }]
    );
    let (_, request) = one(requests(&outs));
    assert_eq!(body(&request), json!({"ack": [1, 2]}));
}

#[test]
fn a_failed_batch_request_keeps_its_acks_and_bad_answers_are_malformed() {
    let mut node = Node::batching(config(), &["relay.a"]);
    let (attempt, _) = one(requests(&node.drain()));
    let t = txn("o.example", 1);
    node.r
        .handle_response(node.now, attempt, batch(&[(5, &t, "a")], false));
    let outs = node.drain();
    let (_, outs) = finish_one(&mut node, &outs);
    let (attempt, _) = one(requests(&outs));
    node.r.handle_response(
        node.now,
        attempt,
        HttpOutcome::ConnectionFailed("refused".into()),
    );
    assert!(matches!(
        events(&node.drain()).as_slice(),
        [Event::RelayFailed { .. }]
    ));
    let (_, request) = one(requests(&node.advance(2.8)));
    assert_eq!(body(&request), json!({"ack": [5]}), "the ack is kept");
    for bad in [
        r#"{"transactions":[],"entries_queued":true}"#,
        r#"{"transactions":[{"entry_id":0,"transaction":{"origin":"o.example"}}],"entries_queued":false}"#,
        r#"{"transactions":"x","entries_queued":false}"#,
        r#"[]"#,
    ] {
        let mut node = Node::batching(config(), &["relay.a"]);
        let (attempt, _) = one(requests(&node.drain()));
        node.r.handle_response(node.now, attempt, ok(bad));
        let outs = node.drain();
        assert!(
            matches!(
                events(&outs).as_slice(),
                [Event::Malformed { .. }, Event::RelayFailed { .. }]
            ),
            "{bad}: {outs:?}"
        );
    }
}

#[test]
fn with_long_polls_a_drained_relay_is_asked_again_at_once_and_asked_to_wait() {
    let mut config = config();
    config.long_poll = Some(Duration::from_secs(25));
    let mut node = Node::batching(config.clone(), &["relay.a"]);
    let (attempt, request) = one(requests(&node.drain()));
    assert_eq!(body(&request), json!({"ack": [], "timeout_ms": 25_000}));
    node.r.handle_response(node.now, attempt, batch(&[], false));
    assert_eq!(events(&node.drain()).len(), 1, "drained");
    assert_eq!(
        node.r.poll_timeout(),
        Some(node.now + Duration::from_millis(100)),
        "asked again right away, not after poll_interval"
    );
    let (_, request) = one(requests(&node.advance(0.1)));
    assert_eq!(body(&request), json!({"ack": [], "timeout_ms": 25_000}));

    // A relay that cannot wait is polled as before.
    let mut node = Node::new(config, &["relay.a"]);
    let (attempt, request) = one(requests(&node.drain()));
    assert_eq!(request.method, "GET");
    node.r.handle_response(node.now, attempt, empty());
    node.drain();
    assert_eq!(
        node.r.poll_timeout(),
        Some(node.now + Duration::from_secs(30))
    );
}

#[test]
fn what_says_a_relay_lacks_the_batch_drain() {
    let answer = |status: u16, body: &str| HttpOutcome::Response {
        status,
        body: body.as_bytes().to_vec(),
        retry_after: None,
    };
    let relay_txn_answer = r#"{"transaction":{"origin":"","origin_server_ts":0,"pdus":[],"edus":[]},"entries_queued":false}"#;
    for (outcome, falls_back) in [
        (not_found(), true),
        (answer(405, "{}"), true),
        (answer(501, ""), true),
        (answer(400, r#"{"errcode":"M_UNRECOGNIZED"}"#), true),
        (answer(200, relay_txn_answer), true),
        (answer(400, r#"{"errcode":"M_BAD_JSON"}"#), false),
        (answer(500, "{}"), false),
        (answer(200, r#"{"nonsense":true}"#), false),
        (HttpOutcome::Timeout, false),
    ] {
        let mut node = Node::batching(config(), &["relay.a"]);
        let (attempt, _) = one(requests(&node.drain()));
        node.r.handle_response(node.now, attempt, outcome.clone());
        let outs = node.drain();
        let next_is_relay_txn = requests(&outs)
            .first()
            .is_some_and(|(_, r)| r.method == "GET");
        assert_eq!(next_is_relay_txn, falls_back, "{outcome:?}: {outs:?}");
    }
}
