//! The sender's state in SQL, on whatever connection and transaction the
//! caller holds.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use relay_core::outbound::{DestinationRecord, Item, ItemId, ItemKind, OutboundChange, RetryState};
use relay_core::store::StoreError;
use relay_core::{ServerName, TxnId, UnixMillis};

use super::db_err;
use super::rows::{bad_row, execute, for_each_row};
use crate::outbound_rules::{conflicting_item, sql_item_id, sql_millis};

/// Applies `changes` in order. Runs inside the writer's savepoint, which
/// rolls back every change when one fails.
pub(super) fn apply(conn: &Connection, changes: &[OutboundChange]) -> Result<(), StoreError> {
    changes
        .iter()
        .try_for_each(|change| apply_one(conn, change))
}

fn apply_one(conn: &Connection, change: &OutboundChange) -> Result<(), StoreError> {
    match change {
        OutboundChange::Enqueued { destination, item } => enqueue(conn, destination, item),
        OutboundChange::TxnStarted {
            destination,
            txn_id,
            items,
        } => {
            let destination = destination.as_str();
            forget_txn(conn, destination)?;
            execute(
                conn,
                "INSERT INTO outbound_txn (destination, txn_id) VALUES (?1, ?2)",
                params![destination, txn_id.as_str()],
                "record transaction",
            )?;
            for (position, id) in (0_i64..).zip(items) {
                execute(
                    conn,
                    "INSERT INTO outbound_txn_item (destination, position, item_id) \
                     VALUES (?1, ?2, ?3)",
                    params![destination, position, sql_item_id(*id)?],
                    "record transaction item",
                )?;
            }
            Ok(())
        }
        OutboundChange::TxnFinished { destination, items } => {
            let destination = destination.as_str();
            for id in items {
                execute(
                    conn,
                    "DELETE FROM outbound_item WHERE item_id = ?1 AND destination = ?2",
                    params![sql_item_id(*id)?, destination],
                    "delete sent item",
                )?;
            }
            forget_txn(conn, destination)
        }
        OutboundChange::Retry { destination, state } if *state == RetryState::default() => execute(
            conn,
            "DELETE FROM outbound_retry WHERE destination = ?1",
            params![destination.as_str()],
            "clear retry state",
        ),
        OutboundChange::Retry { destination, state } => execute(
            conn,
            "INSERT INTO outbound_retry \
               (destination, direct_failures, failed_attempts, next_retry, blacklisted) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (destination) DO UPDATE SET \
               direct_failures = excluded.direct_failures, \
               failed_attempts = excluded.failed_attempts, \
               next_retry = excluded.next_retry, \
               blacklisted = excluded.blacklisted",
            params![
                destination.as_str(),
                state.direct_failures,
                state.failed_attempts,
                state.next_retry.map(sql_millis),
                state.blacklisted,
            ],
            "store retry state",
        ),
    }
}

/// Queues `item` unless its ID is taken: by the same item (nothing to do)
/// or another (an error).
fn enqueue(conn: &Connection, destination: &ServerName, item: &Item) -> Result<(), StoreError> {
    let id = sql_item_id(item.id)?;
    let args = params![id, destination.as_str(), kind_name(item.kind), item.json];
    let inserted = conn
        .prepare_cached(
            "INSERT INTO outbound_item (item_id, destination, kind, json) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (item_id) DO NOTHING",
        )
        .and_then(|mut s| s.execute(args))
        .map_err(db_err("queue item"))?;
    if inserted > 0 {
        return Ok(());
    }
    let identical: bool = conn
        .prepare_cached(
            "SELECT destination = ?2 AND kind = ?3 AND json = ?4 \
             FROM outbound_item WHERE item_id = ?1",
        )
        .and_then(|mut s| s.query_row(args, |r| r.get(0)))
        .map_err(db_err("compare queued item"))?;
    if identical {
        Ok(())
    } else {
        Err(conflicting_item(item.id))
    }
}

fn forget_txn(conn: &Connection, destination: &str) -> Result<(), StoreError> {
    // Items first, explicitly: a connection without foreign keys (an
    // operator's shell) does not cascade.
    execute(
        conn,
        "DELETE FROM outbound_txn_item WHERE destination = ?1",
        params![destination],
        "forget transaction items",
    )?;
    execute(
        conn,
        "DELETE FROM outbound_txn WHERE destination = ?1",
        params![destination],
        "forget transaction",
    )
}

fn kind_name(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Pdu => "pdu",
        ItemKind::Edu => "edu",
        ItemKind::Transaction => "txn",
    }
}

