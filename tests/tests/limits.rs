//! What strangers can make the relay hold: connections in all and per
//! client address, and request bodies in memory. Each is driven past, and
//! memory stays under a ceiling while 400 connections hold 4 MiB bodies
//! open.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use relay_tests::api::markers;
use relay_tests::http::{RawOutcome, connect_from};
use relay_tests::process::{describe_exit, relay_binary};
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";
const MIB: usize = 1 << 20;

/// Sends `bytes` (if any) on `stream`, then reads until the relay closes
/// it; the response read, or `None` if nothing came.
fn exchange(mut stream: TcpStream, bytes: &[u8]) -> Option<HttpResponse> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let write_error = stream.write_all(bytes).err();
    let mut received = Vec::new();
    let timed_out = match stream.read_to_end(&mut received) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    };
    assert!(!timed_out, "the relay neither answered nor closed");
    let outcome = RawOutcome {
        received,
        timed_out,
        write_error,
    };
    outcome
        .response()
        .map(|r| r.unwrap_or_else(|e| panic!("not a response: {e}")))
}

fn version_request() -> Vec<u8> {
    Request::new("GET", "/_matrix/federation/v1/version").to_bytes()
}

/// Asserts `resp` is the relay's refusal of a connection past a cap.
#[track_caller]
fn assert_refused(resp: Option<HttpResponse>, why: &str) {
    let resp = resp.expect("a refused plain-HTTP connection gets a 503 before it is closed");
    resp.assert_error(503, "M_LIMIT_EXCEEDED");
    assert!(resp.header("retry-after").is_some(), "{resp:?}");
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(resp.text().contains(why), "{resp:?}");
}

/// A request from `local` for the version, retried until it gets in (the
/// relay counts a closed connection out once it has noticed the close).
#[track_caller]
fn gets_in_soon(local: Ipv4Addr, relay: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = exchange(connect_from(local, relay), &version_request()).expect("an answer");
        if resp.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{local} still refused after its connections closed:\n{resp:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_connection_past_the_per_address_cap_is_refused_while_another_address_gets_in() {
    let relay = RelayProcess::builder()
        .args(["--max-connections-per-ip", "3"])
        .start();
    let addr = relay.addr();
    let crowded = Ipv4Addr::new(127, 0, 0, 2);
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from(crowded, addr)).collect();
    // Accepted in order: the fourth comes after the three are counted.
    assert_refused(
        exchange(connect_from(crowded, addr), &[]),
        "from your address",
    );
    // Another address still gets in, and so do the three held ones.
    let other = exchange(
        connect_from(Ipv4Addr::new(127, 0, 0, 3), addr),
        &version_request(),
    )
    .expect("an answer");
    other.assert_status(200);
    let first = held.remove(0);
    exchange(first, &version_request())
        .expect("an answer")
        .assert_status(200);
    // The relay closed that one after answering: its place is free again.
    gets_in_soon(crowded, addr);
    drop(held);
}

#[test]
fn a_connection_past_the_total_cap_is_refused_from_any_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "max-connections = 3\n").expect("write config");
    let relay = RelayProcess::builder()
        .arg("--config")
        .arg(config.display().to_string())
        .start();
    let addr = relay.addr();
    let mut held: Vec<TcpStream> = (4..7)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 0, i), addr))
        .collect();
    let fresh = Ipv4Addr::new(127, 0, 0, 7);
    // Nothing is sent first: a request the relay leaves unread may turn
    // its close into a reset that overtakes the answer.
    assert_refused(
        exchange(connect_from(fresh, addr), &[]),
        "too many connections",
    );
    drop(held.remove(0));
    gets_in_soon(fresh, addr);
}

#[test]
fn over_tls_a_connection_past_a_cap_is_closed_without_a_handshake() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (chain, key) = ca.server_pem(&[RELAY_NAME]);
    let (cert_path, key_path) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, chain).expect("write the certificate");
    std::fs::write(&key_path, key).expect("write the key");
    let relay = RelayProcess::builder()
        .arg("--tls-cert")
        .arg(cert_path.display().to_string())
        .arg("--tls-key")
        .arg(key_path.display().to_string())
        .args(["--max-connections-per-ip", "1"])
        .start();
    let local = Ipv4Addr::new(127, 0, 0, 8);
    let _held = connect_from(local, relay.addr());
    // An admitted connection would wait for its ClientHello; this one is
    // closed at once, with nothing written.
    let mut refused = connect_from(local, relay.addr());
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut received = Vec::new();
    match refused.read_to_end(&mut received) {
        Ok(_) => assert!(received.is_empty(), "{received:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn limits_that_cannot_hold_one_body_stop_serve_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
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
        .args([
            "--max-body-bytes",
            "4000000",
            "--max-buffered-bytes",
            "4000000",
        ])
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1), "{}", describe_exit(out.status));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-buffered-bytes"), "{stderr}");
}

/// A signed transaction of about `bytes` bytes (PDUs of 60 KB).
fn big_txn(from: &Server, marker: &str, bytes: usize) -> Vec<u8> {
    let pdus: Vec<_> = (0..bytes / 60_000)
        .map(|i| json!({"marker": marker, "i": i, "pad": "x".repeat(60_000)}))
        .collect();
    let body = json!({"origin": from.name(), "origin_server_ts": 1, "pdus": pdus, "edus": []});
    serde_json::to_vec(&body).expect("serialise")
}

