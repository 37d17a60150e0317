//! One run of Matrix server discovery: which lookup is next, and where it
//! ends.
//!
//! The steps, as the spec's "Resolving server names" lists them:
//! 1. an IP literal, with or without a port: that address (port 8448 if
//!    none); Host is the server name;
//! 2. a hostname with a port: that host and port; Host is the server name;
//! 3. otherwise `GET https://<hostname>/.well-known/matrix/server`; a valid
//!    `{"m.server": "<delegated>[:<port>]"}` delegates:
//!    - an IP literal or a name with a port is used as is, Host being the
//!      delegated value;
//!    - else SRV `_matrix-fed._tcp.<delegated>`, then the deprecated
//!      `_matrix._tcp.<delegated>`, else `<delegated>:8448`, Host and
//!      certificate name being `<delegated>`;
//! 4. no valid `.well-known`: the same SRV steps and fallback for the
//!    hostname itself.
//!
//! Implementation note: SRV records are ordered as RFC 2782 says: lowest
//! priority first; within a priority, a weighted random order, where the
//! weight-0 records together get a `1 / (sum of weights + 1)` chance at
//! each pick. The randomness is the run's seed, which the adapter draws, so
//! the order is reproducible in tests and differs between runs (spreading
//! load as the weights ask). Discovery ends in that order's first
//! [`MAX_SRV_TARGETS`] usable targets, which the caller tries in turn when
//! a connection cannot be made. A record whose target is `.` (RFC 2782:
//! "no service here") or not a hostname is skipped; with no usable record
//! left, the name counts as having none.

use std::time::Duration;

use super::cache::{self, ExpiringMap};
use super::{Endpoint, Scheme};
use crate::id::{split_host_port, unbracketed};
use crate::rng::Rng;
use crate::{Instant, ServerName};

/// Most SRV targets a discovery ends in, so a request tries at most this
/// many before counting as failed.
pub const MAX_SRV_TARGETS: usize = 4;

/// A lookup the adapter performs for discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `GET https://{host}/.well-known/matrix/server`, on port 443.
    WellKnown {
        /// The hostname (no port).
        host: String,
    },
    /// The SRV records of `name`, e.g. `_matrix-fed._tcp.example.org`.
    Srv {
        /// The full DNS name to query.
        name: String,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Perform this lookup and report it with `handle_well_known` or
    /// `handle_srv`.
    Lookup(Lookup),
    /// Discovery is over: connect to the first of these; when that
    /// connection (TCP or TLS) fails, to the next. Never empty.
    Done(Vec<Endpoint>),
}

/// How the `.well-known` fetch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WellKnownAnswer {
    /// An HTTP response (any status).
    Response {
        /// The status code.
        status: u16,
        /// The body (the adapter bounds its size).
        body: Vec<u8>,
        /// The `Cache-Control` header, if any.
        cache_control: Option<String>,
        /// The `Expires` header, if any.
        expires: Option<String>,
    },
    /// No response: connection, TLS, timeout, too many redirects, or a body
    /// over the limit. Like a 5xx, it means the server is down.
    Failed(String),
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Among equal priorities, the relative chance of being tried first.
    pub weight: u16,
    /// The port to connect to.
    pub port: u16,
    /// The host to connect to (a trailing dot is ignored).
    pub target: String,
    /// The record's TTL.
    pub ttl: Duration,
}

/// How an SRV query went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvAnswer {
    /// The answer's SRV records (possibly none).
    Records(Vec<SrvRecord>),
    /// The name has no SRV record (NXDOMAIN or no data); `ttl` is the
    /// negative-caching time the server gave, if any.
    NoRecords {
        /// How long the server says "no" holds.
        ttl: Option<Duration>,
    },
    /// No usable answer (timeout, SERVFAIL, garbage).
    Failed(String),
}

/// A `.well-known` outcome: the `m.server` value, or `None` when there is
/// no valid delegation.
pub(crate) type Delegation = Option<String>;

