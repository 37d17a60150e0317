//! `--fetch-keys` (PROTOCOL §3 item 3): an origin's keys come from its own
//! `GET /_matrix/key/v2/server`, reached through `--resolve`, verified, and
//! cached.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use relay_core::server_keys;
use relay_core::{ServerName, UnixMillis};
use relay_tests::api::markers;
use relay_tests::*;

const DEST_NAME: &str = "dest.example";

/// A key server for `doc` on 127.0.0.1:0; counts the requests it answers.
fn key_server(doc: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&got);
            let (status, body) = if head.starts_with("GET /_matrix/key/v2/server ") {
                counter.fetch_add(1, Ordering::SeqCst);
                ("200 OK", doc.clone())
            } else {
                (
                    "404 Not Found",
                    r#"{"errcode":"M_UNRECOGNIZED","error":"no"}"#.to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

fn document_of(server: &Server, valid_ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let name = ServerName::parse(server.name()).expect("name");
    server_keys::document(&name, server.key(), UnixMillis(now + valid_ms))
        .expect("sign")
        .to_string()
}

#[test]
fn keys_are_fetched_verified_and_cached() {
    let origin = Server::named("far.example");
    let dest = Server::named(DEST_NAME);
    let (url, hits) = key_server(document_of(&origin, 3_600_000));
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&dest)
        .args(["--fetch-keys", "--resolve", &format!("far.example={url}")])
        .start();
    store(&relay, &origin, "t1", "@bob:dest.example", "one");
    store(&relay, &origin, "t2", "@bob:dest.example", "two");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then cached");
    assert_eq!(
        markers(&drain(&relay, &dest, "@bob:dest.example")),
        ["one", "two"]
    );
}

#[test]
fn a_document_with_another_key_does_not_verify() {
    let origin = Server::named("far.example");
    // The document names far.example but carries another server's key.
    let impostor = origin.impostor([9; 32]);
    let (url, _) = key_server(document_of(&impostor, 3_600_000));
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .args(["--fetch-keys", "--resolve", &format!("far.example={url}")])
        .start();
    put_txn(
        &relay,
        &origin,
        "t1",
        "@bob:dest.example",
        &txn_body(origin.name(), "x"),
    )
    .assert_error(401, "M_UNAUTHORIZED");
}

#[test]
fn without_fetch_keys_nothing_is_fetched() {
    let origin = Server::named("far.example");
    let (url, hits) = key_server(document_of(&origin, 3_600_000));
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .args(["--resolve", &format!("far.example={url}")])
        .start();
    put_txn(
        &relay,
        &origin,
        "t1",
        "@bob:dest.example",
        &txn_body(origin.name(), "x"),
    )
    .assert_error(401, "M_UNAUTHORIZED");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn an_unreachable_key_server_is_401() {
    let origin = Server::named("far.example");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .args([
            "--fetch-keys",
            "--resolve",
            "far.example=http://127.0.0.1:1",
        ])
        .start();
    put_txn(
        &relay,
        &origin,
        "t1",
        "@bob:dest.example",
        &txn_body(origin.name(), "x"),
    )
    .assert_error(401, "M_UNAUTHORIZED");
}

/// A key document of `server` (valid for an hour, self-signed) listing
/// `extra` more keys, each with a signature that does not verify.
fn crowded_document_of(server: &Server, extra: usize) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(&document_of(server, 3_600_000)).expect("a document");
    let bogus = "A".repeat(86);
    for i in 0..extra {
        let id = format!("ed25519:k{i}");
        doc["verify_keys"][&id] = serde_json::json!({"key": server.public_key_base64()});
        doc["signatures"][server.name()][&id] = serde_json::json!(bogus);
    }
    doc.to_string()
}

/// The CPU time (user and system) `relay` spends answering `request`.
fn cpu_spent(relay: &RelayProcess, request: impl FnOnce()) -> std::time::Duration {
    let before = relay.cpu_time();
    request();
    relay.cpu_time().saturating_sub(before)
}

/// Whatever a key server answers, the relay reads at most 64 KiB of it,
/// considers at most 32 keys, canonicalises the document once and checks
/// each signature once: a document of thousands of keys with bogus
/// signatures, or of 10 MiB, costs it a few milliseconds of CPU, and the
/// request it was fetched for gets 401.
#[test]
fn key_documents_cost_little_whatever_their_size() {
    let good = Server::named("good.example");
    let many = Server::named("many.example");
    let crowded = Server::named("crowded.example");
    let huge = Server::named("huge.example");
    let mut padded: serde_json::Value =
        serde_json::from_str(&document_of(&huge, 3_600_000)).expect("a document");
    padded["pad"] = serde_json::json!("x".repeat(10 << 20));
    let under_the_size_limit = crowded_document_of(&crowded, 330);
    assert!(under_the_size_limit.len() < server_keys::MAX_KEY_DOCUMENT_BYTES);
    let stubs = [
        (&good, document_of(&good, 3_600_000)),
        (&many, crowded_document_of(&many, 4_000)),
        (&crowded, under_the_size_limit),
        (&huge, padded.to_string()),
    ]
    .map(|(server, doc)| (server, StubServer::always(Reply::Json(200, doc))));
    let mut builder = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .arg("--fetch-keys");
    for (server, stub) in &stubs {
        builder = builder.args(["--resolve", &format!("{}={}", server.name(), stub.url())]);
    }
    let relay = builder.start();
    // The first fetch (and connection) of the relay's client, as a baseline.
    store(&relay, &good, "t0", "@bob:dest.example", "warm");
    for (server, stub) in &stubs[1..] {
        let spent = cpu_spent(&relay, || {
            put_txn(
                &relay,
                server,
                "t1",
                "@bob:dest.example",
                &txn_body(server.name(), "x"),
            )
            .assert_error(401, "M_UNAUTHORIZED");
        });
        assert_eq!(stub.count(), 1, "{}'s keys were asked for", server.name());
        assert!(
            spent < std::time::Duration::from_millis(50),
            "{}: {spent:?} of CPU",
            server.name()
        );
    }
}
