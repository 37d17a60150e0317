//! Resource attacks on a relay, as a stranger would make them, with the
//! figures that say whether the relay held: its peak memory, CPU time,
//! threads, and how long honest requests waited meanwhile.
//!
//! ```sh
//! cargo build --release -p matrix-relay
//! MATRIX_RELAY_BIN=target/release/matrix-relay \
//!     cargo run --release -p relay-tests --example attacks -- [ATTACK...]
//! ```
//!
//! Attacks (all by default): `bodies` (400 connections each declaring a
//! 4 MiB body, no `Authorization`, all but the last byte sent), `p2p-bodies`
//! (the same with a valid-looking P2P header), `keydoc` (with
//! `--fetch-keys`, one request naming an origin whose key document lists
//! 4,000 keys with bogus signatures), `big-keydoc` (a 10 MiB key document),
//! `cpu` (three senders of 4 MiB signed P2P bodies at 3 requests/s each,
//! while `/version` is timed), `dns` (1,000 requests naming origins whose
//! DNS never answers, while a valid P2P send is timed). Each starts its own
//! relay (`MATRIX_RELAY_RUNTIME` picks the runtime) and prints one line.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use relay_tests::api::send_relay_path;
use relay_tests::http::Request;
use relay_tests::identity::{RELAY_NAME, Server, signed_request};
use relay_tests::process::{RelayBuilder, RelayProcess, proc_status};
use relay_tests::stub::{Reply, StubServer};
use serde_json::json;

