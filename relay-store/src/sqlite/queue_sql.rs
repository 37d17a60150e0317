//! The queue operations in SQL, on whatever connection and transaction the
//! caller holds.

use rusqlite::{Connection, OptionalExtension, params};

use relay_core::ServerName;
use relay_core::store::{Ack, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError};

use super::db_err;
use crate::quota_rules::{PRUNE_BATCH, Usage, acked_cutoff, millis, refused_by};
use crate::shared::{counters, destination_usage, entry_id, queued_entry};
use crate::{DestinationUsage, QueueTotals};

/// Inserts `entry` unless it is a duplicate, over quota, or `room` does not
/// admit its bytes (checked last). Runs inside the writer's transaction, so
/// the checks and the insert are atomic.
pub(super) fn insert(
    conn: &Connection,
    entry: &NewEntry,
    quota: &Quota,
    room: &mut dyn FnMut(u64) -> bool,
) -> Result<InsertOutcome, StoreError> {
    let origin = entry.origin.as_str();
    let destination = entry.destination.as_str();
    let existing: Option<i64> = conn
        .prepare_cached(
            "SELECT entry_id FROM queue WHERE origin = ?1 AND destination = ?2 AND txn_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![origin, destination, entry.txn_id.as_str()], |r| {
                r.get(0)
            })
            .optional()
        })
        .map_err(db_err("look up duplicate"))?;
    if let Some(id) = existing {
        return Ok(InsertOutcome::Duplicate(entry_id(id)?));
    }
    if quota.acked.enabled() {
        let remembered = conn
            .prepare_cached(
                "SELECT 1 FROM acked WHERE origin = ?1 AND destination = ?2 AND txn_id = ?3 \
                 AND acked_at > ?4",
            )
            .and_then(|mut s| {
                s.exists(params![
                    origin,
                    destination,
                    entry.txn_id.as_str(),
                    acked_cutoff(entry.received, quota.acked.retention_ms)
                ])
            })
            .map_err(db_err("look up acknowledged key"))?;
        if remembered {
            return Ok(InsertOutcome::AlreadyDelivered);
        }
    }

    let len = u64::try_from(entry.transaction.len()).unwrap_or(u64::MAX);
    let destination_usage = usage(
        conn,
        "SELECT entries, bytes FROM destination_usage WHERE destination = ?1",
        destination,
    )?;
    let origin_usage = usage(
        conn,
        "SELECT entries, bytes FROM origin_usage WHERE origin = ?1",
        origin,
    )?;
    let total = usage(
        conn,
        "SELECT entries, bytes FROM total_usage WHERE id = ?1",
        0,
    )?;
    if let Some(kind) = refused_by(quota, destination_usage, origin_usage, total, len) {
        return Ok(InsertOutcome::QuotaExceeded(kind));
    }
    if !room(len) {
        return Ok(InsertOutcome::DiskLow);
    }

    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO queue (destination, origin, txn_id, body) VALUES (?1, ?2, ?3, ?4) \
             RETURNING entry_id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    destination,
                    origin,
                    entry.txn_id.as_str(),
                    entry.transaction
                ],
                |r| r.get(0),
            )
        })
        .map_err(db_err("insert entry"))?;
    Ok(InsertOutcome::Stored(entry_id(id)?))
}

