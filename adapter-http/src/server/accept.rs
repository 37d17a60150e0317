//! Accepting connections and serving HTTP/1.1 on each until shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use relay_core::Instant;

use crate::Runtime;
use crate::task::timeout;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections on `listener`, serving each with `service`, until
/// `shutdown` completes; then asks every connection to finish and waits
/// for them for at most [`DRAIN_TIMEOUT`]. `false` if some were still
/// open then. `service` (and what it holds) is dropped once every
/// connection has ended.
pub(super) async fn accept_until<R, S, F>(
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
