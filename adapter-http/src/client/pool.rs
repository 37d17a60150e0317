//! Connecting (TCP, TLS, the HTTP/1 handshake), and one request and its
//! answer on a kept (see `idle`) or new connection.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Body as _;
use hyper::client::conn::http1::{self};
use hyper::header::{HOST, HeaderMap, HeaderValue};
use relay_core::id::unbracketed;
use relay_core::resolve::{Endpoint, Scheme};

use super::HttpClient;
use super::idle::Sender;
use crate::runtime::{Runtime, TlsTarget};
use crate::task::timeout;

/// An answer as [`HttpClient::exchange`] reads it.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// A request as [`HttpClient::exchange`] sends it.
pub(super) struct Exchange<'a> {
    pub(super) method: &'a str,
    pub(super) target: &'a str,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    /// Largest answer body read.
    pub(super) max_body: usize,
}

/// Why [`HttpClient::exchange`] got no answer.
pub(super) enum ExchangeError {
    /// No connection could be made: another target may do better.
    Connect(String),
    /// Anything after a connection was made, or a bad request.
    Other(String),
}

impl ExchangeError {
    pub(super) fn into_message(self) -> String {
        match self {
            Self::Connect(e) | Self::Other(e) => e,
        }
    }
}

impl<R: Runtime> HttpClient<R> {
    /// One request to `endpoint`, on a kept connection if there is one,
    /// else on a new one made within `connect_limit` (if any); `Err`
    /// describes a failure to get a whole answer.
    pub(super) async fn exchange(
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
        // A connection made for the operator's own endpoint, not held to
        // the address policy, is never handed to discovery's same one.
        let trust = if endpoint.trusted { " trusted" } else { "" };
        let key = format!("{base} {}{trust}", endpoint.tls_name);
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
        // An answer declaring more than the limit is refused unread.
        if body.size_hint().lower() > max_body as u64 {
            return Err(ExchangeError::Other(format!(
                "{url}: the answer is over {max_body} bytes"
            )));
        }
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
        self.idle.take(key)
    }

    /// Keeps `sender` for reuse.
    fn put_idle(&self, key: String, sender: Sender) {
        self.idle.put(&self.runtime, key, sender);
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
    /// it) and starts its task. Only an address the address policy allows
    /// is connected to, unless the operator named it (`--connect-to`, or
    /// `--resolve` for a [`trusted`](Endpoint::trusted) endpoint).
    async fn connect(&self, endpoint: &Endpoint) -> Result<Sender, String> {
        let redirected = self
            .connect_to
            .get(&(endpoint.host.to_ascii_lowercase(), endpoint.port));
        let (host, port) = redirected.map_or((endpoint.host.as_str(), endpoint.port), |(h, p)| {
            (h.as_str(), *p)
        });
        let host = unbracketed(host);
        let policy = (redirected.is_none() && !endpoint.trusted).then_some(&*self.address_policy);
        match endpoint.scheme {
            Scheme::Http => {
                let io = self
                    .open(host, port, policy)
                    .await
                    .map_err(|e| e.to_string())?;
                self.handshake(io).await
            }
            Scheme::Https => {
                let target = TlsTarget {
                    name: endpoint.tls_name.clone(),
                    config: self.tls.clone(),
                };
                let io = self
                    .open_tls(host, port, policy, target)
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
