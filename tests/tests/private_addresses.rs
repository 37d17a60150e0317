//! Discovery and key fetching never connect to a special-purpose address
//! (loopback here) that strangers lead them to: an origin named by one, a
//! `.well-known` delegating to one, an SRV target whose name resolves to
//! one. `--allow-fetch-from` (flag or `--config` key) allows a network;
//! the operator's own `--connect-to` and `--resolve` targets are connected
//! to whatever they are.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use relay_core::ServerName;
use relay_core::UnixMillis;
use relay_core::server_keys;
use relay_tests::*;
use serde_json::json;

const DEST: &str = "dest.example";

/// The runtimes to run on: the one the environment asks for (the harness
/// passes it), else both.
fn runtimes() -> Vec<Option<&'static str>> {
    if std::env::var_os(relay_tests::process::RUNTIME_ENV).is_some() {
        vec![None]
    } else {
        vec![Some("tokio"), Some("smol")]
    }
}

/// A key document of `server`, valid for an hour.
fn document_of(server: &Server) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let name = ServerName::parse(server.name()).expect("name");
    server_keys::document(&name, server.key(), UnixMillis(now + 3_600_000))
        .expect("sign")
        .to_string()
}

/// An HTTPS key server on 127.0.0.1 with a certificate for `names`,
/// serving the document of the origin `origin(its address)` names; it
/// counts the connections it accepts.
fn key_server(
    ca: &TestCa,
    names: &[&str],
    origin: impl FnOnce(SocketAddr) -> String,
) -> (StubServer, Server) {
    let doc = Arc::new(Mutex::new(String::new()));
    let served = doc.clone();
    let stub = StubServer::start_tls(ca.server_config(names), move |_, r| {
        if r.target == "/_matrix/key/v2/server" {
            Reply::Json(200, served.lock().expect("document").clone())
        } else {
            Reply::error(404, "M_NOT_FOUND")
        }
    });
    let server = Server::named(&origin(stub.addr()));
    *doc.lock().expect("document") = document_of(&server);
    (stub, server)
}

/// Three origins whose keys are on loopback, each reached another way:
/// by its own name (`127.0.0.1:PORT`), by `.well-known` delegation to
/// `127.0.0.1:PORT`, and by an SRV record whose target is `localhost`.
struct Origins {
    ca: TestCa,
    /// Serves `.well-known` of `far.test` and `srv.test`; reached through
    /// `--connect-to`.
    well_known: StubServer,
    dns: FakeDns,
    /// Key servers, and the origins whose keys they serve.
    keys: Vec<(StubServer, Server)>,
}

fn origins() -> Origins {
    let ca = TestCa::new();
    let literal = key_server(&ca, &["127.0.0.1"], |addr| addr.to_string());
    let delegated = key_server(&ca, &["127.0.0.1"], |_| "far.test".to_owned());
    let srv = key_server(&ca, &["srv.test"], |_| "srv.test".to_owned());
    let delegate_to = delegated.0.addr().to_string();
    let well_known =
        StubServer::start_tls(ca.server_config(&["far.test", "srv.test"]), move |_, r| {
            let host = r.header_values("host").first().copied().unwrap_or_default();
            if r.target == "/.well-known/matrix/server" && host == "far.test" {
                Reply::Json(200, json!({ "m.server": delegate_to }).to_string())
            } else {
                Reply::error(404, "M_NOT_FOUND")
            }
        });
    let dns = FakeDns::start();
    dns.srv(
        "_matrix-fed._tcp.srv.test",
        &[(0, 0, srv.0.addr().port(), "localhost.")],
    );
    Origins {
        ca,
        well_known,
        dns,
        keys: vec![literal, delegated, srv],
    }
}

impl Origins {
    /// A relay fetching keys, reaching `.well-known` through
    /// `--connect-to`, with `extra` arguments; its client logs at debug.
    fn relay(&self, runtime: Option<&str>, extra: &[String]) -> RelayProcess {
        let port = self.well_known.addr().port();
        let mut builder = RelayProcess::builder()
            .wrapper(["env", "RUST_LOG=info,adapter_http=debug"])
            .serve_for(DEST)
            .args([
                "--fetch-keys".to_owned(),
                "--tls-ca".to_owned(),
                self.ca.pem_file().display().to_string(),
                "--dns-server".to_owned(),
                self.dns.addr().to_string(),
                "--connect-to".to_owned(),
                format!("far.test:443=127.0.0.1:{port}"),
                "--connect-to".to_owned(),
                format!("srv.test:443=127.0.0.1:{port}"),
            ]);
        if let Some(runtime) = runtime {
            builder = builder.args(["--runtime", runtime]);
        }
        builder.args(extra.iter().cloned()).start()
    }
}

