//! `serve --tls-cert/--tls-key`: the relay itself speaks HTTPS, as other
//! federation servers reach it (certificates from a test CA, trusted by
//! `send` and `pull` through `--tls-ca`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use relay_tests::*;
use serde_json::json;

const RELAY: &str = "relay.test";

/// Writes a chain and key for `names` signed by `ca` into `dir`.
fn write_pem(ca: &TestCa, dir: &std::path::Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let (chain, key) = ca.server_pem(names);
    let (cert_path, key_path) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    std::fs::write(&cert_path, chain).expect("write the certificate");
    std::fs::write(&key_path, key).expect("write the key");
    (cert_path, key_path)
}

#[test]
fn send_and_pull_through_a_relay_that_serves_https() {
    let (a, b) = (
        Node::new(Server::named("a.example")),
        Node::new(Server::named(DEST_NAME)),
    );
    send_and_pull(&a, &b);
}

fn send_and_pull<'a>(a: &'a Node, b: &'a Node) {
    let ca = TestCa::new();
    let files = tempfile::tempdir().expect("a directory for the PEM files");
    let (cert, key) = write_pem(&ca, files.path(), &[RELAY]);
    let relay = RelayProcess::builder()
        .server_name(RELAY)
        .serve_for(DEST_NAME)
        .trust(a.server())
        .trust(b.server())
        .arg("--tls-cert")
        .arg(cert.to_string_lossy())
        .arg("--tls-key")
        .arg(key.to_string_lossy())
        .start();
    let port = relay.addr().port();
    assert_eq!(
        relay.stdout_lines(),
        [format!("listening on https://127.0.0.1:{port}")]
    );

    // Reached by name: SNI and the certificate check say `relay.test`.
    let via_https = |command: CliCommand<'a>| -> CliCommand<'a> {
        command
            .arg("--relay")
            .arg(RELAY)
            .arg("--resolve")
            .arg(format!("{RELAY}=https://{RELAY}:{port}"))
            .arg("--connect-to")
            .arg(format!("{RELAY}:{port}=127.0.0.1:{port}"))
            .arg("--tls-ca")
            .arg(ca.pem_file())
    };
    let transaction = json!({"pdus": [{"type": "m.room.message"}], "edus": []});
    let out = via_https(a.send(DEST_NAME, "over-tls", &transaction))
        .resolve(DEST_NAME, closed_addr())
        .timeout_ms(5_000)
        .run();
    out.assert_code(0);
    assert_eq!(out.json()["delivered"], "relay", "{out:?}");
    assert_eq!(out.json()["relays_accepted"], json!([RELAY]), "{out:?}");

    let out = via_https(b.pull()).run();
    out.assert_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert_eq!(lines[0]["txn_id"], "over-tls", "{out:?}");
    assert_eq!(lines[0]["transaction"]["pdus"], transaction["pdus"]);

    // Without the CA the certificate is refused, and nothing is pulled.
    let out = b
        .pull()
        .arg("--relay")
        .arg(RELAY)
        .arg("--resolve")
        .arg(format!("{RELAY}=https://127.0.0.1:{port}"))
        .run();
    out.assert_code(1);
    assert!(out.lines().is_empty(), "{out:?}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(relay.addr()).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    plain
        .write_all(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn unusable_certificate_files_are_refused_at_start() {
    let node = Node::new(Server::named(RELAY));
    let ca = TestCa::new();
    let (cert, key) = write_pem(&ca, node.dir(), &[RELAY]);
    let (_, other_key) = ca.server_pem(&[RELAY]);
    let other_key_path = node.write_file(other_key);
    let empty = node.write_file("");
    let missing = node.dir().join("missing.pem");
    // Each message names the file at fault.
    let empty_key = format!("{}: ", empty.display());
    let cases = [
        (&missing, &key, "missing.pem: "),
        (&empty, &key, "no PEM certificate"),
        (&cert, &empty, empty_key.as_str()),
        (&cert, &other_key_path, "does not go with the certificate"),
    ];
    for (cert, key, expected) in cases {
        let out = CliCommand::bare(&node, "serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--server-name")
            .arg(RELAY)
            .arg("--signing-key")
            .arg(node.key_path())
            .arg("--database")
            .arg(format!("sqlite:{}", node.dir().join("relay.db").display()))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .time_limit(Duration::from_secs(20))
            .run();
        out.assert_code(1);
        assert!(out.stderr.contains(expected), "{expected}: {out:?}");
    }
    // One without the other is refused, flags and file merged first.
    let out = CliCommand::bare(&node, "serve")
        .arg("--server-name")
        .arg(RELAY)
        .arg("--signing-key")
        .arg(node.key_path())
        .arg("--tls-cert")
        .arg(&cert)
        .run();
    out.assert_code(1);
    assert!(out.stderr.contains("go together"), "{out:?}");
}

/// `--tls-cert` in the `--config` file and `--tls-key` as a flag make one
/// setting: flags and file are merged before the pair is checked.
#[test]
fn the_certificate_and_key_may_come_from_file_and_flag() {
    let node = Node::new(Server::named(RELAY));
    let (cert, key) = write_pem(&TestCa::new(), node.dir(), &[RELAY]);
    let config = node.write_file(format!("tls-cert = {:?}\n", cert.display().to_string()));
    let mut command = std::process::Command::new(relay_tests::process::relay_binary());
    command
        .current_dir(node.dir())
        .args(["serve", "--listen", "127.0.0.1:0", "--server-name", RELAY])
        .arg("--signing-key")
        .arg(node.key_path())
        .arg("--config")
        .arg(&config)
        .arg("--tls-key")
        .arg(&key);
    assert_listens(command, "listening on https://");
}

/// Starts `command` (a `serve`), reads its first line of standard output,
/// stops it, and asserts the line starts with `expected`.
#[track_caller]
fn assert_listens(mut command: std::process::Command, expected: &str) {
    use std::io::BufRead;

    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the relay");
    let mut first = String::new();
    let read = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait for the relay");
    assert!(
        read.is_ok() && first.starts_with(expected),
        "{first:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configuration file of `docs/deploy.md`, with its paths pointed at a
/// temporary directory, starts a relay that serves HTTPS.
#[test]
fn the_deployment_guide_configuration_starts_a_relay() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"))
        .expect("read docs/deploy.md");
    let toml = guide
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in docs/deploy.md");
    let dir = tempfile::tempdir().expect("a directory");
    let ca = TestCa::new();
    let (cert, key) = write_pem(&ca, dir.path(), &["relay.example.org"]);
    let state = dir.path().display().to_string();
    let config = toml
        .replace("/var/lib/matrix-relay", &state)
        .replace(
            "/etc/letsencrypt/live/relay.example.org/fullchain.pem",
            &cert.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/relay.example.org/privkey.pem",
            &key.display().to_string(),
        )
        .replace("0.0.0.0:8448", "127.0.0.1:0")
        .replace("127.0.0.1:9108", "127.0.0.1:0");
    assert!(
        config
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| !l.contains("/etc/") && !l.contains("/var/")),
        "{config}"
    );
    let config_path = dir.path().join("relay.toml");
    std::fs::write(&config_path, &config).expect("write the configuration");

    let mut command = std::process::Command::new(relay_tests::process::relay_binary());
    command.arg("serve").arg("--config").arg(&config_path);
    if let Some(runtime) = std::env::var_os(relay_tests::process::RUNTIME_ENV) {
        command.arg("--runtime").arg(runtime);
    }
    assert_listens(command, "listening on https://127.0.0.1:");
    assert!(
        dir.path().join("signing.key").exists() && dir.path().join("relay.db").exists(),
        "the key and the database are where the file says"
    );
}

/// Whether a TLS handshake with `addr`, trusting only `ca` and asking for
/// `name`, succeeds.
fn handshake(addr: std::net::SocketAddr, ca: &TestCa, name: &str) -> Result<(), String> {
    let server_name =
        rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(ca.client_config(), server_name)
        .map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn sighup_reloads_the_certificate_at_once_and_never_stops_the_relay() {
    let dir = tempfile::tempdir().expect("a directory for the PEM files");
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let (cert, key) = write_pem(&old_ca, dir.path(), &[RELAY]);
    let mut relay = RelayProcess::builder()
        .server_name(RELAY)
        .arg("--tls-cert")
        .arg(cert.to_string_lossy())
        .arg("--tls-key")
        .arg(key.to_string_lossy())
        .start();
    handshake(relay.addr(), &old_ca, RELAY).expect("the first certificate");

    // Renewed on disk: SIGHUP makes the next handshakes use it, without
    // waiting for the minute's check.
    write_pem(&new_ca, dir.path(), &[RELAY]);
    relay.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handshake(relay.addr(), &new_ca, RELAY).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "still the old certificate 10 s after SIGHUP:\n{}",
            relay.stderr_log()
        );
        assert!(relay.is_running(), "SIGHUP ended the relay");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(handshake(relay.addr(), &old_ca, RELAY).is_err());
    assert!(relay.stderr_log().contains("TLS certificate reloaded"));

    // A relay without TLS lives through SIGHUP too.
    let mut plain = RelayProcess::builder().start();
    plain.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(plain.is_running(), "SIGHUP ended the relay");
    Request::new("GET", "/_matrix/federation/v1/version")
        .send(plain.addr())
        .ok_json();
}
