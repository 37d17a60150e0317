//! What an async runtime provides to the shared layer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use relay_core::Instant;

/// What a TLS client connection checks: the name the certificate must
/// match, and the configuration.
#[derive(Clone)]
pub struct TlsTarget {
    /// The name sent as SNI and verified against the certificate (an IP
    /// literal without brackets); with SRV or `--connect-to` it differs
    /// from the host connected to.
    pub name: String,
    /// The client configuration (ring provider, webpki roots).
    pub config: Arc<rustls::ClientConfig>,
}

/// An async runtime: tasks, time, TCP, TLS and signals.
///
/// Implementation note: every method is what tokio and smol both offer under
/// different names; nothing here decides anything. Futures are `Send` so the
/// shared tasks run on multi-threaded executors. Names are resolved by the
/// shared layer, on a bounded pool of its own, never by the runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// A connected TCP stream (or TLS over it), as hyper I/O.
    type Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;
    /// A TLS client stream, as hyper I/O.
    type TlsIo: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;
    /// A TLS server stream (an accepted connection after the handshake),
    /// as hyper I/O.
    type TlsServerIo: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;
    /// hyper's timer (header read timeouts).
    type Timer: hyper::rt::Timer + Send + Sync + 'static;

    /// Runs `task` in the background, detached.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// Runs blocking `f` off the executor threads, on the runtime's own
    /// (bounded) blocking pool; for rare work only (re-reading certificate
    /// files): storage and DNS lookups have pools of their own.
    fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static;

    /// Completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;

    /// hyper's timer on this runtime.
    fn timer(&self) -> Self::Timer;

    /// Binds a TCP listener; an implementation takes it from
    /// [`bind_listener`], so every runtime listens alike.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address `listener` is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Accepts one connection (with `TCP_NODELAY` set); cancel-safe.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send + '_;

    /// Runs the server side of the TLS handshake on accepted `io`.
    fn accept_tls(
        io: Self::Io,
        config: Arc<rustls::ServerConfig>,
    ) -> impl Future<Output = io::Result<Self::TlsServerIo>> + Send;

    /// Connects to `addr`, with `TCP_NODELAY`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// Runs the client side of the TLS handshake on connected `io`.
    fn connect_tls(
        io: Self::Io,
        target: TlsTarget,
    ) -> impl Future<Output = io::Result<Self::TlsIo>> + Send;

    /// Installs SIGINT and SIGTERM handlers now; the future completes on
    /// the first of them.
    fn shutdown_signal(&self) -> io::Result<impl Future<Output = ()> + Send + 'static>;

    /// Installs a SIGHUP handler now (so SIGHUP no longer ends the
    /// process) and calls `f` on each SIGHUP, from a task of its own.
    fn on_hangup(&self, f: impl Fn() + Send + Sync + 'static) -> io::Result<()>;
}

/// Connections the kernel completes and holds until they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// A non-blocking TCP listener on `addr`, with a listen backlog of 1,024
/// (std's is 128): a burst of connections past the backlog has its SYNs
/// dropped and retried a second later.
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    // listen(2) again on a listening socket only sets its backlog.
    rustix::net::listen(&listener, LISTEN_BACKLOG)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
