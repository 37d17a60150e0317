//! The de-duplication window: the keys of the newest transactions handed
//! over, oldest first, bounded in count.

use std::collections::{HashMap, VecDeque};

use super::DedupeKey;

/// A FIFO of transactions (each its keys) with an index over all keys.
///
/// Implementation note: the index counts how many remembered transactions
/// hold a key, so a key shared by two of them (possible only in a restored
/// window) stays known until both are gone.
#[derive(Debug)]
pub(super) struct Window {
    capacity: usize,
    order: VecDeque<Vec<DedupeKey>>,
    index: HashMap<DedupeKey, u32>,
}

impl Window {
    /// An empty window keeping at most `capacity` transactions.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            index: HashMap::new(),
        }
    }

    /// Whether any of `keys` is remembered.
    pub(super) fn contains_any(&self, keys: &[DedupeKey]) -> bool {
        keys.iter().any(|k| self.index.contains_key(k))
    }

    /// Remembers one transaction's keys as the newest; returns the keys of
    /// the transactions that fell out, oldest first. Empty key lists are
    /// not remembered.
    pub(super) fn insert(&mut self, keys: Vec<DedupeKey>) -> Vec<Vec<DedupeKey>> {
        if keys.is_empty() {
            return Vec::new();
        }
        for key in &keys {
            *self.index.entry(key.clone()).or_insert(0) += 1;
        }
        self.order.push_back(keys);
        let mut evicted = Vec::new();
        while self.order.len() > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            for key in &old {
                if let Some(count) = self.index.get_mut(key) {
                    *count -= 1;
                    if *count == 0 {
                        self.index.remove(key);
                    }
                }
            }
            evicted.push(old);
        }
        evicted
    }

    /// How many transactions are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// How many distinct keys are indexed.
    #[cfg(test)]
    pub(super) fn key_count(&self) -> usize {
        self.index.len()
    }
}
