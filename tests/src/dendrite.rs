//! Serde mirrors of gomatrixserverlib's relay wire types, decoded the way Go's
//! `encoding/json` would: unknown fields ignored, missing or `null` fields
//! zero, wrong types an error.
//!
//! From `fclient/relaytypes.go`:
//!
//! ```go
//! type RelayEntry struct { EntryID int64 `json:"entry_id"` }
//! type RespGetRelayTransaction struct {
//!     Transaction   gomatrixserverlib.Transaction `json:"transaction"`
//!     EntryID       int64                         `json:"entry_id,omitempty"`
//!     EntriesQueued bool                          `json:"entries_queued"`
//! }
//! ```
//!
//! and `Transaction {Origin, OriginServerTS uint64, PDUs []json.RawMessage,
//! EDUs []EDU (omitempty)}`, `EDU {Type "edu_type", Origin, Destination,
//! Content}`. A PUT to `send_relay` decodes into `EmptyResp struct{}`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `gomatrixserverlib.Transaction` as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// `origin`.
    #[serde(default, deserialize_with = "nullable")]
    pub origin: String,
    /// `origin_server_ts` (Go `spec.Timestamp`, a uint64).
    #[serde(default, deserialize_with = "nullable")]
    pub origin_server_ts: u64,
    /// `pdus` (Go `[]json.RawMessage`).
    #[serde(default, deserialize_with = "nullable")]
    pub pdus: Vec<Value>,
    /// `edus` (Go `[]EDU`, omitempty).
    #[serde(default, deserialize_with = "nullable")]
    pub edus: Vec<Edu>,
}

/// `gomatrixserverlib.EDU` as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Edu {
    /// `edu_type`.
    #[serde(default, deserialize_with = "nullable")]
    pub edu_type: String,
    /// `origin`.
    #[serde(default, deserialize_with = "nullable")]
    pub origin: String,
    /// `destination` (omitempty).
    #[serde(default, deserialize_with = "nullable")]
    pub destination: String,
    /// `content` (raw JSON).
    #[serde(default)]
    pub content: Value,
}

/// `fclient.RelayEntry`: the body of `GET relay_txn`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEntry {
    /// `entry_id` (int64).
    #[serde(default, deserialize_with = "nullable")]
    pub entry_id: i64,
}

/// `fclient.RespGetRelayTransaction`: the answer to `GET relay_txn`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RespGetRelayTransaction {
    /// `transaction`.
    #[serde(default, deserialize_with = "nullable")]
    pub transaction: Transaction,
    /// `entry_id` (int64, omitempty).
    #[serde(default, deserialize_with = "nullable")]
    pub entry_id: i64,
    /// `entries_queued`.
    #[serde(default, deserialize_with = "nullable")]
    pub entries_queued: bool,
}

/// `fclient.EmptyResp`: the answer to `PUT send_relay`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResp {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_like_go() {
        let r: RespGetRelayTransaction = serde_json::from_value(json!({
            "transaction": {"origin": "a", "origin_server_ts": 5, "pdus": [{"x": 1}], "edus": null, "extra": 1},
            "entry_id": 3, "entries_queued": true, "txn_id": "t"
        }))
        .expect("decodes");
        assert_eq!(
            (r.entry_id, r.entries_queued, r.transaction.pdus.len()),
            (3, true, 1)
        );
        let empty: RespGetRelayTransaction = serde_json::from_value(json!({})).expect("zero value");
        assert_eq!(empty, RespGetRelayTransaction::default());
        assert!(
            serde_json::from_value::<RespGetRelayTransaction>(json!({"entry_id": "3"})).is_err()
        );
        assert!(
            serde_json::from_value::<RespGetRelayTransaction>(json!({"entries_queued": 1}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<RespGetRelayTransaction>(json!({"transaction": {"pdus": {}}}))
                .is_err()
        );
    }
}
