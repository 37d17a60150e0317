//! Where a server name is reached: `--resolve NAME=URL` overrides, else
//! Matrix server discovery (IP literal or explicit port as given, else
//! `.well-known` delegation, SRV records, and port 8448), and which of its
//! endpoints a request tries, in what order, for how long.
//!
//! Implementation note: this is the pure part. [`Resolver::discover`]
//! starts a [`Discovery`] with a random seed the adapter draws (it orders
//! SRV records of equal priority); [`Resolver::poll_discovery`] says which
//! lookup (a `.well-known` fetch or an SRV query) is next, answering from
//! the resolver's caches where it can, or where to connect once it is over;
//! the adapter performs each lookup and reports it with
//! [`Resolver::handle_well_known`] or [`Resolver::handle_srv`]. A
//! `.well-known` fetch is itself a [`WellKnownFetch`] (redirects). Each
//! request then walks the endpoints with an [`Attempt`] (which says when
//! it fails over), reporting each try with [`Resolver::handle_tried`]. Time comes in as arguments, so the
//! cache rules ([`cache`]) are table-tested on virtual time. The drive
//! loop:
//!
//! 1. `let mut d = resolver.discover(&server, seed);`
//! 2. loop on `resolver.poll_discovery(now, &mut d)`: on
//!    `Step::Lookup(l)` perform `l` and report it with the matching
//!    `handle_*`; on `Step::Done(endpoints)` go on with
//!    `let mut a = Attempt::new(endpoints);`
//! 3. loop on `a.poll()`: on `AttemptStep::Try { endpoint, .. }` send the
//!    request there and report how it went with `resolver.handle_tried`;
//!    `AttemptStep::Answered` and `AttemptStep::Failed` end the request.
//!
//! ```no_run
//! # use relay_core::resolve::*;
//! # use relay_core::{Instant, ServerName, UnixMillis};
//! # fn fetch(_: &str) -> WellKnownAnswer { WellKnownAnswer::Failed("no network".into()) }
//! # fn query(_: &str) -> SrvAnswer { SrvAnswer::NoRecords { ttl: None } }
//! # fn send(_: &Endpoint) -> Tried { Tried::Answered }
//! # fn drive(resolver: &mut Resolver, server: &ServerName, seed: u64) -> AttemptStep {
//! let mut d = resolver.discover(server, seed);
//! let endpoints = loop {
//!     let now = Instant::now();
//!     match resolver.poll_discovery(now, &mut d) {
//!         Step::Lookup(Lookup::WellKnown { host }) => {
//!             let answer = fetch(&host);
//!             resolver.handle_well_known(now, UnixMillis(1_700_000_000_000), &mut d, answer);
//!         }
//!         Step::Lookup(Lookup::Srv { name }) => {
//!             let answer = query(&name);
//!             resolver.handle_srv(now, &mut d, answer);
//!         }
//!         Step::Done(endpoints) => break endpoints,
//!     }
//! };
//! let mut a = Attempt::new(endpoints);
//! loop {
//!     match a.poll() {
//!         AttemptStep::Try { endpoint, .. } => {
//!             let tried = send(&endpoint);
//!             resolver.handle_tried(Instant::now(), &mut a, tried);
//!         }
//!         over => return over,
//!     }
//! }
//! # }
//! ```

mod attempt;
pub mod cache;
mod discovery;
#[cfg(test)]
mod tests;
mod well_known;

use std::collections::HashMap;
use std::time::Duration;

pub use attempt::{Attempt, AttemptStep, CONNECT_TIMEOUT, Tried};
pub use discovery::{
    Discovery, Lookup, MAX_SRV_TARGETS, SrvAnswer, SrvRecord, Step, WellKnownAnswer,
};
pub use well_known::{
    Fetched, MAX_WELL_KNOWN_REDIRECTS, WELL_KNOWN_MAX_BYTES, WELL_KNOWN_TIMEOUT, WellKnownFetch,
    redirect,
};

use crate::id::{ServerName, split_host_port, unbracketed};
use crate::{Instant, UnixMillis};

/// How to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (P2P overlays, tests, a TLS-terminating proxy in front).
    Http,
    /// HTTPS, as federation is by default.
    Https,
}

/// A concrete address to send a server's requests to, and the names the
/// requests carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 in brackets) the TCP connection goes to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The name sent as SNI and that the certificate must match (IP
    /// literals without brackets).
    pub tls_name: String,
    /// The `Host` header.
    pub host_header: String,
    /// The operator's own (`--resolve`): connected to whatever its address,
    /// where discovery's endpoints are held to an
    /// [`AddressPolicy`](crate::addr_policy::AddressPolicy).
    pub trusted: bool,
}

