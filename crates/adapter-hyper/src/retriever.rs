//! The task that owns a [`Retriever`] machine and drives it: `relay_txn`
//! requests over [`HttpClient`], window changes to storage in order,
//! deliveries and events to the application.

use std::sync::Arc;

use relay_core::http::HttpOutcome;
use relay_core::retriever::{
    AttemptId, Change, Delivery, DeliveryId, Event, OpId, Output, Retriever,
};
use relay_core::store::StoreError;
use relay_core::{Instant, ServerName};
use relay_store::DedupeStore;
use tokio::sync::mpsc;

use crate::client::HttpClient;
use crate::persist;

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
    commands: mpsc::UnboundedSender<Command>,
}

impl RetrieverHandle {
    /// The application has processed delivery `id`: its entry may now be
    /// acknowledged.
    pub fn processed(&self, id: DeliveryId) {
        let _ = self.commands.send(Command::Processed(id));
    }

    /// The node came online: drain every relay now.
    pub fn online(&self) {
        let _ = self.commands.send(Command::Online);
    }

    /// Replaces the node's relays.
    pub fn set_relays(&self, relays: Vec<ServerName>) {
        let _ = self.commands.send(Command::SetRelays(relays));
    }
}

/// Starts driving `machine`. Deliveries and events arrive on the returned
/// receiver; the task ends when every [`RetrieverHandle`] is dropped.
pub fn spawn(
    machine: Retriever,
    client: HttpClient,
    store: Option<Arc<dyn DedupeStore>>,
) -> (
    RetrieverHandle,
    mpsc::UnboundedReceiver<Received>,
    tokio::task::JoinHandle<()>,
) {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (received_tx, received) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(machine, client, store, commands, received_tx));
    (
        RetrieverHandle {
            commands: commands_tx,
        },
        received,
        task,
    )
}

async fn drive(
    mut machine: Retriever,
    client: HttpClient,
    store: Option<Arc<dyn DedupeStore>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    received: mpsc::UnboundedSender<Received>,
) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Completion>();
    let persisted = done_tx.clone();
    let apply = store.map(|store| -> persist::Apply<Change> {
        Arc::new(move |changes| store.apply_window(changes))
    });
    let (persist_tx, persister) = persist::spawn(apply, move |results| {
        let _ = persisted.send(Completion::Persisted(results));
    });
    let mut open = true;
    while open {
        // 1. Feed one event.
        tokio::select! {
            command = commands.recv() => {
                let now = Instant::now();
                match command {
                    Some(Command::Processed(id)) => machine.handle_processed(now, id),
                    Some(Command::Online) => machine.handle_online(now),
                    Some(Command::SetRelays(relays)) => machine.set_relays(now, relays),
                    None => open = false,
                }
            }
            Some(completion) = done.recv() => {
                let now = Instant::now();
                match completion {
                    Completion::Answered(attempt, outcome) => machine.handle_response(now, attempt, outcome),
                    Completion::Persisted(results) => {
                        for (op, result) in results {
                            machine.handle_persisted(now, op, result);
                        }
                    }
                }
            }
            () = crate::outbound::sleep_until(machine.poll_timeout()) => machine.handle_timeout(Instant::now()),
        }
        // 2. Drain every output.
        let mut changes = Vec::new();
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Transmit {
                    attempt, request, ..
                } => {
                    let (client, done) = (client.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let outcome = client.send(request).await;
                        let _ = done.send(Completion::Answered(attempt, outcome));
                    });
                }
                Output::Persist { op, change } => changes.push((op, change)),
                Output::Deliver(delivery) => {
                    let _ = received.send(Received::Delivery(delivery));
                }
                Output::Event(event) => {
                    let _ = received.send(Received::Event(event));
                }
            }
        }
        if !changes.is_empty() {
            let _ = persist_tx.send(changes);
        }
        // 3. The timer is re-armed from poll_timeout at the top of the loop.
    }
    drop(persist_tx);
    let _ = persister.await;
}
