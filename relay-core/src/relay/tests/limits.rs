//! Rate limits on virtual time: request budgets per client address, new
//! origins per client address, key fetches per origin and in all, and the
//! client behind a trusted proxy.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::cidr::Cidr;
use crate::http::HttpOutcome;
use crate::rate::Rate;

const SEND: &str = "/_matrix/federation/v1/send_relay/t/@a:dest.example";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Feeds `head` at `now`, reads its body as a driver does; what came out.
fn feed(relay: &mut Relay, now: Instant, head: RequestHead, body: &RequestBody) -> Vec<Output> {
    relay.handle_head(now, NOW_MS, head);
    drain(relay, NOW_MS, body)
}

/// `request` from `peer` at `now`.
fn from(relay: &mut Relay, now: Instant, peer: &str, request: &Request) -> Vec<Output> {
    feed(relay, now, request.head_from(ip(peer)), &request.body)
}

/// What the outputs of one request come to: `store`, `fetch` (a
/// `relay_txn` read), `keys` (a key fetch), `held` (waits for a fetch
/// under way), or the status of the answer.
fn kind(outputs: &[Output]) -> String {
    match outputs {
        [] => "held".into(),
        [Output::Store { .. }] => "store".into(),
        [Output::Fetch { .. }] => "fetch".into(),
        [Output::FetchKeys { .. }] => "keys".into(),
        [Output::Respond { response, .. }] => response.status.to_string(),
        other => panic!("unexpected outputs {other:?}"),
    }
}

