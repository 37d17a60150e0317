//! A small real HTTP server standing in for a Matrix server (a destination
//! of `matrix-relay send`, or a relay that misbehaves): it answers each
//! request as a script says and records what it got.
//!
//! One request per connection: every answer says `Connection: close`.
//! [`StubServer::start_tls`] serves HTTPS with a certificate from a
//! [`TestCa`](crate::tls::TestCa), and records the SNI each client sent.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use relay_core::auth::{AuthError, KeyRing, parse_authorization, verify_claimed};
use relay_core::{ServerName, UnixMillis};
use serde_json::Value;

use crate::identity::Server;

/// How the stub answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status with this JSON body.
    Json(u16, String),
    /// This status, these extra header fields, and this body (sent as
    /// `application/json` whatever it is).
    WithHeaders(u16, Vec<(String, String)>, String),
    /// No answer: the connection stays open, silent, until the stub is
    /// dropped (a destination that times out).
    Hang,
}

impl Reply {
    /// `200 {}`.
    pub fn ok() -> Self {
        Self::Json(200, "{}".to_owned())
    }

    /// `status` with a Matrix error body.
    pub fn error(status: u16, errcode: &str) -> Self {
        Self::Json(
            status,
            format!(r#"{{"errcode":"{errcode}","error":"stub says {status}"}}"#),
        )
    }
}

/// One request the stub received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The request target, raw as received.
    pub target: String,
    /// Header fields in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it was complete.
    pub at: Instant,
    /// The TLS server name the client asked for (HTTPS stubs only).
    pub sni: Option<String>,
}

impl Recorded {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON; panics (showing the request) if it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Checks the `X-Matrix` Authorization header as a server called
    /// `our_name` would: the header parses and names `our_name` (or no
    /// destination), and it is a valid signature by `sender`'s key (and
    /// only that key is known) over the method, the raw target and the
    /// body.
    pub fn verify_signed_by(&self, sender: &Server, our_name: &str) -> Result<(), AuthError> {
        let our_name = ServerName::parse(our_name).expect("our_name is a server name");
        let claimed = parse_authorization(self.header_values("authorization"), &our_name)?;
        let mut keys = KeyRing::default();
        keys.pin(
            ServerName::parse(sender.name()).expect("the sender has a server name"),
            sender.key().key_id().clone(),
            sender.key().verify_key(),
        );
        let content = (!self.body.is_empty())
            .then(|| serde_json::from_slice::<Value>(&self.body).ok())
            .flatten();
        verify_claimed(
            &claimed,
            &our_name,
            &self.method,
            &self.target,
            content.as_ref(),
            &keys,
            UnixMillis(0),
        )?;
        if claimed.origin.as_str() == sender.name() {
            Ok(())
        } else {
            Err(AuthError::BadOrigin)
        }
    }
}

type Script = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    stop: AtomicBool,
    /// TCP connections accepted.
    connections: AtomicUsize,
    script: Box<Script>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running stub server on `127.0.0.1:<free port>`, stopped on drop.
pub struct StubServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubServer")
            .field("addr", &self.addr)
            .field("requests", &self.count())
            .finish()
    }
}

impl StubServer {
    /// A stub answering the `n`-th request (from 0) with `script(n, request)`.
    pub fn start(script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_with(None, script)
    }

    /// Like [`start`](Self::start), over TLS with `config` (see
    /// [`TestCa::server_config`](crate::tls::TestCa::server_config)).
    pub fn start_tls(
        config: Arc<rustls::ServerConfig>,
        script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_with(Some(config), script)
    }

    fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub server");
        let addr = listener.local_addr().expect("the stub's address");
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            script: Box::new(script),
            tls,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || serve_one(conn, &shared));
                }
            })
        };
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A stub that answers every request with `reply`.
    pub fn always(reply: Reply) -> Self {
        Self::start(move |_, _| reply.clone())
    }

    /// A stub that answers every request `200 {}`.
    pub fn ok() -> Self {
        Self::always(Reply::ok())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, in the order they were complete.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// How many TCP connections it accepted (a request or not).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` until at least `n` requests were received.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor up.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve_one(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(config) = &shared.tls else {
        let mut conn = conn;
        answer(&mut conn, None, shared);
        let _ = conn.shutdown(Shutdown::Write);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        drain_until_closed(&mut conn);
        return;
    };
    let Ok(tls) = rustls::ServerConnection::new(Arc::clone(config)) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(tls, conn);
    while stream.conn.is_handshaking() {
        if stream.conn.complete_io(&mut stream.sock).is_err() {
            return;
        }
    }
    let sni = stream.conn.server_name().map(str::to_owned);
    answer(&mut stream, sni, shared);
    stream.conn.send_close_notify();
    let _ = stream.flush();
    let _ = stream.sock.shutdown(Shutdown::Write);
    let _ = stream.sock.set_read_timeout(Some(Duration::from_secs(1)));
    drain_until_closed(&mut stream);
}

