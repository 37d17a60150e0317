//! The PostgreSQL schema and its migrations.

use postgres::Client;

use relay_core::store::StoreError;

use super::pg_err;

/// Migration steps; `MIGRATIONS[i]` takes the schema from version `i` to
/// `i + 1` (the row of `matrix_relay_schema`). Append only: never edit a
/// step that has shipped.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes. A database with a higher version
/// was written by a newer build and is refused.
pub const POSTGRES_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The key of the transaction-scoped advisory lock that serialises
/// migrations ("mrelay" and a 1), the same in every build.
const MIGRATION_LOCK: i64 = 0x6d72_656c_6179_0001;

/// The version table: one row, created by whoever migrates first.
const VERSION_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS matrix_relay_schema (
    id      integer PRIMARY KEY CHECK (id = 0),
    version integer NOT NULL
);
INSERT INTO matrix_relay_schema (id, version) VALUES (0, 0) ON CONFLICT (id) DO NOTHING;
"#;

/// Version 1: the queue, plus usage counters kept by triggers, as in
/// SQLite's version 1.
///
/// Implementation note: `entry_id` comes from an identity sequence, so IDs
/// are never reused, but with several writers they are not committed in ID
/// order (hence exact acknowledgement). The row triggers update the
/// counters in the inserting or deleting transaction, whoever issues it.
/// Every writer of this crate first locks the one `total_usage` row (`FOR
/// UPDATE`), so writers are serialised (quota checks are exact across
/// processes) and take row locks in one order: they cannot deadlock. A
/// multi-row `DELETE` by an operator, which takes no such lock, may
/// deadlock with a writer; PostgreSQL aborts one of them and the store
/// retries its own. Zero rows are deleted so the tables do not grow with
/// every origin ever seen. `TRUNCATE` resets the counters.
const V1: &str = r#"
CREATE TABLE queue (
    entry_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination text NOT NULL,
    origin      text NOT NULL,
    txn_id      text NOT NULL,
    body        bytea NOT NULL,
    UNIQUE (origin, destination, txn_id)
);
CREATE INDEX queue_by_destination ON queue (destination, entry_id);

CREATE TABLE destination_usage (
    destination text PRIMARY KEY,
    entries     bigint NOT NULL,
    bytes       bigint NOT NULL
);

CREATE TABLE origin_usage (
    origin  text PRIMARY KEY,
    entries bigint NOT NULL,
    bytes   bigint NOT NULL
);

CREATE TABLE total_usage (
    id      integer PRIMARY KEY CHECK (id = 0),
    entries bigint NOT NULL,
    bytes   bigint NOT NULL
);
INSERT INTO total_usage (id, entries, bytes) VALUES (0, 0, 0);

CREATE FUNCTION queue_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO destination_usage AS u (destination, entries, bytes)
        VALUES (NEW.destination, 1, octet_length(NEW.body))
        ON CONFLICT (destination) DO UPDATE
        SET entries = u.entries + 1, bytes = u.bytes + excluded.bytes;
    INSERT INTO origin_usage AS u (origin, entries, bytes)
        VALUES (NEW.origin, 1, octet_length(NEW.body))
        ON CONFLICT (origin) DO UPDATE
        SET entries = u.entries + 1, bytes = u.bytes + excluded.bytes;
    UPDATE total_usage
        SET entries = entries + 1, bytes = bytes + octet_length(NEW.body)
        WHERE id = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_count_insert AFTER INSERT ON queue
    FOR EACH ROW EXECUTE FUNCTION queue_count_insert();

CREATE FUNCTION queue_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE destination_usage
        SET entries = entries - 1, bytes = bytes - octet_length(OLD.body)
        WHERE destination = OLD.destination;
    DELETE FROM destination_usage WHERE destination = OLD.destination AND entries <= 0;
    UPDATE origin_usage
        SET entries = entries - 1, bytes = bytes - octet_length(OLD.body)
        WHERE origin = OLD.origin;
    DELETE FROM origin_usage WHERE origin = OLD.origin AND entries <= 0;
    UPDATE total_usage
        SET entries = entries - 1, bytes = bytes - octet_length(OLD.body)
        WHERE id = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_count_delete AFTER DELETE ON queue
    FOR EACH ROW EXECUTE FUNCTION queue_count_delete();

