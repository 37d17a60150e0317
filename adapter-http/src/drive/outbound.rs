//! The task that owns an [`Outbound`] machine and drives it: requests over
//! [`HttpClient`], state changes to an [`OutboundStore`] in order, events to
//! the application.

use std::collections::HashMap;
use std::sync::Arc;

use futures_channel::oneshot;
use relay_core::http::HttpOutcome;
use relay_core::outbound::{
    AttemptId, EnqueueError, Event, ItemId, ItemKind, OpId, Outbound, OutboundChange, Output,
};
use relay_core::store::StoreError;
use relay_core::{Instant, ServerName};
use relay_store::OutboundStore;

use super::{Wake, next_wake, persist};
use crate::Runtime;
use crate::client::HttpClient;
use crate::task::{Task, spawn_task};

pub use crate::unix_now;

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
    commands: async_channel::Sender<Command>,
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
        if self.commands.try_send(command).is_err() {
            return Err(EnqueueError::QueueFull(destination));
        }
        answer
            .await
            .unwrap_or(Err(EnqueueError::QueueFull(destination)))
    }

    /// Sets the relays known for `destination`.
    pub fn set_relays(&self, destination: ServerName, relays: Vec<ServerName>) {
        let _ = self
            .commands
            .try_send(Command::SetRelays(destination, relays));
    }

    /// Tells the sender `destination` was seen alive.
    pub fn peer_alive(&self, destination: ServerName) {
        let _ = self.commands.try_send(Command::PeerAlive(destination));
    }
}

/// Starts driving `machine` on the client's runtime. Events arrive on the
/// returned receiver; the task ends when every [`OutboundHandle`] is
/// dropped, after handing the changes it has to the store.
pub fn spawn<R: Runtime>(
    machine: Outbound,
    client: HttpClient<R>,
    store: Option<Arc<dyn OutboundStore>>,
) -> (OutboundHandle, async_channel::Receiver<Event>, Task<()>) {
    let (commands_tx, commands) = async_channel::unbounded();
    let (events_tx, events) = async_channel::unbounded();
    let runtime = client.runtime().clone();
    let task = spawn_task(&runtime, drive(machine, client, store, commands, events_tx));
    (
        OutboundHandle {
            commands: commands_tx,
        },
        events,
        task,
    )
}

async fn drive<R: Runtime>(
    mut machine: Outbound,
    client: HttpClient<R>,
    store: Option<Arc<dyn OutboundStore>>,
    commands: async_channel::Receiver<Command>,
    events: async_channel::Sender<Event>,
) {
    let rt = client.runtime().clone();
    let (done_tx, done) = async_channel::unbounded::<Completion>();
    let apply = store.map(|store| -> persist::Apply<OutboundChange> {
        Arc::new(move |changes| store.apply(changes))
    });
    let persisted = done_tx.clone();
    let (persist_tx, persister) = persist::spawn(&rt, apply, move |results| {
        let _ = persisted.try_send(Completion::Persisted(results));
    });
    // Enqueues are answered once their item is stored (or storing it was
    // tried): an application told "queued" can rely on it across a crash.
    let mut unanswered: HashMap<ItemId, oneshot::Sender<Result<ItemId, EnqueueError>>> =
        HashMap::new();
    let mut storing: HashMap<OpId, ItemId> = HashMap::new();
    loop {
        // 1. Feed one event.
        let deadline = machine.poll_timeout();
        let wake = next_wake(&rt, &commands, &done, deadline).await;
        let now = Instant::now();
        match wake {
            Wake::Command(Some(Command::Enqueue {
                destination,
                kind,
                json,
                reply,
            })) => match machine.handle_enqueue(now, unix_now(), destination, kind, json) {
                Ok(id) => {
                    unanswered.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Wake::Command(Some(Command::SetRelays(destination, relays))) => {
                machine.set_relays(now, destination, relays);
            }
            Wake::Command(Some(Command::PeerAlive(destination))) => {
                machine.handle_peer_alive(now, unix_now(), &destination);
            }
            Wake::Command(None) => break,
            Wake::Done(Completion::Sent(attempt, outcome)) => {
                machine.handle_send_result(now, unix_now(), attempt, outcome);
            }
            Wake::Done(Completion::Persisted(results)) => {
                for (op, result) in results {
                    // A storage failure reaches the application as
                    // Event::PersistFailed; the item is queued all the same.
                    if let Some(id) = storing.remove(&op)
                        && let Some(reply) = unanswered.remove(&id)
                    {
                        let _ = reply.send(Ok(id));
                    }
                    machine.handle_persisted(now, op, result);
                }
            }
            Wake::Timeout => machine.handle_timeout(now, unix_now()),
        }
        // 2. Drain every output.
        let mut changes = Vec::new();
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Transmit {
                    attempt, request, ..
                } => {
                    let (client, done) = (client.clone(), done_tx.clone());
                    rt.spawn(async move {
                        let outcome = client.send(request).await;
                        let _ = done.try_send(Completion::Sent(attempt, outcome));
                    });
                }
                Output::Persist { op, change } => {
                    if let OutboundChange::Enqueued { item, .. } = &change {
                        storing.insert(op, item.id);
                    }
                    changes.push((op, change));
                }
                Output::Event(event) => {
                    let _ = events.try_send(event);
                }
            }
        }
        if !changes.is_empty() {
            let _ = persist_tx.try_send(changes);
        }
        // 3. The timer is re-armed from poll_timeout at the top of the loop.
    }
    drop(persist_tx);
    let _ = persister.await;
}
