//! The relay server: starting it ([`run`]), accepting connections
//! (`accept`), bounding what clients hold at once (`limits`) and for how
//! long a response waits for its client (`stall`), turning HTTP into core
//! requests and back (`request`), and picking up renewed certificates
//! (`reload`).

mod accept;
mod limits;
mod reload;
mod request;
mod stall;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use relay_core::relay::{Relay, RelayConfig};
use relay_core::resolve::Resolver;
use relay_store::QueueStore;

use self::accept::{DRAIN_TIMEOUT, accept_until};
use self::limits::{BodyBudget, ConnectionGate};
pub use self::limits::{
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP,
    SMALL_BODY_BYTES, ServerLimits,
};
use self::reload::spawn_reloader;
use self::request::handle_http;
use crate::Runtime;
use crate::client::{ClientOptions, HttpClient};
use crate::drive::relay as driver;
use crate::metrics::Metrics;
use crate::task::spawn_task;
use crate::threads::ThreadPool;
use crate::tls::ServerTls;

/// How long fetching another server's keys may take.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads for the store's calls unless told otherwise, sized for SQLite:
/// its one writer thread commits every call waiting as one batch, and
/// these threads mostly wait for it, each with one call, so fewer would
/// shrink the batches (measured: 8 threads drain 64 destinations at about
/// two thirds of the rate of 32; more than 32 gains nothing).
pub const DEFAULT_STORAGE_THREADS: usize = 32;
/// Storage calls waiting for a thread at most; past it, a call waits for
/// room.
const STORAGE_QUEUE: usize = 256;
/// Most connections open at once to the metrics listener (and from one
/// address): it is for the operator's scraper.
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Where the relay listens.
pub enum Listen<L> {
    /// Bind this address; port 0 picks a free port.
    Addr(SocketAddr),
    /// Accept on this listener, already bound.
    Bound(L),
}

/// What ends the relay.
pub enum Shutdown {
    /// SIGINT or SIGTERM; SIGHUP re-reads the TLS certificate files.
    Signals,
    /// This future's completion; no signal handler is installed (tests,
    /// programs that embed the relay and handle signals themselves).
    On(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// What [`run`] needs.
pub struct ServeOptions<R: Runtime> {
    /// Where to listen.
    pub listen: Listen<R::Listener>,
    /// Where to serve `GET /metrics` (Prometheus), on a listener of its
    /// own; `None` opens none (the metrics are still counted).
    pub metrics_listen: Option<SocketAddr>,
    /// The relay's configuration.
    pub config: RelayConfig,
    /// What clients can make the relay hold at once.
    pub limits: ServerLimits,
    /// The queue storage.
    pub store: Arc<dyn QueueStore>,
    /// Threads that run the store's calls (inserts, fetches, the metrics
    /// scrape's read), and nothing else: a pool no other blocking work
    /// can exhaust. Default [`DEFAULT_STORAGE_THREADS`]; for PostgreSQL,
    /// the store's connection count.
    pub storage_threads: usize,
    /// Where other servers are reached (to fetch their keys).
    pub resolver: Resolver,
    /// How the key-fetching client connects (extra roots, `--connect-to`,
    /// nameserver).
    pub client: ClientOptions,
    /// Serve HTTPS with this certificate (checked for renewal every
    /// minute); `None` serves plain HTTP. The metrics listener stays plain.
    pub tls: Option<Arc<ServerTls>>,
    /// When to stop.
    pub shutdown: Shutdown,
}

impl<R: Runtime> ServeOptions<R> {
    /// Serves `config` on `store` at `listen`: no metrics listener, plain
    /// HTTP, servers reached by discovery, until SIGINT or SIGTERM.
    pub fn new(
        listen: Listen<R::Listener>,
        config: RelayConfig,
        store: Arc<dyn QueueStore>,
    ) -> Self {
        Self {
            listen,
            metrics_listen: None,
            config,
            limits: ServerLimits::default(),
            store,
            storage_threads: DEFAULT_STORAGE_THREADS,
            resolver: Resolver::default(),
            client: ClientOptions::default(),
            tls: None,
            shutdown: Shutdown::Signals,
        }
    }
}

/// Runs the relay on `runtime` until `options.shutdown`, then stops
/// accepting, lets requests in flight finish (for at most 30 s), stops the
/// driver, and returns. `on_listening` is called once with the bound
/// address, after the signal handlers (if any) are installed and the
/// metrics listener (if any) is bound and logged. `Err` at once if
/// `options.limits` do not [`check`](ServerLimits::check) against the
/// configured body limit.
pub async fn run<R: Runtime>(
    runtime: R,
    options: ServeOptions<R>,
    on_listening: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let ServeOptions {
        listen,
        metrics_listen,
        config,
        limits,
        store,
        storage_threads,
        resolver,
        client,
        tls,
        shutdown,
    } = options;
    let storage = ThreadPool::new("relay-storage", storage_threads, STORAGE_QUEUE);
    limits
        .check(config.max_body_bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // Handlers first: a signal that arrives as soon as the address is
    // announced must already mean "shut down gracefully".
    let (shutdown, hangups) = stop_signals(&runtime, shutdown)?;
    let listener = match listen {
        Listen::Addr(addr) => runtime.bind(addr).await?,
        Listen::Bound(listener) => listener,
    };
    let metrics = Arc::new(Metrics::new());
    let metrics_listener = match metrics_listen {
        Some(addr) => {
            let listener = runtime.bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("metrics listener on {addr}: {e}"))
            })?;
            tracing::info!(addr = %R::local_addr(&listener)?, "serving metrics");
            Some(listener)
        }
        None => None,
    };
    on_listening(R::local_addr(&listener)?);
    let client = HttpClient::with_options(runtime, resolver, KEY_FETCH_TIMEOUT, client)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // The metrics listener stops when the relay's does: `stopped` closes
    // when the shutdown came or `serve` ended otherwise.
    let (stop, stopped) = async_channel::bounded::<()>(1);
    spawn_reloader(
        client.runtime().clone(),
        tls.clone(),
        hangups,
        stopped.clone(),
    );
    let metrics_task = metrics_listener.map(|listener| {
        let (store, metrics, rt) = (store.clone(), metrics.clone(), client.runtime());
        let storage = storage.clone();
        spawn_task(
            rt,
            serve_metrics(
                rt.clone(),
                listener,
                metrics,
                (store, storage),
                async move {
                    let _ = stopped.recv().await;
                },
            ),
        )
    });
    let tls = tls.map(|tls| tls.config());
    let settings = Settings {
        config,
        limits,
        tls,
    };
    let stop = async move {
        shutdown.await;
        drop(stop);
    };
    let served = serve(listener, settings, (store, storage), client, metrics, stop).await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    served
}

