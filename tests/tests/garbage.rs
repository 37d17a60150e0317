//! A few hundred malformed requests from a seeded generator. Every request
//! that is valid HTTP must get a 4xx Matrix error (or a Matrix 500); for
//! bytes that are not HTTP, any 4xx or closing the connection will do. The
//! relay must survive it all, store nothing, and work normally afterwards.
//!
//! Set `GARBAGE_SEED` to replay another sequence.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use relay_core::ServerName;
use relay_core::auth::sign_request;
use relay_tests::api::{markers, relay_txn_path, send_relay_path};
use relay_tests::http::{Request, send_raw, send_raw_then_eof};
use relay_tests::*;
use serde_json::{Map, Value, json};

const ALICE: &str = "@alice:dest.example";

/// What the relay may do with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Valid HTTP that reaches the relay: a Matrix error, 4xx (or 500).
    App,
    /// Not (complete, valid) HTTP: a 4xx or a close.
    Wire,
}

struct Case {
    kind: &'static str,
    class: Class,
    bytes: Vec<u8>,
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if bytes.len() > 300 {
        format!("{s:?}… ({} bytes)", bytes.len())
    } else {
        format!("{s:?}")
    }
}

// ------------------------------------------------------------------ generators

const SAFE: &[u8] = b"ABCXYZabcxyz0123456789-._~!$&'()*+,;=:@";
const TRICKY: &[&str] = &[
    "%",
    "%2",
    "%ZZ",
    "%00",
    "%FF",
    "%C3%28",
    "%ED%A0%80",
    "%E2%82",
    "%2F",
    "%40",
    "%3A",
    "%25",
    "..",
    ".",
    "@",
    ":",
    "@a:b",
    "@a:dest.example",
    "@:dest.example",
    "%40%3A",
    "@a%00:dest.example",
    "@\u{0}",
    "@a:dest.example:0",
];

fn junk_segment(r: &mut Rng) -> String {
    match r.below(10) {
        0 => String::new(),
        1 => {
            let n = r.range(1000, 4000);
            r.string_from(SAFE, n)
        }
        2..=4 => (*r.pick(TRICKY)).replace('\u{0}', "%00"),
        _ => {
            let mut s = String::new();
            for _ in 0..r.range(1, 4) {
                if r.chance(1, 3) {
                    let t: &&str = r.pick(TRICKY);
                    s.push_str(t);
                } else {
                    let n = r.range(1, 30);
                    s.push_str(&r.string_from(SAFE, n));
                }
            }
            s.replace('\u{0}', "%00")
        }
    }
}

fn junk_target(r: &mut Rng) -> String {
    const PREFIXES: &[&str] = &[
        "/_matrix/federation/v1/send_relay/",
        "/_matrix/federation/v1/relay_txn/",
        "/_matrix/federation/v1/",
        "/_matrix/key/v2/",
        "/_matrix/",
        "/",
        "//",
        "/_matrix/federation/v1/send_relay//",
        "/_matrix/federation/v1/send_relay/t/",
    ];
    loop {
        let mut t = match r.below(4) {
            // The shapes of the two relay endpoints, with junk segments.
            0 => format!(
                "/_matrix/federation/v1/send_relay/{}/{}",
                junk_segment(r),
                junk_segment(r)
            ),
            1 => format!("/_matrix/federation/v1/relay_txn/{}", junk_segment(r)),
            _ => {
                let mut t = (*r.pick(PREFIXES)).to_owned();
                for i in 0..r.below(4) {
                    if i > 0 {
                        t.push('/');
                    }
                    t.push_str(&junk_segment(r));
                }
                t
            }
        };
        if r.chance(1, 5) {
            t.push('?');
            t.push_str(&junk_segment(r));
        }
        // Never the two unauthenticated endpoints that answer 200.
        let path = t.split('?').next().unwrap_or_default();
        if !["/_matrix/key/v2/server", "/_matrix/federation/v1/version"].contains(&path) {
            return t;
        }
    }
}

/// Random JSON that is never a valid transaction (no `pdus` key anywhere
/// at the top) and never an entry request of the rightful destination.
fn junk_json(r: &mut Rng, depth: usize) -> Value {
    let pick = if depth > 4 { r.below(5) } else { r.below(8) };
    match pick {
        0 => Value::Null,
        1 => json!(r.chance(1, 2)),
        2 => json!((r.next_u64() % (1 << 53)) as i64 - (1 << 52)),
        3 => json!(r.next_u64()),
        4 => {
            let n = r.range(0, 40);
            let s: String = (0..n)
                .map(|_| {
                    *r.pick(&[
                        'a',
                        'Z',
                        '"',
                        '\\',
                        '\n',
                        '\u{0}',
                        'é',
                        '☃',
                        '\u{1F600}',
                        '\u{FFFF}',
                        ' ',
                    ])
                })
                .collect();
            json!(s)
        }
        5 | 6 => {
            let n = r.range(0, 5);
            Value::Array((0..n).map(|_| junk_json(r, depth + 1)).collect())
        }
        _ => {
            let mut m = Map::new();
            for _ in 0..r.range(0, 5) {
                let k = *r.pick(&[
                    "edus",
                    "origin",
                    "entry_id",
                    "origin_server_ts",
                    "x",
                    "",
                    "\u{0}",
                    "pdu",
                    "PDUS",
                ]);
                m.insert(k.to_owned(), junk_json(r, depth + 1));
            }
            Value::Object(m)
        }
    }
}

