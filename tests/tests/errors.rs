//! Every row of PROTOCOL's two error tables, unknown paths and methods, and
//! the order of checks (PROTOCOL §3). Every error must be a Matrix error
//! body sent as `application/json`.

use relay_tests::api::{markers, put_txn_bytes, relay_txn_bytes};
use relay_tests::http::Request;
use relay_tests::*;
use serde_json::{Value, json};

const ALICE: &str = "@alice:dest.example";

fn pdus(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"i": i})).collect()
}

fn edus(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"edu_type": "m.x", "content": {"i": i}}))
        .collect()
}

/// Invalid `{userID}` path segments, raw as sent.
fn invalid_user_segments() -> Vec<String> {
    let mut v: Vec<String> = [
        "alice:dest.example",
        "alice",
        "@alice",
        "@alice:",
        "@:dest.example",
        "%40%3Adest.example",
        "@al%20ice:dest.example",
        "@al%00ice:dest.example",
        "@al%09ice:dest.example",
        "@al%7Fice:dest.example",
        "@al%C3%A9ice:dest.example",
        "@al%FFice:dest.example",
        "@alice:exa_mple.org",
        "@alice:dest.example:99999",
        "@alice:dest.example:",
        "@alice:%5B::1",
        "@alice:dest.example%2F",
        "!room:dest.example",
        "%2540alice%3Adest.example",
        "%ZZalice:dest.example",
        "@alice%3",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // 256 bytes in all.
    v.push(format!(
        "@{}:dest.example",
        "x".repeat(256 - "@:dest.example".len())
    ));
    v
}

// ---------------------------------------------------------------- send_relay

#[test]
fn put_invalid_user_id_is_400_m_invalid_username() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    for (i, segment) in invalid_user_segments().iter().enumerate() {
        let resp = put_txn(
            &relay,
            &origin,
            &format!("t{i}"),
            segment,
            &txn_body(ORIGIN_NAME, "x"),
        );
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (400, Some("M_INVALID_USERNAME")),
            "PUT with userID segment {segment:?}:\n{resp:?}"
        );
        resp.assert_matrix_error_shape();
    }
    assert!(drain(&relay, &dest, ALICE).is_empty(), "nothing was stored");
}

#[test]
fn put_body_not_json_is_400_m_not_json() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let bodies: [&[u8]; 8] = [
        b"not json",
        b"{\"pdus\": [}",
        b"{\"pdus\": []",
        b"{\"pdus\": [], \"x\": \"\xff\xfe\"}",
        b"\xef\xbb\xbf{\"pdus\": []}x",
        b"{\"pdus\": []} {}",
        b"{'pdus': []}",
        b"\x00",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let resp = put_txn_bytes(&relay, &origin, &format!("t{i}"), ALICE, body);
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (400, Some("M_NOT_JSON")),
            "PUT body {:?}:\n{resp:?}",
            String::from_utf8_lossy(body)
        );
        resp.assert_matrix_error_shape();
    }
    assert!(drain(&relay, &dest, ALICE).is_empty(), "nothing was stored");
}

#[test]
fn put_body_not_a_transaction_is_400_m_bad_json() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let bodies = [
        json!({}),
        json!({"origin": ORIGIN_NAME, "origin_server_ts": 1, "edus": []}),
        json!({"pdus": {}}),
        json!({"pdus": "[]"}),
        json!({"pdus": null}),
        json!({"pdus": 3}),
        json!({"pdus": [], "edus": "x"}),
        json!({"pdus": [], "edus": {}}),
        json!([]),
        json!("pdus"),
        json!(null),
        json!(17),
        json!({"pdus": pdus(51)}),
        json!({"pdus": [], "edus": edus(101)}),
        json!({"pdus": pdus(51), "edus": edus(101)}),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let resp = put_txn(&relay, &origin, &format!("t{i}"), ALICE, body);
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (400, Some("M_BAD_JSON")),
            "PUT body {}:\n{resp:?}",
            serde_json::to_string(body)
                .expect("serialise")
                .chars()
                .take(200)
                .collect::<String>()
        );
        resp.assert_matrix_error_shape();
    }
    assert!(drain(&relay, &dest, ALICE).is_empty(), "nothing was stored");
}

