//! A full disk is survivable: on a small filesystem (a tmpfs in a private
//! mount namespace), inserts are refused with 503 `M_LIMIT_EXCEEDED`, never
//! 500; every stored entry can still be fetched and acknowledged until the
//! queue is empty; then inserts succeed again, and the database is intact.
//!
//! SQLite only (PostgreSQL's disk is its server's concern). Needs
//! `unshare` and `mount` (root): without them the tests skip loudly, and
//! fail when `$CI` is set.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use relay_tests::api::markers;
use relay_tests::process::DATABASE_ENV;
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";
/// The filesystem the database lives on.
const TMPFS_SIZE: &str = "16m";
/// Bytes of padding in each transaction's PDU: the disk fills in a few
/// hundred sends.
const PAD: usize = 60_000;
/// More sends than the filesystem can hold.
const MAX_SENDS: usize = 1_000;
/// How long inserts may stay refused once the queue is drained (free
/// space is read at most once a second).
const RECOVERY: Duration = Duration::from_secs(10);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Straight to the file descriptor: the test harness captures `eprintln!`
/// of passing tests, and a skip must be seen.
fn skip(what: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n!!!!! SKIPPED {what}: {why} !!!!!"
    );
}

/// `unshare --mount … sh -c 'mount -t tmpfs … "$0" && exec "$@"' DIR`:
/// the command that runs what follows it with a small tmpfs on `dir`, seen
/// by that process alone.
fn on_tmpfs(dir: &Path) -> Vec<String> {
    vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        format!(r#"mount -t tmpfs -o size={TMPFS_SIZE} tmpfs "$0" && exec "$@""#),
        dir.display().to_string(),
    ]
}

/// Whether a tmpfs can be mounted in a private namespace here; if not,
/// says so loudly (a failure under CI).
fn can_mount(what: &str) -> bool {
    if matches!(
        std::env::var(DATABASE_ENV).as_deref(),
        Ok("postgres" | "postgresql")
    ) {
        skip(
            what,
            "SQLite only (PostgreSQL's disk is its server's concern)",
        );
        return false;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut probe = on_tmpfs(dir.path());
    probe.push("true".into());
    let outcome = Command::new(&probe[0]).args(&probe[1..]).output();
    let why = match outcome {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "cannot mount a tmpfs in a private mount namespace ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run unshare: {e}"),
    };
    assert!(!ci(), "{what}: {why} (CI is set: this test must run)");
    skip(what, &why);
    false
}

/// A relay serving `dest.example` whose SQLite database is on a tmpfs
/// mounted on `mount`, with `flags` (its floor).
fn relay_on_tmpfs(mount: &Path, flags: &[String], origin: &Server, dest: &Server) -> RelayProcess {
    RelayBuilder::new()
        .serve_for(DEST_NAME)
        .trust(origin)
        .trust(dest)
        .database(&format!("sqlite:{}", mount.join("relay.db").display()))
        .args(flags)
        .wrapper(on_tmpfs(mount))
        .start()
}

fn padded(origin: &Server, marker: &str) -> serde_json::Value {
    json!({
        "origin": origin.name(),
        "origin_server_ts": 1_700_000_000_000_u64,
        "pdus": [{"marker": marker, "pad": "x".repeat(PAD)}],
        "edus": [],
    })
}

/// Sends new transactions (numbered from `first`) until the relay refuses;
/// every answer is 200 or 503 `M_LIMIT_EXCEEDED` with `Retry-After`.
/// Returns the markers stored, in order, and the number of refusals.
fn fill(relay: &RelayProcess, origin: &Server, first: usize) -> (Vec<String>, usize) {
    let mut stored = Vec::new();
    let mut refused = 0;
    for i in first..first + MAX_SENDS {
        let marker = format!("m{i:04}");
        let resp = put_txn(
            relay,
            origin,
            &format!("t{i}"),
            ALICE,
            &padded(origin, &marker),
        );
        match resp.status {
            200 => stored.push(marker),
            503 => {
                resp.assert_error(503, "M_LIMIT_EXCEEDED");
                let wait = resp.header("retry-after").unwrap_or_default();
                assert!(
                    wait.parse::<u64>().is_ok_and(|s| s > 0),
                    "Retry-After {wait:?}"
                );
                refused += 1;
                // A few more after the first: none may be a 500.
                if refused == 5 {
                    return (stored, refused);
                }
            }
            _ => panic!("send {i} on a filling disk: {resp:?}"),
        }
    }
    panic!("{MAX_SENDS} sends on a {TMPFS_SIZE} filesystem, {refused} refused");
}

