//! A tiny blocking HTTP/1.1 client over [`TcpStream`], written here so tests
//! control every byte (and can send malformed requests).
//!
//! Every request made through [`Request::send`] / [`send`] carries
//! `Connection: close` and a `Content-Length`; the response is read by its
//! `Content-Length`, by chunked framing, or to end of stream. Interim (1xx)
//! responses are skipped.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a connect, a write or a read may take before the request fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

mod read;
#[cfg(test)]
mod tests;

use read::{find_head_end, parse_status_line, read_response};

/// A complete HTTP response.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.reason)?;
        for (name, value) in &self.headers {
            write!(f, "\n{name}: {value}")?;
        }
        write!(f, "\n\n{}", self.text())
    }
}

impl HttpResponse {
    /// The first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether `Content-Type` is `application/json` (parameters allowed).
    pub fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        })
    }

    /// The body parsed as JSON; panics (showing the response) if it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("response body is not JSON ({e}):\n{self:?}"),
        }
    }

    /// Asserts the status, showing the whole response when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "expected status {status}, got:\n{self:?}"
        );
        self
    }

    /// Asserts a standard Matrix error: this status, `Content-Type:
    /// application/json`, and a JSON object body with this `errcode` and a
    /// string `error`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) -> &Self {
        assert_eq!(
            (self.status, self.errcode().as_deref()),
            (status, Some(errcode)),
            "expected {status} {errcode}, got:\n{self:?}"
        );
        self.assert_matrix_error_shape();
        self
    }

    /// Asserts the body is a Matrix error object (`errcode` starting with
    /// `M_`, `error` a string) sent as `application/json`.
    #[track_caller]
    pub fn assert_matrix_error_shape(&self) -> &Self {
        assert!(
            self.is_json(),
            "error response lacks Content-Type: application/json:\n{self:?}"
        );
        let body = self.json();
        assert!(
            body.get("errcode")
                .and_then(Value::as_str)
                .is_some_and(|c| c.starts_with("M_")),
            "error body has no M_ errcode:\n{self:?}"
        );
        assert!(
            body.get("error").is_some_and(Value::is_string),
            "error body has no string `error`:\n{self:?}"
        );
        self
    }

    /// The `errcode` of a JSON error body, if any.
    pub fn errcode(&self) -> Option<String> {
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        body.get("errcode")?.as_str().map(str::to_owned)
    }

    /// Asserts a 200 JSON response and returns its body.
    #[track_caller]
    pub fn ok_json(&self) -> Value {
        self.assert_status(200);
        assert!(
            self.is_json(),
            "200 response lacks Content-Type: application/json:\n{self:?}"
        );
        self.json()
    }
}

/// Why an exchange produced no complete response.
#[derive(Debug)]
pub enum HttpError {
    /// The TCP connection could not be made.
    Connect(io::Error),
    /// Reading failed (reset, timeout…), after `received` bytes.
    Read {
        /// The underlying error.
        error: io::Error,
        /// What had arrived before it.
        received: Vec<u8>,
    },
    /// The peer closed the connection before a complete response.
    Closed {
        /// What had arrived before the close.
        received: Vec<u8>,
    },
    /// What arrived is not an HTTP/1.x response.
    Malformed {
        /// What is wrong with it.
        reason: String,
        /// The bytes received.
        received: Vec<u8>,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect failed: {e}"),
            Self::Read { error, received } => write!(
                f,
                "read failed after {} bytes ({error}): {:?}",
                received.len(),
                String::from_utf8_lossy(received)
            ),
            Self::Closed { received } => write!(
                f,
                "connection closed after {} bytes: {:?}",
                received.len(),
                String::from_utf8_lossy(received)
            ),
            Self::Malformed { reason, received } => write!(
                f,
                "malformed response ({reason}): {:?}",
                String::from_utf8_lossy(received)
            ),
        }
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// Whether the server sent nothing at all before closing or failing.
    pub fn nothing_received(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Read { received, .. }
            | Self::Closed { received }
            | Self::Malformed { received, .. } => received.is_empty(),
        }
    }
}

