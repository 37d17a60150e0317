//! The retriever on virtual time: the drain loop, acknowledgements,
//! de-duplication, crashes and the window.

mod batch;
mod faults;
mod prop;
mod sim;

use self::sim::*;
use std::time::Duration;

use super::*;
use crate::canonical::to_canonical_string;
use crate::http::HttpOutcome;

/// The key a transaction that came without `txn_id` is remembered by.
fn digest_of(transaction: &serde_json::Value) -> DedupeKey {
    let canonical = to_canonical_string(transaction).expect("canonical");
    DedupeKey::Digest(super::wire::digest(canonical.as_bytes()))
}

/// The content key a transaction that came with a `txn_id` is remembered by.
fn txn_digest_of(transaction: &serde_json::Value) -> DedupeKey {
    let canonical = to_canonical_string(transaction).expect("canonical");
    DedupeKey::TxnDigest(super::wire::digest(canonical.as_bytes()))
}

fn txn_key(origin: &str, txn_id: &str) -> DedupeKey {
    DedupeKey::Txn(name(origin), TxnId::parse(txn_id).expect("txn id"))
}

fn one<T: std::fmt::Debug>(mut items: Vec<T>) -> T {
    assert_eq!(items.len(), 1, "expected exactly one: {items:?}");
    items.remove(0)
}

#[test]
fn drain_acks_each_entry_after_processing_and_persisting() {
    let mut node = Node::new(config(), &["relay.a"]);
    let outs = node.drain();
    let (attempt, relay, ack) = one(transmits(&outs));
    assert_eq!((relay, ack), (name("relay.a"), 0));
    let Output::Transmit { request, .. } = &outs[0] else {
        panic!("{outs:?}")
    };
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.target,
        "/_matrix/federation/v1/relay_txn/@user:dest.example"
    );
    assert_eq!(request.body, br#"{"entry_id":0}"#);
    assert!(request.authorization.starts_with(
        r#"X-Matrix origin="dest.example",destination="relay.a",key="ed25519:1",sig=""#
    ));

    let t1 = txn("origin.example", 1);
    node.r
        .handle_response(node.now, attempt, entry(5, &t1, Some("t1")));
    let outs = node.drain();
    let d = one(deliveries(&outs));
    assert_eq!(outs.len(), 1);
    assert_eq!(
        (&d.relay, d.entry_id, d.origin.as_str()),
        (&name("relay.a"), EntryId(5), "origin.example")
    );
    assert_eq!(d.txn_id, Some(TxnId::parse("t1").expect("txn id")));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&d.transaction).expect("JSON"),
        t1
    );
    // Nothing happens until the application reports.
    assert_eq!(node.r.poll_timeout(), None);
    assert!(node.advance(3600.0).is_empty());

    node.r.handle_processed(node.now, d.id);
    let outs = node.drain();
    let (op, change) = one(persists(&outs));
    assert_eq!(outs.len(), 1, "no ack before the Seen is persisted");
    assert_eq!(
        change,
        WindowChange::Seen(vec![txn_key("origin.example", "t1"), txn_digest_of(&t1)])
    );
    node.r.handle_persisted(node.now, op, Ok(()));
    let outs = node.drain();
    let (attempt, _, ack) = one(transmits(&outs));
    assert_eq!(ack, 5);

    // A second entry, Dendrite-style; then the final ack travels on the
    // request that finds the queue empty.
    let t2 = txn("other.example", 2);
    node.r
        .handle_response(node.now, attempt, entry(7, &t2, None));
    let d = one(deliveries(&node.drain()));
    assert_eq!((d.entry_id, d.txn_id.clone()), (EntryId(7), None));
    node.r.handle_processed(node.now, d.id);
    let (op, change) = one(persists(&node.drain()));
    assert_eq!(change, WindowChange::Seen(vec![digest_of(&t2)]));
    node.r.handle_persisted(node.now, op, Ok(()));
    let (attempt, _, ack) = one(transmits(&node.drain()));
    assert_eq!(ack, 7);
    node.r.handle_response(node.now, attempt, empty());
    assert_eq!(
        node.drain(),
        vec![Output::Event(Event::Drained {
            relay: name("relay.a"),
            delivered: 2
        })]
    );
    // Drained: polled again after poll_interval (30 s), from entry 0.
    assert_eq!(
        node.r.poll_timeout(),
        Some(node.now + Duration::from_secs(30))
    );
    assert!(node.advance(29.0).is_empty());
    let (_, _, ack) = one(transmits(&node.advance(1.0)));
    assert_eq!(ack, 0);
}

