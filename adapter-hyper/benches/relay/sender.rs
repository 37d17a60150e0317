//! The sender's start against its queue: a node's SQLite sender state holds
//! 10 items for 10 destinations, then `BENCH_SENDER_ITEMS` (100,000 unless
//! set) over `BENCH_SENDER_DESTS` (10,000) destinations, each a PDU of the
//! load's size; a fresh process (this benchmark, re-run with
//! `BENCH_SENDER_CHILD`) opens the store, loads it and restores the
//! `Outbound` from it, as a node starts. Printed: that start's time, and the
//! child's peak resident memory (`VmHWM`) once started. `BENCH_SENDER=0`
//! skips it.

use std::process::Command;
use std::time::Instant;

use relay_core::KeyId;
use relay_core::outbound::{Item, ItemId, ItemKind, Outbound, OutboundChange, OutboundConfig};
use relay_core::signing::SigningKey;
use serde_json::json;

use crate::{env_or, name};

/// The environment variable that makes this benchmark a sender child: the
/// SQLite URL of the sender state to start from.
const CHILD: &str = "BENCH_SENDER_CHILD";

/// If this process is a sender child, starts a sender from the store its
/// URL names, prints `<start µs> <peak RSS KiB> <queued items>` and returns
/// `true`.
pub(crate) fn run_child_if_asked() -> bool {
    let Ok(url) = std::env::var(CHILD) else {
        return false;
    };
    let start = Instant::now();
    let store = relay_store::open_outbound(&url).expect("open the sender's store");
    let records = store.load().expect("load");
    let config = OutboundConfig::new(
        name("origin.example"),
        SigningKey::from_seed(KeyId::parse("ed25519:1").expect("key id"), [1; 32]),
    );
    let destinations: Vec<_> = records.iter().map(|r| r.destination.clone()).collect();
    let machine = Outbound::restore(
        config,
        [0; 32],
        relay_core::Instant::now(),
        adapter_http::unix_now(),
        records,
    );
    let micros = start.elapsed().as_micros();
    let queued: usize = destinations.iter().map(|d| machine.queued(d)).sum();
    println!("{micros} {} {queued}", peak_rss_kib());
    true
}

/// This process's peak resident memory, from `/proc/self/status`.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Start time and peak memory at 10 and at `BENCH_SENDER_ITEMS` queued.
pub(crate) fn run(pdu_bytes: usize) {
    let big = (
        env_or("BENCH_SENDER_ITEMS", 100_000),
        env_or("BENCH_SENDER_DESTS", 10_000).max(1),
    );
    let mut rows = Vec::new();
    for (items, dests) in [(10, 10), big] {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("sender.db").display());
        fill(&url, items, dests, pdu_bytes);
        // The best of three starts: the first may pay for a cold page cache.
        let (micros, rss) = (0..3)
            .map(|_| {
                let out = Command::new(std::env::current_exe().expect("this benchmark's path"))
                    .env(CHILD, &url)
                    .output()
                    .expect("start the sender child");
                assert!(out.status.success(), "{out:?}");
                let line = String::from_utf8(out.stdout).expect("utf-8");
                let fields: Vec<u64> = line
                    .split_whitespace()
                    .map(|f| f.parse().expect("a number"))
                    .collect();
                assert_eq!(fields[2], items as u64, "every item restored");
                (fields[0], fields[1])
            })
            .min()
            .expect("three starts");
        rows.push((items, dests, micros, rss));
    }
    println!(
        "== sender start: a process opens its SQLite sender state and restores Outbound ({pdu_bytes}-byte PDUs)"
    );
    println!(
        "{:>10} {:>12} {:>12} {:>14} {:>10}",
        "queued", "destinations", "start", "vs 10 queued", "peak RSS"
    );
    let base = rows[0].2.max(1) as f64;
    for (items, dests, micros, rss) in rows {
        println!(
            "{:>10} {:>12} {:>10.1}ms {:>13.1}x {:>7.1}MiB",
            items,
            dests,
            micros as f64 / 1000.0,
            micros as f64 / base,
            rss as f64 / 1024.0
        );
    }
}

/// Queues `items` PDUs round-robin over `dests` destinations in the sender
/// state at `url`.
fn fill(url: &str, items: usize, dests: usize, pdu_bytes: usize) {
    let store = relay_store::open_outbound(url).expect("open the sender's store");
    let pdu = json!({"type": "m.room.message", "content": {"body": "x".repeat(pdu_bytes)}})
        .to_string()
        .into_bytes();
    let changes: Vec<OutboundChange> = (0..items)
        .map(|i| OutboundChange::Enqueued {
            destination: name(&format!("dest{}.example", i % dests)),
            item: Item {
                id: ItemId(i as u64 + 1),
                kind: ItemKind::Pdu,
                json: pdu.clone(),
            },
        })
        .collect();
    for chunk in changes.chunks(1_000) {
        store.apply(chunk).expect("apply");
    }
}
