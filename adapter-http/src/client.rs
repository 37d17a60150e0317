//! The federation HTTP client: sends the signed requests the core machines
//! build, with connection reuse, timeouts and TLS.
//!
//! Implementation note: hyper-util's pooled `Client` is tokio-only, so this
//! is a small client over `hyper::client::conn::http1`: one idle-connection
//! list per endpoint (a relay talks to few servers, many times), a request
//! on a reused connection that breaks before any answer is retried once on
//! a fresh one (federation requests are idempotent), and everything is
//! bounded by one timeout.
//!
//! Discovery may end in several SRV targets: when the connection to one
//! cannot be made (TCP connect, TLS handshake, each bounded by
//! [`CONNECT_TIMEOUT`] while another target is left), the next is tried,
//! all within the request's timeout, and the one that failed is tried
//! after the others for a minute ([`Resolver::mark_unreachable`]). An
//! answer, whatever its status, ends the request: failing over is for
//! unreachable targets only.
//!
//! Where a server is reached is the [`Resolver`]'s decision; this client
//! performs the lookups it asks for (the `.well-known` fetch over itself,
//! SRV queries via [`crate::dns`] on the blocking pool) and applies
//! `--connect-to` redirections and extra trusted roots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, EXPIRES, HOST, HeaderMap, HeaderValue, LOCATION,
    RETRY_AFTER,
};
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::{
    Endpoint, Lookup, MAX_WELL_KNOWN_REDIRECTS, Resolver, Scheme, Step, WellKnownAnswer, redirect,
};
use relay_core::{Instant, ServerName};
use rustls::pki_types::CertificateDer;

use crate::runtime::{Runtime, TlsTarget};
use crate::task::{spawn_task, timeout, unblock};

/// Default time a whole request (connect, send, read the answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (a relay_txn answer holds up to 50 PDUs).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How long a `.well-known/matrix/server` fetch may take.
pub const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `.well-known/matrix/server` body read; a bigger one is invalid.
pub const WELL_KNOWN_MAX_BYTES: usize = 50 << 10;
/// How long a connection to one of several SRV targets may take before the
/// next is tried (the last one has the rest of the request's time).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 8;

type Sender = SendRequest<Full<Bytes>>;

/// Idle connections by endpoint and TLS name.
type Pool = Mutex<HashMap<String, Vec<(Sender, Instant)>>>;

/// `HOST:PORT=ADDR:PORT`, as curl's `--connect-to`: TCP connections meant
/// for `HOST:PORT` go to `ADDR:PORT`; the Host header, SNI and certificate
/// checks still use `HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    /// The host (name or IP literal, IPv6 in brackets) as discovery names it.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Where the TCP connection goes instead (IPv6 in brackets).
    pub to_host: String,
    /// Its port.
    pub to_port: u16,
}

/// A `--connect-to` value that is not `HOST:PORT=ADDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectToError(pub String);

impl std::fmt::Display for ConnectToError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected HOST:PORT=ADDR:PORT, got {:?}", self.0)
    }
}

impl std::error::Error for ConnectToError {}

fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let valid = !bare.is_empty()
        && (bare.parse::<std::net::IpAddr>().is_ok()
            || (!host.starts_with('[')
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

impl FromStr for ConnectTo {
    type Err = ConnectToError;

    fn from_str(s: &str) -> Result<Self, ConnectToError> {
        let bad = || ConnectToError(s.to_owned());
        let (from, to) = s.split_once('=').ok_or_else(bad)?;
        let (host, port) = host_port(from).ok_or_else(bad)?;
        let (to_host, to_port) = host_port(to).ok_or_else(bad)?;
        Ok(Self {
            host,
            port,
            to_host,
            to_port,
        })
    }
}

/// How the client connects, besides where (the [`Resolver`]).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Trusted roots besides the webpki ones (a private federation's CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// TCP redirections (`--connect-to`).
    pub connect_to: Vec<ConnectTo>,
    /// The nameserver for SRV queries; `None`: the system's.
    pub dns_server: Option<SocketAddr>,
}

/// Reads every certificate of a PEM file (for [`ClientOptions::extra_roots`]).
pub fn read_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Sends [`OutgoingRequest`]s on runtime `R`. Cheap to clone; clones share
/// connections and the discovery caches.
pub struct HttpClient<R> {
    runtime: R,
    resolver: Arc<Mutex<Resolver>>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    idle: Arc<Pool>,
    connect_to: Arc<HashMap<(String, u16), (String, u16)>>,
    dns_server: Option<SocketAddr>,
    inflight: Arc<Inflight>,
    /// The next discovery run's seed: drawn from the OS once, then stepped.
    seeds: Arc<AtomicU64>,
}

/// Discoveries under way, by server: who else waits for each one's end.
type Inflight = Mutex<HashMap<ServerName, Vec<oneshot::Sender<Vec<Endpoint>>>>>;

/// Ends a discovery's entry in [`Inflight`]: [`finish`](Self::finish)
/// hands the result to the waiters; dropped unfinished (the task was
/// cancelled), it lets them go empty-handed.
struct InflightGuard {
    inflight: Arc<Inflight>,
    server: ServerName,
    finished: bool,
}

impl InflightGuard {
    fn finish(mut self, endpoints: &[Endpoint]) {
        for waiter in self.take() {
            let _ = waiter.send(endpoints.to_vec());
        }
        self.finished = true;
    }

    fn take(&self) -> Vec<oneshot::Sender<Vec<Endpoint>>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.remove(&self.server).unwrap_or_default()
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // Once finished, the entry may already be a newer discovery's.
        if !self.finished {
            drop(self.take());
        }
    }
}

impl<R: Clone> Clone for HttpClient<R> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            resolver: self.resolver.clone(),
            timeout: self.timeout,
            tls: self.tls.clone(),
            idle: self.idle.clone(),
            connect_to: self.connect_to.clone(),
            dns_server: self.dns_server,
            inflight: self.inflight.clone(),
            seeds: self.seeds.clone(),
        }
    }
}

impl<R: Runtime + Default> HttpClient<R> {
    /// A client on the default `R` that reaches servers through `resolver`,
    /// giving up on a request after `timeout`.
    pub fn new(resolver: Resolver, timeout: Duration) -> Self {
        Self::with_runtime(R::default(), resolver, timeout)
    }
}

/// An answer as [`HttpClient::exchange`] reads it.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// A request as [`HttpClient::exchange`] sends it.
struct Exchange<'a> {
    method: &'a str,
    target: &'a str,
    headers: HeaderMap,
    body: Bytes,
    /// Largest answer body read.
    max_body: usize,
}

/// Why [`HttpClient::exchange`] got no answer.
enum ExchangeError {
    /// No connection could be made: another target may do better.
    Connect(String),
    /// Anything after a connection was made, or a bad request.
    Other(String),
}

impl ExchangeError {
    fn into_message(self) -> String {
        match self {
            Self::Connect(e) | Self::Other(e) => e,
        }
    }
}

impl<R: Runtime> HttpClient<R> {
    /// A client on `runtime` that reaches servers through `resolver`,
    /// giving up on a request after `timeout`.
    pub fn with_runtime(runtime: R, resolver: Resolver, timeout: Duration) -> Self {
        Self::with_options(runtime, resolver, timeout, ClientOptions::default())
            .expect("no extra roots to reject")
    }

    /// Like [`with_runtime`](Self::with_runtime), with `options`; `Err` if
    /// an extra root is not a usable CA certificate.
    pub fn with_options(
        runtime: R,
        resolver: Resolver,
        timeout: Duration,
        options: ClientOptions,
    ) -> Result<Self, rustls::Error> {
        let connect_to = options
            .connect_to
            .into_iter()
            .map(|c| ((c.host, c.port), (c.to_host, c.to_port)))
            .collect();
        Ok(Self {
            runtime,
            resolver: Arc::new(Mutex::new(resolver)),
            timeout,
            tls: Arc::new(tls_config(options.extra_roots)?),
            idle: Arc::default(),
            connect_to: Arc::new(connect_to),
            dns_server: options.dns_server,
            inflight: Arc::default(),
            seeds: Arc::new(AtomicU64::new(first_seed())),
        })
    }