#[test]
fn requests_are_accepted_by_the_relay_machine() {
    let mut relay = FakeRelay::new("relay.a", 1, false);
    let ids: Vec<u64> = (1..=3)
        .map(|n| relay.push("origin.example", &format!("t{n}"), &txn("x", n)))
        .collect();
    let mut node = Node::new(config(), &["relay.a"]);
    let mut relays = [relay];
    let seen = pump(&mut node, &mut relays);
    assert_eq!(seen.delivered.len(), 3);
    assert_eq!(relays[0].acked, ids, "each entry acknowledged exactly once");
    assert!(relays[0].queue.is_empty());
    assert_eq!(
        seen.events,
        vec![Event::Drained {
            relay: name("relay.a"),
            delivered: 3
        }]
    );
}

#[test]
fn failed_seen_persist_is_reported_and_the_entry_still_acked() {
    let mut node = Node::new(config(), &["relay.a"]);
    let (attempt, ..) = one(transmits(&node.drain()));
    node.r
        .handle_response(node.now, attempt, entry(3, &txn("o.example", 1), Some("t")));
    let d = one(deliveries(&node.drain()));
    node.r.handle_processed(node.now, d.id);
    let (op, _) = one(persists(&node.drain()));
    node.r.handle_persisted(
        node.now,
        op,
        Err(crate::store::StoreError("disk full".into())),
    );
    let outs = node.drain();
    assert_eq!(
        events(&outs),
        vec![Event::PersistFailed {
            error: "storage failed: disk full".into()
        }]
    );
    assert_eq!(one(transmits(&outs)).2, 3);
    // Reports for unknown ids, or repeated ones, change nothing.
    node.r.handle_persisted(node.now, op, Ok(()));
    node.r.handle_processed(node.now, d.id);
    node.r.handle_response(node.now, attempt, empty());
    assert!(node.drain().is_empty());
}

#[test]
fn duplicate_through_two_relays_is_handed_over_once() {
    let mut node = Node::new(config(), &["relay.a", "relay.b"]);
    let outs = node.drain();
    let sent = transmits(&outs);
    assert_eq!(sent.len(), 2, "relays drain concurrently");
    let t = txn("origin.example", 1);
    // Both relays answer the same transaction before it is processed.
    node.r
        .handle_response(node.now, sent[0].0, entry(11, &t, Some("t1")));
    node.r
        .handle_response(node.now, sent[1].0, entry(21, &t, Some("t1")));
    let outs = node.drain();
    let d = one(deliveries(&outs));
    assert_eq!(outs.len(), 1, "the copy waits, unacknowledged: {outs:?}");
    assert_eq!((&d.relay, d.entry_id), (&name("relay.a"), EntryId(11)));

    node.r.handle_processed(node.now, d.id);
    let (op, _) = one(persists(&node.drain()));
    node.r.handle_persisted(node.now, op, Ok(()));
    let outs = node.drain();
    assert_eq!(
        events(&outs),
        vec![Event::DuplicateDropped {
            relay: name("relay.b"),
            entry_id: EntryId(21)
        }]
    );
    let mut acks: Vec<_> = transmits(&outs).into_iter().map(|t| (t.1, t.2)).collect();
    acks.sort();
    assert_eq!(acks, vec![(name("relay.a"), 11), (name("relay.b"), 21)]);
}

#[test]
fn late_copy_is_dropped_and_acked_at_once() {
    let mut a = FakeRelay::new("relay.a", 1, false);
    let mut b = FakeRelay::new("relay.b", 100, false);
    let t = txn("origin.example", 1);
    a.push("origin.example", "t1", &t);
    let mut node = Node::new(config(), &["relay.a"]);
    let seen = pump(&mut node, std::slice::from_mut(&mut a));
    assert_eq!(seen.delivered.len(), 1);
    let copy = b.push("origin.example", "t1", &t);
    node.r
        .set_relays(node.now, vec![name("relay.a"), name("relay.b")]);
    node.r.handle_timeout(node.now);
    let seen = pump(&mut node, &mut [a, b]);
    assert!(seen.delivered.is_empty());
    assert_eq!(
        seen.events,
        vec![
            Event::DuplicateDropped {
                relay: name("relay.b"),
                entry_id: EntryId(copy)
            },
            Event::Drained {
                relay: name("relay.b"),
                delivered: 0
            },
        ]
    );
}

