//! Load benchmark of the relay over real sockets and a real store: stored
//! transactions per second, then fetch+ack per second; then long-poll
//! latency ([`latency`]), fetch cost against queue length ([`depth`]), the
//! sender's start against its queue ([`sender`]), ingest on one core against
//! two ([`cores`]) and against two reference servers ([`ceilings`]), each
//! skipped when its `BENCH_<PART>` is `0`.
//!
//! `cargo bench -p adapter-hyper --bench relay` (settings through env:
//! `BENCH_TXNS`, `BENCH_CONNS`, `BENCH_DESTS`, `BENCH_PDU_BYTES`, and
//! `BENCH_RUNTIME`: a comma-separated list of `tokio` (the default) and
//! `smol`, the runtime the relay runs on (the load always runs on tokio).
//! `BENCH_STORE`: a comma-separated list of `sqlite` (the default, a real
//! file), `postgres` (a fresh database on the server `$RELAY_TEST_POSTGRES`
//! names) and `memory` (storage out of the measurement). Each store is
//! measured in turn with the same load, and with more than one a table puts
//! the figures side by side, e.g. `BENCH_STORE=sqlite,postgres`.
//! `BENCH_STORE=` (empty) skips the first part.
//! `BENCH_ACKED_RETENTION_SECS`: how long acknowledged keys are remembered
//! (`--acked-retention-secs`; default as the relay's, 0 to measure without).
//! `BENCH_STORAGE_THREADS`: the threads of the relay's storage pool
//! (default `adapter_http::DEFAULT_STORAGE_THREADS`).
//!
//! Implementation note: the relay runs in this process on its own tokio
//! runtime; the load runs on a second runtime. PUTs are signed before the
//! clock starts, so the store phase measures the relay (verification,
//! storage, HTTP), not the client's signing. Fetch+ack requests depend on the
//! previous answer, so they are signed on the fly, and that figure includes
//! the client's signing (~30 µs per request).

mod ceilings;
mod cores;
mod depth;
mod latency;
mod sender;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_http::{Listen, Shutdown};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use relay_core::auth::{KeyRing, sign_request};
use relay_core::relay::{RateLimits, RelayConfig, ServePolicy};
use relay_core::signing::SigningKey;
use relay_core::{KeyId, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether the part the environment variable `var` names runs: unless it
/// is `0`.
fn enabled(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| v != "0")
}

fn name(s: &str) -> ServerName {
    ServerName::parse(s).expect("valid server name")
}

struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    async fn send(
        &mut self,
        method: &str,
        target: &str,
        auth: &str,
        body: Vec<u8>,
    ) -> (u16, Bytes) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header("host", "relay.example")
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        self.sender.ready().await.expect("ready");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, body)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// The load, the same for every store.
#[derive(Clone, Copy)]
struct Load {
    txns: usize,
    conns: usize,
    dests: usize,
    pdu_bytes: usize,
}

/// What one store achieved.
struct Figures {
    store: String,
    runtime: String,
    stored_per_sec: f64,
    p50: Duration,
    p99: Duration,
    fetched_per_sec: f64,
    single_drain_per_sec: f64,
    batch_drain_per_sec: f64,
}

/// The relay under test, on its own thread and runtime.
struct Server {
    addr: SocketAddr,
    stop: async_channel::Sender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serves `config` on `store` on 127.0.0.1:0 with `runtime` (`tokio` or
    /// `smol`).
    fn start(runtime: &str, config: RelayConfig, store: Arc<dyn relay_store::QueueStore>) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread = match runtime {
            "tokio" => std::thread::spawn(move || {
                adapter_hyper::block_on(|rt| serve_on(rt, config, store, addr_tx, stopped))?
            }),
            "smol" => std::thread::spawn(move || {
                adapter_smol::block_on(|rt| serve_on(rt, config, store, addr_tx, stopped))?
            }),
            other => panic!("BENCH_RUNTIME={other:?}: expected tokio or smol"),
        };
        let addr = addr_rx.recv().expect("the relay started");
        Self { addr, stop, thread }
    }

    fn stop(self) {
        self.stop.close();
        self.thread.join().expect("join").expect("serve");
    }
}

