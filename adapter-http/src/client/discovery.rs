//! Where a server is reached: the lookups the
//! [`Resolver`](relay_core::resolve::Resolver) asks for (the
//! `.well-known` fetch over the client itself, SRV queries on the blocking
//! pool), one discovery shared by the requests that need it at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_channel::oneshot;
use hyper::header::{CACHE_CONTROL, EXPIRES, HeaderMap, LOCATION};
use relay_core::resolve::{
    Endpoint, Fetched, Lookup, SrvAnswer, Step, WELL_KNOWN_MAX_BYTES, WELL_KNOWN_TIMEOUT,
    WellKnownAnswer, WellKnownFetch,
};
use relay_core::{Instant, ServerName};

use super::pool::Exchange;
use super::{HttpClient, header};
use crate::runtime::Runtime;
use crate::task::{spawn_task, timeout, unblock};

/// Discoveries under way, by server: who else waits for each one's end.
pub(super) type Inflight = Mutex<HashMap<ServerName, Vec<oneshot::Sender<Vec<Endpoint>>>>>;

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

impl<R: Runtime> HttpClient<R> {
    /// [`endpoints`](Self::endpoints), run once for all the requests that
    /// need `server` at the same time; `None` if it was cancelled.
    ///
    /// Implementation note: the discovery runs as its own task: if the
    /// request that started it times out first, the lookups still finish
    /// and are cached (and handed to whoever waits), so one slow lookup (a
    /// black-holed port 443) cannot make every attempt time out.
    pub(super) async fn discover_shared(&self, server: &ServerName) -> Option<Vec<Endpoint>> {
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
    pub(super) fn known_endpoints(&self, server: &ServerName) -> Option<Vec<Endpoint>> {
        let resolver = self.resolver();
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
        let mut discovery = self.resolver().discover(server, self.discovery_seed());
        loop {
            let step = self
                .resolver()
                .poll_discovery(Instant::now(), &mut discovery);
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
                    self.resolver().handle_well_known(
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
                    .unwrap_or_else(SrvAnswer::Failed);
                    tracing::debug!(%server, %name, ?answer, "SRV");
                    self.resolver()
                        .handle_srv(Instant::now(), &mut discovery, answer);
                }
            }
        }
    }

    /// The [`WellKnownFetch`] of `host`, all within [`WELL_KNOWN_TIMEOUT`].
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
        let mut fetch = WellKnownFetch::new(host);
        loop {
            let (endpoint, target) = fetch.request();
            let exchange = Exchange {
                method: "GET",
                target,
                headers: HeaderMap::new(),
                body: Bytes::new(),
                max_body: WELL_KNOWN_MAX_BYTES,
            };
            let answer = match self.exchange(endpoint, exchange, None).await {
                Ok(answer) => answer,
                Err(e) => return WellKnownAnswer::Failed(e.into_message()),
            };
            let location = header(&answer.headers, LOCATION);
            match fetch.handle_response(answer.status.as_u16(), location.as_deref()) {
                Fetched::Redirected => {}
                Fetched::Answer => {
                    return WellKnownAnswer::Response {
                        status: answer.status.as_u16(),
                        cache_control: header(&answer.headers, CACHE_CONTROL),
                        expires: header(&answer.headers, EXPIRES),
                        body: answer.body.to_vec(),
                    };
                }
                Fetched::TooManyRedirects => {
                    return WellKnownAnswer::Failed("too many redirects".to_owned());
                }
            }
        }
    }
}

/// A client's first discovery seed (seeds order SRV records of equal
/// priority); without OS randomness, a fixed one still gives valid orders.
pub(super) fn first_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}
