//! The SQLite schema and its migrations.

use rusqlite::{Connection, TransactionBehavior};

use relay_core::store::StoreError;

use super::db_err;

/// Migration steps; `MIGRATIONS[i]` takes the schema from version `i` to
/// `i + 1` (`PRAGMA user_version`). Append only: never edit a step that
/// has shipped.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The schema version this build writes. A database with a higher
/// `user_version` was written by a newer build and is refused.
pub const SQLITE_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Version 1: the queue, plus usage counters kept by triggers.
///
/// Implementation note: triggers keep the counters in the same transaction
/// as every insert and delete of `queue`, whoever issues it (an operator
/// deleting rows with the `sqlite3` shell included), so quota checks are
/// three point lookups instead of `COUNT(*)` scans. Zero rows are deleted
/// so the tables do not grow with every origin ever seen. `body` lengths
/// are taken as BLOB so they are bytes, never characters.
const V1: &str = r#"
CREATE TABLE queue (
    entry_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    body        BLOB NOT NULL CHECK (typeof(body) = 'blob'),
    UNIQUE (origin, destination, txn_id)
);
CREATE INDEX queue_by_destination ON queue (destination, entry_id);

CREATE TABLE destination_usage (
    destination TEXT PRIMARY KEY,
    entries     INTEGER NOT NULL,
    bytes       INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE origin_usage (
    origin  TEXT PRIMARY KEY,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE total_usage (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT INTO total_usage (id, entries, bytes) VALUES (0, 0, 0);

CREATE TRIGGER queue_count_insert AFTER INSERT ON queue BEGIN
    INSERT INTO destination_usage (destination, entries, bytes)
        VALUES (NEW.destination, 1, length(CAST(NEW.body AS BLOB)))
        ON CONFLICT (destination) DO UPDATE
        SET entries = entries + 1, bytes = bytes + excluded.bytes;
    INSERT INTO origin_usage (origin, entries, bytes)
        VALUES (NEW.origin, 1, length(CAST(NEW.body AS BLOB)))
        ON CONFLICT (origin) DO UPDATE
        SET entries = entries + 1, bytes = bytes + excluded.bytes;
    UPDATE total_usage
        SET entries = entries + 1, bytes = bytes + length(CAST(NEW.body AS BLOB))
        WHERE id = 0;
END;

CREATE TRIGGER queue_count_delete AFTER DELETE ON queue BEGIN
    UPDATE destination_usage
        SET entries = entries - 1, bytes = bytes - length(CAST(OLD.body AS BLOB))
        WHERE destination = OLD.destination;
    DELETE FROM destination_usage WHERE destination = OLD.destination AND entries <= 0;
    UPDATE origin_usage
        SET entries = entries - 1, bytes = bytes - length(CAST(OLD.body AS BLOB))
        WHERE origin = OLD.origin;
    DELETE FROM origin_usage WHERE origin = OLD.origin AND entries <= 0;
    UPDATE total_usage
        SET entries = entries - 1, bytes = bytes - length(CAST(OLD.body AS BLOB))
        WHERE id = 0;
END;

-- Rows are only ever inserted and deleted; an UPDATE would bypass the counters.
CREATE TRIGGER queue_no_update BEFORE UPDATE ON queue BEGIN
    SELECT RAISE(ABORT, 'queue rows are immutable; delete and insert instead');
END;
"#;

/// Version 2: the sender's state ([`relay_core::outbound`]), for nodes.
///
/// Implementation note: item IDs come from the machine, so `item_id` is a
/// plain `INTEGER PRIMARY KEY` (the rowid: a queue in ID order is a rowid
/// scan). `kind` is `'pdu'` or `'edu'`, and nothing but the decoder checks
/// it, so a later kind needs no table rebuild. A transaction's item list is
/// rows in `outbound_txn_item`, in `position` order. A default retry state
/// has no row. The relay's tables are untouched.
const V2: &str = r#"
CREATE TABLE outbound_item (
    item_id     INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    kind        TEXT NOT NULL,
    json        BLOB NOT NULL CHECK (typeof(json) = 'blob')
);

CREATE TABLE outbound_txn (
    destination TEXT PRIMARY KEY,
    txn_id      TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbound_txn_item (
    destination TEXT NOT NULL REFERENCES outbound_txn (destination) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    item_id     INTEGER NOT NULL,
    PRIMARY KEY (destination, position)
) WITHOUT ROWID;

CREATE TABLE outbound_retry (
    destination     TEXT PRIMARY KEY,
    direct_failures INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL,
    next_retry      INTEGER,
    blacklisted     INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Version 3: the recipient's de-duplication window
/// ([`relay_core::retriever`]), for nodes.
///
/// Implementation note: one row per remembered key. A
/// `DedupeKey::Txn(origin, txn_id)` is `('txn', origin, txn_id)` with the
/// txn ID as TEXT; a `DedupeKey::Digest` is `('digest', '', digest)` and a
/// `DedupeKey::TxnDigest` `('txn-digest', '', digest)`, with the 32 bytes
/// as BLOB. A key is unique, so it is in one group at most.
/// `seq` (AUTOINCREMENT, so never reused) orders keys as they were
/// remembered; `group_id` names the transaction, and a group is simply the
/// rows that share it, so one whose keys are all forgotten is gone. A new
/// group's ID is `MAX(seq) + 1`: above every existing group's (each is at
/// most the `seq` of its own rows), so groups load in the order they were
/// remembered, without an index on `group_id`. Like `outbound_item.kind`,
/// `kind` is checked by the decoder alone. Earlier tables are untouched.
const V3: &str = r#"
CREATE TABLE retriever_seen (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    origin   TEXT NOT NULL,
    -- No declared type, so no affinity: a txn ID stays TEXT (even '123'),
    -- a digest BLOB.
    value    NOT NULL,
    UNIQUE (kind, origin, value)
);
"#;

/// Version 4: the keys of acknowledged entries, so that a retransmission
/// after the acknowledgement is not stored again.
///
/// Implementation note: one row per key, written in the acknowledging
/// transaction. `seq` (AUTOINCREMENT, so never reused) numbers the keys as
/// they were remembered: the ones past the cap are those with
/// `seq <= newest - max`, a range at the start of the rowid. `acked_by_time`
/// finds the expired ones. Earlier tables are untouched.
const V4: &str = r#"
CREATE TABLE acked (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    acked_at    INTEGER NOT NULL,
    UNIQUE (origin, destination, txn_id)
);
CREATE INDEX acked_by_time ON acked (acked_at);
"#;

/// Version 5: entries expire and are counted as what they cost; an
/// origin's share of a destination is counted; remembered keys are
/// counted in bytes.
///
/// Implementation note: `received` (the relay's clock, in ms) with the
/// index `queue_by_received` lets the sweep find expired entries without a
/// scan; entries queued before this version count as received now. `cost`
/// is `relay_core::store::entry_cost`, computed by the writer (and once
/// here, the same formula, for the rows already queued), and is what every
/// byte counter adds up; the counters are rebuilt from the rows.
/// `pair_usage` counts (destination, origin), for the origin's share. The
/// `acked_bytes` of `total_usage` sums `acked.cost`
/// (`relay_core::store::acked_key_cost`), kept by triggers: keys are
/// inserted and deleted, never replaced (a REPLACE would not fire the
/// delete trigger).
const V5: &str = r#"
DROP TRIGGER queue_count_insert;
DROP TRIGGER queue_count_delete;
DROP TRIGGER queue_no_update;

ALTER TABLE queue ADD COLUMN received INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
UPDATE queue SET
    received = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
    cost = length(CAST(body AS BLOB)) + 5 * length(CAST(destination AS BLOB))
        + 4 * length(CAST(origin AS BLOB)) + 2 * length(CAST(txn_id AS BLOB)) + 192;
CREATE INDEX queue_by_received ON queue (received);

CREATE TABLE pair_usage (
    destination TEXT NOT NULL,
    origin      TEXT NOT NULL,
    entries     INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    PRIMARY KEY (destination, origin)
) WITHOUT ROWID;

DELETE FROM destination_usage;
DELETE FROM origin_usage;
INSERT INTO destination_usage (destination, entries, bytes)
    SELECT destination, count(*), sum(cost) FROM queue GROUP BY destination;
INSERT INTO origin_usage (origin, entries, bytes)
    SELECT origin, count(*), sum(cost) FROM queue GROUP BY origin;
INSERT INTO pair_usage (destination, origin, entries, bytes)
    SELECT destination, origin, count(*), sum(cost) FROM queue GROUP BY destination, origin;
UPDATE total_usage SET
    entries = (SELECT count(*) FROM queue),
    bytes = (SELECT coalesce(sum(cost), 0) FROM queue)
    WHERE id = 0;

CREATE TRIGGER queue_count_insert AFTER INSERT ON queue BEGIN
    INSERT INTO destination_usage (destination, entries, bytes)
        VALUES (NEW.destination, 1, NEW.cost)
        ON CONFLICT (destination) DO UPDATE
        SET entries = entries + 1, bytes = bytes + excluded.bytes;
    INSERT INTO pair_usage (destination, origin, entries, bytes)
        VALUES (NEW.destination, NEW.origin, 1, NEW.cost)
        ON CONFLICT (destination, origin) DO UPDATE
        SET entries = entries + 1, bytes = bytes + excluded.bytes;
    INSERT INTO origin_usage (origin, entries, bytes)
        VALUES (NEW.origin, 1, NEW.cost)
        ON CONFLICT (origin) DO UPDATE
        SET entries = entries + 1, bytes = bytes + excluded.bytes;
    UPDATE total_usage
        SET entries = entries + 1, bytes = bytes + NEW.cost
        WHERE id = 0;
END;

CREATE TRIGGER queue_count_delete AFTER DELETE ON queue BEGIN
    UPDATE destination_usage
        SET entries = entries - 1, bytes = bytes - OLD.cost
        WHERE destination = OLD.destination;
    DELETE FROM destination_usage WHERE destination = OLD.destination AND entries <= 0;
    UPDATE pair_usage
        SET entries = entries - 1, bytes = bytes - OLD.cost
        WHERE destination = OLD.destination AND origin = OLD.origin;
    DELETE FROM pair_usage
        WHERE destination = OLD.destination AND origin = OLD.origin AND entries <= 0;
    UPDATE origin_usage
        SET entries = entries - 1, bytes = bytes - OLD.cost
        WHERE origin = OLD.origin;
    DELETE FROM origin_usage WHERE origin = OLD.origin AND entries <= 0;
    UPDATE total_usage
        SET entries = entries - 1, bytes = bytes - OLD.cost
        WHERE id = 0;
END;

CREATE TRIGGER queue_no_update BEFORE UPDATE ON queue BEGIN
    SELECT RAISE(ABORT, 'queue rows are immutable; delete and insert instead');
END;

ALTER TABLE acked ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;
UPDATE acked SET cost = 2 * (length(CAST(origin AS BLOB)) + length(CAST(destination AS BLOB))
    + length(CAST(txn_id AS BLOB))) + 64;
ALTER TABLE total_usage ADD COLUMN acked_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE total_usage SET acked_bytes = (SELECT coalesce(sum(cost), 0) FROM acked) WHERE id = 0;

CREATE TRIGGER acked_count_insert AFTER INSERT ON acked BEGIN
    UPDATE total_usage SET acked_bytes = acked_bytes + NEW.cost WHERE id = 0;
END;
CREATE TRIGGER acked_count_delete AFTER DELETE ON acked BEGIN
    UPDATE total_usage SET acked_bytes = acked_bytes - OLD.cost WHERE id = 0;
END;
"#;

/// Checks, changing nothing, that the database is a relay database of
/// exactly [`SQLITE_SCHEMA_VERSION`].
pub(super) fn check(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_err("read schema version"))?;
    if version != i64::from(SQLITE_SCHEMA_VERSION) {
        return Err(StoreError(format!(
            "sqlite: not a matrix-relay database of schema version {SQLITE_SCHEMA_VERSION} \
             (found version {version}); this build's `serve` creates or migrates one"
        )));
    }
    Ok(())
}

/// Brings the schema up to [`SQLITE_SCHEMA_VERSION`], one transaction per step.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SQLITE_SCHEMA_VERSION)
}

/// Brings the schema up to `target` (at most [`SQLITE_SCHEMA_VERSION`]; tests build
/// older databases with it), one transaction per step.
///
/// Implementation note: the version is read inside `BEGIN IMMEDIATE`, so two
/// processes opening a fresh file at once cannot both run a step.
pub(super) fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("begin migration"))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db_err("read schema version"))?;
        let Ok(version) = u32::try_from(version) else {
            return Err(StoreError(format!(
                "database schema version {version} is not one matrix-relay writes"
            )));
        };
        if version > SQLITE_SCHEMA_VERSION {
            return Err(StoreError(format!(
                "database schema version {version} is newer than this build supports \
                 ({SQLITE_SCHEMA_VERSION}); refusing to open it (upgrade matrix-relay)"
            )));
        }
        if version >= target {
            return Ok(());
        }
        let Some(step) = MIGRATIONS.get(version as usize) else {
            return Ok(());
        };
        tx.execute_batch(step).map_err(db_err(&format!(
            "migrate schema to version {}",
            version + 1
        )))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(db_err("write schema version"))?;
        tx.commit().map_err(db_err("commit migration"))?;
        tracing::info!(version = version + 1, "migrated relay database schema");
    }
}