async fn serve_on<R: adapter_hyper::Runtime>(
    rt: R,
    config: RelayConfig,
    store: Arc<dyn relay_store::QueueStore>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    stopped: async_channel::Receiver<()>,
) -> std::io::Result<()> {
    let listener = rt.bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let _ = addr_tx.send(R::local_addr(&listener)?);
    let mut options = adapter_http::ServeOptions::new(Listen::Bound(listener), config, store);
    options.storage_threads = env_or(
        "BENCH_STORAGE_THREADS",
        adapter_http::DEFAULT_STORAGE_THREADS,
    );
    options.shutdown = Shutdown::On(Box::pin(async move {
        let _ = stopped.recv().await;
    }));
    adapter_http::run(rt, options, |_| {}).await
}

fn main() {
    if cores::run_child_if_asked() || ceilings::run_child_if_asked() || sender::run_child_if_asked()
    {
        return;
    }
    let load = Load {
        txns: env_or("BENCH_TXNS", 20_000),
        conns: env_or("BENCH_CONNS", 64),
        dests: env_or("BENCH_DESTS", 64).max(1),
        pdu_bytes: env_or("BENCH_PDU_BYTES", 1_000),
    };
    let kinds = std::env::var("BENCH_STORE").unwrap_or_else(|_| "sqlite".into());
    let runtimes = std::env::var("BENCH_RUNTIME").unwrap_or_else(|_| "tokio".into());
    let mut results = Vec::new();
    let runtimes: Vec<&str> = runtimes
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let kinds: Vec<&str> = kinds
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    for (runtime, kind) in runtimes
        .iter()
        .flat_map(|r| kinds.iter().map(move |k| (*r, *k)))
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pg = None;
        let store: Arc<dyn relay_store::QueueStore> = match kind {
            "memory" => Arc::new(relay_store::MemoryStore::new()),
            "sqlite" => {
                relay_store::open(&format!("sqlite:{}", dir.path().join("bench.db").display()))
                    .expect("open SQLite store")
            }
            "postgres" | "postgresql" => {
                let Some(db) =
                    relay_store::testing::temp_postgres_database("bench BENCH_STORE=postgres")
                else {
                    continue;
                };
                let store = relay_store::open(db.url()).expect("open PostgreSQL store");
                pg = Some(db);
                store
            }
            other => panic!("BENCH_STORE={other:?}: expected memory, sqlite or postgres"),
        };
        println!("== {kind} on {runtime}");
        results.push(run(kind, runtime, store, load));
        // After the relay (and its store) stopped.
        drop(pg);
    }
    if results.len() > 1 {
        println!();
        println!(
            "{:<8} {:<10} {:>12} {:>10} {:>10} {:>16} {:>12} {:>12}",
            "runtime",
            "store",
            "stored/s",
            "p50",
            "p99",
            "fetched+acked/s",
            "1-conn txn/s",
            "1-conn batch/s"
        );
        for f in &results {
            println!(
                "{:<8} {:<10} {:>12.0} {:>10} {:>10} {:>16.0} {:>12.0} {:>12.0}",
                f.runtime,
                f.store,
                f.stored_per_sec,
                format!("{:.2?}", f.p50),
                format!("{:.2?}", f.p99),
                f.fetched_per_sec,
                f.single_drain_per_sec,
                f.batch_drain_per_sec
            );
        }
    }
    if enabled("BENCH_LATENCY") {
        latency::run(&runtimes, load.pdu_bytes);
    }
    if enabled("BENCH_DEPTH") {
        depth::run(&runtimes, load.pdu_bytes);
    }
    if enabled("BENCH_SENDER") {
        sender::run(load.pdu_bytes);
    }
    if enabled("BENCH_CORES") {
        cores::run(&runtimes);
    }
    if enabled("BENCH_CEILINGS") {
        ceilings::run(&runtimes);
    }
}

