//! The task that owns the [`Relay`] machine and drives it.

use std::collections::HashMap;
use std::sync::Arc;

use futures_channel::oneshot;
use relay_core::Instant;
use relay_core::http::HttpOutcome;
use relay_core::relay::{OpId, Output, Relay, Request, RequestId, Response};
use relay_core::store::{InsertOutcome, QueuedEntry, StoreError};
use relay_store::{AckNext, QueueStore};

use crate::client::HttpClient;
use crate::metrics::Metrics;
use crate::task::{Task, spawn_task};
use crate::threads::ThreadPool;
use crate::{Runtime, unix_now};

/// What the driver task reacts to.
enum Event {
    Request(Request, oneshot::Sender<Response>),
    Stored(OpId, Result<InsertOutcome, StoreError>),
    Fetched(OpId, Result<Option<QueuedEntry>, StoreError>),
    Keys(OpId, HttpOutcome),
    Timeout,
}

/// A cheap handle connections use to submit requests to the driver.
#[derive(Clone)]
pub(crate) struct DriverHandle {
    events: async_channel::Sender<Event>,
}

impl DriverHandle {
    /// Submits `request` and waits for its response; `None` if the driver
    /// has stopped.
    pub(crate) async fn submit(&self, request: Request) -> Option<Response> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Request(request, tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the driver task; it ends when every [`DriverHandle`] is dropped
/// and no storage operation is outstanding.
pub(crate) fn spawn<R: Runtime>(
    relay: Relay,
    store: Arc<dyn QueueStore>,
    storage: ThreadPool,
    client: HttpClient<R>,
    metrics: Arc<Metrics>,
) -> (DriverHandle, Task<()>) {
    let (tx, rx) = async_channel::unbounded();
    let handle = DriverHandle { events: tx.clone() };
    // The driver keeps only a weak sender for completions, so that dropping
    // every connection's handle lets it finish.
    let runtime = client.runtime().clone();
    let task = spawn_task(
        &runtime,
        drive(relay, store, storage, client, metrics, rx, tx.downgrade()),
    );
    drop(tx);
    (handle, task)
}

/// Sends a completion if the driver still runs.
fn complete(done: &async_channel::WeakSender<Event>, event: Event) {
    if let Some(done) = done.upgrade() {
        let _ = done.try_send(event);
    }
}

async fn drive<R: Runtime>(
    relay: Relay,
    store: Arc<dyn QueueStore>,
    storage: ThreadPool,
    client: HttpClient<R>,
    metrics: Arc<Metrics>,
    events: async_channel::Receiver<Event>,
    completions: async_channel::WeakSender<Event>,
) {
    let rt = client.runtime().clone();
    let mut driver = Driver {
        relay,
        store,
        storage,
        client,
        metrics,
        completions,
        waiting: HashMap::new(),
    };
    loop {
        // 1. Feed one event.
        let event = match driver.relay.poll_timeout() {
            Some(deadline) => {
                futures_lite::future::race(async { events.recv().await.ok() }, async {
                    rt.sleep_until(deadline).await;
                    Some(Event::Timeout)
                })
                .await
            }
            None => events.recv().await.ok(),
        };
        let Some(event) = event else { break };
        driver.feed(Instant::now(), event);
        // 2. Drain every output.
        while let Some(output) = driver.relay.poll_output() {
            driver.perform(output);
        }
        // 3. The timer is re-armed from poll_timeout at the top of the loop.
    }
}

/// The drive loop's state: the machine, and where its outputs go.
struct Driver<R: Runtime> {
    relay: Relay,
    store: Arc<dyn QueueStore>,
    /// Where storage calls run.
    storage: ThreadPool,
    client: HttpClient<R>,
    metrics: Arc<Metrics>,
    /// Where storage operations and key fetches report back.
    completions: async_channel::WeakSender<Event>,
    /// Requests not yet answered.
    waiting: HashMap<RequestId, oneshot::Sender<Response>>,
}

impl<R: Runtime> Driver<R> {
    /// Step 1: hands the machine what woke the loop.
    fn feed(&mut self, now: Instant, event: Event) {
        let relay = &mut self.relay;
        match event {
            Event::Request(request, reply) => {
                let id = relay.handle_request(now, unix_now(), request);
                self.waiting.insert(id, reply);
            }
            Event::Stored(op, result) => relay.handle_stored(now, op, result),
            Event::Fetched(op, result) => relay.handle_fetched(now, op, result),
            Event::Keys(op, outcome) => relay.handle_keys(now, unix_now(), op, outcome),
            Event::Timeout => relay.handle_timeout(now),
        }
    }

    /// Step 2, for one output.
    fn perform(&mut self, output: Output) {
        let rt = self.client.runtime().clone();
        match output {
            Output::Store { op, entry, quota } => {
                let (store, metrics) = (self.store.clone(), self.metrics.clone());
                let (storage, done) = (self.storage.clone(), self.completions.clone());
                rt.spawn(async move {
                    let result = storage
                        .run(move || store.insert(entry, &quota))
                        .await
                        .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}"))));
                    if let Ok(outcome) = &result {
                        metrics.observe_insert(outcome);
                    }
                    complete(&done, Event::Stored(op, result));
                });
            }
            Output::Fetch {
                op,
                destination,
                ack,
            } => {
                let (store, metrics) = (self.store.clone(), self.metrics.clone());
                let (storage, done) = (self.storage.clone(), self.completions.clone());
                rt.spawn(async move {
                    let result = storage
                        .run(move || store.ack_and_next(&destination, ack))
                        .await
                        .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}"))));
                    if matches!(result, Ok(AckNext { acked: true, .. })) {
                        metrics.observe_acknowledgement();
                    }
                    let result = result.map(|found| found.next);
                    complete(&done, Event::Fetched(op, result));
                });
            }
            Output::FetchKeys { op, request } => {
                let (client, done) = (self.client.clone(), self.completions.clone());
                rt.spawn(async move {
                    let outcome = client.send(request).await;
                    complete(&done, Event::Keys(op, outcome));
                });
            }
            Output::Respond { request, response } => {
                if let Some(reply) = self.waiting.remove(&request) {
                    // The client may have gone; its response is moot.
                    let _ = reply.send(response);
                }
            }
        }
    }
}
