//! The task that owns the [`Relay`] machine and drives it.
//!
//! Implementation note: connections reach the task through a bounded
//! queue, so a flood of requests waits at its connections rather than in
//! memory here; storage results and key fetches come back on a queue of
//! their own, unbounded (there is at most one per operation in flight),
//! so a full request queue never holds them up. The task does O(1) work
//! per event: bodies and key documents are checked by the connection or
//! the fetch that brought them, on any executor thread.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use futures_channel::oneshot;
use relay_core::relay::{
    BodyCheck, Checked, CheckedKeys, OpId, Output, Relay, RequestHead, RequestId, Response,
};
use relay_core::store::{Ack, AckBatch, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError};
use relay_core::{Instant, ServerName, UnixMillis};
use relay_store::{AckNext, QueueStore};

use super::{Wake, next_wake};
use crate::client::HttpClient;
use crate::metrics::Metrics;
use crate::task::{Task, spawn_task};
use crate::threads::ThreadPool;
use crate::{Runtime, unix_now};

/// Most requests (heads and checked bodies) waiting for the driver; past
/// it, connections wait to hand theirs over.
const REQUEST_QUEUE: usize = 256;

/// What connections hand the driver.
enum Command {
    Head(RequestHead, oneshot::Sender<HeadReply>),
    Body(Checked, oneshot::Sender<Response>),
    /// The server is shutting down: answer the long-polls now.
    ReleaseWaits,
}

/// What storage and key fetches report back.
enum Completion {
    Stored(OpId, Result<InsertOutcome, StoreError>),
    Fetched(OpId, Result<Option<QueuedEntry>, StoreError>),
    Batch(OpId, Result<AckBatch, StoreError>),
    Keys(OpId, CheckedKeys),
}

/// What a request's head leads to.
pub(crate) enum HeadReply {
    /// The answer; the body was not read and never will be.
    Respond(Response),
    /// Read the body, at most `limit` bytes, judge it with `check`, and
    /// hand the result over with [`DriverHandle::body`].
    ReadBody {
        /// The most bytes to read.
        limit: usize,
        /// What judges the body.
        check: Box<BodyCheck>,
    },
}

/// A connection waiting for the machine.
enum Waiting {
    Head(oneshot::Sender<HeadReply>),
    Body(oneshot::Sender<Response>),
}

/// A cheap handle connections use to hand requests to the driver.
#[derive(Clone)]
pub(crate) struct DriverHandle {
    commands: async_channel::Sender<Command>,
}

