//! How the client connects besides where: `--connect-to` redirections,
//! extra trusted roots, the nameserver, which addresses discovery may lead
//! to, and the TLS configuration.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use relay_core::addr_policy::AddressPolicy;
use relay_core::id::{split_host_port, unbracketed};
use rustls::pki_types::CertificateDer;

/// `HOST:PORT=ADDR:PORT`, as curl's `--connect-to`: TCP connections meant
/// for `HOST:PORT` go to `ADDR:PORT`; the Host header, SNI and certificate
/// checks still use `HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    /// The host (name or IP literal, IPv6 in brackets) as discovery names it.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Where the TCP connection goes instead (IPv6 in brackets).
    pub to_host: String,
    /// Its port.
    pub to_port: u16,
}

/// A `--connect-to` value that is not `HOST:PORT=ADDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectToError(pub String);

impl std::fmt::Display for ConnectToError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected HOST:PORT=ADDR:PORT, got {:?}", self.0)
    }
}

impl std::error::Error for ConnectToError {}

/// `HOST:PORT` of `--connect-to`: the port is required; the host is an IP
/// literal (IPv6 in brackets, or bare as curl takes it) or a hostname.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, Some(port)) = split_host_port(s)? else {
        return None;
    };
    let bare = unbracketed(host);
    let valid = !bare.is_empty()
        && (bare.parse::<std::net::IpAddr>().is_ok()
            || (!host.starts_with('[')
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

impl FromStr for ConnectTo {
    type Err = ConnectToError;

    fn from_str(s: &str) -> Result<Self, ConnectToError> {
        let bad = || ConnectToError(s.to_owned());
        let (from, to) = s.split_once('=').ok_or_else(bad)?;
        let (host, port) = host_port(from).ok_or_else(bad)?;
        let (to_host, to_port) = host_port(to).ok_or_else(bad)?;
        Ok(Self {
            host,
            port,
            to_host,
            to_port,
        })
    }
}

/// How the client connects, besides where (the
/// [`Resolver`](relay_core::resolve::Resolver)).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Trusted roots besides the webpki ones (a private federation's CA;
    /// [`read_pem_certificates`](crate::tls::read_pem_certificates)).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// TCP redirections (`--connect-to`).
    pub connect_to: Vec<ConnectTo>,
    /// The nameserver for SRV queries; `None`: the system's.
    pub dns_server: Option<SocketAddr>,
    /// Which addresses a connection may go to (`--allow-fetch-from`);
    /// `--connect-to` targets and `--resolve` endpoints are not held to it.
    pub address_policy: AddressPolicy,
}

/// rustls with the ring provider, the webpki roots and `extra_roots`.
pub(super) fn tls_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth())
}
