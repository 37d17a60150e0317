//! The conformance suite against every backend in this crate.

use relay_store::{
    Ack, DedupeKey, DedupeStore, DestinationRecord, MemoryDedupeStore, MemoryOutboundStore,
    MemoryStore, OutboundChange, SqliteStore, WindowChange,
};
use relay_store::{
    AckBatch, AckNext, DestinationUsage, InsertOutcome, NewEntry, OutboundStore, QueueStore,
    QueueTotals, Quota, ServerName, StoreError, Take, UnixMillis,
};

mod memory {
    relay_store::conformance_tests!(|| Box::new(super::MemoryStore::new()));
}

mod memory_outbound {
    relay_store::outbound_conformance_tests!(|| Box::new(super::MemoryOutboundStore::new()));
}

mod memory_dedupe {
    relay_store::dedupe_conformance_tests!(|| Box::new(super::MemoryDedupeStore::new()));
}

/// A SQLite store in its own temporary directory, removed after the store
/// (fields drop in order: the writer is joined before the files go).
struct TempSqlite {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl TempSqlite {
    fn new() -> Box<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("relay.db")).expect("open SQLite store");
        Box::new(Self { store, _dir: dir })
    }
}

impl QueueStore for TempSqlite {
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError> {
        self.store.insert(entry, quota)
    }
    fn ack_and_next_unexpired(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) -> Result<AckNext, StoreError> {
        self.store
            .ack_and_next_unexpired(destination, ack, expired_before)
    }
    fn ack_and_next_batch(
        &self,
        destination: &ServerName,
        acks: &[Ack],
        take: Take,
        expired_before: UnixMillis,
    ) -> Result<AckBatch, StoreError> {
        self.store
            .ack_and_next_batch(destination, acks, take, expired_before)
    }
    fn expire(&self, expired_before: UnixMillis, limit: usize) -> Result<QueueTotals, StoreError> {
        self.store.expire(expired_before, limit)
    }
    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError> {
        self.store.queued(destination)
    }
    fn totals(&self) -> Result<QueueTotals, StoreError> {
        self.store.totals()
    }
    fn destinations(&self, limit: usize) -> Result<Vec<DestinationUsage>, StoreError> {
        self.store.destinations(limit)
    }
    fn purge(&self, destination: &ServerName) -> Result<QueueTotals, StoreError> {
        self.store.purge(destination)
    }
}

impl OutboundStore for TempSqlite {
    fn apply(&self, changes: &[OutboundChange]) -> Result<(), StoreError> {
        self.store.apply(changes)
    }
    fn load(&self) -> Result<Vec<DestinationRecord>, StoreError> {
        self.store.load()
    }
}

impl DedupeStore for TempSqlite {
    fn apply_window(&self, changes: &[WindowChange]) -> Result<(), StoreError> {
        self.store.apply_window(changes)
    }
    fn load_window(&self) -> Result<Vec<Vec<DedupeKey>>, StoreError> {
        self.store.load_window()
    }
}

mod sqlite {
    relay_store::conformance_tests!(super::TempSqlite::new);
}

mod sqlite_outbound {
    relay_store::outbound_conformance_tests!(super::TempSqlite::new);
}

mod sqlite_dedupe {
    relay_store::dedupe_conformance_tests!(super::TempSqlite::new);
}

#[test]
fn run_all_passes_on_memory() {
    relay_store::conformance::run_all(&|| Box::new(MemoryStore::new()));
    relay_store::conformance::outbound_store::run_all(&|| Box::new(MemoryOutboundStore::new()));
    relay_store::conformance::dedupe_store::run_all(&|| Box::new(MemoryDedupeStore::new()));
}
