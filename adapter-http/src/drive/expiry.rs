//! The sweep that deletes expired entries: every second, the entries
//! older than [`RelayConfig::max_entry_age_ms`] go, in chunks, on the
//! storage pool.
//!
//! Implementation note: the relay machine already never hands an expired
//! entry out; the sweep only gives the room back. One chunk is one short
//! transaction found by an index on the received time, so the sweep never
//! holds the store long, and a backlog (after a long stop) is worked off
//! chunk after chunk.

use std::sync::Arc;
use std::time::Duration;

use relay_core::Instant;
use relay_core::relay::RelayConfig;
use relay_store::QueueStore;

use crate::metrics::Metrics;
use crate::task::{Task, spawn_task};
use crate::threads::ThreadPool;
use crate::{Runtime, unix_now};

/// How often the sweep runs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Most entries one store call deletes.
const SWEEP_CHUNK: usize = 1_000;

/// A running sweep; dropping it stops the sweep at its next wake.
pub(crate) struct Sweep {
    _stop: async_channel::Sender<()>,
    _task: Task<()>,
}

/// Starts the sweep for `config`'s entry age, if entries expire.
pub(crate) fn spawn<R: Runtime>(
    rt: &R,
    config: &RelayConfig,
    store: Arc<dyn QueueStore>,
    storage: ThreadPool,
    metrics: Arc<Metrics>,
) -> Option<Sweep> {
    if config.max_entry_age_ms == 0 {
        return None;
    }
    let config = config.clone();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let runtime = rt.clone();
    let task = spawn_task(rt, async move {
        loop {
            let deadline = Instant::now() + SWEEP_INTERVAL;
            let slept = futures_lite::future::or(
                async {
                    runtime.sleep_until(deadline).await;
                    true
                },
                async {
                    let _ = stopped.recv().await;
                    false
                },
            );
            if !slept.await {
                return;
            }
            sweep_once(&config, &store, &storage, &metrics).await;
        }
    });
    Some(Sweep {
        _stop: stop,
        _task: task,
    })
}

/// Deletes what has expired now, chunk by chunk.
async fn sweep_once(
    config: &RelayConfig,
    store: &Arc<dyn QueueStore>,
    storage: &ThreadPool,
    metrics: &Metrics,
) {
    let expired_before = config.expired_before(unix_now());
    loop {
        let store = store.clone();
        let result = storage
            .run(move || store.expire(expired_before, SWEEP_CHUNK))
            .await;
        match result {
            Ok(Ok(gone)) => {
                metrics.observe_expired(gone.entries);
                if gone.entries > 0 {
                    tracing::info!(
                        entries = gone.entries,
                        bytes = gone.bytes,
                        "expired entries deleted"
                    );
                }
                if gone.entries < SWEEP_CHUNK as u64 {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "deleting expired entries failed; trying again later");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the expiry sweep's storage task failed");
                return;
            }
        }
    }
}
