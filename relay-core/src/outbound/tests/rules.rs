//! The attempt flow: requests, direct first, relay fan-out, delivery,
//! permanent refusals, late answers.

use super::*;
use crate::auth::sign_request;

#[test]
fn direct_request_is_a_signed_put_send() {
    let mut h = Harness::new(config());
    let outputs = h.pdu(DEST, 1);
    assert_eq!(
        kinds(&outputs),
        ["persist enqueued", "persist txn_started", "transmit direct"]
    );
    let sent = only_transmit(&outputs);
    let txn = h.out.in_flight(&name(DEST)).unwrap().clone();
    assert_eq!(sent.txn(), txn.as_str());
    assert_eq!(sent.request.server, name(DEST));
    assert_eq!(sent.request.method, "PUT");
    assert_eq!(
        sent.request.target,
        format!("/_matrix/federation/v1/send/{txn}")
    );
    let body = sent.body();
    assert_eq!(
        body,
        serde_json::json!({
            "origin": "origin.example",
            "origin_server_ts": T0.0,
            "pdus": [{"type": "m.room.message", "n": 1}],
            "edus": [],
        })
    );
    let expected = sign_request(
        &key(),
        &name("origin.example"),
        &name(DEST),
        "PUT",
        &sent.request.target,
        Some(&body),
    )
    .unwrap();
    assert_eq!(sent.request.authorization, expected);
    assert_eq!(
        changes(&outputs)[1],
        OutboundChange::TxnStarted {
            destination: name(DEST),
            txn_id: txn,
            items: vec![ItemId(1)],
        }
    );
}

#[test]
fn relay_request_is_a_signed_put_send_relay() {
    let mut h = with_relays(config(), &["relay.example"]);
    let first = only_transmit(&h.pdu(DEST, 1));
    let outputs = h.answer(first.attempt, HttpOutcome::Timeout);
    let sent = only_transmit(&outputs);
    let txn = first.txn();
    assert_eq!(sent.target, Target::Relay(name("relay.example")));
    assert_eq!(sent.request.server, name("relay.example"));
    assert_eq!(
        sent.request.target,
        format!("/_matrix/federation/v1/send_relay/{txn}/@user:{DEST}")
    );
    assert_eq!(sent.request.body, first.request.body);
    let expected = sign_request(
        &key(),
        &name("origin.example"),
        &name("relay.example"),
        "PUT",
        &sent.request.target,
        Some(&sent.body()),
    )
    .unwrap();
    assert_eq!(sent.request.authorization, expected);
}

