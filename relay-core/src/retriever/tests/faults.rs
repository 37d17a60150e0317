//! Failing and misbehaving relays: backoff, jitter, kept acks, malformed
//! answers.

use serde_json::json;

use super::super::*;
use super::one;
use super::sim::*;
use crate::http::HttpOutcome;

/// Drives `node` with relay.a always refusing connections and relay.b a
/// working relay holding three entries, until relay.a failed `failures`
/// times. Returns relay.a's waits and what relay.b delivered by when.
fn failing_beside_working(
    config: RetrieverConfig,
    failures: usize,
) -> (Vec<Duration>, Vec<(Duration, Event)>) {
    let mut node = Node::new(config, &["relay.a", "relay.b"]);
    let start = node.now;
    let mut b = FakeRelay::new("relay.b", 1, false);
    for n in 1..=3 {
        b.push("origin.example", &format!("t{n}"), &txn("x", n));
    }
    let mut waits = Vec::new();
    let mut b_events = Vec::new();
    while waits.len() < failures {
        while let Some(output) = node.r.poll_output() {
            match output {
                Output::Transmit {
                    attempt, request, ..
                } if request.server == b.name => {
                    let outcome = b.serve(node.now, &request);
                    node.r.handle_response(node.now, attempt, outcome);
                }
                Output::Transmit { attempt, .. } => node.r.handle_response(
                    node.now,
                    attempt,
                    HttpOutcome::ConnectionFailed("refused".into()),
                ),
                Output::Deliver(d) => node.r.handle_processed(node.now, d.id),
                Output::Persist { op, .. } => node.r.handle_persisted(node.now, op, Ok(())),
                Output::Event(Event::RelayFailed {
                    relay, retry_at, ..
                }) => {
                    assert_eq!(relay, name("relay.a"));
                    waits.push(retry_at - node.now);
                }
                Output::Event(e) => b_events.push((node.now - start, e)),
            }
        }
        let next = node.r.poll_timeout().expect("relay.a is due again");
        node.now = next;
        node.r.handle_timeout(next);
    }
    assert!(b.queue.is_empty());
    (waits, b_events)
}

#[test]
fn failing_relay_backs_off_with_jitter_while_another_drains() {
    let mut cfg = config();
    cfg.backoff_base = Duration::from_secs(2);
    cfg.backoff_cap = Duration::from_secs(60);
    cfg.poll_interval = Duration::from_secs(3600);
    let (waits, b_events) = failing_beside_working(cfg.clone(), 12);
    assert_eq!(
        b_events,
        vec![(
            Duration::ZERO,
            Event::Drained {
                relay: name("relay.b"),
                delivered: 3
            }
        )],
        "relay.b drains at once, not held back"
    );
    let mut ratios = Vec::new();
    for (n, wait) in waits.iter().enumerate() {
        let nominal = 2.0 * 2f64.powi(n as i32);
        let secs = wait.as_secs_f64();
        if nominal * 0.8 >= 60.0 {
            assert_eq!(
                *wait,
                Duration::from_secs(60),
                "capped at failure {}",
                n + 1
            );
        } else if secs < 60.0 {
            let ratio = secs / nominal;
            assert!(
                (0.8..1.4 + 1e-9).contains(&ratio),
                "failure {}: {ratio}",
                n + 1
            );
            ratios.push(ratio);
        }
    }
    assert!(ratios.len() >= 4);
    assert!(
        ratios.windows(2).any(|w| w[0] != w[1]),
        "jittered: {ratios:?}"
    );
    assert!(
        waits.windows(2).take(4).all(|w| w[0] < w[1]),
        "grows: {waits:?}"
    );
    // Same seed, same waits.
    assert_eq!(failing_beside_working(cfg, 12).0, waits);
}

#[test]
fn poll_interval_bounds_the_wait_of_an_undrained_relay() {
    let mut cfg = config();
    cfg.backoff_base = Duration::from_secs(600);
    cfg.backoff_cap = Duration::from_secs(3600);
    cfg.poll_interval = Duration::from_secs(30);
    let mut node = Node::new(cfg, &["relay.a"]);
    for _ in 0..3 {
        let (attempt, ..) = one(transmits(&node.drain()));
        node.r
            .handle_response(node.now, attempt, HttpOutcome::Timeout);
        let outs = node.drain();
        let Event::RelayFailed { retry_at, .. } = one(events(&outs)) else {
            panic!("{outs:?}")
        };
        assert_eq!(retry_at, node.now + Duration::from_secs(30));
        assert!(node.advance(29.999).is_empty());
        node.now = retry_at;
        node.r.handle_timeout(node.now);
    }
    // Coming online cuts a wait short.
    let (attempt, ..) = one(transmits(&node.drain()));
    node.r
        .handle_response(node.now, attempt, HttpOutcome::Timeout);
    node.drain();
    node.now += Duration::from_secs(1);
    node.r.handle_online(node.now);
    assert_eq!(one(transmits(&node.drain())).2, 0);
}

