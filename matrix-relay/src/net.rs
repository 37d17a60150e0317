//! Flags that say how outbound connections are made, shared by `serve`,
//! `send` and `pull`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use adapter_http::{ClientOptions, ConnectTo};
use clap::Args;

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
}

impl NetArgs {
    /// The client options these flags describe.
    pub(crate) fn client_options(&self) -> Result<ClientOptions, String> {
        client_options(&self.tls_ca, &self.connect_to, self.dns_server.as_deref())
    }
}

/// The client options of `--tls-ca`, `--connect-to` and `--dns-server`.
pub(crate) fn client_options(
    tls_ca: &[PathBuf],
    connect_to: &[String],
    dns_server: Option<&str>,
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
    Ok(ClientOptions {
        extra_roots,
        connect_to,
        dns_server,
    })
}
