//! Batch behaviour of the writer, driven directly so several operations are
//! sure to share one transaction.

use std::sync::mpsc::{self, Receiver};

use super::*;

fn server(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn new_entry(txn: &str) -> NewEntry {
    NewEntry {
        origin: server("o.example"),
        destination: server("d.example"),
        txn_id: relay_core::TxnId::parse(txn).expect("test txn ID"),
        transaction: b"{}".to_vec(),
    }
}

fn insert_op(txn: &str) -> (Op, Receiver<Result<InsertOutcome, StoreError>>) {
    let (reply, rx) = mpsc::sync_channel(1);
    let op = Op::Insert {
        entry: new_entry(txn),
        quota: Quota::default(),
        reply,
    };
    (op, rx)
}

fn ack_op(ack: u64) -> (Op, Receiver<Result<Option<QueuedEntry>, StoreError>>) {
    let (reply, rx) = mpsc::sync_channel(1);
    let op = Op::AckAndNext {
        destination: server("d.example"),
        ack: EntryId(ack),
        reply,
    };
    (op, rx)
}

/// A migrated write connection on a fresh file, plus hooks: inserting txn
/// `fail` aborts that statement; inserting txn `poison` makes COMMIT fail
/// (a deferred foreign key that is never satisfied).
fn writer_with_hooks(dir: &tempfile::TempDir) -> Connection {
    let mut conn = connect(&dir.path().join("q.db")).expect("connect");
    schema::migrate(&mut conn).expect("migrate");
    conn.execute_batch(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
         CREATE TRIGGER fail_hook BEFORE INSERT ON queue WHEN NEW.txn_id = 'fail' BEGIN
             SELECT RAISE(ABORT, 'test hook');
         END;
         CREATE TRIGGER poison_hook AFTER INSERT ON queue WHEN NEW.txn_id = 'poison' BEGIN
             INSERT INTO child (p) VALUES (42);
         END;",
    )
    .expect("hooks");
    conn
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
        .expect("count")
}

fn run_and_send(conn: &mut Connection, batch: Vec<Op>) {
    for answer in run_batch(conn, batch) {
        answer.send();
    }
}

#[test]
fn failing_op_is_rolled_back_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    let (a, ra) = insert_op("a");
    let (f, rf) = insert_op("fail");
    let (b, rb) = insert_op("b");
    run_and_send(&mut conn, vec![a, f, b]);
    assert_eq!(
        ra.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(1)))
    );
    let err = rf
        .recv()
        .expect("answer")
        .expect_err("the hooked insert fails");
    assert!(err.0.contains("test hook"), "{err}");
    assert_eq!(
        rb.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(2)))
    );
    assert_eq!(count(&conn), 2);
    assert_eq!(sql::queued(&conn, &server("d.example")), Ok(2));
}

#[test]
fn commit_failure_fails_the_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    let (a, ra) = insert_op("a");
    let (p, rp) = insert_op("poison");
    let (k, rk) = ack_op(1);
    run_and_send(&mut conn, vec![a, p, k]);
    for r in [
        ra.recv().map(|r| r.map(|_| ())),
        rp.recv().map(|r| r.map(|_| ())),
        rk.recv().map(|r| r.map(|_| ())),
    ] {
        let err = r
            .expect("answer")
            .expect_err("every op of a failed commit fails");
        assert!(err.0.contains("commit"), "{err}");
    }
    assert_eq!(count(&conn), 0, "nothing of the batch is stored");
    assert_eq!(sql::queued(&conn, &server("d.example")), Ok(0));
    assert!(conn.is_autocommit(), "the failed transaction is closed");

    // The writer carries on with the next batch; the rolled-back ID is reused
    // because it was never committed.
    let (a, ra) = insert_op("a");
    run_and_send(&mut conn, vec![a]);
    assert_eq!(
        ra.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(1)))
    );
}

#[test]
fn ops_in_a_batch_see_earlier_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    let (a, ra) = insert_op("a");
    let (dup, rdup) = insert_op("a");
    let (b, rb) = insert_op("b");
    let (k, rk) = ack_op(1);
    run_and_send(&mut conn, vec![a, dup, b, k]);
    assert_eq!(
        ra.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(1)))
    );
    assert_eq!(
        rdup.recv().expect("answer"),
        Ok(InsertOutcome::Duplicate(EntryId(1)))
    );
    assert_eq!(
        rb.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(2)))
    );
    let next = rk.recv().expect("answer").expect("ack").expect("entry b");
    assert_eq!(next.entry_id, EntryId(2));
    assert_eq!(count(&conn), 1);
}

#[test]
fn undecodable_head_fails_its_op_and_rolls_back_its_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    conn.execute_batch(
        "INSERT INTO queue (destination, origin, txn_id, body) VALUES ('d.example', 'o.example', 'ok', X'7B7D');
         INSERT INTO queue (destination, origin, txn_id, body) VALUES ('d.example', 'not a server!', 't', X'7B7D');",
    )
    .expect("rows");
    let (k, rk) = ack_op(1);
    let (a, ra) = insert_op("a");
    run_and_send(&mut conn, vec![k, a]);
    let err = rk.recv().expect("answer").expect_err("bad origin");
    assert!(err.0.contains("invalid origin"), "{err}");
    assert_eq!(
        ra.recv().expect("answer"),
        Ok(InsertOutcome::Stored(EntryId(3)))
    );
    assert_eq!(count(&conn), 3, "the ack of the failed op was rolled back");
}
