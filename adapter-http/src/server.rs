//! The relay server: starting it ([`run`]), accepting connections, and
//! turning HTTP into core requests and back.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use relay_core::relay::{Relay, RelayConfig, Request, RequestBody, Response};
use relay_core::resolve::Resolver;
use relay_core::{ErrCode, Instant, MatrixError};
use relay_store::QueueStore;

use crate::Runtime;
use crate::client::{ClientOptions, HttpClient};
use crate::drive::relay::{self as driver, DriverHandle};
use crate::metrics::{Metrics, RouteLabel};
use crate::task::{spawn_task, timeout};
use crate::tls::ServerTls;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long fetching another server's keys may take.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the TLS certificate files are checked for a renewal.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

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
    /// The queue storage.
    pub store: Arc<dyn QueueStore>,
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
            store,
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
/// metrics listener (if any) is bound and logged.
pub async fn run<R: Runtime>(
    runtime: R,
    options: ServeOptions<R>,
    on_listening: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let ServeOptions {
        listen,
        metrics_listen,
        config,
        store,
        resolver,
        client,
        tls,
        shutdown,
    } = options;
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
        spawn_task(
            rt,
            serve_metrics(rt.clone(), listener, metrics, store, async move {
                let _ = stopped.recv().await;
            }),
        )
    });
    let tls = tls.map(|tls| tls.config());
    let served = serve(listener, config, store, client, metrics, tls, async move {
        shutdown.await;
        drop(stop);
    })
    .await;
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

/// Serves the relay on `listener` (on `client`'s runtime), counting into
/// `metrics`, over TLS with `tls`, until `shutdown` completes, then drains
/// requests in flight (for at most 30 s) and stops the driver.
async fn serve<R: Runtime>(
    listener: R::Listener,
    config: RelayConfig,
    store: Arc<dyn QueueStore>,
    client: HttpClient<R>,
    metrics: Arc<Metrics>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let rt = client.runtime().clone();
    let relay = Relay::new(config);
    let max_body = relay.max_body_bytes();
    let (handle, driver_task) = driver::spawn(relay, store, client, metrics.clone());
    let rt2 = rt.clone();
    let service = move |req: hyper::Request<Incoming>| {
        let (handle, rt, metrics) = (handle.clone(), rt2.clone(), metrics.clone());
        async move { Ok(handle_http(&rt, &handle, &metrics, req, max_body).await) }
    };
    if !accept_until(&rt, listener, tls, shutdown, service).await {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
        return Ok(());
    }
    // Every connection is gone; the driver finishes its outstanding work.
    let _ = driver_task.await;
    Ok(())
}

/// Serves `GET /metrics` (the Prometheus text format, with the queue
/// totals read from `store` at each scrape) on `listener` until `shutdown`
/// completes; other paths are 404.
async fn serve_metrics<R: Runtime>(
    rt: R,
    listener: R::Listener,
    metrics: Arc<Metrics>,
    store: Arc<dyn QueueStore>,
    shutdown: impl Future<Output = ()>,
) {
    let rt2 = rt.clone();
    let service = move |req: hyper::Request<Incoming>| {
        let (rt, metrics, store) = (rt2.clone(), metrics.clone(), store.clone());
        async move { crate::metrics::handle_scrape(&rt, &metrics, &store, req).await }
    };
    if !accept_until(&rt, listener, None, shutdown, service).await {
        tracing::warn!("metrics scrapes still in flight after {DRAIN_TIMEOUT:?}");
    }
}

/// Checks `tls`'s files for a renewal every [`TLS_RELOAD_INTERVAL`], and
/// at once on each message of `hangups` (SIGHUP), on the blocking pool,
/// until `stopped` closes.
fn spawn_reloader<R: Runtime>(
    rt: R,
    tls: Option<Arc<ServerTls>>,
    hangups: async_channel::Receiver<()>,
    stopped: async_channel::Receiver<()>,
) {
    let rt2 = rt.clone();
    rt.spawn(async move {
        loop {
            // Nothing is ever sent on `stopped`; it only closes, at shutdown.
            let stop = async {
                let _ = stopped.recv().await;
                None
            };
            let hangup = async {
                match hangups.recv().await {
                    Ok(()) => Some(true),
                    Err(_) => std::future::pending().await,
                }
            };
            let tick = async {
                rt2.sleep_until(Instant::now() + TLS_RELOAD_INTERVAL).await;
                Some(false)
            };
            let woke = futures_lite::future::or(stop, futures_lite::future::or(hangup, tick));
            let Some(hangup) = woke.await else { return };
            let Some(tls) = tls.clone() else {
                if hangup {
                    tracing::info!("SIGHUP: no TLS certificate to reload");
                }
                continue;
            };
            match rt2.spawn_blocking(move || tls.reload_if_changed()).await {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) if hangup => tracing::info!("SIGHUP: the TLS certificate files are unchanged"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays");
                }
            }
        }
    });
}

