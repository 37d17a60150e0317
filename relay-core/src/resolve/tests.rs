use crate::epoch::epoch;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::cache::*;
use super::*;

fn name(s: &str) -> ServerName {
    ServerName::parse(s).unwrap()
}

/// Canned lookup answers; what was asked is recorded.
#[derive(Default)]
struct World {
    well_known: HashMap<String, WellKnownAnswer>,
    srv: HashMap<String, SrvAnswer>,
    asked: Vec<Lookup>,
}

impl World {
    fn well_known(mut self, host: &str, body: &str) -> Self {
        self.well_known.insert(host.into(), ok(body, None));
        self
    }

    fn srv(mut self, name: &str, records: &[(u16, u16, u16, &str)]) -> Self {
        let records = records
            .iter()
            .map(|&(priority, weight, port, target)| SrvRecord {
                priority,
                weight,
                port,
                target: target.into(),
                ttl: Duration::from_secs(300),
            })
            .collect();
        self.srv.insert(name.into(), SrvAnswer::Records(records));
        self
    }

    /// Runs discovery of `server` to its end: where to connect first.
    fn run(&mut self, resolver: &mut Resolver, now: Instant, server: &str) -> Endpoint {
        let all = self.run_seeded(resolver, now, server, 0);
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].clone()
    }

    /// Runs discovery of `server` with `seed` to its end: every endpoint.
    fn run_seeded(
        &mut self,
        resolver: &mut Resolver,
        now: Instant,
        server: &str,
        seed: u64,
    ) -> Vec<Endpoint> {
        let mut d = resolver.discover(&name(server), seed);
        for _ in 0..10 {
            match resolver.poll_discovery(now, &mut d) {
                Step::Done(e) => {
                    assert!(!e.is_empty());
                    return e;
                }
                Step::Lookup(lookup) => {
                    self.asked.push(lookup.clone());
                    match lookup {
                        Lookup::WellKnown { host } => {
                            let answer = self
                                .well_known
                                .get(&host)
                                .cloned()
                                .unwrap_or(WellKnownAnswer::Failed("refused".into()));
                            resolver.handle_well_known(now, UnixMillis(0), &mut d, answer);
                        }
                        Lookup::Srv { name } => {
                            let answer = self
                                .srv
                                .get(&name)
                                .cloned()
                                .unwrap_or(SrvAnswer::NoRecords { ttl: None });
                            resolver.handle_srv(now, &mut d, answer);
                        }
                    }
                }
            }
        }
        panic!("discovery of {server} does not end");
    }

    fn asked(&mut self) -> Vec<String> {
        std::mem::take(&mut self.asked)
            .into_iter()
            .map(|l| match l {
                Lookup::WellKnown { host } => format!("wk {host}"),
                Lookup::Srv { name } => format!("srv {name}"),
            })
            .collect()
    }
}

fn status(status: u16, body: &str) -> WellKnownAnswer {
    WellKnownAnswer::Response {
        status,
        body: body.as_bytes().to_vec(),
        cache_control: None,
        expires: None,
    }
}

fn ok(body: &str, cache_control: Option<&str>) -> WellKnownAnswer {
    WellKnownAnswer::Response {
        status: 200,
        body: body.as_bytes().to_vec(),
        cache_control: cache_control.map(str::to_owned),
        expires: None,
    }
}

/// `https://host:port tls=NAME host=HEADER`.
fn show(e: &Endpoint) -> String {
    format!("{} tls={} host={}", e.base_url(), e.tls_name, e.host_header)
}

