//! The recipient's de-duplication window in memory: the reference model of
//! [`DedupeStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use relay_core::retriever::{DedupeKey, WindowChange};
use relay_core::store::StoreError;

use crate::DedupeStore;

/// The de-duplication window in memory: the reference model the durable
/// backends are checked against. Same semantics, no durability.
///
/// Implementation note: no change can be refused, so `apply_window`
/// applies as it goes and is still all or nothing.
#[derive(Debug, Default)]
pub struct MemoryDedupeStore {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// The ID the next group gets; IDs increase in `Seen` order.
    next_group: u64,
    /// The keys of each group, by group ID; no group is empty.
    groups: BTreeMap<u64, Vec<DedupeKey>>,
    /// The group each remembered key is in.
    group_of: HashMap<DedupeKey, u64>,
}

impl MemoryDedupeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Window>, StoreError> {
        // A panic while holding the lock may have left the maps half-updated.
        self.inner
            .lock()
            .map_err(|_| StoreError("memory store poisoned by an earlier panic".into()))
    }
}

impl Window {
    fn apply(&mut self, change: &WindowChange) {
        match change {
            WindowChange::Seen(keys) if keys.is_empty() => {}
            WindowChange::Seen(keys) => {
                let group = self.next_group;
                self.next_group += 1;
                for key in keys {
                    self.forget(key);
                    self.group_of.insert(key.clone(), group);
                    self.groups.entry(group).or_default().push(key.clone());
                }
            }
            WindowChange::Forget(keys) => keys.iter().for_each(|key| self.forget(key)),
        }
    }

    /// Removes `key` from its group, and the group if that was its last key.
    fn forget(&mut self, key: &DedupeKey) {
        let Some(group) = self.group_of.remove(key) else {
            return;
        };
        if let Some(keys) = self.groups.get_mut(&group) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.groups.remove(&group);
            }
        }
    }
}

impl DedupeStore for MemoryDedupeStore {
    fn apply_window(&self, changes: &[WindowChange]) -> Result<(), StoreError> {
        let mut window = self.lock()?;
        for change in changes {
            window.apply(change);
        }
        Ok(())
    }

    fn load_window(&self) -> Result<Vec<Vec<DedupeKey>>, StoreError> {
        Ok(self.lock()?.groups.values().cloned().collect())
    }
}
