//! Where a server is reached: the lookups the
//! [`Resolver`](relay_core::resolve::Resolver) asks for (the
//! `.well-known` fetch over the client itself, SRV queries on the DNS
//! pool), one discovery shared by the requests that need it at once, at
//! most [`MAX_DISCOVERIES`](super::MAX_DISCOVERIES) under way.

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
use crate::task::{spawn_task, timeout};
use crate::threads::JobError;

/// How a discovery ended: where the server is reached, or `None` when its
/// deadline passed first.
type Ended = Option<Vec<Endpoint>>;

/// Discoveries under way, by server: who else waits for each one's end.
pub(super) type Inflight = Mutex<HashMap<ServerName, Vec<oneshot::Sender<Ended>>>>;

/// Ends a discovery's entry in [`Inflight`]: [`finish`](Self::finish)
/// hands the result to the waiters; dropped unfinished (the task was
/// cancelled), it lets them go empty-handed.
struct InflightGuard {
    inflight: Arc<Inflight>,
    server: ServerName,
    finished: bool,
}

impl InflightGuard {
    fn finish(mut self, ended: &Ended) {
        for waiter in self.take() {
            let _ = waiter.send(ended.clone());
        }
        self.finished = true;
    }

    fn take(&self) -> Vec<oneshot::Sender<Ended>> {
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

/// A counting semaphore: one permit per discovery under way.
pub(super) struct Permits {
    give: async_channel::Sender<()>,
    take: async_channel::Receiver<()>,
}

/// A discovery's permit; dropping it hands it to the next in line.
struct Permit(async_channel::Sender<()>);

impl Drop for Permit {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

impl Permits {
    pub(super) fn new(permits: usize) -> Self {
        let (give, take) = async_channel::bounded(permits.max(1));
        while give.try_send(()).is_ok() {}
        Self { give, take }
    }

    /// A permit, once one is free (first come, first served).
    async fn acquire(&self) -> Option<Permit> {
        // Both ends are held here: the channel never closes.
        self.take.recv().await.ok()?;
        Some(Permit(self.give.clone()))
    }
}

impl<R: Runtime> HttpClient<R> {
    /// Where `server` is reached, by a discovery shared with the requests
    /// that need it at the same time, before `deadline`; `Err` says why
    /// not.
    ///
    /// Implementation note: a request that joined a discovery started by
    /// a request with an earlier deadline, which ended there unfinished,
    /// runs one of its own (what the first cached is not looked up again).
    pub(super) async fn discover_until(
        &self,
        server: &ServerName,
        deadline: Instant,
    ) -> Result<Vec<Endpoint>, String> {
        loop {
            match self.discover_shared(server, deadline).await {
                Some(Some(endpoints)) => return Ok(endpoints),
                Some(None) if Instant::now() < deadline => {}
                Some(None) => return Err(format!("discovery of {server} did not end in time")),
                None => return Err(format!("discovery of {server} was cancelled")),
            }
        }
    }

    /// [`discover`](Self::discover), run once for all the requests that
    /// need `server` at the same time, with the deadline of the first;
    /// `None` if it was cancelled.
    ///
    /// Implementation note: the discovery runs as its own task: if the
    /// request that started it times out first, a lookup under way still
    /// finishes and is cached (and handed to whoever waits), so one slow
    /// lookup (a black-holed port 443) cannot make every attempt time out.
    async fn discover_shared(&self, server: &ServerName, deadline: Instant) -> Option<Ended> {
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
            let ended = client.discover(&server, deadline).await;
            guard.finish(&ended);
            ended
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
    /// discovery, performing the lookups the resolver asks for, under a
    /// permit ([`MAX_DISCOVERIES`](super::MAX_DISCOVERIES)); `None` if
    /// `deadline` passed first.
    ///
    /// Implementation note: the resolver's lock is never held across an
    /// await. No permit is waited for, and no lookup started, past
    /// `deadline`; an SRV query still queued for the DNS pool then is
    /// never run; one already running (it cannot be cancelled) and a
    /// `.well-known` fetch under way (bounded by its own time limit) end
    /// and are reported, so their outcome is cached.
    async fn discover(&self, server: &ServerName, deadline: Instant) -> Ended {
        let within = deadline.checked_duration_since(Instant::now())?;
        let _permit = timeout(&self.runtime, within, self.discoveries.acquire()).await??;
        let mut discovery = self.resolver().discover(server, self.discovery_seed());
        loop {
            let step = self
                .resolver()
                .poll_discovery(Instant::now(), &mut discovery);
            let lookup = match step {
                Step::Done(endpoints) => {
                    let urls: Vec<String> = endpoints.iter().map(Endpoint::base_url).collect();
                    let tls_name = endpoints.first().map(|e| e.tls_name.as_str());
                    tracing::debug!(%server, ?urls, ?tls_name, "resolved");
                    return Some(endpoints);
                }
                Step::Lookup(lookup) => lookup,
            };
            if Instant::now() >= deadline {
                tracing::debug!(%server, "discovery ended at its deadline");
                return None;
            }
            match lookup {
                Lookup::WellKnown { host } => {
                    let answer = Box::pin(self.fetch_well_known(&host)).await;
                    tracing::debug!(%server, %host, ?answer, "well-known");
                    self.resolver().handle_well_known(
                        Instant::now(),
                        crate::unix_now(),
                        &mut discovery,
                        answer,
                    );
                }
                Lookup::Srv { name } => {
                    let answer = self.query_srv(&name, deadline).await?;
                    tracing::debug!(%server, %name, ?answer, "SRV");
                    self.resolver()
                        .handle_srv(Instant::now(), &mut discovery, answer);
                }
            }
        }
    }

    /// The SRV records of `name`, asked on the DNS pool; `None` if no
    /// thread took the query before `deadline`.
    async fn query_srv(&self, name: &str, deadline: Instant) -> Option<SrvAnswer> {
        let (dns_server, query) = (self.dns_server, name.to_owned());
        // Reading resolv.conf is file I/O too: both go to the pool.
        let ask = move || {
            let nameserver = dns_server.unwrap_or_else(crate::dns::system_nameserver);
            crate::dns::query_srv(nameserver, &query)
        };
        let within = deadline.checked_duration_since(Instant::now())?;
        let mut queued =
            timeout(&self.runtime, within, self.dns.submit(Some(deadline), ask)).await?;
        let within = deadline.saturating_duration_since(Instant::now());
        let answer = match timeout(&self.runtime, within, &mut queued).await {
            Some(answer) => answer,
            // Running: it ends within its own time limit.
            None if queued.started() => queued.await,
            // Still queued: dropped, so never run.
            None => return None,
        };
        match answer {
            Ok(answer) => Some(answer),
            Err(JobError::Panicked(e)) => Some(SrvAnswer::Failed(format!("SRV {name}: {e}"))),
            Err(JobError::NotRun) => None,
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
