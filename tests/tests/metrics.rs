//! `serve --metrics-listen`: Prometheus metrics on a listener of their own.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use relay_tests::http::HttpResponse;
use relay_tests::prometheus::{sample, scrape};
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";

/// `GET path` on the metrics listener.
fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    Request::new("GET", path).send(addr)
}

fn requests(endpoint: &str, status: u16) -> String {
    format!(r#"matrix_relay_requests_total{{endpoint="{endpoint}",status="{status}"}}"#)
}

fn duration_count(endpoint: &str) -> String {
    format!(r#"matrix_relay_request_duration_seconds_count{{endpoint="{endpoint}"}}"#)
}

/// The TCP ports `pid` listens on (Linux: its socket inodes matched
/// against `/proc/net/tcp{,6}` rows in state LISTEN).
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the relay's fds")
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            // local_address is col 1 (HEXIP:HEXPORT), st col 3, inode col 9.
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().expect("port");
                ports.insert(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}

#[test]
fn metrics_count_requests_transactions_and_the_queue() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .metrics()
        .start();
    let metrics = relay.metrics_addr();
    assert_ne!(metrics, relay.addr());
    assert_eq!(
        relay.stdout_lines(),
        [format!("listening on http://{}", relay.addr())],
        "stdout is the one `listening on` line"
    );

    let before = scrape(metrics);
    assert_eq!(sample(&before, "matrix_relay_queued_entries"), 0.0);
    assert_eq!(sample(&before, "matrix_relay_queued_bytes"), 0.0);
    assert_eq!(
        sample(&before, "matrix_relay_transactions_stored_total"),
        0.0
    );

    let body = txn_body(ORIGIN_NAME, "m1");
    put_txn(&relay, &origin, "t1", ALICE, &body).assert_status(200);
    // A retransmission is answered 200 and stored once.
    put_txn(&relay, &origin, "t1", ALICE, &body).assert_status(200);
    // The origin may not read the destination's queue.
    relay_txn(&relay, &origin, ALICE, None).assert_status(403);

    let stored = scrape(metrics);
    assert_eq!(sample(&stored, &requests("send_relay", 200)), 2.0);
    assert_eq!(sample(&stored, &requests("relay_txn", 403)), 1.0);
    assert_eq!(
        sample(&stored, "matrix_relay_transactions_stored_total"),
        1.0
    );
    assert_eq!(
        sample(&stored, "matrix_relay_duplicates_answered_total"),
        1.0
    );
    assert_eq!(sample(&stored, "matrix_relay_acknowledgements_total"), 0.0);
    assert_eq!(sample(&stored, "matrix_relay_queued_entries"), 1.0);
    let bytes = sample(&stored, "matrix_relay_queued_bytes");
    assert!(bytes > 0.0, "queued bytes {bytes}");
    assert_eq!(sample(&stored, &duration_count("send_relay")), 2.0);

    // The destination takes the entry, then acknowledges it.
    let first = relay_txn(&relay, &dest, ALICE, None).ok_json();
    let entry = first["entry_id"].as_u64().expect("entry_id");
    let done = relay_txn(&relay, &dest, ALICE, Some(entry)).ok_json();
    assert_eq!(done["entries_queued"], json!(false));
    // The same acknowledgement again (its answer got lost): nothing deleted,
    // nothing counted.
    let again = relay_txn(&relay, &dest, ALICE, Some(entry)).ok_json();
    assert_eq!(again["entries_queued"], json!(false));

    let acked = scrape(metrics);
    assert_eq!(sample(&acked, &requests("relay_txn", 200)), 3.0);
    assert_eq!(sample(&acked, &requests("relay_txn", 403)), 1.0);
    assert_eq!(sample(&acked, "matrix_relay_acknowledgements_total"), 1.0);
    assert_eq!(
        sample(&acked, "matrix_relay_transactions_stored_total"),
        1.0
    );
    assert_eq!(sample(&acked, "matrix_relay_queued_entries"), 0.0);
    assert_eq!(sample(&acked, "matrix_relay_queued_bytes"), 0.0);
    assert_eq!(sample(&acked, &duration_count("relay_txn")), 4.0);

    // Metrics are not on the federation port, and nothing else is on theirs.
    get(relay.addr(), "/metrics").assert_status(404);
    assert_eq!(sample(&scrape(metrics), &requests("other", 404)), 1.0);
    get(metrics, "/").assert_status(404);
    get(metrics, "/_matrix/federation/v1/version").assert_status(404);
    get(metrics, "/metrics/x").assert_status(404);
}

#[test]
fn without_the_flag_no_metrics_port_is_opened() {
    let mut with = RelayProcess::builder().metrics().start();
    let ports = listening_ports(with.pid().expect("running"));
    assert_eq!(
        ports,
        BTreeSet::from([with.addr().port(), with.metrics_addr().port()]),
        "with --metrics-listen: the federation and the metrics port"
    );
    // Both listeners stop on SIGTERM, and the relay exits cleanly.
    let metrics = with.metrics_addr();
    assert_eq!(with.terminate().code(), Some(0), "{}", with.stderr_log());
    assert!(
        Request::new("GET", "/metrics").try_send(metrics).is_err(),
        "metrics still served after exit"
    );

    let without = RelayProcess::builder().start();
    assert_eq!(
        listening_ports(without.pid().expect("running")),
        BTreeSet::from([without.addr().port()]),
        "without --metrics-listen: the federation port only"
    );
    assert!(
        !without.stderr_log().contains("serving metrics"),
        "{}",
        without.stderr_log()
    );
}

#[test]
fn metrics_listen_can_come_from_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "metrics-listen = \"127.0.0.1:0\"\n").expect("write config");
    let relay = RelayProcess::builder()
        .arg("--config")
        .arg(config.to_str().expect("UTF-8 path"))
        .start();
    let samples = scrape(relay.metrics_addr());
    assert_eq!(sample(&samples, "matrix_relay_queued_entries"), 0.0);
}

/// `GET /health` on the metrics listener: 200 while the store answers, 503
/// while it does not, 200 again once it does.
#[test]
fn health_follows_the_store() {
    let dir = tempfile::tempdir().expect("a directory");
    let db = dir.path().join("relay.db");
    let relay = RelayProcess::builder()
        .database(&format!("sqlite:{}", db.display()))
        .metrics()
        .start();
    let metrics = relay.metrics_addr();
    let health = get(metrics, "/health");
    health.assert_status(200);
    assert_eq!(health.text(), "ok\n");
    let post = Request::new("POST", "/health").send(metrics);
    post.assert_status(405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // HEAD, as load balancers send it: the status, no body.
    let head = Request::new("HEAD", "/health").send(metrics);
    head.assert_status(200);
    assert!(head.body.is_empty(), "{head:?}");

    // The usage counters the check reads go away, then come back.
    let rename = |from: &str, to: &str| {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}")))
            .expect("rename a table under the relay");
    };
    rename("total_usage", "total_usage_gone");
    get(metrics, "/health").assert_status(503);
    rename("total_usage_gone", "total_usage");
    get(metrics, "/health").assert_status(200);
}
