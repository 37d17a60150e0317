//! Accepting connections and serving HTTP/1.1 on each until shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use relay_core::Instant;

use super::limits::ConnectionGate;
use super::stall::{SEND_STALL_TIMEOUT, StallWatch};
use crate::Runtime;
use crate::task::timeout;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes hyper buffers per connection (a request head past it gets
/// 431): what a connection holds besides its body is bounded, so that
/// `--max-connections` bounds them all.
const MAX_CONNECTION_BUFFER: usize = 64 << 10;
/// How long shutdown waits for requests in flight.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` as `gate` lets them in, serving each
/// with `service` (given the connection's peer address with each
/// request), until `shutdown` completes; then asks every connection
/// to finish and waits for them for at most [`DRAIN_TIMEOUT`]. `false` if
/// some were still open then. `service` (and what it holds) is dropped
/// once every connection has ended.
pub(super) async fn accept_until<R, S, F, B>(
    rt: &R,
    listener: R::Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
    gate: ConnectionGate,
    shutdown: impl Future<Output = ()>,
    service: S,
) -> bool
where
    R: Runtime,
    S: Fn(SocketAddr, hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(rt.timer())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_CONNECTION_BUFFER);
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
        let slot = match gate.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                // Over TLS a refusal would cost a handshake: just closed.
                if tls.is_none() {
                    gate.refuse(rt, io, refusal);
                }
                continue;
            }
        };
        let (builder, service, stop, open) =
            (builder.clone(), service.clone(), stop.clone(), open.clone());
        let (rt2, tls) = (rt.clone(), tls.clone());
        rt.spawn(async move {
            let served = serve_accepted(&rt2, &builder, io, tls, (peer, service), &stop).await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop((slot, open));
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

/// Serves an accepted connection, over TLS with `tls` (the handshake
/// runs here, not in the accept loop, so a slow client holds up only
/// itself; it gets as long as headers do).
async fn serve_accepted<R, S, F, B>(
    rt: &R,
    builder: &hyper::server::conn::http1::Builder,
    io: R::Io,
    tls: Option<Arc<rustls::ServerConfig>>,
    peer_and_service: (SocketAddr, S),
    stop: &async_channel::Receiver<()>,
) -> Result<(), String>
where
    R: Runtime,
    S: Fn(SocketAddr, hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let Some(config) = tls else {
        return serve_connection(rt, builder, io, peer_and_service, stop).await;
    };
    match timeout(rt, HEADER_TIMEOUT, R::accept_tls(io, config)).await {
        Some(Ok(io)) => serve_connection(rt, builder, io, peer_and_service, stop).await,
        Some(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        None => Err("TLS handshake timed out".to_owned()),
    }
}

/// Serves HTTP/1.1 on one connection from `peer` until it ends, or
/// finishes it gracefully once `stop` closes; ends it when a response has
/// waited [`SEND_STALL_TIMEOUT`] for the client to take any of it.
async fn serve_connection<R, I, S, F, B>(
    rt: &R,
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    (peer, service): (SocketAddr, S),
    stop: &async_channel::Receiver<()>,
) -> Result<(), String>
where
    R: Runtime,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Fn(SocketAddr, hyper::Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    let (io, stalled) = StallWatch::new(io);
    let conn = builder.serve_connection(io, service_fn(move |req| service(peer, req)));
    let mut conn = pin!(conn);
    let stop_or_stall = futures_lite::future::or(
        async {
            let _ = stop.recv().await;
            Ended::Stop
        },
        async {
            stalled.wait(rt).await;
            Ended::Stalled
        },
    );
    let first =
        futures_lite::future::or(async { Ended::Served(conn.as_mut().await) }, stop_or_stall).await;
    match first {
        Ended::Served(result) => result.map_err(|e| e.to_string()),
        Ended::Stalled => Err(format!(
            "closed: the client took none of the response for {SEND_STALL_TIMEOUT:?}"
        )),
        Ended::Stop => {
            conn.as_mut().graceful_shutdown();
            conn.await.map_err(|e| e.to_string())
        }
    }
}

/// What ended [`serve_connection`]'s first wait.
enum Ended {
    /// The connection, with this result.
    Served(Result<(), hyper::Error>),
    /// Shutdown.
    Stop,
    /// A response the client did not take.
    Stalled,
}
