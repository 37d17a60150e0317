//! Applying a machine's state changes to storage, one batch at a time, in
//! the order the machine gave them.

use std::sync::Arc;

use relay_core::store::StoreError;

use crate::Runtime;
use crate::task::{Task, spawn_task};
use crate::threads::ThreadPool;

/// Applies a batch of changes durably (on the persister's own thread).
pub(crate) type Apply<C> = Arc<dyn Fn(&[C]) -> Result<(), StoreError> + Send + Sync>;

/// Starts the task that applies batches of `(op, change)` in order and
/// reports each op's result through `done`. The task ends when the sender
/// is dropped, after the batches already sent.
///
/// Implementation note: batches are applied one at a time, so one thread
/// of its own is all the persister needs; it never waits for the
/// runtime's blocking pool.
pub(crate) fn spawn<R, Op, C>(
    runtime: &R,
    apply: Apply<C>,
    done: impl Fn(Vec<(Op, Result<(), StoreError>)>) + Send + 'static,
) -> (async_channel::Sender<Vec<(Op, C)>>, Task<()>)
where
    R: Runtime,
    Op: Send + 'static,
    C: Send + 'static,
{
    let (tx, batches) = async_channel::unbounded::<Vec<(Op, C)>>();
    let thread = ThreadPool::new("relay-persist", 1, 1);
    let task = spawn_task(runtime, async move {
        while let Ok(batch) = batches.recv().await {
            let (ops, changes): (Vec<Op>, Vec<C>) = batch.into_iter().unzip();
            let apply = apply.clone();
            let result = thread
                .run(move || apply(&changes))
                .await
                .unwrap_or_else(|e| Err(StoreError(format!("persistence task failed: {e}"))));
            done(ops.into_iter().map(|op| (op, result.clone())).collect());
        }
    });
    (tx, task)
}
