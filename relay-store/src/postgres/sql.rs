//! The queue operations in SQL, each one transaction on a pooled
//! connection.

use relay_core::store::{Ack, InsertOutcome, NewEntry, QueuedEntry, Quota, StoreError};
use relay_core::{ServerName, UnixMillis};

use postgres::Transaction;

use super::pool::{Conn, Statements};
use crate::quota_rules::{
    PRUNE_BATCH, Usage, Usages, acked_cutoff, cost_of, millis, refused_by, share_limits,
};
use crate::shared::{entry_id, queued_entry};

/// What an insert found, before the rows are checked.
pub(super) enum Inserted {
    /// Stored (committed) with this ID.
    Stored(i64),
    /// The key was queued already, with this ID.
    Duplicate(i64),
    /// The key was acknowledged and is remembered; nothing written.
    AlreadyDelivered,
    /// Refused by a quota; nothing written.
    Refused(relay_core::store::QuotaKind),
    /// The key was queued when the insert ran but gone when its ID was
    /// read (deleted in between by someone who took no lock); nothing
    /// written, try again.
    Vanished,
}

/// Inserts `entry` in a transaction of its own (see [`insert_in`]).
pub(super) fn insert(
    conn: &mut Conn,
    entry: &NewEntry,
    quota: &Quota,
) -> Result<Inserted, postgres::Error> {
    let Conn { client, stmts } = conn;
    let mut tx = client.transaction()?;
    tx.execute(&stmts.lock_total, &[])?;
    let inserted = insert_in(&mut tx, stmts, entry, quota)?;
    tx.commit()?;
    Ok(inserted)
}

/// Inserts `entry` unless it is a duplicate or over quota, inside `tx`,
/// which holds the lock on the `total_usage` row.
///
/// Implementation note: every writer of this crate locks the one
/// `total_usage` row first (`FOR UPDATE`), so writers are serialised and
/// the counters read here are all that was committed: the quota check and
/// the insert are atomic, across processes too, and row locks are always
/// taken in one order (total, then what the triggers touch), so writers do
/// not deadlock. One statement, one round trip: it reads the queued and
/// remembered key and the counters, and inserts only if the key is neither
/// and the entry fits (the quota test in SQL is
/// [`refused_by`]'s; the counters it returns say which quota refused). The
/// duplicate check comes first, as the semantics say; the unique key stays
/// the arbiter (`INSERT … ON CONFLICT DO NOTHING`, then the existing row's
/// ID), so an insert that raced past the check (an operator's, which takes
/// no lock) is still a duplicate, never a second row. The lock also orders
/// an insert and an acknowledgement of the same key: the insert either
/// finds the queued entry or, after it, the remembered key. A refusal
/// writes nothing.
pub(super) fn insert_in(
    tx: &mut Transaction<'_>,
    stmts: &Statements,
    entry: &NewEntry,
    quota: &Quota,
) -> Result<Inserted, postgres::Error> {
    let origin = entry.origin.as_str();
    let destination = entry.destination.as_str();
    let txn_id = entry.txn_id.as_str();
    // Nothing is acknowledged after the end of time: off finds no key.
    let cutoff = if quota.acked.enabled() {
        acked_cutoff(entry.received, quota.acked.retention_ms)
    } else {
        i64::MAX
    };
    let limit = |n: u64| n.to_string();
    let cost = cost_of(entry);
    let (share_entries, share_bytes) = share_limits(quota);
    let row = tx.query_one(
        &stmts.insert,
        &[
            &destination,
            &origin,
            &txn_id,
            &cutoff,
            &entry.transaction,
            &millis(entry.received),
            &i64::try_from(cost).unwrap_or(i64::MAX),
            &limit(quota.destination_entries),
            &limit(quota.destination_bytes),
            &limit(share_entries),
            &limit(share_bytes),
            &limit(quota.origin_entries),
            &limit(quota.origin_bytes),
            &limit(quota.total_entries),
            &limit(quota.total_bytes),
        ],
    )?;
    if let Some(id) = row.try_get::<_, Option<i64>>(10)? {
        return Ok(Inserted::Stored(id));
    }
    if let Some(id) = row.try_get::<_, Option<i64>>(0)? {
        return Ok(Inserted::Duplicate(id));
    }
    if row.try_get::<_, bool>(9)? {
        return Ok(Inserted::AlreadyDelivered);
    }
    let usage = |i: usize| -> Result<Usage, postgres::Error> {
        let entries: Option<i64> = row.try_get(i)?;
        let bytes: Option<i64> = row.try_get(i + 1)?;
        Ok(Usage {
            entries: entries.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            bytes: bytes.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        })
    };
    let usages = Usages {
        destination: usage(1)?,
        pair: usage(3)?,
        origin: usage(5)?,
        total: usage(7)?,
    };
    if let Some(kind) = refused_by(quota, &usages, cost) {
        return Ok(Inserted::Refused(kind));
    }
    // Fits (the statement's quota test agrees with `refused_by`), yet not
    // inserted: the key was inserted after the snapshot by someone who
    // took no lock, and the insert met it.
    match tx.query_opt(&stmts.existing, &[&origin, &destination, &txn_id])? {
        Some(row) => Ok(Inserted::Duplicate(row.try_get(0)?)),
        None => Ok(Inserted::Vanished),
    }
}

