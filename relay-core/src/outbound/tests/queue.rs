//! Queues and transactions: batching, one in flight, persistence order,
//! enqueue errors, forgetting idle destinations, timers, txn IDs.

use super::*;
use crate::epoch::epoch;
use serde_json::json;

use crate::store::StoreError;

#[test]
fn transactions_hold_at_most_50_pdus_and_100_edus() {
    let mut h = Harness::new(config());
    let first = only_transmit(&h.pdu(DEST, 0));
    let mut n = 1;
    let mut push = |h: &mut Harness, kind: ItemKind, count: u64| {
        for _ in 0..count {
            let json = if kind == ItemKind::Pdu {
                pdu(n)
            } else {
                edu(n)
            };
            assert!(transmits(&h.enqueue(DEST, kind, json).1).is_empty());
            n += 1;
        }
    };
    // 1..=49 PDUs, 50..=149 EDUs, 150 PDU, 151 EDU (the 101st: stop), ...
    push(&mut h, ItemKind::Pdu, 49);
    push(&mut h, ItemKind::Edu, 100);
    push(&mut h, ItemKind::Pdu, 1);
    push(&mut h, ItemKind::Edu, 1);
    push(&mut h, ItemKind::Pdu, 51);
    push(&mut h, ItemKind::Edu, 3);
    assert_eq!(h.out.queued(&name(DEST)), 206);
    let second = only_transmit(&h.answer(first.attempt, ok()));
    let (pdus, edus) = second.ns();
    let expected_pdus: Vec<u64> = (1..=49).chain([150]).collect();
    assert_eq!(pdus, expected_pdus);
    assert_eq!(edus, (50..=149).collect::<Vec<_>>());
    // Next: EDU 151 and PDUs 152..=201 (50 PDUs); PDU 202 does not fit, so
    // the EDUs behind it wait too.
    let third = only_transmit(&h.answer(second.attempt, ok()));
    assert_eq!(third.ns(), ((152..=201).collect(), vec![151]));
    let fourth = only_transmit(&h.answer(third.attempt, ok()));
    assert_eq!(fourth.ns(), (vec![202], vec![203, 204, 205]));
    let outputs = h.answer(fourth.attempt, ok());
    assert_eq!(kinds(&outputs), ["persist txn_finished", "delivered"]);
    assert_eq!(h.out.queued(&name(DEST)), 0);
}

#[test]
fn one_transaction_in_flight_per_destination() {
    let mut h = Harness::new(config());
    let first = only_transmit(&h.pdu(DEST, 1));
    assert!(transmits(&h.pdu(DEST, 2)).is_empty());
    assert!(transmits(&h.pdu(DEST, 3)).is_empty());
    // Another destination has its own.
    let other = only_transmit(&h.pdu("other.example", 4));
    assert_eq!(other.request.server, name("other.example"));
    assert_eq!(h.out.queued(&name(DEST)), 3);
    assert_eq!(h.out.in_flight(&name(DEST)).unwrap().as_str(), first.txn());
    let second = only_transmit(&h.answer(first.attempt, ok()));
    assert_eq!(second.ns(), (vec![2, 3], vec![]));
    assert_ne!(second.txn(), first.txn());
    assert_eq!(h.out.queued(&name(DEST)), 2);
    assert_eq!(h.out.tracked_destinations(), 2);
}

