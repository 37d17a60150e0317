//! The batch drain extension (`POST …/unstable/org.matrix_relay/relay_txns/{userID}`)
//! against the binary: the same entries in the same order as `relay_txn`
//! hands out one by one, exact acknowledgement of a set, the caps, and who
//! may ask.

use relay_tests::api::{Pulled, drain, markers, percent_encode, pull_one, store};
use relay_tests::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ALICE: &str = "@alice:dest.example";

/// One batch request as `as_server` with `body`.
fn batch(relay: &RelayProcess, as_server: &Server, body: &Value) -> HttpResponse {
    let target = relay_core::request::relay_txns_path(&percent_encode(ALICE));
    let body = serde_json::to_vec(body).expect("body");
    signed_request(as_server, relay.server_name(), "POST", &target, &body).send(relay.addr())
}

/// A 200 batch answer: its entries, and `entries_queued`.
#[track_caller]
fn entries(resp: &HttpResponse) -> (Vec<Pulled>, bool) {
    let body = resp.ok_json();
    let list = body["transactions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transactions array:\n{resp:?}"));
    let pulled = list
        .iter()
        .map(|e| Pulled {
            entry_id: e["entry_id"].as_u64().expect("entry_id"),
            txn_id: e["txn_id"].as_str().map(str::to_owned),
            transaction: e["transaction"].clone(),
        })
        .collect();
    let more = body["entries_queued"]
        .as_bool()
        .unwrap_or_else(|| panic!("no entries_queued:\n{resp:?}"));
    (pulled, more)
}

fn ids(pulled: &[Pulled]) -> Vec<u64> {
    pulled.iter().map(|p| p.entry_id).collect()
}

fn relay_for(origin: &Server, dest: &Server) -> RelayProcess {
    RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(origin)
        .trust(dest)
        .start()
}

#[test]
fn a_batch_hands_out_what_relay_txn_would_in_order_and_acknowledges_a_set_exactly() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = relay_for(&origin, &dest);
    for i in 0..7 {
        store(&relay, &origin, &format!("t{i}"), ALICE, &format!("m{i}"));
    }
    // Reading acknowledges nothing: relay_txn then sees the same head.
    let (all, more) = entries(&batch(&relay, &dest, &json!({})));
    assert!(!more);
    assert_eq!(
        markers(&all),
        ["m0", "m1", "m2", "m3", "m4", "m5", "m6"],
        "oldest first"
    );
    let head = pull_one(&relay, &dest, ALICE, 0).expect("the head");
    assert_eq!(head.entry_id, all[0].entry_id);
    assert_eq!(head.transaction, all[0].transaction, "the same bytes' JSON");
    assert_eq!(all[0].txn_id.as_deref(), Some("t0"));

    // A set, out of order: exactly those go.
    let set = json!({"ack": [all[4].entry_id, all[1].entry_id, all[0].entry_id], "limit": 2});
    let (two, more) = entries(&batch(&relay, &dest, &set));
    assert_eq!(ids(&two), [all[2].entry_id, all[3].entry_id]);
    assert!(more, "five are left, two handed out");
    // The same set again changes nothing.
    let (again, _) = entries(&batch(&relay, &dest, &set));
    assert_eq!(ids(&again), ids(&two));
    let rest = drain(&relay, &dest, ALICE);
    assert_eq!(markers(&rest), ["m2", "m3", "m5", "m6"]);
    let (none, more) = entries(&batch(&relay, &dest, &json!({})));
    assert!(none.is_empty() && !more);
    // Acknowledged in a batch is delivered: a retransmission is not stored.
    store(&relay, &origin, "t1", ALICE, "m1");
    assert!(pull_one(&relay, &dest, ALICE, 0).is_none());
}

#[test]
fn a_batch_stops_at_its_caps_and_the_relay_bounds_them() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = relay_for(&origin, &dest);
    for i in 0..120 {
        store(&relay, &origin, &format!("t{i}"), ALICE, &format!("m{i}"));
    }
    // The relay hands out at most 100 at once, whatever is asked.
    let (first, more) = entries(&batch(&relay, &dest, &json!({"limit": 1000})));
    assert_eq!((first.len(), more), (100, true));
    // A byte cap: the first always, then as many as fit.
    let one = serde_json::to_vec(&first[0].transaction)
        .expect("json")
        .len() as u64;
    let (capped, more) = entries(&batch(&relay, &dest, &json!({"max_bytes": 1})));
    assert_eq!((capped.len(), more), (1, true));
    let (three, _) = entries(&batch(&relay, &dest, &json!({"max_bytes": 3 * one + 2})));
    assert_eq!(three.len(), 3, "three entries of about {one} bytes");
    // Acknowledging everything handed out drains the queue in two rounds.
    let acks: Vec<u64> = ids(&first);
    let (rest, more) = entries(&batch(&relay, &dest, &json!({"ack": acks})));
    assert_eq!((rest.len(), more), (20, false));
    let (left, more) = entries(&batch(&relay, &dest, &json!({"ack": ids(&rest)})));
    assert!(left.is_empty() && !more);
}

