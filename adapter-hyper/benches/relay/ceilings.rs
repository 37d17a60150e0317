//! The relay's durable ingest against two reference servers built here,
//! which do the checks a `send_relay` needs and nothing else:
//!
//! - ceiling A: a 4 MiB body limit, the JSON parse, and the X-Matrix check
//!   (header parse, canonical JSON of the signed object, ed25519 against a
//!   pinned key), then 200; nothing stored;
//! - ceiling B: the same, then the body into one SQLite table (WAL,
//!   `synchronous=FULL`, as the relay's store) by one writer thread that
//!   commits whatever has arrived as one transaction (group commit), and
//!   200 once that commit is durable.
//!
//! Each server, and the relay on a SQLite file as `matrix-relay serve`
//! opens it, runs in a child process pinned to core 0; the load (PUTs of 5
//! PDUs x 1 KiB signed before the clock starts, 16 keep-alive connections)
//! runs in this process on the last core. `BENCH_CEILINGS=0` skips it;
//! `BENCH_CEILINGS_TXNS` and `BENCH_CEILINGS_CONNS` set the load.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use relay_core::auth::{KeyRing, parse_authorization, resolve_key, verify_signature};
use relay_core::{ServerName, UnixMillis};
use serde_json::Value;

use crate::cores::{self, Relay, cpu_secs, pin_to};
use crate::{bench_config, env_or, presign, put_all};

/// The environment variable that makes this benchmark a reference server
/// child: `none` (ceiling A) or `sqlite` (ceiling B).
const CHILD: &str = "BENCH_REFERENCE_CHILD";

/// Destinations the load is spread over.
const DESTS: usize = 16;

/// The most a body may be, as the relay's default.
const MAX_BODY: usize = 4 << 20;