/// The relay's configuration for `dests` destinations, all serving keys
/// pinned: the origin's signing key and each destination's name and key.
/// Deterministic, so a relay in a child process gets the same.
fn bench_config(dests: usize) -> (RelayConfig, SigningKey, Vec<(ServerName, SigningKey)>) {
    let origin_key = SigningKey::from_seed(KeyId::parse("ed25519:1").expect("key id"), [1; 32]);
    let dest_keys: Vec<(ServerName, SigningKey)> = (0..dests)
        .map(|i| {
            let key = SigningKey::from_seed(
                KeyId::parse("ed25519:d").expect("key id"),
                [i as u8 + 2; 32],
            );
            (name(&format!("dest{i}.example")), key)
        })
        .collect();
    let mut ring = KeyRing::default();
    ring.pin(
        name("origin.example"),
        origin_key.key_id().clone(),
        origin_key.verify_key(),
    );
    for (server, key) in &dest_keys {
        ring.pin(server.clone(), key.key_id().clone(), key.verify_key());
    }
    let mut config = RelayConfig::new(
        name("relay.example"),
        SigningKey::from_seed(KeyId::parse("ed25519:r").expect("key id"), [0; 32]),
    );
    config.serve = ServePolicy::Open;
    config.keys = ring;
    // Throughput is measured: every client is one address, and must not
    // be held to a node's request rate.
    config.limits = RateLimits::none();
    if let Ok(secs) = std::env::var("BENCH_ACKED_RETENTION_SECS") {
        let secs: u64 = secs.parse().expect("BENCH_ACKED_RETENTION_SECS: seconds");
        config.quota.acked.retention_ms = secs.saturating_mul(1000);
    }

    (config, origin_key, dest_keys)
}

/// Stores `load.txns` transactions into a relay on `store`, then drains them.
fn run(kind: &str, runtime: &str, store: Arc<dyn relay_store::QueueStore>, load: Load) -> Figures {
    let Load {
        txns,
        conns,
        dests,
        pdu_bytes,
    } = load;
    let (config, origin_key, dest_keys) = bench_config(dests);
    let server = Server::start(runtime, config, store);
    let addr = server.addr;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    let puts = presign(&origin_key, &dest_keys, (txns, "t"), 1, pdu_bytes);
    let start = Instant::now();
    let mut latencies = client_rt.block_on(put_all(addr, conns, puts));
    let store_secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "store:     {txns} transactions ({pdu_bytes}-byte PDU) over {conns} connections to {dests} destinations: \
         {:.0} stored/s (p50 {p50:?}, p99 {p99:?})",
        txns as f64 / store_secs,
    );

    let relay = name("relay.example");
    let start = Instant::now();
    let fetched: usize = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for (dest, key) in dest_keys.clone() {
            let relay = relay.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                drain_single(&mut client, &relay, &dest, &key, usize::MAX).await
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        total
    });
    let fetch_secs = start.elapsed().as_secs_f64();
    assert_eq!(fetched, txns, "every stored transaction is fetched once");
    println!(
        "fetch+ack: {fetched} entries by {dests} destinations draining concurrently: {:.0} fetched+acked/s",
        fetched as f64 / fetch_secs
    );

    let drains = client_rt.block_on(one_connection_drains(
        addr,
        &origin_key,
        &dest_keys[0],
        load,
    ));
    println!(
        "drain over one connection, {} entries: relay_txn {:.0}/s, batch drain {:.0}/s ({:.1}x)",
        env_or("BENCH_DRAIN_TXNS", 5_000),
        drains.0,
        drains.1,
        drains.1 / drains.0
    );

    server.stop();
    Figures {
        store: kind.to_owned(),
        runtime: runtime.to_owned(),
        stored_per_sec: txns as f64 / store_secs,
        p50,
        p99,
        fetched_per_sec: fetched as f64 / fetch_secs,
        single_drain_per_sec: drains.0,
        batch_drain_per_sec: drains.1,
    }
}

/// Queues `BENCH_DRAIN_TXNS` entries for one destination and drains them
/// over one connection with `relay_txn`, then as many again with the batch
/// drain; entries per second of each.
async fn one_connection_drains(
    addr: SocketAddr,
    origin_key: &SigningKey,
    (dest, key): &(ServerName, SigningKey),
    load: Load,
) -> (f64, f64) {
    let n = env_or("BENCH_DRAIN_TXNS", 5_000);
    let relay = name("relay.example");
    let one = [(dest.clone(), key.clone())];
    let mut rates = [0.0; 2];
    for (round, rate) in rates.iter_mut().enumerate() {
        let prefix = format!("d{round}-");
        put_all(
            addr,
            load.conns,
            presign(origin_key, &one, (n, &prefix), 1, load.pdu_bytes),
        )
        .await;
        let mut client = Client::connect(addr).await;
        let start = Instant::now();
        let got = if round == 0 {
            drain_single(&mut client, &relay, dest, key, n).await
        } else {
            drain_batch(&mut client, &relay, dest, key, n).await
        };
        *rate = got as f64 / start.elapsed().as_secs_f64();
        assert_eq!(got, n, "every queued entry drained once");
    }
    (rates[0], rates[1])
}