#[test]
fn put_at_the_pdu_and_edu_limits_is_accepted() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let bodies = [
        json!({"pdus": pdus(50), "edus": edus(100)}),
        // `edus` may be omitted; other fields are tolerated.
        json!({"pdus": []}),
        json!({"pdus": [], "origin": "someone.else", "extra": {"x": [1]}, "origin_server_ts": 5}),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let resp = put_txn(&relay, &origin, &format!("t{i}"), ALICE, body);
        assert_eq!(
            (resp.status, resp.json()),
            (200, json!({})),
            "body #{i}:\n{resp:?}"
        );
    }
    let pulled = drain(&relay, &dest, ALICE);
    assert_eq!(pulled.len(), 3);
    assert_eq!(
        pulled[0].transaction["pdus"].as_array().map(Vec::len),
        Some(50)
    );
    assert_eq!(
        pulled[0].transaction["edus"].as_array().map(Vec::len),
        Some(100)
    );
    assert!(
        pulled.iter().all(|p| p.origin() == ORIGIN_NAME),
        "{pulled:?}"
    );
}

#[test]
fn put_for_a_destination_not_served_is_403() {
    let origin = Server::origin_example();
    let relay = RelayProcess::standard(&[&origin]);
    for user in [
        "@alice:other.example",
        "@alice:dest.example:8448",
        "@alice:DEST.EXAMPLE",
        "@alice:sub.dest.example",
    ] {
        let resp = put_txn(
            &relay,
            &origin,
            "t",
            &percent_encode(user),
            &txn_body(ORIGIN_NAME, "x"),
        );
        resp.assert_error(403, "M_FORBIDDEN");
    }
}

#[test]
fn put_from_a_denied_origin_is_403() {
    let origin = Server::origin_example();
    let friend = Server::named("friend.example");
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&friend)
        .trust(&dest)
        .args(["--deny-origin", ORIGIN_NAME])
        .start();
    put_txn(
        &relay,
        &origin,
        "t1",
        ALICE,
        &txn_body(ORIGIN_NAME, "denied"),
    )
    .assert_error(403, "M_FORBIDDEN");
    store(&relay, &friend, "t1", ALICE, "allowed");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["allowed"]);
}

#[test]
fn put_body_over_the_limit_is_413() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .max_body_bytes(1024)
        .start();
    let small = json!({"pdus": [{"pad": "x".repeat(900)}]});
    assert!(serde_json::to_vec(&small).expect("serialise").len() <= 1024);
    let resp = put_txn(&relay, &origin, "small", ALICE, &small);
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    for size in [1100, 4000, 60_000] {
        let big = json!({"pdus": [{"pad": "x".repeat(size)}]});
        let resp = put_txn(&relay, &origin, &format!("big{size}"), ALICE, &big);
        resp.assert_error(413, "M_TOO_LARGE");
    }
    assert_eq!(
        drain(&relay, &dest, ALICE).len(),
        1,
        "only the small one was stored"
    );
}

#[test]
fn put_over_the_destination_quota_is_429_until_acknowledged() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let dest2 = Server::named("dest2.example");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for("dest2.example")
        .trust(&origin)
        .trust(&dest)
        .trust(&dest2)
        // One origin may fill the whole queue here.
        .args(["--max-queue-entries", "2", "--max-origin-share", "100"])
        .start();
    store(&relay, &origin, "t1", ALICE, "m1");
    store(&relay, &origin, "t2", ALICE, "m2");
    let resp = put_txn(&relay, &origin, "t3", ALICE, &txn_body(ORIGIN_NAME, "m3"));
    resp.assert_error(429, "M_LIMIT_EXCEEDED");
    if let Some(ms) = resp.json().get("retry_after_ms") {
        assert!(
            ms.is_u64(),
            "retry_after_ms must be a non-negative integer:\n{resp:?}"
        );
    }
    // Another destination has its own quota.
    store(&relay, &origin, "t3", "@bob:dest2.example", "other-dest");
    // A retransmission of a stored transaction is still a 200.
    store(&relay, &origin, "t2", ALICE, "m2");
    // Acknowledging one makes room for one.
    let first = pull_one(&relay, &dest, ALICE, 0).expect("m1");
    let _ = pull_one(&relay, &dest, ALICE, first.entry_id).expect("m2");
    store(&relay, &origin, "t3", ALICE, "m3");
    put_txn(&relay, &origin, "t4", ALICE, &txn_body(ORIGIN_NAME, "m4"))
        .assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["m2", "m3"]);
}

