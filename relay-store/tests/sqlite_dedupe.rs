//! What only the SQLite backend of the de-duplication window promises:
//! durability across reopen, one file shared with the relay queue and the
//! sender's state, robustness against bad rows, URL parsing; and a model
//! test against the memory model.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use relay_store::{
    DedupeKey, DedupeStore, InsertOutcome, Item, ItemId, ItemKind, MemoryDedupeStore, NewEntry,
    OutboundStore, QueueStore, Quota, ServerName, SqliteStore, TxnId, WindowChange,
};
use rusqlite::Connection;

fn server(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn txn_key(origin: &str, txn: &str) -> DedupeKey {
    DedupeKey::Txn(server(origin), TxnId::parse(txn).expect("test txn ID"))
}

fn digest(n: u8) -> DedupeKey {
    DedupeKey::Digest([n; 32])
}

fn seen(keys: &[&DedupeKey]) -> WindowChange {
    WindowChange::Seen(keys.iter().map(|k| (*k).clone()).collect())
}

fn forget(keys: &[&DedupeKey]) -> WindowChange {
    WindowChange::Forget(keys.iter().map(|k| (*k).clone()).collect())
}

/// The same changes applied to the reference model.
fn model_of(changes: &[&[WindowChange]]) -> Vec<Vec<DedupeKey>> {
    let model = MemoryDedupeStore::new();
    for batch in changes {
        model.apply_window(batch).expect("model apply");
    }
    model.load_window().expect("model load")
}

#[test]
fn reopen_keeps_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let (a, b, c) = (
        txn_key("a.example", "1"),
        digest(2),
        txn_key("c.example", "123"),
    );
    let (d, e) = (digest(4), txn_key("e.example", "5"));
    let before: [&[WindowChange]; 2] = [
        &[seen(&[&a, &b]), seen(&[&c])],
        &[seen(&[&d]), forget(&[&a])],
    ];
    {
        let store = SqliteStore::open(&path).expect("open");
        for batch in before {
            store.apply_window(batch).expect("apply");
        }
    }
    {
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.load_window(), Ok(model_of(&before)));
        // After a reopen, new groups still come last, also once the newest
        // group is gone.
        store
            .apply_window(&[forget(&[&d])])
            .expect("forget the newest group");
        store
            .apply_window(&[seen(&[&e, &a]), seen(&[&b])])
            .expect("apply after reopen");
    }
    let store = SqliteStore::open(&path).expect("reopen again");
    assert_eq!(
        store.load_window(),
        Ok(vec![vec![c], vec![e, a], vec![b]]),
        "after a second reopen"
    );
}

#[test]
fn window_relay_queue_and_sender_state_share_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let store = Arc::new(SqliteStore::open(&path).expect("open"));
    let queue: Arc<dyn QueueStore> = store.clone();
    let sender: Arc<dyn OutboundStore> = store.clone();
    let window: Arc<dyn DedupeStore> = store;
    let entry = NewEntry {
        origin: server("o.example"),
        destination: server("d.example"),
        txn_id: TxnId::parse("t").expect("txn"),
        transaction: b"{}".to_vec(),
        received: relay_store::UnixMillis(1_700_000_000_000),
    };
    assert!(matches!(
        queue.insert(entry, &Quota::default()),
        Ok(InsertOutcome::Stored(_))
    ));
    sender
        .apply(&[relay_store::OutboundChange::Enqueued {
            destination: server("d.example"),
            item: Item {
                id: ItemId(1),
                kind: ItemKind::Pdu,
                json: b"{}".to_vec(),
            },
        }])
        .expect("sender apply");
    let changes = [seen(&[&txn_key("o.example", "t"), &digest(1)])];
    window.apply_window(&changes).expect("window apply");

    // A second store on the file, as a second process would open it.
    let other = SqliteStore::open(&path).expect("open again");
    assert_eq!(other.load_window(), Ok(model_of(&[&changes])));
    assert_eq!(
        other.load().map(|r| r.len()),
        Ok(1),
        "the sender state is apart"
    );
    assert_eq!(
        other.queued(&server("d.example")),
        Ok(1),
        "the queue is apart"
    );
    window
        .apply_window(&[forget(&[&txn_key("o.example", "t"), &digest(1)])])
        .expect("forget");
    assert_eq!(other.load_window(), Ok(vec![]));
    assert_eq!(other.queued(&server("d.example")), Ok(1));
}

