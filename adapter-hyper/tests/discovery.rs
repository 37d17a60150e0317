//! Server discovery end to end, on tokio and on smol: real TLS (a CA made
//! at test time, trusted as an extra root), a real HTTPS server answering
//! `/.well-known/matrix/server` and the federation request, and a fake
//! nameserver answering SRV over UDP (and TCP when truncated). Discovery's
//! port-443 fetches and 8448 fallbacks reach the local server through
//! `--connect-to` redirections.

use std::collections::HashMap;
use std::time::Duration;

use adapter_http::{ClientOptions, ConnectTo, HttpClient, Runtime};
use relay_core::ServerName;
use relay_core::http::{HttpOutcome, OutgoingRequest};
use relay_core::resolve::Resolver;
use relay_tests::{FakeDns, Reply, StubServer, TestCa, closed_addr};

const VERSION: &str = "/_matrix/federation/v1/version";
const WELL_KNOWN: &str = "/.well-known/matrix/server";

/// The names the test server's certificate covers.
const NAMES: &[&str] = &[
    "a.test",
    "deleg-port.test",
    "b.test",
    "deleg-srv.test",
    "c.test",
    "d.test",
    "e.test",
    "f.test",
    "g.test",
    "redirected.test",
    "h.test",
    "slow.test",
];

fn redirect_to(url: &str) -> Reply {
    Reply::WithHeaders(302, vec![("Location".into(), url.into())], String::new())
}

/// One HTTPS server standing in for every host, a nameserver, and the
/// client options that lead there.
struct World {
    _ca: TestCa,
    https: StubServer,
    dns: FakeDns,
    options: ClientOptions,
}

