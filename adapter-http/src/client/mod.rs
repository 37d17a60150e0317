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

mod discovery;
mod options;
mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use relay_core::Instant;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::Resolver;

pub use discovery::{WELL_KNOWN_MAX_BYTES, WELL_KNOWN_TIMEOUT};
pub use options::{ClientOptions, ConnectTo, ConnectToError, read_pem_certificates};

use crate::runtime::Runtime;
use crate::task::timeout;
use discovery::{Inflight, first_seed};
use options::tls_config;
use pool::{Exchange, ExchangeError, Pool};

/// Default time a whole request (connect, send, read the answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (a relay_txn answer holds up to 50 PDUs).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How long a connection to one of several SRV targets may take before the
/// next is tried (the last one has the rest of the request's time).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// A header's value as text, if present and visible ASCII.
fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
