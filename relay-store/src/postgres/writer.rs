//! Group commit: one thread runs the writes of many callers in one
//! transaction.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use relay_core::ServerName;
use relay_core::store::{Ack, NewEntry, Quota, StoreError};

use super::pool::{Conn, Pool};
use super::sql::{self, Inserted};
use crate::shared::{self, Reply};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 256;

/// One write, with where its answer goes.
enum Op {
    Insert {
        entry: NewEntry,
        quota: Quota,
        reply: Reply<Inserted>,
    },
    Ack {
        destination: ServerName,
        acks: Vec<Ack>,
        reply: Reply<u64>,
    },
}

/// What one operation of a batch found.
enum Done {
    Inserted(Inserted),
    /// How many entries the acknowledgements deleted.
    Acked(u64),
}

/// The writer thread and the channel to it; dropping it stops and joins
/// the thread.
pub(super) struct Writer {
    ops: Option<Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on connections of `pool`.
    pub(super) fn start(pool: Arc<Pool>) -> Result<Self, StoreError> {
        let (ops, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relay-store-pg-writer".into())
            .spawn(move || write_loop(&pool, &queue))
            .map_err(|e| StoreError(format!("cannot start the PostgreSQL writer thread: {e}")))?;
        Ok(Self {
            ops: Some(ops),
            thread: Some(thread),
        })
    }

    /// Inserts `entry` in the next batch.
    pub(super) fn insert(&self, entry: NewEntry, quota: Quota) -> Result<Inserted, StoreError> {
        self.call(|reply| Op::Insert {
            entry,
            quota,
            reply,
        })
    }

    /// Deletes the entries `acks` of `destination` in the next batch; how
    /// many it deleted.
    pub(super) fn ack(&self, destination: &ServerName, acks: Vec<Ack>) -> Result<u64, StoreError> {
        self.call(|reply| Op::Ack {
            destination: destination.clone(),
            acks,
            reply,
        })
    }

    fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        shared::call(self.ops.as_ref(), "PostgreSQL", op)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the PostgreSQL writer thread panicked");
        }
    }
}

/// Takes one operation, drains whatever else is waiting (up to
/// [`MAX_BATCH`]), runs them in one transaction and answers each caller
/// after the commit; until every sender is gone.
fn write_loop(pool: &Pool, ops: &Receiver<Op>) {
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        match pool.run("commit a batch of writes", |conn| run_batch(conn, &batch)) {
            Ok(done) => {
                tracing::trace!(size = batch.len(), "committed storage batch");
                for (op, done) in batch.into_iter().zip(done) {
                    op.answer(Ok(done));
                }
            }
            Err(err) => {
                // Nothing of the batch was stored. One bad operation must
                // not fail the others: each runs alone now.
                tracing::warn!(%err, size = batch.len(), "storage batch failed; retrying its operations one by one");
                for op in batch {
                    let done = op.run_alone(pool);
                    op.answer(done);
                }
            }
        }
    }
}

/// Runs `batch` in one transaction that first takes the `total_usage` lock
/// (see [`sql::insert_in`]), and forgets expired acknowledged keys once
/// for the whole batch.
fn run_batch(conn: &mut Conn, batch: &[Op]) -> Result<Vec<Done>, postgres::Error> {
    let Conn { client, stmts } = conn;
    let mut tx = client.transaction()?;
    tx.execute(&stmts.lock_total, &[])?;
    let mut done = Vec::with_capacity(batch.len());
    // The earliest cutoff of the batch's acknowledgements, and how many.
    let mut expired: Option<(i64, usize)> = None;
    for op in batch {
        done.push(match op {
            Op::Insert { entry, quota, .. } => {
                Done::Inserted(sql::insert_in(&mut tx, stmts, entry, quota)?)
            }
            Op::Ack {
                destination, acks, ..
            } => {
                let mut deleted = 0;
                for ack in acks {
                    let Some(cutoff) = sql::ack_in(&mut tx, stmts, destination, ack)? else {
                        continue;
                    };
                    deleted += 1;
                    expired = Some(match expired {
                        Some((earliest, n)) => (earliest.min(cutoff), n + 1),
                        None => (cutoff, 1),
                    });
                }
                Done::Acked(deleted)
            }
        });
    }
    if let Some((cutoff, acks)) = expired {
        sql::forget_expired(&mut tx, stmts, cutoff, acks)?;
    }
    tx.commit()?;
    Ok(done)
}

impl Op {
    /// Runs this operation in a transaction of its own.
    fn run_alone(&self, pool: &Pool) -> Result<Done, StoreError> {
        match self {
            Op::Insert { entry, quota, .. } => pool
                .run("insert entry", |conn| sql::insert(conn, entry, quota))
                .map(Done::Inserted),
            Op::Ack {
                destination, acks, ..
            } => pool
                .run("delete acknowledged entries", |conn| {
                    sql::ack(conn, destination, acks)
                })
                .map(Done::Acked),
        }
    }

    fn answer(self, done: Result<Done, StoreError>) {
        // A caller that stopped waiting needs no answer.
        match (self, done) {
            (Op::Insert { reply, .. }, Ok(Done::Inserted(i))) => drop(reply.send(Ok(i))),
            (Op::Ack { reply, .. }, Ok(Done::Acked(acked))) => drop(reply.send(Ok(acked))),
            (Op::Insert { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Ack { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Insert { reply, .. }, Ok(Done::Acked(_))) => drop(reply.send(Err(mismatch()))),
            (Op::Ack { reply, .. }, Ok(Done::Inserted(_))) => drop(reply.send(Err(mismatch()))),
        }
    }
}

fn mismatch() -> StoreError {
    StoreError("PostgreSQL writer: an answer for another operation (a bug)".into())
}
