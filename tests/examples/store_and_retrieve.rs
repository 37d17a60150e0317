//! A store-and-retrieve session against a running relay, as two P2P nodes.
//!
//! Start a relay that accepts P2P names and serves everyone:
//!
//! ```sh
//! cargo run --release -p matrix-relay -- serve --server-name relay.example \
//!     --signing-key relay.key --open --p2p-keys
//! ```
//!
//! then, in another terminal:
//!
//! ```sh
//! cargo run -p relay-tests --example store_and_retrieve -- 127.0.0.1:8448 relay.example
//! ```
//!
//! Node A stores a transaction for node B; B fetches it and acknowledges it.

use std::net::SocketAddr;

use relay_tests::api::{relay_txn_path, send_relay_path};
use relay_tests::identity::{Server, signed_request};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8448".into())
        .parse()
        .expect("usage: store_and_retrieve [ADDR [RELAY_NAME]]");
    let relay = args.next().unwrap_or_else(|| "relay.example".into());

    // P2P identities: the server name is the hex public key.
    let a = Server::p2p([0xa; 32]);
    let b = Server::p2p([0xb; 32]);
    println!("node A: {}\nnode B: {}", a.name(), b.name());

    let txn =
        json!({"origin": a.name(), "origin_server_ts": 1, "pdus": [{"hello": "B"}], "edus": []});
    let target = send_relay_path("txn1", &format!("@user:{}", b.name()));
    let body = serde_json::to_vec(&txn).expect("JSON");
    let stored = signed_request(&a, &relay, "PUT", &target, &body).send(addr);
    println!("A: PUT {target} -> {} {}", stored.status, stored.text());

    let mut entry_id = 0;
    loop {
        let target = relay_txn_path(&format!("@user:{}", b.name()));
        let body = serde_json::to_vec(&json!({ "entry_id": entry_id })).expect("JSON");
        let got = signed_request(&b, &relay, "GET", &target, &body).send(addr);
        println!(
            "B: GET {target} {{\"entry_id\":{entry_id}}} -> {} {}",
            got.status,
            got.text()
        );
        let reply = got.json();
        if got.status != 200 || reply["entries_queued"] != true {
            break;
        }
        entry_id = reply["entry_id"].as_u64().expect("entry_id");
    }
}
