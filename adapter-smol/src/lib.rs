//! hyper 1 on smol's parts (async-io, async-net, async-executor, blocking):
//! the [`Smol`] [`Runtime`] for `adapter-http`, and [`block_on`], which
//! starts an executor (a relay server on it:
//! `block_on(|rt| adapter_http::run(rt, options, on_listening))`).
//!
//! Like `adapter-hyper` for tokio, this is glue only: the HTTP handling, the
//! drive loops and the client live in `adapter-http`. No tokio runtime is
//! started here; `tests/no_tokio.rs` checks the dependency tree.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No function over 80 lines of code (clippy.toml).
#![warn(clippy::too_many_lines)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

pub use adapter_http::{Runtime, TlsTarget, outbound, retriever};
use async_executor::Executor;
use async_net::{TcpListener, TcpStream};
use futures_lite::StreamExt;
use relay_core::Instant;
use smol_hyper::rt::{FuturesIo, SmolTimer};

/// The federation client on smol.
pub type HttpClient = adapter_http::HttpClient<Smol>;

/// Executor threads besides the one that calls [`block_on`].
const WORKER_THREADS: usize = 2;
/// Threads of the `blocking` crate's pool at most (its default is 500).
/// The shared layer runs storage calls and DNS lookups on bounded pools of
/// its own; this pool only re-reads certificate files.
pub const MAX_BLOCKING_THREADS: usize = 4;

/// A handle on the executor [`block_on`] runs; tasks spawned through it run
/// on its threads.
///
/// Implementation note: the handle is weak, so that tasks holding it (every
/// [`HttpClient`] does) do not keep the executor alive: when [`block_on`]
/// returns, the executor and the tasks still on it are dropped, as a tokio
/// runtime drops its tasks.
#[derive(Clone)]
pub struct Smol {
    executor: Weak<Executor<'static>>,
}

impl Runtime for Smol {
    type Listener = TcpListener;
    type Io = FuturesIo<TcpStream>;
    type TlsIo = FuturesIo<futures_rustls::client::TlsStream<TcpStream>>;
    type TlsServerIo = FuturesIo<futures_rustls::server::TlsStream<TcpStream>>;
    type Timer = SmolTimer;

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        // After `block_on` returned there is nothing to run it on.
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(task).detach();
        }
    }

    fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static {
        blocking::unblock(f)
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let timer = async_io::Timer::at(deadline);
        async move {
            timer.await;
        }
    }

    fn timer(&self) -> SmolTimer {
        SmolTimer::new()
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::try_from(adapter_http::bind_listener(addr)?)
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((FuturesIo::new(stream), peer))
    }

    async fn accept_tls(
        io: Self::Io,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Self::TlsServerIo> {
        let tls = futures_rustls::TlsAcceptor::from(config)
            .accept(io.into_inner())
            .await?;
        Ok(FuturesIo::new(tls))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Io> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(FuturesIo::new(stream))
    }

    async fn connect_tls(io: Self::Io, target: TlsTarget) -> io::Result<Self::TlsIo> {
        let name = rustls::pki_types::ServerName::try_from(target.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = futures_rustls::TlsConnector::from(target.config)
            .connect(name, io.into_inner())
            .await?;
        Ok(FuturesIo::new(tls))
    }

    fn shutdown_signal(&self) -> io::Result<impl Future<Output = ()> + Send + 'static> {
        use async_signal::{Signal, Signals};
        let mut signals = Signals::new([Signal::Term, Signal::Int])?;
        Ok(async move {
            match signals.next().await {
                Some(Ok(Signal::Term)) => tracing::info!("SIGTERM: shutting down"),
                Some(Ok(_)) => tracing::info!("SIGINT: shutting down"),
                Some(Err(e)) => tracing::warn!(error = %e, "signal handling failed; shutting down"),
                None => tracing::info!("signal stream ended; shutting down"),
            }
        })
    }

    fn on_hangup(&self, f: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
        use async_signal::{Signal, Signals};
        let mut hup = Signals::new([Signal::Hup])?;
        self.spawn(async move {
            while let Some(Ok(_)) = hup.next().await {
                f();
            }
        });
        Ok(())
    }
}

/// Runs `main` to completion on a new executor: the calling thread and two
/// worker threads (`smol-worker-N`) run its tasks; blocking work goes to
/// the `blocking` pool, capped at [`MAX_BLOCKING_THREADS`] for the whole
/// process. Tasks still running when `main` returns are dropped.
pub fn block_on<F: Future>(main: impl FnOnce(Smol) -> F) -> io::Result<F::Output> {
    if let Some(max) = std::num::NonZeroUsize::new(MAX_BLOCKING_THREADS) {
        blocking::set_max_blocking_threads(max);
    }
    let executor = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let mut workers = Vec::with_capacity(WORKER_THREADS);
    for n in 0..WORKER_THREADS {
        let (executor, stopped) = (Arc::clone(&executor), stopped.clone());
        let worker = std::thread::Builder::new()
            .name(format!("smol-worker-{n}"))
            .spawn(move || {
                futures_lite::future::block_on(executor.run(async {
                    let _ = stopped.recv().await;
                }));
            });
        match worker {
            Ok(w) => workers.push(w),
            Err(e) => {
                stop.close();
                return Err(e);
            }
        }
    }
    let runtime = Smol {
        executor: Arc::downgrade(&executor),
    };
    let output = futures_lite::future::block_on(executor.run(main(runtime)));
    stop.close();
    for worker in workers {
        let _ = worker.join();
    }
    drop(executor);
    Ok(output)
}
