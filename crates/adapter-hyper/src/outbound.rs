//! The task that owns an [`Outbound`] machine and drives it: requests over
//! [`HttpClient`], state changes to an [`OutboundStore`] in order, events to
//! the application.

use std::sync::Arc;
use std::time::SystemTime;

use relay_core::http::HttpOutcome;
use relay_core::outbound::{
    AttemptId, Change, EnqueueError, Event, ItemId, ItemKind, OpId, Outbound, Output,
};
use relay_core::store::StoreError;
use relay_core::{Instant, ServerName, UnixMillis};
use relay_store::OutboundStore;
use tokio::sync::{mpsc, oneshot};

use crate::client::HttpClient;
use crate::persist;

/// The current wall-clock time.
pub fn unix_now() -> UnixMillis {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
}

enum Command {
    Enqueue {
        destination: ServerName,
        kind: ItemKind,
        json: Vec<u8>,
        reply: oneshot::Sender<Result<ItemId, EnqueueError>>,
    },
    SetRelays(ServerName, Vec<ServerName>),
    PeerAlive(ServerName),
}

enum Completion {
    Sent(AttemptId, HttpOutcome),
    Persisted(Vec<(OpId, Result<(), StoreError>)>),
}

/// The application's handle on a running sender.
#[derive(Clone)]
pub struct OutboundHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl OutboundHandle {
    /// Queues a PDU or EDU for `destination`.
    pub async fn enqueue(
        &self,
        destination: ServerName,
        kind: ItemKind,
        json: Vec<u8>,
    ) -> Result<ItemId, EnqueueError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Enqueue {
            destination: destination.clone(),
            kind,
            json,
            reply,
        };
        if self.commands.send(command).is_err() {
            return Err(EnqueueError::QueueFull(destination));
        }
        answer
            .await
            .unwrap_or(Err(EnqueueError::QueueFull(destination)))
    }

    /// Sets the relays known for `destination`.
    pub fn set_relays(&self, destination: ServerName, relays: Vec<ServerName>) {
        let _ = self.commands.send(Command::SetRelays(destination, relays));
    }

    /// Tells the sender `destination` was seen alive.
    pub fn peer_alive(&self, destination: ServerName) {
        let _ = self.commands.send(Command::PeerAlive(destination));
    }
}

/// Starts driving `machine`. Events arrive on the returned receiver; the
/// task ends when every [`OutboundHandle`] is dropped, after handing the
/// changes it has to the store.
pub fn spawn(
    machine: Outbound,
    client: HttpClient,
    store: Option<Arc<dyn OutboundStore>>,
) -> (
    OutboundHandle,
    mpsc::UnboundedReceiver<Event>,
    tokio::task::JoinHandle<()>,
) {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(machine, client, store, commands, events_tx));
    (
        OutboundHandle {
            commands: commands_tx,
        },
        events,
        task,
    )
}

async fn drive(
    mut machine: Outbound,
    client: HttpClient,
    store: Option<Arc<dyn OutboundStore>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Completion>();
    let apply = store
        .map(|store| -> persist::Apply<Change> { Arc::new(move |changes| store.apply(changes)) });
    let persisted = done_tx.clone();
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
                    Some(Command::Enqueue { destination, kind, json, reply }) => {
                        let _ = reply.send(machine.handle_enqueue(now, unix_now(), destination, kind, json));
                    }
                    Some(Command::SetRelays(destination, relays)) => machine.set_relays(destination, relays),
                    Some(Command::PeerAlive(destination)) => machine.handle_peer_alive(now, unix_now(), &destination),
                    None => open = false,
                }
            }
            Some(completion) = done.recv() => {
                let now = Instant::now();
                match completion {
                    Completion::Sent(attempt, outcome) => machine.handle_send_result(now, unix_now(), attempt, outcome),
                    Completion::Persisted(results) => {
                        for (op, result) in results {
                            machine.handle_persisted(now, op, result);
                        }
                    }
                }
            }
            () = sleep_until(machine.poll_timeout()) => {
                machine.handle_timeout(Instant::now(), unix_now());
            }
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
                        let _ = done.send(Completion::Sent(attempt, outcome));
                    });
                }
                Output::Persist { op, change } => changes.push((op, change)),
                Output::Event(event) => {
                    let _ = events.send(event);
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

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