#[test]
fn persistence_comes_before_what_depends_on_it() {
    let mut h = Harness::new(config());
    let (a, outputs) = h.enqueue(DEST, ItemKind::Pdu, pdu(1));
    let sent = only_transmit(&outputs);
    let txn_id = TxnId::parse(&sent.txn()).unwrap();
    assert_eq!(
        changes(&outputs),
        [
            OutboundChange::Enqueued {
                destination: name(DEST),
                item: Item {
                    id: a,
                    kind: ItemKind::Pdu,
                    json: pdu(1)
                },
            },
            OutboundChange::TxnStarted {
                destination: name(DEST),
                txn_id: txn_id.clone(),
                items: vec![a],
            },
        ]
    );
    let outputs = h.answer(sent.attempt, status(500));
    let retry = |direct_failures, failed_attempts, next_retry| OutboundChange::Retry {
        destination: name(DEST),
        state: RetryState {
            direct_failures,
            failed_attempts,
            next_retry,
            blacklisted: false,
        },
    };
    let wait = retry_at(&outputs).unwrap() - h.now;
    let next = h.unix.saturating_add_ms(wait.as_millis() as u64);
    assert_eq!(
        changes(&outputs),
        [retry(1, 0, None), retry(1, 1, Some(next))]
    );
    let sent = only_transmit(&h.advance_to_timeout());
    let (b, _) = h.enqueue(DEST, ItemKind::Edu, edu(2));
    let outputs = h.answer(sent.attempt, ok());
    let next_txn = only_transmit(&outputs);
    assert_eq!(
        changes(&outputs),
        [
            OutboundChange::TxnFinished {
                destination: name(DEST),
                items: vec![a],
            },
            retry(0, 0, None),
            OutboundChange::TxnStarted {
                destination: name(DEST),
                txn_id: TxnId::parse(&next_txn.txn()).unwrap(),
                items: vec![b],
            },
        ]
    );
    let outputs = h.answer(next_txn.attempt, ok());
    assert_eq!(kinds(&outputs), ["persist txn_finished", "delivered"]);
    assert!(h.store.dests.is_empty());
}

#[test]
fn persist_failures_are_reported() {
    let mut out = Outbound::new(config(), [7; 32]);
    let now = epoch();
    out.handle_enqueue(now, T0, name(DEST), ItemKind::Pdu, pdu(1))
        .unwrap();
    assert_eq!(out.poll_timeout(), Some(now));
    let mut ops = Vec::new();
    while let Some(output) = out.poll_output() {
        if let Output::Persist { op, .. } = output {
            ops.push(op);
        }
    }
    assert_eq!(ops.len(), 2);
    out.handle_persisted(now, ops[0], Ok(()));
    out.handle_persisted(now, ops[1], Err(StoreError("disk full".into())));
    let queued = Event::Queued { item: ItemId(1) };
    assert_eq!(out.poll_output(), Some(Output::Event(queued)));
    assert_eq!(
        out.poll_output(),
        Some(Output::Event(Event::PersistFailed {
            error: "storage failed: disk full".into()
        }))
    );
    // The transaction goes out all the same: storage trouble must not
    // stop delivery.
    assert!(matches!(out.poll_output(), Some(Output::Transmit { .. })));
    // Reported twice, or never issued: ignored.
    out.handle_persisted(now, ops[1], Err(StoreError("again".into())));
    out.handle_persisted(now, OpId(999_999), Err(StoreError("who".into())));
    assert_eq!(out.poll_output(), None);
}

#[test]
fn an_enqueue_is_answered_once_its_item_is_stored() {
    let mut out = Outbound::new(config(), [7; 32]);
    let now = epoch();
    let enqueue = |out: &mut Outbound, json: Vec<u8>| {
        let id = out.handle_enqueue(now, T0, name(DEST), ItemKind::Pdu, json);
        (
            id,
            std::iter::from_fn(|| out.poll_output()).collect::<Vec<_>>(),
        )
    };
    let (a, first) = enqueue(&mut out, pdu(1));
    let (b, second) = enqueue(&mut out, pdu(2));
    let (a, b) = (a.unwrap(), b.unwrap());
    // A refused item has nothing to store and no answer to wait for.
    let (refused, none) = enqueue(&mut out, b"nope".to_vec());
    assert_eq!((refused, none), (Err(EnqueueError::NotJson), Vec::new()));
    assert!(events(&first).is_empty() && events(&second).is_empty());
    let op_of = |outputs: &[Output], id: ItemId| {
        outputs.iter().find_map(|o| match o {
            Output::Persist {
                op,
                change: OutboundChange::Enqueued { item, .. },
            } if item.id == id => Some(*op),
            _ => None,
        })
    };
    let (op_a, op_b) = (op_of(&first, a).unwrap(), op_of(&second, b).unwrap());
    let started = first.iter().find_map(|o| match o {
        Output::Persist {
            op,
            change: OutboundChange::TxnStarted { .. },
        } => Some(*op),
        _ => None,
    });
    // Other changes answer nothing.
    out.handle_persisted(now, started.unwrap(), Ok(()));
    let drained: Vec<Output> = std::iter::from_fn(|| out.poll_output()).collect();
    assert_eq!(kinds(&drained), ["transmit direct"]);
    // Stored: answered. Not stored: answered after the failure.
    out.handle_persisted(now, op_b, Err(StoreError("disk full".into())));
    out.handle_persisted(now, op_a, Ok(()));
    let drained: Vec<Output> = std::iter::from_fn(|| out.poll_output()).collect();
    assert_eq!(kinds(&drained), ["persist_failed", "queued", "queued"]);
    assert_eq!(
        events(&drained)[1..],
        [Event::Queued { item: b }, Event::Queued { item: a }]
    );
    // Once.
    out.handle_persisted(now, op_a, Ok(()));
    assert_eq!(out.poll_output(), None);
}

