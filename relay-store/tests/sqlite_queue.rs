//! What only the SQLite backend promises: durability across reopen, schema
//! migrations, robustness against bad rows, and URL parsing.

use std::path::Path;

use relay_store::{
    Ack, AckNext, AckedKeys, EntryId, InsertOutcome, NewEntry, QueueStore, Quota, QuotaKind,
    SQLITE_SCHEMA_VERSION, ServerName, SqliteStore, TxnId, UnixMillis,
};
use rusqlite::Connection;

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

/// An acknowledgement of `id` at [`NOW`], remembering keys by default.
fn ack(id: EntryId) -> Ack {
    Ack {
        entry_id: id,
        at: NOW,
        keys: AckedKeys::default(),
    }
}

fn server(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn entry(origin: &str, destination: &str, txn: &str, body: &[u8]) -> NewEntry {
    NewEntry {
        origin: server(origin),
        destination: server(destination),
        txn_id: TxnId::parse(txn).expect("test txn ID"),
        transaction: body.to_vec(),
        received: NOW,
    }
}

fn stored(store: &dyn QueueStore, e: NewEntry) -> EntryId {
    match store.insert(e, &Quota::default()).expect("insert") {
        InsertOutcome::Stored(id) => id,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("raw open")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

/// Checks the trigger-kept counters against the rows themselves.
fn assert_counters_match(path: &Path) {
    let conn = Connection::open(path).expect("raw open");
    let diff: i64 = conn
        .query_row(
            "SELECT
               (SELECT COUNT(*) FROM (
                  SELECT destination, COUNT(*), SUM(cost) FROM queue GROUP BY destination
                  EXCEPT SELECT destination, entries, bytes FROM destination_usage))
             + (SELECT COUNT(*) FROM (
                  SELECT destination, entries, bytes FROM destination_usage
                  EXCEPT SELECT destination, COUNT(*), SUM(cost) FROM queue GROUP BY destination))
             + (SELECT COUNT(*) FROM (
                  SELECT origin, COUNT(*), SUM(cost) FROM queue GROUP BY origin
                  EXCEPT SELECT origin, entries, bytes FROM origin_usage))
             + (SELECT COUNT(*) FROM (
                  SELECT origin, entries, bytes FROM origin_usage
                  EXCEPT SELECT origin, COUNT(*), SUM(cost) FROM queue GROUP BY origin))
             + (SELECT COUNT(*) FROM (
                  SELECT destination, origin, COUNT(*), SUM(cost) FROM queue
                  GROUP BY destination, origin
                  EXCEPT SELECT destination, origin, entries, bytes FROM pair_usage))
             + (SELECT COUNT(*) FROM (
                  SELECT destination, origin, entries, bytes FROM pair_usage
                  EXCEPT SELECT destination, origin, COUNT(*), SUM(cost) FROM queue
                  GROUP BY destination, origin))
             + (SELECT COUNT(*) FROM total_usage
                  WHERE entries != (SELECT COUNT(*) FROM queue)
                     OR bytes != (SELECT COALESCE(SUM(cost), 0) FROM queue))",
            [],
            |r| r.get(0),
        )
        .expect("compare counters");
    assert_eq!(diff, 0, "usage counters differ from the queue's contents");
}

#[test]
fn reopen_keeps_entries_in_order_and_ids_keep_increasing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    let mut want = Vec::new();
    let top;
    {
        let store = SqliteStore::open(&path).expect("open");
        for i in 0..30 {
            let e = entry(
                "o.example",
                &format!("d{}.example", i % 2),
                &format!("t{i}"),
                format!("{{\"i\":{i}}}").as_bytes(),
            );
            want.push((stored(&store, e.clone()), e));
        }
        // Acknowledge the newest entry, so the top ID is only in the sequence.
        let (last, _) = want.pop().expect("entries");
        store
            .ack_and_next(&server("d1.example"), Some(ack(last)))
            .expect("ack");
        top = last;
    }
    {
        let store = SqliteStore::open(&path).expect("reopen");
        for d in ["d0.example", "d1.example"] {
            let mut acked = None;
            let mut got = Vec::new();
            while let Some(e) = store.ack_and_next(&server(d), acked).expect("next").next {
                acked = Some(ack(e.entry_id));
                got.push(e);
            }
            let expected: Vec<_> = want
                .iter()
                .filter(|(_, e)| e.destination.as_str() == d)
                .collect();
            assert_eq!(got.len(), expected.len(), "{d}: entries after reopen");
            for (g, (id, e)) in got.iter().zip(expected) {
                assert_eq!(g.entry_id, *id);
                assert_eq!(g.txn_id, e.txn_id);
                assert_eq!(g.origin, e.origin);
                assert_eq!(g.transaction, e.transaction);
            }
        }
        let id = stored(&store, entry("o.example", "d0.example", "after", b"{}"));
        assert!(
            id > top,
            "ID after reopen {id:?} is not above the old top {top:?}"
        );
    }
    assert_counters_match(&path);
}

#[test]
fn reopen_keeps_quota_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    let quota = Quota {
        destination_entries: 2,
        ..Quota::default()
    };
    {
        let store = SqliteStore::open(&path).expect("open");
        stored(&store, entry("o.example", "d.example", "a", b"{}"));
        stored(&store, entry("o.example", "d.example", "b", b"{}"));
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.queued(&server("d.example")), Ok(2));
    assert_eq!(
        store.insert(entry("o.example", "d.example", "c", b"{}"), &quota),
        Ok(InsertOutcome::QuotaExceeded(QuotaKind::Destination))
    );
    assert_eq!(
        store.insert(entry("o.example", "d.example", "a", b"{}"), &quota),
        Ok(InsertOutcome::Duplicate(EntryId(1)))
    );
}

#[test]
fn fresh_database_gets_the_current_schema_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path).expect("open"));
    assert_eq!(user_version(&path), i64::from(SQLITE_SCHEMA_VERSION));
    const { assert!(SQLITE_SCHEMA_VERSION >= 1) };
    let mode: String = Connection::open(&path)
        .expect("raw open")
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    // Reopening migrates nothing and keeps the version.
    drop(SqliteStore::open(&path).expect("reopen"));
    assert_eq!(user_version(&path), i64::from(SQLITE_SCHEMA_VERSION));
}