/// The answer of one request, which must be a 429 with when to come back:
/// `retry_after_ms`, and `Retry-After` in whole seconds.
fn retry_after_ms(outputs: Vec<Output>) -> u64 {
    let response = only_response(outputs);
    assert_eq!(
        (response.status, errcode(&response).as_str()),
        (429, "M_LIMIT_EXCEEDED")
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    let ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert_eq!(response.retry_after_secs, Some(ms.div_ceil(1000)));
    ms
}

fn with_limits(set: impl FnOnce(&mut RateLimits)) -> RelayConfig {
    let mut c = config();
    set(&mut c.limits);
    c
}

#[test]
fn the_defaults() {
    let d = RateLimits::default();
    assert_eq!(d.send_relay, Rate::new(50, 500));
    assert_eq!(d.relay_txn, Rate::new(100, 1_000));
    assert_eq!(d.new_origins, Some(100));
    assert_eq!(d.key_fetches, Rate::new(10, 50));
    assert_eq!(d.key_fetch_interval, secs(300));
    assert!(d.exempt.is_empty() && config().trusted_proxies.is_empty());
}

#[test]
fn each_client_address_has_a_budget_per_endpoint() {
    let t0 = epoch();
    let mut relay = Relay::new(with_limits(|l| {
        l.send_relay = Rate::new(1, 2);
        l.relay_txn = Rate::new(1, 1);
    }));
    let (a, b) = ("192.0.2.1", "192.0.2.2");
    let txn = |t: &str| put(t, "@a:dest.example", TXN);
    assert_eq!(kind(&from(&mut relay, t0, a, &txn("t1"))), "store");
    assert_eq!(kind(&from(&mut relay, t0, a, &txn("t2"))), "store");
    assert_eq!(retry_after_ms(from(&mut relay, t0, a, &txn("t3"))), 1_000);
    // relay_txn has a budget of its own.
    let read = get("@a:dest.example", "dest.example", &key_for(2), "");
    assert_eq!(kind(&from(&mut relay, t0, a, &read)), "fetch");
    assert_eq!(retry_after_ms(from(&mut relay, t0, a, &read)), 1_000);
    // Another address is not held back.
    assert_eq!(kind(&from(&mut relay, t0, b, &txn("t3"))), "store");
    // The wait is exact.
    let later = t0 + Duration::from_millis(400);
    assert_eq!(retry_after_ms(from(&mut relay, later, a, &txn("t3"))), 600);
    assert_eq!(
        kind(&from(&mut relay, t0 + secs(1), a, &txn("t3"))),
        "store"
    );
    assert_eq!(kind(&from(&mut relay, t0 + secs(1), a, &read)), "fetch");
    assert_eq!(
        retry_after_ms(from(&mut relay, t0 + secs(1), a, &txn("t4"))),
        1_000
    );
}

/// The budget is taken right after the route, before the declared size
/// or the header is looked at: a request it refuses costs nothing else.
#[test]
fn the_budget_comes_right_after_the_route() {
    let t0 = epoch();
    let mut relay = Relay::new(with_limits(|l| l.send_relay = Rate::new(1, 1)));
    let a = "192.0.2.1";
    for _ in 0..3 {
        let unknown_path = put("t", "@a:dest.example", TXN).with_target("/_matrix/nope");
        assert_eq!(kind(&from(&mut relay, t0, a, &unknown_path)), "404");
        for target in ["/_matrix/key/v2/server", "/_matrix/federation/v1/version"] {
            let request = Request {
                method: "GET".into(),
                target: target.into(),
                authorization: vec![],
                body: RequestBody::Complete(vec![]),
            };
            assert_eq!(kind(&from(&mut relay, t0, a, &request)), "200", "{target}");
        }
    }
    let mut unsigned = put("t", "@a:dest.example", TXN);
    unsigned.authorization.clear();
    assert_eq!(kind(&from(&mut relay, t0, a, &unsigned)), "401");
    // Now spent: 429 before the declared size (413) or the header (401).
    let mut declared = put("t", "@a:dest.example", TXN).head_from(ip(a));
    declared.content_length = Some(u64::MAX);
    let outputs = feed(&mut relay, t0, declared, &RequestBody::TooLarge);
    assert_eq!(kind(&outputs), "429");
    assert_eq!(kind(&from(&mut relay, t0, a, &unsigned)), "429");
    assert_eq!(relay.pending_ops(), 0);
}

#[test]
fn an_ipv6_64_is_one_client_and_exempt_ranges_are_not_limited() {
    let t0 = epoch();
    let mut relay = Relay::new(with_limits(|l| {
        l.send_relay = Rate::new(1, 1);
        l.exempt = vec![cidr("10.0.0.0/8"), cidr("2001:db8:ff::/48")];
    }));
    let txn = put("t", "@a:dest.example", TXN);
    let cases = [
        ("2001:db8:1:2::1", "store"),
        ("2001:db8:1:2:ffff::9", "429"),
        ("2001:db8:1:3::1", "store"),
        ("::ffff:192.0.2.7", "store"),
        ("192.0.2.7", "429"),
        ("10.1.2.3", "store"),
        ("10.1.2.3", "store"),
        ("::ffff:10.1.2.3", "store"),
        ("2001:db8:ff:1::1", "store"),
        ("2001:db8:ff:1::1", "store"),
    ];
    for (peer, expected) in cases {
        assert_eq!(kind(&from(&mut relay, t0, peer, &txn)), expected, "{peer}");
    }
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let t0 = epoch();
    let mut c = with_limits(|l| {
        l.send_relay = Rate::new(1, 1);
        l.exempt = vec![cidr("203.0.113.0/24")];
    });
    c.trusted_proxies = vec![cidr("127.0.0.1")];
    let mut relay = Relay::new(c);
    let txn = put("t", "@a:dest.example", TXN);
    let via = |relay: &mut Relay, peer: &str, forwarded: &str| {
        let mut head = txn.head_from(ip(peer));
        head.forwarded_for = vec![forwarded.to_owned()];
        kind(&feed(relay, t0, head, &txn.body))
    };
    let cases = [
        // Through the proxy: one budget per client it names.
        ("127.0.0.1", "198.51.100.1", "store"),
        ("127.0.0.1", "198.51.100.1", "429"),
        ("127.0.0.1", "198.51.100.2", "store"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.2", "429"),
        // A client the proxy names may be exempt.
        ("127.0.0.1", "203.0.113.5", "store"),
        ("127.0.0.1", "203.0.113.5", "store"),
        // From anyone else the header is the client's own word: ignored.
        ("192.0.2.9", "198.51.100.3", "store"),
        ("192.0.2.9", "198.51.100.4", "429"),
        ("192.0.2.9", "203.0.113.5", "429"),
    ];
    for (peer, forwarded, expected) in cases {
        assert_eq!(
            via(&mut relay, peer, forwarded),
            expected,
            "{peer} forwarding for {forwarded}"
        );
    }
}

/// A P2P node: its key, and its name (the key in hex).
fn p2p(seed: u8) -> (SigningKey, String) {
    let key = SigningKey::from_seed(KeyId::parse("ed25519:p2p").unwrap(), [seed; 32]);
    let hex = key.verify_key().to_hex();
    (key, hex)
}

/// A `send_relay` signed by P2P node `seed`.
fn p2p_put(seed: u8, txn: &str) -> Request {
    let (key, hex) = p2p(seed);
    let target = format!("/_matrix/federation/v1/send_relay/{txn}/@a:dest.example");
    signed("PUT", &target, &hex, &key, TXN)
}

/// relay.example with P2P names on, the usual pins, and at most `limit`
/// new origins per address an hour.
fn p2p_relay(limit: u32) -> Relay {
    let mut c = config();
    let mut ring = crate::auth::KeyRing::with_p2p_names();
    ring.pin(
        name("origin.example"),
        KeyId::parse("ed25519:1").unwrap(),
        spec_key().verify_key(),
    );
    c.keys = ring;
    c.limits.new_origins = Some(limit);
    c.limits.exempt = vec![cidr("10.0.0.0/8")];
    Relay::new(c)
}

#[test]
fn new_origins_per_client_address() {
    let t0 = epoch();
    let mut relay = p2p_relay(3);
    let (a, b) = ("192.0.2.1", "192.0.2.2");
    for seed in 1..=3 {
        assert_eq!(kind(&from(&mut relay, t0, a, &p2p_put(seed, "t"))), "store");
    }
    // A fourth origin from the same address: not before the hour is over.
    assert_eq!(
        retry_after_ms(from(&mut relay, t0, a, &p2p_put(4, "t"))),
        3_600_000
    );
    // Origins it brought already come back as often as they like.
    for seed in [1, 2, 3, 1] {
        assert_eq!(kind(&from(&mut relay, t0, a, &p2p_put(seed, "u"))), "store");
    }
    // A pinned origin is no stranger's: it does not count.
    let pinned = put("t", "@a:dest.example", TXN);
    assert_eq!(kind(&from(&mut relay, t0, a, &pinned)), "store");
    // An origin whose key is unknown is refused before it could count.
    let unknown = signed("PUT", SEND, "unknown.example", &key_for(8), TXN);
    assert_eq!(kind(&from(&mut relay, t0, a, &unknown)), "401");
    // Another address has a window of its own; an exempt one has none.
    assert_eq!(kind(&from(&mut relay, t0, b, &p2p_put(4, "t"))), "store");
    for seed in 10..20 {
        assert_eq!(
            kind(&from(&mut relay, t0, "10.0.0.1", &p2p_put(seed, "t"))),
            "store"
        );
    }
    let ten_minutes = t0 + secs(600);
    assert_eq!(
        retry_after_ms(from(&mut relay, ten_minutes, a, &p2p_put(5, "t"))),
        3_000_000
    );
    // A new hour: room again.
    let hour = t0 + secs(3_600);
    assert_eq!(kind(&from(&mut relay, hour, a, &p2p_put(5, "t"))), "store");
}

/// The window is per client address: a stranger naming a victim's origin
/// spends its own address's budget, never the victim's.
#[test]
fn a_stranger_spends_only_its_own_addresses_budget() {
    let t0 = epoch();
    let mut relay = p2p_relay(1);
    let (victim, stranger) = ("192.0.2.1", "198.51.100.9");
    assert_eq!(
        kind(&from(&mut relay, t0, victim, &p2p_put(1, "t1"))),
        "store"
    );
    // The stranger claims the victim's origin without its key: 401 once
    // the signature is checked, and its one new origin is spent.
    let mut forged = p2p_put(1, "t2");
    forged.body = RequestBody::Complete(TXN.replace("\"a\":1", "\"a\":2").into_bytes());
    assert_eq!(kind(&from(&mut relay, t0, stranger, &forged)), "401");
    assert_eq!(
        kind(&from(&mut relay, t0, stranger, &p2p_put(2, "t"))),
        "429"
    );
    // The victim goes on.
    assert_eq!(
        kind(&from(&mut relay, t0, victim, &p2p_put(1, "t3"))),
        "store"
    );
}

mod key_fetches {
    use super::*;

    /// An origin's key under `key_id`; its documents list `ed25519:f`.
    fn key(key_id: &str) -> SigningKey {
        SigningKey::from_seed(KeyId::parse(key_id).unwrap(), [6; 32])
    }

    fn from_origin(origin: &str, key_id: &str, txn: &str) -> Request {
        let target = format!("/_matrix/federation/v1/send_relay/{txn}/@a:dest.example");
        signed("PUT", &target, origin, &key(key_id), TXN)
    }

    fn relay(set: impl FnOnce(&mut RateLimits)) -> Relay {
        let mut c = with_limits(set);
        c.fetch_keys = true;
        Relay::new(c)
    }

    /// The key fetch `outputs` asks for.
    fn fetch_op(outputs: &[Output]) -> OpId {
        match outputs {
            [Output::FetchKeys { op, .. }] => *op,
            other => panic!("expected a key fetch, got {other:?}"),
        }
    }

    /// `origin`'s document with `ed25519:f`, checked as a driver does.
    fn good_document(origin: &str) -> CheckedKeys {
        let doc = crate::server_keys::document(
            &name(origin),
            &key("ed25519:f"),
            NOW_MS.saturating_add_ms(3_600_000),
        )
        .unwrap();
        let outcome = HttpOutcome::Response {
            status: 200,
            body: doc.to_string().into_bytes(),
            retry_after: None,
        };
        KeyCheck {
            server: name(origin),
        }
        .run(NOW_MS, &outcome)
    }

    /// The victim's key document came; then 200 requests for ten key IDs
    /// it lacks, from many addresses, fetch nothing until the interval is
    /// over, and then once.
    #[test]
    fn one_fetch_per_origin_per_interval_whatever_the_key_id() {
        let t0 = epoch();
        let mut relay = relay(|_| {});
        let victim = "victim.example";
        let op = fetch_op(&from(
            &mut relay,
            t0,
            "192.0.2.1",
            &from_origin(victim, "ed25519:f", "t0"),
        ));
        relay.handle_keys(t0, NOW_MS, op, good_document(victim));
        assert_eq!(
            kind(&drain(
                &mut relay,
                NOW_MS,
                &RequestBody::Complete(TXN.into())
            )),
            "store"
        );
        for i in 0..200u8 {
            let request = from_origin(victim, &format!("ed25519:k{}", i % 10), "t");
            let peer = format!("198.51.100.{i}");
            let later = t0 + secs(u64::from(i));
            assert_eq!(
                kind(&from(&mut relay, later, &peer, &request)),
                "401",
                "{i}"
            );
        }
        let request = from_origin(victim, "ed25519:k0", "t");
        fetch_op(&from(&mut relay, t0 + secs(300), "192.0.2.1", &request));
    }

    /// At most the global budget of fetches starts; past it an unknown key
    /// is 401 at once, while a fetch under way is still joined.
    #[test]
    fn fetches_in_all_are_capped() {
        let t0 = epoch();
        let mut relay = relay(|l| l.key_fetches = Rate::new(1, 2));
        let request = |origin: &str| from_origin(origin, "ed25519:f", "t");
        let a = "192.0.2.1";
        let first = fetch_op(&from(&mut relay, t0, a, &request("o1.example")));
        fetch_op(&from(&mut relay, t0, a, &request("o2.example")));
        assert_eq!(
            kind(&from(&mut relay, t0, a, &request("o3.example"))),
            "401"
        );
        assert_eq!(
            kind(&from(&mut relay, t0, a, &request("o1.example"))),
            "held"
        );
        // The budget is back a second later; the refused origin was not
        // counted as fetched.
        fetch_op(&from(&mut relay, t0 + secs(1), a, &request("o3.example")));
        // The held requests go on when their keys come.
        relay.handle_keys(t0 + secs(1), NOW_MS, first, good_document("o1.example"));
        let body = RequestBody::Complete(TXN.into());
        let outputs = drain(&mut relay, NOW_MS, &body);
        assert_eq!(outputs.len(), 2);
        assert!(outputs.iter().all(|o| matches!(o, Output::Store { .. })));
    }

    /// New origins count before a fetch starts: an address past its limit
    /// cannot make the relay fetch for yet another origin.
    #[test]
    fn new_origins_count_before_a_fetch() {
        let t0 = epoch();
        let mut relay = relay(|l| l.new_origins = Some(1));
        let a = "192.0.2.1";
        fetch_op(&from(
            &mut relay,
            t0,
            a,
            &from_origin("o1.example", "ed25519:f", "t"),
        ));
        let refused = from(
            &mut relay,
            t0,
            a,
            &from_origin("o2.example", "ed25519:f", "t"),
        );
        assert_eq!(kind(&refused), "429");
        // Joining the fetch under way of an origin it brought is fine.
        let again = from(
            &mut relay,
            t0,
            a,
            &from_origin("o1.example", "ed25519:f", "u"),
        );
        assert_eq!(kind(&again), "held");
    }
}

/// The relay's own tables stay within their bounds whatever comes.
#[test]
fn fetch_records_are_bounded() {
    let t0 = epoch();
    let mut limits = crate::relay::limits::Limits::new(&RateLimits {
        key_fetches: None,
        ..RateLimits::default()
    });
    for i in 0..3 * MAX_FETCH_RECORDS {
        let origin = name(&format!("o{i}.example"));
        assert!(limits.fetch_due(t0, &origin));
        assert!(limits.start_fetch(t0, &origin));
        assert!(!limits.fetch_due(t0, &origin), "{i}");
    }
    assert!(limits.fetched_len() <= MAX_FETCH_RECORDS);
}
