//! Embedding the sender and the retriever in a node, with a relay between
//! them, all in one process over real loopback sockets:
//!
//! 1. a relay (`adapter_http::run`) that stores for anyone whose server
//!    name is its public key, as Dendrite's P2P demos name nodes;
//! 2. node A queues an event for node B, which is offline: after one failed
//!    direct try, A's sender hands the transaction to B's relay;
//! 3. node B's retriever drains the relay, the application processes the
//!    transaction, and only then is its entry acknowledged.
//!
//! Run it with `cargo run -p adapter-hyper --example p2p_node`.

use std::sync::Arc;
use std::time::Duration;

use adapter_http::{Listen, ServeOptions, Shutdown};
use adapter_hyper::{HttpClient, Tokio};
use relay_core::outbound::{self, ItemKind, Outbound, OutboundConfig, Via};
use relay_core::relay::{RelayConfig, ServePolicy};
use relay_core::resolve::Resolver;
use relay_core::retriever::{self, Retriever, RetrieverConfig};
use relay_core::signing::SigningKey;
use relay_core::{KeyId, ServerName};
use relay_store::{MemoryDedupeStore, MemoryOutboundStore, MemoryStore};

/// A P2P identity: the key, and the server name its public key spells.
fn node(seed: u8) -> (ServerName, SigningKey) {
    let key = SigningKey::from_seed(KeyId::ed25519("1").expect("a key ID"), [seed; 32]);
    let name = ServerName::parse(&key.verify_key().to_hex()).expect("64 hex characters");
    (name, key)
}

/// What node B received: (origin, the event's body).
async fn scenario() -> Result<(ServerName, String), String> {
    let (a, a_key) = node(1);
    let (b, b_key) = node(2);
    let relay_name = ServerName::parse("relay.example").expect("a server name");

    // The relay: P2P names are their own keys; it stores for anyone.
    let mut config = RelayConfig::new(relay_name.clone(), node(3).1);
    config.keys = relay_core::auth::KeyRing::with_p2p_names();
    config.serve = ServePolicy::Open;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let relay_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut options = ServeOptions::new(
        Listen::Bound(listener),
        config,
        Arc::new(MemoryStore::new()),
    );
    options.shutdown = Shutdown::On(Box::pin(async move {
        let _ = stopped.await;
    }));
    let relay = tokio::spawn(adapter_http::run(Tokio, options, |_| {}));

    // B is offline: nothing listens where A would reach it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let resolver = Resolver::from_flags([
        format!("{relay_name}=http://{relay_addr}").as_str(),
        format!("{b}=http://{closed}").as_str(),
    ])
    .map_err(|e| e.to_string())?;
    let client = HttpClient::new(resolver, Duration::from_secs(5));

    // Node A: one failed direct try, then B's relays.
    let mut sender = Outbound::new(OutboundConfig::new(a, a_key), [4; 32]);
    sender.set_relays(
        relay_core::Instant::now(),
        b.clone(),
        vec![relay_name.clone()],
    );
    let (outbox, sent, _sender_task) =
        adapter_http::outbound::spawn(sender, client.clone(), Arc::new(MemoryOutboundStore::new()));
    let event = br#"{"type":"m.room.message","content":{"body":"hello B"}}"#.to_vec();
    outbox
        .enqueue(b.clone(), ItemKind::Pdu, event)
        .await
        .map_err(|e| format!("enqueue: {e:?}"))?;
    loop {
        match sent.recv().await.map_err(|_| "the sender stopped")? {
            outbound::Event::Delivered {
                via: Via::Relays(relays),
                ..
            } => {
                let relays: Vec<&str> = relays.iter().map(ServerName::as_str).collect();
                println!("A: handed to {}", relays.join(", "));
                break;
            }
            outbound::Event::FailedPermanently { error, .. } => return Err(error),
            _ => {}
        }
    }

    // Node B comes online and drains its relay.
    let mut retriever = Retriever::new(RetrieverConfig::new(b, b_key), [5; 32]);
    retriever.set_relays(relay_core::Instant::now(), vec![relay_name]);
    let (inbox, received, _retriever_task) =
        adapter_http::retriever::spawn(retriever, client, Arc::new(MemoryDedupeStore::new()));
    let mut got = None;
    loop {
        match received.recv().await.map_err(|_| "the retriever stopped")? {
            adapter_http::retriever::Received::Delivery(delivery) => {
                let txn: serde_json::Value =
                    serde_json::from_slice(&delivery.transaction).map_err(|e| e.to_string())?;
                let body = txn["pdus"][0]["content"]["body"].to_string();
                println!(
                    "B: from {} through {}: {body}",
                    delivery.origin, delivery.relay
                );
                got = Some((delivery.origin.clone(), body));
                // Processed: now, and only now, the entry may be acknowledged.
                inbox.processed(delivery.id);
            }
            adapter_http::retriever::Received::Event(retriever::Event::Drained {
                relay, ..
            }) => {
                println!("B: {relay} drained");
                break;
            }
            adapter_http::retriever::Received::Event(other) => println!("B: {other:?}"),
        }
    }
    let _ = stop.send(());
    let _ = relay.await;
    got.ok_or_else(|| "the relay had nothing for B".to_owned())
}

fn main() {
    match adapter_hyper::block_on(|_: Tokio| scenario()) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            eprintln!("p2p_node: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("p2p_node: no tokio runtime: {e}");
            std::process::exit(1);
        }
    }
}

#[test]
fn b_gets_what_a_handed_to_the_relay() {
    let (origin, body) = adapter_hyper::block_on(|_: Tokio| scenario())
        .expect("a tokio runtime")
        .expect("the scenario ran");
    assert_eq!(origin, node(1).0);
    assert_eq!(body, "\"hello B\"");
}
