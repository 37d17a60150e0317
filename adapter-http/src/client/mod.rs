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
//! Where a server is reached, which of its endpoints a request tries in
//! what order, how long each connection may take, and when to give up are
//! the [`Resolver`]'s decisions ([`Attempt`]); this client performs the
//! lookups and connections it asks for (the `.well-known` fetch over
//! itself, SRV queries via [`crate::dns`] and host names' addresses on a
//! DNS pool of its own), reports how they went, and applies `--connect-to`
//! redirections, extra trusted roots and the
//! [`AddressPolicy`] (checked on
//! each address about to be connected to, after every lookup).

mod connect;
mod discovery;
mod idle;
mod options;
mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use relay_core::Instant;
use relay_core::addr_policy::AddressPolicy;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::{Attempt, AttemptStep, Resolver, Tried};

pub use options::{ClientOptions, ConnectTo, ConnectToError};

use crate::runtime::Runtime;
use crate::task::timeout;
use crate::threads::ThreadPool;
use discovery::{Inflight, Permits, first_seed};
use idle::Pool;
use options::tls_config;
use pool::{Exchange, ExchangeError};

/// Default time a whole request (connect, send, read the answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most discoveries of uncached servers under way at once, per client;
/// past it, a request waits for one to end, within its own time limit.
pub const MAX_DISCOVERIES: usize = 64;
/// Threads of a client's DNS pool, which runs SRV queries and looks up
/// host names' addresses: its blocking lookups never hold a thread
/// anything else needs, and a nameserver that never answers holds at most
/// these.
pub const DNS_THREADS: usize = 16;
/// Lookups waiting for a thread of the DNS pool at most; past it, a
/// lookup waits for room, within its request's time limit.
const DNS_QUEUE: usize = 256;

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
    /// Which addresses discovery's endpoints may be connected to.
    address_policy: Arc<AddressPolicy>,
    /// Where SRV queries and host name lookups run.
    dns: ThreadPool,
    inflight: Arc<Inflight>,
    /// One per discovery under way ([`MAX_DISCOVERIES`]).
    discoveries: Arc<Permits>,
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
            address_policy: self.address_policy.clone(),
            dns: self.dns.clone(),
            inflight: self.inflight.clone(),
            discoveries: self.discoveries.clone(),
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
            address_policy: Arc::new(options.address_policy),
            dns: ThreadPool::skipping_stale("relay-dns", DNS_THREADS, DNS_QUEUE),
            inflight: Arc::default(),
            discoveries: Arc::new(Permits::new(MAX_DISCOVERIES)),
            seeds: Arc::new(AtomicU64::new(first_seed())),
        })
    }

    /// The runtime its requests (and the tasks driving it) run on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Sends `request` and reports how it ended; never fails otherwise.
    pub async fn send(&self, request: OutgoingRequest) -> HttpOutcome {
        let deadline = Instant::now() + self.timeout;
        timeout(
            &self.runtime,
            self.timeout,
            self.send_inner(request, deadline),
        )
        .await
        .unwrap_or(HttpOutcome::Timeout)
    }

    async fn send_inner(&self, request: OutgoingRequest, deadline: Instant) -> HttpOutcome {
        let endpoints = match self.known_endpoints(&request.server) {
            Some(endpoints) => endpoints,
            None => match self.discover_until(&request.server, deadline).await {
                Ok(endpoints) => endpoints,
                Err(e) => return HttpOutcome::ConnectionFailed(e),
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
        let mut attempt = Attempt::new(endpoints);
        let mut answer = None;
        loop {
            let (endpoint, connect_within) = match attempt.poll() {
                AttemptStep::Try {
                    endpoint,
                    connect_within,
                } => (endpoint, connect_within),
                AttemptStep::Answered => break,
                AttemptStep::Failed(e) => return HttpOutcome::ConnectionFailed(e),
            };
            let exchange = Exchange {
                method: request.method,
                target: &request.target,
                headers: headers.clone(),
                body: body.clone(),
                max_body: request.max_response_bytes,
            };
            let tried = match self.exchange(&endpoint, exchange, connect_within).await {
                Ok(a) => {
                    answer = Some(a);
                    Tried::Answered
                }
                Err(ExchangeError::Connect(e)) => {
                    tracing::debug!(server = %request.server, error = %e, "target unreachable");
                    Tried::Unreachable(e)
                }
                Err(ExchangeError::Other(e)) => Tried::Failed(e),
            };
            self.resolver()
                .handle_tried(Instant::now(), &mut attempt, tried);
        }
        match answer {
            Some(answer) => HttpOutcome::Response {
                status: answer.status.as_u16(),
                retry_after: header(&answer.headers, RETRY_AFTER),
                body: answer.body.to_vec(),
            },
            None => HttpOutcome::ConnectionFailed("answered, but the answer was lost".to_owned()),
        }
    }

    /// The resolver, locked; never held across an await.
    fn resolver(&self) -> MutexGuard<'_, Resolver> {
        self.resolver.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A header's value as text, if present and visible ASCII.
fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
