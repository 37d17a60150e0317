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
//! Implementation note: among SRV records the lowest priority wins, then
//! the highest weight; there is no weighted random choice and no failover
//! to the next record (a failed connection is a failed attempt, retried
//! later by the caller). A record whose target is `.` (RFC 2782: "no
//! service here") or not a hostname counts as no record.

use std::time::Duration;

use super::cache::{self, ExpiringMap};
use super::{Endpoint, Scheme, split_host_port};
use crate::ServerName;

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
    /// Discovery is over: connect here.
    Done(Endpoint),
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
    /// No response: connection, TLS, timeout, or a body over the limit.
    Failed(String),
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Among equal priorities, higher is preferred.
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
/// An SRV outcome: the chosen target and port, or `None`.
pub(crate) type SrvTarget = Option<(String, u16)>;

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
    Done(Endpoint),
}

/// One server's discovery in progress. Drive it with
/// [`Resolver::poll_discovery`](super::Resolver::poll_discovery) and the
/// resolver's `handle_*` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    server: ServerName,
    state: State,
}

/// The discovery caches: `.well-known` outcomes by hostname, SRV outcomes
/// by query name.
#[derive(Debug, Clone)]
pub(crate) struct Caches {
    pub(crate) well_known: ExpiringMap<Delegation>,
    pub(crate) srv: ExpiringMap<SrvTarget>,
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

fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn endpoint(host: &str, port: u16, tls_name: &str, host_header: &str) -> Endpoint {
    Endpoint {
        scheme: Scheme::Https,
        host: host.to_owned(),
        port,
        tls_name: unbracketed(tls_name).to_owned(),
        host_header: host_header.to_owned(),
    }
}

impl Discovery {
    /// Starts the discovery of `server` (steps 1 and 2 need no lookup).
    pub(crate) fn new(server: &ServerName) -> Self {
        let name = server.as_str();
        let (host, port) = split_host_port(name);
        let state = if is_ip_literal(host) {
            State::Done(endpoint(host, port.unwrap_or(8448), host, name))
        } else if let Some(port) = port {
            State::Done(endpoint(host, port, host, name))
        } else {
            State::AwaitingWellKnown {
                host: host.to_ascii_lowercase(),
            }
        };
        Self {
            server: server.clone(),
            state,
        }
    }

    /// Discovery that is already over (an override).
    pub(crate) fn done(server: &ServerName, endpoint: Endpoint) -> Self {
        Self {
            server: server.clone(),
            state: State::Done(endpoint),
        }
    }

    /// The server being discovered.
    pub fn server(&self) -> &ServerName {
        &self.server
    }

    /// The next step, answering lookups from `caches` where they can.
    pub(crate) fn poll(&mut self, now: crate::Instant, caches: &Caches) -> Step {
        loop {
            match &self.state {
                State::Done(e) => return Step::Done(e.clone()),
                State::AwaitingWellKnown { host } => match caches.well_known.get(now, host) {
                    Some(delegation) => self.delegate(delegation),
                    None => return Step::Lookup(Lookup::WellKnown { host: host.clone() }),
                },
                State::AwaitingSrv { base, service } => {
                    let name = srv_name(*service, base);
                    match caches.srv.get(now, &name) {
                        Some(target) => self.srv_found(target),
                        None => return Step::Lookup(Lookup::Srv { name }),
                    }
                }
            }
        }
    }

    /// Records the `.well-known` answer (if awaited) and caches it.
    pub(crate) fn handle_well_known(
        &mut self,
        now: crate::Instant,
        unix: crate::UnixMillis,
        caches: &mut Caches,
        answer: WellKnownAnswer,
    ) {
        let State::AwaitingWellKnown { host } = &self.state else {
            return;
        };
        let (delegation, lifetime) = match answer {
            WellKnownAnswer::Response {
                status: 200,
                body,
                cache_control,
                expires,
            } => match parse_well_known(&body) {
                Some(delegated) => (
                    Some(delegated),
                    cache::well_known_lifetime(cache_control.as_deref(), expires.as_deref(), unix),
                ),
                None => (None, cache::WELL_KNOWN_FAILURE),
            },
            WellKnownAnswer::Response { .. } | WellKnownAnswer::Failed(_) => {
                (None, cache::WELL_KNOWN_FAILURE)
            }
        };
        caches
            .well_known
            .insert(now, host.clone(), delegation.clone(), lifetime);
        self.delegate(delegation);
    }

    /// Records the SRV answer (if awaited) and caches it.
    pub(crate) fn handle_srv(
        &mut self,
        now: crate::Instant,
        caches: &mut Caches,
        answer: SrvAnswer,
    ) {
        let State::AwaitingSrv { base, service } = &self.state else {
            return;
        };
        let name = srv_name(*service, base);
        let (target, lifetime) = match answer {
            SrvAnswer::Records(records) => {
                let ttl = records.iter().map(|r| r.ttl).min();
                match pick(&records) {
                    Some(target) => (Some(target), cache::srv_lifetime(ttl)),
                    None => (None, cache::srv_lifetime(ttl)),
                }
            }
            SrvAnswer::NoRecords { ttl } => (None, cache::srv_lifetime(ttl)),
            SrvAnswer::Failed(_) => (None, cache::SRV_FAILURE),
        };
        caches.srv.insert(now, name, target.clone(), lifetime);
        self.srv_found(target);
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
                let (host, port) = split_host_port(&delegated);
                if is_ip_literal(host) {
                    State::Done(endpoint(host, port.unwrap_or(8448), host, &delegated))
                } else if let Some(port) = port {
                    State::Done(endpoint(host, port, host, &delegated))
                } else {
                    State::AwaitingSrv {
                        base: host.to_ascii_lowercase(),
                        service: Service::MatrixFed,
                    }
                }
            }
        };
    }

    fn srv_found(&mut self, target: SrvTarget) {
        let State::AwaitingSrv { base, service } = &self.state else {
            return;
        };
        self.state = match (target, service) {
            (Some((host, port)), _) => State::Done(endpoint(&host, port, base, base)),
            (None, Service::MatrixFed) => State::AwaitingSrv {
                base: base.clone(),
                service: Service::Matrix,
            },
            (None, Service::Matrix) => State::Done(endpoint(base, 8448, base, base)),
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

/// The preferred usable record: lowest priority, then highest weight.
fn pick(records: &[SrvRecord]) -> SrvTarget {
    records
        .iter()
        .filter_map(|r| {
            let target = r.target.strip_suffix('.').unwrap_or(&r.target);
            let usable =
                !target.is_empty() && !target.contains(':') && ServerName::parse(target).is_ok();
            usable.then_some((r.priority, std::cmp::Reverse(r.weight), target, r.port))
        })
        .min()
        .map(|(_, _, target, port)| (target.to_ascii_lowercase(), port))
}