/// `serve` flags of this binary, to leave out what an older one lacks.
fn serve_help() -> String {
    let out = std::process::Command::new(relay_tests::process::relay_binary())
        .args(["serve", "--help"])
        .output()
        .expect("run matrix-relay serve --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `flag value`, if this binary has `flag`.
fn if_supported(flag: &str, value: &str) -> Vec<String> {
    if serve_help().contains(flag) {
        vec![flag.to_owned(), value.to_owned()]
    } else {
        Vec::new()
    }
}

fn main() {
    let asked: Vec<String> = std::env::args().skip(1).collect();
    let all = ["bodies", "p2p-bodies", "keydoc", "big-keydoc", "cpu", "dns"];
    let chosen: Vec<&str> = if asked.is_empty() {
        all.to_vec()
    } else {
        asked.iter().map(String::as_str).collect()
    };
    for attack in chosen {
        match attack {
            "bodies" => bodies(false),
            "p2p-bodies" => bodies(true),
            "keydoc" => keydoc(KeyDoc::ManyKeys(4_000)),
            "big-keydoc" => keydoc(KeyDoc::Bytes(10 << 20)),
            "cpu" => cpu(),
            "dns" => dns(),
            other => panic!("unknown attack {other:?}; known: {all:?}"),
        }
    }
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// A signed P2P send of a small transaction; its status and latency.
fn honest_send(relay: &RelayProcess, node: &Server, txn: &str) -> (u16, Duration) {
    let dest = Server::p2p([9; 32]);
    let body = json!({"origin": node.name(), "origin_server_ts": 1, "pdus": [{"honest": txn}]});
    let body = serde_json::to_vec(&body).expect("json");
    let target = send_relay_path(txn, &dest.user("u"));
    let started = Instant::now();
    let status =
        match signed_request(node, RELAY_NAME, "PUT", &target, &body).try_send(relay.addr()) {
            Ok(response) => response.status,
            Err(_) => 0,
        };
    (status, started.elapsed())
}

/// 400 connections each declaring a 4 MiB body, all but its last byte sent
/// as far as the relay reads; then an honest send.
fn bodies(p2p_header: bool) {
    let relay = RelayBuilder::new()
        .open()
        .p2p_keys()
        .args(if_supported("--max-connections-per-ip", "1000"))
        .start();
    let declared = 4 << 20;
    let attacker = Server::p2p([7; 32]);
    let dest = Server::p2p([9; 32]);
    let mut conns = Vec::new();
    for i in 0..400 {
        let target = send_relay_path(&format!("a{i}"), &dest.user("u"));
        let mut head = format!(
            "PUT {target} HTTP/1.1\r\nHost: {RELAY_NAME}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n"
        );
        if p2p_header {
            // Well-formed and naming a key the relay can resolve; the
            // signature cannot verify, but only once the body is read.
            head.push_str(&format!(
                "Authorization: X-Matrix origin=\"{}\",destination=\"{RELAY_NAME}\",key=\"ed25519:{}\",sig=\"{}\"\r\n",
                attacker.name(),
                relay_tests::identity::P2P_KEY_VERSION,
                "A".repeat(86)
            ));
        }
        head.push_str("\r\n");
        let Ok(mut stream) = TcpStream::connect(relay.addr()) else {
            continue;
        };
        if stream.write_all(head.as_bytes()).is_err() {
            continue;
        }
        let _ = stream.set_nonblocking(true);
        conns.push((stream, declared - 1));
    }
    let opened = conns.len();
    let chunk = vec![b' '; 64 << 10];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let mut progress = false;
        for (stream, left) in &mut conns {
            if *left == 0 {
                continue;
            }
            match stream.write(&chunk[..chunk.len().min(*left)]) {
                Ok(n) if n > 0 => {
                    *left -= n;
                    progress = true;
                }
                _ => {}
            }
        }
        if !progress {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let sent: usize = conns.iter().map(|(_, left)| declared - 1 - left).sum();
    let honest = honest_send(&relay, &Server::p2p([5; 32]), "honest");
    println!(
        "{}: {opened} connections, {} MiB of bodies sent in 6 s; relay peak RSS {}, now {}; an honest send meanwhile: {} in {:?}",
        if p2p_header { "p2p-bodies" } else { "bodies" },
        sent >> 20,
        mib(relay.peak_rss() >> 10),
        mib(proc_status(relay.pid().expect("the relay runs"), "VmRSS").unwrap_or(0)),
        honest.0,
        honest.1
    );
}

/// What the attacker's key server answers.
enum KeyDoc {
    /// A document listing this many keys, none of which signed it.
    ManyKeys(usize),
    /// A document of about this many bytes.
    Bytes(usize),
}

/// `GET /_matrix/federation/v1/version`'s latency, sampled every 10 ms by a
/// thread until `stop`; the worst seen.
fn time_version(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Duration>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let _ = Request::new("GET", "/_matrix/federation/v1/version").try_send(addr);
            seen.push(started.elapsed());
            thread::sleep(Duration::from_millis(10));
        }
        seen
    })
}

fn summary(mut seen: Vec<Duration>) -> String {
    seen.sort();
    let at = |p: f64| seen[((seen.len() - 1) as f64 * p) as usize];
    if seen.is_empty() {
        return "no samples".to_owned();
    }
    format!("p50 {:?}, p99 {:?}, max {:?}", at(0.5), at(0.99), at(1.0))
}

fn keydoc(doc: KeyDoc) {
    let origin = "attacker.example";
    let text = match doc {
        KeyDoc::ManyKeys(n) => {
            let keys: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (format!("ed25519:k{i}"), json!({"key": "A".repeat(43)})))
                .collect();
            let sigs: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (format!("ed25519:k{i}"), json!("B".repeat(86))))
                .collect();
            json!({"server_name": origin, "valid_until_ts": 4_000_000_000_000_u64,
                   "verify_keys": keys, "old_verify_keys": {}, "signatures": {origin: sigs}})
            .to_string()
        }
        KeyDoc::Bytes(n) => json!({"server_name": origin, "valid_until_ts": 4_000_000_000_000_u64,
                   "verify_keys": {}, "old_verify_keys": {}, "padding": "x".repeat(n)})
        .to_string(),
    };
    let size = text.len();
    let stub = StubServer::always(Reply::Json(200, text));
    let relay = RelayBuilder::new()
        .open()
        .args([
            "--fetch-keys",
            "--resolve",
            &format!("{origin}={}", stub.url()),
        ])
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let timer = time_version(relay.addr(), stop.clone());
    thread::sleep(Duration::from_millis(200));
    let before = relay.cpu_time();
    let attacker = Server::named(origin);
    let started = Instant::now();
    let (status, _) = {
        let dest = Server::named("dest.example");
        let body = br#"{"pdus":[]}"#;
        let target = send_relay_path("k1", &dest.user("u"));
        let response = signed_request(&attacker, RELAY_NAME, "PUT", &target, body)
            .try_send(relay.addr())
            .map(|r| r.status)
            .unwrap_or(0);
        (response, ())
    };
    let took = started.elapsed();
    thread::sleep(Duration::from_millis(200));
    let cpu = relay.cpu_time().saturating_sub(before);
    stop.store(true, Ordering::SeqCst);
    let version = timer.join().expect("timer");
    println!(
        "keydoc ({} KiB document): answered {status} in {took:?}, relay CPU {cpu:?}; /version meanwhile: {}",
        size >> 10,
        summary(version)
    );
}

