//! Fair quotas against the real binary: one origin's share of a
//! destination's queue, entries in all, and bytes counted as what storage
//! costs (with SQLite, `--max-total-bytes` bounds the database's files).
//! Also how the new settings are read from flags and the config file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use relay_tests::api::markers;
use relay_tests::process::relay_binary;
use relay_tests::prometheus::{sample, scrape};
use relay_tests::*;

const ALICE: &str = "@alice:dest.example";
const OTHER: &str = "other.example";

/// A 429 `M_LIMIT_EXCEEDED` whose `error` mentions `says`.
#[track_caller]
fn assert_quota_refusal(resp: &HttpResponse, says: &str) {
    resp.assert_error(429, "M_LIMIT_EXCEEDED");
    let error = resp.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains(says), "expected {says:?} in:\n{resp:?}");
}

/// With a queue of 10 and a share of 50%, origin A fills its 5 places and
/// is refused the 6th (with when to come back), while origin B still
/// stores for that destination and A still stores for another one.
#[test]
fn one_origin_cannot_take_more_than_its_share_of_a_destination_queue() {
    let (a, b) = (Server::named("a.example"), Server::named("b.example"));
    let dest = Server::named(DEST_NAME);
    let other = Server::named(OTHER);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for(OTHER)
        .trust(&a)
        .trust(&b)
        .trust(&dest)
        .trust(&other)
        .args(["--max-queue-entries", "10", "--max-origin-share", "50"])
        .start();
    for i in 0..5 {
        store(&relay, &a, &format!("a{i}"), ALICE, &format!("a{i}"));
    }
    let refused = put_txn(&relay, &a, "a5", ALICE, &txn_body(a.name(), "a5"));
    assert_quota_refusal(&refused, "share");
    // A retransmission of what A has queued is still answered 200.
    put_txn(&relay, &a, "a0", ALICE, &txn_body(a.name(), "a0")).assert_status(200);
    // The share is per destination, and the others' room is kept for them.
    store(&relay, &a, "x0", &other.user("bob"), "x0");
    store(&relay, &b, "b0", ALICE, "b0");
    assert_eq!(
        markers(&drain(&relay, &dest, ALICE)),
        ["a0", "a1", "a2", "a3", "a4", "b0"]
    );
    // Drained, A's share is free again.
    store(&relay, &a, "a6", ALICE, "a6");
    // No wait is named: room comes back only as the destination drains.
    assert!(
        refused.json().get("retry_after_ms").is_none(),
        "a quota refusal names a wait:\n{refused:?}"
    );
}

/// `--max-total-entries 3`: three entries over several destinations fill
/// the relay; a fourth is refused until one is acknowledged.
#[test]
fn the_relay_holds_at_most_max_total_entries() {
    let origin = Server::origin_example();
    let dests: Vec<Server> = (0..4)
        .map(|i| Server::named(&format!("d{i}.example")))
        .collect();
    let relay = dests
        .iter()
        .fold(RelayProcess::builder().open().trust(&origin), |b, d| {
            b.trust(d)
        })
        .args(["--max-total-entries", "3"])
        .start();
    let user = |i: usize| dests[i].user("u");
    for i in 0..3 {
        store(
            &relay,
            &origin,
            &format!("t{i}"),
            &user(i),
            &format!("m{i}"),
        );
    }
    let refused = put_txn(
        &relay,
        &origin,
        "t3",
        &user(3),
        &txn_body(ORIGIN_NAME, "m3"),
    );
    assert_quota_refusal(&refused, "entries");
    assert_eq!(markers(&drain(&relay, &dests[0], &user(0))), ["m0"]);
    store(&relay, &origin, "t3", &user(3), "m3");
    let refused = put_txn(
        &relay,
        &origin,
        "t4",
        &user(0),
        &txn_body(ORIGIN_NAME, "m4"),
    );
    assert_quota_refusal(&refused, "entries");
}

/// The SQLite files that hold `db`: the database, its `-wal` and `-shm`.
fn database_files_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut path = db.as_os_str().to_owned();
            path.push(suffix);
            std::fs::metadata(&path).map_or(0, |m| m.len())
        })
        .sum()
}