#[test]
fn put_over_the_origin_quota_is_429() {
    let origin = Server::origin_example();
    let other = Server::named("other.example");
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .serve_for("dest2.example")
        .trust(&origin)
        .trust(&other)
        .trust(&dest)
        .args(["--max-origin-entries", "2"])
        .start();
    store(&relay, &origin, "t1", ALICE, "m1");
    store(&relay, &origin, "t2", "@bob:dest2.example", "m2");
    put_txn(&relay, &origin, "t3", ALICE, &txn_body(ORIGIN_NAME, "m3"))
        .assert_error(429, "M_LIMIT_EXCEEDED");
    store(&relay, &other, "t3", ALICE, "from-other");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["m1", "from-other"]);
}

#[test]
fn put_over_a_byte_quota_is_429() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let dest2 = Server::named("dest2.example");
    // Bodies of about 1000 bytes, each costing about 1,300 with its row
    // (`entry_cost`): two fit in 3000, a third does not.
    let body = |m: &str| json!({"pdus": [{"marker": m, "pad": "x".repeat(950)}]});
    for (flag, second_dest_fits) in [("--max-queue-bytes", true), ("--max-total-bytes", false)] {
        let relay = RelayProcess::builder()
            .serve_for(DEST_NAME)
            .serve_for("dest2.example")
            .trust(&origin)
            .trust(&dest)
            .trust(&dest2)
            .args([flag, "3000", "--max-origin-share", "100"])
            .start();
        for i in 0..2 {
            let resp = put_txn(&relay, &origin, &format!("t{i}"), ALICE, &body("m"));
            assert_eq!(resp.status, 200, "{flag}: #{i}:\n{resp:?}");
        }
        put_txn(&relay, &origin, "t2", ALICE, &body("m")).assert_error(429, "M_LIMIT_EXCEEDED");
        let other = put_txn(&relay, &origin, "t3", "@bob:dest2.example", &body("m"));
        if second_dest_fits {
            assert_eq!(other.status, 200, "{flag}: another destination:\n{other:?}");
        } else {
            other.assert_error(429, "M_LIMIT_EXCEEDED");
        }
    }
}

/// Makes every insert and delete in the relay's database (an SQLite file or
/// a PostgreSQL database) fail (or stop failing), whatever its tables are
/// called, from a second connection.
fn sabotage_storage(url: &str, on: bool) {
    if url.starts_with("postgres") {
        let sql = if on {
            "CREATE FUNCTION relay_tests_sabotage() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             DO $$ DECLARE t text; BEGIN \
             FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP \
             EXECUTE format('CREATE TRIGGER relay_tests_sabotage BEFORE INSERT OR DELETE OR UPDATE \
             ON %I FOR EACH ROW EXECUTE FUNCTION relay_tests_sabotage()', t); \
             END LOOP; END $$;"
        } else {
            "DROP FUNCTION IF EXISTS relay_tests_sabotage() CASCADE"
        };
        relay_store::testing::execute(url, sql).unwrap_or_else(|e| panic!("sabotage: {e}"));
        return;
    }
    let db = url.strip_prefix("sqlite:").expect("a sqlite: database URL");
    let conn = rusqlite::Connection::open(db).expect("open the relay's database");
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("table names");
    assert!(!tables.is_empty(), "the relay's database has no tables");
    for (i, table) in tables.iter().enumerate() {
        for op in ["INSERT", "DELETE", "UPDATE"] {
            let name = format!("relay_tests_sabotage_{op}_{i}");
            let sql = if on {
                format!(
                    "CREATE TRIGGER {name} BEFORE {op} ON \"{table}\" BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            } else {
                format!("DROP TRIGGER IF EXISTS {name}")
            };
            conn.execute_batch(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

#[test]
fn storage_failure_is_500_m_unknown_and_stores_nothing() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "before", ALICE, "before");
    let before = pull_one(&relay, &dest, ALICE, 0).expect("stored before");
    let db = relay.database_url().to_owned();
    sabotage_storage(&db, true);
    let resp = put_txn(
        &relay,
        &origin,
        "after",
        ALICE,
        &txn_body(ORIGIN_NAME, "after"),
    );
    resp.assert_error(500, "M_UNKNOWN");
    // An acknowledgement that cannot be stored fails too.
    let resp = relay_txn(&relay, &dest, ALICE, Some(before.entry_id));
    resp.assert_error(500, "M_UNKNOWN");
    sabotage_storage(&db, false);
    // Nothing was half-done: "after" is not there, "before" was not acknowledged.
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["before"]);
    // And the relay works again.
    store(&relay, &origin, "after", ALICE, "after");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["after"]);
}

// ----------------------------------------------------------------- relay_txn

#[test]
fn get_invalid_user_id_is_400_m_invalid_username() {
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&dest]);
    for segment in invalid_user_segments() {
        let resp = relay_txn(&relay, &dest, &segment, Some(0));
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (400, Some("M_INVALID_USERNAME")),
            "GET with userID segment {segment:?}:\n{resp:?}"
        );
        resp.assert_matrix_error_shape();
    }
}