fn junk_body(r: &mut Rng) -> Vec<u8> {
    match r.below(16) {
        0 => Vec::new(),
        1 => {
            let n = r.range(1, 2000);
            r.bytes(n)
        }
        2 => "[".repeat(r.range(100, 20_000)).into_bytes(),
        3 => format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        4 => b"{\"pdus\": [1e999]}".to_vec(),
        5 => b"{\"pdus\": [1.5], \"edus\": []}".to_vec(),
        6 => b"{\"pdus\": [\"\\ud800\"]}".to_vec(),
        7 => b"{\"pdus\": [\"\xff\xfe\xfd\"]}".to_vec(),
        8 => b"{\"pdus\": [], \"pdus\": {}}".to_vec(),
        9 => b"{\"pdus\": NaN}".to_vec(),
        10 => format!("{{\"pdus\": \"{}\"}}", "x".repeat(r.range(10_000, 200_000))).into_bytes(),
        11 => format!(
            "{{\"pdus\": [{}]}}",
            vec!["{}"; r.range(51, 2000)].join(",")
        )
        .into_bytes(),
        12 => format!(
            "{{\"entry_id\": {}}}",
            r.pick(&["-1", "1e3", "18446744073709551616", "-0", "0.5", "\"7\""])
        )
        .into_bytes(),
        13 => b"\xef\xbb\xbf{\"pdus\": []".to_vec(),
        _ => serde_json::to_vec(&junk_json(r, 0)).expect("serialise"),
    }
}

/// An Authorization header from `server` over the request, with content
/// when the body is canonical JSON, without otherwise.
fn sign_any(server: &Server, method: &str, target: &str, body: &[u8]) -> String {
    let origin = ServerName::parse(server.name()).expect("server name");
    let relay = ServerName::parse(RELAY_NAME).expect("relay name");
    let content: Option<Value> = serde_json::from_slice(body)
        .ok()
        .filter(|_| !body.is_empty());
    sign_request(
        server.key(),
        &origin,
        &relay,
        method,
        target,
        content.as_ref(),
    )
    .or_else(|_| sign_request(server.key(), &origin, &relay, method, target, None))
    .expect("signing without content cannot fail")
}