/// Drains `dest`'s queue with `relay_txn`, one entry a round trip, until
/// it is empty or `max` entries were fetched; how many were.
async fn drain_single(
    client: &mut Client,
    relay: &ServerName,
    dest: &ServerName,
    key: &SigningKey,
    max: usize,
) -> usize {
    let target = format!("/_matrix/federation/v1/relay_txn/@u:{dest}");
    let (mut entry_id, mut got) = (0u64, 0);
    loop {
        let body = json!({ "entry_id": entry_id });
        let auth = sign_request(key, dest, relay, "GET", &target, Some(&body)).expect("sign");
        let (status, resp) = client
            .send("GET", &target, &auth, body.to_string().into_bytes())
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
        let v: Value = serde_json::from_slice(&resp).expect("json");
        if v["entries_queued"] != true {
            return got;
        }
        got += 1;
        if got == max {
            return got;
        }
        entry_id = v["entry_id"].as_u64().expect("entry_id");
    }
}

/// Drains `dest`'s queue with the batch drain, acknowledging each batch
/// with the next request, until it is empty or at least `max` entries were
/// fetched; how many were.
async fn drain_batch(
    client: &mut Client,
    relay: &ServerName,
    dest: &ServerName,
    key: &SigningKey,
    max: usize,
) -> usize {
    let target = relay_core::request::relay_txns_path(&format!("@u:{dest}"));
    let (mut acks, mut got) = (Vec::<u64>::new(), 0);
    loop {
        let body = json!({ "ack": acks });
        let auth = sign_request(key, dest, relay, "POST", &target, Some(&body)).expect("sign");
        let (status, resp) = client
            .send("POST", &target, &auth, body.to_string().into_bytes())
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
        let v: Value = serde_json::from_slice(&resp).expect("json");
        let list = v["transactions"].as_array().expect("transactions");
        got += list.len();
        if list.is_empty() || got >= max {
            return got;
        }
        acks = list
            .iter()
            .map(|e| e["entry_id"].as_u64().expect("entry_id"))
            .collect();
    }
}

/// `txns` PUTs of `pdus` PDUs of about `pdu_bytes` each, round-robin over
/// `dest_keys`, signed by `origin.example` with `origin_key`; txn IDs
/// `{prefix}{i}`.
fn presign(
    origin_key: &SigningKey,
    dest_keys: &[(ServerName, SigningKey)],
    (txns, prefix): (usize, &str),
    pdus: usize,
    pdu_bytes: usize,
) -> Arc<Vec<(String, String, Vec<u8>)>> {
    let relay = name("relay.example");
    let origin = name("origin.example");
    let pdu = json!({"type": "m.room.message", "content": {"body": "x".repeat(pdu_bytes)}});
    let pdus: Vec<Value> = (0..pdus).map(|_| pdu.clone()).collect();
    Arc::new(
        (0..txns)
            .map(|i| {
                let (dest, _) = &dest_keys[i % dest_keys.len()];
                let target = format!("/_matrix/federation/v1/send_relay/{prefix}{i}/@u:{dest}");
                let body = json!({"origin": "origin.example", "origin_server_ts": i, "pdus": pdus, "edus": []});
                let auth = sign_request(origin_key, &origin, &relay, "PUT", &target, Some(&body))
                    .expect("sign");
                (target, auth, body.to_string().into_bytes())
            })
            .collect(),
    )
}

/// Sends every PUT of `puts` over `conns` keep-alive connections to
/// `addr`, each expecting 200; the latency of each.
async fn put_all(
    addr: SocketAddr,
    conns: usize,
    puts: Arc<Vec<(String, String, Vec<u8>)>>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let puts = puts.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let mut lat = Vec::new();
            for (target, auth, body) in puts.iter().skip(c).step_by(conns) {
                let t = Instant::now();
                let (status, body) = client.send("PUT", target, auth, body.clone()).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all
}
