//! The PostgreSQL backend: the queue conformance suite, unchanged, on a
//! fresh database per test, plus what only a server-backed store has
//! (schema versioning across processes, several stores on one database).
//!
//! The server is `$RELAY_TEST_POSTGRES`; without it every test here skips
//! with a loud message, or fails when `$CI` is set (`scripts/test` starts a
//! throwaway server and sets it).

use std::sync::{Arc, Barrier};

use relay_store::testing::{TempDatabase, temp_postgres_database};
use relay_store::{
    Ack, AckBatch, AckNext, AckedKeys, DestinationUsage, EntryId, InsertOutcome, NewEntry,
    PostgresStore, QueueStore, QueueTotals, Quota, ServerName, StoreError, Take, TxnId, UnixMillis,
};

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

/// An acknowledgement of `id` at [`NOW`], remembering keys by default.
fn ack(id: EntryId) -> Ack {
    Ack {
        entry_id: id,
        at: NOW,
        keys: AckedKeys::default(),
    }
}

/// A store on its own database, dropped before the database is.
struct TempPostgres {
    store: Option<PostgresStore>,
    _db: TempDatabase,
}

impl TempPostgres {
    /// `None` when there is no server (skipped; a failure under CI).
    fn new(what: &str) -> Option<Box<Self>> {
        let db = temp_postgres_database(what)?;
        let store = PostgresStore::open(db.url()).expect("open PostgreSQL store");
        Some(Box::new(Self {
            store: Some(store),
            _db: db,
        }))
    }

    fn store(&self) -> &PostgresStore {
        self.store.as_ref().expect("store is open until drop")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        drop(self.store.take());
    }
}

impl QueueStore for TempPostgres {
    fn insert(&self, entry: NewEntry, quota: &Quota) -> Result<InsertOutcome, StoreError> {
        self.store().insert(entry, quota)
    }
    fn ack_and_next_unexpired(
        &self,
        destination: &ServerName,
        ack: Option<Ack>,
        expired_before: UnixMillis,
    ) -> Result<AckNext, StoreError> {
        self.store()
            .ack_and_next_unexpired(destination, ack, expired_before)
    }
    fn ack_and_next_batch(
        &self,
        destination: &ServerName,
        acks: &[Ack],
        take: Take,
        expired_before: UnixMillis,
    ) -> Result<AckBatch, StoreError> {
        self.store()
            .ack_and_next_batch(destination, acks, take, expired_before)
    }
    fn expire(&self, expired_before: UnixMillis, limit: usize) -> Result<QueueTotals, StoreError> {
        self.store().expire(expired_before, limit)
    }
    fn queued(&self, destination: &ServerName) -> Result<u64, StoreError> {
        self.store().queued(destination)
    }
    fn totals(&self) -> Result<QueueTotals, StoreError> {
        self.store().totals()
    }
    fn destinations(&self, limit: usize) -> Result<Vec<DestinationUsage>, StoreError> {
        self.store().destinations(limit)
    }
    fn purge(&self, destination: &ServerName) -> Result<QueueTotals, StoreError> {
        self.store().purge(destination)
    }
}

/// The factory for the conformance macro: a fresh database per test, or,
/// without a server, an early `return` from the test (the macro pastes the
/// factory expression into each test's body).
macro_rules! postgres_or_skip {
    () => {{
        let test = std::thread::current();
        let Some(store) = super::TempPostgres::new(test.name().unwrap_or("conformance")) else {
            return;
        };
        move || store
    }};
}

mod conformance {
    relay_store::conformance_tests!(postgres_or_skip!());
}

fn server(name: &str) -> ServerName {
    ServerName::parse(name).expect("server name")
}

fn entry(origin: &str, destination: &str, txn_id: &str) -> NewEntry {
    NewEntry {
        origin: server(origin),
        destination: server(destination),
        txn_id: TxnId::parse(txn_id).expect("txn ID"),
        transaction: format!(r#"{{"pdus":[],"t":"{txn_id}"}}"#).into_bytes(),
        received: NOW,
    }
}

fn unlimited() -> Quota {
    Quota {
        destination_entries: u64::MAX,
        destination_bytes: u64::MAX,
        origin_share_percent: 100,
        origin_entries: u64::MAX,
        origin_bytes: u64::MAX,
        total_entries: u64::MAX,
        total_bytes: u64::MAX,
        acked: AckedKeys::default(),
    }
}

/// A client on `url` for poking at the schema.
fn sql(url: &str, f: impl FnOnce(&mut postgres::Client) + Send + 'static) {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        f(&mut client);
    })
    .join()
    .expect("SQL thread");
}

