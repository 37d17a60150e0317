//! The recipient's de-duplication window in SQL, on whatever connection and
//! transaction the caller holds.

use rusqlite::Connection;
use rusqlite::types::ToSqlOutput;

use relay_core::retriever::{DedupeKey, WindowChange};
use relay_core::store::StoreError;
use relay_core::{ServerName, TxnId};

use super::db_err;
use super::rows::{bad_row, execute, for_each_row};

/// Applies `changes` in order. Runs inside the writer's savepoint, which
/// rolls back every change when one fails.
pub(super) fn apply(conn: &Connection, changes: &[WindowChange]) -> Result<(), StoreError> {
    changes.iter().try_for_each(|change| match change {
        WindowChange::Seen(keys) => seen(conn, keys),
        WindowChange::Forget(keys) => keys.iter().try_for_each(|key| {
            let (kind, origin, value) = columns(key);
            execute(
                conn,
                "DELETE FROM retriever_seen WHERE kind = ?1 AND origin = ?2 AND value = ?3",
                (kind, origin, value),
                "forget de-duplication key",
            )
        }),
    })
}

/// Adds a group holding `keys`; a key remembered already moves into it.
fn seen(conn: &Connection, keys: &[DedupeKey]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    // Above every existing group's ID; see the schema's version 3.
    let group: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM retriever_seen")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db_err("number de-duplication group"))?;
    for key in keys {
        let (kind, origin, value) = columns(key);
        // REPLACE deletes the key's old row, wherever it is, and the new
        // row takes the next `seq`: the key moves to the end of this group.
        execute(
            conn,
            "INSERT OR REPLACE INTO retriever_seen (group_id, kind, origin, value) \
             VALUES (?1, ?2, ?3, ?4)",
            (group, kind, origin, value),
            "remember de-duplication key",
        )?;
    }
    Ok(())
}

/// `key` as its `(kind, origin, value)` columns.
fn columns(key: &DedupeKey) -> (&'static str, &str, ToSqlOutput<'_>) {
    match key {
        DedupeKey::Txn(origin, txn_id) => ("txn", origin.as_str(), txn_id.as_str().into()),
        DedupeKey::Digest(digest) => ("digest", "", digest.as_slice().into()),
        DedupeKey::TxnDigest(digest) => ("txn-digest", "", digest.as_slice().into()),
    }
}

/// The window: one group per remembered transaction, oldest first, keys in
/// the order they were remembered.
///
/// Implementation note: the database is outside input. A row that does not
/// decode (unknown kind, bad origin or txn ID, a digest that is not 32
/// bytes of BLOB, a column of the wrong type) fails the whole load with an
/// error naming it; nothing panics.
pub(super) fn load(conn: &Connection) -> Result<Vec<Vec<DedupeKey>>, StoreError> {
    let mut groups: Vec<Vec<DedupeKey>> = Vec::new();
    let mut current = None;
    for_each_row(
        conn,
        "SELECT seq, group_id, kind, origin, value FROM retriever_seen ORDER BY group_id, seq",
        "read the de-duplication window",
        |row| {
            let seq: i64 = row.get(0)?;
            let group: i64 = row.get(1)?;
            let bad = |what| bad_row(format!("de-duplication key {seq}"), what);
            let origin: String = row.get(3)?;
            let key = match row.get_ref(2)?.as_str() {
                Ok("txn") => DedupeKey::Txn(
                    ServerName::parse(&origin).map_err(|_| bad("origin"))?,
                    TxnId::parse(&row.get::<_, String>(4)?).map_err(|_| bad("txn ID"))?,
                ),
                Ok("digest") if origin.is_empty() => DedupeKey::Digest(
                    row.get::<_, Vec<u8>>(4)?
                        .try_into()
                        .map_err(|_| bad("digest"))?,
                ),
                Ok("txn-digest") if origin.is_empty() => DedupeKey::TxnDigest(
                    row.get::<_, Vec<u8>>(4)?
                        .try_into()
                        .map_err(|_| bad("digest"))?,
                ),
                Ok("digest" | "txn-digest") => return Err(bad("origin").into()),
                _ => return Err(bad("kind").into()),
            };
            match groups.last_mut() {
                Some(keys) if current == Some(group) => keys.push(key),
                _ => {
                    groups.push(vec![key]);
                    current = Some(group);
                }
            }
            Ok(())
        },
    )?;
    Ok(groups)
}
