//! What only the SQLite backend of the sender's state promises: durability
//! across reopen, one file shared with the relay queue, robustness against
//! bad rows, URL parsing; and a model test against the memory model.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use relay_store::{
    DestinationRecord, InsertOutcome, Item, ItemId, ItemKind, MemoryOutboundStore, NewEntry,
    OutboundChange, OutboundStore, QueueStore, Quota, RetryState, ServerName, SqliteStore, TxnId,
    UnixMillis,
};
use rusqlite::Connection;

fn server(s: &str) -> ServerName {
    ServerName::parse(s).expect("test server name")
}

fn enqueued(destination: &str, id: u64, json: &[u8]) -> OutboundChange {
    OutboundChange::Enqueued {
        destination: server(destination),
        item: Item {
            id: ItemId(id),
            kind: ItemKind::Pdu,
            json: json.to_vec(),
        },
    }
}

fn started(destination: &str, txn: &str, items: &[u64]) -> OutboundChange {
    OutboundChange::TxnStarted {
        destination: server(destination),
        txn_id: TxnId::parse(txn).expect("test txn ID"),
        items: items.iter().copied().map(ItemId).collect(),
    }
}

fn retry(destination: &str, failures: u32) -> OutboundChange {
    OutboundChange::Retry {
        destination: server(destination),
        state: RetryState {
            direct_failures: failures,
            failed_attempts: failures,
            next_retry: Some(UnixMillis(1_700_000_000_000)),
            blacklisted: false,
        },
    }
}

/// The same changes applied to the reference model.
fn model_of(changes: &[&[OutboundChange]]) -> Vec<DestinationRecord> {
    let model = MemoryOutboundStore::new();
    for batch in changes {
        model.apply(batch).expect("model apply");
    }
    model.load().expect("model load")
}

#[test]
fn reopen_keeps_the_sender_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.db");
    let batches: [&[OutboundChange]; 3] = [
        &[
            enqueued("a.example", 1, br#"{"a":1}"#),
            enqueued("b.example", 2, b"\xff\x00"),
            enqueued("a.example", 3, br#"{"a":3}"#),
        ],
        &[
            started("a.example", "txn-1", &[1, 3]),
            retry("a.example", 2),
        ],
        &[retry("c.example", 1), enqueued("b.example", 4, b"{}")],
    ];
    {
        let store = SqliteStore::open(&path).expect("open");
        for batch in batches {
            store.apply(batch).expect("apply");
        }
        // Refused, so it must not reappear after the reopen either.
        let conflict = [
            enqueued("d.example", 9, b"{}"),
            enqueued("a.example", 1, b"{}"),
        ];
        assert!(store.apply(&conflict).is_err());
    }
    let store = SqliteStore::open(&path).expect("reopen");
    let want = model_of(&batches);
    assert_eq!(want.len(), 3);
    assert_eq!(store.load().expect("load after reopen"), want);
}

#[test]
fn relay_queue_and_sender_state_share_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let store = Arc::new(SqliteStore::open(&path).expect("open"));
    let queue: Arc<dyn QueueStore> = store.clone();
    let sender: Arc<dyn OutboundStore> = store;
    let entry = NewEntry {
        origin: server("o.example"),
        destination: server("d.example"),
        txn_id: TxnId::parse("relay-txn").expect("txn"),
        transaction: b"{}".to_vec(),
        received: relay_store::UnixMillis(1_700_000_000_000),
    };
    let id = match queue.insert(entry, &Quota::default()).expect("insert") {
        InsertOutcome::Stored(id) => id,
        other => panic!("expected Stored, got {other:?}"),
    };
    let changes = [
        enqueued("d.example", 1, b"{}"),
        started("d.example", "t", &[1]),
    ];
    sender.apply(&changes).expect("apply");

    // A second store on the file, as a second process would open it.
    let other = SqliteStore::open(&path).expect("open again");
    assert_eq!(
        other.load().expect("load"),
        model_of(&[&changes]),
        "the sender's state is shared"
    );
    assert_eq!(
        other.queued(&server("d.example")),
        Ok(1),
        "the queue is apart"
    );
    sender
        .apply(&[OutboundChange::TxnFinished {
            destination: server("d.example"),
            items: vec![ItemId(1)],
        }])
        .expect("finish");
    assert_eq!(other.load(), Ok(vec![]));
    let head = other
        .ack_and_next(&server("d.example"), None)
        .expect("next")
        .next;
    assert_eq!(head.map(|e| e.entry_id), Some(id));
}