#[test]
fn a_failed_request_keeps_its_ack() {
    let mut node = Node::new(config(), &["relay.a"]);
    let (attempt, ..) = one(transmits(&node.drain()));
    node.r
        .handle_response(node.now, attempt, entry(5, &txn("o.example", 1), None));
    let d = one(deliveries(&node.drain()));
    node.r.handle_processed(node.now, d.id);
    let (op, _) = one(persists(&node.drain()));
    node.r.handle_persisted(node.now, op, Ok(()));
    let failures = [
        HttpOutcome::Timeout,
        HttpOutcome::ConnectionFailed("reset".into()),
        HttpOutcome::Response {
            status: 500,
            body: br#"{"errcode":"M_UNKNOWN","error":"db"}"#.to_vec(),
            retry_after: None,
        },
        ok("{}"),
    ];
    for outcome in failures {
        let (attempt, _, ack) = one(transmits(&node.drain()));
        assert_eq!(ack, 5, "the ack is sent again");
        node.r.handle_response(node.now, attempt, outcome);
        let outs = node.drain();
        assert!(matches!(
            events(&outs).last(),
            Some(Event::RelayFailed { .. })
        ));
        let next = node.r.poll_timeout().expect("due again");
        node.now = next;
        node.r.handle_timeout(next);
    }
    let (attempt, _, ack) = one(transmits(&node.drain()));
    assert_eq!(ack, 5);
    node.r.handle_response(node.now, attempt, empty());
    assert_eq!(
        events(&node.drain()),
        vec![Event::Drained {
            relay: name("relay.a"),
            delivered: 1
        }]
    );
    node.r.handle_online(node.now);
    assert_eq!(
        one(transmits(&node.drain())).2,
        0,
        "a new drain acks nothing"
    );
}

#[test]
fn malformed_answers_are_events_and_back_off() {
    let t = txn("o.example", 1);
    let with = |patch: serde_json::Value| {
        let mut body = json!({"transaction": t, "entry_id": 3, "entries_queued": true});
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                body.as_object_mut().expect("object").remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body.to_string().into_bytes()
    };
    let bad_txn = |patch: serde_json::Value| {
        let mut transaction = t.clone();
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                transaction.as_object_mut().expect("object").remove(k);
            } else {
                transaction[k] = v.clone();
            }
        }
        with(json!({ "transaction": transaction }))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"<html>".to_vec()),
        ("empty", Vec::new()),
        ("not UTF-8", vec![b'"', 0xff, b'"']),
        ("array", b"[]".to_vec()),
        ("no fields", b"{}".to_vec()),
        ("no entries_queued", with(json!({"entries_queued": null}))),
        (
            "entries_queued a string",
            with(json!({"entries_queued": "yes"})),
        ),
        (
            "entries_queued twice",
            br#"{"entries_queued":true,"entries_queued":false}"#.to_vec(),
        ),
        ("no entry_id", with(json!({"entry_id": null}))),
        ("entry_id 0", with(json!({"entry_id": 0}))),
        ("entry_id negative", with(json!({"entry_id": -1}))),
        ("entry_id fraction", with(json!({"entry_id": 1.5}))),
        ("entry_id string", with(json!({"entry_id": "3"}))),
        (
            "entry_id 2^53",
            with(json!({"entry_id": 9_007_199_254_740_992u64})),
        ),
        ("no transaction", with(json!({"transaction": null}))),
        ("transaction array", with(json!({"transaction": []}))),
        ("transaction string", with(json!({"transaction": "{}"}))),
        ("no origin", bad_txn(json!({"origin": null}))),
        ("empty origin", bad_txn(json!({"origin": ""}))),
        ("bad origin", bad_txn(json!({"origin": "not a server!"}))),
        ("origin a number", bad_txn(json!({"origin": 5}))),
        ("no canonical form", bad_txn(json!({"pdus": [1.5]}))),
        ("txn_id a number", with(json!({"txn_id": 5}))),
    ];
    for (what, body) in cases {
        let mut node = Node::new(config(), &["relay.a"]);
        let (attempt, ..) = one(transmits(&node.drain()));
        node.r.handle_response(node.now, attempt, ok(body));
        let outs = node.drain();
        let evs = events(&outs);
        assert_eq!(evs.len(), 2, "{what}: {outs:?}");
        assert!(
            matches!(&evs[0], Event::Malformed { relay, .. } if relay == &name("relay.a")),
            "{what}: {evs:?}"
        );
        let Event::RelayFailed { retry_at, .. } = evs[1] else {
            panic!("{what}: {evs:?}")
        };
        assert_eq!(outs.len(), 2, "{what}: nothing else");
        assert_eq!(node.r.poll_timeout(), Some(retry_at));
        node.now = retry_at;
        node.r.handle_timeout(retry_at);
        assert_eq!(one(transmits(&node.drain())).2, 0, "{what}");
    }
}