#[test]
fn get_body_not_json_is_400_m_not_json() {
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&dest]);
    let bodies: [&[u8]; 5] = [
        b"entry_id=1",
        b"{\"entry_id\": 1",
        b"{\"entry_id\": \"\xff\"}",
        b"{} {}",
        b" ",
    ];
    for body in bodies {
        let resp = relay_txn_bytes(&relay, &dest, ALICE, body);
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (400, Some("M_NOT_JSON")),
            "GET body {:?}:\n{resp:?}",
            String::from_utf8_lossy(body)
        );
        resp.assert_matrix_error_shape();
    }
}

#[test]
fn get_body_not_an_entry_is_400_m_bad_json() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    store(&relay, &origin, "t1", ALICE, "kept");
    let first = pull_one(&relay, &dest, ALICE, 0).expect("entry");
    let bodies = [
        json!({}),
        json!({"entry_id": -1}),
        json!({"entry_id": -(first.entry_id as i64)}),
        json!({"entry_id": -9_007_199_254_740_991_i64}),
        json!({"entry_id": "1"}),
        json!({"entry_id": format!("{}", first.entry_id)}),
        json!({"entry_id": null}),
        json!({"entry_id": true}),
        json!({"entry_id": [first.entry_id]}),
        json!({"entry_id": {"id": first.entry_id}}),
        json!([first.entry_id]),
        json!(first.entry_id),
        json!("entry_id"),
        json!(null),
    ];
    for body in &bodies {
        let bytes = serde_json::to_vec(body).expect("serialise");
        let resp = relay_txn_bytes(&relay, &dest, ALICE, &bytes);
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (400, Some("M_BAD_JSON")),
            "GET body {body}:\n{resp:?}"
        );
        resp.assert_matrix_error_shape();
    }
    // None of them acknowledged anything.
    assert_eq!(pull_one(&relay, &dest, ALICE, 0), Some(first));
}

#[test]
fn get_by_another_server_is_403_and_learns_and_changes_nothing() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let snoop = Server::named("snoop.example");
    let relay = RelayProcess::standard(&[&origin, &dest, &snoop]);
    store(&relay, &origin, "t1", ALICE, "secret");
    let first = pull_one(&relay, &dest, ALICE, 0).expect("entry");
    // The sender itself, a stranger, and either of them trying to ack.
    for (who, ack) in [
        (&origin, None),
        (&snoop, Some(0)),
        (&origin, Some(first.entry_id)),
        (&snoop, Some(first.entry_id)),
    ] {
        for segment in [ALICE, "%40alice%3Adest.example"] {
            let resp = relay_txn(&relay, who, segment, ack);
            resp.assert_error(403, "M_FORBIDDEN");
            let body = resp.json();
            let keys: Vec<&String> = body
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert!(
                keys.iter()
                    .all(|k| ["errcode", "error"].contains(&k.as_str())),
                "a 403 carries nothing else: {body}"
            );
            assert!(!resp.text().contains("secret"), "{resp:?}");
        }
    }
    assert_eq!(
        pull_one(&relay, &dest, ALICE, 0),
        Some(first),
        "the queue is unchanged"
    );
}

