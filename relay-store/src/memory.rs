//! The in-memory reference models.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use relay_core::store::{Ack, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError};
use relay_core::{EntryId, ServerName, TxnId, UnixMillis};

use crate::quota_rules::{Usage, Usages, cost_of, refused_by};
use crate::{AckBatch, AckNext, DestinationUsage, QueueStore, QueueTotals, Take};

mod dedupe_model;
mod outbound_model;

pub use dedupe_model::MemoryDedupeStore;
pub use outbound_model::MemoryOutboundStore;

/// The queue in memory: the reference model the durable backends are
/// checked against. Same semantics, no durability.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

/// (origin, destination, txn ID): what makes an insert a duplicate.
type Key = (ServerName, ServerName, TxnId);

#[derive(Debug, Default)]
struct Inner {
    last_id: u64,
    entries: BTreeMap<EntryId, NewEntry>,
    keys: BTreeMap<Key, EntryId>,
    queues: BTreeMap<ServerName, BTreeSet<EntryId>>,
    by_received: BTreeSet<(UnixMillis, EntryId)>,
    destination_usage: BTreeMap<ServerName, Usage>,
    pair_usage: BTreeMap<(ServerName, ServerName), Usage>,
    origin_usage: BTreeMap<ServerName, Usage>,
    total: Usage,
    acked: Acked,
}

impl Inner {
    /// Removes entry `id` of `destination` with its key, queue place and
    /// usage; its key and length, or `None` if it is not that destination's.
    fn remove(&mut self, destination: &ServerName, id: EntryId) -> Option<(Key, u64)> {
        if self.entries.get(&id)?.destination != *destination {
            return None;
        }
        let entry = self.entries.remove(&id)?;
        let len = cost_of(&entry);
        self.by_received.remove(&(entry.received, id));
        let key = (entry.origin, entry.destination, entry.txn_id);
        self.keys.remove(&key);
        if let Some(queue) = self.queues.get_mut(destination) {
            queue.remove(&id);
            if queue.is_empty() {
                self.queues.remove(destination);
            }
        }
        sub(&mut self.destination_usage, &key.1, len);
        sub(&mut self.pair_usage, &(key.1.clone(), key.0.clone()), len);
        sub(&mut self.origin_usage, &key.0, len);
        self.total.entries = self.total.entries.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(len);
        Some((key, len))
    }
}

/// The keys of acknowledged entries, each with when it was acknowledged
/// and the sequence number of its recording.
#[derive(Debug, Default)]
struct Acked {
    last_seq: u64,
    keys: BTreeMap<Key, (UnixMillis, u64)>,
    by_seq: BTreeMap<u64, Key>,
    by_time: BTreeSet<(UnixMillis, u64)>,
    bytes: u64,
}

impl Acked {
    /// Whether `key` was acknowledged within `retention_ms` before `now`.
    fn remembers(&self, key: &Key, now: UnixMillis, retention_ms: u64) -> bool {
        self.keys
            .get(key)
            .is_some_and(|(at, _)| at.saturating_add_ms(retention_ms) > now)
    }

    fn forget(&mut self, seq: u64) {
        if let Some(key) = self.by_seq.remove(&seq)
            && let Some((at, _)) = self.keys.remove(&key)
        {
            self.by_time.remove(&(at, seq));
            self.bytes = self.bytes.saturating_sub(key_cost(&key));
        }
    }

    /// Records `key` as acknowledged by `ack` (if `ack.keys` remembers
    /// anything), then forgets what is past `ack.keys`' bounds.
    fn record(&mut self, key: Key, ack: &Ack) {
        let cutoff = UnixMillis(ack.at.0.saturating_sub(ack.keys.retention_ms));
        while let Some(&(at, seq)) = self.by_time.first()
            && at <= cutoff
        {
            self.forget(seq);
        }
        if !ack.keys.enabled() {
            return;
        }
        if let Some(&(_, seq)) = self.keys.get(&key) {
            self.forget(seq);
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        self.bytes += key_cost(&key);
        self.keys.insert(key.clone(), (ack.at, seq));
        self.by_seq.insert(seq, key);
        self.by_time.insert((ack.at, seq));
        // As the SQL backends do: forget recordings `max` or more before
        // this one, then the oldest while the bytes are past their bound.
        let oldest_kept = seq.saturating_sub(ack.keys.max);
        while let Some((&first, _)) = self.by_seq.first_key_value()
            && (first <= oldest_kept || self.bytes > ack.keys.max_bytes)
        {
            self.forget(first);
        }
    }
}

fn key_cost((origin, destination, txn_id): &Key) -> u64 {
    relay_core::store::acked_key_cost(origin.as_str(), destination.as_str(), txn_id.as_str())
}

impl Inner {
    /// The oldest `n` entries of `destination` received at or after
    /// `expired_before`.
    fn oldest(
        &self,
        destination: &ServerName,
        expired_before: UnixMillis,
        n: usize,
    ) -> Vec<QueuedEntry> {
        let Some(queue) = self.queues.get(destination) else {
            return Vec::new();
        };
        queue
            .iter()
            .filter_map(|id| self.entries.get(id).map(|e| (*id, e)))
            .filter(|(_, e)| e.received >= expired_before)
            .take(n)
            .map(|(entry_id, e)| QueuedEntry {
                entry_id,
                origin: e.origin.clone(),
                txn_id: e.txn_id.clone(),
                transaction: e.transaction.clone(),
            })
            .collect()
    }

