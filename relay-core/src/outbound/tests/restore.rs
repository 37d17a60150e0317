//! Restarts: what [`Outbound::restore`] rebuilds from persisted records.

use super::*;
use crate::epoch::epoch;

fn record(items: Vec<Item>, txn: Option<(&str, Vec<u64>)>, retry: RetryState) -> DestinationRecord {
    DestinationRecord {
        destination: name(DEST),
        items,
        txn: txn.map(|(id, ids)| {
            (
                TxnId::parse(id).unwrap(),
                ids.into_iter().map(ItemId).collect(),
            )
        }),
        retry,
    }
}

fn item(id: u64, json: &[u8]) -> Item {
    Item {
        id: ItemId(id),
        kind: ItemKind::Pdu,
        json: json.to_vec(),
    }
}

/// A harness with a transaction of item 1 backing off, items 2 and 3
/// queued behind it.
fn backing_off() -> (Harness, Sent) {
    let mut h = Harness::new(OutboundConfig {
        retries_until_assumed_offline: 5,
        ..config()
    });
    let sent = only_transmit(&h.pdu(DEST, 1));
    h.pdu(DEST, 2);
    h.pdu(DEST, 3);
    let outputs = h.answer(sent.attempt, status(500));
    assert!(retry_at(&outputs).is_some());
    (h, sent)
}

#[test]
fn restore_resumes_the_same_transaction_and_queue() {
    let (mut h, before) = backing_off();
    let state = h.out.retry_state(&name(DEST));
    h.restart(Duration::from_secs(3600), [9; 32]);
    assert_eq!(h.out.queued(&name(DEST)), 3);
    assert_eq!(h.out.in_flight(&name(DEST)).unwrap().as_str(), before.txn());
    assert_eq!(h.out.retry_state(&name(DEST)), state);
    // Due: the first timeout resumes it, with the same request.
    assert_eq!(h.out.poll_timeout(), Some(h.now));
    let outputs = h.advance(Duration::ZERO);
    assert_eq!(kinds(&outputs), ["transmit direct"]);
    let after = only_transmit(&outputs);
    assert_eq!(after.request, before.request);
    // The queue behind it follows, under a new txn ID; new items get new IDs.
    let (id, _) = h.enqueue(DEST, ItemKind::Pdu, pdu(4));
    assert_eq!(id, ItemId(4));
    let next = only_transmit(&h.answer(after.attempt, ok()));
    assert_eq!(next.ns(), (vec![2, 3, 4], vec![]));
    assert_ne!(next.txn(), before.txn());
}

#[test]
fn restore_keeps_the_backoff_deadline() {
    let (mut h, before) = backing_off();
    let next_retry = h.out.retry_state(&name(DEST)).next_retry.unwrap();
    let wait = Duration::from_millis(next_retry.0 - h.unix.0);
    h.restart(Duration::ZERO, [9; 32]);
    assert_eq!(h.out.poll_timeout(), Some(h.now + wait));
    assert!(h.advance(wait - Duration::from_millis(1)).is_empty());
    let sent = only_transmit(&h.advance(Duration::from_millis(1)));
    assert_eq!(sent.txn(), before.txn());
}

#[test]
fn restored_deadlines_are_clamped() {
    let cap = config().backoff_cap;
    let cases = [
        (Some(T0.saturating_add_ms(10 * 86_400_000)), Some(cap)),
        (
            Some(T0.saturating_add_ms(5_000)),
            Some(Duration::from_secs(5)),
        ),
        (Some(UnixMillis(T0.0 - 5_000)), Some(Duration::ZERO)),
        (Some(UnixMillis(0)), Some(Duration::ZERO)),
        (Some(UnixMillis(u64::MAX)), Some(cap)),
        (None, Some(Duration::ZERO)),
    ];
    for (next_retry, expected) in cases {
        let retry = RetryState {
            failed_attempts: 1,
            next_retry,
            ..RetryState::default()
        };
        let now = epoch();
        let out = Outbound::restore(
            config(),
            [1; 32],
            now,
            T0,
            vec![record(vec![item(1, b"{}")], None, retry)],
        );
        assert_eq!(
            out.poll_timeout(),
            expected.map(|d| now + d),
            "{next_retry:?}"
        );
    }
}

