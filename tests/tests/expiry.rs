//! `--max-entry-age`: an entry older than that is never handed out, is
//! swept within seconds and counted; `0` keeps entries for ever. And
//! `queues` shows the age of each destination's oldest entry.

use std::thread;
use std::time::{Duration, Instant};

use relay_tests::prometheus::{sample, scrape};
use relay_tests::*;
use serde_json::Value;

const ALICE: &str = "@alice:dest.example";
const OTHER: &str = "other.example";
const EXPIRED: &str = "matrix_relay_entries_expired_total";

/// `matrix-relay queues` on the relay's database: its lines.
#[track_caller]
fn queues(node: &Node, relay: &RelayProcess) -> Vec<Value> {
    let out = CliCommand::bare(node, "queues")
        .arg("--database")
        .arg(relay.database_url())
        .run();
    out.assert_code(0);
    out.json_lines()
}

/// The `queues` line of `destination`, if listed.
fn line_of(lines: &[Value], destination: &str) -> Option<Value> {
    lines
        .iter()
        .find(|l| l["destination"] == destination)
        .cloned()
}

fn sleep_until(when: Instant) {
    thread::sleep(when.saturating_duration_since(Instant::now()));
}

#[test]
fn an_entry_past_max_entry_age_is_never_handed_out_swept_and_counted() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .metrics()
        .args(["--max-entry-age", "2s"])
        .start();
    let node = Node::new(origin.clone());
    let metrics = relay.metrics_addr();
    assert_eq!(sample(&scrape(metrics), EXPIRED), 0.0);
    store(&relay, &origin, "old", ALICE, "old");
    let stored = Instant::now();

    sleep_until(stored + Duration::from_millis(2500));
    assert_eq!(pull_one(&relay, &dest, ALICE, 0), None);
    // Swept: the usage counters no longer list the destination.
    while line_of(&queues(&node, &relay), DEST_NAME).is_some() {
        assert!(
            stored.elapsed() < Duration::from_secs(10),
            "{DEST_NAME} still queued 10 s after it was stored: {:?}",
            queues(&node, &relay)
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Counted by the relay once its sweep has committed: let it catch up
    // with what another process saw.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sample(&scrape(metrics), EXPIRED) < 1.0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sample(&scrape(metrics), EXPIRED), 1.0);

    // A fresh entry is handed out as usual, and nothing more expired.
    store(&relay, &origin, "new", ALICE, "new");
    let pulled = pull_one(&relay, &dest, ALICE, 0).expect("the fresh entry");
    assert_eq!(pulled.marker(), Some("new"));
    assert_eq!(pull_one(&relay, &dest, ALICE, pulled.entry_id), None);
    let samples = scrape(metrics);
    assert_eq!(sample(&samples, EXPIRED), 1.0);
    assert_eq!(sample(&samples, "matrix_relay_queued_entries"), 0.0);
}

#[test]
fn max_entry_age_zero_never_expires() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .metrics()
        .args(["--max-entry-age", "0"])
        .start();
    store(&relay, &origin, "t", ALICE, "kept");
    thread::sleep(Duration::from_millis(2500));
    let pulled = pull_one(&relay, &dest, ALICE, 0).expect("the entry is kept");
    assert_eq!(pulled.marker(), Some("kept"));
    assert_eq!(sample(&scrape(relay.metrics_addr()), EXPIRED), 0.0);
}

/// `oldest_age_secs` is the age of the destination's oldest entry, in
/// whole seconds, whatever was stored after it.
#[test]
fn queues_shows_the_age_of_the_oldest_entry() {
    let origin = Server::origin_example();
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for(OTHER)
        .trust(&origin)
        .start();
    let node = Node::new(origin.clone());
    store(&relay, &origin, "t0", ALICE, "first");
    thread::sleep(Duration::from_millis(1100));
    store(&relay, &origin, "t1", ALICE, "second");
    store(&relay, &origin, "t2", "@bob:other.example", "fresh");
    let lines = queues(&node, &relay);
    let age = |destination: &str| {
        let line = line_of(&lines, destination)
            .unwrap_or_else(|| panic!("{destination} not listed: {lines:?}"));
        line["oldest_age_secs"]
            .as_u64()
            .unwrap_or_else(|| panic!("no whole oldest_age_secs: {line}"))
    };
    let (oldest, fresh) = (age(DEST_NAME), age(OTHER));
    assert!((1..60).contains(&oldest), "{lines:?}");
    assert!(fresh < oldest, "{lines:?}");
}