/// Reads one request and answers it as scripted.
fn answer(conn: &mut (impl Read + Write), sni: Option<String>, shared: &Shared) {
    let Ok(Some(mut request)) = read_request(conn) else {
        return;
    };
    request.sni = sni;
    let reply = {
        let Ok(mut requests) = shared.requests.lock() else {
            return;
        };
        let reply = (shared.script)(requests.len(), &request);
        requests.push(request);
        reply
    };
    let (status, extra, body) = match reply {
        Reply::Json(status, body) => (status, Vec::new(), body),
        Reply::WithHeaders(status, extra, body) => (status, extra, body),
        Reply::Hang => {
            while !shared.stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
            return;
        }
    };
    let extra: String = extra.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    let head = format!(
        "HTTP/1.1 {status} Stub\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.as_bytes()))
        .and_then(|()| conn.flush());
}

/// Lets the client read the answer and close first.
fn drain_until_closed(conn: &mut impl Read) {
    let mut rest = [0u8; 256];
    while matches!(conn.read(&mut rest), Ok(n) if n > 0) {}
}

/// Reads one request with a `Content-Length` body (or none); `None` if the
/// peer closed before sending anything.
fn read_request(conn: &mut impl Read) -> io::Result<Option<Recorded>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Some(Recorded {
        method,
        target,
        headers,
        body,
        at: Instant::now(),
        sni: None,
    }))
}

/// An address nothing listens on: a port bound, then released. (Another
/// process could take it meanwhile; on loopback that is rare enough.)
pub fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port to release");
    listener.local_addr().expect("its address")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Request;

    #[test]
    fn answers_as_scripted_and_records() {
        let stub = StubServer::start(|n, r| {
            if n == 0 && r.method == "PUT" {
                Reply::error(503, "M_UNKNOWN")
            } else {
                Reply::ok()
            }
        });
        let first = Request::new("PUT", "/a%20b")
            .header("X-Test", "1")
            .body("{\"k\":1}")
            .send(stub.addr());
        assert_eq!(first.status, 503);
        let second = Request::new("GET", "/x").send(stub.addr());
        assert_eq!((second.status, second.text().as_str()), (200, "{}"));
        let got = stub.requests();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].method.as_str(), got[0].target.as_str()),
            ("PUT", "/a%20b")
        );
        assert_eq!(got[0].header_values("x-test"), ["1"]);
        assert_eq!(got[0].json(), serde_json::json!({"k": 1}));
    }

    #[test]
    fn verifies_signatures_strictly() {
        let a = Server::named("a.example");
        let target = "/_matrix/federation/v1/send/t1";
        let body = br#"{"origin":"a.example","pdus":[]}"#.to_vec();
        let request = Recorded {
            method: "PUT".into(),
            target: target.into(),
            headers: vec![(
                "Authorization".into(),
                a.authorization("b.example", "PUT", target, &body),
            )],
            body,
            at: Instant::now(),
            sni: None,
        };
        request.verify_signed_by(&a, "b.example").expect("valid");
        let stranger = Server::new("a.example", Server::named("c.example").key().clone());
        assert!(request.verify_signed_by(&stranger, "b.example").is_err());
        assert!(request.verify_signed_by(&a, "c.example").is_err());
        let tampered = Recorded {
            body: br#"{"origin":"a.example","pdus":[{}]}"#.to_vec(),
            ..request.clone()
        };
        assert!(tampered.verify_signed_by(&a, "b.example").is_err());
        let moved = Recorded {
            target: "/_matrix/federation/v1/send/t2".into(),
            ..request
        };
        assert!(moved.verify_signed_by(&a, "b.example").is_err());
    }

    #[test]
    fn closed_addresses_refuse() {
        assert!(TcpStream::connect(closed_addr()).is_err());
    }
}
