//! Discovery's bounds, on tokio and on smol: at most
//! [`MAX_DISCOVERIES`] under way at once (the rest wait, within their own
//! time limit), at most [`DNS_THREADS`] SRV queries asked at once of a
//! nameserver that never answers, and a query still queued when its
//! request's time limit passes is never asked.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use adapter_http::client::{DNS_THREADS, MAX_DISCOVERIES};
use adapter_http::{ClientOptions, ConnectTo, HttpClient, Runtime, spawn_task};
use relay_core::ServerName;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::Resolver;
use relay_tests::FakeDns;

/// Requests at once, each for a server of its own: past the cap.
const REQUESTS: usize = MAX_DISCOVERIES + 16;
/// Each request's time limit.
const LIMIT: Duration = Duration::from_secs(3);
/// Longer than one SRV query may take (`adapter_http::dns::DNS_TIMEOUT`)
/// after the limit: a query started late would have been asked by then.
const SETTLE: Duration = Duration::from_secs(6);

/// A TCP listener that closes every connection at once (a `.well-known`
/// fetch fails fast), counting them.
fn closing_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, accepted)
}

fn get(server: &str) -> OutgoingRequest {
    OutgoingRequest {
        server: ServerName::parse(server).expect("server name"),
        method: "GET",
        target: "/_matrix/federation/v1/version".to_owned(),
        authorization: String::new(),
        body: Vec::new(),
        max_response_bytes: relay_core::http::DEFAULT_MAX_RESPONSE_BYTES,
    }
}

async fn discoveries_are_bounded<R: Runtime>(rt: R) {
    let dns = FakeDns::start();
    dns.silence();
    let (port, well_known) = closing_listener();
    let names: Vec<String> = (0..REQUESTS).map(|i| format!("o{i}.test")).collect();
    let connect_to: Vec<ConnectTo> = names
        .iter()
        .map(|n| {
            format!("{n}:443=127.0.0.1:{port}")
                .parse()
                .expect("connect-to")
        })
        .collect();
    let options = ClientOptions {
        connect_to,
        dns_server: Some(dns.addr()),
        ..ClientOptions::default()
    };
    let client =
        HttpClient::with_options(rt.clone(), Resolver::default(), LIMIT, options).expect("client");
    let started = Instant::now();
    let sends: Vec<_> = names
        .iter()
        .map(|n| {
            let (client, request) = (client.clone(), get(n));
            spawn_task(&rt, async move { client.send(request).await })
        })
        .collect();
    // Every discovery with a permit fetches `.well-known` first, at once.
    while well_known.load(Ordering::SeqCst) < MAX_DISCOVERIES && started.elapsed() < LIMIT / 2 {
        rt.sleep_until(Instant::now() + Duration::from_millis(20))
            .await;
    }
    rt.sleep_until(Instant::now() + Duration::from_millis(200))
        .await;
    assert_eq!(
        well_known.load(Ordering::SeqCst),
        MAX_DISCOVERIES,
        "discoveries under way before any time limit passed"
    );
    for send in sends {
        let outcome = send.await.expect("send task");
        assert!(
            !matches!(outcome, HttpOutcome::Response { .. }),
            "{outcome:?}"
        );
    }
    rt.sleep_until(started + SETTLE).await;
    let mut asked: Vec<String> = dns.asked().into_iter().map(|(name, _)| name).collect();
    asked.sort();
    asked.dedup();
    assert_eq!(
        asked.len(),
        DNS_THREADS,
        "SRV names asked of the silent nameserver: {asked:?}"
    );
}

#[test]
fn discoveries_are_bounded_on_tokio() {
    adapter_hyper::block_on(discoveries_are_bounded).expect("tokio runtime");
}

#[test]
fn discoveries_are_bounded_on_smol() {
    adapter_smol::block_on(discoveries_are_bounded).expect("smol executor");
}