#[test]
fn undecodable_rows_are_errors_not_panics() {
    let row = |kind: &str, origin: &str, value: &str| {
        format!(
            "INSERT INTO retriever_seen (group_id, kind, origin, value) \
             VALUES (1000, {kind}, {origin}, {value})"
        )
    };
    let long = format!("'{}'", "x".repeat(256));
    let cases = [
        (row("'xxx'", "'x.example'", "'t'"), "invalid kind"),
        (row("'TXN'", "'x.example'", "'t'"), "invalid kind"),
        (row("X'74786E'", "'x.example'", "'t'"), "invalid kind"),
        (row("'txn'", "'not a server!'", "'t'"), "invalid origin"),
        (row("'txn'", "''", "'t'"), "invalid origin"),
        (row("'txn'", "'x.example'", "''"), "invalid txn ID"),
        (row("'txn'", "'x.example'", &long), "invalid txn ID"),
        (
            row("'txn'", "'x.example'", "X'74'"),
            "read the de-duplication window",
        ),
        (
            row("'txn'", "'x.example'", "123"),
            "read the de-duplication window",
        ),
        (
            row("'txn'", "X'782E6578616D706C65'", "'t'"),
            "read the de-duplication window",
        ),
        (
            row("'digest'", "'x.example'", "zeroblob(32)"),
            "invalid origin",
        ),
        (row("'digest'", "''", "zeroblob(31)"), "invalid digest"),
        (row("'digest'", "''", "zeroblob(33)"), "invalid digest"),
        (
            row("'digest'", "''", &format!("'{}'", "d".repeat(32))),
            "read the de-duplication window",
        ),
        (
            "INSERT INTO retriever_seen (group_id, kind, origin, value) \
             VALUES ('g', 'digest', '', zeroblob(32))"
                .to_owned(),
            "read the de-duplication window",
        ),
        (
            "INSERT INTO retriever_seen (group_id, kind, origin, value) \
             VALUES (1.5, 'digest', '', zeroblob(32))"
                .to_owned(),
            "read the de-duplication window",
        ),
    ];
    for (sql, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let store = SqliteStore::open(&path).expect("open");
        store
            .apply_window(&[seen(&[&digest(1)])])
            .expect("good key");
        Connection::open(&path)
            .expect("raw open")
            .execute_batch(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let err = store.load_window().expect_err(&sql);
        assert!(err.0.contains(expected), "{sql}: {err}");
        // Writes do not read the bad row, and still work.
        store
            .apply_window(&[seen(&[&digest(2)]), forget(&[&digest(1)])])
            .unwrap_or_else(|e| panic!("{sql}: apply beside the bad row: {e}"));
    }
}

#[test]
fn open_dedupe_by_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.db");
    let url = format!("sqlite:{}", plain.display());
    let store = relay_store::open_dedupe(&url).expect("sqlite:PATH");
    let changes = [seen(&[&digest(1)]), seen(&[&txn_key("o.example", "t")])];
    store.apply_window(&changes).expect("apply");
    drop(store);
    // The relay queue and the sender state open the same file.
    drop(relay_store::open(&url).expect("the relay's open"));
    drop(relay_store::open_outbound(&url).expect("the sender's open"));
    let store =
        relay_store::open_dedupe(&format!("sqlite://{}", plain.display())).expect("sqlite://PATH");
    assert_eq!(store.load_window(), Ok(model_of(&[&changes])));

    let pg = relay_store::open_dedupe("postgres://node:hunter2@db.example/node")
        .err()
        .expect("postgres URL");
    assert!(pg.0.contains("PostgreSQL"), "{pg}");
    assert!(
        !pg.0.contains("hunter2"),
        "the password must not leak: {pg}"
    );
    for bad in ["sqlite:", "sqlite::memory:", "mysql://x/y", "node.db", ""] {
        assert!(
            relay_store::open_dedupe(bad).is_err(),
            "{bad:?} should be refused"
        );
    }
}

// The model test: random batches on SQLite and on the memory model must
// load alike after every step. Few keys, so keys are often seen again and
// forgotten while remembered.

fn key() -> impl Strategy<Value = DedupeKey> {
    prop_oneof![
        (0..2usize, 0..3u8)
            .prop_map(|(o, t)| txn_key(["o0.example", "o1.example"][o], &format!("{t}"))),
        (0..3u8).prop_map(digest),
    ]
}

fn change() -> impl Strategy<Value = WindowChange> {
    let keys = || proptest::collection::vec(key(), 0..4);
    prop_oneof![
        3 => keys().prop_map(WindowChange::Seen),
        2 => keys().prop_map(WindowChange::Forget),
    ]
}

#[derive(Debug, Clone)]
enum Transition {
    Apply(Vec<WindowChange>),
    Reopen,
}

fn transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        12 => proptest::collection::vec(change(), 0..4).prop_map(Transition::Apply),
        1 => Just(Transition::Reopen),
    ]
}

fn check(dir: &Path, transitions: Vec<Transition>) -> Result<(), TestCaseError> {
    let path = dir.join("node.db");
    let mut sqlite = SqliteStore::open(&path).expect("open");
    let model = MemoryDedupeStore::new();
    for (step, t) in transitions.into_iter().enumerate() {
        match &t {
            Transition::Apply(changes) => {
                prop_assert_eq!(sqlite.apply_window(changes), Ok(()), "step {}", step);
                model.apply_window(changes).expect("model apply");
            }
            Transition::Reopen => {
                drop(sqlite);
                sqlite = SqliteStore::open(&path).expect("reopen");
            }
        }
        prop_assert_eq!(
            sqlite.load_window(),
            model.load_window(),
            "step {}: {:?}",
            step,
            t
        );
    }
    Ok(())
}

proptest! {
    // Each case opens a fresh database and fsyncs every batch: keep it small.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_the_memory_model(transitions in proptest::collection::vec(transition(), 1..30)) {
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), transitions)?;
    }
}
