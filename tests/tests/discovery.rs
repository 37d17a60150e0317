//! `matrix-relay send` reaching its destination through Matrix server
//! discovery alone (PROTOCOL §3/§4: no `--resolve` for it): the
//! destination's `.well-known/matrix/server` is served over HTTPS by a
//! server whose certificate comes from a test CA (`--tls-ca`), and port 443
//! is redirected to it (`--connect-to`); it delegates to a name whose SRV
//! record (from a fake nameserver, `--dns-server`) points at the same
//! server.

use relay_tests::api;
use relay_tests::*;
use serde_json::json;

#[test]
fn send_reaches_the_destination_through_well_known_and_srv() {
    // The harness already adds `--runtime` when the environment asks for one.
    if std::env::var_os(relay_tests::process::RUNTIME_ENV).is_some() {
        send_through_discovery(None);
    } else {
        send_through_discovery(Some("tokio"));
        send_through_discovery(Some("smol"));
    }
}

/// `a` sends `txn_id` to `destination` through discovery alone (trusting
/// `ca`, asking `dns`, with these `--connect-to` values) and must deliver
/// it directly.
#[track_caller]
fn send_directly(
    a: &Node,
    (destination, txn_id): (&str, &str),
    runtime: Option<&str>,
    (ca, dns): (&TestCa, &FakeDns),
    connect_to: &[String],
) {
    let transaction = json!({"pdus": [{"type": "m.room.message"}], "edus": []});
    let mut command = a
        .send(destination, txn_id, &transaction)
        .arg("--tls-ca")
        .arg(ca.pem_file())
        .arg("--dns-server")
        .arg(dns.addr().to_string())
        .timeout_ms(10_000);
    if let Some(runtime) = runtime {
        command = command.arg("--runtime").arg(runtime);
    }
    for value in connect_to {
        command = command.arg("--connect-to").arg(value);
    }
    let out = command.run();
    out.assert_code(0);
    assert_eq!(out.json()["delivered"], "direct", "{out:?}");
}

fn send_through_discovery(runtime: Option<&str>) {
    let a = Node::new(Server::named("a.example"));
    let destination = "dest.test";
    let delegated = "fed.dest.test";
    let ca = TestCa::new();
    let https = StubServer::start_tls(ca.server_config(&[destination, delegated]), |_, r| {
        if r.target == "/.well-known/matrix/server" {
            Reply::Json(200, json!({"m.server": "fed.dest.test"}).to_string())
        } else {
            Reply::ok()
        }
    });
    let port = https.addr().port();
    let dns = FakeDns::start();
    dns.srv(
        &format!("_matrix-fed._tcp.{delegated}"),
        &[(10, 5, port, "srv-target.test.")],
    );

    send_directly(
        &a,
        (destination, "txn-discovered"),
        runtime,
        (&ca, &dns),
        &[
            format!("{destination}:443=127.0.0.1:{port}"),
            format!("srv-target.test:{port}=127.0.0.1:{port}"),
        ],
    );

    let got = https.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    let (well_known, send) = (&got[0], &got[1]);
    assert_eq!(well_known.target, "/.well-known/matrix/server");
    assert_eq!(well_known.sni.as_deref(), Some(destination));
    assert_eq!(well_known.header_values("host"), [destination]);

    assert_eq!(send.target, "/_matrix/federation/v1/send/txn-discovered");
    // Host and certificate name are the delegated name, not the SRV target.
    assert_eq!(send.sni.as_deref(), Some(delegated));
    assert_eq!(send.header_values("host"), [delegated]);
    // The request is still signed for the destination's server name.
    send.verify_signed_by(a.server(), destination)
        .unwrap_or_else(|e| panic!("not signed for {destination}: {e}\n{send:?}"));
    assert_eq!(
        dns.asked(),
        [(format!("_matrix-fed._tcp.{delegated}"), "udp")]
    );
}

/// Two SRV records for the destination: the preferred one's port is
/// closed, so `send` connects to the other and delivers there directly.
#[test]
fn send_fails_over_to_the_next_srv_target() {
    if std::env::var_os(relay_tests::process::RUNTIME_ENV).is_some() {
        send_through_failover(None);
    } else {
        send_through_failover(Some("tokio"));
        send_through_failover(Some("smol"));
    }
}