#[test]
fn restored_blacklist_waits_for_peer_alive() {
    let retry = RetryState {
        direct_failures: 16,
        failed_attempts: 16,
        next_retry: None,
        blacklisted: true,
    };
    let mut h = Harness::new(config());
    h.out = Outbound::restore(
        config(),
        [1; 32],
        h.now,
        h.unix,
        vec![record(vec![item(7, b"{}")], Some(("t1", vec![7])), retry)],
    );
    assert_eq!(h.out.poll_timeout(), None);
    assert!(h.out.is_offline(&name(DEST)));
    assert!(h.advance(Duration::from_secs(86_400)).is_empty());
    let outputs = h.peer_alive(DEST);
    assert_eq!(kinds(&outputs), ["persist retry", "transmit direct"]);
    let sent = only_transmit(&outputs);
    assert_eq!(sent.txn(), "t1");
    // A txn ID not made by this machine: the body is stamped at restore.
    assert_eq!(sent.body()["origin_server_ts"], T0.0);
    let outputs = h.answer(sent.attempt, ok());
    assert_eq!(
        kinds(&outputs),
        [
            "persist txn_finished",
            "persist retry",
            "back_online",
            "delivered"
        ]
    );
    assert_eq!(h.out.tracked_destinations(), 0);
}

#[test]
fn restore_tolerates_odd_records() {
    let now = epoch();
    let offline = RetryState {
        direct_failures: 3,
        ..RetryState::default()
    };
    let records = vec![
        // Idle: forgotten.
        DestinationRecord {
            destination: name("idle.example"),
            items: Vec::new(),
            txn: None,
            retry: RetryState::default(),
        },
        // Offline with nothing queued: kept for its failure state.
        DestinationRecord {
            destination: name("offline.example"),
            items: Vec::new(),
            txn: None,
            retry: offline,
        },
        // A txn naming an item that is gone, and a duplicate item.
        record(
            vec![item(5, b"{}"), item(6, b"{}"), item(5, b"{}")],
            Some(("t5", vec![5, 99])),
            RetryState::default(),
        ),
        // A second record for the same destination: merged.
        record(vec![item(8, b"{}")], None, RetryState::default()),
    ];
    let mut out = Outbound::restore(config(), [1; 32], now, T0, records);
    out.check_invariants();
    assert_eq!(out.tracked_destinations(), 2);
    assert!(out.is_offline(&name("offline.example")));
    assert_eq!(out.queued(&name(DEST)), 3);
    assert_eq!(out.in_flight(&name(DEST)).unwrap().as_str(), "t5");
    // Counters continue above the highest item.
    let id = out
        .handle_enqueue(now, T0, name(DEST), ItemKind::Edu, b"{}".to_vec())
        .unwrap();
    assert_eq!(id, ItemId(9));
}

#[test]
fn corrupt_restored_items_drop_their_transaction() {
    let mut h = Harness::new(config());
    h.out = Outbound::restore(
        config(),
        [1; 32],
        h.now,
        h.unix,
        vec![record(
            vec![
                item(1, br#"{"n":1}"#),
                item(2, b"garbage"),
                item(3, br#"{"n":3}"#),
            ],
            Some(("t1", vec![1, 2])),
            RetryState::default(),
        )],
    );
    let outputs = h.advance(Duration::ZERO);
    assert_eq!(
        kinds(&outputs),
        [
            "persist txn_finished",
            "failed_permanently",
            "persist txn_started",
            "transmit direct"
        ]
    );
    assert!(matches!(
        &events(&outputs)[0],
        Event::FailedPermanently { items, error, .. }
            if *items == [ItemId(1), ItemId(2)] && error.contains("item 2")
    ));
    assert_eq!(only_transmit(&outputs).ns(), (vec![3], vec![]));
}

#[test]
fn a_restart_after_delivery_never_resends() {
    let mut h = Harness::new(config());
    let sent = only_transmit(&h.pdu(DEST, 1));
    h.pdu(DEST, 2);
    let second = only_transmit(&h.answer(sent.attempt, ok()));
    h.restart(Duration::from_secs(1), [3; 32]);
    let outputs = h.advance(Duration::ZERO);
    let resent = only_transmit(&outputs);
    assert_eq!(resent.request, second.request);
    assert_eq!(resent.ns(), (vec![2], vec![]));
    h.answer(resent.attempt, ok());
    h.restart(Duration::from_secs(1), [4; 32]);
    assert_eq!(h.out.poll_timeout(), None);
    assert_eq!(h.out.tracked_destinations(), 0);
}
