//! Blocking work that cannot starve storage: requests from a thousand
//! origins whose keys must be fetched, through a discovery whose nameserver
//! never answers, hold a bounded number of the relay's threads, and a P2P
//! transaction (its key is its name; storage is all it needs) is stored
//! while they wait.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use relay_tests::*;

/// Requests sent at once, each from an origin of its own.
const FLOOD: usize = 1000;
/// The relay's threads stay under this while they wait.
const MAX_THREADS: usize = 64;
/// How long the relay's key fetch may take (its `KEY_FETCH_TIMEOUT`): no
/// request of the flood is answered for lack of keys before it.
const KEY_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples `pid`'s thread count every 20 ms until stopped; the most seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let (stop, most) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (stop2, most2) = (stop.clone(), most.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Some(threads) = proc_status(pid, "Threads") else {
                    break;
                };
                most2.fetch_max(
                    usize::try_from(threads).unwrap_or(usize::MAX),
                    Ordering::SeqCst,
                );
                thread::sleep(Duration::from_millis(20));
            }
        });
        Self { stop, most, thread }
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("sampler");
        self.most.load(Ordering::SeqCst)
    }
}

/// Whether nothing has arrived on `stream` yet.
fn unanswered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    matches!(stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn key_fetches_that_hang_in_dns_hold_few_threads_and_storage_still_answers() {
    let dns = FakeDns::start();
    dns.silence();
    let (node, dest) = (Server::p2p([1; 32]), Server::p2p([2; 32]));
    let bob = dest.user("bob");
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(dest.name())
        .args(["--fetch-keys", "--dns-server", &dns.addr().to_string()])
        // The flood comes from one address, past the default caps.
        .args([
            "--max-connections",
            "2000",
            "--max-connections-per-ip",
            "2000",
        ])
        // ... and past its rate limits, and every fetch is to start: the
        // threads they hold are what is measured.
        .args([
            "--rate-limit-exempt",
            "127.0.0.1",
            "--max-key-fetches-per-sec",
            "2000",
            "--max-key-fetch-burst",
            "2000",
        ])
        .start();
    let pid = relay.pid().expect("the relay runs");
    // Signed before the clock starts: the flood arrives at once.
    let requests: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| {
            let origin = Server::named(&format!("o{i}.example"));
            let body = serde_json::to_vec(&txn_body(origin.name(), "flood")).expect("body");
            let target = send_relay_path(&format!("t{i}"), &bob);
            signed_request(&origin, relay.server_name(), "PUT", &target, &body).to_bytes()
        })
        .collect();
    let sampler = Sampler::start(pid);
    let started = Instant::now();
    let flood: Vec<TcpStream> = requests
        .iter()
        .map(|bytes| {
            let mut stream = TcpStream::connect(relay.addr()).expect("connect");
            stream.write_all(bytes).expect("send");
            stream
        })
        .collect();
    let sent = started.elapsed();
    // Connecting may take seconds (a burst overflows the listen queue and
    // the kernel retries): the first discoveries have long been blocked on
    // the silent nameserver; the last ones start now.
    thread::sleep(Duration::from_millis(500));
    let during = sampler.most();
    let before_store = Instant::now();
    store(&relay, &node, "p2p-1", &bob, "stored meanwhile");
    let answered_after = started.elapsed();
    let store_took = before_store.elapsed();
    let pending = flood.iter().filter(|s| unanswered(s)).count();
    let most = sampler.stop();
    eprintln!(
        "threads: {during} at most during the flood, {most} with the P2P store; \
         flood sent in {sent:?}; P2P stored in {store_took:?}, {answered_after:?} after the flood \
         began; {pending} of {FLOOD} still pending"
    );
    assert!(
        pending > 0,
        "every request of the flood was answered already: nothing was pending"
    );
    assert!(
        answered_after < KEY_FETCH_TIMEOUT,
        "the P2P store took until {answered_after:?} after the flood began"
    );
    assert!(
        most < MAX_THREADS,
        "the relay ran {most} threads (limit {MAX_THREADS})"
    );
    assert_eq!(
        api::markers(&drain(&relay, &dest, &bob)),
        ["stored meanwhile"]
    );
}