    /// The runtime its requests (and the tasks driving it) run on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Sends `request` and reports how it ended; never fails otherwise.
    pub async fn send(&self, request: OutgoingRequest) -> HttpOutcome {
        timeout(&self.runtime, self.timeout, self.send_inner(request))
            .await
            .unwrap_or(HttpOutcome::Timeout)
    }

    async fn send_inner(&self, request: OutgoingRequest) -> HttpOutcome {
        let endpoints = match self.known_endpoints(&request.server) {
            Some(endpoints) => endpoints,
            None => match self.discover_shared(&request.server).await {
                Some(endpoints) => endpoints,
                None => {
                    return HttpOutcome::ConnectionFailed(format!(
                        "discovery of {} was cancelled",
                        request.server
                    ));
                }
            },
        };
        let mut headers = HeaderMap::new();
        if !request.body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if !request.authorization.is_empty() {
            match HeaderValue::from_str(&request.authorization) {
                Ok(v) => {
                    headers.insert(AUTHORIZATION, v);
                }
                Err(e) => return HttpOutcome::ConnectionFailed(format!("bad Authorization: {e}")),
            }
        }
        let body = Bytes::from(request.body);
        let mut failures = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let another_left = i + 1 < endpoints.len();
            let exchange = Exchange {
                method: request.method,
                target: &request.target,
                headers: headers.clone(),
                body: body.clone(),
                max_body: MAX_RESPONSE_BYTES,
            };
            let connect_limit = another_left.then_some(CONNECT_TIMEOUT);
            match self.exchange(endpoint, exchange, connect_limit).await {
                Ok(answer) => {
                    return HttpOutcome::Response {
                        status: answer.status.as_u16(),
                        retry_after: header(&answer.headers, RETRY_AFTER),
                        body: answer.body.to_vec(),
                    };
                }
                Err(ExchangeError::Connect(e)) if endpoints.len() > 1 => {
                    // Tried after the server's other targets for a while.
                    self.resolver
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .mark_unreachable(Instant::now(), endpoint);
                    tracing::debug!(server = %request.server, error = %e, "SRV target unreachable");
                    failures.push(e);
                    if !another_left {
                        break;
                    }
                }
                Err(e) => {
                    failures.push(e.into_message());
                    break;
                }
            }
        }
        HttpOutcome::ConnectionFailed(if failures.is_empty() {
            format!("no endpoint for {}", request.server)
        } else {
            failures.join("; ")
        })
    }

    /// [`endpoints`](Self::endpoints), run once for all the requests that
    /// need `server` at the same time; `None` if it was cancelled.
    ///
    /// Implementation note: the discovery runs as its own task: if the
    /// request that started it times out first, the lookups still finish
    /// and are cached (and handed to whoever waits), so one slow lookup (a
    /// black-holed port 443) cannot make every attempt time out.
    async fn discover_shared(&self, server: &ServerName) -> Option<Vec<Endpoint>> {
        let waiting = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get_mut(server) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert(server.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(result) = waiting {
            return result.await.ok();
        }
        let guard = InflightGuard {
            inflight: self.inflight.clone(),
            server: server.clone(),
            finished: false,
        };
        let client = self.clone();
        let server = server.clone();
        spawn_task(&self.runtime, async move {
            let endpoints = client.endpoints(&server).await;
            guard.finish(&endpoints);
            endpoints
        })
        .await
        .ok()
    }

    /// The seed of the next discovery run: no system call per request.
    fn discovery_seed(&self) -> u64 {
        // Odd, so every seed of 2^64 comes once; the core mixes it.
        self.seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
    }

    /// Where `server` is reached, if that needs no lookup (an override, an
    /// IP literal or port, or cached outcomes).
    fn known_endpoints(&self, server: &ServerName) -> Option<Vec<Endpoint>> {
        let resolver = self.resolver.lock().unwrap_or_else(|e| e.into_inner());
        let mut discovery = resolver.discover(server, self.discovery_seed());
        match resolver.poll_discovery(Instant::now(), &mut discovery) {
            Step::Done(endpoints) => Some(endpoints),
            Step::Lookup(_) => None,
        }
    }

    /// Where `server` is reached, in the order to try: `--resolve`, else
    /// discovery, performing the lookups the resolver asks for.
    ///
    /// Implementation note: the resolver's lock is never held across an
    /// await. Two calls for a server whose discovery is not cached yet each
    /// run their own lookups (requests share one through
    /// [`send`](Self::send)); the last answer is cached.
    pub async fn endpoints(&self, server: &ServerName) -> Vec<Endpoint> {
        let lock = || self.resolver.lock().unwrap_or_else(|e| e.into_inner());
        let mut discovery = lock().discover(server, self.discovery_seed());
        loop {
            let step = lock().poll_discovery(Instant::now(), &mut discovery);
            match step {
                Step::Done(endpoints) => {
                    let urls: Vec<String> = endpoints.iter().map(Endpoint::base_url).collect();
                    let tls_name = endpoints.first().map(|e| e.tls_name.as_str());
                    tracing::debug!(%server, ?urls, ?tls_name, "resolved");
                    return endpoints;
                }
                Step::Lookup(Lookup::WellKnown { host }) => {
                    let answer = Box::pin(self.fetch_well_known(&host)).await;
                    tracing::debug!(%server, %host, ?answer, "well-known");
                    lock().handle_well_known(
                        Instant::now(),
                        crate::unix_now(),
                        &mut discovery,
                        answer,
                    );
                }
                Step::Lookup(Lookup::Srv { name }) => {
                    let (dns_server, query) = (self.dns_server, name.clone());
                    // Reading resolv.conf is file I/O too: both go to the
                    // blocking pool.
                    let answer = unblock(&self.runtime, move || {
                        let nameserver = dns_server.unwrap_or_else(crate::dns::system_nameserver);
                        crate::dns::query_srv(nameserver, &query)
                    })
                    .await
                    .unwrap_or_else(relay_core::resolve::SrvAnswer::Failed);
                    tracing::debug!(%server, %name, ?answer, "SRV");
                    lock().handle_srv(Instant::now(), &mut discovery, answer);
                }
            }
        }
    }

    /// `GET https://{host}/.well-known/matrix/server`, following up to
    /// [`MAX_WELL_KNOWN_REDIRECTS`] redirects to `https://` URLs, all
    /// within [`WELL_KNOWN_TIMEOUT`].
    async fn fetch_well_known(&self, host: &str) -> WellKnownAnswer {
        timeout(
            &self.runtime,
            WELL_KNOWN_TIMEOUT,
            self.fetch_well_known_inner(host),
        )
        .await
        .unwrap_or_else(|| WellKnownAnswer::Failed("timed out".to_owned()))
    }

    async fn fetch_well_known_inner(&self, host: &str) -> WellKnownAnswer {
        let mut endpoint = Endpoint {
            scheme: Scheme::Https,
            host: host.to_owned(),
            port: 443,
            tls_name: host.to_owned(),
            host_header: host.to_owned(),
        };
        let mut target = "/.well-known/matrix/server".to_owned();
        for _ in 0..=MAX_WELL_KNOWN_REDIRECTS {
            let exchange = Exchange {
                method: "GET",
                target: &target,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                max_body: WELL_KNOWN_MAX_BYTES,
            };
            let answer = match self.exchange(&endpoint, exchange, None).await {
                Ok(answer) => answer,
                Err(e) => return WellKnownAnswer::Failed(e.into_message()),
            };
            let location = header(&answer.headers, LOCATION);
            if answer.status.is_redirection()
                && let Some(next) = location.and_then(|l| redirect(&endpoint, &l))
            {
                (endpoint, target) = next;
                continue;
            }
            return WellKnownAnswer::Response {
                status: answer.status.as_u16(),
                cache_control: header(&answer.headers, CACHE_CONTROL),
                expires: header(&answer.headers, EXPIRES),
                body: answer.body.to_vec(),
            };
        }
        WellKnownAnswer::Failed("too many redirects".to_owned())
    }

    /// One request to `endpoint`, on a kept connection if there is one,
    /// else on a new one made within `connect_limit` (if any); `Err`
    /// describes a failure to get a whole answer.
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        request: Exchange<'_>,
        connect_limit: Option<Duration>,
    ) -> Result<Answer, ExchangeError> {
        let Exchange {
            method,
            target,
            headers,
            body,
            max_body,
        } = request;
        let base = endpoint.base_url();
        let key = format!("{base} {}", endpoint.tls_name);
        let url = format!("{base}{target}");
        let build = || {
            let mut builder = hyper::Request::builder().method(method).uri(target);
            if let Ok(host) = HeaderValue::from_str(&endpoint.host_header) {
                builder = builder.header(HOST, host);
            }
            for (name, value) in &headers {
                builder = builder.header(name, value);
            }
            builder.body(Full::new(body.clone()))
        };
        // A reused connection may have been closed by the server meanwhile.
        let (response, sender) = loop {
            let (mut sender, reused) = match self.take_idle(&key) {
                Some(sender) => (sender, true),
                None => match self.connect_within(endpoint, connect_limit).await {
                    Ok(sender) => (sender, false),
                    Err(e) => return Err(ExchangeError::Connect(format!("{url}: {e}"))),
                },
            };
            let http =
                build().map_err(|e| ExchangeError::Other(format!("bad request for {url}: {e}")))?;
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(http).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(response) => break (response, sender),
                Err(e)
                    if reused
                        && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                {
                    tracing::debug!(%url, error = %e, "reused connection broke; reconnecting");
                }
                Err(e) => return Err(ExchangeError::Other(format!("{url}: {}", error_chain(&e)))),
            }
        };
        let (parts, body) = response.into_parts();
        match Limited::new(body, max_body).collect().await {
            Ok(body) => {
                self.put_idle(key, sender);
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body: body.to_bytes(),
                })
            }
            Err(e) => Err(ExchangeError::Other(format!(
                "{url}: reading the answer: {e}"
            ))),
        }
    }

    /// A live idle connection to `key`, if one is kept.
    fn take_idle(&self, key: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((sender, since)) = list.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender` for reuse.
    fn put_idle(&self, key: String, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push((sender, Instant::now()));
        }
    }

    /// [`connect`](Self::connect), given up after `limit` (if any).
    async fn connect_within(
        &self,
        endpoint: &Endpoint,
        limit: Option<Duration>,
    ) -> Result<Sender, String> {
        match limit {
            Some(limit) => timeout(&self.runtime, limit, self.connect(endpoint))
                .await
                .unwrap_or_else(|| Err(format!("no connection within {limit:?}"))),
            None => self.connect(endpoint).await,
        }
    }

    /// Opens a connection to `endpoint` (or where `--connect-to` sends
    /// it) and starts its task.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Sender, String> {
        let (host, port) = self
            .connect_to
            .get(&(endpoint.host.to_ascii_lowercase(), endpoint.port))
            .map_or((endpoint.host.as_str(), endpoint.port), |(h, p)| {
                (h.as_str(), *p)
            });
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match endpoint.scheme {
            Scheme::Http => {
                let io = self
                    .runtime
                    .connect(host, port)
                    .await
                    .map_err(|e| e.to_string())?;
                self.handshake(io).await
            }
            Scheme::Https => {
                let target = TlsTarget {
                    host: host.to_owned(),
                    port,
                    name: endpoint.tls_name.clone(),
                    config: self.tls.clone(),
                };
                let io = self
                    .runtime
                    .connect_tls(target)
                    .await
                    .map_err(|e| error_chain(&e))?;
                self.handshake(io).await
            }
        }
    }

    async fn handshake<I>(&self, io: I) -> Result<Sender, String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(io).await.map_err(|e| error_chain(&e))?;
        self.runtime.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// rustls with the ring provider, the webpki roots and `extra_roots`.
fn tls_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A header's value as text, if present and visible ASCII.
fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A client's first discovery seed (seeds order SRV records of equal
/// priority); without OS randomness, a fixed one still gives valid orders.
fn first_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}