/// An HTTP request to be sent; build with [`Request::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method, sent as is.
    pub method: String,
    /// Request target, sent as is (never encoded or normalised).
    pub target: String,
    /// Extra header fields, sent as is and in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// Adds a header field whose value may be any bytes (invalid UTF-8…).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    /// Removes every header field called `name` (case-insensitive).
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The bytes on the wire: request line, the given headers, then `Host`,
    /// `Content-Length` and `Connection: close` unless given, then the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if !has("host") {
            out.extend_from_slice(b"Host: relay.test\r\n");
        }
        if !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        if !has("connection") {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Sends the request and reads the response.
    pub fn try_send(&self, addr: SocketAddr) -> Result<HttpResponse, HttpError> {
        self.exchange(connect(addr)?)
    }

    /// Sends the request from `local` (see [`connect_from`]) and reads the
    /// response; panics with the request line on any transport failure.
    #[track_caller]
    pub fn send_from(&self, local: Ipv4Addr, addr: SocketAddr) -> HttpResponse {
        let stream = connect_from(local, addr);
        configure(&stream).unwrap_or_else(|e| panic!("{e}"));
        match self.exchange(stream) {
            Ok(resp) => resp,
            Err(e) => panic!(
                "{} {} from {local} to {addr}: {e}",
                self.method, self.target
            ),
        }
    }

    /// Sends the request on `stream` and reads the response.
    fn exchange(&self, mut stream: TcpStream) -> Result<HttpResponse, HttpError> {
        // A server may answer (e.g. 413) and close before reading all of a
        // large body; the answer is still worth reading.
        let write_result = stream.write_all(&self.to_bytes());
        let result = read_response(&mut stream, Vec::new(), self.method == "HEAD");
        match (result, write_result) {
            (Ok(resp), _) => Ok(resp),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(_)) if !e.nothing_received() => Err(e),
            (Err(_), Err(error)) => Err(HttpError::Read {
                error,
                received: Vec::new(),
            }),
        }
    }

    /// Sends the request and reads the response; panics with the request
    /// line on any transport failure.
    #[track_caller]
    pub fn send(&self, addr: SocketAddr) -> HttpResponse {
        match self.try_send(addr) {
            Ok(resp) => resp,
            Err(e) => panic!("{} {} to {addr}: {e}", self.method, self.target),
        }
    }

    /// Sends the head and the first `body_prefix` bytes of the body, and
    /// leaves the rest for [`PartialRequest::finish`].
    pub fn send_partially(
        &self,
        addr: SocketAddr,
        body_prefix: usize,
    ) -> Result<PartialRequest, HttpError> {
        let mut stream = connect(addr)?;
        let bytes = self.to_bytes();
        let split = bytes.len() - self.body.len() + body_prefix.min(self.body.len());
        stream
            .write_all(&bytes[..split])
            .and_then(|()| stream.flush())
            .map_err(|error| HttpError::Read {
                error,
                received: Vec::new(),
            })?;
        Ok(PartialRequest {
            stream,
            rest: bytes[split..].to_vec(),
            received: Vec::new(),
            head: self.method == "HEAD",
        })
    }
}

/// A request whose end has not been sent yet (a slow client).
#[derive(Debug)]
pub struct PartialRequest {
    stream: TcpStream,
    rest: Vec<u8>,
    received: Vec<u8>,
    head: bool,
}