fn send_through_failover(runtime: Option<&str>) {
    let a = Node::new(Server::named("a.example"));
    let destination = "dest.test";
    let ca = TestCa::new();
    let https = StubServer::start_tls(ca.server_config(&[destination]), |_, r| {
        if r.target == "/.well-known/matrix/server" {
            Reply::error(404, "M_NOT_FOUND")
        } else {
            Reply::ok()
        }
    });
    let port = https.addr().port();
    let closed = closed_addr().port();
    let dns = FakeDns::start();
    dns.srv(
        &format!("_matrix-fed._tcp.{destination}"),
        &[(20, 0, port, "up.test."), (10, 0, closed, "down.test.")],
    );

    send_directly(
        &a,
        (destination, "txn-failover"),
        runtime,
        (&ca, &dns),
        &[
            format!("{destination}:443=127.0.0.1:{port}"),
            format!("down.test:{closed}=127.0.0.1:{closed}"),
            format!("up.test:{port}=127.0.0.1:{port}"),
        ],
    );

    let got = https.requests();
    let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/.well-known/matrix/server",
            "/_matrix/federation/v1/send/txn-failover"
        ],
        "{got:?}"
    );
    // The second target carries the same names as the first would have.
    assert_eq!(got[1].sni.as_deref(), Some(destination));
    assert_eq!(got[1].header_values("host"), [destination]);
    assert_eq!(
        dns.asked(),
        [(format!("_matrix-fed._tcp.{destination}"), "udp")]
    );
}

#[test]
fn bad_discovery_flags_are_refused() {
    let a = Node::new(Server::named("a.example"));
    let transaction = json!({"pdus": []});
    for (flag, value, says) in [
        ("--connect-to", "nope", "--connect-to"),
        ("--dns-server", "not-an-ip", "--dns-server"),
        ("--tls-ca", "/nonexistent/ca.pem", "--tls-ca"),
    ] {
        let out = a
            .send("dest.test", "t", &transaction)
            .arg(flag)
            .arg(value)
            .run();
        out.assert_code(1);
        assert!(out.stderr.contains(says), "{out:?}");
    }
}

/// `serve --fetch-keys` reaches an origin through discovery too: no
/// `.well-known` (404), then the origin's own SRV record.
#[test]
fn serve_fetches_keys_through_srv() {
    let origin = Server::named("far.test");
    let dest = Server::named("dest.example");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let doc = relay_core::server_keys::document(
        &relay_core::ServerName::parse("far.test").expect("name"),
        origin.key(),
        relay_core::UnixMillis(now + 3_600_000),
    )
    .expect("sign")
    .to_string();
    let ca = TestCa::new();
    let https = StubServer::start_tls(ca.server_config(&["far.test"]), move |_, r| {
        if r.target == "/_matrix/key/v2/server" {
            Reply::Json(200, doc.clone())
        } else {
            Reply::error(404, "M_NOT_FOUND")
        }
    });
    let port = https.addr().port();
    let dns = FakeDns::start();
    dns.srv(
        "_matrix-fed._tcp.far.test",
        &[(0, 0, port, "keys.far.test")],
    );
    let relay = RelayProcess::builder()
        .serve_for("dest.example")
        .trust(&dest)
        .args([
            "--fetch-keys".to_owned(),
            "--tls-ca".to_owned(),
            ca.pem_file().display().to_string(),
            "--connect-to".to_owned(),
            format!("far.test:443=127.0.0.1:{port}"),
            "--connect-to".to_owned(),
            format!("keys.far.test:{port}=127.0.0.1:{port}"),
            "--dns-server".to_owned(),
            dns.addr().to_string(),
        ])
        .start();
    store(&relay, &origin, "t1", "@bob:dest.example", "one");
    let got = https.requests();
    let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/.well-known/matrix/server", "/_matrix/key/v2/server"]
    );
    assert_eq!(got[1].sni.as_deref(), Some("far.test"));
    assert_eq!(got[1].header_values("host"), ["far.test"]);
    assert_eq!(
        api::markers(&drain(&relay, &dest, "@bob:dest.example")),
        ["one"]
    );
}
