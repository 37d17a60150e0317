//! The task that owns a [`Retriever`] machine and drives it: `relay_txn`
//! requests over [`HttpClient`], window changes to storage in order,
//! deliveries and events to the application.

use std::ops::ControlFlow;
use std::sync::Arc;

use relay_core::http::HttpOutcome;
use relay_core::retriever::{
    AttemptId, Delivery, DeliveryId, Event, OpId, Output, Retriever, WindowChange,
};
use relay_core::store::StoreError;
use relay_core::{Instant, ServerName};
use relay_store::DedupeStore;

use super::{NodeDriver, Wake, persist, run_node};
use crate::Runtime;
use crate::client::HttpClient;
use crate::task::{Task, spawn_task};

/// What the application receives.
#[derive(Debug)]
pub enum Received {
    /// Process this transaction, then call [`RetrieverHandle::processed`].
    Delivery(Delivery),
    /// Something to know.
    Event(Event),
}

enum Command {
    Processed(DeliveryId),
    Online,
    SetRelays(Vec<ServerName>),
}

enum Completion {
    Answered(AttemptId, HttpOutcome),
    Persisted(Vec<(OpId, Result<(), StoreError>)>),
}

/// The application's handle on a running retriever.
#[derive(Clone)]
pub struct RetrieverHandle {
    commands: async_channel::Sender<Command>,
}

impl RetrieverHandle {
    /// The application has processed delivery `id`: its entry may now be
    /// acknowledged.
    pub fn processed(&self, id: DeliveryId) {
        let _ = self.commands.try_send(Command::Processed(id));
    }

    /// The node came online: drain every relay now.
    pub fn online(&self) {
        let _ = self.commands.try_send(Command::Online);
    }

    /// Replaces the node's relays.
    pub fn set_relays(&self, relays: Vec<ServerName>) {
        let _ = self.commands.try_send(Command::SetRelays(relays));
    }
}

/// Starts driving `machine` on the client's runtime. Deliveries and events
/// arrive on the returned receiver; the task ends when every
/// [`RetrieverHandle`] is dropped.
pub fn spawn<R: Runtime>(
    machine: Retriever,
    client: HttpClient<R>,
    store: Arc<dyn DedupeStore>,
) -> (RetrieverHandle, async_channel::Receiver<Received>, Task<()>) {
    let (commands_tx, commands) = async_channel::unbounded();
    let (received_tx, received) = async_channel::unbounded();
    let runtime = client.runtime().clone();
    let task = spawn_task(
        &runtime,
        drive(machine, client, store, commands, received_tx),
    );
    (
        RetrieverHandle {
            commands: commands_tx,
        },
        received,
        task,
    )
}

async fn drive<R: Runtime>(
    machine: Retriever,
    client: HttpClient<R>,
    store: Arc<dyn DedupeStore>,
    commands: async_channel::Receiver<Command>,
    received: async_channel::Sender<Received>,
) {
    let rt = client.runtime().clone();
    let (done_tx, done) = async_channel::unbounded::<Completion>();
    let persisted = done_tx.clone();
    let apply: persist::Apply<WindowChange> = Arc::new(move |changes| store.apply_window(changes));
    let (persist_tx, persister) = persist::spawn(&rt, apply, move |results| {
        let _ = persisted.try_send(Completion::Persisted(results));
    });
    let driver = Driver {
        machine,
        client,
        done: done_tx,
        received,
        changes: Vec::new(),
    };
    run_node(&rt, driver, commands, done, (persist_tx, persister)).await;
}

/// The drive loop's state: the machine, and where its outputs go.
struct Driver<R: Runtime> {
    machine: Retriever,
    client: HttpClient<R>,
    /// Where requests report back.
    done: async_channel::Sender<Completion>,
    received: async_channel::Sender<Received>,
    /// Changes drained, to persist as one batch.
    changes: Vec<(OpId, WindowChange)>,
}

impl<R: Runtime> NodeDriver for Driver<R> {
    type Command = Command;
    type Completion = Completion;
    type Output = Output;
    type Change = (OpId, WindowChange);

    fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    fn feed(&mut self, now: Instant, wake: Wake<Command, Completion>) -> ControlFlow<()> {
        let machine = &mut self.machine;
        match wake {
            Wake::Command(Some(Command::Processed(id))) => machine.handle_processed(now, id),
            Wake::Command(Some(Command::Online)) => machine.handle_online(now),
            Wake::Command(Some(Command::SetRelays(relays))) => machine.set_relays(now, relays),
            Wake::Command(None) => return ControlFlow::Break(()),
            Wake::Done(Completion::Answered(attempt, outcome)) => {
                machine.handle_response(now, attempt, outcome);
            }
            Wake::Done(Completion::Persisted(results)) => {
                for (op, result) in results {
                    machine.handle_persisted(now, op, result);
                }
            }
            Wake::Timeout => machine.handle_timeout(now),
        }
        ControlFlow::Continue(())
    }

    fn poll_output(&mut self) -> Option<Output> {
        self.machine.poll_output()
    }

    fn perform(&mut self, output: Output) {
        match output {
            Output::Transmit {
                attempt, request, ..
            } => {
                let (client, done) = (self.client.clone(), self.done.clone());
                self.client.runtime().spawn(async move {
                    let outcome = client.send(request).await;
                    let _ = done.try_send(Completion::Answered(attempt, outcome));
                });
            }
            Output::Persist { op, change } => self.changes.push((op, change)),
            Output::Deliver(delivery) => {
                let _ = self.received.try_send(Received::Delivery(delivery));
            }
            Output::Event(event) => {
                let _ = self.received.try_send(Received::Event(event));
            }
        }
    }

    fn take_changes(&mut self) -> Vec<(OpId, WindowChange)> {
        std::mem::take(&mut self.changes)
    }
}