impl PartialRequest {
    /// Waits up to `timeout` for an interim `1xx` response (e.g. `100
    /// Continue`, which a server sends once it starts reading the body of a
    /// request with `Expect: 100-continue`). Returns its status, or `None`
    /// if none came in time. Anything else received is kept for `finish`.
    pub fn await_interim(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find_head_end(&self.received) {
                let status = parse_status_line(&self.received[..end]).ok()?.0;
                if (100..200).contains(&status) {
                    self.received.drain(..end);
                    return Some(status);
                }
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return None;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads the response without sending the rest of the request (a
    /// server that answers before reading the body).
    pub fn response(mut self) -> Result<HttpResponse, HttpError> {
        let _ = self.stream.set_read_timeout(Some(DEFAULT_TIMEOUT));
        read_response(&mut self.stream, self.received, self.head)
    }

    /// Sends the rest of the request and reads the final response.
    pub fn finish(mut self) -> Result<HttpResponse, HttpError> {
        let _ = self.stream.set_read_timeout(Some(DEFAULT_TIMEOUT));
        // A write failure shows up as a read failure or an early answer.
        let _ = self.stream.write_all(&self.rest);
        read_response(&mut self.stream, self.received, self.head)
    }
}

/// Sends `method raw_target` with `headers` and `body` (see
/// [`Request::to_bytes`] for the headers added) and reads the response;
/// panics on a transport failure.
#[track_caller]
pub fn send(
    addr: SocketAddr,
    method: &str,
    raw_target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = Request::new(method, raw_target).body(body);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.send(addr)
}

/// What came back after writing raw bytes.
#[derive(Debug)]
pub struct RawOutcome {
    /// Everything received until the server closed, or the read timed out.
    pub received: Vec<u8>,
    /// The read ended by timeout rather than by the server closing.
    pub timed_out: bool,
    /// Writing failed (the server may have closed early).
    pub write_error: Option<io::Error>,
}

impl RawOutcome {
    /// The first response in what was received, if anything was.
    pub fn response(&self) -> Option<Result<HttpResponse, HttpError>> {
        if self.received.is_empty() {
            return None;
        }
        Some(read_response(&mut &self.received[..], Vec::new(), false))
    }
}

/// Writes `bytes` as they are, then reads until the server closes or
/// `timeout` passes without data. Does not half-close: a server may drop a
/// request whose client shuts down its sending side.
pub fn send_raw(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<RawOutcome, HttpError> {
    raw_exchange(addr, bytes, timeout, false)
}

/// Like [`send_raw`], then shuts down the sending side so the server sees
/// the end of the stream (for truncated requests and non-HTTP bytes).
pub fn send_raw_then_eof(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<RawOutcome, HttpError> {
    raw_exchange(addr, bytes, timeout, true)
}

fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
    eof: bool,
) -> Result<RawOutcome, HttpError> {
    let mut stream = connect(addr)?;
    let _ = stream.set_read_timeout(Some(timeout));
    let mut write_error = stream.write_all(bytes).err();
    if eof && write_error.is_none() {
        write_error = stream.shutdown(Shutdown::Write).err();
    }
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut timed_out = false;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                timed_out = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Reset by the peer: what arrived before counts.
            Err(_) => break,
        }
    }
    Ok(RawOutcome {
        received,
        timed_out,
        write_error,
    })
}

fn connect(addr: SocketAddr) -> Result<TcpStream, HttpError> {
    let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT).map_err(HttpError::Connect)?;
    configure(&stream)?;
    Ok(stream)
}

/// The timeouts and `TCP_NODELAY` of every connection made here.
fn configure(stream: &TcpStream) -> Result<(), HttpError> {
    stream
        .set_read_timeout(Some(DEFAULT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(DEFAULT_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(HttpError::Connect)
}

/// A TCP connection to `relay` from `local` (any of 127/8 is loopback on
/// Linux), so a test can be several client addresses; panics if it cannot
/// be made.
#[track_caller]
pub fn connect_from(local: Ipv4Addr, relay: SocketAddr) -> TcpStream {
    fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let SocketAddr::V4(relay) = relay else {
        panic!("the relay listens on IPv4")
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket is owned by the TcpStream at once (closed on
    // drop); the addresses are valid sockaddr_in values of `len` bytes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(SocketAddrV4::new(local, 0));
        let rc = libc::bind(fd, (&raw const from).cast(), len);
        assert_eq!(rc, 0, "bind {local}: {}", io::Error::last_os_error());
        let to = sockaddr(relay);
        let rc = libc::connect(fd, (&raw const to).cast(), len);
        assert_eq!(
            rc,
            0,
            "connect from {local}: {}",
            io::Error::last_os_error()
        );
        stream
    }
}
