//! The sender survives a crash: an adapter-driven `Outbound` with its state
//! in SQLite retries a destination that is down, the process "dies"
//! mid-retry (the runtime is dropped with a request in flight), and the
//! rebuilt sender (`load` → `Outbound::restore` → `spawn`) resumes the same
//! transaction, under the same txn ID and with the same body, then the rest
//! of the queue in order, and leaves nothing persisted.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use adapter_hyper::HttpClient;
use adapter_hyper::outbound::{NotQueued, spawn, unix_now};
use relay_core::outbound::{Event, ItemKind, Outbound, OutboundConfig, Target, Via};
use relay_core::resolve::Resolver;
use relay_core::signing::SigningKey;
use relay_core::{Instant, KeyId, ServerName, TxnId};
use relay_store::{MemoryOutboundStore, OutboundStore, SqliteStore};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const DEST: &str = "dest.example";
const RELAY: &str = "relay.example";
const WAIT: Duration = Duration::from_secs(10);

/// What a stub answers the n-th request (from 0): a status after a
/// delay, or nothing (the request hangs).
type Script = fn(usize) -> Option<(u16, Duration)>;

/// A request the stub got: its raw target and body.
#[derive(Debug, Clone)]
struct Got {
    target: String,
    body: Value,
}

/// A tiny HTTP server on 127.0.0.1 answering as `script` says, one request
/// per connection, recording each.
struct Stub {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (got2, stop2) = (Arc::clone(&got), Arc::clone(&stop));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (got, stop) = (Arc::clone(&got2), Arc::clone(&stop2));
                thread::spawn(move || answer(conn, script, &got, &stop));
            }
        });
        Self { addr, got, stop }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    fn wait_for(&self, n: usize) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        while self.got().len() < n {
            if std::time::Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer(mut conn: TcpStream, script: Script, got: &Mutex<Vec<Got>>, stop: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    let n = {
        let mut got = got.lock().expect("lock");
        got.push(Got { target, body });
        got.len() - 1
    };
    match script(n) {
        Some((status, delay)) => {
            thread::sleep(delay);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            let _ = conn.write_all(reply.as_bytes());
            let _ = conn.shutdown(Shutdown::Write);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
        }
        None => {
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn name(s: &str) -> ServerName {
    ServerName::parse(s).expect("server name")
}

fn config() -> OutboundConfig {
    let key = SigningKey::from_seed(KeyId::ed25519("1").expect("key id"), [7; 32]);
    let mut config = OutboundConfig::new(name("a.example"), key);
    // Relays from the second failed direct try on; quick retries.
    config.retries_until_assumed_offline = 2;
    config.failures_until_blacklist = 100;
    config.backoff_base = Duration::from_millis(40);
    config.backoff_cap = Duration::from_millis(200);
    config
}

fn client(dest: SocketAddr, relay: SocketAddr) -> HttpClient {
    let flags = [
        format!("{DEST}=http://{dest}"),
        format!("{RELAY}=http://{relay}"),
    ];
    let resolver = Resolver::from_flags(flags.iter().map(String::as_str)).expect("resolve flags");
    HttpClient::new(resolver, Duration::from_secs(5))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pdus() -> Vec<Value> {
    (0..6)
        .map(|i| json!({"type": "m.room.message", "event_id": format!("$e{i}"), "content": {"body": format!("pdu {i}")}}))
        .collect()
}

fn pdu_bytes(pdu: &Value) -> Vec<u8> {
    pdu.to_string().into_bytes()
}

fn txn_of(target: &str) -> &str {
    target
        .strip_prefix("/_matrix/federation/v1/send/")
        .unwrap_or_else(|| panic!("not a direct send: {target}"))
}

async fn next(events: &mut async_channel::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the driver is running")
}

#[test]
fn a_restarted_sender_resumes_the_same_transaction_and_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("outbound.db");
    let pdus = pdus();
    let dest = name(DEST);
    let relay_down = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };

    // --- Before the crash. The destination takes its time to accept the
    // first transaction (so the next PDUs queue up behind it and form the
    // second), answers 503 to the second twice, then holds its third try
    // without answering.
    let down = Stub::start(|n| match n {
        0 => Some((200, Duration::from_millis(300))),
        1 | 2 => Some((503, Duration::ZERO)),
        _ => None,
    });
    let store = Arc::new(SqliteStore::open(&db).expect("open the store"));
    let mut machine = Outbound::new(config(), [1; 32]);
    machine.set_relays(Instant::now(), dest.clone(), vec![name(RELAY)]);
    let rt = runtime();
    let (txn_before, handle, events) = rt.block_on(async {
        let shared: Arc<dyn OutboundStore> = store.clone();
        let (handle, mut events, _task) = spawn(machine, client(down.addr, relay_down), shared);
        for pdu in &pdus[..5] {
            handle
                .enqueue(dest.clone(), ItemKind::Pdu, pdu_bytes(pdu))
                .await
                .expect("enqueue");
        }
        match next(&mut events).await {
            Event::Delivered { via, items, .. } => {
                assert_eq!((via, items.len()), (Via::Direct, 1));
            }
            other => panic!("expected the first transaction delivered: {other:?}"),
        }
        let mut txn: Option<TxnId> = None;
        let mut failed = 0;
        while failed < 2 {
            match next(&mut events).await {
                Event::AttemptFailed {
                    txn_id,
                    errors,
                    relays_tried,
                    ..
                } => {
                    assert_eq!(txn.get_or_insert(txn_id.clone()), &txn_id, "one txn ID");
                    assert!(errors.iter().any(|(t, _)| *t == Target::Direct));
                    // The second failure reaches the offline threshold:
                    // the (unreachable) relay is tried too.
                    assert_eq!(relays_tried, failed == 1, "{errors:?}");
                    failed += 1;
                    if failed == 1 {
                        // Queued behind the transaction in flight.
                        handle
                            .enqueue(dest.clone(), ItemKind::Pdu, pdu_bytes(&pdus[5]))
                            .await
                            .expect("enqueue");
                    }
                }
                Event::AssumedOffline { .. } => {}
                other => panic!("unexpected before the crash: {other:?}"),
            }
        }
        (txn.expect("a txn ID"), handle, events)
    });
    assert!(down.wait_for(4), "the third try did not come");
    // Crash mid-retry, the third try in flight: every task is dropped
    // where it is, the handle still alive.
    drop(rt);
    drop((handle, events, store));
    let tries = down.got();
    assert_eq!(tries.len(), 4, "{tries:?}");
    assert_eq!(tries[0].body["pdus"], json!(pdus[..1]));
    assert_ne!(txn_of(&tries[0].target), txn_before.as_str());
    for t in &tries[1..] {
        assert_eq!(
            txn_of(&t.target),
            txn_before.as_str(),
            "every try, one txn ID"
        );
        assert_eq!(t.body, tries[1].body, "every try, one body");
    }
    assert_eq!(tries[1].body["pdus"], json!(pdus[1..5]));

    // --- What survived: the queue after the delivered transaction, and
    // the transaction in flight.
    let store = Arc::new(SqliteStore::open(&db).expect("reopen the store"));
    let records = store.load().expect("load");
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record.destination, dest);
    let queued: Vec<Value> = record
        .items
        .iter()
        .map(|i| serde_json::from_slice(&i.json).expect("item JSON"))
        .collect();
    assert_eq!(queued, pdus[1..], "the queue, in order");
    let (txn_id, txn_items) = record.txn.clone().expect("the transaction in flight");
    assert_eq!(txn_id, txn_before);
    let in_flight: Vec<_> = record.items[..4].iter().map(|i| i.id).collect();
    assert_eq!(txn_items, in_flight);
    assert!(record.retry.direct_failures >= 1, "{:?}", record.retry);

    // --- After the restart: the destination is up.
    let up = Stub::start(|_| Some((200, Duration::ZERO)));
    let mut machine = Outbound::restore(config(), [2; 32], Instant::now(), unix_now(), records);
    machine.set_relays(Instant::now(), dest.clone(), vec![name(RELAY)]);
    let rt = runtime();
    let delivered = rt.block_on(async {
        let shared: Arc<dyn OutboundStore> = store.clone();
        let (handle, mut events, task) = spawn(machine, client(up.addr, relay_down), shared);
        let mut delivered = Vec::new();
        let mut items = 0;
        while items < 5 {
            match next(&mut events).await {
                Event::Delivered {
                    txn_id,
                    via,
                    items: carried,
                    ..
                } => {
                    assert_eq!(via, Via::Direct);
                    items += carried.len();
                    delivered.push((txn_id, carried));
                }
                Event::BackOnline { .. } => {}
                other => panic!("unexpected after the restart: {other:?}"),
            }
        }
        // The driver ends once its handles are gone, after persisting.
        drop(handle);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the driver ends")
            .expect("the driver did not panic");
        delivered
    });
    drop(rt);

    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert_eq!(delivered[0], (txn_before.clone(), in_flight));
    assert_ne!(delivered[1].0, txn_before);
    let sent = up.got();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(txn_of(&sent[0].target), txn_before.as_str(), "same txn ID");
    assert_eq!(sent[0].body, tries[1].body, "same transaction, same body");
    assert_eq!(txn_of(&sent[1].target), delivered[1].0.as_str());
    assert_eq!(sent[1].body["pdus"], json!(pdus[5..]), "then the rest");
    assert_eq!(sent[1].body["origin"], "a.example");
    assert_eq!(
        store.load().expect("load"),
        Vec::new(),
        "nothing left persisted"
    );
}

/// A sender whose task is gone (its runtime dropped, the handle kept)
/// says it stopped; it does not claim the queue is full.
#[test]
fn an_enqueue_to_a_stopped_sender_is_refused_as_stopped() {
    let unused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("addr");
    let rt = runtime();
    let handle = rt.block_on(async {
        let machine = Outbound::new(config(), [3; 32]);
        let store: Arc<dyn OutboundStore> = Arc::new(MemoryOutboundStore::new());
        let (handle, _events, _task) = spawn(machine, client(unused, unused), store);
        handle
    });
    drop(rt);
    let answer = runtime().block_on(handle.enqueue(name(DEST), ItemKind::Pdu, b"{}".to_vec()));
    assert_eq!(answer, Err(NotQueued::Stopped));
}