/// Everything persisted, read in one transaction so the tables agree.
///
/// Implementation note: the database is outside input. A row that does not
/// decode (bad name, txn ID or kind, out-of-range number, wrong type) fails
/// the whole load with an error naming it; nothing panics.
pub(super) fn load(conn: &mut Connection) -> Result<Vec<DestinationRecord>, StoreError> {
    let tx = conn.transaction().map_err(db_err("begin read"))?;
    let mut records = Records::default();
    read_items(&tx, &mut records)?;
    read_txns(&tx, &mut records)?;
    read_retry_states(&tx, &mut records)?;
    Ok(records.0.into_values().collect())
}

/// Adds the queued items, in item ID order.
fn read_items(conn: &Connection, records: &mut Records) -> Result<(), StoreError> {
    for_each_row(
        conn,
        "SELECT item_id, destination, kind, json FROM outbound_item ORDER BY item_id",
        "read queued items",
        |row| {
            let id = item_id(row.get(0)?)?;
            let bad = |what| bad_row(format!("queued item {}", id.0), what);
            let kind = match row.get_ref(2)?.as_str() {
                Ok("pdu") => ItemKind::Pdu,
                Ok("edu") => ItemKind::Edu,
                Ok("txn") => ItemKind::Transaction,
                _ => return Err(bad("kind").into()),
            };
            let json: Vec<u8> = row.get(3)?;
            records
                .of(&row.get::<_, String>(1)?, || bad("destination"))?
                .items
                .push(Item { id, kind, json });
            Ok(())
        },
    )
}

/// Adds the transactions in flight, their items in list order.
fn read_txns(conn: &Connection, records: &mut Records) -> Result<(), StoreError> {
    for_each_row(
        conn,
        "SELECT t.destination, t.txn_id, i.item_id FROM outbound_txn t \
         LEFT JOIN outbound_txn_item i ON i.destination = t.destination \
         ORDER BY t.destination, i.position",
        "read transactions in flight",
        |row| {
            let destination: String = row.get(0)?;
            let bad = |what| bad_row(format!("the transaction for {destination:?}"), what);
            let txn_id: String = row.get(1)?;
            let item: Option<i64> = row.get(2)?;
            let record = records.of(&destination, || bad("destination"))?;
            let (_, items) = match &mut record.txn {
                Some(txn) => txn,
                txn => txn.insert((TxnId::parse(&txn_id).map_err(|_| bad("txn ID"))?, vec![])),
            };
            if let Some(item) = item {
                items.push(item_id(item)?);
            }
            Ok(())
        },
    )
}

/// Adds the retry states.
fn read_retry_states(conn: &Connection, records: &mut Records) -> Result<(), StoreError> {
    for_each_row(
        conn,
        "SELECT destination, direct_failures, failed_attempts, next_retry, blacklisted \
         FROM outbound_retry",
        "read retry states",
        |row| {
            let destination: String = row.get(0)?;
            let bad = |what| bad_row(format!("the retry state of {destination:?}"), what);
            let count = |i| {
                row.get::<_, i64>(i)
                    .map(u32::try_from)
                    .map_err(db_err("read retry state"))?
                    .map_err(|_| bad("failure count"))
            };
            let retry = RetryState {
                direct_failures: count(1)?,
                failed_attempts: count(2)?,
                next_retry: match row.get::<_, Option<i64>>(3)? {
                    None => None,
                    Some(t) => Some(UnixMillis(
                        u64::try_from(t).map_err(|_| bad("next retry time"))?,
                    )),
                },
                blacklisted: match row.get::<_, i64>(4)? {
                    0 => false,
                    1 => true,
                    _ => return Err(bad("blacklisted flag").into()),
                },
            };
            records.of(&destination, || bad("destination"))?.retry = retry;
            Ok(())
        },
    )
}

/// The records being loaded, by destination.
#[derive(Default)]
struct Records(BTreeMap<ServerName, DestinationRecord>);

impl Records {
    /// The record of `destination`, added if new; `bad` if the name is not
    /// a server name.
    fn of(
        &mut self,
        destination: &str,
        bad: impl FnOnce() -> StoreError,
    ) -> Result<&mut DestinationRecord, StoreError> {
        let destination = ServerName::parse(destination).map_err(|_| bad())?;
        Ok(self
            .0
            .entry(destination.clone())
            .or_insert_with(|| DestinationRecord {
                destination,
                items: Vec::new(),
                txn: None,
                retry: RetryState::default(),
            }))
    }
}

fn item_id(id: i64) -> Result<ItemId, StoreError> {
    u64::try_from(id)
        .map(ItemId)
        .map_err(|_| StoreError(format!("item ID {id} in the database is negative")))
}