#[test]
fn dendrite_answers_are_deduplicated_by_digest() {
    // relay.a is a Dendrite relay (no txn_id); relay.b sends txn_id. The
    // same transaction through both is handed over once, and so is a copy
    // whose JSON differs only in key order and spacing.
    let t = txn("origin.example", 1);
    let mut a = FakeRelay::new("relay.a", 1, true);
    let mut b = FakeRelay::new("relay.b", 100, false);
    a.push("origin.example", "t1", &t);
    b.push("origin.example", "t1", &t);
    let mut node = Node::new(config(), &["relay.a"]);
    let seen = pump(&mut node, std::slice::from_mut(&mut a));
    let d = one(seen.delivered);
    assert_eq!(d.txn_id, None);
    assert_eq!(seen.changes, vec![WindowChange::Seen(vec![digest_of(&t)])]);

    node.r
        .set_relays(node.now, vec![name("relay.a"), name("relay.b")]);
    node.r.handle_timeout(node.now);
    let mut relays = [a, b];
    let seen = pump(&mut node, &mut relays);
    assert!(seen.delivered.is_empty());
    assert!(relays[1].queue.is_empty(), "the copy was acknowledged");

    node.r.handle_online(node.now);
    let outs = node.drain();
    let sent = transmits(&outs);
    assert_eq!(sent.len(), 2);
    let reordered = r#"{"transaction": {"pdus": [{"n": 1}], "edus": [], "origin_server_ts": 1,
        "origin": "origin.example"}, "entries_queued": true, "entry_id": 9}"#;
    node.r.handle_response(node.now, sent[0].0, ok(reordered));
    assert_eq!(
        events(&node.drain())[0],
        Event::DuplicateDropped {
            relay: name("relay.a"),
            entry_id: EntryId(9)
        }
    );
}

#[test]
fn identical_content_under_distinct_txn_ids_is_not_a_copy() {
    // Two transactions of one origin with the same content but their own
    // txn IDs are both handed over; a Dendrite relay's copy of the content
    // (no txn_id) after them is a copy, and so is ours after a Dendrite one.
    let t = txn("origin.example", 1);
    let mut ours = FakeRelay::new("relay.b", 100, false);
    ours.push("origin.example", "t1", &t);
    ours.push("origin.example", "t2", &t);
    let mut node = Node::new(config(), &["relay.b"]);
    let seen = pump(&mut node, std::slice::from_mut(&mut ours));
    let ids: Vec<_> = seen.delivered.iter().map(|d| d.txn_id.clone()).collect();
    assert_eq!(
        ids,
        [
            Some(TxnId::parse("t1").unwrap()),
            Some(TxnId::parse("t2").unwrap())
        ]
    );

    let mut dendrite = FakeRelay::new("relay.a", 1, true);
    dendrite.push("origin.example", "t1", &t);
    node.r.set_relays(node.now, vec![name("relay.a")]);
    node.r.handle_timeout(node.now);
    let seen = pump(&mut node, std::slice::from_mut(&mut dendrite));
    assert!(
        seen.delivered.is_empty(),
        "the content was handed over already"
    );
    assert!(dendrite.queue.is_empty(), "the copy was acknowledged");

    // The other way round: first without txn_id, then with one.
    let u = txn("origin.example", 2);
    let mut dendrite = FakeRelay::new("relay.a", 50, true);
    dendrite.push("origin.example", "u1", &u);
    let mut node = Node::new(config(), &["relay.a"]);
    assert_eq!(
        pump(&mut node, std::slice::from_mut(&mut dendrite))
            .delivered
            .len(),
        1
    );
    let mut ours = FakeRelay::new("relay.b", 100, false);
    ours.push("origin.example", "u1", &u);
    node.r.set_relays(node.now, vec![name("relay.b")]);
    node.r.handle_timeout(node.now);
    assert!(
        pump(&mut node, std::slice::from_mut(&mut ours))
            .delivered
            .is_empty()
    );
    assert!(ours.queue.is_empty());
}

