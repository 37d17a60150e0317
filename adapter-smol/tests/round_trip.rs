//! The shared layer on smol, in process: a relay served on smol answers the
//! smol client, the client reuses one connection for consecutive requests,
//! shutdown ends `run`, and no tokio runtime thread ever exists.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapter_http::{Listen, ServeOptions, Shutdown};
use adapter_smol::{HttpClient, Runtime, Smol, block_on};
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::relay::RelayConfig;
use relay_core::resolve::Resolver;
use relay_core::signing::SigningKey;
use relay_core::{KeyId, ServerName};

fn name(s: &str) -> ServerName {
    ServerName::parse(s).expect("server name")
}

fn get(server: &str, target: &str) -> OutgoingRequest {
    OutgoingRequest {
        server: name(server),
        method: "GET",
        target: target.to_owned(),
        authorization: String::new(),
        body: Vec::new(),
        max_response_bytes: relay_core::http::DEFAULT_MAX_RESPONSE_BYTES,
    }
}

fn client(rt: Smol, server: &str, addr: std::net::SocketAddr) -> HttpClient {
    let flag = format!("{server}=http://{addr}");
    let resolver = Resolver::from_flags([flag.as_str()]).expect("resolve flag");
    HttpClient::with_runtime(rt, resolver, Duration::from_secs(5))
}

fn no_tokio_threads() {
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("tokio")),
        "tokio threads: {names:?}"
    );
}

#[test]
fn a_relay_on_smol_answers_the_smol_client_and_shuts_down() {
    let answered = block_on(|rt: Smol| async move {
        let listener = rt
            .bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = Smol::local_addr(&listener).expect("addr");
        let key = SigningKey::from_seed(KeyId::parse("ed25519:1").expect("key id"), [7; 32]);
        let config = RelayConfig::new(name("relay.example"), key);
        let store = Arc::new(relay_store::MemoryStore::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let flag = format!("x.example=http://{addr}");
        let mut options = ServeOptions::new(Listen::Bound(listener), config, store);
        options.resolver = Resolver::from_flags([flag.as_str()]).expect("resolve flag");
        options.shutdown = Shutdown::On(Box::pin(async move {
            let _ = stopped.recv().await;
        }));
        let server = adapter_http::spawn_task(&rt, adapter_http::run(rt.clone(), options, |_| {}));
        let outcome = client(rt.clone(), "relay.example", addr)
            .send(get("relay.example", "/_matrix/key/v2/server"))
            .await;
        no_tokio_threads();
        stop.close();
        server
            .await
            .expect("serve ran")
            .expect("serve ended cleanly");
        outcome
    })
    .expect("executor");
    match answered {
        HttpOutcome::Response { status, body, .. } => {
            assert_eq!(status, 200);
            let keys: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(keys["server_name"], "relay.example");
        }
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn the_client_reuses_one_connection() {
    // A keep-alive server that counts connections.
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                loop {
                    let mut line = String::new();
                    // Headers end with an empty line; GETs have no body.
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let statuses = block_on(|rt: Smol| async move {
        let client = client(rt, "stub.example", addr);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            match client.send(get("stub.example", "/x")).await {
                HttpOutcome::Response { status, .. } => statuses.push(status),
                other => panic!("{other:?}"),
            }
        }
        statuses
    })
    .expect("executor");
    assert_eq!(statuses, [200, 200, 200]);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
}

#[test]
fn https_to_a_plain_server_is_a_connection_failure() {
    // Speaks HTTP, not TLS: the handshake fails and says so.
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let outcome = block_on(|rt: Smol| async move {
        let flag = format!("tls.example=https://{addr}");
        let resolver = Resolver::from_flags([flag.as_str()]).expect("resolve flag");
        HttpClient::with_runtime(rt, resolver, Duration::from_secs(5))
            .send(get("tls.example", "/x"))
            .await
    })
    .expect("executor");
    match outcome {
        HttpOutcome::ConnectionFailed(e) => assert!(e.starts_with("https://"), "{e}"),
        other => panic!("expected a TLS failure: {other:?}"),
    }
}
