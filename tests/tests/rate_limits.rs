//! Rate limits against the real binary: origins minted by one client
//! address, requests per client address, key fetches aimed at a victim,
//! and the client a trusted reverse proxy names. A test is several client
//! addresses by binding its sockets to 127.0.0.2 and up (Linux routes all
//! of 127/8 to loopback).

use std::net::Ipv4Addr;
use std::process::Command;

use relay_core::server_keys;
use relay_core::{ServerName, UnixMillis};
use relay_tests::process::{describe_exit, relay_binary};
use relay_tests::*;

const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const DEST_NAME: &str = "dest.example";

/// A transaction from `from` for `user`, signed, sent from `local`.
fn put_from(
    relay: &RelayProcess,
    local: Ipv4Addr,
    from: &Server,
    txn_id: &str,
    user: &str,
) -> HttpResponse {
    put_request(relay, from, txn_id, user).send_from(local, relay.addr())
}

fn put_request(relay: &RelayProcess, from: &Server, txn_id: &str, user: &str) -> Request {
    let body = serde_json::to_vec(&txn_body(from.name(), txn_id)).expect("body");
    let target = send_relay_path(txn_id, user);
    signed_request(from, relay.server_name(), "PUT", &target, &body)
}

/// Drains `user`'s queue as `dest` from `local`; how many entries it held.
fn drain_from(relay: &RelayProcess, local: Ipv4Addr, dest: &Server, user: &str) -> usize {
    let (mut ack, mut entries) = (0, 0);
    loop {
        let body = format!(r#"{{"entry_id":{ack}}}"#);
        let target = relay_txn_path(user);
        let request = signed_request(dest, relay.server_name(), "GET", &target, body.as_bytes());
        let answer = request.send_from(local, relay.addr()).ok_json();
        if answer["entries_queued"] != true {
            return entries;
        }
        ack = answer["entry_id"].as_u64().expect("an entry id");
        entries += 1;
    }
}

/// Asserts a 429 `M_LIMIT_EXCEEDED` whose `retry_after_ms` and
/// `Retry-After` agree; the former.
#[track_caller]
fn retry_after_ms(resp: &HttpResponse) -> u64 {
    resp.assert_error(429, "M_LIMIT_EXCEEDED");
    let ms = resp.json()["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retry_after_ms:\n{resp:?}"));
    let secs: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After:\n{resp:?}"));
    assert_eq!(secs, ms.div_ceil(1000), "{resp:?}");
    ms
}

/// The seed of the `i`-th minted key.
fn minted(i: usize) -> [u8; 32] {
    let mut seed = [7; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    seed
}

/// With P2P names, keys cost nothing to mint: 2,000 fresh origins from
/// one address, each within a per-origin quota of one entry. Past the
/// default 100 new origins an hour the address gets 429 with when to come
/// back (about an hour), from the head; an origin from another address
/// still stores, and the queue holds what was let in and no more.
#[test]
fn minted_origins_from_one_address_are_refused_past_the_new_origins_limit() {
    const MINTED: usize = 2_000;
    const NEW_ORIGINS: usize = 100;
    let dest = Server::p2p([2; 32]);
    let bob = dest.user("bob");
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(dest.name())
        .args(["--max-origin-entries", "1"])
        // Only the new origins are driven past their limit here.
        .args([
            "--max-send-relay-per-ip-per-sec",
            "100000",
            "--max-send-relay-burst-per-ip",
            "100000",
        ])
        .start();
    let mut refused = 0;
    for i in 0..MINTED {
        let node = Server::p2p(minted(i));
        let resp = put_from(&relay, LOOPBACK, &node, &format!("t{i}"), &bob);
        if i < NEW_ORIGINS {
            resp.assert_status(200);
            continue;
        }
        let wait = retry_after_ms(&resp);
        assert!(
            (3_000_000..=3_600_000).contains(&wait),
            "origin {i}: retry after {wait} ms"
        );
        assert!(resp.text().contains("new origins"), "{resp:?}");
        refused += 1;
    }
    assert_eq!(refused, MINTED - NEW_ORIGINS);
    // A node from another address is not held back.
    let known = Server::p2p([3; 32]);
    put_from(&relay, OTHER, &known, "real", &bob).assert_status(200);
    // Nor is the destination, draining from there.
    assert_eq!(drain_from(&relay, OTHER, &dest, &bob), NEW_ORIGINS + 1);
}

/// Each client address has a budget of `send_relay` requests, and one of
/// `relay_txn` requests apart from it.
#[test]
fn a_client_address_past_its_request_rate_gets_429_with_when_to_come_back() {
    let (node, dest) = (Server::p2p([1; 32]), Server::p2p([2; 32]));
    let bob = dest.user("bob");
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(dest.name())
        .args([
            "--max-send-relay-per-ip-per-sec",
            "1",
            "--max-send-relay-burst-per-ip",
            "3",
        ])
        .start();
    for i in 0..3 {
        put_from(&relay, LOOPBACK, &node, &format!("t{i}"), &bob).assert_status(200);
    }
    let refused = put_from(&relay, LOOPBACK, &node, "t3", &bob);
    let wait = retry_after_ms(&refused);
    assert!((1..=1_000).contains(&wait), "retry after {wait} ms");
    // relay_txn has a budget of its own, and another address its own.
    assert_eq!(drain_from(&relay, LOOPBACK, &dest, &bob), 3);
    put_from(&relay, OTHER, &node, "t4", &bob).assert_status(200);
}

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

/// 200 requests naming a victim origin, signed by a stranger under ten
/// key IDs the victim's document lacks, make the relay fetch the victim's
/// document once: each gets 401, and the victim's own requests still go
/// through with the cached key. The same for a victim whose key server
/// fails: one fetch.
#[test]
fn key_fetches_cannot_be_aimed_at_a_victim() {
    let victim = Server::named("victim.example");
    let down = Server::named("down.example");
    let dest = Server::named(DEST_NAME);
    let victim_keys = StubServer::always(Reply::Json(200, document_of(&victim)));
    let down_keys = StubServer::always(Reply::error(500, "M_UNKNOWN"));
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&dest)
        .arg("--fetch-keys")
        .args([
            "--resolve",
            &format!("victim.example={}", victim_keys.url()),
        ])
        .args(["--resolve", &format!("down.example={}", down_keys.url())])
        .start();
    for target in [&victim, &down] {
        for i in 0..200 {
            let forged = Server::with_seed(target.name(), &format!("k{}", i % 10), [9; 32]);
            put_from(
                &relay,
                LOOPBACK,
                &forged,
                &format!("t{i}"),
                "@bob:dest.example",
            )
            .assert_error(401, "M_UNAUTHORIZED");
        }
    }
    assert_eq!(
        victim_keys.count(),
        1,
        "the victim's keys were fetched once"
    );
    assert_eq!(
        down_keys.count(),
        1,
        "the failing key server was asked once"
    );
    store(&relay, &victim, "real", "@bob:dest.example", "real");
    assert_eq!(victim_keys.count(), 1);
    assert_eq!(
        api::markers(&drain(&relay, &dest, "@bob:dest.example")),
        ["real"]
    );
}