/// A cached `.well-known` outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WellKnownEntry {
    pub(crate) delegation: Delegation,
    /// Until when a refetch that finds the server down keeps using
    /// `delegation` (`None`: no valid delegation to keep).
    pub(crate) grace_until: Option<Instant>,
}

/// An SRV outcome: the usable records (target lowercased, without its
/// trailing dot), possibly none.
pub(crate) type SrvTargets = Vec<SrvRecord>;

/// Which SRV service is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    MatrixFed,
    /// The deprecated `_matrix._tcp`.
    Matrix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitingWellKnown {
        host: String,
    },
    /// `base` is the name whose SRV records are asked; it is also the Host
    /// and the certificate name of whatever they point at.
    AwaitingSrv {
        base: String,
        service: Service,
    },
    Done(Vec<Endpoint>),
}

/// One server's discovery in progress. Drive it with
/// [`Resolver::poll_discovery`](super::Resolver::poll_discovery) and the
/// resolver's `handle_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    server: ServerName,
    state: State,
    /// Orders SRV records of equal priority.
    seed: u64,
}

/// The discovery caches: `.well-known` outcomes by hostname, SRV outcomes
/// by query name.
#[derive(Debug, Clone)]
pub(crate) struct Caches {
    pub(crate) well_known: ExpiringMap<WellKnownEntry>,
    pub(crate) srv: ExpiringMap<SrvTargets>,
}

impl Caches {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            well_known: ExpiringMap::new(capacity),
            srv: ExpiringMap::new(capacity),
        }
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok()
}

fn endpoint(host: &str, port: u16, tls_name: &str, host_header: &str) -> Endpoint {
    Endpoint {
        scheme: Scheme::Https,
        host: host.to_owned(),
        port,
        tls_name: unbracketed(tls_name).to_owned(),
        host_header: host_header.to_owned(),
        trusted: false,
    }
}

impl Discovery {
    /// Starts the discovery of `server` (steps 1 and 2 need no lookup);
    /// `seed` orders its SRV records.
    pub(crate) fn new(server: &ServerName, seed: u64) -> Self {
        let name = server.as_str();
        // A server name always splits.
        let (host, port) = split_host_port(name).unwrap_or((name, None));
        let state = if is_ip_literal(host) {
            State::Done(vec![endpoint(host, port.unwrap_or(8448), host, name)])
        } else if let Some(port) = port {
            State::Done(vec![endpoint(host, port, host, name)])
        } else {
            State::AwaitingWellKnown {
                host: host.to_ascii_lowercase(),
            }
        };
        Self {
            server: server.clone(),
            state,
            seed,
        }
    }

    /// Discovery that is already over (an override).
    pub(crate) fn done(server: &ServerName, endpoint: Endpoint) -> Self {
        Self {
            server: server.clone(),
            state: State::Done(vec![endpoint]),
            seed: 0,
        }
    }

    /// The server being discovered.
    pub fn server(&self) -> &ServerName {
        &self.server
    }

    /// The next step, answering lookups from `caches` where they can.
    pub(crate) fn poll(&mut self, now: Instant, caches: &Caches) -> Step {
        loop {
            match &self.state {
                State::Done(e) => return Step::Done(e.clone()),
                State::AwaitingWellKnown { host } => match caches.well_known.get(now, host) {
                    Some(entry) => self.delegate(entry.delegation),
                    None => return Step::Lookup(Lookup::WellKnown { host: host.clone() }),
                },
                State::AwaitingSrv { base, service } => {
                    let name = srv_name(*service, base);
                    match caches.srv.get(now, &name) {
                        Some(targets) => self.srv_found(&targets),
                        None => return Step::Lookup(Lookup::Srv { name }),
                    }
                }
            }
        }
    }