fn junk_authorization(r: &mut Rng, good: &str) -> Vec<u8> {
    match r.below(8) {
        0 => {
            let n = r.range(0, 300);
            r.string_from(
                b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCXYZ[\\]^_`abcxyz{|}~",
                n,
            )
            .into_bytes()
        }
        1 => {
            let mut v = b"X-Matrix ".to_vec();
            let n = r.range(1, 200);
            v.extend((0..n).map(|_| 0x80 + (r.next_u64() % 0x80) as u8));
            v
        }
        2 => format!("X-Matrix {}", "origin=\"a\",".repeat(r.range(100, 2000))).into_bytes(),
        3 => {
            // The good header with one signature character changed (not
            // the last two, whose spare bits a lenient decoder ignores).
            let mut v = good.as_bytes().to_vec();
            let start = good.find("sig=\"").expect("sig") + 5;
            let i = start + r.below(80);
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut c = *r.pick(alphabet);
            while c == v[i] {
                c = *r.pick(alphabet);
            }
            v[i] = c;
            v
        }
        4 => good.as_bytes()[..r.range(0, good.len() - 1)].to_vec(),
        5 => format!("{good},{good}").into_bytes(),
        6 => {
            let parts = [
                "origin=",
                "destination=",
                "key=",
                "sig=",
                "\"",
                ",",
                " ",
                "\\",
                "ed25519:1",
                "relay.example",
                "origin.example",
                "==",
            ];
            let n = r.range(1, 30);
            let s: String = (0..n).map(|_| *r.pick(&parts)).collect();
            format!("X-Matrix {s}").into_bytes()
        }
        _ => format!(
            "X-Matrix origin=\"{}\",key=\"ed25519:1\",sig=\"{}\"",
            "a".repeat(r.range(300, 5000)),
            "A".repeat(86)
        )
        .into_bytes(),
    }
}

fn app_cases(r: &mut Rng, origin: &Server, n: usize) -> Vec<Case> {
    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];
    (0..n)
        .map(|i| match i % 3 {
            0 => {
                let target = junk_target(r);
                // Mostly the endpoint's own method, so checks past routing run.
                let method = match () {
                    () if !r.chance(3, 4) => *r.pick(&methods),
                    () if target.contains("/send_relay/") => "PUT",
                    () => "GET",
                };
                let body = junk_body(r);
                let mut req = Request::new(method, &target).body(body.clone());
                if r.chance(1, 2) {
                    req = req.header("Authorization", &sign_any(origin, method, &target, &body));
                }
                Case {
                    kind: "junk target",
                    class: Class::App,
                    bytes: req.to_bytes(),
                }
            }
            1 => {
                let (method, target) = if r.chance(2, 3) {
                    ("PUT", send_relay_path(&format!("g{i}"), ALICE))
                } else {
                    ("GET", relay_txn_path(ALICE))
                };
                let body = junk_body(r);
                let auth = sign_any(origin, method, &target, &body);
                let req = Request::new(method, &target)
                    .header("Authorization", &auth)
                    .body(body);
                Case {
                    kind: "signed junk body",
                    class: Class::App,
                    bytes: req.to_bytes(),
                }
            }
            _ => {
                let target = send_relay_path(&format!("h{i}"), ALICE);
                let body =
                    serde_json::to_vec(&txn_body(ORIGIN_NAME, "junk-header")).expect("serialise");
                let good = sign_any(origin, "PUT", &target, &body);
                let mut req = Request::new("PUT", &target)
                    .header_bytes("Authorization", &junk_authorization(r, &good))
                    .body(body);
                if r.chance(1, 3) {
                    req = req.header_bytes(
                        "Content-Type",
                        &r.string_from(b"abc/;= \"*", 20).into_bytes(),
                    );
                }
                Case {
                    kind: "junk authorization",
                    class: Class::App,
                    bytes: req.to_bytes(),
                }
            }
        })
        .collect()
}

fn wire_cases(r: &mut Rng, origin: &Server, n: usize) -> Vec<Case> {
    let target = send_relay_path("w", ALICE);
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "wire")).expect("serialise");
    let valid = signed_request(origin, RELAY_NAME, "PUT", &target, &body).to_bytes();
    let head = |extra: &str| {
        format!("PUT {target} HTTP/1.1\r\nHost: relay.example\r\n{extra}\r\n").into_bytes()
    };
    let mut fixed: Vec<(&'static str, Vec<u8>)> = vec![
        ("header line without colon", head("Bad Header Line\r\nContent-Length: 0\r\n")),
        ("space in header name", head("Bad Name: v\r\nContent-Length: 0\r\n")),
        ("NUL in header value", head("X-A: a\0b\r\nContent-Length: 0\r\n")),
        ("CR alone", b"GET / HTTP/1.1\rHost: x\r\r".to_vec()),
        ("bare LF", b"GET /nothing HTTP/1.1\nHost: x\n\n".to_vec()),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n".to_vec()),
        ("HTTP/9.9", b"GET / HTTP/9.9\r\n\r\n".to_vec()),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec()),
        ("lower-case method", b"get /nothing HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("method with symbols", b"G{}T /nothing HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("invalid UTF-8 in target", b"GET /_matrix/federation/v1/relay_txn/@\xff\xfe:dest.example HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("control byte in target", b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("absolute-form target", format!("PUT http://relay.example{target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").into_bytes()),
        ("asterisk target", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("Content-Length not a number", head("Content-Length: abc\r\n")),
        ("negative Content-Length", head("Content-Length: -1\r\n")),
        ("overflowing Content-Length", head("Content-Length: 99999999999999999999999\r\n")),
        ("two Content-Lengths", [head("Content-Length: 2\r\nContent-Length: 3\r\n"), b"{}x".to_vec()].concat()),
        ("Content-Length and chunked", [head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), b"2\r\n{}\r\n0\r\n\r\n".to_vec()].concat()),
        ("bad chunk size", [head("Transfer-Encoding: chunked\r\n"), b"zz\r\n{}\r\n0\r\n\r\n".to_vec()].concat()),
        ("huge chunk size", [head("Transfer-Encoding: chunked\r\n"), b"ffffffffffffffffff\r\n{}\r\n".to_vec()].concat()),
        ("unknown transfer coding", [head("Transfer-Encoding: gzip\r\n"), b"{}".to_vec()].concat()),
        ("huge Content-Length, short body", [head("Content-Length: 1000000000\r\n"), body.clone()].concat()),
        ("200 KB header value", head(&format!("X-Big: {}\r\nContent-Length: 0\r\n", "v".repeat(200_000)))),
        ("2000 headers", head(&format!("{}Content-Length: 0\r\n", "X-H: v\r\n".repeat(2000)))),
        ("100 KB target", format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes()),
        (
            "request then garbage",
            [Request::new("GET", "/nothing").header("Connection", "keep-alive").to_bytes(), b"\x00\x01garbage\r\n\r\n".to_vec()].concat(),
        ),
        ("only CRLFs", b"\r\n\r\n\r\n\r\n".to_vec()),
        ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
    ];
    let mut cases: Vec<Case> = fixed
        .drain(..)
        .map(|(kind, bytes)| Case {
            kind,
            class: Class::Wire,
            bytes,
        })
        .collect();
    while cases.len() < n {
        let bytes = if r.chance(1, 2) {
            let len = r.range(1, 3000);
            r.bytes(len)
        } else {
            valid[..r.range(1, valid.len() - 1)].to_vec()
        };
        let kind = if bytes.len() < valid.len() && valid.starts_with(&bytes) {
            "truncated request"
        } else {
            "random bytes"
        };
        cases.push(Case {
            kind,
            class: Class::Wire,
            bytes,
        });
    }
    cases
}

// -------------------------------------------------------------------- judging

/// Checks one case; on success, what happened (a status, or `closed`).
fn judge(relay: std::net::SocketAddr, case: &Case) -> Result<String, String> {
    let outcome = match case.class {
        Class::App => send_raw(relay, &case.bytes, Duration::from_secs(15)),
        Class::Wire => send_raw_then_eof(relay, &case.bytes, Duration::from_secs(5)),
    }
    .map_err(|e| format!("cannot connect: {e}"))?;
    let Some(parsed) = outcome.response() else {
        return match case.class {
            Class::App => Err(format!(
                "no response (timed out: {}, write error: {:?})",
                outcome.timed_out, outcome.write_error
            )),
            Class::Wire if outcome.timed_out => {
                Err("connection neither answered nor closed after EOF".into())
            }
            Class::Wire => Ok("closed".into()),
        };
    };
    let resp = parsed.map_err(|e| format!("not an HTTP response: {e}"))?;
    let matrix_error = resp.is_json()
        && serde_json::from_slice::<Value>(&resp.body).is_ok_and(|b| {
            b["errcode"].as_str().is_some_and(|c| c.starts_with("M_")) && b["error"].is_string()
        });
    let label = format!("{} {}", resp.status, resp.errcode().unwrap_or_default());
    match (case.class, resp.status) {
        (Class::App, 400..=499) if matrix_error => Ok(label),
        (Class::App, 400..=499) => Err(format!("4xx without a Matrix error body:\n{resp:?}")),
        (Class::Wire, 400..=499) => Ok(label),
        (_, 500) if matrix_error && resp.errcode().as_deref() == Some("M_UNKNOWN") => {
            eprintln!("note: {} answered 500 M_UNKNOWN", case.kind);
            Ok(label)
        }
        _ => Err(format!("unexpected answer:\n{resp:?}")),
    }
}

#[test]
fn hundreds_of_malformed_requests_leave_the_relay_working() {
    let seed: u64 = std::env::var("GARBAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0F6A);
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let mut relay = RelayProcess::standard(&[&origin, &dest]);
    let mut r = Rng::new(seed);
    let mut cases = app_cases(&mut r, &origin, 150);
    cases.extend(wire_cases(&mut r, &origin, 150));
    let total = cases.len();
    let cases = Arc::new(cases);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let outcomes = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let addr = relay.addr();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let cases = Arc::clone(&cases);
            let failures = Arc::clone(&failures);
            let outcomes = Arc::clone(&outcomes);
            thread::spawn(move || {
                for (i, case) in cases.iter().enumerate().skip(w).step_by(4) {
                    match judge(addr, case) {
                        Ok(label) => {
                            let key = format!("{:?} {:<18} -> {label}", case.class, case.kind);
                            *outcomes.lock().expect("lock").entry(key).or_default() += 1;
                        }
                        Err(why) => failures.lock().expect("lock").push(format!(
                            "case #{i} ({}, {:?}) {}: {why}",
                            case.kind,
                            case.class,
                            preview(&case.bytes)
                        )),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    for (outcome, n) in outcomes.lock().expect("lock").iter() {
        eprintln!("{n:4}  {outcome}");
    }
    assert!(
        relay.is_running(),
        "the relay died (seed {seed}):\n{}",
        relay.stderr_log()
    );
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed (seed {seed}):\n{}",
        failures.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // Nothing was stored, and a normal exchange works.
    assert!(drain(&relay, &dest, ALICE).is_empty(), "garbage was stored");
    store(&relay, &origin, "after-garbage", ALICE, "fine");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["fine"]);
    let status = relay.terminate();
    assert_eq!(status.code(), Some(0), "exit after garbage: {status:?}");
}