#[test]
fn reopen_keeps_entries_and_schema_version() {
    let Some(db) = temp_postgres_database("reopen_keeps_entries_and_schema_version") else {
        return;
    };
    let store = PostgresStore::open(db.url()).expect("open");
    let id = match store.insert(entry("o.example", "d.example", "t1"), &unlimited()) {
        Ok(InsertOutcome::Stored(id)) => id,
        other => panic!("insert: {other:?}"),
    };
    drop(store);
    let store = PostgresStore::open(db.url()).expect("reopen");
    let next = store
        .ack_and_next(&server("d.example"), None)
        .expect("next")
        .next
        .expect("the entry survived");
    assert_eq!(next.entry_id, id);
    drop(store);
    sql(db.url(), |c| {
        let v: i32 = c
            .query_one("SELECT version FROM matrix_relay_schema", &[])
            .expect("version row")
            .get(0);
        assert_eq!(v as u32, relay_store::POSTGRES_SCHEMA_VERSION);
    });
}

#[test]
fn newer_schema_is_refused() {
    let Some(db) = temp_postgres_database("newer_schema_is_refused") else {
        return;
    };
    drop(PostgresStore::open(db.url()).expect("open"));
    sql(db.url(), |c| {
        c.batch_execute("UPDATE matrix_relay_schema SET version = 99")
            .expect("bump version");
    });
    let err = PostgresStore::open(db.url()).expect_err("a newer schema must be refused");
    assert!(err.0.contains("newer"), "{err}");
}

/// A database as schema version 1 left it (the queue, no remembered
/// acknowledgements) is migrated in place, keeping its queue, and then
/// remembers acknowledgements.
#[test]
fn a_version_1_database_is_migrated_keeping_its_queue() {
    let Some(db) = temp_postgres_database("a_version_1_database_is_migrated_keeping_its_queue")
    else {
        return;
    };
    relay_store::testing::postgres_schema_at(db.url(), 1).expect("version 1");
    sql(db.url(), |c| {
        for t in ["a", "b"] {
            c.execute(
                "INSERT INTO queue (destination, origin, txn_id, body) \
                 VALUES ('d.example', 'o.example', $1, '\\x7b7d')",
                &[&t],
            )
            .expect("insert as version 1");
        }
    });
    let store = PostgresStore::open(db.url()).expect("open migrates");
    let d = server("d.example");
    assert_eq!(store.queued(&d), Ok(2), "the queue survived");
    assert_eq!(
        store.totals().map(|t| t.bytes),
        Ok(2 * relay_store::entry_cost("o.example", "d.example", "a", 2)),
        "the byte counters are rebuilt as costs"
    );
    let head = store
        .ack_and_next(&d, None)
        .expect("next")
        .next
        .expect("entry a");
    assert_eq!(head.txn_id.as_str(), "a");
    let next = store
        .ack_and_next(&d, Some(ack(head.entry_id)))
        .expect("ack")
        .next
        .expect("entry b");
    assert_eq!(next.txn_id.as_str(), "b");
    assert_eq!(
        store.insert(entry("o.example", "d.example", "a"), &unlimited()),
        Ok(InsertOutcome::AlreadyDelivered),
        "acknowledged after the upgrade"
    );
    drop(store);
    sql(db.url(), |c| {
        let v: i32 = c
            .query_one("SELECT version FROM matrix_relay_schema", &[])
            .expect("version row")
            .get(0);
        assert_eq!(v, 3);
        assert_eq!(v as u32, relay_store::POSTGRES_SCHEMA_VERSION);
    });
}

/// A key acknowledged again while remembered, whose old place is just past
/// the cap the new acknowledgement moves, stays remembered (the one
/// statement that remembers it and forgets past the cap must not forget
/// it), and the key after it is kept too.
#[test]
fn key_remembered_again_at_the_cap_stays() {
    let Some(db) = temp_postgres_database("key_remembered_again_at_the_cap_stays") else {
        return;
    };
    let store = PostgresStore::open(db.url()).expect("open");
    let d = server("d.example");
    let keys = AckedKeys {
        retention_ms: 60_000,
        max: 2,
        max_bytes: u64::MAX,
    };
    let with_keys = Quota {
        acked: keys,
        ..unlimited()
    };
    let forgetful = Quota {
        acked: AckedKeys::OFF,
        ..unlimited()
    };
    let deliver = |e: &NewEntry, quota: &Quota| {
        let Ok(InsertOutcome::Stored(id)) = store.insert(e.clone(), quota) else {
            panic!("insert {}", e.txn_id);
        };
        let ack = Ack {
            entry_id: id,
            at: NOW,
            keys,
        };
        assert_eq!(
            store.ack_and_next(&d, Some(ack)).map(|found| found.next),
            Ok(None)
        );
    };
    let (a, b) = (
        entry("o.example", "d.example", "a"),
        entry("o.example", "d.example", "b"),
    );
    deliver(&a, &with_keys);
    deliver(&b, &with_keys);
    // Stored again by an insert that ignores remembered keys, and
    // acknowledged: a's old seq is at the new cap boundary.
    deliver(&a, &forgetful);
    for e in [&a, &b] {
        assert_eq!(
            store.insert(e.clone(), &with_keys),
            Ok(InsertOutcome::AlreadyDelivered),
            "{} is among the newest two",
            e.txn_id
        );
    }
    drop(store);
    sql(db.url(), |c| {
        let n: i64 = c
            .query_one("SELECT count(*) FROM acked", &[])
            .expect("count")
            .get(0);
        assert_eq!(n, 2);
    });
}

