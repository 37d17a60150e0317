//! Joining spawned tasks and bounding futures in time, on any [`Runtime`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_channel::oneshot;
use relay_core::Instant;

use crate::Runtime;

/// A spawned task's result: `Err(Canceled)` if it panicked or its runtime
/// dropped it.
#[must_use = "dropping a Task detaches it"]
pub struct Task<T>(oneshot::Receiver<T>);

impl<T> Future for Task<T> {
    type Output = Result<T, oneshot::Canceled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Spawns `future` on `runtime`; the returned [`Task`] yields its output.
pub fn spawn_task<R: Runtime, T: Send + 'static>(
    runtime: &R,
    future: impl Future<Output = T> + Send + 'static,
) -> Task<T> {
    let (tx, rx) = oneshot::channel();
    runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    Task(rx)
}

/// `future`'s output, or `None` if `limit` passed first.
pub async fn timeout<R: Runtime, T>(
    runtime: &R,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    futures_lite::future::or(async { Some(future.await) }, async {
        runtime.sleep_until(deadline).await;
        None
    })
    .await
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until<R: Runtime>(runtime: &R, deadline: Option<Instant>) {
    match deadline {
        Some(d) => runtime.sleep_until(d).await,
        None => std::future::pending().await,
    }
}
