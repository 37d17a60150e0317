//! Two relay processes on one PostgreSQL database: one queue, each
//! transaction delivered exactly once, and a relay killed with SIGKILL
//! loses nothing it answered 200 while the other keeps serving.
//!
//! Needs `$RELAY_TEST_POSTGRES` (`scripts/test` sets it); without it these
//! tests skip loudly, or fail when `$CI` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use relay_store::testing::{TempDatabase, temp_postgres_database};
use relay_tests::api::markers;
use relay_tests::*;

const ALICE: &str = "@alice:dest.example";

/// Two relays named `relay.example` serving `dest.example` from `db`.
fn pair(db: &TempDatabase, trusted: &[&Server]) -> [RelayProcess; 2] {
    let start = || {
        trusted
            .iter()
            .fold(RelayBuilder::new().serve_for(DEST_NAME), |b, s| b.trust(s))
            .database(db.url())
            .start()
    };
    [start(), start()]
}

/// `PUT send_relay/{marker}` with `marker` as the txn ID and PDU marker.
fn put(origin: &Server, addr: SocketAddr, marker: &str) -> Result<HttpResponse, String> {
    let target = send_relay_path(marker, ALICE);
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, marker)).expect("serialise");
    signed_request(origin, RELAY_NAME, "PUT", &target, &body)
        .try_send(addr)
        .map_err(|e| format!("{e:?}"))
}

/// Markers by how often they came back.
fn counts(pulled: &[Pulled]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for m in markers(pulled) {
        *seen.entry(m).or_default() += 1;
    }
    seen
}

/// Each writer's markers (`w{w}-{i:04}`) come back in the order it sent them.
fn assert_writer_order(pulled: &[Pulled], writers: usize) {
    for w in 0..writers {
        let prefix = format!("w{w}-");
        let order: Vec<_> = markers(pulled)
            .into_iter()
            .filter(|m| m.starts_with(&prefix))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "writer {w}'s transactions out of order");
    }
}

/// Drains `dest`'s queue while the writers run, taking turns over `relays`
/// (acknowledging each entry on the relay that comes next), until every one
/// of the `writers` has finished (counted in `done`) and the queue is empty.
fn drain_while_writing(
    relays: &[&RelayProcess],
    dest: &Server,
    done: &Mutex<usize>,
    writers: usize,
) -> Vec<Pulled> {
    let mut got: Vec<Pulled> = Vec::new();
    let mut ack = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for turn in 0.. {
        assert!(Instant::now() < deadline, "draining did not finish");
        let writers_done = *done.lock().expect("lock") == writers;
        match pull_one(relays[turn % relays.len()], dest, ALICE, ack) {
            Some(p) => {
                ack = p.entry_id;
                got.push(p);
            }
            // Empty after everything was sent: all there is.
            None if writers_done => break,
            None => {
                ack = 0;
                thread::sleep(Duration::from_millis(2));
            }
        }
    }
    got
}