#[test]
fn a_body_past_the_budget_waits_then_gets_503_while_small_ones_pass() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        // Bodies over 64 KiB may have 3 MiB of it, small ones all 4 MiB.
        .args(["--max-buffered-bytes", &(4 * MIB).to_string()])
        .max_body_bytes(3 * MIB)
        .start();
    let addr = relay.addr();
    let put = |txn: &str, body: &[u8]| {
        signed_request(
            &origin,
            RELAY_NAME,
            "PUT",
            &send_relay_path(txn, ALICE),
            body,
        )
    };
    // One body of 3 MiB (padded with whitespace), unsent: it takes what
    // big bodies may have once the relay asks for it (100 Continue is sent
    // when it starts reading).
    let mut first_body = big_txn(&origin, "first", 3_000_000);
    first_body.resize(3 * MIB, b' ');
    let mut first = put("first", &first_body)
        .header("Expect", "100-continue")
        .send_partially(addr, 0)
        .expect("send the head");
    assert_eq!(first.await_interim(Duration::from_secs(10)), Some(100));
    // A second big one finds no room: 503 after a brief wait, unread.
    let second_body = big_txn(&origin, "second", 1_800_000);
    let second = put("second", &second_body);
    let head = second.to_bytes();
    let head = &head[..head.len() - second_body.len()];
    let started = Instant::now();
    let refused = exchange(TcpStream::connect(addr).expect("connect"), head).expect("an answer");
    let waited = started.elapsed();
    refused.assert_error(503, "M_LIMIT_EXCEEDED");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(refused.json()["retry_after_ms"], 1000, "{refused:?}");
    eprintln!("the second body was refused after {waited:?}");
    // A small transaction gets in meanwhile, on the quarter kept for them.
    store(&relay, &origin, "small", ALICE, "small");
    // The first one completes; its room is given back, and the second
    // now fits.
    first.finish().expect("an answer").assert_status(200);
    second.send(addr).assert_status(200);
    let stored = markers(&drain(&relay, &dest, ALICE));
    assert_eq!(stored, ["small", "first", "second"]);
}

/// One attacking connection: the head and all but the last byte of a
/// body, written as far as the socket takes it.
struct Attacker {
    stream: TcpStream,
    sent: usize,
}

impl Attacker {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nonblocking(true).expect("non-blocking");
        // What the relay does not read waits in this socket's buffer: kept
        // small, so 400 of them stay a modest load on the test machine.
        let size: libc::c_int = 128 << 10;
        // SAFETY: sets an int option on a socket the stream owns.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_SNDBUF: {}", io::Error::last_os_error());
        Self { stream, sent: 0 }
    }

    /// Writes what the socket takes of `bytes` (all but the last byte);
    /// `Err` once the relay has closed the connection.
    fn push(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut written = 0;
        while self.sent < bytes.len() - 1 {
            match self.stream.write(&bytes[self.sent..bytes.len() - 1]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // A refusal may come before the socket is full.
        let mut buf = [0u8; 512];
        match self.stream.read(&mut buf) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Err(io::ErrorKind::ConnectionAborted.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(written),
            Err(e) => Err(e),
        }
    }
}

#[test]
fn four_hundred_held_back_bodies_stay_under_the_memory_ceiling() {
    const CONNECTIONS: usize = 400;
    const BODY: usize = 4 * MIB;
    const CEILING: u64 = 400 * 1024 * 1024;
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .p2p_keys()
        .args(["--max-connections-per-ip", "1000"])
        // Attackers that come straight back and the honest sender share
        // one address: past its request rate, which would refuse bodies
        // before they are held, and the memory they hold is measured.
        .args(["--rate-limit-exempt", "127.0.0.1"])
        .start();
    let addr = relay.addr();
    let before = relay.peak_rss();
    // A P2P origin (its name is its key) with a well-formed header: the
    // relay reads its body.
    let stranger = Server::p2p([7; 32]);
    let target = send_relay_path("held", ALICE);
    let mut request = Request::new("PUT", &target)
        .header(
            "Authorization",
            &stranger.authorization(RELAY_NAME, "PUT", &target, b""),
        )
        .header("Content-Type", "application/json")
        .header("Content-Length", &BODY.to_string())
        .to_bytes();
    request.resize(request.len() + BODY, b' ');
    let mut attackers: Vec<Attacker> = (0..CONNECTIONS).map(|_| Attacker::connect(addr)).collect();
    let started = Instant::now();
    let (mut written, mut closed, mut sent_normal) = (0usize, 0usize, false);
    while started.elapsed() < Duration::from_secs(6) {
        let mut progress = 0;
        for a in &mut attackers {
            match a.push(&request) {
                Ok(n) => progress += n,
                // Refused for want of room: an attacker comes straight back.
                Err(_) => {
                    closed += 1;
                    *a = Attacker::connect(addr);
                }
            }
        }
        written += progress;
        if !sent_normal && started.elapsed() > Duration::from_secs(2) {
            let sent = Instant::now();
            store(&relay, &origin, "normal", ALICE, "normal");
            eprintln!("a normal send got 200 in {:?} under attack", sent.elapsed());
            sent_normal = true;
        }
        if progress == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let peak = relay.peak_rss();
    eprintln!(
        "relay VmHWM {} MiB before, {} MiB after 6 s of {CONNECTIONS} connections \
         ({} MiB written, {closed} connections refused and reopened)",
        before >> 20,
        peak >> 20,
        written >> 20
    );
    assert!(sent_normal);
    assert!(
        peak < CEILING,
        "the relay's peak RSS reached {} MiB",
        peak >> 20
    );
    drop(attackers);
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["normal"]);
}
