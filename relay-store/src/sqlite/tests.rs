//! Batch behaviour of the writer, driven directly so several operations are
//! sure to share one transaction.

use std::sync::mpsc::{self, Receiver};

use super::*;
use relay_core::store::{AckedKeys, QuotaKind};
use relay_core::{EntryId, UnixMillis};

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

fn server(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn new_entry(txn: &str) -> NewEntry {
    NewEntry {
        origin: server("o.example"),
        destination: server("d.example"),
        txn_id: relay_core::TxnId::parse(txn).expect("test txn ID"),
        transaction: b"{}".to_vec(),
        received: NOW,
    }
}

/// Queues `new_entry(txn)` as versions 1 to 4 did: no time, no cost.
fn insert_before_v5(conn: &Connection, txn: &str) {
    conn.execute(
        "INSERT INTO queue (destination, origin, txn_id, body) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params!["d.example", "o.example", txn, b"{}".to_vec()],
    )
    .expect("insert as an older version");
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

fn ack_op(ack: u64) -> (Op, Receiver<Result<AckNext, StoreError>>) {
    let (reply, rx) = mpsc::sync_channel(1);
    let op = Op::AckAndNext {
        destination: server("d.example"),
        ack: Ack {
            entry_id: EntryId(ack),
            at: NOW,
            keys: AckedKeys::default(),
        },
        expired_before: UnixMillis(0),
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
    for answer in write_batch(conn, &batch, None) {
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
    assert_eq!(queue_sql::queued(&conn, &server("d.example")), Ok(2));
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
    assert_eq!(queue_sql::queued(&conn, &server("d.example")), Ok(0));
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
    let next = rk
        .recv()
        .expect("answer")
        .expect("ack")
        .next
        .expect("entry b");
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

fn apply_op(changes: Vec<OutboundChange>) -> (Op, Receiver<Result<(), StoreError>>) {
    let (reply, rx) = mpsc::sync_channel(1);
    (Op::Apply { changes, reply }, rx)
}

fn enqueued(id: u64, json: &[u8]) -> OutboundChange {
    OutboundChange::Enqueued {
        destination: server("d.example"),
        item: relay_core::outbound::Item {
            id: relay_core::outbound::ItemId(id),
            kind: relay_core::outbound::ItemKind::Pdu,
            json: json.to_vec(),
        },
    }
}

fn item_count(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM outbound_item", [], |r| r.get(0))
        .expect("count items")
}

#[test]
fn a_refused_apply_is_rolled_back_alone_in_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    let (a, ra) = apply_op(vec![enqueued(1, b"{}"), enqueued(2, b"{}")]);
    let (i, ri) = insert_op("a");
    // Item 3 would be new, but item 1 conflicts: neither is stored.
    let (c, rc) = apply_op(vec![enqueued(3, b"{}"), enqueued(1, b"[]")]);
    let (b, rb) = apply_op(vec![enqueued(4, b"{}")]);
    run_and_send(&mut conn, vec![a, i, c, b]);
    assert_eq!(ra.recv().expect("answer"), Ok(()));
    assert!(ri.recv().expect("answer").is_ok());
    let err = rc.recv().expect("answer").expect_err("conflict");
    assert!(err.0.contains("item 1"), "{err}");
    assert_eq!(rb.recv().expect("answer"), Ok(()));
    let ids: Vec<i64> = conn
        .prepare("SELECT item_id FROM outbound_item ORDER BY item_id")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("ids");
    assert_eq!(ids, [1, 2, 4]);
    assert_eq!(count(&conn), 1);
}

#[test]
fn an_apply_in_a_failed_commit_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    let (a, ra) = apply_op(vec![enqueued(1, b"{}")]);
    let (p, rp) = insert_op("poison");
    run_and_send(&mut conn, vec![a, p]);
    let err = ra.recv().expect("answer").expect_err("the commit failed");
    assert!(err.0.contains("commit"), "{err}");
    assert!(rp.recv().expect("answer").is_err());
    assert_eq!(item_count(&conn), 0, "nothing of the batch is stored");
}

#[test]
fn a_version_1_database_is_migrated_keeping_its_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    let user_version = |conn: &Connection| -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("user_version")
    };
    // A relay's database as version 1 wrote it: the queue, with a gap left
    // by an acknowledgement.
    {
        let mut v1 = connect(&path).expect("connect");
        schema::migrate_to(&mut v1, 1).expect("migrate to version 1");
        assert_eq!(user_version(&v1), 1);
        for t in ["a", "b", "c"] {
            insert_before_v5(&v1, t);
        }
        v1.execute("DELETE FROM queue WHERE entry_id = 2", [])
            .expect("ack");
        let outbound_tables: i64 = v1
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'outbound%'",
                [],
                |r| r.get(0),
            )
            .expect("tables");
        assert_eq!(outbound_tables, 0, "version 1 has no sender state");
    }

    let store = SqliteStore::open(&path).expect("open migrates");
    assert_eq!(
        user_version(&connect(&path).expect("connect")),
        i64::from(SQLITE_SCHEMA_VERSION)
    );
    let d = server("d.example");
    assert_eq!(store.queued(&d), Ok(2), "the counters survived");
    let first = store
        .ack_and_next(&d, None)
        .expect("next")
        .next
        .expect("entry a");
    assert_eq!((first.entry_id, first.txn_id.as_str()), (EntryId(1), "a"));
    let second = store
        .ack_and_next(
            &d,
            Some(Ack {
                entry_id: first.entry_id,
                at: NOW,
                keys: AckedKeys::default(),
            }),
        )
        .expect("ack")
        .next
        .expect("entry c");
    assert_eq!((second.entry_id, second.txn_id.as_str()), (EntryId(3), "c"));
    assert_eq!(
        store.insert(new_entry("d"), &Quota::default()),
        Ok(InsertOutcome::Stored(EntryId(4))),
        "IDs continue past the old ones"
    );
    store
        .apply(&[enqueued(1, b"{}")])
        .expect("sender state works");
    assert_eq!(store.load().map(|r| r.len()), Ok(1));
    drop(store);

    // A newer version is refused, by both kinds of open.
    connect(&path)
        .expect("connect")
        .pragma_update(None, "user_version", SQLITE_SCHEMA_VERSION + 1)
        .expect("set user_version");
    let err = SqliteStore::open(&path).expect_err("a newer version is refused");
    assert!(err.0.contains("newer"), "{err}");
    let url = format!("sqlite:{}", path.display());
    assert!(crate::open_outbound(&url).is_err());
    assert!(crate::open_dedupe(&url).is_err());
    assert!(crate::open(&url).is_err());
}

