//! Accepting connections and turning HTTP into core requests and back.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use relay_core::relay::{Relay, RelayConfig, Request, RequestBody, Response};
use relay_core::resolve::Resolver;
use relay_core::{ErrCode, MatrixError};
use relay_store::QueueStore;
use tokio::net::TcpListener;

use crate::client::HttpClient;
use crate::driver::{self, DriverHandle};

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long fetching another server's keys may take.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`run`] needs.
pub struct ServeOptions {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The relay's configuration.
    pub config: RelayConfig,
    /// The queue storage.
    pub store: Arc<dyn QueueStore>,
    /// Where other servers are reached (to fetch their keys).
    pub resolver: Resolver,
}

/// Runs the relay on a new tokio runtime until SIGINT or SIGTERM, then stops
/// accepting, lets requests in flight finish, and returns.
/// `on_listening` is called once with the bound address.
pub fn run(options: ServeOptions, on_listening: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Handlers first: a signal that arrives as soon as the address is
        // announced must already mean "shut down gracefully".
        let shutdown = shutdown_signal()?;
        let listener = TcpListener::bind(options.listen).await?;
        on_listening(listener.local_addr()?);
        let client = HttpClient::new(options.resolver, KEY_FETCH_TIMEOUT);
        serve(listener, options.config, options.store, client, shutdown).await
    })
}

/// Resolves on the first SIGTERM or SIGINT after it was called.
fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
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

/// Serves the relay on `listener` until `shutdown` completes, then drains
/// requests in flight (for at most 30 s).
pub async fn serve(
    listener: TcpListener,
    config: RelayConfig,
    store: Arc<dyn QueueStore>,
    client: HttpClient,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let relay = Relay::new(config);
    let max_body = relay.max_body_bytes();
    let (handle, driver_task) = driver::spawn(relay, store, client);
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let service = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle_http(&handle, req, max_body).await) }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(handle);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    // Every connection is gone; the driver finishes its outstanding work.
    let _ = driver_task.await;
    Ok(())
}

async fn handle_http(
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
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max_body).collect()).await {
            Ok(Ok(collected)) => RequestBody::Complete(collected.to_bytes().to_vec()),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => RequestBody::TooLarge,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reading the body failed");
                return error_response(ErrCode::BadJson, "the request body could not be read");
            }
            Err(_) => return error_response(ErrCode::BadJson, "the request body took too long"),
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
    let e = MatrixError::new(code, message);
    to_http(Response {
        status: e.status(),
        body: e.to_json(),
        retry_after_secs: None,
    })
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
