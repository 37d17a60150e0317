//! Fetch cost against queue length: one destination's queue holds 1,000
//! entries, then `BENCH_DEPTH_DEEP` (100,000 unless set; `1000000` for the
//! million, whose fill takes minutes), and 1,000 of them are drained over
//! one connection with `relay_txn`, then 1,000 more with the batch drain.
//! The relay runs in this process on a SQLite file, per runtime; the queue
//! is filled through the store (`QueueStore::insert` from 32 threads, so
//! its group commit batches them) before the relay starts.
//! `BENCH_DEPTH=0` skips it.

use std::sync::Arc;
use std::time::Instant;

use relay_core::store::{InsertOutcome, NewEntry, Quota};
use relay_core::{ServerName, TxnId};
use relay_store::QueueStore;
use serde_json::json;

use crate::{Client, Server, bench_config, drain_batch, drain_single, env_or, name};

/// Entries drained by each of the two ways, at each depth.
const DRAINED: usize = 1_000;

/// Threads filling the queue.
const FILLERS: usize = 32;

/// Drain rates at 1,000 and at `BENCH_DEPTH_DEEP` queued, per runtime.
pub(crate) fn run(runtimes: &[&str], pdu_bytes: usize) {
    let deep = env_or("BENCH_DEPTH_DEEP", 100_000);
    let mut rows = Vec::new();
    for runtime in runtimes {
        for depth in [1_000, deep] {
            let (config, _, dest_keys) = bench_config(1);
            let (dest, key) = dest_keys[0].clone();
            let dir = tempfile::tempdir().expect("tempdir");
            let options = relay_store::OpenOptions {
                wal_bytes: relay_store::wal_bytes_for(config.quota.total_bytes),
                ..relay_store::OpenOptions::default()
            };
            let url = format!("sqlite:{}", dir.path().join("depth.db").display());
            let store = relay_store::open_with(&url, &options).expect("open SQLite store");
            let start = Instant::now();
            fill(&store, &dest, depth + 2 * DRAINED, pdu_bytes);
            println!(
                "== depth on {runtime}: {} entries queued for one destination in {:.1?}",
                depth + 2 * DRAINED,
                start.elapsed()
            );
            let server = Server::start(runtime, config, store);
            let client_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("client runtime");
            let relay = name("relay.example");
            let (single, batch) = client_rt.block_on(async {
                let mut client = Client::connect(server.addr).await;
                let start = Instant::now();
                let got = drain_single(&mut client, &relay, &dest, &key, DRAINED).await;
                assert_eq!(got, DRAINED);
                let single = got as f64 / start.elapsed().as_secs_f64();
                let start = Instant::now();
                let got = drain_batch(&mut client, &relay, &dest, &key, DRAINED).await;
                assert!(got >= DRAINED, "{got} entries drained");
                (single, got as f64 / start.elapsed().as_secs_f64())
            });
            server.stop();
            rows.push(((*runtime).to_owned(), depth, single, batch));
        }
    }
    println!("== depth: {DRAINED} entries drained over one connection from a queue of n");
    println!(
        "{:<8} {:>10} {:>14} {:>14} {:>22}",
        "runtime", "queued n", "relay_txn/s", "batch/s", "vs 1,000 (txn; batch)"
    );
    for row in &rows {
        let (runtime, depth, single, batch) = row;
        let shallow = rows
            .iter()
            .find(|r| r.0 == *runtime && r.1 == 1_000)
            .expect("the 1,000 row");
        println!(
            "{:<8} {:>10} {:>14.0} {:>14.0} {:>12.2}x; {:.2}x",
            runtime,
            depth,
            single,
            batch,
            single / shallow.2,
            batch / shallow.3
        );
    }
}

/// Queues `n` entries of one `pdu_bytes` PDU each for `dest`, all durable
/// when it returns.
fn fill(store: &Arc<dyn QueueStore>, dest: &ServerName, n: usize, pdu_bytes: usize) {
    // One origin may hold the whole queue here: the quotas are not measured.
    let quota = Quota {
        destination_entries: u64::MAX,
        destination_bytes: u64::MAX,
        origin_share_percent: 100,
        origin_entries: u64::MAX,
        origin_bytes: u64::MAX,
        total_entries: u64::MAX,
        total_bytes: u64::MAX,
        ..Quota::default()
    };
    let pdu = json!({"type": "m.room.message", "content": {"body": "x".repeat(pdu_bytes)}});
    let origin = name("origin.example");
    std::thread::scope(|scope| {
        for filler in 0..FILLERS {
            let (pdu, origin) = (&pdu, &origin);
            scope.spawn(move || {
                for i in (filler..n).step_by(FILLERS) {
                    let transaction = json!({
                        "origin": "origin.example",
                        "origin_server_ts": i,
                        "pdus": [pdu],
                        "edus": [],
                    });
                    let entry = NewEntry {
                        origin: origin.clone(),
                        destination: dest.clone(),
                        txn_id: TxnId::parse(&format!("f{i}")).expect("txn id"),
                        transaction: serde_json::to_vec(&transaction).expect("json"),
                        received: adapter_http::unix_now(),
                    };
                    let outcome = store.insert(entry, &quota).expect("insert");
                    assert!(matches!(outcome, InsertOutcome::Stored(_)), "{outcome:?}");
                }
            });
        }
    });
}
