//! The writer on a full disk: `SQLITE_FULL` (made here by capping the
//! database's pages, as a full filesystem would stop its growth) refuses the
//! batch's inserts, releases the reserve, and lets the rest commit.

use std::sync::Arc;

use super::*;
use crate::sqlite::disk::{DiskGuard, FreeSpace};

const RESERVE: u64 = 64 << 10;

/// A filesystem with room to spare: only `SQLITE_FULL` says otherwise.
#[derive(Debug)]
struct Plenty;

impl FreeSpace for Plenty {
    fn free_bytes(&self, _: &Path) -> std::io::Result<u64> {
        Ok(1 << 40)
    }
}

/// A migrated writer on `dir/q.db` and its disk guard (no floor, a 64 KiB
/// reserve, read once an hour).
fn guarded(dir: &tempfile::TempDir) -> (Connection, Disk) {
    let path = dir.path().join("q.db");
    let mut conn = connect(&path).expect("connect");
    schema::migrate(&mut conn).expect("migrate");
    let guard = DiskGuard {
        min_free_bytes: 0,
        reserve_bytes: RESERVE,
        refresh: Duration::from_secs(3600),
        free_space: Arc::new(Plenty),
        wal_bytes: crate::DEFAULT_WAL_BYTES,
    };
    let disk = Disk::open(&path, guard, &conn);
    (conn, disk)
}

fn big_insert_op(txn: &str) -> (Op, Receiver<Result<InsertOutcome, StoreError>>) {
    let (reply, rx) = mpsc::sync_channel(1);
    let mut entry = new_entry(txn);
    entry.transaction = vec![b'x'; 100 << 10];
    let op = Op::Insert {
        entry,
        quota: Quota::default(),
        reply,
    };
    (op, rx)
}

fn write(conn: &mut Connection, disk: &mut Disk, batch: Vec<Op>) {
    for answer in write_batch(conn, &batch, Some(disk)) {
        answer.send();
    }
}

/// No page beyond those the database has: the next one is `SQLITE_FULL`.
fn cap_pages(conn: &Connection) {
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .expect("page_count");
    let capped: i64 = conn
        .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })
        .expect("max_page_count");
    assert_eq!(capped, pages);
}

#[test]
fn an_insert_that_finds_the_disk_full_is_disk_low_and_an_ack_beside_it_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut conn, mut disk) = guarded(&dir);
    let reserve = dir.path().join("q.db-reserve");
    assert_eq!(std::fs::metadata(&reserve).expect("reserve").len(), RESERVE);
    let (a, ra) = insert_op("a");
    let (b, rb) = insert_op("b");
    write(&mut conn, &mut disk, vec![a, b]);
    assert_eq!(
        ra.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(1)))
    );
    assert_eq!(
        rb.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(2)))
    );

    cap_pages(&conn);
    let (small, rsmall) = insert_op("small");
    let (big, rbig) = big_insert_op("big");
    let (k, rk) = ack_op(1);
    write(&mut conn, &mut disk, vec![small, big, k]);
    // The whole batch was rolled back and its inserts refused, the small
    // one too (it shared the transaction).
    assert_eq!(rsmall.recv().expect("answer"), Ok(InsertOutcome::DiskLow));
    assert_eq!(rbig.recv().expect("answer"), Ok(InsertOutcome::DiskLow));
    // The acknowledgement was written again without them.
    let acked = rk.recv().expect("answer").expect("the ack commits");
    assert!(acked.acked);
    assert_eq!(acked.next.map(|e| e.entry_id), Some(EntryId(2)));
    assert_eq!(count(&conn), 1, "only b is left; nothing half-written");
    assert!(!reserve.exists(), "the reserve was released");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");

    // Until free space is read again, inserts are refused without a try.
    let (c, rc) = insert_op("c");
    write(&mut conn, &mut disk, vec![c]);
    assert_eq!(rc.recv().expect("answer"), Ok(InsertOutcome::DiskLow));
    assert_eq!(count(&conn), 1);

    // Room again: the next reading makes the reserve anew, and inserts go.
    conn.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(()))
        .expect("uncap");
    disk.refresh(&conn, Instant::now() + Duration::from_secs(3601));
    assert_eq!(std::fs::metadata(&reserve).expect("reserve").len(), RESERVE);
    let (c, rc) = insert_op("c");
    write(&mut conn, &mut disk, vec![c]);
    assert_eq!(
        rc.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(3)))
    );
}

#[test]
fn without_a_guard_a_full_disk_still_refuses_inserts_as_disk_low() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = connect(&dir.path().join("q.db")).expect("connect");
    schema::migrate(&mut conn).expect("migrate");
    let (a, ra) = insert_op("a");
    run_and_send(&mut conn, vec![a]);
    assert_eq!(
        ra.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(1)))
    );
    cap_pages(&conn);
    let (big, rbig) = big_insert_op("big");
    let (k, rk) = ack_op(1);
    run_and_send(&mut conn, vec![big, k]);
    assert_eq!(rbig.recv().expect("answer"), Ok(InsertOutcome::DiskLow));
    assert!(rk.recv().expect("answer").expect("the ack commits").acked);
    assert_eq!(count(&conn), 0);
}