/// Sends a transaction until it is stored, within [`RECOVERY`]; until then
/// it may only be refused with 503.
fn store_when_room(relay: &RelayProcess, origin: &Server, txn: &str, marker: &str) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let resp = put_txn(relay, origin, txn, ALICE, &padded(origin, marker));
        match resp.status {
            200 => return,
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("send {txn} after the queue drained: {resp:?}"),
        }
    }
}

/// `path` (on the tmpfs) as the test sees it: through the relay's mount
/// namespace, `/proc/PID/root`, while it runs.
fn inside(relay: &RelayProcess, path: &Path) -> PathBuf {
    let pid = relay.pid().expect("relay running");
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").expect("absolute path"))
}

/// `PRAGMA integrity_check` of the relay's database, read while it runs.
fn integrity(relay: &RelayProcess, mount: &Path) -> String {
    let path = inside(relay, &mount.join("relay.db"));
    let conn = rusqlite::Connection::open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Fills what is left of the filesystem with a file of its own, as another
/// program would; returns its path.
fn fill_with_a_file(relay: &RelayProcess, mount: &Path) -> PathBuf {
    let path = inside(relay, &mount.join("filler"));
    let mut file = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let chunk = vec![b'f'; 4096];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("writing {}: {e}", path.display()),
        }
    }
    // What a partial write left in the buffer, if anything, has no room.
    let _ = file.sync_all();
    path
}

/// The queue drains whole, in order; then inserts succeed again (within
/// [`RECOVERY`]) and drain too, and the database is intact.
fn drains_then_stores_again(
    relay: &RelayProcess,
    mount: &Path,
    origin: &Server,
    dest: &Server,
    stored: &[String],
    free_space: impl FnOnce(),
) {
    // Reads work on a full disk.
    relay_txn(relay, dest, ALICE, None).ok_json();
    // Every stored entry is handed out once, in order, and acknowledged.
    assert_eq!(markers(&drain(relay, dest, ALICE)), stored);
    assert_eq!(
        relay_txn(relay, dest, ALICE, None).ok_json()["entries_queued"],
        false
    );
    free_space();
    let again: Vec<String> = (0..5).map(|i| format!("again{i}")).collect();
    for (i, m) in again.iter().enumerate() {
        store_when_room(relay, origin, &format!("again{i}"), m);
    }
    assert_eq!(markers(&drain(relay, dest, ALICE)), again);
    assert_eq!(integrity(relay, mount), "ok");
}

#[test]
fn inserts_are_refused_before_the_disk_is_full_and_the_queue_still_drains() {
    let what = "disk_full::floor";
    if !can_mount(what) {
        return;
    }
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mount = tempfile::tempdir().expect("mount point");
    let floor = ["--min-free-disk-bytes".into(), (4u64 << 20).to_string()];
    let relay = relay_on_tmpfs(mount.path(), &floor, &origin, &dest);
    let (stored, _) = fill(&relay, &origin, 0);
    assert!(stored.len() >= 10, "only {} stored", stored.len());
    drains_then_stores_again(&relay, mount.path(), &origin, &dest, &stored, || {});
}

/// Another program takes the last byte of the disk: sends are refused with
/// 503, and acknowledgements, which need room for the WAL, still go
/// through.
#[test]
fn a_disk_filled_by_another_program_still_drains() {
    let what = "disk_full::filled_by_another_program";
    if !can_mount(what) {
        return;
    }
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mount = tempfile::tempdir().expect("mount point");
    // The floor from the configuration file this time.
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(config.path(), "min-free-disk-bytes = 1048576\n").expect("write config");
    let flags = ["--config".into(), config.path().display().to_string()];
    let relay = relay_on_tmpfs(mount.path(), &flags, &origin, &dest);
    let stored: Vec<String> = (0..30).map(|i| format!("m{i:04}")).collect();
    for (i, m) in stored.iter().enumerate() {
        let resp = put_txn(
            &relay,
            &origin,
            &format!("t{i}"),
            ALICE,
            &padded(&origin, m),
        );
        assert_eq!(resp.status, 200, "send {i}: {resp:?}");
    }
    let filler = fill_with_a_file(&relay, mount.path());
    let (more, refused) = fill(&relay, &origin, stored.len());
    assert!(refused > 0);
    let stored = [stored, more].concat();
    drains_then_stores_again(&relay, mount.path(), &origin, &dest, &stored, || {
        std::fs::remove_file(&filler).expect("remove the filler");
    });
}