CREATE FUNCTION queue_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM destination_usage;
    DELETE FROM origin_usage;
    UPDATE total_usage SET entries = 0, bytes = 0 WHERE id = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_count_truncate AFTER TRUNCATE ON queue
    FOR EACH STATEMENT EXECUTE FUNCTION queue_count_truncate();

-- Rows are only ever inserted and deleted; an UPDATE would bypass the counters.
CREATE FUNCTION queue_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'queue rows are immutable; delete and insert instead';
END
$$;
CREATE TRIGGER queue_no_update BEFORE UPDATE ON queue
    FOR EACH ROW EXECUTE FUNCTION queue_no_update();
"#;

/// Version 2: the keys of acknowledged entries, as in SQLite's version 4.
///
/// Implementation note: written in the acknowledging transaction, which
/// holds the `total_usage` lock like every writer of this crate, so an
/// insert of the same key is either before it (a duplicate of the queued
/// entry) or after it (sees the key). `seq` numbers the keys as they were
/// remembered (remembering a key again gives it a new one): those past the
/// cap are `seq <= newest - max`, a range at the start of the primary key.
/// A sequence may skip numbers (a rolled-back batch), which only makes the
/// cap forget a little early. `acked_by_time` finds the expired keys.
const V2: &str = r#"
CREATE TABLE acked (
    seq         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    destination text NOT NULL,
    origin      text NOT NULL,
    txn_id      text NOT NULL,
    acked_at    bigint NOT NULL,
    UNIQUE (origin, destination, txn_id)
);
CREATE INDEX acked_by_time ON acked (acked_at);
"#;

/// Version 3: as SQLite's version 5: `received` and `cost` on each entry
/// (existing entries count as received now), `queue_by_received` for the
/// sweep, `pair_usage` for an origin's share of a destination, the byte
/// counters rebuilt as sums of `cost`, and `acked.cost` summed in
/// `total_usage.acked_bytes`.
///
/// Implementation note: the acknowledging statement updates a key
/// remembered already in place (`ON CONFLICT DO UPDATE`), which fires no
/// row trigger; its cost is the same, so `acked_bytes` stays right.
const V3: &str = r#"
ALTER TABLE queue ADD COLUMN received bigint NOT NULL
    DEFAULT (extract(epoch FROM now()) * 1000)::bigint;
ALTER TABLE queue ALTER COLUMN received DROP DEFAULT;
ALTER TABLE queue ADD COLUMN cost bigint NOT NULL DEFAULT 0;
ALTER TABLE queue DISABLE TRIGGER queue_no_update;
UPDATE queue SET cost = octet_length(body) + 5 * octet_length(destination)
    + 4 * octet_length(origin) + 2 * octet_length(txn_id) + 192;
ALTER TABLE queue ENABLE TRIGGER queue_no_update;
ALTER TABLE queue ALTER COLUMN cost DROP DEFAULT;
CREATE INDEX queue_by_received ON queue (received, entry_id);

CREATE TABLE pair_usage (
    destination text NOT NULL,
    origin      text NOT NULL,
    entries     bigint NOT NULL,
    bytes       bigint NOT NULL,
    PRIMARY KEY (destination, origin)
);

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

CREATE OR REPLACE FUNCTION queue_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO destination_usage AS u (destination, entries, bytes)
        VALUES (NEW.destination, 1, NEW.cost)
        ON CONFLICT (destination) DO UPDATE
        SET entries = u.entries + 1, bytes = u.bytes + excluded.bytes;
    INSERT INTO pair_usage AS u (destination, origin, entries, bytes)
        VALUES (NEW.destination, NEW.origin, 1, NEW.cost)
        ON CONFLICT (destination, origin) DO UPDATE
        SET entries = u.entries + 1, bytes = u.bytes + excluded.bytes;
    INSERT INTO origin_usage AS u (origin, entries, bytes)
        VALUES (NEW.origin, 1, NEW.cost)
        ON CONFLICT (origin) DO UPDATE
        SET entries = u.entries + 1, bytes = u.bytes + excluded.bytes;
    UPDATE total_usage
        SET entries = entries + 1, bytes = bytes + NEW.cost
        WHERE id = 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION queue_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION queue_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM destination_usage;
    DELETE FROM pair_usage;
    DELETE FROM origin_usage;
    UPDATE total_usage SET entries = 0, bytes = 0 WHERE id = 0;
    RETURN NULL;
