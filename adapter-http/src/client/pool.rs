//! Connections: idle ones kept for reuse (per endpoint and in all, closed
//! once idle too long), connecting (TCP, TLS, the HTTP/1 handshake), and
//! one request and its answer on a kept or new connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Body as _;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderMap, HeaderValue};
use relay_core::Instant;
use relay_core::id::unbracketed;
use relay_core::resolve::{Endpoint, Scheme};

use super::HttpClient;
use crate::runtime::{Runtime, TlsTarget};
use crate::task::timeout;

/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 8;
/// Most idle connections kept in all: which servers a client talks to can
/// be up to strangers (the origins whose keys a relay fetches).
const MAX_IDLE: usize = 128;
/// How often idle connections past [`IDLE_TIMEOUT`] or closed by their
/// server are let go, while any are kept.
const REAP_INTERVAL: Duration = Duration::from_secs(30);

type Sender = SendRequest<Full<Bytes>>;

/// Idle connections by endpoint and TLS name.
///
/// Implementation note: a task of its own closes expired connections
/// every [`REAP_INTERVAL`] while some are kept (and ends when none are, or
/// the client is gone), so connections to servers never asked again do not
/// linger; past [`MAX_IDLE`], the one idle longest is closed.
#[derive(Default)]
pub(super) struct Pool {
    state: Mutex<PoolState<Sender>>,
}

/// What the pool needs to know of a connection.
trait Connection {
    /// Whether its server closed it.
    fn is_closed(&self) -> bool;
}

impl Connection for Sender {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

struct PoolState<C> {
    /// No empty lists: at most [`MAX_IDLE`] keys.
    by_endpoint: HashMap<String, Vec<(C, Instant)>>,
    /// Connections in all lists.
    count: usize,
    /// Whether the reaping task runs.
    reaping: bool,
}

impl<C> Default for PoolState<C> {
    fn default() -> Self {
        Self {
            by_endpoint: HashMap::new(),
            count: 0,
            reaping: false,
        }
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState<Sender>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Connection> PoolState<C> {
    /// A live idle connection to `key`, if one is kept.
    fn take(&mut self, key: &str) -> Option<C> {
        let list = self.by_endpoint.get_mut(key)?;
        let mut found = None;
        while let Some((sender, since)) = list.pop() {
            self.count -= 1;
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                found = Some(sender);
                break;
            }
        }
        if list.is_empty() {
            self.by_endpoint.remove(key);
        }
        found
    }

    /// Keeps `sender` for `key`, closing the longest idle connection when
    /// [`MAX_IDLE`] are kept; nothing if `key` has its fill.
    fn put(&mut self, key: String, sender: C) {
        let list = self.by_endpoint.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_ENDPOINT {
            return;
        }
        list.push((sender, Instant::now()));
        self.count += 1;
        if self.count > MAX_IDLE {
            self.close_oldest();
        }
    }

    fn close_oldest(&mut self) {
        let oldest = self
            .by_endpoint
            .iter()
            .filter_map(|(key, list)| list.first().map(|(_, since)| (*since, key)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, key)| key.clone());
        if let Some(key) = oldest
            && let Some(list) = self.by_endpoint.get_mut(&key)
        {
            // Lists are pushed in time order: the first idled longest.
            list.remove(0);
            self.count -= 1;
            if list.is_empty() {
                self.by_endpoint.remove(&key);
            }
        }
    }

    /// Lets go of connections idle too long or closed by their server.
    fn reap(&mut self) {
        let mut count = 0;
        self.by_endpoint.retain(|_, list| {
            list.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_TIMEOUT);
            count += list.len();
            !list.is_empty()
        });
        self.count = count;
    }
}

/// Reaps `pool` every [`REAP_INTERVAL`] until it is empty or gone.
async fn reap_while_kept<R: Runtime>(rt: R, pool: Weak<Pool>) {
    loop {
        rt.sleep_until(Instant::now() + REAP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut state = pool.lock();
        state.reap();
        if state.count == 0 {
            state.reaping = false;
            return;
        }
    }
}

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
        self.idle.lock().take(key)
    }

    /// Keeps `sender` for reuse.
    fn put_idle(&self, key: String, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let start_reaping = {
            let mut idle = self.idle.lock();
            idle.put(key, sender);
            !std::mem::replace(&mut idle.reaping, true)
        };
        if start_reaping {
            let pool = Arc::downgrade(&self.idle);
            self.runtime
                .spawn(reap_while_kept(self.runtime.clone(), pool));
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A connection its test can close.
    #[derive(Clone, Default)]
    struct Fake(Rc<Cell<bool>>);

    impl Connection for Fake {
        fn is_closed(&self) -> bool {
            self.0.get()
        }
    }

    fn pool_of(endpoints: usize, each: usize) -> PoolState<Fake> {
        let mut pool = PoolState::default();
        for e in 0..endpoints {
            for _ in 0..each {
                pool.put(format!("e{e}"), Fake::default());
            }
        }
        pool
    }

    #[test]
    fn at_most_eight_per_endpoint_and_max_idle_in_all() {
        let pool = pool_of(1, 20);
        assert_eq!(pool.count, MAX_IDLE_PER_ENDPOINT);
        let mut pool = pool_of(MAX_IDLE * 2, 1);
        assert_eq!(pool.count, MAX_IDLE);
        assert_eq!(pool.by_endpoint.len(), MAX_IDLE);
        // The longest idle went first.
        assert!(pool.take("e0").is_none());
        assert!(pool.take(&format!("e{}", MAX_IDLE * 2 - 1)).is_some());
        assert_eq!(pool.count, MAX_IDLE - 1);
    }

    #[test]
    fn taking_the_last_forgets_the_endpoint() {
        let mut pool = pool_of(1, 2);
        assert!(pool.take("e0").is_some());
        assert!(pool.take("e0").is_some());
        assert!(pool.take("e0").is_none());
        assert!(pool.by_endpoint.is_empty());
        assert_eq!(pool.count, 0);
    }

    #[test]
    fn closed_and_expired_connections_are_reaped() {
        let mut pool = PoolState::default();
        let closed = Fake::default();
        pool.put("a".to_owned(), closed.clone());
        pool.put("a".to_owned(), Fake::default());
        pool.put("b".to_owned(), Fake::default());
        let long_ago = Instant::now()
            .checked_sub(IDLE_TIMEOUT)
            .expect("the clock is past the idle timeout");
        pool.by_endpoint.get_mut("b").unwrap()[0].1 = long_ago;
        closed.0.set(true);
        pool.reap();
        assert_eq!(pool.count, 1);
        assert_eq!(pool.by_endpoint.keys().collect::<Vec<_>>(), ["a"]);
        // A closed connection is never handed out.
        let mut pool = PoolState::default();
        let closed = Fake::default();
        pool.put("a".to_owned(), closed.clone());
        closed.0.set(true);
        assert!(pool.take("a").is_none());
        assert_eq!(pool.count, 0);
    }
}
