//! Picking up renewed certificate files: every minute, and at once on
//! SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use relay_core::Instant;

use crate::Runtime;
use crate::tls::ServerTls;

/// How often the TLS certificate files are checked for a renewal.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Checks `tls`'s files for a renewal every [`TLS_RELOAD_INTERVAL`], and
/// at once on each message of `hangups` (SIGHUP), on the blocking pool,
/// until `stopped` closes.
pub(super) fn spawn_reloader<R: Runtime>(
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
