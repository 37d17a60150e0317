//! Store-to-application latency through the relay for an online
//! recipient: the destination keeps a long-poll (the batch drain with
//! `timeout_ms`) waiting on one connection; the origin PUTs one
//! transaction on another; the time from the PUT's start to the long-poll's
//! answer carrying it, `BENCH_LATENCY_SAMPLES` times (200 unless set), one
//! at a time. The relay runs in this process on a SQLite file, per runtime.
//! `BENCH_LATENCY=0` skips it.

use std::time::{Duration, Instant};

use relay_core::auth::sign_request;
use serde_json::{Value, json};

use crate::{Client, Server, bench_config, env_or, name, percentile, presign};

/// How long the long-poll's wait between two samples is before the PUT,
/// so that the PUT finds it parked.
const PARK: Duration = Duration::from_millis(10);

/// Latency percentiles per runtime.
pub(crate) fn run(runtimes: &[&str], pdu_bytes: usize) {
    let samples = env_or("BENCH_LATENCY_SAMPLES", 200).max(1);
    let mut rows = Vec::new();
    for runtime in runtimes {
        let (config, origin_key, dest_keys) = bench_config(1);
        let (dest, key) = dest_keys[0].clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("latency.db").display());
        let store = relay_store::open(&url).expect("open SQLite store");
        let server = Server::start(runtime, config, store);
        let addr = server.addr;
        let puts = presign(&origin_key, &dest_keys, (samples, "l"), 1, pdu_bytes);
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("client runtime");
        let (mut delivered, mut stored) = client_rt.block_on(async move {
            let relay = name("relay.example");
            let target = relay_core::request::relay_txns_path(&format!("@u:{dest}"));
            let mut poller = Client::connect(addr).await;
            let mut putter = Client::connect(addr).await;
            let (mut delivered, mut stored) = (Vec::new(), Vec::new());
            let mut acks = Vec::<u64>::new();
            for (put_target, put_auth, put_body) in puts.iter() {
                let body = json!({ "ack": acks, "timeout_ms": 25_000 });
                let auth =
                    sign_request(&key, &dest, &relay, "POST", &target, Some(&body)).expect("sign");
                let target = target.clone();
                let poll = tokio::spawn(async move {
                    let answer = poller
                        .send("POST", &target, &auth, body.to_string().into_bytes())
                        .await;
                    (poller, answer, Instant::now())
                });
                tokio::time::sleep(PARK).await;
                let start = Instant::now();
                let (status, resp) = putter
                    .send("PUT", put_target, put_auth, put_body.clone())
                    .await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
                stored.push(start.elapsed());
                let (client, (status, resp), answered) = poll.await.expect("poll task");
                poller = client;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
                let v: Value = serde_json::from_slice(&resp).expect("json");
                let list = v["transactions"].as_array().expect("transactions");
                assert_eq!(list.len(), 1, "the long-poll carries the one PUT: {v}");
                delivered.push(answered.saturating_duration_since(start));
                acks = vec![list[0]["entry_id"].as_u64().expect("entry_id")];
            }
            (delivered, stored)
        });
        server.stop();
        delivered.sort();
        stored.sort();
        rows.push(((*runtime).to_owned(), delivered, stored));
    }
    println!(
        "== long-poll latency: PUT start to the waiting long-poll's answer, {samples} one at a time"
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10}   {:>12}",
        "runtime", "p50", "p90", "p99", "max", "PUT p50"
    );
    for (runtime, delivered, stored) in rows {
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>10}   {:>12}",
            runtime,
            format!("{:.2?}", percentile(&delivered, 0.5)),
            format!("{:.2?}", percentile(&delivered, 0.9)),
            format!("{:.2?}", percentile(&delivered, 0.99)),
            format!("{:.2?}", delivered.last().copied().unwrap_or_default()),
            format!("{:.2?}", percentile(&stored, 0.5)),
        );
    }
}