#[test]
fn crash_before_processing_redelivers_and_after_persisting_drops() {
    let t = txn("origin.example", 1);
    let mut relay = FakeRelay::new("relay.a", 1, false);
    let id = relay.push("origin.example", "t1", &t);

    // Crash 1: handed over, not processed, nothing persisted.
    let mut node = Node::new(config(), &["relay.a"]);
    let (attempt, request) = one(requests(&node.drain()));
    let outcome = relay.serve(node.now, &request);
    node.r.handle_response(node.now, attempt, outcome);
    assert_eq!(one(deliveries(&node.drain())).entry_id, EntryId(id));
    drop(node);

    // The restarted node hands it over again. Crash 2: processed and
    // remembered, the ack never sent.
    let mut persisted: Vec<Vec<DedupeKey>> = Vec::new();
    let mut node = Node::restore(config(), &["relay.a"], persisted.clone());
    let (attempt, request) = one(requests(&node.drain()));
    assert_eq!(ack_of(&request), 0);
    let outcome = relay.serve(node.now, &request);
    node.r.handle_response(node.now, attempt, outcome);
    let d = one(deliveries(&node.drain()));
    assert_eq!(d.entry_id, EntryId(id));
    node.r.handle_processed(node.now, d.id);
    let (op, change) = one(persists(&node.drain()));
    let WindowChange::Seen(keys) = change else {
        panic!("{change:?}")
    };
    persisted.push(keys);
    node.r.handle_persisted(node.now, op, Ok(()));
    assert_eq!(ack_of(&one(requests(&node.drain())).1), id);
    drop(node);

    // The restarted node gets the same entry again: dropped, acknowledged.
    let mut node = Node::restore(config(), &["relay.a"], persisted);
    let mut relays = [relay];
    let seen = pump(&mut node, &mut relays);
    assert!(seen.delivered.is_empty());
    assert_eq!(
        seen.events,
        vec![
            Event::DuplicateDropped {
                relay: name("relay.a"),
                entry_id: EntryId(id)
            },
            Event::Drained {
                relay: name("relay.a"),
                delivered: 0
            },
        ]
    );
    assert_eq!(relays[0].acked, vec![id]);
}

#[test]
fn online_redrains_idle_relays_only() {
    let mut node = Node::new(config(), &["relay.a", "relay.b"]);
    let sent = transmits(&node.drain());
    node.r.handle_response(node.now, sent[0].0, empty());
    assert_eq!(events(&node.drain()).len(), 1);
    // relay.a drained, relay.b still in flight.
    node.now += Duration::from_secs(5);
    node.r.handle_online(node.now);
    let again = transmits(&node.drain());
    assert_eq!(one(again.clone()).1, name("relay.a"));
    assert_eq!(again[0].2, 0);
    // relay.b's first answer still counts.
    node.r
        .handle_response(node.now, sent[1].0, entry(4, &txn("o.example", 1), None));
    assert_eq!(deliveries(&node.drain()).len(), 1);
}

#[test]
fn set_relays_adds_removes_and_ignores_the_removed() {
    let mut node = Node::new(config(), &["relay.a", "relay.b"]);
    let sent = transmits(&node.drain());
    let t = txn("o.example", 1);
    node.r
        .handle_response(node.now, sent[0].0, entry(1, &t, Some("t")));
    let d = one(deliveries(&node.drain()));
    // Remove both: relay.b's answer is ignored; relay.a's delivery can still
    // be reported.
    node.r.set_relays(node.now, vec![]);
    node.r.handle_response(node.now, sent[1].0, empty());
    assert!(node.drain().is_empty());
    node.r.handle_processed(node.now, d.id);
    let (op, _) = one(persists(&node.drain()));
    node.r.handle_persisted(node.now, op, Ok(()));
    assert!(node.drain().is_empty(), "no request to a removed relay");
    assert_eq!(node.r.poll_timeout(), None);

    // Re-added, relay.a starts over and drops its unacknowledged copy.
    node.r
        .set_relays(node.now, vec![name("relay.a"), name("relay.a")]);
    assert_eq!(node.r.poll_timeout(), Some(node.now));
    node.r.handle_timeout(node.now);
    let (attempt, _, ack) = one(transmits(&node.drain()));
    assert_eq!(ack, 0);
    node.r
        .handle_response(node.now, attempt, entry(1, &t, Some("t")));
    let outs = node.drain();
    assert_eq!(
        events(&outs),
        vec![Event::DuplicateDropped {
            relay: name("relay.a"),
            entry_id: EntryId(1)
        }]
    );
    assert_eq!(one(transmits(&outs)).2, 1);
}