// ------------------------------------------------------- unknown paths, methods

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_m_unrecognized() {
    let origin = Server::origin_example();
    let relay = RelayProcess::standard(&[&origin]);
    let send_relay = "/_matrix/federation/v1/send_relay/t1/@alice:dest.example";
    let relay_txn = "/_matrix/federation/v1/relay_txn/@alice:dest.example";
    let cases: [(&str, &str, u16); 17] = [
        ("GET", "/", 404),
        ("GET", "/nothing", 404),
        ("GET", "/_matrix", 404),
        ("GET", "/_matrix/federation/v1/nothing", 404),
        ("PUT", "/_matrix/federation/v1/send/t1", 404),
        ("PUT", "/_matrix/federation/v1/send_relay/t1", 404),
        (
            "PUT",
            "/_matrix/federation/v1/send_relay/t1/@alice:dest.example/extra",
            404,
        ),
        ("GET", "/_matrix/federation/v1/relay_txn", 404),
        (
            "GET",
            "/_matrix/federation/v1/relay_txn/@alice:dest.example/extra",
            404,
        ),
        (
            "GET",
            "/_matrix/federation/v2/relay_txn/@alice:dest.example",
            404,
        ),
        ("GET", send_relay, 405),
        ("POST", send_relay, 405),
        ("DELETE", send_relay, 405),
        ("PUT", relay_txn, 405),
        ("POST", relay_txn, 405),
        ("POST", "/_matrix/key/v2/server", 405),
        ("PUT", "/_matrix/federation/v1/version", 405),
    ];
    for (method, target, status) in cases {
        // Unsigned, and signed (so no order of checks can excuse another answer).
        let unsigned = Request::new(method, target).send(relay.addr());
        let signed = signed_request(&origin, RELAY_NAME, method, target, b"").send(relay.addr());
        for resp in [unsigned, signed] {
            assert_eq!(
                (resp.status, resp.errcode().as_deref()),
                (status, Some("M_UNRECOGNIZED")),
                "{method} {target}:\n{resp:?}"
            );
            resp.assert_matrix_error_shape();
        }
    }
}

// ------------------------------------------------------------ order of checks

/// PROTOCOL §3 (amended): header (401) → destination (401) → key (401) →
/// body parses (400 M_NOT_JSON) → signature (401) → policy (403) → content
/// (400).
#[test]
fn checks_come_in_protocol_order() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let stranger = Server::named("stranger.example");
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let put = |txn: &str, user: &str| format!("/_matrix/federation/v1/send_relay/{txn}/{user}");
    let get = |user: &str| format!("/_matrix/federation/v1/relay_txn/{user}");
    let not_json: &[u8] = b"{not json";
    let bad_shape = br#"{"nopdus":[]}"#;
    let good = serde_json::to_vec(&txn_body(ORIGIN_NAME, "x")).expect("serialise");

    struct Case {
        what: &'static str,
        req: Request,
        status: u16,
        errcode: &'static str,
    }
    let signed = |who: &Server, dest: &str, method: &str, target: &str, body: &[u8]| {
        signed_request(who, dest, method, target, body)
    };
    let cases = vec![
        Case {
            what: "no header beats a body that is not JSON",
            req: Request::new("PUT", &put("o1", ALICE)).body(not_json),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "wrong destination beats a body that is not JSON",
            req: signed(
                &origin,
                "elsewhere.example",
                "PUT",
                &put("o2", ALICE),
                not_json,
            ),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "an unknown key beats a body that is not JSON",
            req: signed(&stranger, RELAY_NAME, "PUT", &put("o3", ALICE), not_json),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "a body that is not JSON beats a bad signature",
            req: signed(&origin, RELAY_NAME, "PUT", &put("other", ALICE), not_json)
                .with_target(&put("o4", ALICE)),
            status: 400,
            errcode: "M_NOT_JSON",
        },
        Case {
            what: "an unknown key beats a bad transaction",
            req: signed(&stranger, RELAY_NAME, "PUT", &put("o5", ALICE), bad_shape),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "an unknown key beats a destination not served",
            req: signed(
                &stranger,
                RELAY_NAME,
                "PUT",
                &put("o6", "@a:nope.example"),
                &good,
            ),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "an unknown key beats an invalid userID",
            req: signed(&stranger, RELAY_NAME, "PUT", &put("o7", "nobody"), &good),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "a bad signature beats a destination not served",
            req: signed(
                &origin,
                RELAY_NAME,
                "PUT",
                &put("x", "@a:nope.example"),
                &good,
            )
            .with_target(&put("o8", "@a:nope.example")),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
        Case {
            what: "a destination not served beats a bad transaction",
            req: signed(
                &origin,
                RELAY_NAME,
                "PUT",
                &put("o9", "@a:nope.example"),
                bad_shape,
            ),
            status: 403,
            errcode: "M_FORBIDDEN",
        },
        Case {
            what: "an invalid userID with a valid signature",
            req: signed(&origin, RELAY_NAME, "PUT", &put("o10", "nobody"), bad_shape),
            status: 400,
            errcode: "M_INVALID_USERNAME",
        },
        Case {
            what: "GET: a body that is not JSON beats another server's queue",
            req: signed(&origin, RELAY_NAME, "GET", &get(ALICE), not_json),
            status: 400,
            errcode: "M_NOT_JSON",
        },
        Case {
            what: "GET: another server's queue beats a bad entry",
            req: signed(
                &origin,
                RELAY_NAME,
                "GET",
                &get(ALICE),
                br#"{"entry_id":-1}"#,
            ),
            status: 403,
            errcode: "M_FORBIDDEN",
        },
        Case {
            what: "GET: an unknown key beats a bad entry",
            req: signed(
                &stranger,
                RELAY_NAME,
                "GET",
                &get("@me:stranger.example"),
                br#"{"entry_id":"x"}"#,
            ),
            status: 401,
            errcode: "M_UNAUTHORIZED",
        },
    ];
    for case in cases {
        let resp = case.req.send(relay.addr());
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (case.status, Some(case.errcode)),
            "{}: {} {}:\n{resp:?}",
            case.what,
            case.req.method,
            case.req.target
        );
        resp.assert_matrix_error_shape();
    }
}