fn cpu() {
    let relay = RelayBuilder::new()
        .open()
        .p2p_keys()
        .args(if_supported("--max-connections-per-ip", "1000"))
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let timer = time_version(relay.addr(), stop.clone());
    let addr = relay.addr();
    let senders: Vec<_> = (0..3u8)
        .map(|s| {
            let stop = stop.clone();
            thread::spawn(move || {
                let node = Server::p2p([20 + s; 32]);
                let dest = Server::p2p([9; 32]);
                // 50 PDUs of ~60 KB and 20 EDUs of ~50 KB: about 4 MiB.
                let pdu = json!({"type": "m.room.message", "content": {"body": "p".repeat(60_000)}});
                let edu = json!({"edu_type": "m.typing", "content": {"x": "e".repeat(50_000)}});
                let mut sent = 0u32;
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let body = json!({"origin": node.name(), "origin_server_ts": sent,
                                      "pdus": vec![pdu.clone(); 50], "edus": vec![edu.clone(); 20]});
                    let body = serde_json::to_vec(&body).expect("json");
                    let target = send_relay_path(&format!("c{s}-{sent}"), &dest.user("u"));
                    let status = signed_request(&node, RELAY_NAME, "PUT", &target, &body)
                        .try_send(addr)
                        .map(|r| r.status)
                        .unwrap_or(0);
                    statuses.push(status);
                    sent += 1;
                    thread::sleep(Duration::from_millis(333).saturating_sub(started.elapsed()));
                }
                statuses
            })
        })
        .collect();
    let before = relay.cpu_time();
    thread::sleep(Duration::from_secs(10));
    let cpu = relay.cpu_time().saturating_sub(before);
    stop.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for s in senders {
        statuses.extend(s.join().expect("sender"));
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    println!(
        "cpu: {} sends of ~4 MiB in 10 s ({ok} answered 200), relay CPU {cpu:?}; /version meanwhile: {}",
        statuses.len(),
        summary(timer.join().expect("timer"))
    );
}

/// A nameserver that reads every question and never answers.
fn silent_nameserver() -> (SocketAddr, Arc<AtomicBool>) {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = udp.local_addr().expect("addr");
    let tcp = std::net::TcpListener::bind(addr).expect("bind tcp");
    let stop = Arc::new(AtomicBool::new(false));
    let _ = udp.set_read_timeout(Some(Duration::from_millis(100)));
    let s = stop.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !s.load(Ordering::SeqCst) {
            let _ = udp.recv_from(&mut buf);
        }
    });
    let s = stop.clone();
    let _ = tcp.set_nonblocking(true);
    thread::spawn(move || {
        let mut held = Vec::new();
        while !s.load(Ordering::SeqCst) {
            match tcp.accept() {
                Ok((conn, _)) => held.push(conn),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(_) => break,
            }
        }
    });
    (addr, stop)
}

fn dns() {
    let (nameserver, stop_ns) = silent_nameserver();
    let relay = RelayBuilder::new()
        .open()
        .p2p_keys()
        .args(["--fetch-keys", "--dns-server", &nameserver.to_string()])
        .args(if_supported("--max-connections-per-ip", "2000"))
        .start();
    let addr = relay.addr();
    let dest = Server::named("dest.example");
    let mut pending = Vec::new();
    for i in 0..1_000 {
        let origin = Server::named(&format!("o{i}.invalid-dns.example"));
        let body = br#"{"pdus":[]}"#;
        let target = send_relay_path(&format!("d{i}"), &dest.user("u"));
        let bytes = signed_request(&origin, RELAY_NAME, "PUT", &target, body).to_bytes();
        if let Ok(mut stream) = TcpStream::connect(addr)
            && stream.write_all(&bytes).is_ok()
        {
            pending.push(stream);
        }
    }
    thread::sleep(Duration::from_secs(1));
    let threads = (0..10)
        .map(|_| {
            thread::sleep(Duration::from_millis(100));
            proc_status(relay.pid().expect("the relay runs"), "Threads").unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let honest = honest_send(&relay, &Server::p2p([5; 32]), "honest");
    // How many of the 1,000 were answered by now (none should have timed out yet).
    let mut answered = 0;
    for stream in &mut pending {
        let _ = stream.set_nonblocking(true);
        let mut b = [0u8; 1];
        if matches!(stream.read(&mut b), Ok(n) if n > 0) {
            answered += 1;
        }
    }
    stop_ns.store(true, Ordering::SeqCst);
    println!(
        "dns: {} requests pending on silent DNS; relay threads (max of 10 samples) {threads}; \
         an honest P2P send meanwhile: {} in {:?}; {answered} of the 1,000 answered by then",
        pending.len(),
        honest.0,
        honest.1
    );
}
