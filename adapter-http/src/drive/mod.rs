//! The tasks that own the three machines and drive them, side by side:
//! `relay` (the server's [`Relay`](relay_core::relay::Relay)),
//! [`outbound`] (the sender's [`Outbound`](relay_core::outbound::Outbound)),
//! [`retriever`] (the recipient's
//! [`Retriever`](relay_core::retriever::Retriever)), and `persist`, which
//! applies the last two machines' state changes to storage in order.
//!
//! Each loop follows its machine's drive rule, in the same words: feed one
//! event (its driver's `feed`), drain `poll_output` to `None` performing
//! each output (`perform`), re-arm the timer from `poll_timeout`.

pub(crate) mod expiry;
pub mod outbound;
mod persist;
pub(crate) mod relay;
pub mod retriever;

use std::ops::ControlFlow;

use relay_core::Instant;

use crate::Runtime;
use crate::task::{Task, sleep_until};

/// What woke a machine's drive loop.
pub(crate) enum Wake<C, D> {
    /// A command from the application; `None` once every handle is gone.
    Command(Option<C>),
    /// A completed effect (a request answered, a change persisted).
    Done(D),
    /// The machine's timer fired.
    Timeout,
}

/// Step 1 of a drive loop: waits for the next command, completion or the
/// machine's deadline, whichever comes first.
pub(crate) async fn next_wake<R: Runtime, C, D>(
    runtime: &R,
    commands: &async_channel::Receiver<C>,
    done: &async_channel::Receiver<D>,
    deadline: Option<Instant>,
) -> Wake<C, D> {
    futures_lite::future::race(
        futures_lite::future::race(async { Wake::Command(commands.recv().await.ok()) }, async {
            match done.recv().await {
                Ok(completion) => Wake::Done(completion),
                // The loop holds a sender itself; never closed.
                Err(_) => std::future::pending().await,
            }
        }),
        async {
            sleep_until(runtime, deadline).await;
            Wake::Timeout
        },
    )
    .await
}

/// A node machine's driver (the sender's or the recipient's), as the loop
/// they share sees it.
pub(crate) trait NodeDriver {
    /// What the application's handle sends.
    type Command;
    /// What a finished effect reports.
    type Completion;
    /// One output of the machine.
    type Output;
    /// A state change to persist, with the id it is reported back with.
    type Change;

    /// The machine's [`poll_timeout`](relay_core::outbound::Outbound::poll_timeout).
    fn poll_timeout(&self) -> Option<Instant>;
    /// Step 1: hands the machine what woke the loop; `Break` once every
    /// handle is gone.
    fn feed(
        &mut self,
        now: Instant,
        wake: Wake<Self::Command, Self::Completion>,
    ) -> ControlFlow<()>;
    /// The machine's next output.
    fn poll_output(&mut self) -> Option<Self::Output>;
    /// Step 2, for one output.
    fn perform(&mut self, output: Self::Output);
    /// The state changes drained since the last call, to persist as one
    /// batch.
    fn take_changes(&mut self) -> Vec<Self::Change>;
}

/// Runs a node machine's drive loop until every handle is gone, then waits
/// for the changes already drained to reach the store.
pub(crate) async fn run_node<R: Runtime, D: NodeDriver>(
    rt: &R,
    mut driver: D,
    commands: async_channel::Receiver<D::Command>,
    done: async_channel::Receiver<D::Completion>,
    (persist, persister): (async_channel::Sender<Vec<D::Change>>, Task<()>),
) {
    loop {
        // 1. Feed one event.
        let wake = next_wake(rt, &commands, &done, driver.poll_timeout()).await;
        if driver.feed(Instant::now(), wake).is_break() {
            break;
        }
        // 2. Drain every output.
        while let Some(output) = driver.poll_output() {
            driver.perform(output);
        }
        let changes = driver.take_changes();
        if !changes.is_empty() {
            let _ = persist.try_send(changes);
        }
        // 3. The timer is re-armed from poll_timeout at the top of the loop.
    }
    drop(persist);
    let _ = persister.await;
}