fn world() -> World {
    let ca = TestCa::new();
    // `.well-known` bodies by the Host they were asked of.
    let well_known: HashMap<&str, Reply> = HashMap::from([
        (
            "a.test",
            Reply::Json(200, r#"{"m.server":"deleg-port.test:8449"}"#.into()),
        ),
        (
            "b.test",
            Reply::Json(200, r#"{"m.server":"deleg-srv.test"}"#.into()),
        ),
        ("e.test", Reply::Json(200, "this is not JSON".into())),
        (
            "g.test",
            redirect_to("https://redirected.test/.well-known/matrix/server"),
        ),
        (
            "redirected.test",
            Reply::Json(200, r#"{"m.server":"deleg-port.test:8449"}"#.into()),
        ),
        ("h.test", redirect_to("/.well-known/matrix/server")),
    ]);
    let https = StubServer::start_tls(ca.server_config(NAMES), move |_, r| {
        let host = r
            .header_values("host")
            .first()
            .copied()
            .unwrap_or_default()
            .to_owned();
        if r.target == WELL_KNOWN {
            well_known
                .get(host.as_str())
                .cloned()
                .unwrap_or_else(|| Reply::error(404, "M_NOT_FOUND"))
        } else {
            Reply::Json(200, format!(r#"{{"server":{{"name":"{host}"}}}}"#))
        }
    });
    let port = https.addr().port();
    let dns = FakeDns::start();
    dns.srv(
        "_matrix-fed._tcp.deleg-srv.test",
        &[(10, 0, port, "srv-target.test.")],
    )
    .srv(
        "_matrix-fed._tcp.c.test",
        &[(10, 0, port, "srv-target.test.")],
    )
    .srv("_matrix._tcp.e.test", &[(10, 0, port, "srv-target.test.")])
    .srv_tcp_only(
        "_matrix-fed._tcp.f.test",
        &[(10, 0, port, "srv-target.test.")],
    );
    let mut connect_to: Vec<ConnectTo> = NAMES
        .iter()
        .map(|n| {
            format!("{n}:443=127.0.0.1:{port}")
                .parse()
                .expect("connect-to")
        })
        .collect();
    for extra in [
        format!("deleg-port.test:8449=127.0.0.1:{port}"),
        format!("srv-target.test:{port}=127.0.0.1:{port}"),
        format!("d.test:8448=127.0.0.1:{port}"),
        format!("h.test:8448=127.0.0.1:{port}"),
    ] {
        connect_to.push(extra.parse().expect("connect-to"));
    }
    let options = ClientOptions {
        extra_roots: vec![ca.cert()],
        connect_to,
        dns_server: Some(dns.addr()),
        ..ClientOptions::default()
    };
    World {
        _ca: ca,
        https,
        dns,
        options,
    }
}

fn get(server: &str) -> OutgoingRequest {
    OutgoingRequest {
        server: ServerName::parse(server).expect("server name"),
        method: "GET",
        target: VERSION.to_owned(),
        authorization: String::new(),
        body: Vec::new(),
        max_response_bytes: relay_core::http::DEFAULT_MAX_RESPONSE_BYTES,
    }
}

/// Sends a GET to `server`; asserts it arrived over TLS for `tls_name`
/// with Host `host`.
async fn reaches<R: Runtime>(
    world: &World,
    client: &HttpClient<R>,
    server: &str,
    tls_name: &str,
    host: &str,
) {
    let before = world.https.count();
    let outcome = client.send(get(server)).await;
    let HttpOutcome::Response {
        status: 200, body, ..
    } = &outcome
    else {
        panic!("{server}: {outcome:?}");
    };
    let text = String::from_utf8_lossy(body);
    assert!(text.contains(host), "{server}: {text}");
    let last = world.https.requests().pop().expect("a request");
    assert_eq!(last.target, VERSION, "{server}");
    assert_eq!(last.sni.as_deref(), Some(tls_name), "{server}: SNI");
    assert_eq!(last.header_values("host"), [host], "{server}: Host");
    assert!(world.https.count() > before);
}

async fn scenarios<R: Runtime>(rt: R) {
    let world = world();
    let client = HttpClient::with_options(
        rt,
        Resolver::default(),
        Duration::from_secs(20),
        world.options.clone(),
    )
    .expect("client");

    // Delegation to host:port: used as is, Host and SNI the delegated name.
    reaches(
        &world,
        &client,
        "a.test",
        "deleg-port.test",
        "deleg-port.test:8449",
    )
    .await;
    // Delegation to a bare name: its SRV record; Host and SNI the delegated
    // name, never the SRV target.
    reaches(
        &world,
        &client,
        "b.test",
        "deleg-srv.test",
        "deleg-srv.test",
    )
    .await;
    // No .well-known (404): the server name's own SRV record.
    reaches(&world, &client, "c.test", "c.test", "c.test").await;
    // Nothing at all: port 8448.
    reaches(&world, &client, "d.test", "d.test", "d.test").await;
    // A .well-known that is not JSON falls through to SRV (here the
    // deprecated _matrix._tcp).
    reaches(&world, &client, "e.test", "e.test", "e.test").await;
    // A truncated UDP answer is asked again over TCP.
    reaches(&world, &client, "f.test", "f.test", "f.test").await;
    // A redirected .well-known is followed to another https:// host.
    reaches(
        &world,
        &client,
        "g.test",
        "deleg-port.test",
        "deleg-port.test:8449",
    )
    .await;
    // A redirect loop ends after three redirects: no delegation.
    reaches(&world, &client, "h.test", "h.test", "h.test").await;

    let asked = world.dns.asked();
    let names: Vec<&str> = asked.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "_matrix-fed._tcp.deleg-srv.test",
            "_matrix-fed._tcp.c.test",
            "_matrix-fed._tcp.d.test",
            "_matrix._tcp.d.test",
            "_matrix-fed._tcp.e.test",
            "_matrix._tcp.e.test",
            "_matrix-fed._tcp.f.test",
            "_matrix-fed._tcp.f.test",
            "_matrix-fed._tcp.h.test",
            "_matrix._tcp.h.test",
        ]
    );
    assert_eq!(asked[7].1, "tcp");
    let well_knowns = |w: &World| {
        w.https
            .requests()
            .iter()
            .filter(|r| r.target == WELL_KNOWN)
            .count()
    };
    // One each, two for g.test, four for h.test.
    assert_eq!(well_knowns(&world), 6 + 2 + 4);

    // Everything is cached now: no more lookups.
    for server in [
        "a.test", "b.test", "c.test", "d.test", "e.test", "f.test", "g.test", "h.test",
    ] {
        let outcome = client.send(get(server)).await;
        assert!(
            matches!(outcome, HttpOutcome::Response { status: 200, .. }),
            "{server}: {outcome:?}"
        );
    }
    assert_eq!(world.dns.asked().len(), asked.len());
    assert_eq!(well_knowns(&world), 6 + 2 + 4);
}

#[test]
fn discovery_on_tokio() {
    adapter_hyper::block_on(scenarios).expect("tokio runtime");
}

#[test]
fn discovery_on_smol() {
    adapter_smol::block_on(scenarios).expect("smol executor");
}

/// Of several SRV targets, the next is tried only when one cannot be
/// reached; an answer, even a 500, is the request's outcome.
async fn failover<R: Runtime>(rt: R) {
    let ca = TestCa::new();
    let names = ["i.test", "j.test", "k.test", "m.test"];
    let answering = StubServer::start_tls(ca.server_config(&names), |_, r| {
        if r.target == WELL_KNOWN {
            Reply::error(404, "M_NOT_FOUND")
        } else {
            Reply::error(500, "M_UNKNOWN")
        }
    });
    let working = StubServer::start_tls(ca.server_config(&names), |_, _| {
        Reply::Json(200, "{}".into())
    });
    let (p1, p2) = (answering.addr().port(), working.addr().port());
    let (closed, closed2) = (closed_addr().port(), closed_addr().port());
    // Accepts TCP and hangs up at once (the TLS handshake fails), counting.
    let dropper = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p3 = dropper.local_addr().expect("address").port();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = dropped.clone();
    std::thread::spawn(move || {
        for stream in dropper.incoming() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let dns = FakeDns::start();
    dns.srv(
        "_matrix-fed._tcp.i.test",
        &[(10, 0, closed, "down.test."), (20, 0, p2, "up.test.")],
    )
    .srv(
        "_matrix-fed._tcp.m.test",
        &[(10, 0, p3, "hangs-up.test."), (20, 0, p2, "up.test.")],
    )
    .srv(
        "_matrix-fed._tcp.j.test",
        &[(10, 0, p1, "answering.test."), (20, 0, p2, "up.test.")],
    )
    .srv(
        "_matrix-fed._tcp.k.test",
        &[
            (10, 0, closed, "down.test."),
            (20, 0, closed2, "down2.test."),
        ],
    );
    let mut connect_to: Vec<String> = names
        .iter()
        .map(|n| format!("{n}:443=127.0.0.1:{p1}"))
        .collect();
    connect_to.extend([
        format!("down.test:{closed}=127.0.0.1:{closed}"),
        format!("down2.test:{closed2}=127.0.0.1:{closed2}"),
        format!("up.test:{p2}=127.0.0.1:{p2}"),
        format!("answering.test:{p1}=127.0.0.1:{p1}"),
        format!("hangs-up.test:{p3}=127.0.0.1:{p3}"),
    ]);
    let options = ClientOptions {
        extra_roots: vec![ca.cert()],
        connect_to: connect_to
            .iter()
            .map(|c| c.parse().expect("connect-to"))
            .collect(),
        dns_server: Some(dns.addr()),
        ..ClientOptions::default()
    };
    let client =
        HttpClient::with_options(rt, Resolver::default(), Duration::from_secs(20), options)
            .expect("client");

    let outcome = client.send(get("i.test")).await;
    assert!(
        matches!(outcome, HttpOutcome::Response { status: 200, .. }),
        "{outcome:?}"
    );
    let reached = working.requests();
    assert_eq!(reached.len(), 1);
    assert_eq!(reached[0].sni.as_deref(), Some("i.test"));
    assert_eq!(reached[0].header_values("host"), ["i.test"]);

    let outcome = client.send(get("j.test")).await;
    assert!(
        matches!(outcome, HttpOutcome::Response { status: 500, .. }),
        "{outcome:?}"
    );
    assert_eq!(working.count(), 1);

    let outcome = client.send(get("k.test")).await;
    let HttpOutcome::ConnectionFailed(e) = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(e.contains("down.test") && e.contains("down2.test"), "{e}");

    // A target that failed is tried after the others for a while: the
    // second request goes to the working one first.
    for _ in 0..2 {
        let outcome = client.send(get("m.test")).await;
        assert!(
            matches!(outcome, HttpOutcome::Response { status: 200, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn failover_on_tokio() {
    adapter_hyper::block_on(failover).expect("tokio runtime");
}

#[test]
fn failover_on_smol() {
    adapter_smol::block_on(failover).expect("smol executor");
}

#[test]
fn an_untrusted_certificate_fails_the_request() {
    adapter_hyper::block_on(|rt| async move {
        let world = world();
        let mut options = world.options.clone();
        options.extra_roots.clear();
        let client =
            HttpClient::with_options(rt, Resolver::default(), Duration::from_secs(20), options)
                .expect("client");
        let outcome = client.send(get("c.test")).await;
        let HttpOutcome::ConnectionFailed(e) = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(e.contains("certificate"), "{e}");
    })
    .expect("tokio runtime");
}

/// The SRV name of `slow.test`, whose answer [`slow_world`] delays.
const SLOW_SRV: &str = "_matrix-fed._tcp.slow.test";

/// [`world`] with `slow.test`'s SRV answer `delay`ed, and a client on `rt`
/// giving up on a request after `limit`.
fn slow_world<R: Runtime>(rt: R, delay: Duration, limit: Duration) -> (World, HttpClient<R>) {
    let world = world();
    let port = world.https.addr().port();
    world
        .dns
        .srv_slow(SLOW_SRV, delay, &[(0, 0, port, "srv-target.test")]);
    let client = HttpClient::with_options(rt, Resolver::default(), limit, world.options.clone())
        .expect("client");
    (world, client)
}

impl World {
    /// How many times `name` was asked of the nameserver.
    fn asked(&self, name: &str) -> usize {
        self.dns.asked().iter().filter(|(n, _)| n == name).count()
    }
}

/// Lookups slower than the request's time limit still finish and are
/// cached: the request that gave up is followed by one that needs none.
#[test]
fn a_slow_lookup_is_cached_for_the_next_attempt() {
    adapter_hyper::block_on(|rt| async move {
        let (world, client) =
            slow_world(rt, Duration::from_millis(800), Duration::from_millis(300));
        let first = client.send(get("slow.test")).await;
        assert_eq!(first, HttpOutcome::Timeout);
        // Longer than the lookup, on a timer the test's runtime drives.
        adapter_hyper::Tokio
            .sleep_until(relay_core::Instant::now() + Duration::from_secs(1))
            .await;
        let second = client.send(get("slow.test")).await;
        assert!(
            matches!(second, HttpOutcome::Response { status: 200, .. }),
            "{second:?}"
        );
        assert_eq!(world.asked(SLOW_SRV), 1);
    })
    .expect("tokio runtime");
}

/// Requests that need the same server at the same time share one
/// discovery: one `.well-known` fetch and one SRV query.
async fn concurrent_requests_share_one_discovery<R: Runtime>(rt: R) {
    let (world, client) = slow_world(rt, Duration::from_millis(300), Duration::from_secs(20));
    // Boxed: three request futures side by side are large for a test
    // thread's stack in a debug build.
    let (first, second, third) = tokio::join!(
        Box::pin(client.send(get("slow.test"))),
        Box::pin(client.send(get("slow.test"))),
        Box::pin(client.send(get("slow.test"))),
    );
    for outcome in [first, second, third] {
        assert!(
            matches!(outcome, HttpOutcome::Response { status: 200, .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(world.asked(SLOW_SRV), 1);
    let well_known = world
        .https
        .requests()
        .iter()
        .filter(|r| r.target == WELL_KNOWN)
        .count();
    assert_eq!(well_known, 1);
}

#[test]
fn concurrent_requests_share_one_discovery_on_tokio() {
    adapter_hyper::block_on(concurrent_requests_share_one_discovery).expect("tokio runtime");
}

#[test]
fn concurrent_requests_share_one_discovery_on_smol() {
    adapter_smol::block_on(concurrent_requests_share_one_discovery).expect("smol executor");
}
