//! The batch drain extension (`POST …/unstable/org.matrix_relay/relay_txns/{userID}`)
//! against the binary: the same entries in the same order as `relay_txn`
//! hands out one by one, exact acknowledgement of a set, the caps, and who
//! may ask.

use relay_tests::api::{Pulled, drain, markers, percent_encode, pull_one, store};
use relay_tests::http::RawOutcome;
use relay_tests::prometheus::{sample, scrape};
use relay_tests::*;
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Reads what the relay sends on `stream` until it closes it (waiting up
/// to 30 s, past the long-polls' 20 s): the response, or `None` if
/// nothing came.
fn read_until_closed(mut stream: TcpStream) -> Option<HttpResponse> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut received = Vec::new();
    let timed_out = match stream.read_to_end(&mut received) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    };
    assert!(!timed_out, "the relay neither answered nor closed");
    let outcome = RawOutcome {
        received,
        timed_out,
        write_error: None,
    };
    outcome
        .response()
        .map(|r| r.unwrap_or_else(|e| panic!("not a response: {e}")))
}

/// Asserts `resp` is the canned refusal of a connection past
/// `--max-connections-per-ip`.
#[track_caller]
fn assert_refused_per_address(resp: &HttpResponse) {
    resp.assert_error(503, "M_LIMIT_EXCEEDED");
    let body = resp.json();
    assert_eq!(
        (&body["error"], &body["retry_after_ms"]),
        (
            &json!("too many connections are open from your address"),
            &json!(5000)
        ),
        "{resp:?}"
    );
    assert_eq!(resp.header("retry-after"), Some("5"), "{resp:?}");
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
}

#[test]
fn long_polls_fill_the_per_address_cap_and_one_entry_answers_them_all() {
    const CAP: usize = 128;
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .arg("--max-connections-per-ip")
        .arg(CAP.to_string())
        .metrics()
        .start();
    let addr = relay.addr();
    let target = relay_core::request::relay_txns_path(&percent_encode(ALICE));
    let body = serde_json::to_vec(&json!({ "timeout_ms": 20_000 })).expect("body");
    let long_poll = signed_request(&dest, relay.server_name(), "POST", &target, &body).to_bytes();
    // All connected before the one past the cap: the relay accepts in
    // order, so it has counted them all when that one comes.
    let streams: Vec<TcpStream> = (0..CAP)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let stored = Arc::new(AtomicBool::new(false));
    let polls: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let (bytes, stored) = (long_poll.clone(), stored.clone());
            std::thread::spawn(move || {
                stream.write_all(&bytes).expect("send the long-poll");
                let resp = read_until_closed(stream).expect("an answer to the long-poll");
                (resp, stored.load(Ordering::SeqCst), Instant::now())
            })
        })
        .collect();
    // One more from the same address is refused as any past the cap
    // (nothing sent: an unread request could turn the close into a reset).
    let refused = TcpStream::connect(addr).expect("connect");
    assert_refused_per_address(&read_until_closed(refused).expect("a 503 before the close"));

    // Every long-poll found the queue empty and waits.
    let waiting = || {
        sample(
            &scrape(relay.metrics_addr()),
            "matrix_relay_long_polls_waiting",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting() < CAP as f64 {
        assert!(
            Instant::now() < deadline,
            "{} of {CAP} long-polls wait",
            waiting()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The entry comes from another address: 127.0.0.1 has no room left.
    stored.store(true, Ordering::SeqCst);
    let stored_at = Instant::now();
    let txn = serde_json::to_vec(&txn_body(ORIGIN_NAME, "m0")).expect("txn");
    let put = signed_request(
        &origin,
        relay.server_name(),
        "PUT",
        &send_relay_path("t0", ALICE),
        &txn,
    )
    .send_from(Ipv4Addr::new(127, 0, 0, 2), addr);
    assert_eq!((put.status, put.json()), (200, json!({})), "{put:?}");

    // Every waiting long-poll is woken and fetches again, without
    // acknowledging anything: each is handed the same entry.
    let mut handed_out = std::collections::BTreeSet::new();
    for poll in polls {
        let (resp, after_store, answered_at) = poll.join().expect("long-poll thread");
        assert!(
            after_store,
            "answered before the entry was stored:\n{resp:?}"
        );
        let (got, more) = entries(&resp);
        assert_eq!((markers(&got), more), (vec!["m0".to_owned()], false));
        handed_out.insert(got[0].entry_id);
        let took = answered_at.saturating_duration_since(stored_at);
        assert!(
            took < Duration::from_secs(10),
            "answered when the entry came, not at the 20 s timeout ({took:?} after it)"
        );
    }
    assert_eq!(handed_out.len(), 1, "one entry: {handed_out:?}");
    assert_eq!(waiting(), 0.0, "none waits once answered");

    // Answered, their connections are closed and counted out (once the
    // relay has seen each close): 127.0.0.1 gets in again, and the entry
    // is still queued.
    let drain_again = signed_request(&dest, relay.server_name(), "POST", &target, b"{}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        match drain_again.try_send(addr) {
            Ok(resp) if resp.status != 503 => break resp,
            Ok(resp) => assert_refused_per_address(&resp),
            // A refused connection reset before its 503 arrived.
            Err(e) => assert!(e.nothing_received(), "{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1 still refused after its long-polls were answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (got, more) = entries(&resp);
    assert_eq!(ids(&got), Vec::from_iter(handed_out));
    assert!(!more);
}
