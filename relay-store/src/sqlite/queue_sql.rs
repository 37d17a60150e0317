//! The queue operations in SQL, on whatever connection and transaction the
//! caller holds.

use rusqlite::{Connection, OptionalExtension, params};

use relay_core::store::{
    Ack, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError, acked_key_cost,
};
use relay_core::{ServerName, UnixMillis};

use super::db_err;
use crate::quota_rules::{PRUNE_BATCH, Usage, Usages, acked_cutoff, cost_of, millis, refused_by};
use crate::shared::{counters, destination_usage, entry_id, queued_entry};
use crate::{DestinationUsage, QueueTotals};

/// Inserts `entry` unless it is a duplicate, over quota, or `room` does not
/// admit its cost (checked last). Runs inside the writer's transaction, so
/// the checks and the insert are atomic.
pub(super) fn insert(
    conn: &Connection,
    entry: &NewEntry,
    quota: &Quota,
    room: &mut dyn FnMut(u64) -> bool,
) -> Result<InsertOutcome, StoreError> {
    if let Some(known) = known(conn, entry, quota)? {
        return Ok(known);
    }
    let origin = entry.origin.as_str();
    let destination = entry.destination.as_str();
    let cost = cost_of(entry);
    let usages = Usages {
        destination: usage(
            conn,
            "SELECT entries, bytes FROM destination_usage WHERE destination = ?1",
            [destination],
        )?,
        pair: usage(
            conn,
            "SELECT entries, bytes FROM pair_usage WHERE destination = ?1 AND origin = ?2",
            [destination, origin],
        )?,
        origin: usage(
            conn,
            "SELECT entries, bytes FROM origin_usage WHERE origin = ?1",
            [origin],
        )?,
        total: usage(
            conn,
            "SELECT entries, bytes FROM total_usage WHERE id = ?1",
            [0],
        )?,
    };
    if let Some(kind) = refused_by(quota, &usages, cost) {
        return Ok(InsertOutcome::QuotaExceeded(kind));
    }
    if !room(cost) {
        return Ok(InsertOutcome::DiskLow);
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO queue (destination, origin, txn_id, body, received, cost) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING entry_id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    destination,
                    origin,
                    entry.txn_id.as_str(),
                    entry.transaction,
                    millis(entry.received),
                    i64::try_from(cost).unwrap_or(i64::MAX)
                ],
                |r| r.get(0),
            )
        })
        .map_err(db_err("insert entry"))?;
    Ok(InsertOutcome::Stored(entry_id(id)?))
}

/// What an insert of `entry` is when its key is queued (`Duplicate`) or
/// remembered as acknowledged (`AlreadyDelivered`); `None` if neither.
fn known(
    conn: &Connection,
    entry: &NewEntry,
    quota: &Quota,
) -> Result<Option<InsertOutcome>, StoreError> {
    let key = params![
        entry.origin.as_str(),
        entry.destination.as_str(),
        entry.txn_id.as_str()
    ];
    let existing: Option<i64> = conn
        .prepare_cached(
            "SELECT entry_id FROM queue WHERE origin = ?1 AND destination = ?2 AND txn_id = ?3",
        )
        .and_then(|mut s| s.query_row(key, |r| r.get(0)).optional())
        .map_err(db_err("look up duplicate"))?;
    if let Some(id) = existing {
        return Ok(Some(InsertOutcome::Duplicate(entry_id(id)?)));
    }
    if !quota.acked.enabled() {
        return Ok(None);
    }
    let remembered = conn
        .prepare_cached(
            "SELECT 1 FROM acked WHERE origin = ?1 AND destination = ?2 AND txn_id = ?3 \
             AND acked_at > ?4",
        )
        .and_then(|mut s| {
            s.exists(params![
                entry.origin.as_str(),
                entry.destination.as_str(),
                entry.txn_id.as_str(),
                acked_cutoff(entry.received, quota.acked.retention_ms)
            ])
        })
        .map_err(db_err("look up acknowledged key"))?;
    Ok(remembered.then_some(InsertOutcome::AlreadyDelivered))
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
    remember(conn, destination, &origin, &txn_id, ack)?;
    Ok(true)
}

/// Remembers the key (origin, `destination`, txn ID) as acknowledged by
/// `ack`, then forgets the oldest keys past `ack.keys.max` and
/// `ack.keys.max_bytes`.
///
/// Implementation note: a key remembered before is deleted and inserted,
/// not replaced, so the triggers keep `acked_bytes`. Past the byte bound
/// the oldest keys go one by one (each O(log n)): usually one per
/// acknowledgement, as each adds one.
fn remember(
    conn: &Connection,
    destination: &ServerName,
    origin: &str,
    txn_id: &str,
    ack: &Ack,
) -> Result<(), StoreError> {
    let key = params![origin, destination.as_str(), txn_id];
    conn.prepare_cached("DELETE FROM acked WHERE origin = ?1 AND destination = ?2 AND txn_id = ?3")
        .and_then(|mut s| s.execute(key))
        .map_err(db_err("forget a key remembered before"))?;
    let cost = acked_key_cost(origin, destination.as_str(), txn_id);
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO acked (destination, origin, txn_id, acked_at, cost) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    destination.as_str(),
                    origin,
                    txn_id,
                    millis(ack.at),
                    i64::try_from(cost).unwrap_or(i64::MAX)
                ],
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
    let max_bytes = i64::try_from(ack.keys.max_bytes).unwrap_or(i64::MAX);
    loop {
        let bytes: i64 = conn
            .prepare_cached("SELECT acked_bytes FROM total_usage WHERE id = 0")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(db_err("read the bytes of acknowledged keys"))?;
        if bytes <= max_bytes {
            return Ok(());
        }
        let forgot = conn
            .prepare_cached("DELETE FROM acked WHERE seq = (SELECT min(seq) FROM acked)")
            .and_then(|mut s| s.execute([]))
            .map_err(db_err("forget the oldest acknowledged key"))?;
        if forgot == 0 {
            return Ok(());
        }
    }
}