/// Accepts connections on `listener`, serving each with `service`, until
/// `shutdown` completes; then asks every connection to finish and waits
/// for them for at most [`DRAIN_TIMEOUT`]. `false` if some were still
/// open then. `service` (and what it holds) is dropped once every
/// connection has ended.
async fn accept_until<R, S, F>(
    rt: &R,
    listener: R::Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    service: S,
) -> bool
where
    R: Runtime,
    S: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(rt.timer())
        .header_read_timeout(HEADER_TIMEOUT);
    // Closing `stop` asks every connection to finish gracefully; each holds
    // a clone of `open`, so `all_closed` ends when the last one is gone.
    let (stop_tx, stop) = async_channel::bounded::<()>(1);
    let (open, all_closed) = async_channel::bounded::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted =
            futures_lite::future::or(async { Some(R::accept(&listener).await) }, async {
                shutdown.as_mut().await;
                None
            })
            .await;
        let Some(accepted) = accepted else { break };
        let (io, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                rt.sleep_until(Instant::now() + Duration::from_millis(50))
                    .await;
                continue;
            }
        };
        let (builder, service, stop, open) =
            (builder.clone(), service.clone(), stop.clone(), open.clone());
        let (rt2, tls) = (rt.clone(), tls.clone());
        rt.spawn(async move {
            let served = match tls {
                None => serve_connection(&builder, io, service, &stop).await,
                // The handshake runs here, not in the accept loop, so a slow
                // client holds up only itself; it gets as long as headers do.
                Some(config) => {
                    match timeout(&rt2, HEADER_TIMEOUT, R::accept_tls(io, config)).await {
                        Some(Ok(io)) => serve_connection(&builder, io, service, &stop).await,
                        Some(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                        None => Err("TLS handshake timed out".to_owned()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(service);
    stop_tx.close();
    drop((stop, open));
    timeout(rt, DRAIN_TIMEOUT, all_closed.recv())
        .await
        .is_some()
}

/// Serves HTTP/1.1 on one connection until it ends, or finishes it
/// gracefully once `stop` closes.
async fn serve_connection<I, S, F>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    stop: &async_channel::Receiver<()>,
) -> Result<(), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Fn(hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let conn = builder.serve_connection(io, service_fn(service));
    let mut conn = pin!(conn);
    let first = futures_lite::future::or(async { Some(conn.as_mut().await) }, async {
        let _ = stop.recv().await;
        None
    })
    .await;
    let result = match first {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    result.map_err(|e| e.to_string())
}

/// Answers one federation request, and counts it.
async fn handle_http<R: Runtime>(
    rt: &R,
    driver: &DriverHandle,
    metrics: &Metrics,
    req: hyper::Request<Incoming>,
    max_body: usize,
) -> hyper::Response<Full<Bytes>> {
    let started = Instant::now();
    let route = RouteLabel::of(req.method().as_str(), req.uri().path());
    let response = answer(rt, driver, req, max_body).await;
    metrics.observe_request(route, response.status().as_u16(), started.elapsed());
    response
}

async fn answer<R: Runtime>(
    rt: &R,
    driver: &DriverHandle,
    req: hyper::Request<Incoming>,
    max_body: usize,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned());
    let authorization = parts
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let declared_too_large = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > max_body as u64);
    let body = if declared_too_large {
        RequestBody::TooLarge
    } else {
        match timeout(rt, BODY_TIMEOUT, Limited::new(body, max_body).collect()).await {
            Some(Ok(collected)) => RequestBody::Complete(collected.to_bytes().to_vec()),
            Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => RequestBody::TooLarge,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading the body failed");
                return error_response(ErrCode::BadJson, "the request body could not be read");
            }
            None => return error_response(ErrCode::BadJson, "the request body took too long"),
        }
    };
    let method = parts.method.as_str().to_owned();
    let request = Request {
        method,
        target,
        authorization,
        body,
    };
    let method_and_target = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| format!("{} {}", request.method, request.target));
    let Some(response) = driver.submit(request).await else {
        return error_response(ErrCode::Unknown, "the relay is shutting down");
    };
    if response.status >= 500 {
        tracing::warn!(status = response.status, body = %String::from_utf8_lossy(&response.body), "request failed");
    }
    if let Some(line) = method_and_target {
        tracing::debug!(status = response.status, "{line}");
    }
    to_http(response)
}

fn error_response(code: ErrCode, message: &str) -> hyper::Response<Full<Bytes>> {
    to_http(Response::error(&MatrixError::new(code, message)))
}

fn to_http(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut http = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *http.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = http.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = response.retry_after_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    http
}
