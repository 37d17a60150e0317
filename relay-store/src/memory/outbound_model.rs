//! The sender's state in memory: the reference model of
//! [`OutboundStore`].

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use relay_core::outbound::{DestinationRecord, Item, ItemId, ItemKind, OutboundChange, RetryState};
use relay_core::store::StoreError;
use relay_core::{ServerName, TxnId};

use crate::OutboundStore;
use crate::outbound_rules::{check_item_ids, conflicting_item, stored_retry};

/// The sender's state in memory: the reference model the durable backends
/// are checked against. Same semantics, no durability.
///
/// Implementation note: `apply` first checks the whole batch against the
/// state plus what the batch's earlier changes did to each item ID, and
/// only then changes anything, so a refused batch leaves no trace without
/// copying the state.
#[derive(Debug, Default)]
pub struct MemoryOutboundStore {
    inner: Mutex<State>,
}

/// A queued item, by ID.
#[derive(Debug)]
struct Queued {
    destination: ServerName,
    kind: ItemKind,
    json: Vec<u8>,
}

/// What decides whether a repeated enqueue is identical.
type Content<'a> = (&'a ServerName, ItemKind, &'a [u8]);

#[derive(Debug, Default)]
struct State {
    items: BTreeMap<ItemId, Queued>,
    queues: BTreeMap<ServerName, BTreeSet<ItemId>>,
    txns: BTreeMap<ServerName, (TxnId, Vec<ItemId>)>,
    retry: BTreeMap<ServerName, RetryState>,
}

impl MemoryOutboundStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        // Changes are checked before any is made, but a panic in between
        // may still have left the maps half-updated.
        self.inner
            .lock()
            .map_err(|_| StoreError("memory store poisoned by an earlier panic".into()))
    }
}

impl State {
    fn content(&self, id: ItemId) -> Option<Content<'_>> {
        self.items
            .get(&id)
            .map(|q| (&q.destination, q.kind, q.json.as_slice()))
    }

    /// Refuses `changes` if any of them is an error, given what the ones
    /// before it did.
    fn check(&self, changes: &[OutboundChange]) -> Result<(), StoreError> {
        // Item IDs the batch has queued (`Some`) or deleted (`None`) so far.
        let mut batch: BTreeMap<ItemId, Option<Content<'_>>> = BTreeMap::new();
        for change in changes {
            check_item_ids(change)?;
            let current = |batch: &BTreeMap<_, _>, id| {
                batch.get(&id).copied().unwrap_or_else(|| self.content(id))
            };
            match change {
                OutboundChange::Enqueued { destination, item } => {
                    let new = (destination, item.kind, item.json.as_slice());
                    match current(&batch, item.id) {
                        Some(old) if old != new => return Err(conflicting_item(item.id)),
                        Some(_) => {}
                        None => {
                            batch.insert(item.id, Some(new));
                        }
                    }
                }
                OutboundChange::TxnFinished { destination, items } => {
                    for &id in items {
                        if current(&batch, id).is_some_and(|(d, _, _)| d == destination) {
                            batch.insert(id, None);
                        }
                    }
                }
                OutboundChange::TxnStarted { .. } | OutboundChange::Retry { .. } => {}
            }
        }
        Ok(())
    }

    /// Applies a change that [`State::check`] accepted.
    fn apply(&mut self, change: &OutboundChange) {
        match change {
            OutboundChange::Enqueued { destination, item } => {
                if let Entry::Vacant(slot) = self.items.entry(item.id) {
                    slot.insert(Queued {
                        destination: destination.clone(),
                        kind: item.kind,
                        json: item.json.clone(),
                    });
                    self.queues
                        .entry(destination.clone())
                        .or_default()
                        .insert(item.id);
                }
            }
            OutboundChange::TxnStarted {
                destination,
                txn_id,
                items,
            } => {
                self.txns
                    .insert(destination.clone(), (txn_id.clone(), items.clone()));
            }
            OutboundChange::TxnFinished { destination, items } => {
                for id in items {
                    if self
                        .items
                        .get(id)
                        .is_some_and(|q| &q.destination == destination)
                    {
                        self.items.remove(id);
                        if let Some(queue) = self.queues.get_mut(destination) {
                            queue.remove(id);
                            if queue.is_empty() {
                                self.queues.remove(destination);
                            }
                        }
                    }
                }
                self.txns.remove(destination);
            }
            OutboundChange::Retry { destination, state } => {
                if *state == RetryState::default() {
                    self.retry.remove(destination);
                } else {
                    self.retry.insert(destination.clone(), stored_retry(*state));
                }
            }
        }
    }
}

impl OutboundStore for MemoryOutboundStore {
    fn apply(&self, changes: &[OutboundChange]) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state.check(changes)?;
        for change in changes {
            state.apply(change);
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<DestinationRecord>, StoreError> {
        let state = self.lock()?;
        let destinations: BTreeSet<&ServerName> = state
            .queues
            .keys()
            .chain(state.txns.keys())
            .chain(state.retry.keys())
            .collect();
        Ok(destinations
            .into_iter()
            .map(|destination| DestinationRecord {
                destination: destination.clone(),
                items: state.queues.get(destination).map_or_else(Vec::new, |ids| {
                    ids.iter()
                        .filter_map(|id| {
                            state.items.get(id).map(|q| Item {
                                id: *id,
                                kind: q.kind,
                                json: q.json.clone(),
                            })
                        })
                        .collect()
                }),
                txn: state.txns.get(destination).cloned(),
                retry: state.retry.get(destination).copied().unwrap_or_default(),
            })
            .collect())
    }
}