/// The oldest entry queued for `destination` received at or after
/// `expired_before`.
pub(super) fn next(
    conn: &Connection,
    destination: &ServerName,
    expired_before: UnixMillis,
) -> Result<Option<QueuedEntry>, StoreError> {
    Ok(oldest(conn, destination, expired_before, 1)?.pop())
}

/// The oldest `n` entries queued for `destination` received at or after
/// `expired_before`, by the `queue_by_destination` index.
pub(super) fn oldest(
    conn: &Connection,
    destination: &ServerName,
    expired_before: UnixMillis,
    n: usize,
) -> Result<Vec<QueuedEntry>, StoreError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let rows: Vec<(i64, String, String, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT entry_id, origin, txn_id, body FROM queue WHERE destination = ?1 \
             AND received >= ?2 ORDER BY entry_id LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(
                params![destination.as_str(), millis(expired_before), n],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect()
        })
        .map_err(db_err("read the oldest entries"))?;
    rows.into_iter()
        .map(|(id, origin, txn_id, transaction)| queued_entry(id, &origin, &txn_id, transaction))
        .collect()
}

/// Number of entries queued for `destination`, from the usage counters.
pub(super) fn queued(conn: &Connection, destination: &ServerName) -> Result<u64, StoreError> {
    Ok(usage(
        conn,
        "SELECT entries, bytes FROM destination_usage WHERE destination = ?1",
        [destination.as_str()],
    )?
    .entries)
}

/// Entries and bytes queued in all, from the `total_usage` row.
pub(super) fn totals(conn: &Connection) -> Result<QueueTotals, StoreError> {
    let Usage { entries, bytes } = usage(
        conn,
        "SELECT entries, bytes FROM total_usage WHERE id = ?1",
        [0],
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
    let rows: Vec<(String, i64, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT destination, entries, bytes, (SELECT received FROM queue q \
             WHERE q.destination = u.destination ORDER BY entry_id LIMIT 1) \
             FROM (SELECT destination, entries, bytes FROM destination_usage \
             WHERE entries > 0 ORDER BY bytes DESC, destination LIMIT ?1) u \
             ORDER BY bytes DESC, destination",
        )
        .and_then(|mut s| {
            s.query_map([limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(db_err("read destination usage"))?;
    rows.into_iter()
        .map(|(name, entries, bytes, oldest)| destination_usage(&name, entries, bytes, oldest))
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
    deleted(
        conn,
        "DELETE FROM queue WHERE entry_id IN \
         (SELECT entry_id FROM queue WHERE destination = ?1 ORDER BY entry_id LIMIT ?2) \
         RETURNING cost",
        params![destination.as_str(), limit],
        "purge a destination",
    )
}

/// Deletes up to `limit` entries received before `expired_before`, oldest
/// first, by the `queue_by_received` index; returns what it deleted.
pub(super) fn expire(
    conn: &Connection,
    expired_before: UnixMillis,
    limit: usize,
) -> Result<QueueTotals, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    deleted(
        conn,
        "DELETE FROM queue WHERE entry_id IN \
         (SELECT entry_id FROM queue WHERE received < ?1 ORDER BY received LIMIT ?2) \
         RETURNING cost",
        params![millis(expired_before), limit],
        "delete expired entries",
    )
}

/// Runs a `DELETE … RETURNING cost` and sums what it deleted.
fn deleted(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &str,
) -> Result<QueueTotals, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err(what))?;
    let costs = stmt
        .query_map(params, |r| r.get::<_, i64>(0))
        .map_err(db_err(what))?;
    let mut gone = QueueTotals::default();
    for cost in costs {
        let cost = cost.map_err(db_err(what))?;
        gone.entries += 1;
        gone.bytes += u64::try_from(cost).unwrap_or(0);
    }
    Ok(gone)
}

fn usage(conn: &Connection, sql: &str, key: impl rusqlite::Params) -> Result<Usage, StoreError> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row(key, |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_err("read usage counters"))?;
    let Some((entries, bytes)) = row else {
        return Ok(Usage::default());
    };
    let QueueTotals { entries, bytes } = counters(entries, bytes)?;
    Ok(Usage { entries, bytes })
}
