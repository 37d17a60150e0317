//! The two phases of a request: what the head alone decides, what waits
//! for the body, and the bounds on heads held for keys.

use super::*;
use crate::http::HttpOutcome;

const SEND: &str = "/_matrix/federation/v1/send_relay/t/@a:dest.example";

/// Feeds only `request`'s head, and returns the outputs at once, bodies
/// not read.
fn head_only(relay: &mut Relay, request: &Request) -> (RequestId, Vec<Output>) {
    let id = relay.handle_head(epoch(), NOW_MS, request.head());
    (id, std::iter::from_fn(|| relay.poll_output()).collect())
}

fn status_and_code(response: &Response) -> (u16, String) {
    (response.status, errcode(response))
}

#[test]
fn refusals_on_the_head_alone() {
    let mut no_header = put("t", "@a:dest.example", TXN);
    no_header.authorization.clear();
    let mut malformed = put("t", "@a:dest.example", TXN);
    malformed.authorization = vec![r#"X-Matrix origin="origin.example""#.into()];
    let mut wrong_destination = put("t", "@a:dest.example", TXN);
    wrong_destination.authorization = vec![
        sign_request(
            &spec_key(),
            &name("origin.example"),
            &name("other-relay.example"),
            "PUT",
            SEND,
            Some(&serde_json::from_str(TXN).unwrap()),
        )
        .unwrap(),
    ];
    let unknown_key = signed("PUT", SEND, "unknown.example", &spec_key(), TXN);
    let declared = |mut request: Request, length: usize| {
        let mut head = request.head();
        head.content_length = Some(length as u64);
        request.body = RequestBody::Complete(Vec::new());
        (request, head)
    };
    let limit = config().max_body_bytes;
    let cases: Vec<(&str, RequestHead, u16, &str)> = vec![
        ("no header", no_header.head(), 401, "M_UNAUTHORIZED"),
        ("malformed header", malformed.head(), 401, "M_UNAUTHORIZED"),
        (
            "wrong destination",
            wrong_destination.head(),
            401,
            "M_UNAUTHORIZED",
        ),
        ("unknown key", unknown_key.head(), 401, "M_UNAUTHORIZED"),
        (
            "declared over the limit",
            declared(put("t", "@a:dest.example", TXN), limit + 1).1,
            413,
            "M_TOO_LARGE",
        ),
        (
            "declared over the limit beats no header",
            declared(no_header.clone(), limit + 1).1,
            413,
            "M_TOO_LARGE",
        ),
        (
            "unknown path beats a declared size",
            declared(
                put("t", "@a:dest.example", TXN).with_target("/_matrix/x"),
                limit + 1,
            )
            .1,
            404,
            "M_UNRECOGNIZED",
        ),
        (
            "wrong method",
            signed("POST", SEND, "origin.example", &spec_key(), TXN).head(),
            405,
            "M_UNRECOGNIZED",
        ),
    ];
    for (what, head, status, code) in cases {
        let mut relay = Relay::new(config());
        let id = relay.handle_head(epoch(), NOW_MS, head);
        let outputs: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
        let [Output::Respond { request, response }] = outputs.as_slice() else {
            panic!("{what}: expected a response without the body, got {outputs:?}");
        };
        assert_eq!(*request, id, "{what}");
        assert_eq!(status_and_code(response), (status, code.into()), "{what}");
        assert_eq!(relay.pending_ops(), 0, "{what}");
    }
    // Endpoints without a body are answered from the head, whatever it
    // declares.
    for target in ["/_matrix/key/v2/server", "/_matrix/federation/v1/version"] {
        let mut relay = Relay::new(config());
        let head = RequestHead {
            method: "GET".into(),
            target: target.into(),
            authorization: vec![],
            content_length: Some(u64::MAX),
            peer: PEER,
            forwarded_for: Vec::new(),
        };
        relay.handle_head(epoch(), NOW_MS, head);
        let response = only_response(std::iter::from_fn(|| relay.poll_output()).collect());
        assert_eq!(response.status, 200, "{target}");
    }
}

#[test]
fn a_known_origin_is_asked_for_its_body() {
    let mut relay = Relay::new(config());
    let request = put("t", "@a:dest.example", TXN);
    let (id, outputs) = head_only(&mut relay, &request);
    let [
        Output::ReadBody {
            request: asked,
            limit,
            check,
        },
    ] = outputs.as_slice()
    else {
        panic!("expected a body read, got {outputs:?}");
    };
    assert_eq!((*asked, check.request()), (id, id));
    assert_eq!(*limit, relay.config().max_body_bytes);
    assert_eq!(check.origin(), &name("origin.example"));
    // The check is pure: run twice, it judges alike.
    let again = check.clone().run(TXN.as_bytes());
    let checked = check.clone().run(TXN.as_bytes());
    assert_eq!(format!("{again:?}"), format!("{checked:?}"));
    relay.handle_body(epoch(), NOW_MS, checked);
    assert!(matches!(
        relay.poll_output(),
        Some(Output::Store { entry, .. }) if entry.origin == name("origin.example")
    ));
    assert_eq!(relay.pending_ops(), 1);
}

/// The amended order: the key before the body, then the body's checks in
/// turn, each pair with the earlier check failing first.
#[test]
fn amended_order_table() {
    let stranger_key = key_for(8);
    let unknown = |body: RequestBody| Request {
        body,
        ..signed("PUT", SEND, "unknown.example", &stranger_key, TXN)
    };
    let mut too_large_not_json = put("t", "@a:dest.example", TXN);
    too_large_not_json.body = RequestBody::TooLarge;
    let mut not_json_bad_sig = put("t", "@a:dest.example", TXN);
    not_json_bad_sig.body = RequestBody::Complete(b"{nope".to_vec());
    let big_pdu = json!({"pdus": [{"x": "y".repeat(70_000)}]}).to_string();
    let tamper = |mut request: Request| {
        request.target = request.target.replace("/t/", "/other/");
        request
    };
    let cases: Vec<(&str, Request, u16, &str)> = vec![
        (
            "an unknown key beats a body that is not JSON",
            unknown(RequestBody::Complete(b"{nope".to_vec())),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "an unknown key beats a body over the limit (never read)",
            unknown(RequestBody::TooLarge),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a body over the limit as read beats everything in it",
            too_large_not_json,
            413,
            "M_TOO_LARGE",
        ),
        (
            "not JSON beats a bad signature",
            not_json_bad_sig,
            400,
            "M_NOT_JSON",
        ),
        (
            "a bad signature beats a PDU over 64 KiB",
            tamper(put("t", "@a:dest.example", &big_pdu)),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a bad signature beats an invalid userID",
            tamper(put("t", "nobody", TXN)),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a destination not served beats a PDU over 64 KiB",
            put("t", "@a:elsewhere.example", &big_pdu),
            403,
            "M_FORBIDDEN",
        ),
        (
            "an invalid userID beats a PDU over 64 KiB",
            put("t", "nobody", &big_pdu),
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "a PDU over 64 KiB",
            put("t", "@a:dest.example", &big_pdu),
            413,
            "M_TOO_LARGE",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut relay = Relay::new(config());
        let response = only_response(run(&mut relay, request).1);
        assert_eq!(status_and_code(&response), (status, code.into()), "{what}");
    }
}

/// A relay that fetches keys, and a head from `far.example` (unknown)
/// whose target is padded to about `bytes`.
fn far_head(txn: usize, bytes: usize) -> Request {
    let target = format!(
        "/_matrix/federation/v1/send_relay/t{txn}/@a:dest.example?pad={}",
        "x".repeat(bytes)
    );
    signed("PUT", &target, "far.example", &key_for(6), TXN)
}

fn fetching_relay() -> Relay {
    let mut c = config();
    c.fetch_keys = true;
    // The heads all come from one address, past its request budget: the
    // bound on heads held is what is tested.
    c.limits.send_relay = None;
    Relay::new(c)
}

/// Feeds heads until one is refused at once; how many were held.
fn held_until_refused(relay: &mut Relay, pad: usize) -> usize {
    for n in 0..=MAX_HELD_REQUESTS {
        let outputs = head_only(relay, &far_head(n, pad)).1;
        match outputs.as_slice() {
            [] | [Output::FetchKeys { .. }] => {}
            [Output::Respond { response, .. }] => {
                assert_eq!(response.status, 401);
                return n;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("more than {MAX_HELD_REQUESTS} heads held");
}

#[test]
fn heads_held_for_keys_are_bounded_in_count_and_bytes() {
    let mut relay = fetching_relay();
    assert_eq!(held_until_refused(&mut relay, 0), MAX_HELD_REQUESTS);
    let mut relay = fetching_relay();
    let held = held_until_refused(&mut relay, 64 * 1024);
    assert!(
        (MAX_HELD_BYTES / (66 * 1024)..=MAX_HELD_BYTES / (64 * 1024)).contains(&held),
        "{held} heads of 64 KiB held"
    );
    // The keys come: every held head is asked for its body (and the bound
    // is free again).
    let key = key_for(6);
    let doc =
        crate::server_keys::document(&name("far.example"), &key, NOW_MS.saturating_add_ms(60_000))
            .unwrap();
    let outcome = HttpOutcome::Response {
        status: 200,
        body: doc.to_string().into_bytes(),
        retry_after: None,
    };
    let op = match relay.pending.iter().next() {
        Some((op, PendingOp::AwaitingKeys { .. })) => *op,
        other => panic!("expected a key fetch pending, got {other:?}"),
    };
    let checked = KeyCheck {
        server: name("far.example"),
    }
    .run(NOW_MS, &outcome);
    relay.handle_keys(epoch(), NOW_MS, op, checked);
    let outputs: Vec<Output> = std::iter::from_fn(|| relay.poll_output()).collect();
    assert_eq!(outputs.len(), held);
    assert!(outputs.iter().all(|o| matches!(o, Output::ReadBody { .. })));
    assert_eq!((relay.held, relay.held_bytes), (0, 0));
}

#[test]
fn keys_checked_for_another_server_count_as_none() {
    let mut relay = fetching_relay();
    let outputs = head_only(&mut relay, &far_head(0, 0)).1;
    let [Output::FetchKeys { op, .. }] = outputs.as_slice() else {
        panic!("expected a key fetch, got {outputs:?}");
    };
    let other = key_for(6);
    let doc = crate::server_keys::document(
        &name("other.example"),
        &other,
        NOW_MS.saturating_add_ms(60_000),
    )
    .unwrap();
    let outcome = HttpOutcome::Response {
        status: 200,
        body: doc.to_string().into_bytes(),
        retry_after: None,
    };
    let checked = KeyCheck {
        server: name("other.example"),
    }
    .run(NOW_MS, &outcome);
    assert_eq!(checked.failure(), None, "a good document of other.example");
    relay.handle_keys(epoch(), NOW_MS, *op, checked);
    let response = only_response(std::iter::from_fn(|| relay.poll_output()).collect());
    assert_eq!(response.status, 401);
}

#[test]
fn checks_run_on_any_thread() {
    fn sendable<T: Send + 'static>() {}
    sendable::<BodyCheck>();
    sendable::<Checked>();
    sendable::<KeyCheck>();
    sendable::<CheckedKeys>();
}
