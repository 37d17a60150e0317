//! The federation HTTP client: sends the signed requests the core machines
//! build, with connection reuse, timeouts and TLS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::Resolver;

/// Default time a whole request (connect, send, read the answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (a relay_txn answer holds up to 50 PDUs).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Sends [`OutgoingRequest`]s. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    resolver: Resolver,
    timeout: Duration,
}

impl HttpClient {
    /// A client that reaches servers through `resolver`, giving up on a
    /// request after `timeout`.
    pub fn new(resolver: Resolver, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self {
            client,
            resolver,
            timeout,
        }
    }

    /// Sends `request` and reports how it ended; never fails otherwise.
    pub async fn send(&self, request: OutgoingRequest) -> HttpOutcome {
        match tokio::time::timeout(self.timeout, self.send_inner(request)).await {
            Ok(outcome) => outcome,
            Err(_) => HttpOutcome::Timeout,
        }
    }

    async fn send_inner(&self, request: OutgoingRequest) -> HttpOutcome {
        let endpoint = self.resolver.endpoint(&request.server);
        let url = format!("{}{}", endpoint.base_url(), request.target);
        let mut builder = hyper::Request::builder().method(request.method).uri(&url);
        if let Ok(host) = HeaderValue::from_str(request.server.as_str()) {
            builder = builder.header(HOST, host);
        }
        if !request.body.is_empty() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if !request.authorization.is_empty() {
            builder = builder.header(AUTHORIZATION, request.authorization.as_str());
        }
        let built = builder.body(Full::new(Bytes::from(request.body)));
        let http = match built {
            Ok(r) => r,
            Err(e) => return HttpOutcome::ConnectionFailed(format!("bad request for {url}: {e}")),
        };
        let response = match self.client.request(http).await {
            Ok(r) => r,
            Err(e) => return HttpOutcome::ConnectionFailed(format!("{url}: {}", error_chain(&e))),
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
            Ok(body) => HttpOutcome::Response {
                status,
                body: body.to_bytes().to_vec(),
                retry_after,
            },
            Err(e) => HttpOutcome::ConnectionFailed(format!("{url}: reading the answer: {e}")),
        }
    }
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
