//! Applying a machine's state changes to storage, one batch at a time, in
//! the order the machine gave them.

use std::sync::Arc;

use relay_core::store::StoreError;
use tokio::sync::mpsc;

/// Applies a batch of changes durably (on a blocking thread).
pub(crate) type Apply<C> = Arc<dyn Fn(&[C]) -> Result<(), StoreError> + Send + Sync>;

/// Starts the task that applies batches of `(op, change)` in order and
/// reports each op's result through `done`. Without `apply`, every change
/// succeeds at once (the state lives as long as the process).
pub(crate) fn spawn<Op, C>(
    apply: Option<Apply<C>>,
    done: impl Fn(Vec<(Op, Result<(), StoreError>)>) + Send + 'static,
) -> (
    mpsc::UnboundedSender<Vec<(Op, C)>>,
    tokio::task::JoinHandle<()>,
)
where
    Op: Send + 'static,
    C: Send + 'static,
{
    let (tx, mut batches) = mpsc::unbounded_channel::<Vec<(Op, C)>>();
    let task = tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            let (ops, changes): (Vec<Op>, Vec<C>) = batch.into_iter().unzip();
            let result = match &apply {
                Some(apply) => {
                    let apply = apply.clone();
                    tokio::task::spawn_blocking(move || apply(&changes))
                        .await
                        .unwrap_or_else(|e| {
                            Err(StoreError(format!("persistence task failed: {e}")))
                        })
                }
                None => Ok(()),
            };
            done(ops.into_iter().map(|op| (op, result.clone())).collect());
        }
    });
    (tx, task)
}