#[test]
fn undecodable_rows_are_errors_not_panics() {
    let cases = [
        (
            "INSERT INTO outbound_item VALUES (10, 'not a server name', 'pdu', X'7B7D')",
            "invalid destination",
        ),
        (
            "INSERT INTO outbound_item VALUES (10, 'x.example', 'xdu', X'7B7D')",
            "invalid kind",
        ),
        (
            "INSERT INTO outbound_item VALUES (10, 'x.example', 'PDU', X'7B7D')",
            "invalid kind",
        ),
        (
            "INSERT INTO outbound_item VALUES (-5, 'x.example', 'pdu', X'7B7D')",
            "negative",
        ),
        (
            "INSERT INTO outbound_item VALUES (10, X'782E6578616D706C65', 'pdu', X'7B7D')",
            "read queued items",
        ),
        (
            "INSERT INTO outbound_item VALUES (10, CAST(X'FF' AS TEXT), 'pdu', X'7B7D')",
            "read queued items",
        ),
        (
            "PRAGMA ignore_check_constraints = ON;
             INSERT INTO outbound_item VALUES (10, 'x.example', 'pdu', '{}')",
            "read queued items",
        ),
        (
            "INSERT INTO outbound_txn VALUES ('x.example', '')",
            "invalid txn ID",
        ),
        (
            "INSERT INTO outbound_txn VALUES ('x.example', X'74')",
            "read transactions in flight",
        ),
        (
            "INSERT INTO outbound_txn VALUES ('bad name!', 't')",
            "invalid destination",
        ),
        (
            "INSERT INTO outbound_txn VALUES ('x.example', 't');
             INSERT INTO outbound_txn_item VALUES ('x.example', 0, -1)",
            "negative",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('x.example', -1, 0, NULL, 0)",
            "invalid failure count",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('x.example', 0, 4294967296, NULL, 0)",
            "invalid failure count",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('x.example', 1, 1, -1, 0)",
            "invalid next retry time",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('x.example', 1, 1, 'soon', 0)",
            "read retry states",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('x.example', 1, 1, 1.5, 0)",
            "read retry states",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('x.example', 1, 1, NULL, 2)",
            "invalid blacklisted flag",
        ),
        (
            "INSERT INTO outbound_retry VALUES ('', 1, 1, NULL, 0)",
            "invalid destination",
        ),
    ];
    for (sql, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.db");
        let store = SqliteStore::open(&path).expect("open");
        store
            .apply(&[enqueued("good.example", 1, b"{}")])
            .expect("good item");
        Connection::open(&path)
            .expect("raw open")
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let err = store.load().expect_err(sql);
        assert!(err.0.contains(expected), "{sql}: {err}");
        // Writes do not read the bad row, and still work.
        store
            .apply(&[enqueued("good.example", 2, b"{}"), retry("good.example", 1)])
            .unwrap_or_else(|e| panic!("{sql}: apply beside the bad row: {e}"));
    }
}

