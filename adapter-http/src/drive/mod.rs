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

pub mod outbound;
mod persist;
pub(crate) mod relay;
pub mod retriever;

use relay_core::Instant;

use crate::Runtime;
use crate::task::sleep_until;

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