    /// Deletes `ack`'s entry if it is `destination`'s, remembering its key;
    /// whether it did.
    fn acknowledge(&mut self, destination: &ServerName, ack: &Ack) -> bool {
        match self.remove(destination, ack.entry_id) {
            Some((key, _)) => {
                self.acked.record(key, ack);
                true
            }
            None => false,
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        // A panic while holding the lock may have left the maps half-updated.
        self.inner
            .lock()
            .map_err(|_| StoreError("memory store poisoned by an earlier panic".into()))
    }
}

fn add<K: Ord + Clone>(map: &mut BTreeMap<K, Usage>, name: &K, len: u64) {
    let u = map.entry(name.clone()).or_default();
    u.entries += 1;
    u.bytes += len;
}

fn sub<K: Ord>(map: &mut BTreeMap<K, Usage>, name: &K, len: u64) {
    if let Some(u) = map.get_mut(name) {
        u.entries = u.entries.saturating_sub(1);
        u.bytes = u.bytes.saturating_sub(len);
        if u.entries == 0 {
            map.remove(name);
        }
    }
}

fn get<K: Ord>(map: &BTreeMap<K, Usage>, key: &K) -> Usage {
    map.get(key).copied().unwrap_or_default()
}

impl QueueStore for MemoryStore {
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError> {
        let mut inner = self.lock()?;
        let key = (
            entry.origin.clone(),
            entry.destination.clone(),
            entry.txn_id.clone(),
        );
        if let Some(&id) = inner.keys.get(&key) {
            return Ok(InsertOutcome::Duplicate(id));
        }
        if quota.acked.enabled()
            && inner
                .acked
                .remembers(&key, entry.received, quota.acked.retention_ms)
        {
            return Ok(InsertOutcome::AlreadyDelivered);
        }
        let len = cost_of(&entry);
        let pair = (entry.destination.clone(), entry.origin.clone());
        let usages = Usages {
            destination: get(&inner.destination_usage, &entry.destination),
            pair: get(&inner.pair_usage, &pair),
            origin: get(&inner.origin_usage, &entry.origin),
            total: inner.total,
        };
        if let Some(kind) = refused_by(quota, &usages, len) {
            return Ok(InsertOutcome::QuotaExceeded(kind));
        }
        let id = inner
            .last_id
            .checked_add(1)
            .ok_or_else(|| StoreError("entry IDs exhausted".into()))?;
        inner.last_id = id;
        let id = EntryId(id);
        add(&mut inner.destination_usage, &entry.destination, len);
        add(&mut inner.pair_usage, &pair, len);
        add(&mut inner.origin_usage, &entry.origin, len);
        inner.by_received.insert((entry.received, id));
        inner.total.entries += 1;
        inner.total.bytes += len;
        inner.keys.insert(key, id);
        inner
            .queues
            .entry(entry.destination.clone())
            .or_default()
            .insert(id);
        inner.entries.insert(id, entry);
        Ok(InsertOutcome::Stored(id))
    }

    fn ack_and_next_unexpired(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) -> Result<AckNext, StoreError> {
        let mut inner = self.lock()?;
        let acked = ack.is_some_and(|ack| inner.acknowledge(destination, &ack));
        let next = inner.oldest(destination, expired_before, 1).pop();
        Ok(AckNext { acked, next })
    }

    fn ack_and_next_batch(
        &self,
        destination: &ServerName,
        acks: &[Ack],
        take: Take,
        expired_before: UnixMillis,
    ) -> Result<AckBatch, StoreError> {
        let mut inner = self.lock()?;
        let acked = acks
            .iter()
            .filter(|ack| inner.acknowledge(destination, ack))
            .count() as u64;
        let rows = inner.oldest(destination, expired_before, take.entries.saturating_add(1));
        let (entries, more) = take.cut(rows);
        Ok(AckBatch {
            acked,
            entries,
            more,
        })
    }

    fn expire(&self, expired_before: UnixMillis, limit: usize) -> Result<QueueTotals, StoreError> {
        let mut inner = self.lock()?;
        let old: Vec<(UnixMillis, EntryId)> = inner
            .by_received
            .iter()
            .take_while(|(received, _)| *received < expired_before)
            .take(limit)
            .copied()
            .collect();
        let mut expired = QueueTotals::default();
        for (_, id) in old {
            let Some(destination) = inner.entries.get(&id).map(|e| e.destination.clone()) else {
                continue;
            };
            if let Some((_, len)) = inner.remove(&destination, id) {
                expired.entries += 1;
                expired.bytes += len;
            }
        }
        Ok(expired)
    }

    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .destination_usage
            .get(destination)
            .map_or(0, |u| u.entries))
    }

    fn totals(&self) -> Result<QueueTotals, StoreError> {
        let total = self.lock()?.total;
        Ok(QueueTotals {
            entries: total.entries,
            bytes: total.bytes,
        })
    }

    fn destinations(&self, limit: usize) -> Result<Vec<DestinationUsage>, StoreError> {
        let inner = self.lock()?;
        let mut all: Vec<DestinationUsage> = inner
            .destination_usage
            .iter()
            .filter(|(_, u)| u.entries > 0)
            .map(|(destination, u)| DestinationUsage {
                destination: destination.clone(),
                entries: u.entries,
                bytes: u.bytes,
                oldest_received: inner
                    .queues
                    .get(destination)
                    .and_then(|q| q.first())
                    .and_then(|id| inner.entries.get(id))
                    .map(|e| e.received),
            })
            .collect();
        all.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| a.destination.cmp(&b.destination))
        });
        all.truncate(limit);
        Ok(all)
    }

    fn purge(&self, destination: &ServerName) -> Result<QueueTotals, StoreError> {
        let mut inner = self.lock()?;
        let inner = &mut *inner;
        let mut purged = QueueTotals::default();
        let ids: Vec<EntryId> = inner
            .queues
            .get(destination)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            if let Some((_, len)) = inner.remove(destination, id) {
                purged.entries += 1;
                purged.bytes += len;
            }
        }
        Ok(purged)
    }
}