#[test]
fn open_outbound_by_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.db");
    let url = format!("sqlite:{}", plain.display());
    let store = relay_store::open_outbound(&url).expect("sqlite:PATH");
    let changes = [enqueued("d.example", 1, b"{}")];
    store.apply(&changes).expect("apply");
    drop(store);
    // The relay queue opens the same file.
    drop(relay_store::open(&url).expect("the relay's open"));
    let store = relay_store::open_outbound(&format!("sqlite://{}", plain.display()))
        .expect("sqlite://PATH");
    assert_eq!(store.load(), Ok(model_of(&[&changes])));

    let pg = relay_store::open_outbound("postgres://node:hunter2@db.example/node")
        .err()
        .expect("postgres URL");
    assert!(pg.0.contains("PostgreSQL"), "{pg}");
    assert!(
        !pg.0.contains("hunter2"),
        "the password must not leak: {pg}"
    );
    for bad in ["sqlite:", "sqlite::memory:", "mysql://x/y", "node.db", ""] {
        assert!(
            relay_store::open_outbound(bad).is_err(),
            "{bad:?} should be refused"
        );
    }
    assert!(
        relay_store::open_outbound(&format!("sqlite:{}/missing/x.db", dir.path().display()))
            .is_err()
    );
}

// The model test: random batches on SQLite and on the memory model must be
// accepted or refused alike and load alike after every step.

const DESTINATIONS: [&str; 3] = ["d0.example", "d1.example", "d2.example"];
const JSON: [&[u8]; 3] = [b"{}", b"{\"x\":1}", b"\xff"];

fn item_id() -> impl Strategy<Value = u64> {
    prop_oneof![12 => 0..4u64, 1 => Just(u64::MAX)]
}

fn destination() -> impl Strategy<Value = ServerName> {
    (0..3usize).prop_map(|d| server(DESTINATIONS[d]))
}

fn item_ids() -> impl Strategy<Value = Vec<ItemId>> {
    proptest::collection::vec(item_id().prop_map(ItemId), 0..4)
}

fn change() -> impl Strategy<Value = OutboundChange> {
    prop_oneof![
        4 => (destination(), item_id(), any::<bool>(), 0..3usize).prop_map(|(destination, id, edu, j)| {
            OutboundChange::Enqueued {
                destination,
                item: Item {
                    id: ItemId(id),
                    kind: if edu { ItemKind::Edu } else { ItemKind::Pdu },
                    json: JSON[j].to_vec(),
                },
            }
        }),
        2 => (destination(), 0..3u8, item_ids()).prop_map(|(destination, t, items)| OutboundChange::TxnStarted {
            destination,
            txn_id: TxnId::parse(&format!("t{t}")).expect("txn"),
            items,
        }),
        2 => (destination(), item_ids()).prop_map(|(destination, items)| OutboundChange::TxnFinished { destination, items }),
        2 => (destination(), 0..2u32, 0..2u32, proptest::option::of(prop_oneof![Just(0), Just(7), Just(u64::MAX)]), any::<bool>())
            .prop_map(|(destination, direct_failures, failed_attempts, next, blacklisted)| OutboundChange::Retry {
                destination,
                state: RetryState {
                    direct_failures,
                    failed_attempts,
                    next_retry: next.map(UnixMillis),
                    blacklisted,
                },
            }),
    ]
}

#[derive(Debug, Clone)]
enum Transition {
    Apply(Vec<OutboundChange>),
    Reopen,
}

fn transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        12 => proptest::collection::vec(change(), 0..5).prop_map(Transition::Apply),
        1 => Just(Transition::Reopen),
    ]
}

fn check(dir: &Path, transitions: Vec<Transition>) -> Result<(), TestCaseError> {
    let path = dir.join("node.db");
    let mut sqlite = SqliteStore::open(&path).expect("open");
    let model = MemoryOutboundStore::new();
    for (step, t) in transitions.into_iter().enumerate() {
        match &t {
            Transition::Apply(changes) => {
                let got = sqlite.apply(changes);
                let want = model.apply(changes);
                prop_assert_eq!(
                    got.is_ok(),
                    want.is_ok(),
                    "step {}: {:?} {:?}",
                    step,
                    got,
                    want
                );
            }
            Transition::Reopen => {
                drop(sqlite);
                sqlite = SqliteStore::open(&path).expect("reopen");
            }
        }
        prop_assert_eq!(sqlite.load(), model.load(), "step {}: {:?}", step, t);
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