#[test]
fn no_lookup_for_ip_literals_and_explicit_ports() {
    for (server, want) in [
        ("1.2.3.4", "https://1.2.3.4:8448 tls=1.2.3.4 host=1.2.3.4"),
        (
            "1.2.3.4:1234",
            "https://1.2.3.4:1234 tls=1.2.3.4 host=1.2.3.4:1234",
        ),
        (
            "[1234:5678::abcd]",
            "https://[1234:5678::abcd]:8448 tls=1234:5678::abcd host=[1234:5678::abcd]",
        ),
        (
            "[1234:5678::abcd]:5678",
            "https://[1234:5678::abcd]:5678 tls=1234:5678::abcd host=[1234:5678::abcd]:5678",
        ),
        (
            "matrix.org:443",
            "https://matrix.org:443 tls=matrix.org host=matrix.org:443",
        ),
    ] {
        let mut world = World::default().well_known(server, r#"{"m.server":"x.example"}"#);
        let e = world.run(&mut Resolver::default(), epoch(), server);
        assert_eq!(show(&e), want, "{server}");
        assert!(world.asked().is_empty(), "{server}");
    }
}

#[test]
fn overrides_win_over_everything() {
    let mut r = Resolver::from_flags([
        "b.example=http://127.0.0.1:9000",
        "c.example=https://[::1]/",
        "1.2.3.4=http://127.0.0.1:9",
    ])
    .unwrap();
    let mut world = World::default().well_known("b.example", r#"{"m.server":"x.example"}"#);
    let now = epoch();
    assert_eq!(
        show(&world.run(&mut r, now, "b.example")),
        "http://127.0.0.1:9000 tls=127.0.0.1 host=b.example"
    );
    assert_eq!(
        show(&world.run(&mut r, now, "c.example")),
        "https://[::1]:443 tls=::1 host=c.example"
    );
    assert_eq!(
        world.run(&mut r, now, "1.2.3.4").base_url(),
        "http://127.0.0.1:9"
    );
    assert!(world.asked().is_empty());
}

/// Only the operator's overrides skip the address policy: what discovery
/// found (an IP literal, a delegation, an SRV target, a `.well-known`
/// fetch or its redirect) is held to it.
#[test]
fn only_overrides_are_trusted() {
    let mut r = Resolver::from_flags(["b.example=http://127.0.0.1:9000"]).unwrap();
    let now = epoch();
    let mut world = World::default()
        .well_known("a.example", r#"{"m.server":"127.0.0.1:9000"}"#)
        .srv("_matrix-fed._tcp.c.example", &[(0, 0, 8448, "t.example")]);
    assert!(world.run(&mut r, now, "b.example").trusted);
    for server in ["127.0.0.1:9000", "a.example", "c.example"] {
        assert!(!world.run(&mut r, now, server).trusted, "{server}");
    }
    let fetch = WellKnownFetch::new("a.example");
    assert!(!fetch.request().0.trusted);
    let (to, _) = redirect(fetch.request().0, "https://127.0.0.1/x").unwrap();
    assert!(!to.trusted);
}

#[test]
fn well_known_delegation_used_as_is() {
    for (m_server, want) in [
        ("5.6.7.8", "https://5.6.7.8:8448 tls=5.6.7.8 host=5.6.7.8"),
        ("5.6.7.8:9", "https://5.6.7.8:9 tls=5.6.7.8 host=5.6.7.8:9"),
        ("[::2]:9", "https://[::2]:9 tls=::2 host=[::2]:9"),
        (
            "deleg.example:8443",
            "https://deleg.example:8443 tls=deleg.example host=deleg.example:8443",
        ),
    ] {
        let body = format!(r#"{{"m.server":"{m_server}"}}"#);
        let mut world = World::default().well_known("a.example", &body);
        let e = world.run(&mut Resolver::default(), epoch(), "a.example");
        assert_eq!(show(&e), want, "{m_server}");
        assert_eq!(world.asked(), ["wk a.example"], "{m_server}");
    }
}

#[test]
fn delegated_name_goes_through_srv_then_legacy_srv_then_8448() {
    let now = epoch();
    let body = r#"{"m.server":"deleg.example"}"#;

    let mut world = World::default()
        .well_known("a.example", body)
        .srv(
            "_matrix-fed._tcp.deleg.example",
            &[(10, 0, 4443, "t1.example.")],
        )
        .srv(
            "_matrix._tcp.deleg.example",
            &[(10, 0, 5553, "t2.example.")],
        );
    let e = world.run(&mut Resolver::default(), now, "a.example");
    assert_eq!(
        show(&e),
        "https://t1.example:4443 tls=deleg.example host=deleg.example"
    );
    assert_eq!(
        world.asked(),
        ["wk a.example", "srv _matrix-fed._tcp.deleg.example"]
    );

    let mut world = World::default().well_known("a.example", body).srv(
        "_matrix._tcp.deleg.example",
        &[(10, 0, 5553, "t2.example.")],
    );
    let e = world.run(&mut Resolver::default(), now, "a.example");
    assert_eq!(
        show(&e),
        "https://t2.example:5553 tls=deleg.example host=deleg.example"
    );
    assert_eq!(
        world.asked(),
        [
            "wk a.example",
            "srv _matrix-fed._tcp.deleg.example",
            "srv _matrix._tcp.deleg.example"
        ]
    );

    let mut world = World::default().well_known("a.example", body);
    let e = world.run(&mut Resolver::default(), now, "a.example");
    assert_eq!(
        show(&e),
        "https://deleg.example:8448 tls=deleg.example host=deleg.example"
    );
    assert_eq!(world.asked().len(), 3);
}

#[test]
fn without_valid_well_known_the_hostname_goes_through_srv() {
    let bad = [
        WellKnownAnswer::Failed("connection refused".into()),
        WellKnownAnswer::Response {
            status: 404,
            body: br#"{"m.server":"x.example"}"#.to_vec(),
            cache_control: None,
            expires: None,
        },
        ok("not json", None),
        ok(r#"["m.server"]"#, None),
        ok(r#"{}"#, None),
        ok(r#"{"m.server": 7}"#, None),
        ok(r#"{"m.server": ""}"#, None),
        ok(r#"{"m.server": "bad_name!"}"#, None),
        ok(r#"{"m.server": "x.example:port"}"#, None),
    ];
    for answer in bad {
        let mut world = World::default()
            .srv("_matrix-fed._tcp.a.example", &[(0, 0, 1, "fed.example")])
            .srv("x.example", &[]);
        world.well_known.insert("a.example".into(), answer.clone());
        let e = world.run(&mut Resolver::default(), epoch(), "a.example");
        assert_eq!(
            show(&e),
            "https://fed.example:1 tls=a.example host=a.example",
            "{answer:?}"
        );
        assert_eq!(
            world.asked(),
            ["wk a.example", "srv _matrix-fed._tcp.a.example"],
            "{answer:?}"
        );
    }

    let mut world = World::default().srv("_matrix._tcp.a.example", &[(0, 0, 2, "old.example")]);
    let e = world.run(&mut Resolver::default(), epoch(), "a.example");
    assert_eq!(
        show(&e),
        "https://old.example:2 tls=a.example host=a.example"
    );

    let mut world = World::default();
    world.srv.insert(
        "_matrix-fed._tcp.a.example".into(),
        SrvAnswer::Failed("timeout".into()),
    );
    let e = world.run(&mut Resolver::default(), epoch(), "a.example");
    assert_eq!(
        show(&e),
        "https://a.example:8448 tls=a.example host=a.example"
    );
    assert_eq!(
        world.asked(),
        [
            "wk a.example",
            "srv _matrix-fed._tcp.a.example",
            "srv _matrix._tcp.a.example"
        ]
    );
}

/// `host:port` of each endpoint the discovery of `a.example` ends in, with
/// `records` as its SRV answer and `seed`.
fn srv_order(records: &[(u16, u16, u16, &str)], seed: u64) -> Vec<String> {
    let mut world = World::default().srv("_matrix-fed._tcp.a.example", records);
    world
        .run_seeded(&mut Resolver::default(), epoch(), "a.example", seed)
        .iter()
        .map(|e| format!("{}:{}", e.host, e.port))
        .collect()
}

#[test]
fn srv_targets_by_priority_without_unusable_ones() {
    for (records, want) in [
        (
            vec![(20, 0, 1, "late.example"), (10, 0, 2, "early.example")],
            vec!["early.example:2", "late.example:1"],
        ),
        // Priority wins over weight.
        (
            vec![
                (30, 100, 1, "c.example"),
                (10, 1, 2, "a.example"),
                (20, 100, 3, "b.example"),
            ],
            vec!["a.example:2", "b.example:3", "c.example:1"],
        ),
        // `.` (RFC 2782: no service there) and non-hostnames are skipped.
        (
            vec![
                (1, 0, 5, "bad name"),
                (2, 0, 6, "OK.example."),
                (3, 0, 7, "."),
                (4, 0, 8, "x.example:9"),
                (5, 0, 9, ""),
            ],
            vec!["ok.example:6"],
        ),
        // The same target twice is tried once.
        (
            vec![(1, 0, 5, "t.example"), (2, 0, 5, "T.example.")],
            vec!["t.example:5"],
        ),
        // Nothing usable counts as no record: then 8448.
        (vec![(10, 0, 0, ".")], vec!["a.example:8448"]),
        (vec![], vec!["a.example:8448"]),
        // At most MAX_SRV_TARGETS, the preferred ones.
        (
            vec![
                (6, 0, 6, "t6.example"),
                (5, 0, 5, "t5.example"),
                (4, 0, 4, "t4.example"),
                (3, 0, 3, "t3.example"),
                (2, 0, 2, "t2.example"),
                (1, 0, 1, "t1.example"),
            ],
            vec![
                "t1.example:1",
                "t2.example:2",
                "t3.example:3",
                "t4.example:4",
            ],
        ),
    ] {
        for seed in 0..50 {
            assert_eq!(srv_order(&records, seed), want, "{records:?} seed {seed}");
        }
    }
    assert_eq!(MAX_SRV_TARGETS, 4);
}

#[test]
fn equal_priorities_in_weighted_random_order() {
    let records = [
        (10, 60, 1, "a.example"),
        (10, 30, 2, "b.example"),
        (10, 10, 3, "c.example"),
        (20, 0, 4, "d.example"),
    ];
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut orders = HashSet::new();
    for seed in 0..1000 {
        let order = srv_order(&records, seed);
        assert_eq!(order, srv_order(&records, seed), "seed {seed}");
        assert_eq!(order.len(), 4, "{order:?}");
        assert_eq!(order[3], "d.example:4", "{order:?}");
        *first.entry(order[0].clone()).or_default() += 1;
        orders.insert(order);
    }
    // Every order of the three is reached, and each comes first about as
    // often as its weight says (600, 300, 100 of 1000).
    assert_eq!(orders.len(), 6, "{orders:?}");
    let share = |t: &str| first.get(t).copied().unwrap_or_default();
    assert!((520..680).contains(&share("a.example:1")), "{first:?}");
    assert!((230..370).contains(&share("b.example:2")), "{first:?}");
    assert!((60..140).contains(&share("c.example:3")), "{first:?}");
}

#[test]
fn weight_zero_records_get_a_small_chance() {
    // RFC 2782: weight 0 has "a very small chance of being selected";
    // here one share in 11.
    let records = [(10, 0, 1, "zero.example"), (10, 10, 2, "ten.example")];
    let zero_first = (0..1100)
        .filter(|&seed| srv_order(&records, seed)[0] == "zero.example:1")
        .count();
    assert!((50..150).contains(&zero_first), "{zero_first}");

    // Only weight 0: any order, each first about as often.
    let records = [
        (10, 0, 1, "x.example"),
        (10, 0, 2, "y.example"),
        (10, 0, 3, "z.example"),
    ];
    let mut first: HashMap<String, usize> = HashMap::new();
    for seed in 0..900 {
        let order = srv_order(&records, seed);
        assert_eq!(order.len(), 3, "{order:?}");
        *first.entry(order[0].clone()).or_default() += 1;
    }
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.values().all(|n| (200..400).contains(n)), "{first:?}");
}

#[test]
fn failover_targets_carry_the_srv_base_name() {
    let t0 = epoch();
    let mut r = Resolver::default();
    let mut world = World::default()
        .well_known("a.example", r#"{"m.server":"deleg.example"}"#)
        .srv(
            "_matrix-fed._tcp.deleg.example",
            &[
                (20, 0, 3, "third.example."),
                (10, 0, 1, "first.example."),
                (15, 0, 2, "second.example."),
                (10, 0, 0, "."),
            ],
        );
    let want = [
        "https://first.example:1 tls=deleg.example host=deleg.example",
        "https://second.example:2 tls=deleg.example host=deleg.example",
        "https://third.example:3 tls=deleg.example host=deleg.example",
    ];
    let all = world.run_seeded(&mut r, t0, "a.example", 7);
    assert_eq!(all.iter().map(show).collect::<Vec<_>>(), want);
    assert_eq!(world.asked().len(), 2);
    // From the cache, with another seed: the same list, no lookup.
    let again = world.run_seeded(&mut r, t0 + Duration::from_secs(1), "a.example", 8);
    assert_eq!(again, all);
    assert!(world.asked().is_empty());
}

#[test]
fn unreachable_targets_come_last_for_a_minute() {
    let t0 = epoch();
    let mut r = Resolver::default();
    let mut world = World::default().well_known("a.example", "{}").srv(
        "_matrix-fed._tcp.a.example",
        &[
            (10, 0, 1, "first.example."),
            (20, 0, 2, "second.example."),
            (30, 0, 3, "third.example."),
        ],
    );
    let hosts = |endpoints: &[Endpoint]| -> Vec<String> {
        endpoints.iter().map(|e| e.host.clone()).collect()
    };
    let all = world.run_seeded(&mut r, t0, "a.example", 1);
    assert_eq!(
        hosts(&all),
        ["first.example", "second.example", "third.example"]
    );

    r.mark_unreachable(t0, &all[0]);
    r.mark_unreachable(t0, &all[1]);
    let later = t0 + UNREACHABLE_FOR - Duration::from_secs(1);
    assert_eq!(
        hosts(&world.run_seeded(&mut r, later, "a.example", 1)),
        ["third.example", "first.example", "second.example"],
        "still tried, after the others, in their order"
    );
    assert_eq!(
        hosts(&world.run_seeded(&mut r, t0 + UNREACHABLE_FOR, "a.example", 1)),
        ["first.example", "second.example", "third.example"],
        "forgotten after a minute"
    );

    // A server with one target still gets it.
    let one = world.run(&mut r, t0, "1.2.3.4:8448");
    r.mark_unreachable(t0, &one);
    assert_eq!(world.run(&mut r, t0, "1.2.3.4:8448"), one);
}

#[test]
fn well_known_down_is_asked_again_soon_and_no_delegation_after_an_hour() {
    assert_eq!(WELL_KNOWN_DOWN, Duration::from_secs(120));
    assert_eq!(WELL_KNOWN_INVALID, Duration::from_secs(3600));
    let second = Duration::from_secs(1);
    for (answer, lifetime) in [
        (WellKnownAnswer::Failed("refused".into()), WELL_KNOWN_DOWN),
        (WellKnownAnswer::Failed("timed out".into()), WELL_KNOWN_DOWN),
        (status(500, ""), WELL_KNOWN_DOWN),
        (status(503, r#"{"m.server":"x.example"}"#), WELL_KNOWN_DOWN),
        (status(404, ""), WELL_KNOWN_INVALID),
        (
            status(403, r#"{"m.server":"x.example"}"#),
            WELL_KNOWN_INVALID,
        ),
        (status(302, ""), WELL_KNOWN_INVALID),
        (ok("not json", None), WELL_KNOWN_INVALID),
        (ok(r#"{"m.server":"bad_name!"}"#, None), WELL_KNOWN_INVALID),
    ] {
        let t0 = epoch();
        let mut r = Resolver::default();
        let mut world = World::default();
        world.well_known.insert("a.example".into(), answer.clone());
        let e = world.run(&mut r, t0, "a.example");
        assert_eq!(e.host, "a.example", "{answer:?}");
        assert_eq!(world.asked()[0], "wk a.example", "{answer:?}");
        world.run(&mut r, t0 + lifetime - second, "a.example");
        assert!(
            !world.asked().contains(&"wk a.example".to_owned()),
            "{answer:?}"
        );
        world.run(&mut r, t0 + lifetime, "a.example");
        assert_eq!(world.asked()[0], "wk a.example", "{answer:?}");
    }
}

#[test]
fn a_delegation_outlives_its_lifetime_while_the_server_is_down() {
    let t0 = epoch();
    let second = Duration::from_secs(1);
    let lifetime = Duration::from_secs(600);
    let delegated = "https://d.example:1 tls=d.example host=d.example:1";
    let bare = "https://a.example:8448 tls=a.example host=a.example";
    let valid = ok(r#"{"m.server":"d.example:1"}"#, Some("max-age=600"));
    let mut r = Resolver::default();
    let mut world = World::default();
    world.well_known.insert("a.example".into(), valid.clone());
    assert_eq!(show(&world.run(&mut r, t0, "a.example")), delegated);
    world.asked();

    // Expired, and the server is down: still delegated, asked again soon.
    world.well_known.insert(
        "a.example".into(),
        WellKnownAnswer::Failed("refused".into()),
    );
    let expired = t0 + lifetime;
    assert_eq!(show(&world.run(&mut r, expired, "a.example")), delegated);
    assert_eq!(world.asked(), ["wk a.example"]);
    let soon = expired + WELL_KNOWN_DOWN - second;
    assert_eq!(show(&world.run(&mut r, soon, "a.example")), delegated);
    assert!(world.asked().is_empty());
    world
        .well_known
        .insert("a.example".into(), status(502, "Bad Gateway"));
    let later = expired + WELL_KNOWN_DOWN;
    assert_eq!(show(&world.run(&mut r, later, "a.example")), delegated);
    assert_eq!(world.asked(), ["wk a.example"]);
    // Up to the end of the grace period, and not past it.
    let grace_end = expired + WELL_KNOWN_GRACE;
    let last = grace_end - second;
    assert_eq!(show(&world.run(&mut r, last, "a.example")), delegated);
    assert_eq!(world.asked(), ["wk a.example"]);
    assert_eq!(show(&world.run(&mut r, grace_end, "a.example")), bare);
    assert_eq!(world.asked()[0], "wk a.example");

    // A "no delegation" answer ends it at once.
    let mut r = Resolver::default();
    world.well_known.insert("a.example".into(), valid);
    assert_eq!(show(&world.run(&mut r, t0, "a.example")), delegated);
    world
        .well_known
        .insert("a.example".into(), status(404, "{}"));
    assert_eq!(show(&world.run(&mut r, expired, "a.example")), bare);
}

#[test]
fn cached_outcomes_skip_lookups_until_they_expire() {
    let mut r = Resolver::default();
    let t0 = epoch();
    let mut world = World::default()
        .well_known("a.example", r#"{"m.server":"deleg.example"}"#)
        .srv("_matrix-fed._tcp.deleg.example", &[(0, 0, 7, "t.example")]);
    let first = world.run(&mut r, t0, "a.example");
    assert_eq!(world.asked().len(), 2);
    // The SRV TTL (300 s) runs out before the well-known's 24 h.
    let soon = t0 + Duration::from_secs(299);
    assert_eq!(world.run(&mut r, soon, "a.example"), first);
    assert!(world.asked().is_empty());
    let later = t0 + Duration::from_secs(301);
    assert_eq!(world.run(&mut r, later, "a.example"), first);
    assert_eq!(world.asked(), ["srv _matrix-fed._tcp.deleg.example"]);
    let next_day = t0 + WELL_KNOWN_DEFAULT + Duration::from_secs(1);
    world.run(&mut r, next_day, "a.example");
    assert_eq!(
        world.asked(),
        ["wk a.example", "srv _matrix-fed._tcp.deleg.example"]
    );

    // A missing well-known is remembered for an hour.
    let mut r = Resolver::default();
    let mut world = World::default();
    world
        .well_known
        .insert("b.example".into(), status(404, "{}"));
    world.run(&mut r, t0, "b.example");
    assert_eq!(world.asked().len(), 3);
    world.run(&mut r, t0 + Duration::from_secs(3599), "b.example");
    assert!(world.asked().is_empty());
    world.run(&mut r, t0 + Duration::from_secs(3601), "b.example");
    assert_eq!(
        world.asked(),
        [
            "wk b.example",
            "srv _matrix-fed._tcp.b.example",
            "srv _matrix._tcp.b.example"
        ]
    );
}

#[test]
fn a_failed_dns_exchange_is_remembered_briefly() {
    let mut r = Resolver::default();
    let t0 = epoch();
    let mut world = World::default().well_known("a.example", r#"{"m.server":"d.example"}"#);
    world.srv.insert(
        "_matrix-fed._tcp.d.example".into(),
        SrvAnswer::Failed("timeout".into()),
    );
    world.run(&mut r, t0, "a.example");
    world.asked();
    world.run(
        &mut r,
        t0 + SRV_FAILURE - Duration::from_secs(1),
        "a.example",
    );
    assert!(world.asked().is_empty());
    world.run(&mut r, t0 + SRV_FAILURE, "a.example");
    assert_eq!(world.asked(), ["srv _matrix-fed._tcp.d.example"]);
}

#[test]
fn answers_nobody_asked_for_are_ignored() {
    let mut r = Resolver::default();
    let now = epoch();
    let mut d = r.discover(&name("a.example"), 0);
    r.handle_srv(now, &mut d, SrvAnswer::Records(vec![]));
    assert_eq!(
        r.poll_discovery(now, &mut d),
        Step::Lookup(Lookup::WellKnown {
            host: "a.example".into()
        })
    );
    let mut done = r.discover(&name("1.2.3.4"), 0);
    r.handle_well_known(
        now,
        UnixMillis(0),
        &mut done,
        ok(r#"{"m.server":"x.y"}"#, None),
    );
    assert_eq!(
        r.poll_discovery(now, &mut done),
        Step::Done(vec![Endpoint {
            scheme: Scheme::Https,
            host: "1.2.3.4".into(),
            port: 8448,
            tls_name: "1.2.3.4".into(),
            host_header: "1.2.3.4".into(),
            trusted: false,
        }])
    );
    assert_eq!(r.cached(), (0, 0));
}

#[test]
fn the_cache_is_bounded() {
    let mut r = Resolver::default().with_cache_capacity(3);
    let mut world = World::default();
    let t0 = epoch();
    for i in 0..10 {
        let at = t0 + Duration::from_secs(i);
        world.run(&mut r, at, &format!("s{i}.example"));
        let (wk, srv) = r.cached();
        assert!(wk <= 3 && srv <= 3, "{wk} {srv}");
    }
    world.asked();
    // The newest stay, the oldest went.
    world.run(&mut r, t0 + Duration::from_secs(10), "s9.example");
    assert!(world.asked().iter().all(|l| !l.starts_with("wk")));
    world.run(&mut r, t0 + Duration::from_secs(10), "s0.example");
    assert_eq!(world.asked()[0], "wk s0.example");
}

#[test]
fn well_known_lifetimes() {
    let now = UnixMillis(784_111_777_000); // Sun, 06 Nov 1994 08:49:37 GMT
    let h = |n: u64| Duration::from_secs(n * 3600);
    for (cache_control, expires, want) in [
        (None, None, h(24)),
        (Some("max-age=7200"), None, h(2)),
        (Some("public, max-age=\"7200\""), None, h(2)),
        (Some("MAX-AGE=7200, must-revalidate"), None, h(2)),
        (Some("max-age=999999999"), None, h(48)),
        (Some("max-age=0"), None, WELL_KNOWN_MIN),
        (Some("no-store"), None, WELL_KNOWN_MIN),
        (Some("private"), None, h(24)),
        (None, Some("Sun, 06 Nov 1994 11:49:37 GMT"), h(3)),
        (None, Some("Sun, 06 Nov 1994 08:00:00 GMT"), WELL_KNOWN_MIN),
        (None, Some("0"), WELL_KNOWN_MIN),
        (None, Some("Tue, 08 Nov 1994 08:49:37 GMT"), h(48)),
        // max-age wins over Expires.
        (
            Some("max-age=3600"),
            Some("Sun, 06 Nov 1994 11:49:37 GMT"),
            h(1),
        ),
    ] {
        assert_eq!(
            well_known_lifetime(cache_control, expires, now),
            want,
            "{cache_control:?} {expires:?}"
        );
    }
}

#[test]
fn valid_well_known_uses_its_lifetime() {
    let mut r = Resolver::default();
    let t0 = epoch();
    let mut world = World::default();
    world.well_known.insert(
        "a.example".into(),
        ok(r#"{"m.server":"d.example:1"}"#, Some("max-age=600")),
    );
    world.run(&mut r, t0, "a.example");
    world.run(&mut r, t0 + Duration::from_secs(599), "a.example");
    assert_eq!(world.asked(), ["wk a.example"]);
    world.run(&mut r, t0 + Duration::from_secs(600), "a.example");
    assert_eq!(world.asked(), ["wk a.example"]);
}

#[test]
fn srv_lifetimes() {
    let s = Duration::from_secs;
    assert_eq!(srv_lifetime(Some(s(300))), s(300));
    assert_eq!(srv_lifetime(Some(s(0))), SRV_MIN);
    assert_eq!(srv_lifetime(Some(s(10 * 86_400))), SRV_MAX);
    assert_eq!(srv_lifetime(None), SRV_NEGATIVE_DEFAULT);
}

#[test]
fn http_dates() {
    for (s, want) in [
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777_000)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
        ("Tue, 29 Feb 2028 23:59:59 GMT", Some(1_835_481_599_000)),
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sunday, 06-Nov-94 08:49:37 GMT", None),
        ("Sun Nov  6 08:49:37 1994", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:49:37 GMT", None),
        ("", None),
    ] {
        assert_eq!(parse_http_date(s).map(|u| u.0), want, "{s}");
    }
}

#[test]
fn bad_flags() {
    for bad in [
        "nope",
        "b.example",
        "b.example=127.0.0.1:9",
        "b.example=ftp://x",
        "bad_name=http://x",
        "b.example=http://x/path",
        "b.example=http://:9",
        "b.example=http://x:port",
    ] {
        assert!(Resolver::from_flags([bad]).is_err(), "{bad}");
    }
}

#[test]
fn well_known_redirects() {
    let from = Endpoint {
        scheme: Scheme::Https,
        host: "a.example".into(),
        port: 443,
        tls_name: "a.example".into(),
        host_header: "a.example".into(),
        trusted: false,
    };
    for (location, want) in [
        (
            "/other",
            Some("https://a.example:443 tls=a.example host=a.example /other"),
        ),
        (
            "https://www.a.example/.well-known/matrix/server",
            Some(
                "https://www.a.example:443 tls=www.a.example host=www.a.example /.well-known/matrix/server",
            ),
        ),
        (
            "HTTPS://b.example:8443/x?y#frag",
            Some("https://b.example:8443 tls=b.example host=b.example:8443 /x?y"),
        ),
        (
            "https://b.example",
            Some("https://b.example:443 tls=b.example host=b.example /"),
        ),
        (
            "https://[::1]:9/p",
            Some("https://[::1]:9 tls=::1 host=[::1]:9 /p"),
        ),
        ("http://b.example/.well-known/matrix/server", None),
        ("//b.example/x", None),
        ("relative/path", None),
        ("https://bad_name/x", None),
        ("https:///x", None),
        ("", None),
    ] {
        let got = redirect(&from, location).map(|(e, t)| format!("{} {t}", show(&e)));
        assert_eq!(got.as_deref(), want, "{location}");
    }
}

/// Runs an attempt at `targets` endpoints (`t1.example`, …), reporting
/// `reports` in turn: each step, as text.
fn attempt_steps(
    resolver: &mut Resolver,
    now: Instant,
    targets: usize,
    reports: &[Tried],
) -> Vec<String> {
    let endpoints = (1..=targets)
        .map(|i| Endpoint {
            scheme: Scheme::Https,
            host: format!("t{i}.example"),
            port: 8448,
            tls_name: "s.example".into(),
            host_header: "s.example".into(),
            trusted: false,
        })
        .collect();
    let mut attempt = Attempt::new(endpoints);
    let mut reports = reports.iter().cloned();
    let mut steps = Vec::new();
    for _ in 0..10 {
        match attempt.poll() {
            AttemptStep::Try {
                endpoint,
                connect_within,
            } => {
                let within = connect_within.map_or("rest".to_owned(), |d| format!("{d:?}"));
                steps.push(format!("try {} within {within}", endpoint.host));
                let report = reports.next().expect("a report for every try");
                resolver.handle_tried(now, &mut attempt, report);
            }
            AttemptStep::Answered => {
                steps.push("answered".into());
                return steps;
            }
            AttemptStep::Failed(e) => {
                steps.push(format!("failed: {e}"));
                return steps;
            }
        }
    }
    panic!("the attempt does not end: {steps:?}");
}

#[test]
fn an_attempt_fails_over_only_past_unreachable_targets() {
    use Tried::*;
    let down = |e: &str| Unreachable(e.into());
    let broke = |e: &str| Failed(e.into());
    let cases: Vec<(usize, Vec<Tried>, Vec<&str>)> = vec![
        (
            3,
            vec![Answered],
            vec!["try t1.example within 10s", "answered"],
        ),
        (
            3,
            vec![down("a"), Answered],
            vec![
                "try t1.example within 10s",
                "try t2.example within 10s",
                "answered",
            ],
        ),
        (
            3,
            vec![down("a"), down("b"), down("c")],
            vec![
                "try t1.example within 10s",
                "try t2.example within 10s",
                "try t3.example within rest",
                "failed: a; b; c",
            ],
        ),
        (
            2,
            vec![down("a"), Answered],
            vec![
                "try t1.example within 10s",
                "try t2.example within rest",
                "answered",
            ],
        ),
        // Past a made connection the request may have been acted on.
        (
            3,
            vec![down("a"), broke("b")],
            vec![
                "try t1.example within 10s",
                "try t2.example within 10s",
                "failed: a; b",
            ],
        ),
        (
            3,
            vec![broke("a")],
            vec!["try t1.example within 10s", "failed: a"],
        ),
        (
            1,
            vec![down("a")],
            vec!["try t1.example within rest", "failed: a"],
        ),
        (
            1,
            vec![Answered],
            vec!["try t1.example within rest", "answered"],
        ),
        (0, vec![], vec!["failed: no endpoint to try"]),
    ];
    for (targets, reports, want) in cases {
        let got = attempt_steps(&mut Resolver::default(), epoch(), targets, &reports);
        assert_eq!(got, want, "{targets} targets, {reports:?}");
    }
}

#[test]
fn an_attempt_marks_unreachable_only_targets_with_others_left_to_try_first() {
    let t0 = epoch();
    let mut r = Resolver::default();
    let mut world = World::default().well_known("a.example", "{}").srv(
        "_matrix-fed._tcp.a.example",
        &[
            (10, 0, 1, "first.example."),
            (20, 0, 2, "second.example."),
            (30, 0, 3, "third.example."),
        ],
    );
    let hosts = |endpoints: Vec<Endpoint>| -> Vec<String> {
        endpoints.into_iter().map(|e| e.host).collect()
    };
    let run = |r: &mut Resolver, world: &mut World, now, reports: &[Tried]| {
        let mut a = Attempt::new(world.run_seeded(r, now, "a.example", 1));
        for report in reports {
            assert!(matches!(a.poll(), AttemptStep::Try { .. }));
            r.handle_tried(now, &mut a, report.clone());
        }
    };
    // A failure after the connection was made marks nothing.
    run(&mut r, &mut world, t0, &[Tried::Failed("reset".into())]);
    assert_eq!(
        hosts(world.run_seeded(&mut r, t0, "a.example", 1)),
        ["first.example", "second.example", "third.example"]
    );
    run(
        &mut r,
        &mut world,
        t0,
        &[Tried::Unreachable("refused".into()), Tried::Answered],
    );
    assert_eq!(
        hosts(world.run_seeded(&mut r, t0 + Duration::from_secs(1), "a.example", 1)),
        ["second.example", "third.example", "first.example"]
    );
    assert_eq!(
        hosts(world.run_seeded(&mut r, t0 + UNREACHABLE_FOR, "a.example", 1)),
        ["first.example", "second.example", "third.example"]
    );

    // One target: nothing to try first instead, so it is not marked.
    let mut one = Attempt::new(vec![world.run(&mut r, t0, "1.2.3.4:8448")]);
    assert!(matches!(one.poll(), AttemptStep::Try { .. }));
    assert_eq!(one.handle_tried(Tried::Unreachable("refused".into())), None);
}

#[test]
fn an_attempt_ignores_reports_nobody_asked_for() {
    let endpoint = |host: &str| Endpoint {
        scheme: Scheme::Https,
        host: host.into(),
        port: 8448,
        tls_name: host.into(),
        host_header: host.into(),
        trusted: false,
    };
    let mut r = Resolver::default();
    let now = epoch();
    let mut a = Attempt::new(vec![endpoint("a.example"), endpoint("b.example")]);
    // Before any try.
    r.handle_tried(now, &mut a, Tried::Answered);
    let first = a.poll();
    assert!(
        matches!(&first, AttemptStep::Try { endpoint, .. } if endpoint.host == "a.example"),
        "{first:?}"
    );
    // Polled again before the report: the same endpoint.
    assert_eq!(a.poll(), first);
    r.handle_tried(now, &mut a, Tried::Answered);
    // After the end.
    r.handle_tried(now, &mut a, Tried::Unreachable("late".into()));
    assert_eq!(a.poll(), AttemptStep::Answered);
    assert_eq!(a.poll(), AttemptStep::Answered);
}

#[test]
fn a_well_known_fetch_follows_at_most_three_redirects() {
    use Fetched::*;
    let path = "/.well-known/matrix/server";
    // Responses (status, Location), what each means, and the last request.
    type Case<'a> = (Vec<(u16, Option<&'a str>)>, Vec<Fetched>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![(200, None)],
            vec![Answer],
            "https://a.example:443 tls=a.example host=a.example",
        ),
        // Not a redirect, or not one to follow: the response is the answer.
        (
            vec![(200, Some("https://b.example/"))],
            vec![Answer],
            "https://a.example:443",
        ),
        (vec![(404, None)], vec![Answer], "https://a.example:443"),
        (vec![(302, None)], vec![Answer], "https://a.example:443"),
        (
            vec![(301, Some("http://b.example/x"))],
            vec![Answer],
            "https://a.example:443",
        ),
        (
            vec![(302, Some("https://b.example:8443/x")), (200, None)],
            vec![Redirected, Answer],
            "https://b.example:8443 tls=b.example host=b.example:8443 /x",
        ),
        (
            vec![(307, Some("/moved")), (308, Some("/again")), (200, None)],
            vec![Redirected, Redirected, Answer],
            "https://a.example:443 tls=a.example host=a.example /again",
        ),
        (
            vec![
                (302, Some("/1")),
                (302, Some("/2")),
                (302, Some("/3")),
                (302, Some("/4")),
            ],
            vec![Redirected, Redirected, Redirected, TooManyRedirects],
            "https://a.example:443 tls=a.example host=a.example /3",
        ),
    ];
    for (responses, want, last) in cases {
        let mut fetch = WellKnownFetch::new("a.example");
        assert_eq!(fetch.request().1, path);
        let got: Vec<Fetched> = responses
            .iter()
            .map(|&(status, location)| fetch.handle_response(status, location))
            .collect();
        assert_eq!(got, want, "{responses:?}");
        let (endpoint, target) = fetch.request();
        let request = format!("{} {target}", show(endpoint));
        assert!(request.starts_with(last), "{responses:?}: {request}");
        if !last.contains(" /") {
            assert_eq!(target, path, "{responses:?}");
        }
    }
}