#[test]
fn relays_after_one_direct_failure_by_default() {
    let mut h = with_relays(config(), &["r1.example", "r2.example", "r3.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    assert!(!h.out.is_offline(&name(DEST)));
    let outputs = h.answer(direct.attempt, status(503));
    assert_eq!(
        kinds(&outputs),
        [
            "persist retry",
            "assumed_offline",
            "transmit r1.example",
            "transmit r2.example",
            "transmit r3.example"
        ]
    );
    assert!(h.out.is_offline(&name(DEST)));
    for sent in transmits(&outputs) {
        assert_eq!(sent.txn(), direct.txn());
    }
}

#[test]
fn relays_only_after_n_direct_failures() {
    let mut h = with_relays(offline_after(3), &["r1.example", "r2.example"]);
    let mut sent = only_transmit(&h.pdu(DEST, 1));
    for attempt in 1..=2 {
        let outputs = h.answer(sent.attempt, status(500));
        assert_eq!(
            kinds(&outputs),
            ["persist retry", "persist retry", "attempt_failed"],
            "attempt {attempt}"
        );
        assert!(matches!(
            &events(&outputs)[0],
            Event::AttemptFailed { relays_tried: false, errors, .. } if errors.len() == 1
        ));
        assert!(!h.out.is_offline(&name(DEST)));
        sent = only_transmit(&h.advance_to_timeout());
        assert_eq!(sent.target, Target::Direct);
    }
    let outputs = h.answer(
        sent.attempt,
        HttpOutcome::ConnectionFailed("refused".into()),
    );
    assert_eq!(
        kinds(&outputs),
        [
            "persist retry",
            "assumed_offline",
            "transmit r1.example",
            "transmit r2.example"
        ]
    );
    let relays = transmits(&outputs);
    // Answered out of order; `Via::Relays` keeps the relay order.
    assert!(h.answer(relays[1].attempt, ok()).is_empty());
    let outputs = h.answer(relays[0].attempt, status(202));
    assert_eq!(
        kinds(&outputs),
        ["persist txn_finished", "persist retry", "delivered"]
    );
    let Event::Delivered {
        via, errors, items, ..
    } = &events(&outputs)[0]
    else {
        panic!()
    };
    assert_eq!(
        *via,
        Via::Relays(vec![name("r1.example"), name("r2.example")])
    );
    assert_eq!(
        *errors,
        [(Target::Direct, "connection failed: refused".to_owned())]
    );
    assert_eq!(*items, [ItemId(1)]);
    // Offline: the next transaction still goes direct first.
    let outputs = h.pdu(DEST, 2);
    assert_eq!(
        kinds(&outputs),
        ["persist enqueued", "persist txn_started", "transmit direct"]
    );
}

#[test]
fn one_relay_accepting_of_three_is_delivery() {
    let mut h = with_relays(config(), &["r1.example", "r2.example", "r3.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relays = transmits(&h.answer(direct.attempt, HttpOutcome::Timeout));
    assert_eq!(relays.len(), 3);
    assert!(h.answer(relays[0].attempt, status(500)).is_empty());
    assert!(h.answer(relays[1].attempt, ok()).is_empty());
    let outputs = h.answer(
        relays[2].attempt,
        HttpOutcome::ConnectionFailed("reset".into()),
    );
    assert_eq!(kinds(&outputs), ["persist txn_finished", "delivered"]);
    assert_eq!(
        events(&outputs)[0],
        Event::Delivered {
            destination: name(DEST),
            txn_id: TxnId::parse(&direct.txn()).unwrap(),
            via: Via::Relays(vec![name("r2.example")]),
            items: vec![ItemId(1)],
            errors: vec![
                (Target::Direct, "timed out".into()),
                (Target::Relay(name("r1.example")), "HTTP 500: {}".into()),
                (
                    Target::Relay(name("r3.example")),
                    "connection failed: reset".into()
                ),
            ],
        }
    );
    assert_eq!(h.out.in_flight(&name(DEST)), None);
    // Still offline: the failure state keeps the destination tracked.
    assert_eq!(h.out.tracked_destinations(), 1);
}

#[test]
fn no_relay_accepting_is_a_failed_attempt() {
    let mut h = with_relays(config(), &["r1.example", "r2.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relays = transmits(&h.answer(direct.attempt, status(500)));
    assert!(h.answer(relays[0].attempt, status(403)).is_empty());
    let outputs = h.answer(relays[1].attempt, status(500));
    assert_eq!(kinds(&outputs), ["persist retry", "attempt_failed"]);
    let Event::AttemptFailed {
        errors,
        relays_tried,
        retry_at,
        txn_id,
        ..
    } = &events(&outputs)[0]
    else {
        panic!()
    };
    assert!(*relays_tried);
    assert_eq!(errors.len(), 3);
    assert_eq!(txn_id.as_str(), direct.txn());
    assert!(retry_at.is_some());
    // The next attempt: direct, then every relay again, same txn ID.
    let again = only_transmit(&h.advance_to_timeout());
    assert_eq!(again.txn(), direct.txn());
    let relays = transmits(&h.answer(again.attempt, status(500)));
    assert_eq!(relays.len(), 2);
    assert!(relays.iter().all(|s| s.txn() == direct.txn()));
}

#[test]
fn offline_without_relays_fails_after_the_direct_try() {
    let mut h = Harness::new(config());
    let direct = only_transmit(&h.pdu(DEST, 1));
    let outputs = h.answer(direct.attempt, status(500));
    assert_eq!(
        kinds(&outputs),
        [
            "persist retry",
            "assumed_offline",
            "persist retry",
            "attempt_failed"
        ]
    );
    // AssumedOffline once per transition.
    let direct = only_transmit(&h.advance_to_timeout());
    let outputs = h.answer(direct.attempt, status(500));
    assert_eq!(
        kinds(&outputs),
        ["persist retry", "persist retry", "attempt_failed"]
    );
}

#[test]
fn relay_set_is_read_at_each_fan_out() {
    let mut h = with_relays(config(), &["r1.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relays = transmits(&h.answer(direct.attempt, status(500)));
    h.out.set_relays(
        h.now,
        name(DEST),
        vec![name("r2.example"), name("r3.example"), name("r2.example")],
    );
    assert_eq!(h.out.relays(&name(DEST)).len(), 2);
    // The fan-out under way keeps its relays.
    let outputs = h.answer(relays[0].attempt, status(500));
    assert_eq!(kinds(&outputs), ["persist retry", "attempt_failed"]);
    let direct = only_transmit(&h.advance_to_timeout());
    let outputs = h.answer(direct.attempt, status(500));
    assert_eq!(
        kinds(&outputs),
        [
            "persist retry",
            "transmit r2.example",
            "transmit r3.example"
        ]
    );
    h.out.set_relays(h.now, name(DEST), Vec::new());
    assert!(h.out.relays(&name(DEST)).is_empty());
}

#[test]
fn txn_id_and_body_stay_the_same_across_retries() {
    let mut h = with_relays(offline_after(2), &["r1.example"]);
    let first = only_transmit(&h.pdu(DEST, 1));
    h.pdu(DEST, 2);
    let mut sent = first.clone();
    for _ in 0..5 {
        let outputs = h.answer(sent.attempt, status(502));
        for relay in transmits(&outputs) {
            assert_eq!(relay.txn(), first.txn());
            assert_eq!(relay.request.body, first.request.body);
            h.answer(relay.attempt, status(500));
        }
        sent = only_transmit(&h.advance_to_timeout());
        assert_eq!(sent.request, first.request);
    }
    assert_eq!(h.out.queued(&name(DEST)), 2);
    assert_eq!(h.out.in_flight(&name(DEST)).unwrap().as_str(), first.txn());
}

#[test]
fn permanent_4xx_drops_the_transaction_and_moves_on() {
    for code in [400, 401, 403, 404, 413, 451] {
        let mut h = with_relays(config(), &["r1.example"]);
        let sent = only_transmit(&h.pdu(DEST, 1));
        h.pdu(DEST, 2);
        let outputs = h.answer(sent.attempt, status(code));
        assert_eq!(
            kinds(&outputs),
            [
                "persist txn_finished",
                "failed_permanently",
                "persist txn_started",
                "transmit direct"
            ],
            "{code}"
        );
        assert_eq!(
            events(&outputs)[0],
            Event::FailedPermanently {
                destination: name(DEST),
                txn_id: TxnId::parse(&sent.txn()).unwrap(),
                items: vec![ItemId(1)],
                error: format!("HTTP {code}: {{}}"),
            }
        );
        assert_eq!(only_transmit(&outputs).ns(), (vec![2], vec![]));
        assert_eq!(h.out.retry_state(&name(DEST)), RetryState::default());
    }
}

#[test]
fn permanent_4xx_while_offline_skips_relays() {
    let mut h = with_relays(config(), &["r1.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relay = only_transmit(&h.answer(direct.attempt, status(500)));
    h.pdu(DEST, 2);
    let next = only_transmit(&h.answer(relay.attempt, ok()));
    let outputs = h.answer(next.attempt, status(400));
    assert_eq!(
        kinds(&outputs),
        ["persist txn_finished", "failed_permanently"]
    );
    assert!(h.out.is_offline(&name(DEST)));
}

#[test]
fn direct_success_clears_offline() {
    let mut h = with_relays(config(), &["r1.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relay = only_transmit(&h.answer(direct.attempt, status(500)));
    h.answer(relay.attempt, status(500));
    assert!(h.out.is_offline(&name(DEST)));
    let direct = only_transmit(&h.advance_to_timeout());
    let outputs = h.answer(direct.attempt, ok());
    assert_eq!(
        kinds(&outputs),
        [
            "persist txn_finished",
            "persist retry",
            "back_online",
            "delivered"
        ]
    );
    assert!(matches!(
        &events(&outputs)[1],
        Event::Delivered { via: Via::Direct, errors, .. } if errors.is_empty()
    ));
    assert!(!h.out.is_offline(&name(DEST)));
    assert_eq!(h.out.tracked_destinations(), 0);
    assert_eq!(h.out.poll_timeout(), None);
    assert!(h.store.dests.is_empty());
}

#[test]
fn late_duplicate_and_unknown_results_are_ignored() {
    let mut h = with_relays(config(), &["r1.example", "r2.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relays = transmits(&h.answer(direct.attempt, status(500)));
    // The direct answer again, and an ID never issued.
    assert!(h.answer(direct.attempt, ok()).is_empty());
    assert!(h.answer(AttemptId(424_242), ok()).is_empty());
    // Seen alive while relays are out: no second request.
    assert!(h.peer_alive(DEST).is_empty());
    assert!(h.answer(relays[0].attempt, ok()).is_empty());
    assert!(h.answer(relays[0].attempt, ok()).is_empty());
    let outputs = h.answer(relays[1].attempt, status(500));
    assert_eq!(kinds(&outputs), ["persist txn_finished", "delivered"]);
    assert!(h.answer(relays[1].attempt, ok()).is_empty());
    assert!(h.answer(direct.attempt, ok()).is_empty());
    assert_eq!(h.out.in_flight(&name(DEST)), None);
}