/// By default, no connection reaches a key server on loopback, however
/// the origin leads there; each request is 401, its keys unfetchable. The
/// `.well-known` server, an operator's `--connect-to` target on loopback
/// too, is reached.
#[test]
fn discovery_never_connects_to_loopback_by_default() {
    for runtime in runtimes() {
        let origins = origins();
        let relay = origins.relay(runtime, &[]);
        for (i, (stub, origin)) in origins.keys.iter().enumerate() {
            put_txn(
                &relay,
                origin,
                &format!("t{i}"),
                "@bob:dest.example",
                &txn_body(origin.name(), "x"),
            )
            .assert_error(401, "M_UNAUTHORIZED");
            assert_eq!(stub.connections(), 0, "{runtime:?}: {}", origin.name());
        }
        // Each refusal is logged at debug, with the reason.
        let log = relay.stderr_log();
        for (stub, _) in &origins.keys {
            let refused = format!(
                "addr={} reason={} is loopback",
                stub.addr(),
                stub.addr().ip()
            );
            assert!(
                log.contains(&refused),
                "{runtime:?}: no {refused:?} in\n{log}"
            );
        }
        let asked: Vec<String> = origins
            .well_known
            .requests()
            .iter()
            .map(|r| r.header_values("host").join(","))
            .collect();
        assert_eq!(asked, ["far.test", "srv.test"], "{runtime:?}");
        assert_eq!(
            origins.dns.asked(),
            [("_matrix-fed._tcp.srv.test".to_owned(), "udp")],
            "{runtime:?}"
        );
    }
}

/// `allow-fetch-from = ["127.0.0.0/8"]` (here in the `--config` file):
/// every origin's keys are fetched from loopback, and its transaction is
/// stored.
#[test]
fn allow_fetch_from_lets_discovery_reach_loopback() {
    for runtime in runtimes() {
        let origins = origins();
        let dir = tempfile::tempdir().expect("a directory");
        let config = dir.path().join("relay.toml");
        std::fs::write(&config, "allow-fetch-from = [\"127.0.0.0/8\"]\n").expect("config");
        let relay = origins.relay(
            runtime,
            &["--config".to_owned(), config.display().to_string()],
        );
        for (i, (stub, origin)) in origins.keys.iter().enumerate() {
            store(&relay, origin, &format!("t{i}"), "@bob:dest.example", "one");
            assert_eq!(stub.count(), 1, "{runtime:?}: {}", origin.name());
        }
    }
}

/// `send` holds discovery to the same rule: a destination named
/// `127.0.0.1:PORT` is not connected to, until `--allow-fetch-from`
/// allows it.
#[test]
fn send_to_a_loopback_destination_needs_allow_fetch_from() {
    for runtime in runtimes() {
        let ca = TestCa::new();
        let stub = StubServer::start_tls(ca.server_config(&["127.0.0.1"]), |_, _| Reply::ok());
        let destination = stub.addr().to_string();
        let a = Node::new(Server::named("a.example"));
        let transaction = json!({"pdus": [], "edus": []});
        let send = |txn_id: &str, allow: Option<&str>| {
            let mut command = a
                .send(&destination, txn_id, &transaction)
                .arg("--tls-ca")
                .arg(ca.pem_file())
                .timeout_ms(5_000);
            if let Some(runtime) = runtime {
                command = command.arg("--runtime").arg(runtime);
            }
            if let Some(cidr) = allow {
                command = command.arg("--allow-fetch-from").arg(cidr);
            }
            command.run()
        };
        let refused = send("t1", None);
        refused.assert_code(1);
        assert_eq!(stub.connections(), 0, "{runtime:?}: {refused:?}");
        // One address is enough.
        let out = send("t2", Some(&format!("{}/32", stub.addr().ip())));
        out.assert_code(0);
        assert_eq!(out.json()["delivered"], "direct", "{out:?}");
        assert_eq!(stub.count(), 1, "{runtime:?}");
    }
}

/// A value that is not a network is refused on the command line and in
/// the `--config` file, naming the setting.
#[test]
fn bad_allow_fetch_from_values_are_refused() {
    let a = Node::new(Server::named("a.example"));
    for value in ["nope", "10.1.2.3/8", "127.0.0.0/33"] {
        let out = a
            .send("dest.test", "t", &json!({"pdus": []}))
            .arg("--allow-fetch-from")
            .arg(value)
            .run();
        out.assert_code(1);
        assert!(out.stderr.contains("--allow-fetch-from"), "{out:?}");
    }
    let dir = tempfile::tempdir().expect("a directory");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "server-name = \"r.example\"\nsigning-key = {:?}\nallow-fetch-from = [\"10.1.2.3/8\"]\n",
            dir.path().join("key").display().to_string()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(relay_tests::process::relay_binary())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off")
        .output()
        .expect("run the relay");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allow-fetch-from") && stderr.contains("10.0.0.0/8"),
        "{stderr}"
    );
}
