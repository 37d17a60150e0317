//! hyper 1 on tokio: the [`Tokio`] [`Runtime`] for `adapter-http`, and
//! [`block_on`], which starts a tokio runtime (a relay server on it:
//! `block_on(|rt| adapter_http::run(rt, options, on_listening))`).
//!
//! The adapter is glue. Everything both runtimes do the same way (HTTP to
//! the core and back, the drive loops, the accept loop, the client) lives in
//! `adapter-http`; this crate maps its [`Runtime`] trait onto tokio.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No function over 80 lines of code (clippy.toml).
#![warn(clippy::too_many_lines)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use adapter_http::{Runtime, TlsTarget, outbound, retriever};
use hyper_util::rt::{TokioIo, TokioTimer};
use relay_core::Instant;
use tokio::net::{TcpListener, TcpStream};

/// The federation client on tokio.
pub type HttpClient = adapter_http::HttpClient<Tokio>;

/// The tokio runtime of the current context (`tokio::spawn` and friends).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Listener = TcpListener;
    type Io = TokioIo<TcpStream>;
    type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type TlsServerIo = TokioIo<tokio_rustls::server::TlsStream<TcpStream>>;
    type Timer = TokioTimer;

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static {
        let task = tokio::task::spawn_blocking(f);
        async move {
            match task.await {
                Ok(value) => value,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Only a runtime shutting down cancels a blocking task.
                Err(_) => std::future::pending().await,
            }
        }
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(deadline.into())
    }

    fn timer(&self) -> TokioTimer {
        TokioTimer::new()
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(adapter_http::bind_listener(addr)?)
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((TokioIo::new(stream), peer))
    }

    async fn accept_tls(
        io: Self::Io,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Self::TlsServerIo> {
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(io.into_inner())
            .await?;
        Ok(TokioIo::new(tls))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Io> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    async fn connect_tls(io: Self::Io, target: TlsTarget) -> io::Result<Self::TlsIo> {
        let name = rustls::pki_types::ServerName::try_from(target.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(target.config)
            .connect(name, io.into_inner())
            .await?;
        Ok(TokioIo::new(tls))
    }

    fn shutdown_signal(&self) -> io::Result<impl Future<Output = ()> + Send + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        })
    }

    fn on_hangup(&self, f: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                f();
            }
        });
        Ok(())
    }
}

/// Threads of tokio's blocking pool at most. The shared layer runs storage
/// calls and DNS lookups on bounded pools of its own; this pool only
/// re-reads certificate files.
pub const MAX_BLOCKING_THREADS: usize = 4;

/// Runs `main` to completion on a new multi-threaded tokio runtime (one
/// worker thread per core, at most [`MAX_BLOCKING_THREADS`] blocking ones).
pub fn block_on<F: Future>(main: impl FnOnce(Tokio) -> F) -> io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()?;
    Ok(runtime.block_on(main(Tokio)))
}