impl DriverHandle {
    /// Hands over a request's head and waits for what follows; `None` if
    /// the driver has stopped.
    pub(crate) async fn head(&self, head: RequestHead) -> Option<HeadReply> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Head(head, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Has the machine answer every long-poll at once (shutdown).
    pub(crate) async fn release_waits(&self) {
        let _ = self.commands.send(Command::ReleaseWaits).await;
    }

    /// Hands over a judged body and waits for the response; `None` if the
    /// driver has stopped.
    pub(crate) async fn body(&self, checked: Checked) -> Option<Response> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Body(checked, tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Starts the driver task; it ends when every [`DriverHandle`] is dropped.
pub(crate) fn spawn<R: Runtime>(
    relay: Relay,
    store: Arc<dyn QueueStore>,
    storage: ThreadPool,
    client: HttpClient<R>,
    metrics: Arc<Metrics>,
) -> (DriverHandle, Task<()>) {
    let (commands, received) = async_channel::bounded(REQUEST_QUEUE);
    let (completions, done) = async_channel::unbounded();
    let runtime = client.runtime().clone();
    let driver = Driver {
        relay,
        store,
        storage,
        client,
        metrics,
        completions,
        waiting: HashMap::new(),
    };
    let task = spawn_task(&runtime, drive(driver, received, done));
    (DriverHandle { commands }, task)
}

async fn drive<R: Runtime>(
    mut driver: Driver<R>,
    commands: async_channel::Receiver<Command>,
    done: async_channel::Receiver<Completion>,
) {
    let rt = driver.client.runtime().clone();
    loop {
        // 1. Feed one event.
        let wake = next_wake(&rt, &commands, &done, driver.relay.poll_timeout()).await;
        if driver.feed(Instant::now(), wake).is_break() {
            break;
        }
        // 2. Drain every output.
        while let Some(output) = driver.relay.poll_output() {
            driver.perform(output);
        }
        driver
            .metrics
            .set_long_polls_waiting(driver.relay.waiting());
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
    completions: async_channel::Sender<Completion>,
    /// Requests waiting for the machine.
    waiting: HashMap<RequestId, Waiting>,
}

impl<R: Runtime> Driver<R> {
    /// Step 1: hands the machine what woke the loop; `Break` once every
    /// handle is gone.
    fn feed(&mut self, now: Instant, wake: Wake<Command, Completion>) -> ControlFlow<()> {
        let relay = &mut self.relay;
        match wake {
            Wake::Command(None) => return ControlFlow::Break(()),
            Wake::Command(Some(Command::Head(head, reply))) => {
                let id = relay.handle_head(now, unix_now(), head);
                self.waiting.insert(id, Waiting::Head(reply));
            }
            Wake::Command(Some(Command::Body(checked, reply))) => {
                self.waiting.insert(checked.request(), Waiting::Body(reply));
                relay.handle_body(now, unix_now(), checked);
            }
            Wake::Command(Some(Command::ReleaseWaits)) => relay.release_waits(now),
            Wake::Done(Completion::Stored(op, result)) => relay.handle_stored(now, op, result),
            Wake::Done(Completion::Fetched(op, result)) => relay.handle_fetched(now, op, result),
            Wake::Done(Completion::Batch(op, result)) => {
                relay.handle_fetched_batch(now, op, result);
            }
            Wake::Done(Completion::Keys(op, checked)) => {
                relay.handle_keys(now, unix_now(), op, checked);
            }
            Wake::Timeout => relay.handle_timeout(now),
        }
        ControlFlow::Continue(())
    }

    /// Step 2, for one output.
    fn perform(&mut self, output: Output) {
        match output {
            Output::ReadBody {
                request,
                limit,
                check,
            } => {
                if let Some(Waiting::Head(reply)) = self.waiting.remove(&request) {
                    // The client may have gone; then nothing is read.
                    let check = Box::new(check);
                    let _ = reply.send(HeadReply::ReadBody { limit, check });
                }
            }
            Output::Respond { request, response } => match self.waiting.remove(&request) {
                Some(Waiting::Head(reply)) => {
                    let _ = reply.send(HeadReply::Respond(response));
                }
                Some(Waiting::Body(reply)) => {
                    let _ = reply.send(response);
                }
                None => {}
            },
            Output::FetchKeys { op, request, check } => {
                let (client, done) = (self.client.clone(), self.completions.clone());
                self.client.runtime().spawn(async move {
                    let outcome = client.send(request).await;
                    // Checked here, not on the driver's task.
                    let checked = check.run(unix_now(), &outcome);
                    if let Some(why) = checked.failure() {
                        tracing::debug!(error = why, "fetching keys failed");
                    }
                    let _ = done.try_send(Completion::Keys(op, checked));
                });
            }
            Output::Store { op, entry, quota } => self.store(op, entry, quota),
            Output::Fetch {
                op,
                destination,
                ack,
                expired_before,
            } => self.fetch(op, destination, ack, expired_before),
            Output::FetchBatch {
                op,
                destination,
                acks,
                take,
                expired_before,
            } => {
                let (store, metrics) = (self.store.clone(), self.metrics.clone());
                let (storage, done) = (self.storage.clone(), self.completions.clone());
                self.client.runtime().spawn(async move {
                    let result = storage
                        .run(move || {
                            store.ack_and_next_batch(&destination, &acks, take, expired_before)
                        })
                        .await
                        .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}"))));
                    if let Ok(batch) = &result {
                        metrics.observe_acknowledgements(batch.acked);
                    }
                    let _ = done.try_send(Completion::Batch(op, result));
                });
            }
        }
    }

    /// Performs [`Output::Store`] on the storage pool, reported back as a
    /// completion.
    fn store(&self, op: OpId, entry: NewEntry, quota: Quota) {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let (storage, done) = (self.storage.clone(), self.completions.clone());
        self.client.runtime().spawn(async move {
            let result = storage
                .run(move || store.insert(entry, &quota))
                .await
                .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}"))));
            if let Ok(outcome) = &result {
                metrics.observe_insert(outcome);
            }
            let _ = done.try_send(Completion::Stored(op, result));
        });
    }

    /// Performs [`Output::Fetch`] on the storage pool, reported back as a
    /// completion.
    fn fetch(
        &self,
        op: OpId,
        destination: ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) {
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let (storage, done) = (self.storage.clone(), self.completions.clone());
        self.client.runtime().spawn(async move {
            let result = storage
                .run(move || store.ack_and_next_unexpired(&destination, ack, expired_before))
                .await
                .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}"))));
            if matches!(result, Ok(AckNext { acked: true, .. })) {
                metrics.observe_acknowledgement();
            }
            let result = result.map(|found| found.next);
            let _ = done.try_send(Completion::Fetched(op, result));
        });
    }
}