/// Retransmissions first: 20 transactions each sent through both relays at
/// the same moment are stored once. Then four senders spread over both
/// relays while the destination drains, alternating between the relays
/// request by request: every transaction arrives exactly once, each
/// sender's in its order.
///
/// Implementation note: retransmissions are idempotent while the first copy
/// is queued, and after its acknowledgement only while the relays remember
/// it (`--acked-retention-secs`, `--acked-max`). They are sent before
/// draining starts, where "exactly once" holds without those bounds.
#[test]
fn two_relays_on_one_database_deliver_each_transaction_once() {
    let Some(db) =
        temp_postgres_database("two_relays_on_one_database_deliver_each_transaction_once")
    else {
        return;
    };
    const WRITERS: usize = 4;
    const EACH: usize = 60;
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relays = pair(&db, &[&origin, &dest]);
    let addrs = [relays[0].addr(), relays[1].addr()];

    thread::scope(|s| {
        for k in 0..20 {
            for addr in addrs {
                let origin = &origin;
                s.spawn(move || {
                    let marker = format!("pre-{k:02}");
                    let resp = put(origin, addr, &marker).expect("relay reachable");
                    assert_eq!(resp.status, 200, "{marker}:\n{resp:?}");
                });
            }
        }
    });

    let done = Mutex::new(0usize);
    let pulled = thread::scope(|s| {
        for w in 0..WRITERS {
            let (origin, done) = (&origin, &done);
            s.spawn(move || {
                for i in 0..EACH {
                    let marker = format!("w{w}-{i:04}");
                    let first = (w + i) % 2;
                    let resp = put(origin, addrs[first], &marker).expect("relay reachable");
                    assert_eq!(resp.status, 200, "{marker}:\n{resp:?}");
                }
                *done.lock().expect("lock") += 1;
            });
        }
        let (relays, dest, done) = (&relays, &dest, &done);
        let drainer =
            s.spawn(move || drain_while_writing(&[&relays[0], &relays[1]], dest, done, WRITERS));
        drainer.join().expect("drainer")
    });

    let seen = counts(&pulled);
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    let want: BTreeSet<String> = (0..WRITERS)
        .flat_map(|w| (0..EACH).map(move |i| format!("w{w}-{i:04}")))
        .chain((0..20).map(|k| format!("pre-{k:02}")))
        .collect();
    let got: BTreeSet<String> = seen.into_keys().collect();
    assert_eq!(got, want, "delivered set");
    assert_writer_order(&pulled, WRITERS);
    for relay in &relays {
        assert!(pull_one(relay, &dest, ALICE, 0).is_none(), "queue empty");
    }
}

