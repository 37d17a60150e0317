//! Flags that say how outbound connections are made, shared by `serve`,
//! `send` and `pull`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use adapter_http::{ClientOptions, ConnectTo};
use clap::Args;
use relay_core::addr_policy::AddressPolicy;
use relay_core::cidr::Cidr;

/// How this node connects to other servers (besides `--resolve`).
#[derive(Args, Debug, Default)]
pub(crate) struct NetArgs {
    /// A PEM file of CA certificates trusted besides the public roots
    /// (repeatable), e.g. a private federation's CA.
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Vec<PathBuf>,
    /// Send TCP connections meant for HOST:PORT to ADDR:PORT instead, as
    /// curl's `--connect-to`; Host, SNI and the certificate check keep HOST
    /// (repeatable). Applies to discovery's `.well-known` fetch (port 443)
    /// too.
    #[arg(long = "connect-to", value_name = "HOST:PORT=ADDR:PORT")]
    pub connect_to: Vec<String>,
    /// The nameserver for SRV lookups, `IP` or `IP:PORT` [default: the
    /// first of /etc/resolv.conf].
    #[arg(long = "dns-server", value_name = "ADDR")]
    pub dns_server: Option<String>,
    /// Connect to addresses in this network (`ADDR/LEN`) even where
    /// discovery leads to a special-purpose one (loopback, private,
    /// link-local, …), which is refused by default; `--resolve` and
    /// `--connect-to` targets are never refused (repeatable).
    #[arg(long = "allow-fetch-from", value_name = "CIDR")]
    pub allow_fetch_from: Vec<String>,
}

impl NetArgs {
    /// The client options these flags describe.
    pub(crate) fn client_options(&self) -> Result<ClientOptions, String> {
        client_options(
            &self.tls_ca,
            &self.connect_to,
            self.dns_server.as_deref(),
            &self.allow_fetch_from,
        )
    }
}

/// The client options of `--tls-ca`, `--connect-to`, `--dns-server` and
/// `--allow-fetch-from`.
pub(crate) fn client_options(
    tls_ca: &[PathBuf],
    connect_to: &[String],
    dns_server: Option<&str>,
    allow_fetch_from: &[String],
) -> Result<ClientOptions, String> {
    let mut extra_roots = Vec::new();
    for path in tls_ca {
        extra_roots.extend(
            adapter_http::tls::read_pem_certificates(path).map_err(|e| format!("--tls-ca: {e}"))?,
        );
    }
    let connect_to = connect_to
        .iter()
        .map(|c| {
            c.parse::<ConnectTo>()
                .map_err(|e| format!("--connect-to: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let dns_server = dns_server
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("--dns-server: expected IP or IP:PORT, got {s:?}"))
        })
        .transpose()?;
    let allow = allow_fetch_from
        .iter()
        .map(|c| Cidr::parse(c).map_err(|e| format!("--allow-fetch-from: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(ClientOptions {
        extra_roots,
        connect_to,
        dns_server,
        address_policy: AddressPolicy::new(allow),
    })
}