#[test]
fn enqueue_refuses_bad_items() {
    let config = OutboundConfig {
        max_queued_items: 2,
        ..config()
    };
    let mut h = Harness::new(config);
    let now = h.now;
    let mut enqueue = |dest: &str, json: &[u8]| {
        h.out
            .handle_enqueue(now, T0, name(dest), ItemKind::Pdu, json.to_vec())
    };
    assert_eq!(
        enqueue("origin.example", b"{}"),
        Err(EnqueueError::SelfDestination)
    );
    for bad in [
        &b"nope"[..],
        b"[1]",
        b"\"x\"",
        b"{",
        br#"{"a":1.5}"#,
        br#"{"a":9007199254740992}"#,
    ] {
        assert_eq!(enqueue(DEST, bad), Err(EnqueueError::NotJson));
    }
    assert!(enqueue(DEST, b"{}").is_ok());
    assert!(enqueue(DEST, br#"{"a":[1,{"b":null}]}"#).is_ok());
    // The transaction in flight counts.
    assert_eq!(
        enqueue(DEST, b"{}"),
        Err(EnqueueError::QueueFull(name(DEST)))
    );
    assert!(enqueue("other.example", b"{}").is_ok());
}

#[test]
fn idle_destinations_are_forgotten() {
    let mut h = Harness::new(offline_after(5));
    for i in 0..20 {
        let dest = format!("d{i}.example");
        let sent = only_transmit(&h.pdu(&dest, i));
        h.answer(sent.attempt, ok());
    }
    assert_eq!(h.out.tracked_destinations(), 0);
    // A failure keeps the state until the peer is seen alive.
    let sent = only_transmit(&h.pdu(DEST, 1));
    h.answer(sent.attempt, status(500));
    let sent = only_transmit(&h.peer_alive(DEST));
    assert_eq!(h.out.tracked_destinations(), 1);
    h.answer(sent.attempt, ok());
    assert_eq!(h.out.tracked_destinations(), 0);
    assert_eq!(h.out.retry_state(&name(DEST)), RetryState::default());
}

#[test]
fn poll_timeout_is_now_while_output_waits() {
    let mut out = Outbound::new(config(), [7; 32]);
    assert_eq!(out.poll_timeout(), None);
    let now = epoch() + Duration::from_secs(5);
    out.handle_enqueue(now, T0, name(DEST), ItemKind::Pdu, pdu(1))
        .unwrap();
    let mut started = None;
    for _ in 0..2 {
        assert_eq!(out.poll_timeout(), Some(now));
        if let Some(Output::Persist {
            op,
            change: OutboundChange::TxnStarted { .. },
        }) = out.poll_output()
        {
            started = Some(op);
        }
    }
    assert_eq!(out.poll_output(), None);
    assert_eq!(
        out.poll_timeout(),
        None,
        "waiting for the store, not a timer"
    );
    out.handle_persisted(now, started.unwrap(), Ok(()));
    assert_eq!(out.poll_timeout(), Some(now));
    assert!(matches!(out.poll_output(), Some(Output::Transmit { .. })));
    assert_eq!(out.poll_timeout(), None);
}

#[test]
fn a_new_transaction_is_sent_only_once_its_txn_id_is_stored() {
    let mut out = Outbound::new(config(), [7; 32]);
    let now = epoch();
    out.handle_enqueue(now, T0, name(DEST), ItemKind::Pdu, pdu(1))
        .unwrap();
    let outputs: Vec<Output> = std::iter::from_fn(|| out.poll_output()).collect();
    assert_eq!(kinds(&outputs), ["persist enqueued", "persist txn_started"]);
    let Output::Persist { op: started, .. } = &outputs[1] else {
        unreachable!()
    };
    // Other reports and timers do not send it.
    let Output::Persist { op: enqueued, .. } = &outputs[0] else {
        unreachable!()
    };
    out.handle_persisted(now, *enqueued, Ok(()));
    out.handle_timeout(now + Duration::from_secs(60), T0);
    let queued = Event::Queued { item: ItemId(1) };
    assert_eq!(out.poll_output(), Some(Output::Event(queued)));
    assert_eq!(out.poll_output(), None);
    out.handle_persisted(now, *started, Ok(()));
    assert!(matches!(
        out.poll_output(),
        Some(Output::Transmit {
            target: Target::Direct,
            ..
        })
    ));
    // A restored transaction was stored already: it goes at once.
    let record = DestinationRecord {
        destination: name(DEST),
        items: vec![Item {
            id: ItemId(1),
            kind: ItemKind::Pdu,
            json: pdu(1),
        }],
        txn: Some((TxnId::parse("t").unwrap(), vec![ItemId(1)])),
        retry: RetryState::default(),
    };
    let mut restored = Outbound::restore(config(), [7; 32], now, T0, vec![record]);
    restored.handle_timeout(now, T0);
    assert!(matches!(
        restored.poll_output(),
        Some(Output::Transmit { .. })
    ));
}

#[test]
fn txn_ids_are_deterministic_and_distinct() {
    let run = |seed: [u8; 32]| -> Vec<String> {
        let mut h = Harness::with_seed(config(), seed);
        (0..5)
            .map(|i| {
                let sent = only_transmit(&h.pdu(DEST, i));
                h.answer(sent.attempt, ok());
                sent.txn()
            })
            .collect()
    };
    let a = run([1; 32]);
    assert_eq!(a, run([1; 32]));
    assert_ne!(a, run([2; 32]));
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert_eq!(distinct.len(), a.len());
    assert!(a[0].starts_with(&format!("{}.", T0.0)));
}

#[test]
fn a_whole_transaction_goes_alone_under_its_own_txn_id() {
    let mut h = Harness::new(config());
    let first = only_transmit(&h.pdu(DEST, 1));
    let txn =
        br#"{"origin":"liar.example","origin_server_ts":7,"pdus":[{"n":2}],"edus":[{"n":3}]}"#;
    let item = whole_transaction_item(&TxnId::parse("mine/1").unwrap(), txn).unwrap();
    h.enqueue(DEST, ItemKind::Transaction, item);
    h.pdu(DEST, 4);
    // Behind the first transaction; then alone, then PDU 4.
    let whole = only_transmit(&h.answer(first.attempt, ok()));
    assert_eq!(h.out.in_flight(&name(DEST)).unwrap().as_str(), "mine/1");
    assert_eq!(whole.request.target, "/_matrix/federation/v1/send/mine%2F1");
    let body = whole.body();
    assert_eq!(body["origin"], "origin.example", "origin is this node");
    assert_eq!(body["origin_server_ts"], 7, "other fields kept");
    assert_eq!(
        (body["pdus"].clone(), body["edus"].clone()),
        (json!([{"n": 2}]), json!([{"n": 3}]))
    );
    let last = only_transmit(&h.answer(whole.attempt, ok()));
    assert_eq!(last.ns(), (vec![4], vec![]));
    assert_ne!(last.txn(), whole.txn());
}

#[test]
fn bad_whole_transactions_are_refused() {
    let mut h = Harness::new(config());
    let id = TxnId::parse("t").unwrap();
    let fifty_one = json!({"pdus": vec![json!({}); 51]}).to_string();
    for bad in [
        r#"{"edus":[]}"#,
        r#"{"pdus":{}}"#,
        r#"{"pdus":[],"edus":7}"#,
        fifty_one.as_str(),
    ] {
        let item = whole_transaction_item(&id, bad.as_bytes()).unwrap();
        let result = h
            .out
            .handle_enqueue(h.now, h.unix, name(DEST), ItemKind::Transaction, item);
        assert!(
            matches!(result, Err(EnqueueError::BadTransaction(_))),
            "{bad}: {result:?}"
        );
    }
    assert!(matches!(
        whole_transaction_item(&id, b"nope"),
        Err(EnqueueError::NotJson)
    ));
    let no_id = br#"{"transaction":{"pdus":[]}}"#.to_vec();
    let result = h
        .out
        .handle_enqueue(h.now, h.unix, name(DEST), ItemKind::Transaction, no_id);
    assert!(matches!(result, Err(EnqueueError::BadTransaction(_))));
    assert_eq!(h.out.queued(&name(DEST)), 0);
}
