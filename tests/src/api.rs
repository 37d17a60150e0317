//! The relay endpoints as signed calls, and transactions to send.

use serde_json::{Value, json};

use crate::dendrite::RespGetRelayTransaction;
use crate::http::HttpResponse;
use crate::identity::{Server, signed_request};
use crate::process::RelayProcess;

/// `/_matrix/federation/v1/send_relay/{txn_id}/{user_segment}`, both
/// segments as given (raw).
pub fn send_relay_path(txn_id: &str, user_segment: &str) -> String {
    format!("/_matrix/federation/v1/send_relay/{txn_id}/{user_segment}")
}

/// `/_matrix/federation/v1/relay_txn/{user_segment}` (raw).
pub fn relay_txn_path(user_segment: &str) -> String {
    format!("/_matrix/federation/v1/relay_txn/{user_segment}")
}

/// Percent-encodes every byte that is not unreserved (`@` → `%40`, `:` →
/// `%3A`).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A transaction body claiming `origin`, with one PDU `{"marker": marker}`
/// (so the test can recognise it) and no EDUs.
pub fn txn_body(origin: &str, marker: &str) -> Value {
    json!({
        "origin": origin,
        "origin_server_ts": 1_700_000_000_000_u64,
        "pdus": [{"marker": marker}],
        "edus": [],
    })
}

/// `PUT send_relay/{txn_id}/{user_segment}` from `from` to `relay`, body
/// `body` (serialised compactly), signed.
pub fn put_txn(
    relay: &RelayProcess,
    from: &Server,
    txn_id: &str,
    user_segment: &str,
    body: &Value,
) -> HttpResponse {
    let body = serde_json::to_vec(body).expect("serialise a JSON value");
    put_txn_bytes(relay, from, txn_id, user_segment, &body)
}

/// Like [`put_txn`] with the body bytes as given.
pub fn put_txn_bytes(
    relay: &RelayProcess,
    from: &Server,
    txn_id: &str,
    user_segment: &str,
    body: &[u8],
) -> HttpResponse {
    signed_request(
        from,
        relay.server_name(),
        "PUT",
        &send_relay_path(txn_id, user_segment),
        body,
    )
    .send(relay.addr())
}

/// Stores `txn_body(from, marker)` and asserts 200 `{}`.
#[track_caller]
pub fn store(relay: &RelayProcess, from: &Server, txn_id: &str, user_segment: &str, marker: &str) {
    let resp = put_txn(
        relay,
        from,
        txn_id,
        user_segment,
        &txn_body(from.name(), marker),
    );
    assert_eq!(
        (resp.status, resp.is_json(), resp.json()),
        (200, true, json!({})),
        "PUT {txn_id} for {user_segment} from {}:\n{resp:?}",
        from.name()
    );
}

/// `GET relay_txn/{user_segment}` as `as_server`, body `{"entry_id": N}`
/// (or empty for `None`), signed.
pub fn relay_txn(
    relay: &RelayProcess,
    as_server: &Server,
    user_segment: &str,
    entry_id: Option<u64>,
) -> HttpResponse {
    let body = entry_id
        .map(|id| serde_json::to_vec(&json!({ "entry_id": id })).expect("serialise"))
        .unwrap_or_default();
    relay_txn_bytes(relay, as_server, user_segment, &body)
}

/// Like [`relay_txn`] with the body bytes as given.
pub fn relay_txn_bytes(
    relay: &RelayProcess,
    as_server: &Server,
    user_segment: &str,
    body: &[u8],
) -> HttpResponse {
    signed_request(
        as_server,
        relay.server_name(),
        "GET",
        &relay_txn_path(user_segment),
        body,
    )
    .send(relay.addr())
}

/// One transaction handed out by `relay_txn`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pulled {
    /// Its `entry_id`.
    pub entry_id: u64,
    /// The sender's `txn_id` (this project's addition).
    pub txn_id: Option<String>,
    /// The `transaction` object.
    pub transaction: Value,
}

impl Pulled {
    /// The `marker` of its first PDU (see [`txn_body`]).
    pub fn marker(&self) -> Option<&str> {
        self.transaction["pdus"][0]["marker"].as_str()
    }

    /// The transaction's `origin`.
    pub fn origin(&self) -> &str {
        self.transaction["origin"].as_str().unwrap_or_default()
    }
}

/// Asks once, acknowledging `ack`; asserts a well-formed 200 (it must decode
/// as Dendrite's `RespGetRelayTransaction`) and returns the transaction it
/// carries, if any.
#[track_caller]
pub fn pull_one(
    relay: &RelayProcess,
    as_server: &Server,
    user_segment: &str,
    ack: u64,
) -> Option<Pulled> {
    let resp = relay_txn(relay, as_server, user_segment, Some(ack));
    let body = resp.ok_json();
    let decoded: RespGetRelayTransaction =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| {
            panic!("relay_txn response does not decode as Dendrite's ({e}):\n{resp:?}")
        });
    if !decoded.entries_queued {
        assert_eq!(
            body,
            json!({"transaction": {"origin": "", "origin_server_ts": 0, "pdus": [], "edus": []}, "entries_queued": false}),
            "empty queue answer (ack {ack})"
        );
        return None;
    }
    let entry_id = body["entry_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("entries_queued without a non-negative entry_id:\n{resp:?}"));
    assert!(entry_id > 0, "entry_id 0 cannot be acknowledged:\n{resp:?}");
    Some(Pulled {
        entry_id,
        txn_id: body["txn_id"].as_str().map(str::to_owned),
        transaction: body["transaction"].clone(),
    })
}

/// Drains `user_segment`'s queue as `as_server`, acknowledging each entry on
/// the next request, until `entries_queued` is false. Panics after `limit`
/// transactions (a relay that never empties).
#[track_caller]
pub fn drain_up_to(
    relay: &RelayProcess,
    as_server: &Server,
    user_segment: &str,
    limit: usize,
) -> Vec<Pulled> {
    let mut out: Vec<Pulled> = Vec::new();
    let mut ack = 0;
    while let Some(pulled) = pull_one(relay, as_server, user_segment, ack) {
        assert!(
            out.len() < limit,
            "more than {limit} transactions for {user_segment}; last {pulled:?}"
        );
        ack = pulled.entry_id;
        out.push(pulled);
    }
    out
}

/// [`drain_up_to`] with a limit of 10 000.
#[track_caller]
pub fn drain(relay: &RelayProcess, as_server: &Server, user_segment: &str) -> Vec<Pulled> {
    drain_up_to(relay, as_server, user_segment, 10_000)
}

/// The markers of `pulled`, in order.
pub fn markers(pulled: &[Pulled]) -> Vec<String> {
    pulled
        .iter()
        .map(|p| p.marker().unwrap_or("<no marker>").to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encodes_user_ids() {
        assert_eq!(
            percent_encode("@alice:dest.example"),
            "%40alice%3Adest.example"
        );
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