fn window_op(changes: Vec<retriever::WindowChange>) -> (Op, Receiver<Result<(), StoreError>>) {
    let (reply, rx) = mpsc::sync_channel(1);
    (Op::ApplyWindow { changes, reply }, rx)
}

fn digest(n: u8) -> DedupeKey {
    DedupeKey::Digest([n; 32])
}

fn seen(keys: Vec<DedupeKey>) -> retriever::WindowChange {
    retriever::WindowChange::Seen(keys)
}

#[test]
fn a_failing_apply_window_is_rolled_back_alone_in_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    conn.execute_batch(
        "CREATE TRIGGER fail_window_hook BEFORE INSERT ON retriever_seen
         WHEN NEW.origin = 'fail.example' BEGIN
             SELECT RAISE(ABORT, 'test hook');
         END;",
    )
    .expect("hook");
    let fail = DedupeKey::Txn(
        server("fail.example"),
        relay_core::TxnId::parse("t").expect("txn"),
    );
    let (a, b, c, d) = (digest(1), digest(2), digest(3), digest(4));
    let (w1, r1) = window_op(vec![seen(vec![a.clone()]), seen(vec![b.clone()])]);
    let (i, ri) = insert_op("a");
    // Forgets `a` and remembers `c` before it fails: neither sticks.
    let (w2, r2) = window_op(vec![
        retriever::WindowChange::Forget(vec![a.clone()]),
        seen(vec![c]),
        seen(vec![fail]),
    ]);
    let (w3, r3) = window_op(vec![seen(vec![d.clone()])]);
    run_and_send(&mut conn, vec![w1, i, w2, w3]);
    assert_eq!(r1.recv().expect("answer"), Ok(()));
    assert!(ri.recv().expect("answer").is_ok());
    let err = r2
        .recv()
        .expect("answer")
        .expect_err("the hooked key fails");
    assert!(err.0.contains("test hook"), "{err}");
    assert_eq!(r3.recv().expect("answer"), Ok(()));
    assert_eq!(dedupe_sql::load(&conn), Ok(vec![vec![a], vec![b], vec![d]]));
    assert_eq!(count(&conn), 1);
}