/// Writers on both relays; one relay is killed with SIGKILL mid-load.
/// Everything it answered 200 is still there, the other relay keeps
/// answering 200 throughout, and a drain through the survivor hands out
/// every confirmed transaction exactly once.
#[test]
fn sigkill_of_one_relay_loses_nothing_and_the_other_keeps_serving() {
    let Some(db) =
        temp_postgres_database("sigkill_of_one_relay_loses_nothing_and_the_other_keeps_serving")
    else {
        return;
    };
    const WRITERS: usize = 4;
    const MOST: usize = 1000;
    const SURVIVOR_EACH: usize = 150;
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let [mut victim, survivor] = pair(&db, &[&origin, &dest]);
    let addrs = [victim.addr(), survivor.addr()];
    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let victim_confirmed = Arc::new(Mutex::new(0usize));

    // Writers 0 and 1 write to the victim until it dies; 2 and 3 write
    // SURVIVOR_EACH transactions to the survivor, all of which must succeed.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let origin = origin.clone();
            let confirmed = Arc::clone(&confirmed);
            let victim_confirmed = Arc::clone(&victim_confirmed);
            thread::spawn(move || {
                let on_victim = w < 2;
                let mut attempted = BTreeSet::new();
                let n = if on_victim { MOST } else { SURVIVOR_EACH };
                for i in 0..n {
                    let marker = format!("w{w}-{i:04}");
                    attempted.insert(marker.clone());
                    let addr = addrs[usize::from(!on_victim)];
                    match put(&origin, addr, &marker) {
                        Ok(resp) if resp.status == 200 => {
                            confirmed.lock().expect("lock").insert(marker);
                            if on_victim {
                                *victim_confirmed.lock().expect("lock") += 1;
                            } else {
                                // Keep the survivor's load going past the kill.
                                thread::sleep(Duration::from_millis(3));
                            }
                        }
                        Ok(resp) => panic!("{marker}: unexpected answer:\n{resp:?}"),
                        Err(_) if on_victim => break,
                        Err(e) => panic!("{marker}: the surviving relay failed: {e}"),
                    }
                }
                attempted
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while *victim_confirmed.lock().expect("lock") < 60 {
        assert!(Instant::now() < deadline, "the victim stored too little");
        assert!(victim.is_running(), "victim died:\n{}", victim.stderr_log());
        thread::sleep(Duration::from_millis(5));
    }
    victim.kill9();
    let attempted: BTreeSet<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    let confirmed = confirmed.lock().expect("lock").clone();
    assert!(
        attempted.iter().filter(|m| m.starts_with("w0-")).count() < MOST,
        "the victim's writers finished before the kill: the test proved nothing"
    );

    let pulled = drain(&survivor, &dest, ALICE);
    let seen = counts(&pulled);
    eprintln!(
        "{} confirmed, {} attempted, {} delivered through the survivor",
        confirmed.len(),
        attempted.len(),
        pulled.len()
    );
    let lost: Vec<_> = confirmed
        .iter()
        .filter(|m| !seen.contains_key(*m))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered 200 but lost: {lost:?}",
        lost.len()
    );
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    let unknown: Vec<_> = seen.keys().filter(|m| !attempted.contains(*m)).collect();
    assert!(unknown.is_empty(), "never sent: {unknown:?}");
    for w in 2..WRITERS {
        let n = seen
            .keys()
            .filter(|m| m.starts_with(&format!("w{w}-")))
            .count();
        assert_eq!(n, SURVIVOR_EACH, "writer {w} on the survivor");
    }
    assert_writer_order(&pulled, WRITERS);
    // The survivor still takes new transactions.
    store(&survivor, &origin, "after", ALICE, "after");
    assert_eq!(markers(&drain(&survivor, &dest, ALICE)), ["after"]);
}

/// A relay started with `--database-max-connections 2` works under
/// concurrent senders, concurrent reads and a draining destination (every
/// transaction delivered once, in each sender's order) and never holds
/// more than two connections to the database.
#[test]
fn a_relay_with_two_database_connections_serves_concurrent_load() {
    let Some(db) =
        temp_postgres_database("a_relay_with_two_database_connections_serves_concurrent_load")
    else {
        return;
    };
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayBuilder::new()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .database(db.url())
        .args(["--database-max-connections", "2"])
        .start();
    let addr = relay.addr();
    let most = AtomicI64::new(0);
    let stop = AtomicBool::new(false);
    let done = Mutex::new(0usize);
    let pulled = thread::scope(|s| {
        let (most, stop) = (&most, &stop);
        let (url, name) = (db.url().to_owned(), db.name().to_owned());
        let watcher = s.spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = $1 AND application_name = 'matrix-relay'",
                        &[&name],
                    )
                    .expect("count connections")
                    .get(0);
                most.fetch_max(n, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
        });
        for w in 0..WRITERS {
            let (origin, done) = (&origin, &done);
            s.spawn(move || {
                for i in 0..EACH {
                    let marker = format!("w{w}-{i:04}");
                    let resp = put(origin, addr, &marker).expect("relay reachable");
                    assert_eq!(resp.status, 200, "{marker}:\n{resp:?}");
                }
                *done.lock().expect("lock") += 1;
            });
        }
        let (relay, dest, done) = (&relay, &dest, &done);
        // Reads beside the drainer's (no acknowledgement): they want
        // connections of their own.
        for _ in 0..4 {
            s.spawn(move || {
                while *done.lock().expect("lock") < WRITERS {
                    let _ = pull_one(relay, dest, ALICE, 0);
                }
            });
        }
        let drainer = s.spawn(move || drain_while_writing(&[relay], dest, done, WRITERS));
        let got = drainer.join().expect("drainer");
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("watcher");
        got
    });
    let seen = counts(&pulled);
    assert!(
        seen.values().all(|n| *n == 1),
        "delivered more than once: {seen:?}"
    );
    assert_eq!(seen.len(), WRITERS * EACH, "every transaction delivered");
    assert_writer_order(&pulled, WRITERS);
    let most = most.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&most),
        "the relay held {most} connections at once (at most 2 allowed)"
    );
}
