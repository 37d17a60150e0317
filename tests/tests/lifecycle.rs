//! The process: its `listening on` line, graceful shutdown on SIGTERM and
//! SIGINT (exit 0, requests in flight finish), `--help`, `keygen`.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use relay_core::signing::SigningKey;
use relay_tests::api::{markers, send_relay_path};
use relay_tests::process::{describe_exit, relay_binary};
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";

#[test]
fn prints_the_exact_listening_line() {
    let relay = RelayProcess::builder().start();
    let expected = format!("listening on http://127.0.0.1:{}", relay.addr().port());
    assert_ne!(relay.addr().port(), 0, "the real port, not 0");
    let lines = relay.stdout_lines();
    assert!(
        lines.iter().any(|l| l == &expected),
        "stdout has no line exactly {expected:?}: {lines:?}"
    );
    // It really listens there.
    TcpStream::connect(relay.addr()).expect("connect to the printed address");
}

#[test]
fn sigterm_exits_zero_and_stops_listening() {
    let origin = Server::origin_example();
    let mut relay = RelayProcess::standard(&[&origin]);
    store(&relay, &origin, "t1", ALICE, "x");
    let addr = relay.addr();
    let status = relay.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM: {}", describe_exit(status));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "still accepting after exit"
    );
}

/// "Once it accepts connections it prints `listening on …`"; from then on a
/// signal must mean a graceful stop, so the handlers must be in place before
/// the line. Several tries, because a missing handler is a race.
fn signal_right_after_listening_exits_zero(signal: libc::c_int, name: &str) {
    for attempt in 0..5 {
        let mut relay = RelayProcess::builder().start();
        relay.signal(signal);
        let status = relay
            .wait_timeout(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{name} right after the listening line (attempt {attempt}) was ignored: still running 5 s later"));
        assert_eq!(
            status.code(),
            Some(0),
            "{name} right after the listening line (attempt {attempt}): {}",
            describe_exit(status)
        );
    }
}

#[test]
fn sigint_right_after_the_listening_line_exits_zero() {
    signal_right_after_listening_exits_zero(libc::SIGINT, "SIGINT");
}

#[test]
fn sigterm_right_after_the_listening_line_exits_zero() {
    signal_right_after_listening_exits_zero(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_exits_zero() {
    let origin = Server::origin_example();
    let mut relay = RelayProcess::standard(&[&origin]);
    store(&relay, &origin, "t1", ALICE, "x");
    let status = relay.interrupt();
    assert_eq!(status.code(), Some(0), "SIGINT: {}", describe_exit(status));
}

#[test]
fn idle_connections_do_not_hold_up_shutdown() {
    let origin = Server::origin_example();
    let mut relay = RelayProcess::standard(&[&origin]);
    // One connection that never sends anything, one kept alive after a request.
    let _silent = TcpStream::connect(relay.addr()).expect("connect");
    let kept =
        Request::new("GET", "/_matrix/federation/v1/version").header("Connection", "keep-alive");
    let mut partial = kept.send_partially(relay.addr(), 0).expect("send");
    assert_eq!(partial.await_interim(Duration::from_millis(300)), None);
    std::thread::sleep(Duration::from_millis(100));
    let status = relay.terminate();
    assert_eq!(status.code(), Some(0), "{}", describe_exit(status));
}

fn put_in_flight_across(signal: libc::c_int) {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    let target = send_relay_path("slow", ALICE);
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "slow")).expect("serialise");
    let req =
        signed_request(&origin, RELAY_NAME, "PUT", &target, &body).header("Expect", "100-continue");
    // Head and a few body bytes now; the server starts reading the body
    // (and says 100 Continue) but cannot finish the request.
    let mut partial = req
        .send_partially(relay.addr(), 7)
        .expect("start the slow request");
    let interim = partial.await_interim(Duration::from_secs(3));
    if interim.is_none() {
        // No 100 Continue: give the server time to read the head at least.
        std::thread::sleep(Duration::from_millis(500));
    }
    relay.signal(signal);
    std::thread::sleep(Duration::from_millis(300));
    let resp = match partial.finish() {
        Ok(resp) => resp,
        Err(e) => {
            let exit = relay
                .wait_timeout(Duration::from_secs(5))
                .map(describe_exit);
            panic!(
                "the request in flight got no answer ({e}); interim response before the signal: \
                 {interim:?}; the relay ended with {exit:?}"
            );
        }
    };
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    let status = relay
        .wait_timeout(relay_tests::process::SHUTDOWN_TIMEOUT)
        .expect("the relay exits after finishing the request");
    assert_eq!(status.code(), Some(0), "{}", describe_exit(status));
    // And it was stored.
    relay.restart();
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["slow"]);
}

#[test]
fn sigterm_finishes_a_request_in_flight() {
    put_in_flight_across(libc::SIGTERM);
}

#[test]
fn sigint_finishes_a_request_in_flight() {
    put_in_flight_across(libc::SIGINT);
}

#[test]
fn a_clean_restart_keeps_the_queue() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "t1", ALICE, "one");
    store(&relay, &origin, "t2", ALICE, "two");
    let first = pull_one(&relay, &dest, ALICE, 0).expect("one");
    let status = relay.terminate();
    assert_eq!(status.code(), Some(0));
    relay.restart();
    // Unacknowledged, so still first; same entry id.
    let again = pull_one(&relay, &dest, ALICE, 0).expect("one again");
    assert_eq!(again, first);
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["one", "two"]);
}

