//! The SQLite store's disk guard, with an injected free-space source: the
//! floor below which inserts are refused (`DiskLow`), the charge of inserts
//! between readings, the database's free pages counting as free, and the
//! reserve file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use relay_store::{
    Ack, AckedKeys, DiskGuard, EntryId, FreeSpace, InsertOutcome, NewEntry, QueueStore, Quota,
    ServerName, SqliteStore, TxnId, UnixMillis,
};

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
const MIB: u64 = 1 << 20;
const RESERVE: u64 = 64 << 10;

/// Free space the test sets.
#[derive(Debug, Default)]
struct FakeFree(AtomicU64);

impl FakeFree {
    fn set(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }
}

impl FreeSpace for FakeFree {
    fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

/// A guarded store in `dir` whose free space is `free`, read before every
/// batch unless `refresh` says otherwise.
fn open(dir: &Path, min_free: u64, refresh: Duration, free: &Arc<FakeFree>) -> SqliteStore {
    let guard = DiskGuard {
        min_free_bytes: min_free,
        reserve_bytes: RESERVE,
        refresh,
        free_space: Arc::clone(free) as Arc<dyn FreeSpace>,
        wal_bytes: relay_store::DEFAULT_WAL_BYTES,
    };
    SqliteStore::open_guarded(dir.join("q.db"), guard).expect("open")
}

fn reserve(dir: &Path) -> PathBuf {
    dir.join("q.db-reserve")
}

fn entry(txn: &str, len: usize) -> NewEntry {
    NewEntry {
        origin: ServerName::parse("o.example").expect("name"),
        destination: ServerName::parse("d.example").expect("name"),
        txn_id: TxnId::parse(txn).expect("txn ID"),
        transaction: vec![b'x'; len],
        received: NOW,
    }
}

fn insert(store: &SqliteStore, txn: &str, len: usize) -> InsertOutcome {
    store
        .insert(entry(txn, len), &Quota::default())
        .expect("insert")
}

fn ack(store: &SqliteStore, id: EntryId) -> bool {
    let dest = ServerName::parse("d.example").expect("name");
    let ack = Ack {
        entry_id: id,
        at: NOW,
        keys: AckedKeys::default(),
    };
    store.ack_and_next(&dest, Some(ack)).expect("ack").acked
}

fn queued(store: &SqliteStore) -> u64 {
    store
        .queued(&ServerName::parse("d.example").expect("name"))
        .expect("queued")
}

#[test]
fn below_the_floor_inserts_are_refused_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = Arc::new(FakeFree::default());
    free.set(100 * MIB);
    let store = open(dir.path(), 10 * MIB, Duration::ZERO, &free);
    assert_eq!(insert(&store, "a", 1000), InsertOutcome::Stored(EntryId(1)));
    assert_eq!(insert(&store, "b", 1000), InsertOutcome::Stored(EntryId(2)));

    free.set(10 * MIB);
    assert_eq!(insert(&store, "c", 1000), InsertOutcome::DiskLow);
    assert_eq!(queued(&store), 2, "nothing of a refused insert is stored");
    // The duplicate check comes first: a retransmission still gets its 200.
    assert_eq!(
        insert(&store, "a", 1000),
        InsertOutcome::Duplicate(EntryId(1))
    );
    // Acknowledgements and reads go on.
    assert!(ack(&store, EntryId(1)));
    assert_eq!(queued(&store), 1);
    assert_eq!(insert(&store, "a", 1000), InsertOutcome::AlreadyDelivered);

    free.set(11 * MIB);
    assert_eq!(insert(&store, "c", 1000), InsertOutcome::Stored(EntryId(3)));
}

#[test]
fn inserts_are_charged_until_the_next_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = Arc::new(FakeFree::default());
    // Room for two inserts of 100 KiB (each charged twice its size plus
    // 16 KiB) above the floor and the reserve, and no new reading for an
    // hour.
    free.set(MIB + RESERVE + 2 * (200 << 10) + 2 * (16 << 10) + (20 << 10));
    let store = open(dir.path(), MIB, Duration::from_secs(3600), &free);
    assert_eq!(
        insert(&store, "a", 100 << 10),
        InsertOutcome::Stored(EntryId(1))
    );
    assert_eq!(
        insert(&store, "b", 100 << 10),
        InsertOutcome::Stored(EntryId(2))
    );
    assert_eq!(insert(&store, "c", 100 << 10), InsertOutcome::DiskLow);
    // A small one still fits.
    assert_eq!(insert(&store, "d", 10), InsertOutcome::Stored(EntryId(3)));
}

#[test]
fn free_pages_inside_the_database_count_as_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = Arc::new(FakeFree::default());
    free.set(100 * MIB);
    let store = open(dir.path(), MIB, Duration::ZERO, &free);
    for i in 0..20 {
        let txn = format!("t{i}");
        assert!(matches!(
            insert(&store, &txn, 100 << 10),
            InsertOutcome::Stored(_)
        ));
    }
    // The filesystem is full, but the database has 2 MB of pages it will
    // reuse once the queue is drained.
    free.set(0);
    assert_eq!(insert(&store, "small", 10), InsertOutcome::DiskLow);
    for id in 1..=20 {
        assert!(ack(&store, EntryId(id)));
    }
    assert_eq!(
        insert(&store, "small", 10),
        InsertOutcome::Stored(EntryId(21))
    );
}

#[test]
fn the_reserve_is_made_at_open_and_needed_for_inserts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = Arc::new(FakeFree::default());
    // No room for the reserve beside the floor.
    free.set(MIB + RESERVE - 1);
    let store = open(dir.path(), MIB, Duration::ZERO, &free);
    assert!(!reserve(dir.path()).exists());
    assert_eq!(insert(&store, "a", 10), InsertOutcome::DiskLow);

    free.set(MIB + RESERVE + MIB);
    assert_eq!(insert(&store, "a", 10), InsertOutcome::Stored(EntryId(1)));
    let made = std::fs::metadata(reserve(dir.path())).expect("the reserve file");
    assert_eq!(made.len(), RESERVE);
    drop(store);

    // A reserve left by an earlier run is taken as it is: there is no
    // room to make one, but room for the insert.
    free.set(RESERVE / 2);
    let store = open(dir.path(), 0, Duration::from_secs(3600), &free);
    assert_eq!(insert(&store, "b", 10), InsertOutcome::Stored(EntryId(2)));
}

#[test]
fn an_unguarded_store_never_says_disk_low() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("q.db")).expect("open");
    assert_eq!(insert(&store, "a", 10), InsertOutcome::Stored(EntryId(1)));
    assert!(!reserve(dir.path()).exists());
}