#[test]
fn an_apply_window_in_a_failed_commit_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    let (w, rw) = window_op(vec![seen(vec![digest(1)])]);
    let (p, rp) = insert_op("poison");
    run_and_send(&mut conn, vec![w, p]);
    let err = rw.recv().expect("answer").expect_err("the commit failed");
    assert!(err.0.contains("commit"), "{err}");
    assert!(rp.recv().expect("answer").is_err());
    assert_eq!(
        dedupe_sql::load(&conn),
        Ok(vec![]),
        "nothing of the batch is stored"
    );
}

#[test]
fn a_version_2_database_is_migrated_keeping_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let table_count = |conn: &Connection, like: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name LIKE ?1",
            [like],
            |r| r.get(0),
        )
        .expect("tables")
    };
    let sender_state = [
        enqueued(1, br#"{"a":1}"#),
        enqueued(2, b"\xff"),
        OutboundChange::TxnStarted {
            destination: server("d.example"),
            txn_id: relay_core::TxnId::parse("txn-1").expect("txn"),
            items: vec![relay_core::outbound::ItemId(1)],
        },
        OutboundChange::Retry {
            destination: server("d.example"),
            state: relay_core::outbound::RetryState {
                direct_failures: 2,
                failed_attempts: 3,
                next_retry: Some(relay_core::UnixMillis(1_700_000_000_000)),
                blacklisted: false,
            },
        },
    ];
    // A node's database as version 2 wrote it: a relay queue and the
    // sender's state.
    let want_records = {
        let mut v2 = connect(&path).expect("connect");
        schema::migrate_to(&mut v2, 2).expect("migrate to version 2");
        for t in ["a", "b"] {
            insert_before_v5(&v2, t);
        }
        outbound_sql::apply(&v2, &sender_state).expect("sender state");
        assert_eq!(
            table_count(&v2, "retriever%"),
            0,
            "version 2 has no de-duplication window"
        );
        outbound_sql::load(&mut v2).expect("load at version 2")
    };
    assert_eq!(want_records.len(), 1);

    let store = SqliteStore::open(&path).expect("open migrates");
    let raw = connect(&path).expect("connect");
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, 5);
    assert_eq!(version, i64::from(SQLITE_SCHEMA_VERSION));
    assert_eq!(table_count(&raw, "retriever_seen"), 1);
    assert_eq!(store.load(), Ok(want_records), "the sender state survived");
    let d = server("d.example");
    assert_eq!(store.queued(&d), Ok(2), "the queue survived");
    let head = store
        .ack_and_next(&d, None)
        .expect("next")
        .next
        .expect("entry a");
    assert_eq!((head.entry_id, head.txn_id.as_str()), (EntryId(1), "a"));
    assert_eq!(store.load_window(), Ok(vec![]));
    let window = vec![vec![digest(1)], vec![digest(2), digest(3)]];
    let changes: Vec<_> = window
        .iter()
        .cloned()
        .map(retriever::WindowChange::Seen)
        .collect();
    store.apply_window(&changes).expect("the window works");
    drop(store);
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.load_window(), Ok(window));
    assert_eq!(store.load().map(|r| r.len()), Ok(1));
}

