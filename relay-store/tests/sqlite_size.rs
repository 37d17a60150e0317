//! The byte quota bounds the SQLite files: entries are counted as what
//! they cost the store, so a relay filled to `total_bytes` by the worst
//! entries (longest txn IDs, each for a destination of its own) keeps its
//! database, WAL and shared-memory files within 1.5 times that plus 2 MiB.

use relay_store::{DiskGuard, QuotaKind, UnixMillis, wal_bytes_for};
use relay_store::{InsertOutcome, NewEntry, QueueStore, Quota, ServerName, SqliteStore, TxnId};

const TOTAL_BYTES: u64 = 1_000_000;

fn files_size(db: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(&name).map_or(0, |m| m.len())
        })
        .sum()
}

#[test]
fn a_full_relay_keeps_its_files_within_one_and_a_half_times_the_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    // As `serve` opens it: the WAL bounded for this quota.
    let guard = DiskGuard::new(0).with_wal_bytes(wal_bytes_for(TOTAL_BYTES));
    let store = SqliteStore::open_guarded(&path, guard).expect("open");
    let quota = Quota {
        total_bytes: TOTAL_BYTES,
        ..Quota::default()
    };
    let origin = ServerName::parse("origin.example").expect("name");
    let body = br#"{"origin":"origin.example","origin_server_ts":1700000000000,"pdus":[{"type":"m.room.message","content":{"body":"x"}}],"edus":[]}"#;
    let (mut stored, mut refused) = (0, 0);
    for i in 0..3_000 {
        let txn_id = format!("{i:0>255}");
        let entry = NewEntry {
            origin: origin.clone(),
            destination: ServerName::parse(&format!("d{i}.example")).expect("name"),
            txn_id: TxnId::parse(&txn_id).expect("txn ID"),
            transaction: body.to_vec(),
            received: UnixMillis(1_700_000_000_000),
        };
        match store.insert(entry, &quota).expect("insert") {
            InsertOutcome::Stored(_) => stored += 1,
            InsertOutcome::QuotaExceeded(QuotaKind::Total) => refused += 1,
            other => panic!("entry {i}: {other:?}"),
        }
    }
    let size = files_size(&path);
    let bound = TOTAL_BYTES * 3 / 2 + (2 << 20);
    eprintln!(
        "{stored} stored, {refused} refused; files {size} bytes (bound {bound}); counted {}",
        store.totals().expect("totals").bytes
    );
    assert!(refused > 0, "the quota never refused");
    assert!(
        stored >= 500,
        "only {stored} entries fit in {TOTAL_BYTES} bytes"
    );
    assert!(size <= bound, "files {size} bytes, past {bound}");
}