/// Completes when the relay is to stop.
type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What ends the relay, and the SIGHUPs that ask for the certificate
/// files to be re-read: with [`Shutdown::Signals`], both handlers are
/// installed now; otherwise no SIGHUP ever comes.
fn stop_signals<R: Runtime>(
    rt: &R,
    shutdown: Shutdown,
) -> io::Result<(StopFuture, async_channel::Receiver<()>)> {
    let (hangup, hangups) = async_channel::bounded::<()>(1);
    match shutdown {
        Shutdown::On(future) => Ok((future, hangups)),
        Shutdown::Signals => {
            let signal = rt.shutdown_signal()?;
            // SIGHUP re-reads the certificate files now, and never ends
            // the process.
            rt.on_hangup(move || {
                let _ = hangup.try_send(());
            })?;
            Ok((Box::pin(signal), hangups))
        }
    }
}

/// How the relay is served: its configuration, limits and TLS.
struct Settings {
    config: RelayConfig,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves the relay on `listener` (on `client`'s runtime) as `settings`
/// say, counting into `metrics`, until `shutdown` completes, then drains
/// requests in flight (for at most 30 s) and stops the driver.
async fn serve<R: Runtime>(
    listener: R::Listener,
    settings: Settings,
    (store, storage): (Arc<dyn QueueStore>, ThreadPool),
    client: HttpClient<R>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Settings {
        config,
        limits,
        tls,
    } = settings;
    let rt = client.runtime().clone();
    // Stopped (dropped) when serving ends.
    let _sweep = crate::drive::expiry::spawn(
        &rt,
        &config,
        store.clone(),
        storage.clone(),
        metrics.clone(),
    );
    let relay = Relay::new(config);
    let (handle, driver_task) = driver::spawn(relay, store, storage, client, metrics.clone());
    let budget = BodyBudget::new(limits.max_buffered_bytes);
    let gate = ConnectionGate::new(limits.max_connections, limits.max_connections_per_ip);
    let rt2 = rt.clone();
    let releaser = handle.clone();
    let service = move |peer: SocketAddr, req: hyper::Request<Incoming>| {
        let (handle, rt, metrics) = (handle.clone(), rt2.clone(), metrics.clone());
        let budget = budget.clone();
        async move { Ok(handle_http(&rt, &handle, &metrics, &budget, (peer.ip(), req)).await) }
    };
    // At shutdown the long-polls are answered at once, so draining the
    // connections need not wait for their deadlines.
    let shutdown = async move {
        shutdown.await;
        releaser.release_waits().await;
    };
    if !accept_until(&rt, listener, tls, gate, shutdown, service).await {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
        return Ok(());
    }
    // Every connection is gone; the driver finishes its outstanding work.
    let _ = driver_task.await;
    Ok(())
}

/// Serves `GET /metrics` (the Prometheus text format, with the queue
/// totals read from `store`, on `storage`, at each scrape) on `listener`
/// until `shutdown` completes; other paths are 404.
async fn serve_metrics<R: Runtime>(
    rt: R,
    listener: R::Listener,
    metrics: Arc<Metrics>,
    (store, storage): (Arc<dyn QueueStore>, ThreadPool),
    shutdown: impl Future<Output = ()>,
) {
    let service = move |_peer: SocketAddr, req: hyper::Request<Incoming>| {
        let (storage, metrics, store) = (storage.clone(), metrics.clone(), store.clone());
        async move { crate::metrics::handle_scrape(&storage, &metrics, &store, req).await }
    };
    let gate = ConnectionGate::new(METRICS_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS);
    if !accept_until(&rt, listener, None, gate, shutdown, service).await {
        tracing::warn!("metrics scrapes still in flight after {DRAIN_TIMEOUT:?}");
    }
}