/// Two stores (two relay processes) on one database: one acknowledges
/// entries while the other takes retransmissions of them. Each
/// retransmission is a duplicate of the queued entry or already delivered,
/// never stored again.
#[test]
fn two_stores_ack_and_reinsert_concurrently() {
    let Some(db) = temp_postgres_database("two_stores_ack_and_reinsert_concurrently") else {
        return;
    };
    let a = PostgresStore::open(db.url()).expect("open a");
    let b = PostgresStore::open(db.url()).expect("open b");
    const N: usize = 200;
    let entries: Vec<NewEntry> = (0..N)
        .map(|i| entry("o.example", "d.example", &format!("t{i}")))
        .collect();
    let ids: Vec<EntryId> = entries
        .iter()
        .map(|e| match a.insert(e.clone(), &unlimited()) {
            Ok(InsertOutcome::Stored(id)) => id,
            other => panic!("insert: {other:?}"),
        })
        .collect();
    let d = server("d.example");
    let start = Barrier::new(2);
    let outcomes = std::thread::scope(|s| {
        let acker = s.spawn(|| {
            start.wait();
            for &id in &ids {
                a.ack_and_next(&d, Some(ack(id))).expect("ack");
            }
        });
        let sender = s.spawn(|| {
            start.wait();
            entries
                .iter()
                .map(|e| b.insert(e.clone(), &unlimited()).expect("insert"))
                .collect::<Vec<_>>()
        });
        acker.join().expect("acker");
        sender.join().expect("sender")
    });
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            InsertOutcome::Duplicate(id) => assert_eq!(*id, ids[i], "t{i}"),
            InsertOutcome::AlreadyDelivered => {}
            other => panic!("retransmission of t{i}: {other:?}"),
        }
    }
    assert_eq!(a.queued(&d), Ok(0));
    assert_eq!(
        b.ack_and_next(&d, None),
        Ok(AckNext::default()),
        "nothing stored twice"
    );
}

/// Stores opened at once on a fresh database migrate it once, and all work.
#[test]
fn concurrent_first_opens_migrate_once() {
    let Some(db) = temp_postgres_database("concurrent_first_opens_migrate_once") else {
        return;
    };
    const OPENERS: usize = 6;
    let start = Arc::new(Barrier::new(OPENERS));
    let handles: Vec<_> = (0..OPENERS)
        .map(|i| {
            let (url, start) = (db.url().to_owned(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let store = PostgresStore::open(&url).expect("concurrent open");
                let e = entry("o.example", "d.example", &format!("t{i}"));
                assert!(matches!(
                    store.insert(e, &unlimited()),
                    Ok(InsertOutcome::Stored(_))
                ));
            })
        })
        .collect();
    for h in handles {
        h.join().expect("opener");
    }
    let store = PostgresStore::open(db.url()).expect("open");
    assert_eq!(store.queued(&server("d.example")), Ok(OPENERS as u64));
}

/// Two stores (as two relay processes would be) share one queue: each
/// entry delivered once, quotas counted across both.
#[test]
fn two_stores_share_one_queue() {
    let Some(db) = temp_postgres_database("two_stores_share_one_queue") else {
        return;
    };
    let a = PostgresStore::open(db.url()).expect("open a");
    let b = PostgresStore::open(db.url()).expect("open b");
    let quota = Quota {
        destination_entries: 3,
        ..unlimited()
    };
    let stores: [&PostgresStore; 2] = [&a, &b];
    for i in 0..3 {
        let e = entry("o.example", "d.example", &format!("t{i}"));
        assert!(matches!(
            stores[i % 2].insert(e, &quota),
            Ok(InsertOutcome::Stored(_))
        ));
    }
    // A duplicate through the other store; then a refusal by either.
    assert!(matches!(
        b.insert(entry("o.example", "d.example", "t0"), &quota),
        Ok(InsertOutcome::Duplicate(_))
    ));
    assert!(matches!(
        a.insert(entry("o.example", "d.example", "t9"), &quota),
        Ok(InsertOutcome::QuotaExceeded(_))
    ));
    let d = server("d.example");
    let mut got = Vec::new();
    let mut ack = None;
    for turn in 0.. {
        match stores[turn % 2].ack_and_next(&d, ack).expect("next").next {
            Some(e) => {
                ack = Some(self::ack(e.entry_id));
                got.push(e.txn_id.to_string());
            }
            None => break,
        }
    }
    assert_eq!(got, ["t0", "t1", "t2"]);
    assert_eq!(a.queued(&d), Ok(0));
}