/// Deletes entry `ack` if it belongs to `destination`, and remembers its
/// key as `ack.keys` says; `true` if it deleted an entry.
///
/// Implementation note: pruning costs O(log n) per acknowledgement plus
/// the rows it deletes. The keys past retention go by the `acked_at` index,
/// at most [`PRUNE_BATCH`] per acknowledgement (inserts compare times
/// themselves, so a key left over is harmless), and the keys past the cap
/// by `seq`, the rowid: `seq` is AUTOINCREMENT, one per key remembered, so
/// those `max` or more before the new one are a range at the start.
pub(super) fn ack(
    conn: &Connection,
    destination: &ServerName,
    ack: &Ack,
) -> Result<bool, StoreError> {
    // An ID beyond i64 cannot be in the table: nothing to delete.
    let Ok(id) = i64::try_from(ack.entry_id.0) else {
        return Ok(false);
    };
    let gone: Option<(String, String)> = conn
        .prepare_cached(
            "DELETE FROM queue WHERE entry_id = ?1 AND destination = ?2 RETURNING origin, txn_id",
        )
        .and_then(|mut s| {
            s.query_row(params![id, destination.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_err("delete acknowledged entry"))?;
    let Some((origin, txn_id)) = gone else {
        return Ok(false);
    };
    conn.prepare_cached(
        "DELETE FROM acked WHERE seq IN \
         (SELECT seq FROM acked WHERE acked_at <= ?1 ORDER BY acked_at LIMIT ?2)",
    )
    .and_then(|mut s| {
        s.execute(params![
            acked_cutoff(ack.at, ack.keys.retention_ms),
            PRUNE_BATCH
        ])
    })
    .map_err(db_err("forget expired acknowledged keys"))?;
    if !ack.keys.enabled() {
        return Ok(true);
    }
    let seq: i64 = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO acked (destination, origin, txn_id, acked_at) \
             VALUES (?1, ?2, ?3, ?4) RETURNING seq",
        )
        .and_then(|mut s| {
            s.query_row(
                params![destination.as_str(), origin, txn_id, millis(ack.at)],
                |r| r.get(0),
            )
        })
        .map_err(db_err("remember acknowledged key"))?;
    let max = i64::try_from(ack.keys.max).unwrap_or(i64::MAX);
    if seq > max {
        conn.prepare_cached("DELETE FROM acked WHERE seq <= ?1")
            .and_then(|mut s| s.execute([seq - max]))
            .map_err(db_err("forget the oldest acknowledged keys"))?;
    }
    Ok(true)
}

/// The oldest entry queued for `destination`.
pub(super) fn next(
    conn: &Connection,
    destination: &ServerName,
) -> Result<Option<QueuedEntry>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT entry_id, origin, txn_id, body FROM queue WHERE destination = ?1 \
             ORDER BY entry_id LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([destination.as_str()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .optional()
        })
        .map_err(db_err("read next entry"))?;
    row.map(|(id, origin, txn_id, transaction)| queued_entry(id, &origin, &txn_id, transaction))
        .transpose()
}

/// Number of entries queued for `destination`, from the usage counters.
pub(super) fn queued(conn: &Connection, destination: &ServerName) -> Result<u64, StoreError> {
    Ok(usage(
        conn,
        "SELECT entries, bytes FROM destination_usage WHERE destination = ?1",
        destination.as_str(),
    )?
    .entries)
}

/// Entries and bytes queued in all, from the `total_usage` row.
pub(super) fn totals(conn: &Connection) -> Result<QueueTotals, StoreError> {
    let Usage { entries, bytes } = usage(
        conn,
        "SELECT entries, bytes FROM total_usage WHERE id = ?1",
        0,
    )?;
    Ok(QueueTotals { entries, bytes })
}

/// The destinations with something queued, most bytes first, from the
/// `destination_usage` rows.
pub(super) fn destinations(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<DestinationUsage>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT destination, entries, bytes FROM destination_usage WHERE entries > 0 \
             ORDER BY bytes DESC, destination LIMIT ?1",
        )
        .and_then(|mut s| {
            s.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(db_err("read destination usage"))?;
    rows.into_iter()
        .map(|(name, entries, bytes)| destination_usage(&name, entries, bytes))
        .collect()
}

/// Deletes up to `limit` of the oldest entries queued for `destination`
/// (the triggers keep the usage counters); returns what it deleted.
pub(super) fn purge_some(
    conn: &Connection,
    destination: &ServerName,
    limit: usize,
) -> Result<QueueTotals, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM queue WHERE entry_id IN \
             (SELECT entry_id FROM queue WHERE destination = ?1 ORDER BY entry_id LIMIT ?2) \
             RETURNING length(body)",
        )
        .map_err(db_err("purge a destination"))?;
    let lengths = stmt
        .query_map(params![destination.as_str(), limit], |r| r.get::<_, i64>(0))
        .map_err(db_err("purge a destination"))?;
    let mut purged = QueueTotals::default();
    for len in lengths {
        let len = len.map_err(db_err("purge a destination"))?;
        purged.entries += 1;
        purged.bytes += u64::try_from(len).unwrap_or(0);
    }
    Ok(purged)
}

fn usage(conn: &Connection, sql: &str, key: impl rusqlite::ToSql) -> Result<Usage, StoreError> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_err("read usage counters"))?;
    let Some((entries, bytes)) = row else {
        return Ok(Usage::default());
    };
    let QueueTotals { entries, bytes } = counters(entries, bytes)?;
    Ok(Usage { entries, bytes })
}