/// Turns what [`insert`] found into the trait's answer.
pub(super) fn outcome(inserted: Inserted) -> Result<Option<InsertOutcome>, StoreError> {
    Ok(Some(match inserted {
        Inserted::Stored(id) => InsertOutcome::Stored(entry_id(id)?),
        Inserted::Duplicate(id) => InsertOutcome::Duplicate(entry_id(id)?),
        Inserted::AlreadyDelivered => InsertOutcome::AlreadyDelivered,
        Inserted::Refused(kind) => InsertOutcome::QuotaExceeded(kind),
        Inserted::Vanished => return Ok(None),
    }))
}

/// Deletes the entries `acks` that belong to `destination`, remembering
/// their keys, in a transaction of its own that takes the `total_usage`
/// lock first (see [`insert_in`]); how many it deleted.
pub(super) fn ack(
    conn: &mut Conn,
    destination: &ServerName,
    acks: &[Ack],
) -> Result<u64, postgres::Error> {
    let Conn { client, stmts } = conn;
    let mut tx = client.transaction()?;
    tx.execute(&stmts.lock_total, &[])?;
    let mut deleted = 0;
    for ack in acks {
        if let Some(cutoff) = ack_in(&mut tx, stmts, destination, ack)? {
            forget_expired(&mut tx, stmts, cutoff, 1)?;
            deleted += 1;
        }
    }
    tx.commit()?;
    Ok(deleted)
}

/// Deletes entry `ack` if it belongs to `destination`, and remembers its
/// key as `ack.keys` says, inside `tx`, which holds the lock on the
/// `total_usage` row. Returns, when it deleted an entry, the `acked_at` at
/// or below which remembered keys have expired; the caller forgets those
/// ([`forget_expired`]), once per batch.
///
/// Implementation note: one statement, one round trip (delete and
/// remember), and a second once the cap is reached: the keys past it are
/// forgotten here, by a range of the primary key (`seq`): O(log n) plus
/// one row per acknowledgement.
pub(super) fn ack_in(
    tx: &mut Transaction<'_>,
    stmts: &Statements,
    destination: &ServerName,
    ack: &Ack,
) -> Result<Option<i64>, postgres::Error> {
    // An ID beyond i64 cannot be in the table: nothing to delete.
    let Ok(id) = i64::try_from(ack.entry_id.0) else {
        return Ok(None);
    };
    let row = tx.query_one(
        &stmts.ack,
        &[
            &destination.as_str(),
            &id,
            &millis(ack.at),
            &ack.keys.enabled(),
        ],
    )?;
    if !row.try_get::<_, bool>(0)? {
        return Ok(None);
    }
    if let Some(seq) = row.try_get::<_, Option<i64>>(1)? {
        let max = i64::try_from(ack.keys.max).unwrap_or(i64::MAX);
        if seq > max {
            tx.execute(&stmts.forget_oldest, &[&(seq - max)])?;
        }
        forget_past_bytes(tx, stmts, ack.keys.max_bytes)?;
    }
    Ok(Some(acked_cutoff(ack.at, ack.keys.retention_ms)))
}

/// Forgets the oldest remembered keys while their bytes are past
/// `max_bytes`: one point read when they are not (the usual case).
fn forget_past_bytes(
    tx: &mut Transaction<'_>,
    stmts: &Statements,
    max_bytes: u64,
) -> Result<(), postgres::Error> {
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    loop {
        let bytes: i64 = tx.query_one(&stmts.acked_bytes, &[])?.try_get(0)?;
        if bytes <= max_bytes || tx.execute(&stmts.forget_bytes, &[&(bytes - max_bytes)])? == 0 {
            return Ok(());
        }
    }
}

/// Forgets remembered keys acknowledged at or before `cutoff`, at most
/// [`PRUNE_BATCH`] per acknowledgement (`acks`) this makes up for, oldest
/// first, by the `acked_at` index. Inserts compare times themselves, so a
/// key left over is harmless.
pub(super) fn forget_expired(
    tx: &mut Transaction<'_>,
    stmts: &Statements,
    cutoff: i64,
    acks: usize,
) -> Result<(), postgres::Error> {
    let limit = PRUNE_BATCH.saturating_mul(i64::try_from(acks).unwrap_or(i64::MAX));
    tx.execute(&stmts.forget_expired, &[&cutoff, &limit])?;
    Ok(())
}