/// The counters follow rows an operator deletes or truncates by hand.
#[test]
fn counters_follow_manual_deletes() {
    let Some(db) = temp_postgres_database("counters_follow_manual_deletes") else {
        return;
    };
    let store = PostgresStore::open(db.url()).expect("open");
    for i in 0..4 {
        let e = entry("o.example", "d.example", &format!("t{i}"));
        assert!(matches!(
            store.insert(e, &unlimited()),
            Ok(InsertOutcome::Stored(_))
        ));
    }
    sql(db.url(), |c| {
        c.batch_execute("DELETE FROM queue WHERE txn_id IN ('t0', 't1')")
            .expect("delete");
        let err = c
            .batch_execute("UPDATE queue SET body = '\\x00'")
            .expect_err("rows are immutable");
        let message = err.as_db_error().map(|db| db.message().to_owned());
        assert!(
            message.as_deref().is_some_and(|m| m.contains("immutable")),
            "{err:?}"
        );
    });
    assert_eq!(store.queued(&server("d.example")), Ok(2));
    sql(db.url(), |c| {
        c.batch_execute("TRUNCATE queue").expect("truncate");
    });
    assert_eq!(store.queued(&server("d.example")), Ok(0));
    let tiny = Quota {
        total_bytes: 1000,
        ..unlimited()
    };
    assert!(matches!(
        store.insert(entry("o.example", "d.example", "again"), &tiny),
        Ok(InsertOutcome::Stored(_))
    ));
}

/// A connection the server killed is replaced; the store keeps working.
#[test]
fn broken_connections_are_replaced() {
    let Some(db) = temp_postgres_database("broken_connections_are_replaced") else {
        return;
    };
    let store = PostgresStore::open(db.url()).expect("open");
    let d = server("d.example");
    assert_eq!(store.queued(&d), Ok(0));
    let name = db.name().to_owned();
    sql(db.url(), move |c| {
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .expect("terminate the store's connections");
    });
    assert!(matches!(
        store.insert(entry("o.example", "d.example", "t"), &unlimited()),
        Ok(InsertOutcome::Stored(_))
    ));
    assert_eq!(store.queued(&d), Ok(1));
}

#[test]
fn open_through_the_url_dispatch() {
    let Some(db) = temp_postgres_database("open_through_the_url_dispatch") else {
        return;
    };
    let store = relay_store::open(db.url()).expect("relay_store::open(postgres://…)");
    assert_eq!(store.queued(&server("d.example")), Ok(0));
    let alt = db.url().replacen("postgres://", "postgresql://", 1);
    drop(relay_store::open(&alt).expect("postgresql://"));
}

/// `open_existing` creates and migrates nothing: an empty database is
/// refused and stays empty, a current one opens, an older one is refused.
#[test]
fn open_existing_changes_no_schema() {
    let Some(db) = temp_postgres_database("open_existing_changes_no_schema") else {
        return;
    };
    let err = PostgresStore::open_existing(db.url(), 2).expect_err("an empty database");
    assert!(err.0.contains("not a matrix-relay database"), "{err}");
    sql(db.url(), |c| {
        let tables: i64 = c
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                &[],
            )
            .and_then(|r| r.try_get(0))
            .expect("count tables");
        assert_eq!(tables, 0, "open_existing created tables");
    });
    drop(PostgresStore::open(db.url()).expect("open migrates"));
    let store = PostgresStore::open_existing(db.url(), 2).expect("a current database");
    assert_eq!(store.queued(&server("d.example")), Ok(0));
    drop(store);
    sql(db.url(), |c| {
        c.batch_execute("UPDATE matrix_relay_schema SET version = 1")
            .expect("pretend an older version");
    });
    let err = PostgresStore::open_existing(db.url(), 2).expect_err("an older schema");
    assert!(err.0.contains("found version 1"), "{err}");
}
