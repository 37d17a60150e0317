//! The `.well-known/matrix/server` fetch: where each GET goes, which
//! redirects are followed, and its bounds.

use std::time::Duration;

use super::{Endpoint, Scheme};
use crate::ServerName;
use crate::id::{split_host_port, unbracketed};

/// Most redirects a `.well-known` fetch follows.
pub const MAX_WELL_KNOWN_REDIRECTS: usize = 3;
/// How long a `.well-known` fetch may take, redirects included.
pub const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `.well-known` body read; past it the fetch failed.
pub const WELL_KNOWN_MAX_BYTES: usize = 50 << 10;

/// The request target of a `.well-known` fetch.
const WELL_KNOWN_PATH: &str = "/.well-known/matrix/server";

/// One `.well-known` fetch, asked for by
/// [`Lookup::WellKnown`](super::Lookup::WellKnown): GET
/// [`request`](Self::request), report each response with
/// [`handle_response`](Self::handle_response) until it says what to
/// report to the resolver. A GET that gets no response ends the fetch as
/// [`WellKnownAnswer::Failed`](super::WellKnownAnswer::Failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WellKnownFetch {
    endpoint: Endpoint,
    target: String,
    redirects: usize,
}

/// What a `.well-known` response means for its fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// A redirect was followed: GET [`WellKnownFetch::request`] again.
    Redirected,
    /// This response is the fetch's answer: report it as
    /// [`WellKnownAnswer::Response`](super::WellKnownAnswer::Response).
    Answer,
    /// A redirect past [`MAX_WELL_KNOWN_REDIRECTS`]: report the fetch as
    /// [`WellKnownAnswer::Failed`](super::WellKnownAnswer::Failed).
    TooManyRedirects,
}

impl WellKnownFetch {
    /// `GET https://{host}/.well-known/matrix/server`, on port 443.
    pub fn new(host: &str) -> Self {
        Self {
            endpoint: Endpoint {
                scheme: Scheme::Https,
                host: host.to_owned(),
                port: 443,
                tls_name: host.to_owned(),
                host_header: host.to_owned(),
                trusted: false,
            },
            target: WELL_KNOWN_PATH.to_owned(),
            redirects: 0,
        }
    }

    /// Where the next GET goes: the endpoint, and the request target.
    pub fn request(&self) -> (&Endpoint, &str) {
        (&self.endpoint, &self.target)
    }

    /// Reports a response's status and `Location` header: a redirect to
    /// somewhere [`redirect`] follows is followed, anything else is the
    /// answer.
    pub fn handle_response(&mut self, status: u16, location: Option<&str>) -> Fetched {
        let next = (300..400)
            .contains(&status)
            .then(|| redirect(&self.endpoint, location?))
            .flatten();
        let Some((endpoint, target)) = next else {
            return Fetched::Answer;
        };
        if self.redirects == MAX_WELL_KNOWN_REDIRECTS {
            return Fetched::TooManyRedirects;
        }
        self.redirects += 1;
        (self.endpoint, self.target) = (endpoint, target);
        Fetched::Redirected
    }
}

/// Where a redirect of a request to `from` leads: the endpoint and the
/// request target. Only an absolute path (same endpoint) or an `https://`
/// URL is followed; `http://` (a downgrade) and anything else is not.
pub fn redirect(from: &Endpoint, location: &str) -> Option<(Endpoint, String)> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or_default();
    if location.starts_with('/') && !location.starts_with("//") {
        return Some((from.clone(), location.to_owned()));
    }
    let rest = location
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .map(|_| &location[8..])?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    let target = match target {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    ServerName::parse(authority).ok()?;
    let (host, port) = split_host_port(authority)?;
    let endpoint = Endpoint {
        scheme: Scheme::Https,
        host: host.to_owned(),
        port: port.unwrap_or(443),
        tls_name: unbracketed(host).to_owned(),
        host_header: authority.to_owned(),
        trusted: false,
    };
    Some((endpoint, target))
}
