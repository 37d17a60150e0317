//! Where a server name is reached: `--resolve NAME=URL` overrides, else the
//! Matrix server-discovery default.
//!
//! Implementation note: of the spec's discovery steps this implements the
//! ones that need no lookup: an IP literal or an explicit port is used as
//! is, and a bare hostname is reached on port 8448, over HTTPS. `.well-known`
//! delegation and SRV records are not consulted yet; P2P overlays and tests
//! name every peer with `--resolve`.

use std::collections::HashMap;

use crate::id::ServerName;

/// How to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (P2P overlays, tests, a TLS-terminating proxy in front).
    Http,
    /// HTTPS, as federation is by default.
    Https,
}

/// A concrete address to send a server's requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 in brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
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

/// Overrides from `--resolve`, and the discovery default for the rest.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: HashMap<ServerName, Endpoint>,
}

impl Resolver {
    /// A resolver with `NAME=URL` overrides.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Result<Self, ResolveError> {
        let mut overrides = HashMap::new();
        for flag in flags {
            let (name, endpoint) = parse_flag(flag).ok_or_else(|| ResolveError(flag.to_owned()))?;
            overrides.insert(name, endpoint);
        }
        Ok(Self { overrides })
    }

    /// Adds or replaces an override.
    pub fn insert(&mut self, name: ServerName, endpoint: Endpoint) {
        self.overrides.insert(name, endpoint);
    }

    /// Where `server` is reached.
    pub fn endpoint(&self, server: &ServerName) -> Endpoint {
        if let Some(e) = self.overrides.get(server) {
            return e.clone();
        }
        let (host, port) = split_host_port(server.as_str());
        Endpoint {
            scheme: Scheme::Https,
            host: host.to_owned(),
            port: port.unwrap_or(8448),
        }
    }
}

fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(end) = s.find(']') {
        let (host, rest) = s.split_at(end + 1);
        return (host, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        None => (s, None),
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
    let (host, port) = split_host_port(authority);
    let stray_colon = host.contains(':') && !host.starts_with('[');
    if host.is_empty() || stray_colon || (port.is_none() && authority.len() != host.len()) {
        return None;
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    Some((
        name,
        Endpoint {
            scheme,
            host: host.to_owned(),
            port: port.unwrap_or(default_port),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn overrides_win() {
        let r = Resolver::from_flags([
            "b.example=http://127.0.0.1:9000",
            "c.example=https://[::1]/",
        ])
        .unwrap();
        assert_eq!(
            r.endpoint(&name("b.example")).base_url(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            r.endpoint(&name("c.example")).base_url(),
            "https://[::1]:443"
        );
        assert_eq!(
            r.endpoint(&name("d.example")).base_url(),
            "https://d.example:8448"
        );
    }

    #[test]
    fn discovery_defaults() {
        let r = Resolver::default();
        for (server, url) in [
            ("matrix.org", "https://matrix.org:8448"),
            ("matrix.org:443", "https://matrix.org:443"),
            ("1.2.3.4", "https://1.2.3.4:8448"),
            ("[1234:5678::abcd]:5678", "https://[1234:5678::abcd]:5678"),
            ("[1234:5678::abcd]", "https://[1234:5678::abcd]:8448"),
        ] {
            assert_eq!(r.endpoint(&name(server)).base_url(), url, "{server}");
        }
    }

    #[test]
    fn bad_flags() {
        for bad in [
            "nope",
            "b.example",
            "b.example=127.0.0.1:9",
            "b.example=ftp://x",
            "bad_name=http://x",
            "b.example=http://x/path",
            "b.example=http://:9",
            "b.example=http://x:port",
        ] {
            assert!(Resolver::from_flags([bad]).is_err(), "{bad}");
        }
    }
}
