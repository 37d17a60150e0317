//! Ingest on one core against two: does request work spread over cores?
//!
//! The relay runs in a child process (this benchmark, re-run with
//! `BENCH_CORES_CHILD=<runtime>`) pinned with `taskset` to core 0, then to
//! cores 0 and 1, on a memory store so that verification and HTTP dominate.
//! The load runs in this process pinned to the last core, from PUTs signed
//! before the clock starts: 5 PDUs of 1 KiB each over 16 keep-alive
//! connections. With two cores the load shares the relay's second core, so
//! the ratio is a lower bound of what two free cores give.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use adapter_http::{Listen, Shutdown};

use crate::{bench_config, env_or, presign, put_all};

/// The environment variable that makes this benchmark a relay child.
pub(crate) const CHILD: &str = "BENCH_CORES_CHILD";

/// Set (to anything) beside [`CHILD`]: the child stores in a SQLite file of
/// a temporary directory, opened as `matrix-relay serve` opens it by
/// default, instead of in memory.
pub(crate) const CHILD_SQLITE: &str = "BENCH_CORES_CHILD_SQLITE";

/// Destinations the load is spread over.
const DESTS: usize = 16;

/// If this process is a relay child, serves until standard input closes
/// and returns `true`.
pub(crate) fn run_child_if_asked() -> bool {
    let Ok(runtime) = std::env::var(CHILD) else {
        return false;
    };
    let (config, _, _) = bench_config(DESTS);
    let dir = tempfile::tempdir().expect("tempdir");
    let store: std::sync::Arc<dyn relay_store::QueueStore> =
        if std::env::var_os(CHILD_SQLITE).is_some() {
            let options = relay_store::OpenOptions {
                wal_bytes: relay_store::wal_bytes_for(config.quota.total_bytes),
                ..relay_store::OpenOptions::default()
            };
            let url = format!("sqlite:{}", dir.path().join("relay.db").display());
            relay_store::open_with(&url, &options).expect("open SQLite store")
        } else {
            std::sync::Arc::new(relay_store::MemoryStore::new())
        };
    let serve = |addr_out: SocketAddr| {
        println!("{addr_out}");
        let _ = std::io::stdout().flush();
    };
    let result = match runtime.as_str() {
        "tokio" => adapter_hyper::block_on(|rt| child_serve(rt, config, store, serve)),
        "smol" => adapter_smol::block_on(|rt| child_serve(rt, config, store, serve)),
        other => panic!("{CHILD}={other:?}: expected tokio or smol"),
    };
    result.expect("runtime").expect("serve");
    true
}

async fn child_serve<R: adapter_hyper::Runtime>(
    rt: R,
    config: relay_core::relay::RelayConfig,
    store: std::sync::Arc<dyn relay_store::QueueStore>,
    on_listening: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let mut options = adapter_http::ServeOptions::new(
        Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 0))),
        config,
        store,
    );
    // The parent closes standard input to stop the relay.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_line(&mut String::new());
        stop.close();
    });
    options.shutdown = Shutdown::On(Box::pin(async move {
        let _ = stopped.recv().await;
    }));
    adapter_http::run(rt, options, on_listening).await
}

/// A server child (this benchmark, re-run with `env`) pinned to `cpus` (a
/// `taskset` list); it prints its address, and stops when its standard
/// input closes.
pub(crate) struct Relay {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Relay {
    pub(crate) fn start(cpus: &str, env: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().expect("this benchmark's path");
        let mut child = Command::new("taskset")
            .args(["-c", cpus])
            .arg(exe)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the relay child with taskset");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("the child's address");
        let addr = line.trim().parse().expect("an address");
        Self { child, addr }
    }

    pub(crate) fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// CPU time (user and system) process `pid` has used, from
/// `/proc/<pid>/stat`; `"self"` is this process.
pub(crate) fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0);
    ticks / rustix::param::clock_ticks_per_second() as f64
}

/// Pins this thread (and the threads it starts from now on) to `cpu`.
pub(crate) fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Measures ingest on 1 and 2 cores for each runtime and prints the ratio.
pub(crate) fn run(runtimes: &[&str]) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        println!("== cores: skipped, this machine has {cpus} core");
        return;
    }
    let txns = env_or("BENCH_CORES_TXNS", 20_000);
    let conns = env_or("BENCH_CORES_CONNS", 16);
    let (_, origin_key, dest_keys) = bench_config(DESTS);
    let rows: Vec<(String, Rate, Rate)> = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_to(cpus - 1);
                let client_rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("client runtime");
                let mut rows = Vec::new();
                for runtime in runtimes {
                    let rate = |cores: &str| {
                        let puts = presign(&origin_key, &dest_keys, (txns, "t"), 5, 1024);
                        let relay = Relay::start(cores, &[(CHILD, runtime)]);
                        let pid = relay.child.id().to_string();
                        let (relay_cpu, load_cpu) = (cpu_secs(&pid), cpu_secs("self"));
                        let start = Instant::now();
                        client_rt.block_on(put_all(relay.addr, conns, puts));
                        let secs = start.elapsed().as_secs_f64();
                        let rate = Rate {
                            per_sec: txns as f64 / secs,
                            relay_cores: (cpu_secs(&pid) - relay_cpu) / secs,
                            load_cores: (cpu_secs("self") - load_cpu) / secs,
                        };
                        relay.stop();
                        rate
                    };
                    let one = rate("0");
                    let two = rate(&format!("0,{}", cpus - 1));
                    rows.push(((*runtime).to_owned(), one, two));
                }
                rows
            })
            .join()
            .expect("load thread")
    });
    println!(
        "== cores: ingest on a memory store, {txns} PUTs of 5 x 1 KiB PDUs over {conns} connections"
    );
    println!(
        "{:<8} {:>12} {:>12} {:>7}   {:>22} {:>22}",
        "runtime",
        "1 core /s",
        "2 cores /s",
        "ratio",
        "cores busy: relay/load",
        "(1 core; 2 cores)"
    );
    for (runtime, one, two) in rows {
        println!(
            "{:<8} {:>12.0} {:>12.0} {:>6.2}x   {:>10.2} / {:<9.2} {:>10.2} / {:.2}",
            runtime,
            one.per_sec,
            two.per_sec,
            two.per_sec / one.per_sec,
            one.relay_cores,
            one.load_cores,
            two.relay_cores,
            two.load_cores,
        );
    }
}

/// One measurement: transactions stored per second, and how many cores
/// the relay and the load kept busy meanwhile.
struct Rate {
    per_sec: f64,
    relay_cores: f64,
    load_cores: f64,
}