#[test]
fn a_version_3_database_is_migrated_and_remembers_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    {
        let mut v3 = connect(&path).expect("connect");
        schema::migrate_to(&mut v3, 3).expect("migrate to version 3");
        for t in ["a", "b"] {
            insert_before_v5(&v3, t);
        }
        let acked: i64 = v3
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'acked'",
                [],
                |r| r.get(0),
            )
            .expect("tables");
        assert_eq!(acked, 0, "version 3 remembers no acknowledgements");
    }

    let store = SqliteStore::open(&path).expect("open migrates");
    let version: i64 = connect(&path)
        .expect("connect")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, i64::from(SQLITE_SCHEMA_VERSION));
    let d = server("d.example");
    assert_eq!(store.queued(&d), Ok(2), "the queue survived");
    let ack = Ack {
        entry_id: EntryId(1),
        at: NOW,
        keys: AckedKeys::default(),
    };
    let found = store.ack_and_next(&d, Some(ack)).expect("ack");
    assert!(found.acked);
    assert_eq!(found.next.map(|e| e.entry_id), Some(EntryId(2)));
    assert_eq!(
        store.insert(new_entry("a"), &Quota::default()),
        Ok(InsertOutcome::AlreadyDelivered),
        "an entry of the old queue, acknowledged after the upgrade"
    );
    drop(store);
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        store.insert(new_entry("a"), &Quota::default()),
        Ok(InsertOutcome::AlreadyDelivered),
        "remembered across a restart"
    );
}

#[test]
fn an_ack_and_its_remembered_key_are_one_operation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = writer_with_hooks(&dir);
    conn.execute_batch(
        "CREATE TRIGGER fail_acked_hook BEFORE INSERT ON acked
         WHEN NEW.txn_id = 'a' BEGIN
             SELECT RAISE(ABORT, 'test hook');
         END;",
    )
    .expect("hook");
    let (i, ri) = insert_op("a");
    run_and_send(&mut conn, vec![i]);
    let Ok(InsertOutcome::Stored(id)) = ri.recv().expect("answer") else {
        panic!("a not stored");
    };
    let (a, ra) = ack_op(id.0);
    run_and_send(&mut conn, vec![a]);
    let err = ra.recv().expect("answer").expect_err("remembering fails");
    assert!(err.0.contains("test hook"), "{err}");
    assert_eq!(count(&conn), 1, "the entry was not deleted either");
}

mod disk;

#[test]
fn a_version_4_database_is_migrated_with_times_and_costs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    {
        let mut v4 = connect(&path).expect("connect");
        schema::migrate_to(&mut v4, 4).expect("migrate to version 4");
        for t in ["a", "b", "c"] {
            insert_before_v5(&v4, t);
        }
        v4.execute(
            "INSERT INTO acked (destination, origin, txn_id, acked_at) \
             VALUES ('d.example', 'o.example', 'z', 1)",
            [],
        )
        .expect("a remembered key");
    }
    let before = UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64,
    );
    let store = SqliteStore::open(&path).expect("open migrates");
    let one = relay_core::store::entry_cost("o.example", "d.example", "a", 2);
    assert_eq!(
        store.totals(),
        Ok(QueueTotals {
            entries: 3,
            bytes: 3 * one
        }),
        "the counters are rebuilt as costs"
    );
    let list = store.destinations(10).expect("destinations");
    let oldest = list[0].oldest_received.expect("an oldest entry");
    assert!(
        oldest.0 + 60_000 >= before.0 && oldest.0 <= before.0 + 60_000,
        "entries queued before count as received at migration ({oldest:?}, {before:?})"
    );
    // The origin's share is counted for the entries already queued.
    let share = Quota {
        destination_entries: 6,
        origin_share_percent: 50,
        ..Quota::default()
    };
    assert_eq!(
        store.insert(new_entry("d"), &share),
        Ok(InsertOutcome::QuotaExceeded(QuotaKind::OriginShare))
    );
    let conn = connect(&path).expect("connect");
    let acked_bytes: i64 = conn
        .query_row("SELECT acked_bytes FROM total_usage", [], |r| r.get(0))
        .expect("acked bytes");
    assert_eq!(
        acked_bytes as u64,
        relay_core::store::acked_key_cost("o.example", "d.example", "z")
    );
}