    /// Records the `.well-known` answer (if awaited) and caches it.
    ///
    /// Implementation note: a server that is down (no response, or a 5xx)
    /// is asked again soon; a valid delegation whose lifetime ran out is
    /// kept through such outages for [`cache::WELL_KNOWN_GRACE`], so a
    /// brief outage of the web server does not send federation traffic to
    /// the bare hostname. The grace needs the expired entry, so it is lost
    /// if the full cache evicted it.
    pub(crate) fn handle_well_known(
        &mut self,
        now: Instant,
        unix: crate::UnixMillis,
        caches: &mut Caches,
        answer: WellKnownAnswer,
    ) {
        let State::AwaitingWellKnown { host } = &self.state else {
            return;
        };
        let invalid = WellKnownEntry {
            delegation: None,
            grace_until: None,
        };
        let (entry, lifetime) = match answer {
            WellKnownAnswer::Response {
                status: 200,
                body,
                cache_control,
                expires,
            } => match parse_well_known(&body) {
                Some(delegated) => {
                    let lifetime = cache::well_known_lifetime(
                        cache_control.as_deref(),
                        expires.as_deref(),
                        unix,
                    );
                    let entry = WellKnownEntry {
                        delegation: Some(delegated),
                        grace_until: Some(now + lifetime + cache::WELL_KNOWN_GRACE),
                    };
                    (entry, lifetime)
                }
                None => (invalid, cache::WELL_KNOWN_INVALID),
            },
            WellKnownAnswer::Response { status, .. } if status < 500 => {
                (invalid, cache::WELL_KNOWN_INVALID)
            }
            WellKnownAnswer::Response { .. } | WellKnownAnswer::Failed(_) => {
                match caches.well_known.get_expired(host) {
                    Some(
                        previous @ WellKnownEntry {
                            delegation: Some(_),
                            grace_until: Some(until),
                        },
                    ) if now < until => {
                        let left = until.saturating_duration_since(now);
                        (previous, cache::WELL_KNOWN_DOWN.min(left))
                    }
                    _ => (invalid, cache::WELL_KNOWN_DOWN),
                }
            }
        };
        let delegation = entry.delegation.clone();
        caches.well_known.insert(now, host.clone(), entry, lifetime);
        self.delegate(delegation);
    }

    /// Records the SRV answer (if awaited) and caches it.
    pub(crate) fn handle_srv(&mut self, now: Instant, caches: &mut Caches, answer: SrvAnswer) {
        let State::AwaitingSrv { base, service } = &self.state else {
            return;
        };
        let name = srv_name(*service, base);
        let (targets, lifetime) = match answer {
            SrvAnswer::Records(records) => {
                let ttl = records.iter().map(|r| r.ttl).min();
                (usable(records), cache::srv_lifetime(ttl))
            }
            SrvAnswer::NoRecords { ttl } => (Vec::new(), cache::srv_lifetime(ttl)),
            SrvAnswer::Failed(_) => (Vec::new(), cache::SRV_FAILURE),
        };
        self.srv_found(&targets);
        caches.srv.insert(now, name, targets, lifetime);
    }

    /// Step 3's sub-steps (or step 4 when there is no delegation).
    fn delegate(&mut self, delegation: Delegation) {
        self.state = match delegation {
            None => match &self.state {
                State::AwaitingWellKnown { host } => State::AwaitingSrv {
                    base: host.clone(),
                    service: Service::MatrixFed,
                },
                _ => return,
            },
            Some(delegated) => {
                // A valid delegation is a server name: it always splits.
                let (host, port) = split_host_port(&delegated).unwrap_or((&delegated, None));
                if is_ip_literal(host) {
                    State::Done(vec![endpoint(host, port.unwrap_or(8448), host, &delegated)])
                } else if let Some(port) = port {
                    State::Done(vec![endpoint(host, port, host, &delegated)])
                } else {
                    State::AwaitingSrv {
                        base: host.to_ascii_lowercase(),
                        service: Service::MatrixFed,
                    }
                }
            }
        };
    }