/// The raw row of an entry visible for `destination`.
pub(super) type Row = (i64, String, String, Vec<u8>);

/// The oldest `n` entries queued (committed) for `destination` received
/// at or after `expired_before`.
pub(super) fn oldest(
    conn: &mut Conn,
    destination: &ServerName,
    expired_before: UnixMillis,
    n: usize,
) -> Result<Vec<Row>, postgres::Error> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let rows = conn.client.query(
        &conn.stmts.next,
        &[&destination.as_str(), &millis(expired_before), &n],
    )?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

/// Decodes rows of [`oldest`]; the database is outside input, so a bad
/// row is an error, never a panic.
pub(super) fn decode(rows: Vec<Row>) -> Result<Vec<QueuedEntry>, StoreError> {
    rows.into_iter()
        .map(|(id, origin, txn_id, transaction)| queued_entry(id, &origin, &txn_id, transaction))
        .collect()
}

/// Number of entries queued for `destination`, from the usage counters.
pub(super) fn queued(conn: &mut Conn, destination: &ServerName) -> Result<i64, postgres::Error> {
    let row = conn
        .client
        .query_opt(&conn.stmts.queued, &[&destination.as_str()])?;
    row.map_or(Ok(0), |r| r.try_get(0))
}

/// Entries and bytes queued in all, from the `total_usage` row (0 if the
/// row is missing).
pub(super) fn totals(conn: &mut Conn) -> Result<(i64, i64), postgres::Error> {
    let row = conn.client.query_opt(&conn.stmts.totals, &[])?;
    row.map_or(Ok((0, 0)), |r| Ok((r.try_get(0)?, r.try_get(1)?)))
}

/// A destination's usage: name, entries, bytes, when its oldest entry
/// was received.
pub(super) type UsageRow = (String, i64, i64, Option<i64>);

/// The destinations with something queued, most bytes first, from the
/// `destination_usage` rows.
pub(super) fn destinations(
    conn: &mut Conn,
    limit: usize,
) -> Result<Vec<UsageRow>, postgres::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.client.query(
        "SELECT destination, entries, bytes, (SELECT received FROM queue q \
         WHERE q.destination = u.destination ORDER BY entry_id LIMIT 1) \
         FROM (SELECT destination, entries, bytes FROM destination_usage \
         WHERE entries > 0 ORDER BY bytes DESC, destination LIMIT $1) u \
         ORDER BY bytes DESC, destination",
        &[&limit],
    )?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

/// Deletes up to `limit` of the oldest entries queued for `destination`,
/// in a transaction of its own that takes the `total_usage` lock first
/// (see [`insert_in`]); returns the (entries, bytes) deleted.
pub(super) fn purge_some(
    conn: &mut Conn,
    destination: &ServerName,
    limit: usize,
) -> Result<(i64, i64), postgres::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    deleted(
        conn,
        "WITH gone AS (DELETE FROM queue WHERE entry_id IN \
         (SELECT entry_id FROM queue WHERE destination = $1 ORDER BY entry_id LIMIT $2) \
         RETURNING cost) \
         SELECT count(*), coalesce(sum(cost), 0)::bigint FROM gone",
        &[&destination.as_str(), &limit],
    )
}

/// Deletes up to `limit` entries received before `expired_before`, oldest
/// first, by the `queue_by_received` index, in a transaction of its own
/// that takes the `total_usage` lock first; returns the (entries, bytes)
/// deleted.
pub(super) fn expire(
    conn: &mut Conn,
    expired_before: UnixMillis,
    limit: usize,
) -> Result<(i64, i64), postgres::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    deleted(
        conn,
        "WITH gone AS (DELETE FROM queue WHERE entry_id IN \
         (SELECT entry_id FROM queue WHERE received < $1 ORDER BY received, entry_id LIMIT $2) \
         RETURNING cost) \
         SELECT count(*), coalesce(sum(cost), 0)::bigint FROM gone",
        &[&millis(expired_before), &limit],
    )
}

/// Runs a counting delete (`sql` answers one row: count, bytes) in a
/// transaction that takes the `total_usage` lock first (see
/// [`insert_in`]).
fn deleted(
    conn: &mut Conn,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<(i64, i64), postgres::Error> {
    let Conn { client, stmts } = conn;
    let mut tx = client.transaction()?;
    tx.execute(&stmts.lock_total, &[])?;
    let row = tx.query_one(sql, params)?;
    let gone = (row.try_get(0)?, row.try_get(1)?);
    tx.commit()?;
    Ok(gone)
}
