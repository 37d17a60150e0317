//! The task that owns an [`Outbound`] machine and drives it: requests over
//! [`HttpClient`], state changes to an [`OutboundStore`] in order, events to
//! the application.

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use futures_channel::oneshot;
use relay_core::http::HttpOutcome;
use relay_core::outbound::{
    AttemptId, EnqueueError, Event, ItemId, ItemKind, OpId, Outbound, OutboundChange, Output,
};
use relay_core::store::StoreError;
use relay_core::{Instant, ServerName};
use relay_store::OutboundStore;

use super::{NodeDriver, Wake, persist, run_node};
use crate::Runtime;
use crate::client::HttpClient;
use crate::task::{Task, spawn_task};

pub use crate::unix_now;

/// Why [`OutboundHandle::enqueue`] did not queue an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotQueued {
    /// The machine refused it.
    Refused(EnqueueError),
    /// The sender's task has stopped.
    Stopped,
}

impl fmt::Display for NotQueued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(e) => e.fmt(f),
            Self::Stopped => f.write_str("the sender has stopped"),
        }
    }
}

impl std::error::Error for NotQueued {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Refused(e) => Some(e),
            Self::Stopped => None,
        }
    }
}

/// Where an enqueue's answer goes.
type Reply = oneshot::Sender<Result<ItemId, NotQueued>>;

enum Command {
    Enqueue {
        destination: ServerName,
        kind: ItemKind,
        json: Vec<u8>,
        reply: Reply,
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
    /// Queues a PDU or EDU for `destination`; answers once the item is
    /// stored (or storing it failed, an [`Event::PersistFailed`]).
    pub async fn enqueue(
        &self,
        destination: ServerName,
        kind: ItemKind,
        json: Vec<u8>,
    ) -> Result<ItemId, NotQueued> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Enqueue {
            destination,
            kind,
            json,
            reply,
        };
        if self.commands.try_send(command).is_err() {
            return Err(NotQueued::Stopped);
        }
        answer.await.unwrap_or(Err(NotQueued::Stopped))
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
/// returned receiver, but for [`Event::Queued`], which answers its
/// [`OutboundHandle::enqueue`]; the task ends when every [`OutboundHandle`]
/// is dropped, after handing the changes it has to the store.
pub fn spawn<R: Runtime>(
    machine: Outbound,
    client: HttpClient<R>,
    store: Arc<dyn OutboundStore>,
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
    machine: Outbound,
    client: HttpClient<R>,
    store: Arc<dyn OutboundStore>,
    commands: async_channel::Receiver<Command>,
    events: async_channel::Sender<Event>,
) {
    let rt = client.runtime().clone();
    let (done_tx, done) = async_channel::unbounded::<Completion>();
    let apply: persist::Apply<OutboundChange> = Arc::new(move |changes| store.apply(changes));
    let persisted = done_tx.clone();
    let (persist_tx, persister) = persist::spawn(&rt, apply, move |results| {
        let _ = persisted.try_send(Completion::Persisted(results));
    });
    let driver = Driver {
        machine,
        client,
        done: done_tx,
        events,
        unanswered: HashMap::new(),
        changes: Vec::new(),
    };
    run_node(&rt, driver, commands, done, (persist_tx, persister)).await;
}

/// The drive loop's state: the machine, and where its outputs go.
struct Driver<R: Runtime> {
    machine: Outbound,
    client: HttpClient<R>,
    /// Where requests report back.
    done: async_channel::Sender<Completion>,
    events: async_channel::Sender<Event>,
    /// Enqueues not yet answered, by item.
    unanswered: HashMap<ItemId, Reply>,
    /// Changes drained, to persist as one batch.
    changes: Vec<(OpId, OutboundChange)>,
}

impl<R: Runtime> NodeDriver for Driver<R> {
    type Command = Command;
    type Completion = Completion;
    type Output = Output;
    type Change = (OpId, OutboundChange);

    fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    fn feed(&mut self, now: Instant, wake: Wake<Command, Completion>) -> ControlFlow<()> {
        let machine = &mut self.machine;
        match wake {
            Wake::Command(Some(Command::Enqueue {
                destination,
                kind,
                json,
                reply,
            })) => match machine.handle_enqueue(now, unix_now(), destination, kind, json) {
                Ok(id) => {
                    self.unanswered.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NotQueued::Refused(e)));
                }
            },
            Wake::Command(Some(Command::SetRelays(destination, relays))) => {
                machine.set_relays(now, destination, relays);
            }
            Wake::Command(Some(Command::PeerAlive(destination))) => {
                machine.handle_peer_alive(now, unix_now(), &destination);
            }
            Wake::Command(None) => return ControlFlow::Break(()),
            Wake::Done(Completion::Sent(attempt, outcome)) => {
                machine.handle_send_result(now, unix_now(), attempt, outcome);
            }
            Wake::Done(Completion::Persisted(results)) => {
                for (op, result) in results {
                    machine.handle_persisted(now, op, result);
                }
            }
            Wake::Timeout => machine.handle_timeout(now, unix_now()),
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
                    let _ = done.try_send(Completion::Sent(attempt, outcome));
                });
            }
            Output::Persist { op, change } => self.changes.push((op, change)),
            Output::Event(Event::Queued { item }) => {
                if let Some(reply) = self.unanswered.remove(&item) {
                    let _ = reply.send(Ok(item));
                }
            }
            Output::Event(event) => {
                let _ = self.events.try_send(event);
            }
        }
    }

    fn take_changes(&mut self) -> Vec<(OpId, OutboundChange)> {
        std::mem::take(&mut self.changes)
    }
}