    fn srv_found(&mut self, targets: &[SrvRecord]) {
        let State::AwaitingSrv { base, service } = &self.state else {
            return;
        };
        self.state = match (targets.is_empty(), service) {
            (false, _) => State::Done(
                order(targets, self.seed)
                    .into_iter()
                    .map(|r| endpoint(&r.target, r.port, base, base))
                    .collect(),
            ),
            (true, Service::MatrixFed) => State::AwaitingSrv {
                base: base.clone(),
                service: Service::Matrix,
            },
            (true, Service::Matrix) => State::Done(vec![endpoint(base, 8448, base, base)]),
        };
    }
}

fn srv_name(service: Service, base: &str) -> String {
    match service {
        Service::MatrixFed => format!("_matrix-fed._tcp.{base}"),
        Service::Matrix => format!("_matrix._tcp.{base}"),
    }
}

/// `m.server` of a valid `.well-known` body: a JSON object whose `m.server`
/// is a server name.
fn parse_well_known(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let delegated = value.as_object()?.get("m.server")?.as_str()?;
    ServerName::parse(delegated).ok()?;
    Some(delegated.to_owned())
}

/// The records whose target is a hostname, normalised, without repeats.
fn usable(records: Vec<SrvRecord>) -> SrvTargets {
    let mut out: SrvTargets = Vec::new();
    for mut r in records {
        let target = r.target.strip_suffix('.').unwrap_or(&r.target);
        let target = target.to_ascii_lowercase();
        let is_host =
            !target.is_empty() && !target.contains(':') && ServerName::parse(&target).is_ok();
        if is_host && !out.iter().any(|o| o.target == target && o.port == r.port) {
            r.target = target;
            out.push(r);
        }
    }
    out
}

/// RFC 2782's order of `records`, cut to [`MAX_SRV_TARGETS`]: ascending
/// priority; within one, each next record drawn with a chance
/// proportional to its weight, the weight-0 ones sharing one extra share.
fn order(records: &[SrvRecord], seed: u64) -> Vec<SrvRecord> {
    let mut rng = Rng::from_seed(seed_bytes(seed));
    let mut left: Vec<&SrvRecord> = records.iter().collect();
    // Stable: records of equal priority keep the answer's order before
    // the draw, so a seed always gives the same result.
    left.sort_by_key(|r| r.priority);
    let mut out = Vec::new();
    while out.len() < MAX_SRV_TARGETS && !left.is_empty() {
        let priority = left[0].priority;
        let group = left.iter().take_while(|r| r.priority == priority).count();
        let pick = draw(&left[..group], &mut rng);
        out.push(left.remove(pick).clone());
    }
    out
}

/// The index in `group` (non-empty, one priority) of the next record.
fn draw(group: &[&SrvRecord], rng: &mut Rng) -> usize {
    let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
    let zeros: Vec<usize> = (0..group.len()).filter(|&i| group[i].weight == 0).collect();
    // RFC 2782 draws from [0, total], where 0 falls to a weight-0 record;
    // without one, [1, total], so weights are followed exactly.
    let low = u64::from(zeros.is_empty());
    let roll = low + below(rng, total + 1 - low);
    if roll == 0 {
        return zeros[below(rng, zeros.len() as u64) as usize];
    }
    let mut sum = 0;
    group
        .iter()
        .position(|r| {
            sum += u64::from(r.weight);
            sum >= roll
        })
        .unwrap_or(0)
}

/// A number in `[0, n)` (`n > 0`), without modulo bias worth noticing.
fn below(rng: &mut Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// `seed` in every word: the generator's first output depends on one word
/// only, so all of them must vary with the seed.
fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0; 32];
    for word in bytes.chunks_exact_mut(8) {
        word.copy_from_slice(&seed.to_le_bytes());
    }
    bytes
}
