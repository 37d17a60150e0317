//! The federation HTTP client: sends the signed requests the core machines
//! build, with connection reuse, timeouts and TLS.
//!
//! Implementation note: hyper-util's pooled `Client` is tokio-only, so this
//! is a small client over `hyper::client::conn::http1`: one idle-connection
//! list per endpoint (a relay talks to few servers, many times), a request
//! on a reused connection that breaks before any answer is retried once on
//! a fresh one (federation requests are idempotent), and everything is
//! bounded by one timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER};
use relay_core::Instant;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::{Endpoint, Resolver, Scheme};

use crate::runtime::{Runtime, TlsTarget};
use crate::task::timeout;

/// Default time a whole request (connect, send, read the answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (a relay_txn answer holds up to 50 PDUs).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 8;

type Sender = SendRequest<Full<Bytes>>;

/// Idle connections by `scheme://host:port`.
type Pool = Mutex<HashMap<String, Vec<(Sender, Instant)>>>;

/// Sends [`OutgoingRequest`]s on runtime `R`. Cheap to clone; clones share
/// connections.
pub struct HttpClient<R> {
    runtime: R,
    resolver: Arc<Resolver>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    idle: Arc<Pool>,
}

impl<R: Clone> Clone for HttpClient<R> {
    fn clone(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            resolver: self.resolver.clone(),
            timeout: self.timeout,
            tls: self.tls.clone(),
            idle: self.idle.clone(),
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
        Self {
            runtime,
            resolver: Arc::new(resolver),
            timeout,
            tls: Arc::new(tls_config()),
            idle: Arc::default(),
        }
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
        let endpoint = self.resolver.endpoint(&request.server);
        let key = endpoint.base_url();
        let url = format!("{key}{}", request.target);
        let body = Bytes::from(request.body);
        let build = || {
            let mut builder = hyper::Request::builder()
                .method(request.method)
                .uri(&request.target);
            if let Ok(host) = HeaderValue::from_str(request.server.as_str()) {
                builder = builder.header(HOST, host);
            }
            if !body.is_empty() {
                builder = builder.header(CONTENT_TYPE, "application/json");
            }
            if !request.authorization.is_empty() {
                builder = builder.header(AUTHORIZATION, request.authorization.as_str());
            }
            builder.body(Full::new(body.clone()))
        };
        // A reused connection may have been closed by the server meanwhile.
        let (response, sender) = loop {
            let (mut sender, reused) = match self.take_idle(&key) {
                Some(sender) => (sender, true),
                None => match self.connect(&endpoint).await {
                    Ok(sender) => (sender, false),
                    Err(e) => return HttpOutcome::ConnectionFailed(format!("{url}: {e}")),
                },
            };
            let http = match build() {
                Ok(r) => r,
                Err(e) => {
                    return HttpOutcome::ConnectionFailed(format!("bad request for {url}: {e}"));
                }
            };
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
                Err(e) => {
                    return HttpOutcome::ConnectionFailed(format!("{url}: {}", error_chain(&e)));
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(body) => {
                self.put_idle(key, sender);
                HttpOutcome::Response {
                    status,
                    body: body.to_bytes().to_vec(),
                    retry_after,
                }
            }
            Err(e) => HttpOutcome::ConnectionFailed(format!("{url}: reading the answer: {e}")),
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

    /// Opens a connection to `endpoint` and starts its task.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Sender, String> {
        let host = endpoint
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&endpoint.host);
        match endpoint.scheme {
            Scheme::Http => {
                let io = self
                    .runtime
                    .connect(host, endpoint.port)
                    .await
                    .map_err(|e| e.to_string())?;
                self.handshake(io).await
            }
            Scheme::Https => {
                let target = TlsTarget {
                    host: host.to_owned(),
                    port: endpoint.port,
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

/// rustls with the ring provider and the webpki roots.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
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