/// If this process is a reference server child, serves until standard
/// input closes and returns `true`.
pub(crate) fn run_child_if_asked() -> bool {
    let Ok(kind) = std::env::var(CHILD) else {
        return false;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let table = match kind.as_str() {
        "none" => None,
        "sqlite" => Some(spawn_writer(&dir.path().join("reference.db"))),
        other => panic!("{CHILD}={other:?}: expected none or sqlite"),
    };
    let (config, _, _) = bench_config(DESTS);
    let checks = Arc::new(Checks {
        relay: config.server_name.clone(),
        keys: config.keys.clone(),
        table,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(serve(checks));
    true
}

/// What a reference server checks against, and where it stores.
struct Checks {
    relay: ServerName,
    keys: KeyRing,
    table: Option<std::sync::mpsc::Sender<Row>>,
}

/// One body for the writer thread, answered once its commit is durable.
struct Row {
    destination: String,
    origin: String,
    txn_id: String,
    body: Bytes,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Serves on 127.0.0.1:0, printing the address, until standard input closes.
async fn serve(checks: Arc<Checks>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    let _ = std::io::stdout().flush();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_line(&mut String::new());
        let _ = stop.send(());
    });
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.expect("accept"),
            _ = &mut stopped => return,
        };
        stream.set_nodelay(true).expect("nodelay");
        let checks = checks.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(checks.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(status: StatusCode, body: &'static str) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    Ok(response)
}

/// A `send_relay` PUT: checked as the relay checks it, stored if there is
/// a table.
async fn handle(
    checks: Arc<Checks>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let bad = |body| answer(StatusCode::BAD_REQUEST, body);
    let uri = req.uri().to_string();
    let Some(rest) = uri.strip_prefix("/_matrix/federation/v1/send_relay/") else {
        return answer(StatusCode::NOT_FOUND, r#"{"errcode":"M_UNRECOGNIZED"}"#);
    };
    let Some((txn_id, user)) = rest.split_once('/') else {
        return bad(r#"{"errcode":"M_INVALID_PARAM"}"#);
    };
    let Some((_, destination)) = user.split_once(':') else {
        return bad(r#"{"errcode":"M_INVALID_PARAM"}"#);
    };
    let authorization = req
        .headers()
        .get_all("authorization")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Ok(claimed) = parse_authorization(authorization, &checks.relay) else {
        return answer(StatusCode::UNAUTHORIZED, r#"{"errcode":"M_UNAUTHORIZED"}"#);
    };
    let Ok(key) = resolve_key(&claimed, &checks.keys, UnixMillis(0)) else {
        return answer(StatusCode::UNAUTHORIZED, r#"{"errcode":"M_UNAUTHORIZED"}"#);
    };
    let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"errcode":"M_TOO_LARGE"}"#,
        );
    };
    let body = body.to_bytes();
    let Ok(content) = serde_json::from_slice::<Value>(&body) else {
        return bad(r#"{"errcode":"M_NOT_JSON"}"#);
    };
    if !content.is_object() {
        return bad(r#"{"errcode":"M_BAD_JSON"}"#);
    }
    if verify_signature(&claimed, &key, &checks.relay, "PUT", &uri, Some(&content)).is_err() {
        return answer(StatusCode::UNAUTHORIZED, r#"{"errcode":"M_UNAUTHORIZED"}"#);
    }
    if let Some(table) = &checks.table {
        let (done, stored) = tokio::sync::oneshot::channel();
        let row = Row {
            destination: destination.to_owned(),
            origin: claimed.origin.as_str().to_owned(),
            txn_id: txn_id.to_owned(),
            body,
            done,
        };
        if table.send(row).is_err() || stored.await.is_err() {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"errcode":"M_UNKNOWN"}"#,
            );
        }
    }
    answer(StatusCode::OK, "{}")
}

/// Starts the writer thread of ceiling B on a new SQLite file at `path`.
fn spawn_writer(path: &Path) -> std::sync::mpsc::Sender<Row> {
    let mut conn = rusqlite::Connection::open(path).expect("open SQLite");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .expect("WAL");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous=FULL");
    conn.execute_batch(
        "CREATE TABLE queue (id INTEGER PRIMARY KEY, destination TEXT NOT NULL, \
         origin TEXT NOT NULL, txn_id TEXT NOT NULL, body BLOB NOT NULL)",
    )
    .expect("create table");
    let (rows, arrived) = std::sync::mpsc::channel::<Row>();
    std::thread::spawn(move || {
        while let Ok(first) = arrived.recv() {
            let mut batch = vec![first];
            batch.extend(arrived.try_iter().take(1023));
            let tx = conn.transaction().expect("begin");
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO queue (destination, origin, txn_id, body) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .expect("prepare");
                for row in &batch {
                    insert
                        .execute((&row.destination, &row.origin, &row.txn_id, &row.body[..]))
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
            for row in batch {
                let _ = row.done.send(());
            }
        }
    });
    rows
}

/// Ingest of the relay on SQLite (per runtime) and of both reference
/// servers, all on core 0 with the same load, and the two ratios.
pub(crate) fn run(runtimes: &[&str]) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        println!("== ceilings: skipped, this machine has {cpus} core");
        return;
    }
    let txns = env_or("BENCH_CEILINGS_TXNS", 20_000);
    let conns = env_or("BENCH_CEILINGS_CONNS", 16);
    let (_, origin_key, dest_keys) = bench_config(DESTS);
    let rate = |env: &[(&str, &str)], client_rt: &tokio::runtime::Runtime| {
        let puts = presign(&origin_key, &dest_keys, (txns, "t"), 5, 1024);
        let server = Relay::start("0", env);
        let pid = server.child.id().to_string();
        let before = cpu_secs(&pid);
        let start = Instant::now();
        client_rt.block_on(put_all(server.addr, conns, puts));
        let secs = start.elapsed().as_secs_f64();
        let busy = (cpu_secs(&pid) - before) / secs;
        server.stop();
        (txns as f64 / secs, busy)
    };
    let (a, b, relays) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_to(cpus - 1);
                let client_rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("client runtime");
                let a = rate(&[(CHILD, "none")], &client_rt);
                let b = rate(&[(CHILD, "sqlite")], &client_rt);
                let relays: Vec<(String, (f64, f64))> = runtimes
                    .iter()
                    .map(|runtime| {
                        let env = [(cores::CHILD, *runtime), (cores::CHILD_SQLITE, "1")];
                        ((*runtime).to_owned(), rate(&env, &client_rt))
                    })
                    .collect();
                (a, b, relays)
            })
            .join()
            .expect("load thread")
    });
    println!(
        "== ceilings: durable ingest on one core, {txns} PUTs of 5 x 1 KiB PDUs over {conns} connections"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>12} {:>12}",
        "server", "stored/s", "core busy", "vs ceiling B", "vs ceiling A"
    );
    println!(
        "{:<36} {:>10.0} {:>10.2}",
        "ceiling A: checks, no storage", a.0, a.1
    );
    println!(
        "{:<36} {:>10.0} {:>10.2} {:>12} {:>11.2}x",
        "ceiling B: checks, one-table SQLite",
        b.0,
        b.1,
        "",
        b.0 / a.0
    );
    for (runtime, (per_sec, busy)) in relays {
        println!(
            "{:<36} {:>10.0} {:>10.2} {:>11.2}x {:>11.2}x",
            format!("relay on {runtime}, SQLite"),
            per_sec,
            busy,
            per_sec / b.0,
            per_sec / a.0
        );
    }
}
