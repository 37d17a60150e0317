//! Connecting by name: a host name is resolved to addresses (A/AAAA, by the
//! system's resolver) on the client's DNS pool, and each address the
//! address policy allows is tried in turn.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use relay_core::addr_policy::AddressPolicy;

use super::HttpClient;
use crate::runtime::{Runtime, TlsTarget};

impl<R: Runtime> HttpClient<R> {
    /// A TCP connection to `host:port` (an IP literal without brackets, or
    /// a name), to the first of its addresses that `policy` (if any)
    /// allows and that accepts one.
    ///
    /// Implementation note: the policy judges the very address connected
    /// to, after every lookup (`.well-known`, SRV, A/AAAA), so no name
    /// that resolves one way when checked and another when connected to
    /// gets past it. A refused address fails like an unreachable one.
    pub(super) async fn open(
        &self,
        host: &str,
        port: u16,
        policy: Option<&AddressPolicy>,
    ) -> io::Result<R::Io> {
        let mut last = None;
        for addr in self.resolve(host, port).await? {
            if let Some(Err(refused)) = policy.map(|p| p.check(addr.ip())) {
                tracing::debug!(
                    %host, %addr, reason = %refused,
                    "not connecting: a special-purpose address (see --allow-fetch-from)"
                );
                last = Some(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("not connecting to {addr}: {refused} (see --allow-fetch-from)"),
                ));
                continue;
            }
            match self.runtime.connect(addr).await {
                Ok(io) => return Ok(io),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
        }))
    }

    /// [`open`](Self::open), then the TLS handshake for `target`.
    pub(super) async fn open_tls(
        &self,
        host: &str,
        port: u16,
        policy: Option<&AddressPolicy>,
        target: TlsTarget,
    ) -> io::Result<R::TlsIo> {
        let io = self.open(host, port, policy).await?;
        R::connect_tls(io, target).await
    }

    /// The addresses of `host:port`: an IP literal as it is, a name looked
    /// up on the DNS pool (skipped if this future is dropped before a
    /// thread takes it).
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = host.to_owned();
        let lookup = move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
        };
        match self.dns.submit(None, lookup).await.await {
            Ok(addrs) => addrs,
            Err(e) => Err(io::Error::other(format!("looking up {host}: {e}"))),
        }
    }
}
