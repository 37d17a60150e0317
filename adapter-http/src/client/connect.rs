//! Connecting by name: a host name is resolved to addresses (A/AAAA, by the
//! system's resolver) on the client's DNS pool, and each address is tried
//! in turn.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::HttpClient;
use crate::runtime::{Runtime, TlsTarget};

impl<R: Runtime> HttpClient<R> {
    /// A TCP connection to `host:port` (an IP literal without brackets, or
    /// a name), to the first of its addresses that accepts one.
    pub(super) async fn open(&self, host: &str, port: u16) -> io::Result<R::Io> {
        let mut last = None;
        for addr in self.resolve(host, port).await? {
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
        target: TlsTarget,
    ) -> io::Result<R::TlsIo> {
        let io = self.open(host, port).await?;
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