#[test]
fn empty_existing_file_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    std::fs::write(&path, b"").expect("empty file");
    let store = SqliteStore::open(&path).expect("open an empty file");
    stored(&store, entry("o.example", "d.example", "t", b"{}"));
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path).expect("open"));
    let newer = i64::from(SQLITE_SCHEMA_VERSION) + 1;
    Connection::open(&path)
        .expect("raw open")
        .pragma_update(None, "user_version", newer)
        .expect("set user_version");
    let err = SqliteStore::open(&path).expect_err("a newer schema must be refused");
    assert!(err.0.contains("newer"), "{err}");
    assert_eq!(
        user_version(&path),
        newer,
        "the refused database is left alone"
    );

    Connection::open(&path)
        .expect("raw open")
        .pragma_update(None, "user_version", -1)
        .expect("set user_version");
    assert!(
        SqliteStore::open(&path).is_err(),
        "a negative schema version must be refused"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    std::fs::write(&path, vec![0x5a; 4096]).expect("garbage");
    assert!(SqliteStore::open(&path).is_err());
    assert!(SqliteStore::open(dir.path().join("missing-dir/relay.db")).is_err());
}

#[test]
fn undecodable_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    let store = SqliteStore::open(&path).expect("open");
    let good = stored(&store, entry("o.example", "good.example", "t", b"{}"));
    Connection::open(&path)
        .expect("raw open")
        .execute_batch(
            "INSERT INTO queue (destination, origin, txn_id, body) VALUES
               ('bad-origin.example', 'not a server name', 't', X'7B7D'),
               ('bad-txn.example', 'o.example', '', X'7B7D'),
               ('bad-type.example', 'o.example', X'74', X'7B7D'),
               ('bad-utf8.example', CAST(X'FF' AS TEXT), 't', X'7B7D');",
        )
        .expect("bad rows");
    for d in [
        "bad-origin.example",
        "bad-txn.example",
        "bad-type.example",
        "bad-utf8.example",
    ] {
        let dest = server(d);
        assert!(store.ack_and_next(&dest, None).is_err(), "{d}: read");
        assert!(
            store.ack_and_next(&dest, Some(ack(EntryId(1)))).is_err(),
            "{d}: through the writer"
        );
        assert_eq!(
            store.queued(&dest),
            Ok(1),
            "{d}: the bad row is still counted"
        );
    }
    // Everything else still works.
    let next = store
        .ack_and_next(&server("good.example"), None)
        .expect("good read")
        .next;
    assert_eq!(next.map(|e| e.entry_id), Some(good));
    assert_eq!(
        store.ack_and_next(&server("good.example"), Some(ack(good))),
        Ok(AckNext {
            acked: true,
            next: None
        })
    );
    stored(&store, entry("o.example", "good.example", "t2", b"{}"));
    assert_counters_match(&path);
}