/// `Request::with_target` for the order test: the same signed headers sent
/// to another target (a signature mismatch).
trait WithTarget {
    fn with_target(self, target: &str) -> Self;
}

impl WithTarget for Request {
    fn with_target(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }
}

/// A body with numbers canonical JSON has no form for (a fraction, an
/// integer beyond 2^53), signed as JSON libraries write them: the sender
/// is authenticated and its permission checked first (401, 403), then the
/// body is 400 `M_BAD_JSON`; nothing is stored.
#[test]
fn numbers_without_canonical_form_are_judged_after_the_sender() {
    let origin = Server::named(ORIGIN_NAME);
    let dest = Server::named(DEST_NAME);
    let stranger = Server::named("stranger.example");
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let send = |from: &Server, user: &str, body: &str| {
        let target = api::send_relay_path("t-float", user);
        Request::new("PUT", &target)
            .header(
                "Authorization",
                &from.lenient_authorization(relay.server_name(), "PUT", &target, body.as_bytes()),
            )
            .body(body.as_bytes())
            .send(relay.addr())
    };
    let fetch = |from: &Server, body: &str| {
        let target = api::relay_txn_path(&dest.user("alice"));
        Request::new("GET", &target)
            .header(
                "Authorization",
                &from.lenient_authorization(relay.server_name(), "GET", &target, body.as_bytes()),
            )
            .body(body.as_bytes())
            .send(relay.addr())
    };
    let float_txn = r#"{"pdus":[{"n":1.5}],"edus":[]}"#;
    let big_txn = r#"{"pdus":[{"n":9007199254740993}],"edus":[]}"#;
    for (what, resp, status, errcode) in [
        (
            "fraction",
            send(&origin, &dest.user("alice"), float_txn),
            400,
            "M_BAD_JSON",
        ),
        (
            "beyond 2^53",
            send(&origin, &dest.user("alice"), big_txn),
            400,
            "M_BAD_JSON",
        ),
        (
            "unknown key",
            send(&stranger, &dest.user("alice"), float_txn),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "not served",
            send(&origin, "@a:elsewhere.example", float_txn),
            403,
            "M_FORBIDDEN",
        ),
        (
            "entry_id 1.5",
            fetch(&dest, r#"{"entry_id":1.5}"#),
            400,
            "M_BAD_JSON",
        ),
        (
            "another's queue",
            fetch(&origin, r#"{"entry_id":1.5}"#),
            403,
            "M_FORBIDDEN",
        ),
    ] {
        assert_eq!(
            (
                resp.status,
                resp.json()["errcode"].as_str().unwrap_or_default()
            ),
            (status, errcode),
            "{what}: {resp:?}"
        );
    }
    assert!(markers(&api::drain(&relay, &dest, &dest.user("alice"))).is_empty());
}