#[test]
fn only_the_destination_may_batch_and_bad_bodies_are_refused() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = relay_for(&origin, &dest);
    store(&relay, &origin, "t0", ALICE, "m0");
    batch(&relay, &origin, &json!({})).assert_error(403, "M_FORBIDDEN");
    for body in [
        json!([]),
        json!({"ack": [0]}),
        json!({"ack": "1"}),
        json!({"limit": -1}),
        json!({"ack": vec![1; 1001]}),
    ] {
        batch(&relay, &dest, &body).assert_error(400, "M_BAD_JSON");
    }
    let target = relay_core::request::relay_txns_path(&percent_encode(ALICE));
    Request::new("POST", &target)
        .body(b"{}".to_vec())
        .send(relay.addr())
        .assert_error(401, "M_UNAUTHORIZED");
    signed_request(&dest, relay.server_name(), "GET", &target, b"")
        .send(relay.addr())
        .assert_error(405, "M_UNRECOGNIZED");
    // Nothing of that acknowledged anything.
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["m0"]);
}

/// A long-poll (`timeout_ms`) sent from another thread: its answer, and
/// how long it took.
fn long_poll_in_background(
    relay: &RelayProcess,
    dest: &Server,
    timeout_ms: u64,
) -> std::thread::JoinHandle<(HttpResponse, Duration)> {
    let target = relay_core::request::relay_txns_path(&percent_encode(ALICE));
    let body = serde_json::to_vec(&json!({ "timeout_ms": timeout_ms })).expect("body");
    let request = signed_request(dest, relay.server_name(), "POST", &target, &body);
    let addr = relay.addr();
    std::thread::spawn(move || {
        let start = Instant::now();
        let resp = request.send(addr);
        (resp, start.elapsed())
    })
}

#[test]
fn a_long_poll_answers_as_soon_as_an_entry_is_stored_and_empty_at_its_timeout() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = relay_for(&origin, &dest);
    let waiting = long_poll_in_background(&relay, &dest, 20_000);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "an empty queue is waited on");
    store(&relay, &origin, "t0", ALICE, "m0");
    let (resp, took) = waiting.join().expect("long-poll thread");
    let (got, _) = entries(&resp);
    assert_eq!(markers(&got), ["m0"]);
    assert!(
        took < Duration::from_secs(10),
        "answered when the entry came, not at the 20 s timeout ({took:?})"
    );
    // Nothing comes: an empty answer at the timeout.
    let (resp, took) = long_poll_in_background(&relay, &dest, 600)
        .join()
        .expect("long-poll thread");
    let (got, _) = entries(&resp);
    assert_eq!(markers(&got), ["m0"], "the unacknowledged entry, at once");
    assert!(took < Duration::from_secs(10));
    let acks: Vec<u64> = ids(&got);
    batch(&relay, &dest, &json!({ "ack": acks })).ok_json();
    let (resp, took) = long_poll_in_background(&relay, &dest, 600)
        .join()
        .expect("long-poll thread");
    let (got, more) = entries(&resp);
    assert!(got.is_empty() && !more);
    assert!(
        took >= Duration::from_millis(600),
        "answered after {took:?}"
    );
}

#[test]
fn shutdown_answers_waiting_long_polls_at_once() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = relay_for(&origin, &dest);
    let waiting = long_poll_in_background(&relay, &dest, 50_000);
    std::thread::sleep(Duration::from_millis(300));
    let stop = Instant::now();
    let status = relay.terminate();
    assert!(status.success(), "{status:?}");
    let (resp, _) = waiting.join().expect("long-poll thread");
    let (got, more) = entries(&resp);
    assert!(got.is_empty() && !more);
    assert!(
        stop.elapsed() < Duration::from_secs(20),
        "the relay waited for its long-poll ({:?})",
        stop.elapsed()
    );
}