impl Endpoint {
    /// `scheme://host:port`.
    pub fn base_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// A `--resolve` value that is not `NAME=URL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAME=http://HOST:PORT (or https://), got {0:?}")]
pub struct ResolveError(pub String);

/// Overrides from `--resolve`, and discovery with its caches for the rest.
#[derive(Debug, Clone)]
pub struct Resolver {
    overrides: HashMap<ServerName, Endpoint>,
    caches: discovery::Caches,
    /// `host:port` of targets no connection could be made to, lately.
    unreachable: cache::ExpiringMap<()>,
}

/// How long a target no connection could be made to is tried after the
/// other targets of its server.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(60);

impl Default for Resolver {
    fn default() -> Self {
        Self {
            overrides: HashMap::new(),
            caches: discovery::Caches::new(cache::DEFAULT_CAPACITY),
            unreachable: cache::ExpiringMap::new(cache::DEFAULT_CAPACITY),
        }
    }
}

impl Resolver {
    /// A resolver with `NAME=URL` overrides.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Result<Self, ResolveError> {
        let mut resolver = Self::default();
        for flag in flags {
            let (name, endpoint) = parse_flag(flag).ok_or_else(|| ResolveError(flag.to_owned()))?;
            resolver.overrides.insert(name, endpoint);
        }
        Ok(resolver)
    }

    /// A resolver whose discovery caches keep at most `capacity` names each.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.caches = discovery::Caches::new(capacity);
        self.unreachable = cache::ExpiringMap::new(capacity);
        self
    }

    /// Adds or replaces an override.
    pub fn insert(&mut self, name: ServerName, endpoint: Endpoint) {
        self.overrides.insert(name, endpoint);
    }

    /// Starts finding where `server` is reached; an override or an IP
    /// literal or explicit port is already over. `seed` (random, drawn by
    /// the caller for each run) orders SRV records of equal priority.
    pub fn discover(&self, server: &ServerName, seed: u64) -> Discovery {
        match self.overrides.get(server) {
            Some(e) => Discovery::done(server, e.clone()),
            None => Discovery::new(server, seed),
        }
    }

    /// The next step of `discovery`, answered from the caches where they
    /// hold a live entry. Targets marked unreachable within
    /// [`UNREACHABLE_FOR`] come after the others, in their order.
    pub fn poll_discovery(&self, now: Instant, discovery: &mut Discovery) -> Step {
        match discovery.poll(now, &self.caches) {
            Step::Done(mut endpoints) if endpoints.len() > 1 => {
                // A stable sort: `false` (reachable) first.
                endpoints.sort_by_key(|e| {
                    self.unreachable
                        .get(now, &format!("{}:{}", e.host, e.port))
                        .is_some()
                });
                Step::Done(endpoints)
            }
            step => step,
        }
    }

    /// Remembers that no connection to `endpoint` could be made (TCP or
    /// TLS), so that for [`UNREACHABLE_FOR`] its server's other targets are
    /// tried first. An answer of any status is no reason to call this.
    pub fn mark_unreachable(&mut self, now: Instant, endpoint: &Endpoint) {
        let key = format!("{}:{}", endpoint.host, endpoint.port);
        self.unreachable.insert(now, key, (), UNREACHABLE_FOR);
    }

    /// Reports how trying the endpoint `attempt` handed out last went. A
    /// target no connection could be made to, of a server with several, is
    /// tried after the others for [`UNREACHABLE_FOR`]
    /// ([`mark_unreachable`](Self::mark_unreachable)).
    pub fn handle_tried(&mut self, now: Instant, attempt: &mut Attempt, tried: Tried) {
        if let Some(endpoint) = attempt.handle_tried(tried) {
            self.mark_unreachable(now, endpoint);
        }
    }

    /// Reports the `.well-known` fetch that `discovery` asked for; `unix`
    /// is the wall clock (for `Expires`). Anything else is ignored.
    pub fn handle_well_known(
        &mut self,
        now: Instant,
        unix: UnixMillis,
        discovery: &mut Discovery,
        answer: WellKnownAnswer,
    ) {
        discovery.handle_well_known(now, unix, &mut self.caches, answer);
    }

    /// Reports the SRV query that `discovery` asked for. Anything else is
    /// ignored.
    pub fn handle_srv(&mut self, now: Instant, discovery: &mut Discovery, answer: SrvAnswer) {
        discovery.handle_srv(now, &mut self.caches, answer);
    }

    /// How many `.well-known` and SRV outcomes are cached (expired ones
    /// included until evicted).
    pub fn cached(&self) -> (usize, usize) {
        (self.caches.well_known.len(), self.caches.srv.len())
    }
}

fn parse_flag(flag: &str) -> Option<(ServerName, Endpoint)> {
    let (name, url) = flag.split_once('=')?;
    let name = ServerName::parse(name).ok()?;
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return None;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') {
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    let stray_colon = host.contains(':') && !host.starts_with('[');
    if host.is_empty() || stray_colon {
        return None;
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let tls_name = unbracketed(host).to_owned();
    Some((
        name.clone(),
        Endpoint {
            scheme,
            host: host.to_owned(),
            port: port.unwrap_or(default_port),
            tls_name,
            host_header: name.as_str().to_owned(),
            trusted: true,
        },
    ))
}