/// Every entry costs what storing it costs, keys and indexes included, so
/// entries that are mostly key (a 255-byte txn ID, a fresh destination,
/// a tiny transaction) fill `--max-total-bytes` long before their
/// transactions' bytes would, and the database's files stay within 1.5
/// times the limit plus 2 MiB.
#[test]
fn storage_cost_keeps_the_sqlite_files_within_max_total_bytes() {
    const SENDS: usize = 3000;
    const WORKERS: usize = 4;
    const MAX_TOTAL: u64 = 1_000_000;
    let origin = Server::origin_example();
    let relay = RelayProcess::builder()
        .open()
        .trust(&origin)
        .metrics()
        .args(["--max-total-bytes", &MAX_TOTAL.to_string()])
        .args(["--rate-limit-exempt", "127.0.0.0/8"])
        .start();
    let Some(db) = relay.database_url().strip_prefix("sqlite:") else {
        eprintln!("skipped: the relay is on PostgreSQL, whose files are the server's");
        return;
    };
    let db = Path::new(db).to_owned();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let (stored, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "m")).expect("serialise");
    thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= SENDS {
                        break;
                    }
                    let mut txn_id = format!("{i:05}");
                    txn_id.extend(std::iter::repeat_n('x', 255 - txn_id.len()));
                    let user = format!("@u:d{i:05}.example");
                    let resp = api::put_txn_bytes(&relay, &origin, &txn_id, &user, &body);
                    if resp.status == 200 {
                        stored.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert_quota_refusal(&resp, "full");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let (stored, refused) = (stored.into_inner(), refused.into_inner());
    let files = database_files_bytes(&db);
    eprintln!(
        "{stored} stored, {refused} refused in {:?}; database files {files} bytes",
        started.elapsed()
    );
    assert!(
        refused > 0,
        "all {SENDS} stored: bytes are not counted as storage costs"
    );
    assert!(
        stored >= 300,
        "only {stored} stored: an entry's cost is too high"
    );
    let bound = MAX_TOTAL * 3 / 2 + (2 << 20);
    assert!(files <= bound, "database files {files} bytes > {bound}");
    // The gauges count the same cost: within the limit, and at least the
    // keys and transaction of each entry.
    let samples = scrape(relay.metrics_addr());
    let entries = sample(&samples, "matrix_relay_queued_entries");
    let bytes = sample(&samples, "matrix_relay_queued_bytes");
    assert_eq!(entries, stored as f64);
    assert!(bytes <= MAX_TOTAL as f64, "queued bytes {bytes}");
    let floor = (255 + body.len() + ORIGIN_NAME.len() + "d00000.example".len()) as f64;
    assert!(
        bytes / entries >= floor,
        "an entry costs {} bytes, less than its keys and transaction ({floor})",
        bytes / entries
    );
}

/// Runs `matrix-relay serve` with `args` expecting it to refuse to start;
/// its standard error. Kills it and panics if it starts instead.
#[track_caller]
fn serve_refuses(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(relay_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--server-name",
            RELAY_NAME,
        ])
        .arg("--signing-key")
        .arg(dir.join("k.key"))
        .arg("--database")
        .arg(format!("sqlite:{}", dir.join("relay.db").display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for serve") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} started (or hung) instead of refusing");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "serve {args:?} exited 0:\n{stderr}");
    stderr
}

/// Bad values stop `serve` at start, naming the flag; good ones start it.
#[test]
fn bad_share_or_age_values_stop_serve_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, value) in [
        ("--max-entry-age", "5x"),
        ("--max-origin-share", "0"),
        ("--max-origin-share", "101"),
    ] {
        let stderr = serve_refuses(dir.path(), &[flag, value]);
        assert!(
            stderr.contains(flag) && !stderr.contains("unexpected argument"),
            "{flag} {value}:\n{stderr}"
        );
    }
    for (flag, value) in [
        ("--max-entry-age", "90m"),
        ("--max-entry-age", "30d"),
        ("--max-entry-age", "3600"),
        ("--max-origin-share", "1"),
        ("--max-origin-share", "100"),
    ] {
        drop(RelayProcess::builder().args([flag, value]).start());
    }
}

/// `max-origin-share` and `max-entry-age` in the `--config` file are read
/// as the flags are: a share of 20% of a queue of 10 is 2 entries.
#[test]
fn share_and_age_come_from_the_config_file() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "max-queue-entries = 10\nmax-origin-share = 20\nmax-entry-age = \"12h\"\n",
    )
    .expect("write config");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .arg("--config")
        .arg(config.display().to_string())
        .start();
    store(&relay, &origin, "t0", ALICE, "m0");
    store(&relay, &origin, "t1", ALICE, "m1");
    let refused = put_txn(&relay, &origin, "t2", ALICE, &txn_body(ORIGIN_NAME, "m2"));
    assert_quota_refusal(&refused, "share");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["m0", "m1"]);

    // A bad value in the file is refused too, naming the setting.
    std::fs::write(&config, "max-entry-age = \"5x\"\n").expect("write config");
    let stderr = serve_refuses(dir.path(), &["--config", &config.display().to_string()]);
    assert!(stderr.contains("max-entry-age"), "{stderr}");
}