/// `X-Forwarded-For` names the client only when the connection comes from
/// a `--trusted-proxy` (here 127.0.0.2, set in the `--config` file, with a
/// budget of one request per client); of any other peer it is ignored.
#[test]
fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let (node, dest) = (Server::p2p([1; 32]), Server::p2p([2; 32]));
    let bob = dest.user("bob");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "trusted-proxy = [\"127.0.0.2\"]\n\
         max-send-relay-per-ip-per-sec = 1\n\
         max-send-relay-burst-per-ip = 1\n",
    )
    .expect("write config");
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(dest.name())
        .arg("--config")
        .arg(config.display().to_string())
        .start();
    let proxy = OTHER;
    // (the connection's peer, its X-Forwarded-For, the status)
    let cases: [(Ipv4Addr, Option<&str>, u16); 10] = [
        // From an untrusted peer, the header is the client's own word.
        (LOOPBACK, Some("198.51.100.1"), 200),
        (LOOPBACK, Some("198.51.100.2"), 429),
        // Through the proxy: the client it names.
        (proxy, Some("198.51.100.1"), 200),
        (proxy, Some("198.51.100.2"), 200),
        (proxy, Some("198.51.100.1"), 429),
        // The proxy appends the address it saw: what the client wrote
        // before it is not read.
        (proxy, Some("6.6.6.6, 198.51.100.3"), 200),
        (proxy, Some("198.51.100.3"), 429),
        (proxy, Some("198.51.100.3, 198.51.100.4"), 200),
        // Without the header, the proxy is the client.
        (proxy, None, 200),
        (proxy, None, 429),
    ];
    for (i, (peer, forwarded, status)) in cases.into_iter().enumerate() {
        let mut request = put_request(&relay, &node, &format!("t{i}"), &bob);
        if let Some(forwarded) = forwarded {
            request = request.header("X-Forwarded-For", forwarded);
        }
        let resp = request.send_from(peer, relay.addr());
        assert_eq!(
            resp.status, status,
            "case {i}: from {peer} forwarding for {forwarded:?}:\n{resp:?}"
        );
    }
}

/// A range that is not one stops `serve` at start, naming the flag and
/// the range meant.
#[test]
fn a_bad_range_stops_serve_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, value, says) in [
        ("--trusted-proxy", "10.0.0.1/8", "10.0.0.0/8"),
        (
            "--rate-limit-exempt",
            "example.org",
            "expected an IP address",
        ),
    ] {
        let out = Command::new(relay_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--server-name",
                RELAY_NAME,
            ])
            .arg("--signing-key")
            .arg(dir.path().join("k.key"))
            .arg("--database")
            .arg(format!("sqlite:{}", dir.path().join("relay.db").display()))
            .args([flag, value])
            .output()
            .expect("run serve");
        assert_eq!(out.status.code(), Some(1), "{}", describe_exit(out.status));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag) && stderr.contains(says), "{stderr}");
    }
}