#[test]
fn failed_requests_are_not_malformed() {
    let outcomes = [
        HttpOutcome::Timeout,
        HttpOutcome::ConnectionFailed("no route".into()),
        HttpOutcome::Response {
            status: 403,
            body: br#"{"errcode":"M_FORBIDDEN","error":"no"}"#.to_vec(),
            retry_after: None,
        },
        HttpOutcome::Response {
            status: 204,
            body: Vec::new(),
            retry_after: None,
        },
    ];
    for outcome in outcomes {
        let mut node = Node::new(config(), &["relay.a"]);
        let (attempt, ..) = one(transmits(&node.drain()));
        node.r.handle_response(node.now, attempt, outcome.clone());
        let outs = node.drain();
        let ev = one(events(&outs));
        assert!(
            matches!(&ev, Event::RelayFailed { error, .. } if *error == outcome.describe()),
            "{ev:?}"
        );
    }
}

#[test]
fn lenient_where_nothing_depends_on_it() {
    let mut node = Node::new(config(), &["relay.a"]);
    let (attempt, ..) = one(transmits(&node.drain()));
    node.r.handle_response(node.now, attempt, empty());
    node.drain();
    // Drained without the empty transaction, or with Dendrite's entry_id
    // 0 or -1; extra fields are ignored; a null txn_id is none; the largest
    // entry ID is fine.
    for drained in [
        r#"{"entries_queued":false,"extra":1}"#,
        r#"{"transaction":{"origin":"","origin_server_ts":0,"pdus":[]},"entry_id":0,"entries_queued":false}"#,
        r#"{"transaction":{"origin":"","origin_server_ts":0,"pdus":[]},"entry_id":-1,"entries_queued":false}"#,
    ] {
        node.r.handle_online(node.now);
        let (attempt, ..) = one(transmits(&node.drain()));
        node.r.handle_response(node.now, attempt, ok(drained));
        assert!(matches!(one(events(&node.drain())), Event::Drained { .. }));
    }
    node.r.handle_online(node.now);
    let (attempt, ..) = one(transmits(&node.drain()));
    let body = json!({"transaction": txn("o.example", 1), "entry_id": 9_007_199_254_740_991u64,
        "entries_queued": true, "txn_id": null, "extra": [1]});
    node.r
        .handle_response(node.now, attempt, ok(body.to_string()));
    let d = one(deliveries(&node.drain()));
    assert_eq!(
        (d.entry_id, d.txn_id.clone()),
        (EntryId(9_007_199_254_740_991), None)
    );

    // A txn ID this node cannot use is as good as none: delivered, known by
    // its digest.
    let mut last = d;
    for (i, bad) in ["", "a\u{0}b", &"t".repeat(256)].into_iter().enumerate() {
        // Processed and its key persisted: the next request acknowledges
        // it and asks for more.
        node.r.handle_processed(node.now, last.id);
        let (op, _) = one(persists(&node.drain()));
        node.r.handle_persisted(node.now, op, Ok(()));
        let (attempt, ..) = one(transmits(&node.drain()));
        let seq = u64::try_from(i).expect("small") + 2;
        let body = json!({"transaction": txn("o.example", seq), "entry_id": seq,
            "entries_queued": true, "txn_id": bad});
        node.r
            .handle_response(node.now, attempt, ok(body.to_string()));
        last = one(deliveries(&node.drain()));
        assert_eq!(
            (last.entry_id, last.txn_id.clone()),
            (EntryId(seq), None),
            "{bad:?}"
        );
    }
}