#[test]
fn a_removed_relays_pending_delivery_still_releases_its_copies() {
    let mut node = Node::new(config(), &["relay.a", "relay.b"]);
    let sent = transmits(&node.drain());
    let t = txn("o.example", 1);
    node.r
        .handle_response(node.now, sent[0].0, entry(1, &t, Some("t")));
    node.r
        .handle_response(node.now, sent[1].0, entry(2, &t, None));
    let d = one(deliveries(&node.drain()));
    node.r.set_relays(node.now, vec![name("relay.b")]);
    node.r.handle_processed(node.now, d.id);
    let (op, _) = one(persists(&node.drain()));
    node.r.handle_persisted(node.now, op, Ok(()));
    let outs = node.drain();
    let (_, relay, ack) = one(transmits(&outs));
    assert_eq!((relay, ack), (name("relay.b"), 2));
    assert_eq!(
        events(&outs),
        vec![Event::DuplicateDropped {
            relay: name("relay.b"),
            entry_id: EntryId(2)
        }]
    );
}

#[test]
fn window_eviction_forgets_and_bounds_memory() {
    let mut cfg = config();
    cfg.dedupe_window = 3;
    let mut relay = FakeRelay::new("relay.a", 1, false);
    let txns: Vec<_> = (1..=10).map(|n| txn("o.example", n)).collect();
    for (n, t) in txns.iter().enumerate() {
        relay.push("o.example", &format!("t{n}"), t);
    }
    let mut node = Node::new(cfg.clone(), &["relay.a"]);
    let seen = pump(&mut node, std::slice::from_mut(&mut relay));
    assert_eq!(seen.delivered.len(), 10);
    let forgets: Vec<_> = seen
        .changes
        .iter()
        .filter(|c| matches!(c, WindowChange::Forget(_)))
        .collect();
    assert_eq!(forgets.len(), 7);
    assert_eq!(
        forgets[0],
        &WindowChange::Forget(vec![txn_key("o.example", "t0"), txn_digest_of(&txns[0])])
    );
    // Each Forget follows the Seen that pushed it out.
    assert!(matches!(seen.changes[3], WindowChange::Seen(_)));
    assert!(matches!(seen.changes[4], WindowChange::Forget(_)));
    assert_eq!(node.r.window_size(), (3, 6));

    // The oldest fell out: a copy of it is handed over again; a copy of a
    // recent one is not.
    relay.push("o.example", "t0", &txns[0]);
    relay.push("o.example", "t9", &txns[9]);
    node.r.handle_online(node.now);
    let seen = pump(&mut node, std::slice::from_mut(&mut relay));
    assert_eq!(one(seen.delivered).txn_id.expect("txn id").as_str(), "t0");
    assert_eq!(node.r.window_size(), (3, 6));

    // Restoring more than the window forgets the excess first.
    let stored: Vec<Vec<DedupeKey>> = (0..5)
        .map(|n| vec![txn_key("o.example", &format!("x{n}"))])
        .collect();
    let mut r = Retriever::restore(cfg, [0; 32], stored.clone());
    assert_eq!(r.window_size(), (3, 3));
    let first: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    assert_eq!(
        persists(&first)
            .into_iter()
            .map(|(_, c)| c)
            .collect::<Vec<_>>(),
        vec![
            WindowChange::Forget(stored[0].clone()),
            WindowChange::Forget(stored[1].clone())
        ]
    );
}

#[test]
fn poll_timeout_and_early_timeouts() {
    let mut node = Node::new(config(), &["relay.a"]);
    // Output queued: the last now.
    assert_eq!(node.r.poll_timeout(), Some(node.now));
    let (attempt, ..) = one(transmits(&node.drain()));
    assert_eq!(node.r.poll_timeout(), None, "waiting on the answer");
    node.r.handle_response(
        node.now,
        attempt,
        HttpOutcome::ConnectionFailed("refused".into()),
    );
    let outs = node.drain();
    let Event::RelayFailed { retry_at, .. } = one(events(&outs)) else {
        panic!("{outs:?}")
    };
    assert_eq!(node.r.poll_timeout(), Some(retry_at));
    // Early: nothing.
    node.r.handle_timeout(retry_at - Duration::from_millis(1));
    assert!(node.drain().is_empty());
    node.r.handle_timeout(retry_at);
    assert_eq!(one(transmits(&node.drain())).2, 0);
}
