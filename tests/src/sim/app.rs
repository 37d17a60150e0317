//! The application on each node: the PDUs it sends carry unique markers,
//! and its transaction processing (shared by the direct `/send` handler and
//! the retriever's deliveries) is idempotent on (origin, txn ID), as a
//! Matrix server's is.

use std::collections::BTreeMap;
use std::time::Instant;

use relay_core::{ServerName, TxnId};
use serde_json::{Value, json};

/// A PDU's identity: the sending node's index and its sequence number
/// there (0, 1, 2, … in enqueue order).
pub type Marker = (usize, u64);

/// How a transaction reached a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// `PUT /send/{txnId}` from the sender.
    Direct,
    /// Through the relay with this index, handed over by the retriever.
    Relay(usize),
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct => write!(f, "direct"),
            Self::Relay(r) => write!(f, "relay{r}"),
        }
    }
}

/// The JSON of the PDU `marker`, sent by `sender` to `destination`.
pub fn pdu(marker: Marker, sender: &ServerName, destination: &ServerName) -> Vec<u8> {
    json!({
        "type": "m.room.message",
        "sender": format!("@user:{sender}"),
        "room_id": format!("!room:{destination}"),
        "content": {"from": marker.0, "seq": marker.1},
    })
    .to_string()
    .into_bytes()
}

/// The marker of a PDU made by [`pdu`].
pub fn marker_of(pdu: &Value) -> Option<Marker> {
    let content = pdu.get("content")?;
    let from = usize::try_from(content.get("from")?.as_u64()?).ok()?;
    Some((from, content.get("seq")?.as_u64()?))
}

/// The origin and PDU markers of a transaction's JSON.
pub fn parse_transaction(json: &[u8]) -> Result<(ServerName, Vec<Marker>), String> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| format!("transaction is not JSON: {e}"))?;
    let origin = value
        .get("origin")
        .and_then(Value::as_str)
        .and_then(|s| ServerName::parse(s).ok())
        .ok_or("transaction has no origin")?;
    let pdus = value
        .get("pdus")
        .and_then(Value::as_array)
        .ok_or("transaction has no pdus")?;
    let markers = pdus
        .iter()
        .map(|p| marker_of(p).ok_or_else(|| format!("PDU without a marker: {p}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((origin, markers))
}

/// One transaction the application processed for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// How it came.
    pub path: Path,
    /// Its origin.
    pub origin: ServerName,
    /// Its txn ID.
    pub txn_id: TxnId,
    /// Its PDUs.
    pub markers: Vec<Marker>,
    /// When (virtual time).
    pub at: Instant,
}

/// A node's application state. It is durable: a crash of the node loses
/// nothing of it (processing is atomic).
#[derive(Debug, Default)]
pub struct App {
    /// Every transaction processed, by (origin, txn ID), with its PDUs.
    processed: BTreeMap<(ServerName, TxnId), Vec<Marker>>,
    /// Transactions processed for the first time, in order.
    pub log: Vec<Processed>,
    /// Copies dropped because their (origin, txn ID) was processed before.
    pub duplicates: u64,
}

impl App {
    /// Processes a transaction: the first copy of each (origin, txn ID)
    /// is applied, later ones are dropped. A later copy with other PDUs
    /// than the first is an error (a txn ID must name one transaction).
    pub fn process(
        &mut self,
        path: Path,
        origin: &ServerName,
        txn_id: &TxnId,
        markers: Vec<Marker>,
        at: Instant,
    ) -> Result<bool, String> {
        let key = (origin.clone(), txn_id.clone());
        if let Some(first) = self.processed.get(&key) {
            if *first != markers {
                return Err(format!(
                    "txn {txn_id} of {origin} came with PDUs {markers:?} via {path}, \
                     but with {first:?} before"
                ));
            }
            self.duplicates += 1;
            return Ok(false);
        }
        self.processed.insert(key, markers.clone());
        self.log.push(Processed {
            path,
            origin: origin.clone(),
            txn_id: txn_id.clone(),
            markers,
            at,
        });
        Ok(true)
    }
}
