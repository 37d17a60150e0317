//! Many clients at once: every transaction is stored and handed out exactly
//! once, each writer's transactions oldest first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use relay_tests::api::markers;
use relay_tests::*;

/// Transactions each writer sends.
const PER_WRITER: usize = 50;

const DESTS: [&str; 4] = ["d0.example", "d1.example", "d2.example", "d3.example"];

fn relay_for(origins: &[Server], dests: &[Server]) -> RelayProcess {
    // Every writer and reader is one address, far past one node's rate.
    let mut b = RelayProcess::builder().args(["--rate-limit-exempt", "127.0.0.1"]);
    for d in dests {
        b = b.serve_for(d.name()).trust(d);
    }
    for o in origins {
        b = b.trust(o);
    }
    b.start()
}

/// Checks that `pulled` (one destination's drain) holds each of `expected`
/// exactly once and that each writer's transactions keep their order.
fn check_exactly_once(dest: &str, pulled: &[Pulled], expected: &BTreeSet<String>) {
    let got = markers(pulled);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &got {
        *count.entry(m).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{dest}: handed out more than once: {dups:?}"
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|m| !count.contains_key(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{dest}: {} lost: {missing:?}",
        missing.len()
    );
    let extra: Vec<_> = count.keys().filter(|m| !expected.contains(**m)).collect();
    assert!(extra.is_empty(), "{dest}: unexpected: {extra:?}");
    // Marker "t{thread:02}-{seq:03}": per thread, the sequence must rise.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for m in &got {
        let (thread, seq) = m.split_once('-').expect("marker format");
        if let Some(prev) = last.insert(thread, seq) {
            assert!(
                prev < seq,
                "{dest}: {thread}-{seq} handed out after {thread}-{prev}"
            );
        }
    }
}

#[test]
fn sixteen_writers_to_four_destinations_exactly_once() {
    let origins: Vec<Server> = (0..4)
        .map(|i| Server::named(&format!("o{i}.example")))
        .collect();
    let dests: Vec<Server> = DESTS.iter().map(|d| Server::named(d)).collect();
    let relay = relay_for(&origins, &dests);
    let addr = relay.addr();
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let origin = origins[t % 4].clone();
            thread::spawn(move || {
                let mut sent: Vec<(usize, String)> = Vec::new();
                for seq in 0..PER_WRITER {
                    let d = (t + seq) % 4;
                    let marker = format!("t{t:02}-{seq:03}");
                    let target = send_relay_path(&marker, &format!("@u{seq}:{}", DESTS[d]));
                    let body =
                        serde_json::to_vec(&txn_body(origin.name(), &marker)).expect("serialise");
                    let resp =
                        signed_request(&origin, RELAY_NAME, "PUT", &target, &body).send(addr);
                    assert_eq!(resp.status, 200, "{marker} to {}:\n{resp:?}", DESTS[d]);
                    sent.push((d, marker));
                }
                sent
            })
        })
        .collect();
    let mut expected: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 4];
    for h in handles {
        for (d, marker) in h.join().expect("writer thread") {
            expected[d].insert(marker);
        }
    }
    assert_eq!(
        expected.iter().map(BTreeSet::len).sum::<usize>(),
        16 * PER_WRITER
    );
    // The four destinations drain at the same time.
    let relay = &relay;
    thread::scope(|scope| {
        for (d, dest) in dests.iter().enumerate() {
            let expected = &expected[d];
            let origins = &origins;
            scope.spawn(move || {
                let pulled = drain(relay, dest, &dest.user("me"));
                check_exactly_once(dest.name(), &pulled, expected);
                // The origin of each is its authenticated sender.
                for p in &pulled {
                    let t: usize = p
                        .marker()
                        .and_then(|m| m[1..3].parse().ok())
                        .expect("thread number");
                    assert_eq!(p.origin(), origins[t % 4].name());
                }
            });
        }
    });
}

/// A destination drains while writers still write: exact acks must not
/// lose entries committed out of id order.
#[test]
fn draining_while_writers_write_loses_nothing() {
    let origins: Vec<Server> = (0..4)
        .map(|i| Server::named(&format!("o{i}.example")))
        .collect();
    let dest = Server::named(DESTS[0]);
    let relay = relay_for(&origins, std::slice::from_ref(&dest));
    let addr = relay.addr();
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let origin = origins[t % 4].clone();
            thread::spawn(move || {
                let mut sent = Vec::new();
                for seq in 0..PER_WRITER {
                    let marker = format!("t{t:02}-{seq:03}");
                    let target = send_relay_path(&marker, &format!("@u:{}", DESTS[0]));
                    let body =
                        serde_json::to_vec(&txn_body(origin.name(), &marker)).expect("serialise");
                    let resp =
                        signed_request(&origin, RELAY_NAME, "PUT", &target, &body).send(addr);
                    assert_eq!(resp.status, 200, "{marker}:\n{resp:?}");
                    sent.push(marker);
                }
                sent
            })
        })
        .collect();
    let reader = {
        let dest = dest.clone();
        let writing = Arc::clone(&writing);
        thread::spawn(move || {
            let mut got: Vec<Pulled> = Vec::new();
            let mut ack = 0;
            loop {
                let still_writing = writing.load(Ordering::SeqCst);
                let resp = relay_txn(&relay, &dest, &dest.user("me"), Some(ack));
                let body = resp.ok_json();
                if body["entries_queued"] == true {
                    let p = Pulled {
                        entry_id: body["entry_id"].as_u64().expect("entry_id"),
                        txn_id: body["txn_id"].as_str().map(str::to_owned),
                        transaction: body["transaction"].clone(),
                    };
                    ack = p.entry_id;
                    got.push(p);
                } else if !still_writing {
                    // Empty after every writer finished: done.
                    return (relay, got);
                } else {
                    thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        })
    };
    let mut expected = BTreeSet::new();
    for w in writers {
        expected.extend(w.join().expect("writer thread"));
    }
    writing.store(false, Ordering::SeqCst);
    let (_relay, got) = reader.join().expect("reader thread");
    assert_eq!(expected.len(), 8 * PER_WRITER);
    check_exactly_once(DESTS[0], &got, &expected);
}

/// More requests at once than the relay's driver queues (256): their
/// connections wait for room, storage results still come back (they have
/// a queue of their own), and every request is answered and stored.
#[test]
fn more_requests_at_once_than_the_driver_queues_are_all_answered() {
    const CLIENTS: usize = 320;
    let origin = Server::named("o0.example");
    let dest = Server::named(DESTS[0]);
    // Every client is on one address: past the default per-address cap.
    let relay = RelayProcess::builder()
        .serve_for(dest.name())
        .trust(&dest)
        .trust(&origin)
        .args(["--max-connections-per-ip", "1000"])
        .start();
    let addr = relay.addr();
    let start = Arc::new(std::sync::Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let marker = format!("c{i:03}-000");
            let target = send_relay_path(&marker, &dest.user("me"));
            let body = serde_json::to_vec(&txn_body(origin.name(), &marker)).expect("serialise");
            let request = signed_request(&origin, RELAY_NAME, "PUT", &target, &body);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let resp = request.send(addr);
                assert_eq!(resp.status, 200, "{marker}:\n{resp:?}");
                marker
            })
        })
        .collect();
    let expected: BTreeSet<String> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let pulled = drain(&relay, &dest, &dest.user("me"));
    check_exactly_once(dest.name(), &pulled, &expected);
}