#[test]
fn serve_help_documents_every_required_flag() {
    let out = Command::new(relay_binary())
        .args(["serve", "--help"])
        .output()
        .expect("run serve --help");
    assert!(
        out.status.success(),
        "serve --help: {}",
        describe_exit(out.status)
    );
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--server-name",
        "--signing-key",
        "--database",
        "--database-max-connections",
        "--serve-for",
        "--open",
        "--trusted-key",
        "--p2p-keys",
        "--fetch-keys",
        "--resolve",
        "--max-body-bytes",
        "--config",
        "--runtime",
        "--acked-retention-secs",
        "--acked-max",
        "--metrics-listen",
    ] {
        assert!(
            help.contains(flag),
            "serve --help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn keygen_writes_a_key_that_serve_publishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.key");
    let out = Command::new(relay_binary())
        .arg("keygen")
        .arg("--out")
        .arg(&path)
        .args(["--key-id", "ed25519:t1"])
        .output()
        .expect("run keygen");
    assert!(
        out.status.success(),
        "keygen: {} {}",
        describe_exit(out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("keygen wrote the file");
    let key = SigningKey::parse_synapse(&text).expect("Synapse format");
    assert_eq!(key.key_id().as_str(), "ed25519:t1");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&key.verify_key().to_base64()),
        "public key not printed: {printed}"
    );
    assert!(
        printed.contains(&key.verify_key().to_hex()),
        "P2P name not printed: {printed}"
    );

    // It refuses to overwrite.
    let again = Command::new(relay_binary())
        .arg("keygen")
        .arg("--out")
        .arg(&path)
        .output()
        .expect("run keygen again");
    assert!(
        !again.status.success(),
        "keygen overwrote an existing key file"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("key file"), text);

    // The bare version, as the key file spells it, names the same key ID;
    // what is no key ID is refused.
    for (key_id, expected) in [
        ("t2", Some("ed25519:t2")),
        ("ed25519:", None),
        ("a b", None),
        ("ed25519:a:b", None),
        ("a-b", None),
    ] {
        let path = dir.path().join(format!("k-{}.key", expected.is_some()));
        let _ = std::fs::remove_file(&path);
        let out = Command::new(relay_binary())
            .arg("keygen")
            .arg("--out")
            .arg(&path)
            .args(["--key-id", key_id])
            .output()
            .expect("run keygen");
        match expected {
            Some(expected) => {
                assert!(out.status.success(), "keygen --key-id {key_id}: {out:?}");
                let text = std::fs::read_to_string(&path).expect("keygen wrote the file");
                let key = SigningKey::parse_synapse(&text).expect("Synapse format");
                assert_eq!(key.key_id().as_str(), expected);
                let version = expected.trim_start_matches("ed25519:");
                assert!(text.starts_with(&format!("ed25519 {version} ")), "{text}");
            }
            None => {
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "keygen --key-id {key_id:?}: {out:?}"
                );
                assert!(!path.exists(), "a key file for {key_id:?}");
            }
        }
    }

    let relay = RelayProcess::builder().signing_key(&path).start();
    let body = Request::new("GET", "/_matrix/key/v2/server")
        .send(relay.addr())
        .ok_json();
    assert_eq!(
        body["verify_keys"]["ed25519:t1"]["key"].as_str(),
        Some(key.verify_key().to_base64().as_str()),
        "{body}"
    );
}

#[test]
fn config_file_settings_apply_and_flags_win() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "server-name = \"from-config.example\"\nserve-for = [\"{DEST_NAME}\"]\ntrusted-key = [\"{}\", \"{}\"]\nmax-body-bytes = 2048\nacked-retention-secs = 0\n",
            origin.trusted_key_arg(),
            dest.trusted_key_arg()
        ),
    )
    .expect("write config");
    // The harness passes --server-name relay.example: the flag wins.
    let relay = RelayProcess::builder()
        .arg("--config")
        .arg(config.display().to_string())
        .start();
    let keys = Request::new("GET", "/_matrix/key/v2/server")
        .send(relay.addr())
        .ok_json();
    assert_eq!(keys["server_name"], RELAY_NAME, "{keys}");
    store(&relay, &origin, "t1", ALICE, "configured");
    let big = json!({"pdus": [{"pad": "x".repeat(3000)}]});
    put_txn(&relay, &origin, "t2", ALICE, &big).assert_error(413, "M_TOO_LARGE");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["configured"]);
    // acked-retention-secs = 0: nothing remembered, a retransmission is new.
    store(&relay, &origin, "t1", ALICE, "configured-again");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["configured-again"]);
}

#[test]
fn runtime_tokio_is_accepted_explicitly() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .args(["--runtime", "tokio"])
        .start();
    store(&relay, &origin, "t1", ALICE, "tokio");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["tokio"]);
}

/// Started with a low soft limit on open files, the relay raises it to the
/// hard limit: every connection is a file.
#[test]
fn serve_raises_the_open_files_limit() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().expect("tempdir");
    let hard = std::fs::read_to_string("/proc/self/limits")
        .expect("/proc/self/limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .expect("the open files line");
    let low = hard.parse::<u64>().map_or(256, |h| (h / 2).min(256));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(r#"ulimit -S -n {low} && exec "$0" "$@""#))
        .arg(relay_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--server-name"])
        .arg("limits.example")
        .arg("--signing-key")
        .arg(dir.path().join("k"))
        .arg("--database")
        .arg(format!("sqlite:{}", dir.path().join("r.db").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the relay under sh");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://"), "{line:?}");
    let soft = limits
        .expect("the relay's limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .expect("the open files line");
    assert_eq!(soft, hard, "soft limit raised from {low} to the hard one");
}
