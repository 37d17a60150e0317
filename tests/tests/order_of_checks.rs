//! PROTOCOL §3 (amended): the relay knows who is asking before it reads a
//! body. A request refused on its head (no or a bad `X-Matrix` header, a
//! key it cannot resolve, a declared length over the limit) is answered
//! before its body is read, and its connection is closed; the checks on
//! the body (its size as read, JSON, signature, permission, content) then
//! come in order.

use relay_tests::api::{markers, send_relay_path};
use relay_tests::http::Request;
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";

/// `req` with its body sent chunked (no `Content-Length`), in pieces of at
/// most 64 KiB.
fn chunked(req: Request) -> Request {
    let mut wire = Vec::new();
    for piece in req.body.chunks(64 * 1024) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    req.header("Transfer-Encoding", "chunked").body(wire)
}

#[test]
fn a_request_refused_on_its_head_is_answered_before_its_body_is_sent() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let stranger = Server::named("stranger.example");
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let target = send_relay_path("early", ALICE);
    // Only the head is sent; the body it announces never is.
    let head = |authorization: Option<String>, length: &str| {
        let req = Request::new("PUT", &target)
            .header("Content-Type", "application/json")
            .header("Content-Length", length)
            .header("Connection", "keep-alive");
        match authorization {
            Some(value) => req.header("Authorization", &value),
            None => req,
        }
    };
    // Fits the default limit (4,325,376 bytes).
    let fits = "4000000";
    let signed = |who: &Server| Some(who.authorization(RELAY_NAME, "PUT", &target, b"{}"));
    let cases = [
        ("no Authorization", head(None, fits), 401, "M_UNAUTHORIZED"),
        (
            "a malformed Authorization",
            head(Some(r#"X-Matrix origin="origin.example""#.into()), fits),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "an origin whose key is unknown",
            head(signed(&stranger), fits),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a known origin declaring more than the limit",
            head(signed(&origin), "5000000"),
            413,
            "M_TOO_LARGE",
        ),
    ];
    for (what, req, status, errcode) in cases {
        let resp = req
            .send_partially(relay.addr(), 0)
            .and_then(|partial| partial.response())
            .unwrap_or_else(|e| panic!("{what}: no answer before the body: {e}"));
        resp.assert_error(status, errcode);
        assert_eq!(
            resp.header("connection"),
            Some("close"),
            "{what}: the unread body is not read to keep the connection:\n{resp:?}"
        );
    }
    // A known origin's head waits for its body, which is then judged.
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "late")).expect("serialise");
    let resp = signed_request(&origin, RELAY_NAME, "PUT", &target, &body)
        .send_partially(relay.addr(), 0)
        .and_then(|partial| partial.finish())
        .expect("an answer once the body came");
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["late"]);
}

/// The checks on the body, once its sender's key is known: its size as
/// read (413) → JSON (400 `M_NOT_JSON`) → signature (401) → userID (400
/// `M_INVALID_USERNAME`) → permission (403) → the transaction's shape (400
/// `M_BAD_JSON`) → PDU sizes (413).
#[test]
fn checks_on_the_body_come_in_order() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let stranger = Server::named("stranger.example");
    let relay = RelayProcess::builder()
        .serve_for(DEST_NAME)
        .trust(&origin)
        .trust(&dest)
        .max_body_bytes(200_000)
        .start();
    let big_pdu = json!({"pdus": [{"pad": "x".repeat(70_000)}], "edus": []});
    let big_pdu_bad_shape =
        json!({"pdus": [{"pad": "x".repeat(70_000)}], "edus": vec![json!({}); 101]});
    let over_limit = json!({"pdus": [{"pad": "x".repeat(300_000)}]});
    let bytes = |v: &serde_json::Value| serde_json::to_vec(v).expect("serialise");
    let put = |who: &Server, txn: &str, user: &str, body: &[u8]| {
        signed_request(who, RELAY_NAME, "PUT", &send_relay_path(txn, user), body)
    };
    let re_target = |req: Request, txn: &str, user: &str| Request {
        target: send_relay_path(txn, user),
        ..req
    };
    let cases = [
        (
            "a chunked body over the limit, as it is read",
            chunked(put(&origin, "c1", ALICE, &bytes(&over_limit))),
            413,
            "M_TOO_LARGE",
        ),
        (
            "an unknown key beats a chunked body over the limit (never read)",
            chunked(put(&stranger, "c2", ALICE, &bytes(&over_limit))),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "a body that is not JSON beats a bad signature",
            re_target(put(&origin, "other", ALICE, b"{nope"), "c3", ALICE),
            400,
            "M_NOT_JSON",
        ),
        (
            "a bad signature beats a PDU over 64 KiB",
            re_target(put(&origin, "other", ALICE, &bytes(&big_pdu)), "c4", ALICE),
            401,
            "M_UNAUTHORIZED",
        ),
        (
            "an invalid userID beats a PDU over 64 KiB",
            put(&origin, "c5", "nobody", &bytes(&big_pdu)),
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "a destination not served beats a PDU over 64 KiB",
            put(&origin, "c6", "@a:elsewhere.example", &bytes(&big_pdu)),
            403,
            "M_FORBIDDEN",
        ),
        (
            "the transaction's shape beats a PDU over 64 KiB",
            put(&origin, "c7", ALICE, &bytes(&big_pdu_bad_shape)),
            400,
            "M_BAD_JSON",
        ),
        (
            "a PDU over 64 KiB",
            put(&origin, "c8", ALICE, &bytes(&big_pdu)),
            413,
            "M_TOO_LARGE",
        ),
    ];
    for (what, req, status, errcode) in cases {
        let resp = req.send(relay.addr());
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (status, Some(errcode)),
            "{what}:\n{resp:?}"
        );
        resp.assert_matrix_error_shape();
    }
    store(&relay, &origin, "ok", ALICE, "fine");
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["fine"]);
}