END
$$;

ALTER TABLE acked ADD COLUMN cost bigint NOT NULL DEFAULT 0;
UPDATE acked SET cost = 2 * (octet_length(origin) + octet_length(destination)
    + octet_length(txn_id)) + 64;
ALTER TABLE acked ALTER COLUMN cost DROP DEFAULT;
ALTER TABLE total_usage ADD COLUMN acked_bytes bigint NOT NULL DEFAULT 0;
UPDATE total_usage SET acked_bytes = (SELECT coalesce(sum(cost), 0) FROM acked) WHERE id = 0;

CREATE FUNCTION acked_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE total_usage SET acked_bytes = acked_bytes + NEW.cost WHERE id = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER acked_count_insert AFTER INSERT ON acked
    FOR EACH ROW EXECUTE FUNCTION acked_count_insert();

CREATE FUNCTION acked_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE total_usage SET acked_bytes = acked_bytes - OLD.cost WHERE id = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER acked_count_delete AFTER DELETE ON acked
    FOR EACH ROW EXECUTE FUNCTION acked_count_delete();
"#;

/// Checks, changing nothing, that the database holds the relay's tables
/// at exactly [`POSTGRES_SCHEMA_VERSION`].
pub(super) fn check(client: &mut Client) -> Result<(), StoreError> {
    let version: Option<i32> = client
        .query_opt("SELECT version FROM matrix_relay_schema WHERE id = 0", &[])
        .ok()
        .flatten()
        .and_then(|row| row.try_get(0).ok());
    match version {
        Some(v) if u32::try_from(v) == Ok(POSTGRES_SCHEMA_VERSION) => Ok(()),
        found => Err(StoreError(format!(
            "PostgreSQL: not a matrix-relay database of schema version {POSTGRES_SCHEMA_VERSION} \
             (found {}); this build's `serve` creates or migrates one",
            found.map_or_else(|| "none".to_owned(), |v| format!("version {v}"))
        ))),
    }
}

/// Brings the schema up to [`POSTGRES_SCHEMA_VERSION`], one transaction per step.
///
/// Implementation note: every step first takes a transaction-scoped
/// advisory lock (`pg_advisory_xact_lock`), then reads the version, so two
/// relays starting together on a fresh database run each step once; the
/// second waits for the first to commit, then sees the new version. DDL is
/// transactional in PostgreSQL, so a step is all or nothing.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    migrate_to(client, POSTGRES_SCHEMA_VERSION)
}

/// Brings the schema up to `target` (at most [`POSTGRES_SCHEMA_VERSION`];
/// tests build older databases with it), as [`migrate`] does.
pub(crate) fn migrate_to(client: &mut Client, target: u32) -> Result<(), StoreError> {
    loop {
        let mut tx = client.transaction().map_err(pg_err("begin migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg_err("take the migration lock"))?;
        tx.batch_execute(VERSION_TABLE)
            .map_err(pg_err("create the schema version table"))?;
        let version: i32 = tx
            .query_one("SELECT version FROM matrix_relay_schema WHERE id = 0", &[])
            .and_then(|row| row.try_get(0))
            .map_err(pg_err("read schema version"))?;
        let Ok(version) = u32::try_from(version) else {
            return Err(StoreError(format!(
                "database schema version {version} is not one matrix-relay writes"
            )));
        };
        if version > POSTGRES_SCHEMA_VERSION {
            return Err(StoreError(format!(
                "database schema version {version} is newer than this build supports \
                 ({POSTGRES_SCHEMA_VERSION}); refusing to open it (upgrade matrix-relay)"
            )));
        }
        if version >= target {
            tx.commit().map_err(pg_err("commit schema check"))?;
            return Ok(());
        }
        let Some(step) = MIGRATIONS.get(version as usize) else {
            return Ok(());
        };
        tx.batch_execute(step).map_err(pg_err(&format!(
            "migrate schema to version {}",
            version + 1
        )))?;
        let next = i32::try_from(version + 1).unwrap_or(i32::MAX);
        tx.execute(
            "UPDATE matrix_relay_schema SET version = $1 WHERE id = 0",
            &[&next],
        )
        .map_err(pg_err("write schema version"))?;
        tx.commit().map_err(pg_err("commit migration"))?;
        tracing::info!(version = version + 1, "migrated relay database schema");
    }
}
