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
