//! A tiny blocking HTTP/1.1 client over [`TcpStream`], written here so tests
//! control every byte (and can send malformed requests).
//!
//! Every request made through [`Request::send`] / [`send`] carries
//! `Connection: close` and a `Content-Length`; the response is read by its
//! `Content-Length`, by chunked framing, or to end of stream. Interim (1xx)
//! responses are skipped.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a connect, a write or a read may take before the request fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest response head the client accepts.
const MAX_HEAD_BYTES: usize = 64 * 1024;

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
        let mut stream = connect(addr)?;
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
    stream
        .set_read_timeout(Some(DEFAULT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(DEFAULT_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(HttpError::Connect)?;
    Ok(stream)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_status_line(head: &[u8]) -> Result<(u16, String), String> {
    let head = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_owned())?;
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("bad status in {line:?}"))?;
    Ok((status, parts.next().unwrap_or_default().to_owned()))
}

fn parse_headers(head: &[u8]) -> Result<Vec<(String, String)>, String> {
    let head = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_owned())?;
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Reads one complete response (skipping 1xx) from `stream`, starting with
/// the bytes already in `buf`.
fn read_response(
    stream: &mut impl Read,
    mut buf: Vec<u8>,
    head_request: bool,
) -> Result<HttpResponse, HttpError> {
    let mut reader = Reader {
        stream,
        buf: &mut buf,
        pos: 0,
    };
    loop {
        let end = loop {
            if let Some(end) = find_head_end(&reader.buf[reader.pos..]) {
                break reader.pos + end;
            }
            if reader.buf.len() - reader.pos > MAX_HEAD_BYTES {
                return Err(reader.malformed("response head too long"));
            }
            reader.fill()?;
        };
        let head = reader.buf[reader.pos..end].to_vec();
        let (status, reason) = parse_status_line(&head).map_err(|r| reader.malformed(&r))?;
        let headers = parse_headers(&head).map_err(|r| reader.malformed(&r))?;
        reader.pos = end;
        if (100..200).contains(&status) {
            continue;
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if find("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            reader.chunked()?
        } else if let Some(len) = find("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| reader.malformed("bad Content-Length"))?;
            reader.exactly(len)?
        } else {
            reader.until_eof()?
        };
        return Ok(HttpResponse {
            status,
            reason,
            headers,
            body,
        });
    }
}

struct Reader<'a, R> {
    stream: &'a mut R,
    buf: &'a mut Vec<u8>,
    pos: usize,
}

impl<R: Read> Reader<'_, R> {
    fn malformed(&self, reason: &str) -> HttpError {
        HttpError::Malformed {
            reason: reason.to_owned(),
            received: self.buf.clone(),
        }
    }

    /// Reads more; `Closed` at end of stream.
    fn fill(&mut self) -> Result<(), HttpError> {
        if self.try_fill()? == 0 {
            return Err(HttpError::Closed {
                received: self.buf.clone(),
            });
        }
        Ok(())
    }

    fn try_fill(&mut self) -> Result<usize, HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(HttpError::Read {
                        error,
                        received: self.buf.clone(),
                    });
                }
            }
        }
    }

    fn exactly(&mut self, len: usize) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() - self.pos < len {
            self.fill()?;
        }
        let out = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(out)
    }

    fn line(&mut self) -> Result<String, HttpError> {
        loop {
            if let Some(p) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + p]).into_owned();
                self.pos += p + 2;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size, 16).map_err(|_| self.malformed("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(size)?);
            if !self.line()?.is_empty() {
                return Err(self.malformed("chunk not followed by CRLF"));
            }
        }
    }

    fn until_eof(&mut self) -> Result<Vec<u8>, HttpError> {
        while self.try_fill()? > 0 {}
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A one-shot server: accepts one connection, reads the request head
    /// and `Content-Length` body, hands them to the test, and writes
    /// `answer`.
    fn one_shot(answer: &'static [u8]) -> (SocketAddr, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let head_end = loop {
                let n = conn.read(&mut chunk).expect("read");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(e) = find_head_end(&buf) {
                    break e;
                }
                assert!(n > 0, "client closed early");
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse().expect("length"))
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let n = conn.read(&mut chunk).expect("read body");
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(answer).expect("write");
            buf
        });
        (addr, handle)
    }

    #[test]
    fn sends_head_and_body_and_reads_content_length_response() {
        let (addr, server) = one_shot(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        );
        let resp = send(addr, "PUT", "/a/@b:c%40", &[("X-Test", "1")], b"{\"k\":1}");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.reason, "OK");
        assert!(resp.is_json());
        assert_eq!(resp.json(), serde_json::json!({}));
        let got = String::from_utf8(server.join().expect("server")).expect("utf8");
        assert!(got.starts_with("PUT /a/@b:c%40 HTTP/1.1\r\n"), "{got}");
        assert!(got.contains("\r\nX-Test: 1\r\n"), "{got}");
        assert!(got.contains("\r\nContent-Length: 7\r\n"), "{got}");
        assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n{\"k\":1}"), "{got}");
    }

    #[test]
    fn reads_chunked_and_skips_interim_responses() {
        let (addr, server) = one_shot(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        );
        let resp = send(addr, "GET", "/", &[], b"");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.body, b"abcde");
        server.join().expect("server");
    }

    #[test]
    fn reads_to_eof_without_length() {
        let (addr, server) = one_shot(b"HTTP/1.0 500 Oops\r\ncontent-type: Application/JSON; charset=utf-8\r\n\r\n{\"errcode\":\"M_UNKNOWN\",\"error\":\"x\"}");
        let resp = send(addr, "GET", "/", &[], b"");
        resp.assert_error(500, "M_UNKNOWN");
        server.join().expect("server");
    }

    #[test]
    fn error_assertions_fail_on_wrong_shape() {
        let resp = HttpResponse {
            status: 400,
            reason: String::new(),
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: br#"{"errcode":"M_BAD_JSON","error":"x"}"#.to_vec(),
        };
        assert!(
            std::panic::catch_unwind(|| {
                resp.assert_error(400, "M_BAD_JSON");
            })
            .is_err()
        );
        let resp = HttpResponse {
            headers: vec![("content-type".into(), "application/json".into())],
            ..resp
        };
        resp.assert_error(400, "M_BAD_JSON");
        assert!(
            std::panic::catch_unwind(|| {
                resp.assert_error(400, "M_NOT_JSON");
            })
            .is_err()
        );
        let no_error = HttpResponse {
            body: br#"{"errcode":"M_BAD_JSON"}"#.to_vec(),
            ..resp
        };
        assert!(
            std::panic::catch_unwind(|| {
                no_error.assert_error(400, "M_BAD_JSON");
            })
            .is_err()
        );
    }

    #[test]
    fn closed_without_response_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut chunk = [0u8; 1024];
            let _ = conn.read(&mut chunk);
        });
        let err = Request::new("GET", "/")
            .try_send(addr)
            .expect_err("no response");
        assert!(err.nothing_received(), "{err}");
        server.join().expect("server");
    }

    #[test]
    fn raw_bytes_and_half_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).expect("read to eof");
            conn.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .expect("write");
            got
        });
        let out = send_raw_then_eof(addr, b"\x00\xffGARBAGE", Duration::from_secs(5)).expect("raw");
        assert!(!out.timed_out);
        let resp = out.response().expect("some bytes").expect("a response");
        assert_eq!(resp.status, 400);
        assert_eq!(server.join().expect("server"), b"\x00\xffGARBAGE");
    }

    #[test]
    fn partial_request_sees_continue_then_finishes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while find_head_end(&buf).is_none() {
                let n = conn.read(&mut chunk).expect("read");
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .expect("write");
            let head_end = find_head_end(&buf).expect("head");
            while buf.len() < head_end + 10 {
                let n = conn.read(&mut chunk).expect("read");
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .expect("write");
        });
        let req = Request::new("PUT", "/x")
            .header("Expect", "100-continue")
            .body("0123456789");
        let mut partial = req.send_partially(addr, 3).expect("partial");
        assert_eq!(partial.await_interim(Duration::from_secs(5)), Some(100));
        let resp = partial.finish().expect("response");
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
        server.join().expect("server");
    }
}