#[test]
fn two_stores_on_one_file_share_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    let a = SqliteStore::open(&path).expect("open a");
    let b = SqliteStore::open(&path).expect("open b");
    std::thread::scope(|s| {
        for (n, store) in [(0, &a), (1, &b)] {
            s.spawn(move || {
                for i in 0..50 {
                    stored(
                        store,
                        entry(
                            &format!("o{n}.example"),
                            "d.example",
                            &format!("t{i}"),
                            b"{}",
                        ),
                    );
                }
            });
        }
    });
    assert_eq!(a.queued(&server("d.example")), Ok(100));
    assert_eq!(
        b.insert(
            entry("o0.example", "d.example", "t0", b"{}"),
            &Quota::default()
        )
        .map(|o| matches!(o, InsertOutcome::Duplicate(_))),
        Ok(true)
    );
    let mut acked = None;
    let mut n = 0;
    while let Some(e) = b
        .ack_and_next(&server("d.example"), acked)
        .expect("next")
        .next
    {
        acked = Some(ack(e.entry_id));
        n += 1;
    }
    assert_eq!(n, 100);
    assert_counters_match(&path);
}

#[test]
fn open_by_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.db");
    let store = relay_store::open(&format!("sqlite:{}", plain.display())).expect("sqlite:PATH");
    stored(&*store, entry("o.example", "d.example", "t", b"{}"));
    drop(store);
    assert!(plain.exists());

    // sqlite:///abs/path is the absolute path.
    let slashes = dir.path().join("slashes.db");
    let url = format!("sqlite://{}", slashes.display());
    assert!(url.starts_with("sqlite:///"));
    drop(relay_store::open(&url).expect("sqlite://PATH"));
    assert!(slashes.exists());

    // Port 1 refuses at once: a connection error that must not show the password.
    let pg = relay_store::open("postgres://relay:hunter2@127.0.0.1:1/relay")
        .err()
        .expect("postgres URL");
    assert!(pg.0.contains("PostgreSQL"), "{pg}");
    assert!(
        !pg.0.contains("hunter2"),
        "the password must not leak: {pg}"
    );
    assert!(relay_store::open("postgresql://127.0.0.1:1/relay").is_err());

    for bad in [
        "sqlite:",
        "sqlite://",
        "sqlite::memory:",
        "mysql://x/y",
        "relay.db",
        "",
    ] {
        assert!(relay_store::open(bad).is_err(), "{bad:?} should be refused");
    }
}

/// `open_existing` creates and migrates nothing: a missing file stays
/// missing, another program's database stays as it was, a relay database
/// opens.
#[test]
fn open_existing_changes_no_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.db");
    let err = SqliteStore::open_existing(&missing).expect_err("a missing file");
    assert!(err.0.contains("no such file"), "{err}");
    assert!(!missing.exists());

    let other = dir.path().join("other.db");
    Connection::open(&other)
        .and_then(|c| c.execute_batch("CREATE TABLE foo (x)"))
        .expect("another program's database");
    let err = SqliteStore::open_existing(&other).expect_err("not a relay database");
    assert!(err.0.contains("not a matrix-relay database"), "{err}");
    assert_eq!(user_version(&other), 0);
    let tables: i64 = Connection::open(&other)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
        })
        .expect("count tables");
    assert_eq!(tables, 1, "open_existing added tables");

    let relay = dir.path().join("relay.db");
    drop(SqliteStore::open(&relay).expect("open creates"));
    let store = SqliteStore::open_existing(&relay).expect("a relay database");
    assert_eq!(store.queued(&server("d.example")), Ok(0));
}

/// An entry stored before control characters were refused in txn IDs is
/// handed out with U+FFFD in their place, not left blocking its queue.
#[test]
fn an_old_txn_id_with_a_control_character_does_not_block_its_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    drop(SqliteStore::open(&path).expect("open creates"));
    Connection::open(&path)
        .and_then(|c| {
            c.execute(
                "INSERT INTO queue (destination, origin, txn_id, body) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params!["d.example", "o.example", "a\nb\0c", b"{}".to_vec()],
            )
        })
        .expect("an old row");
    let store = SqliteStore::open(&path).expect("reopen");
    let head = store
        .ack_and_next(&server("d.example"), None)
        .expect("read")
        .next
        .expect("the old entry");
    assert_eq!(head.txn_id.as_str(), "a\u{fffd}b\u{fffd}c");
    let found = store
        .ack_and_next(&server("d.example"), Some(ack(head.entry_id)))
        .expect("ack");
    assert!(found.acked && found.next.is_none());
}
