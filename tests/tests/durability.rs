//! "200 is returned only after the transaction is durably stored: a crash of
//! any kind after the 200 loses nothing" (PROTOCOL §2), with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use relay_tests::api::markers;
use relay_tests::http::Request;
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";
/// Most transactions each writer of the kill test tries (it is killed long before).
const PER_WRITER: usize = 1000;

#[test]
fn sigkill_right_after_the_last_200_loses_nothing() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    let expected: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    for (i, m) in expected.iter().enumerate() {
        store(&relay, &origin, &format!("t{i}"), ALICE, m);
    }
    relay.kill9();
    relay.restart();
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), expected);
}

#[test]
fn acknowledged_entries_stay_gone_after_sigkill() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    for i in 0..20 {
        store(
            &relay,
            &origin,
            &format!("t{i}"),
            ALICE,
            &format!("m{i:02}"),
        );
    }
    // Acknowledge m00..m07; the answer to the last ack carries m08.
    let mut ack = 0;
    for i in 0..=8 {
        let p = pull_one(&relay, &dest, ALICE, ack).expect("entry");
        assert_eq!(p.marker(), Some(format!("m{i:02}").as_str()));
        ack = p.entry_id;
    }
    relay.kill9();
    relay.restart();
    let expected: Vec<String> = (8..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), expected);
}

#[test]
fn idempotency_survives_sigkill() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "t1", ALICE, "one");
    store(&relay, &origin, "t2", ALICE, "two");
    relay.kill9();
    relay.restart();
    // The sender never saw the 200 for t2 and sends it again.
    store(&relay, &origin, "t2", ALICE, "two");
    store(&relay, &origin, "t3", ALICE, "three");
    assert_eq!(
        markers(&drain(&relay, &dest, ALICE)),
        ["one", "two", "three"]
    );
}

/// Writers keep storing while the relay is killed: every transaction that
/// got its 200 must be there after the restart, exactly once, and nothing
/// that was never sent.
#[test]
fn sigkill_during_concurrent_writes_keeps_every_acknowledged_store() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    let addr = relay.addr();
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let origin = origin.clone();
            let confirmed = Arc::clone(&confirmed);
            thread::spawn(move || {
                let mut attempted = BTreeSet::new();
                for i in 0..PER_WRITER {
                    let marker = format!("w{w}-{i:04}");
                    let target = relay_tests::send_relay_path(&marker, ALICE);
                    let body =
                        serde_json::to_vec(&txn_body(ORIGIN_NAME, &marker)).expect("serialise");
                    attempted.insert(marker.clone());
                    match signed_request(&origin, RELAY_NAME, "PUT", &target, &body).try_send(addr)
                    {
                        Ok(resp) if resp.status == 200 => {
                            confirmed.lock().expect("lock").insert(marker);
                        }
                        Ok(resp) => {
                            panic!("{marker}: unexpected answer before the kill:\n{resp:?}")
                        }
                        // The relay is gone.
                        Err(_) => break,
                    }
                }
                attempted
            })
        })
        .collect();
    // Let some stores land, then kill in the middle of the stream.
    while confirmed.lock().expect("lock").len() < 100 {
        thread::sleep(Duration::from_millis(5));
        assert!(
            relay.is_running(),
            "relay died on its own:\n{}",
            relay.stderr_log()
        );
    }
    relay.kill9();
    let attempted: BTreeSet<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    let confirmed = confirmed.lock().expect("lock").clone();
    assert!(
        attempted.len() < 4 * PER_WRITER,
        "every writer finished before the kill: the test proved nothing"
    );
    relay.restart();
    let pulled = drain(&relay, &dest, ALICE);
    eprintln!(
        "killed with {} confirmed, {} attempted; {} came back",
        confirmed.len(),
        attempted.len(),
        pulled.len()
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in markers(&pulled) {
        *seen.entry(m).or_default() += 1;
    }
    let lost: Vec<_> = confirmed
        .iter()
        .filter(|m| !seen.contains_key(*m))
        .collect();
    assert!(
        lost.is_empty(),
        "{} transactions answered 200 were lost: {lost:?}",
        lost.len()
    );
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "stored more than once: {dups:?}");
    let unknown: Vec<_> = seen.keys().filter(|m| !attempted.contains(*m)).collect();
    assert!(unknown.is_empty(), "never sent: {unknown:?}");
    // Each writer's confirmed transactions come back in its order.
    for w in 0..4 {
        let prefix = format!("w{w}-");
        let order: Vec<_> = markers(&pulled)
            .into_iter()
            .filter(|m| m.starts_with(&prefix))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "writer {w}'s transactions out of order");
    }
    // The restarted relay is healthy.
    let resp = Request::new("GET", "/_matrix/federation/v1/version").send(relay.addr());
    resp.assert_status(200);
    store(&relay, &origin, "after", ALICE, "after");
    assert_eq!(
        drain(&relay, &dest, ALICE)
            .iter()
            .map(|p| p.transaction["pdus"].clone())
            .collect::<Vec<_>>(),
        [json!([{"marker": "after"}])]
    );
}
