//! A fake DNS server on `127.0.0.1:<free port>` (UDP, and TCP on the same
//! port) that answers SRV questions from a table, for discovery tests
//! (`--dns-server`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// One SRV record: priority, weight, port, target.
pub type Srv = (u16, u16, u16, &'static str);

/// How a name is answered.
#[derive(Debug, Clone)]
enum Entry {
    Records(Vec<Srv>),
    /// The same records, but the UDP answer comes truncated (TC set, no
    /// records), so a client must ask again over TCP.
    TruncatedRecords(Vec<Srv>),
    ServFail,
    /// The records, answered only after this long.
    Slow(Duration, Vec<Srv>),
}

#[derive(Default)]
struct Shared {
    table: Mutex<HashMap<String, Entry>>,
    asked: Mutex<Vec<(String, &'static str)>>,
    /// Record questions, answer none.
    silent: AtomicBool,
    stop: AtomicBool,
}

/// A running fake DNS server, stopped on drop. Names not in its table get
/// NXDOMAIN with an SOA.
pub struct FakeDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDns").field("addr", &self.addr).finish()
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeDns {
    /// Starts a server with an empty table.
    pub fn start() -> Self {
        // UDP and TCP on one port number: retry until both binds succeed.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
            let addr = udp.local_addr().expect("UDP address");
            if let Ok(tcp) = TcpListener::bind(addr) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("UDP address");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("UDP timeout");
        tcp.set_nonblocking(true).expect("non-blocking TCP");
        let shared = Arc::new(Shared::default());
        let udp_thread = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || serve_udp(&udp, &shared))
        };
        let tcp_thread = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || serve_tcp(&tcp, &shared))
        };
        Self {
            addr,
            shared,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// Where it listens (for `--dns-server`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers SRV questions for `name` with `records`.
    pub fn srv(&self, name: &str, records: &[Srv]) -> &Self {
        self.set(name, Entry::Records(records.to_vec()))
    }

    /// Like [`srv`](Self::srv), but the UDP answer is truncated.
    pub fn srv_tcp_only(&self, name: &str, records: &[Srv]) -> &Self {
        self.set(name, Entry::TruncatedRecords(records.to_vec()))
    }

    /// Like [`srv`](Self::srv), but each answer comes after `delay` (the
    /// server answers nothing else meanwhile).
    pub fn srv_slow(&self, name: &str, delay: Duration, records: &[Srv]) -> &Self {
        self.set(name, Entry::Slow(delay, records.to_vec()))
    }

    /// From now on records every question and answers none, as a
    /// nameserver that is down (a client waits out its own timeout).
    pub fn silence(&self) -> &Self {
        self.shared.silent.store(true, Ordering::SeqCst);
        self
    }

    /// Answers questions for `name` with SERVFAIL.
    pub fn servfail(&self, name: &str) -> &Self {
        self.set(name, Entry::ServFail)
    }

    fn set(&self, name: &str, entry: Entry) -> &Self {
        if let Ok(mut table) = self.shared.table.lock() {
            table.insert(key(name), entry);
        }
        self
    }

    /// The questions asked so far, as `(name, "udp"|"tcp")`.
    pub fn asked(&self) -> Vec<(String, &'static str)> {
        self.shared
            .asked
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(socket: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(answer) = answer(&buf[..n], shared, "udp") {
            let _ = socket.send_to(&answer, peer);
        }
    }
}

fn serve_tcp(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = serve_tcp_one(conn, shared);
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn serve_tcp_one(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut length = [0u8; 2];
    conn.read_exact(&mut length)?;
    let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
    conn.read_exact(&mut query)?;
    if let Some(answer) = answer(&query, shared, "tcp") {
        let length = u16::try_from(answer.len()).unwrap_or(u16::MAX);
        conn.write_all(&length.to_be_bytes())?;
        conn.write_all(&answer)?;
    }
    Ok(())
}

/// The answer to one query, as bytes.
fn answer(query: &[u8], shared: &Shared, transport: &'static str) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let question = query.queries.first()?.clone();
    let name = key(&question.name.to_ascii());
    if let Ok(mut asked) = shared.asked.lock() {
        asked.push((name.clone(), transport));
    }
    if shared.silent.load(Ordering::SeqCst) {
        return None;
    }
    let entry = shared.table.lock().ok()?.get(&name).cloned();
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.message_type = MessageType::Response;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    let records = match entry {
        Some(Entry::Records(r)) => r,
        Some(Entry::Slow(delay, r)) => {
            thread::sleep(delay);
            r
        }
        Some(Entry::TruncatedRecords(_)) if transport == "udp" => {
            response.metadata.truncation = true;
            Vec::new()
        }
        Some(Entry::TruncatedRecords(r)) => r,
        Some(Entry::ServFail) => {
            response.metadata.response_code = ResponseCode::ServFail;
            Vec::new()
        }
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                Name::from_ascii("ns.test.").ok()?,
                Name::from_ascii("admin.test.").ok()?,
                1,
                3600,
                600,
                86400,
                300,
            );
            response.add_authority(Record::from_rdata(
                Name::from_ascii("test.").ok()?,
                300,
                RData::SOA(soa),
            ));
            Vec::new()
        }
    };
    if question.query_type == RecordType::SRV {
        for (priority, weight, port, target) in records {
            let target = Name::from_ascii(target).ok()?;
            response.add_answer(Record::from_rdata(
                question.name.clone(),
                600,
                RData::SRV(SRV::new(priority, weight, port, target)),
            ));
        }
    }
    response.to_vec().ok()
}
