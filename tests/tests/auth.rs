//! X-Matrix authentication (PROTOCOL §3, reference §1): every failure is
//! 401 M_UNAUTHORIZED and stores or hands out nothing; the header is parsed
//! leniently; the reference's signed vectors are accepted byte for byte.

use relay_tests::api::{markers, relay_txn_path, send_relay_path};
use relay_tests::http::Request;
use relay_tests::identity::spec_seed;
use relay_tests::*;
use serde_json::json;

const ALICE: &str = "@alice:dest.example";

/// A header with these parameters, in this order, as written.
fn header(params: &[(&str, &str)]) -> String {
    let list: Vec<String> = params.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("X-Matrix {}", list.join(","))
}

/// The `sig` of a correct header from `who`.
fn good_sig(who: &Server, method: &str, target: &str, body: &[u8]) -> String {
    let h = who.authorization(RELAY_NAME, method, target, body);
    h.rsplit_once("sig=\"")
        .and_then(|(_, rest)| rest.strip_suffix('"'))
        .expect("sig in the header")
        .to_owned()
}

/// Every way the reference lists of failing authentication, for one method
/// and target whose correct request `ok_body` would succeed.
fn unauthenticated_variants(method: &str, target: &str, ok_body: &[u8]) -> Vec<(String, Request)> {
    let origin = Server::origin_example();
    let stranger = Server::named("stranger.example");
    let dest = Server::named(DEST_NAME);
    let sig = good_sig(&origin, method, target, ok_body);
    let base = || Request::new(method, target).body(ok_body);
    let with = |h: String| base().header("Authorization", &h);
    let key = origin.key_id().to_owned();
    let mut v: Vec<(String, Request)> = vec![
        ("no Authorization header".into(), base()),
        ("empty Authorization".into(), with(String::new())),
        ("other scheme".into(), with(format!("Bearer {sig}"))),
        ("scheme alone".into(), with("X-Matrix".into())),
        ("scheme and garbage".into(), with("X-Matrix garbage".into())),
        (
            "no space after scheme".into(),
            with(format!(
                "X-Matrixorigin=\"{ORIGIN_NAME}\",key=\"{key}\",sig=\"{sig}\""
            )),
        ),
        (
            "missing origin".into(),
            with(header(&[
                ("destination", RELAY_NAME),
                ("key", &key),
                ("sig", &sig),
            ])),
        ),
        (
            "missing key".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("sig", &sig),
            ])),
        ),
        (
            "missing sig".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("key", &key),
            ])),
        ),
        (
            "empty sig".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("key", &key),
                ("sig", ""),
            ])),
        ),
        (
            "origin twice".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("key", &key),
                ("sig", &sig),
            ])),
        ),
        (
            "unclosed quote".into(),
            with(format!(
                "X-Matrix origin=\"{ORIGIN_NAME},destination=\"{RELAY_NAME}\",key=\"{key}\",sig=\"{sig}\""
            )),
        ),
        (
            "destination is not this relay".into(),
            signed_request(&origin, "other-relay.example", method, target, ok_body),
        ),
        (
            "destination is this relay's name in another case".into(),
            signed_request(&origin, "RELAY.example", method, target, ok_body),
        ),
        (
            "unknown origin".into(),
            signed_request(&stranger, RELAY_NAME, method, target, ok_body),
        ),
        (
            "known origin, unknown key id".into(),
            signed_request(
                &Server::with_seed(ORIGIN_NAME, "2", spec_seed()),
                RELAY_NAME,
                method,
                target,
                ok_body,
            ),
        ),
        (
            "known origin and key id, another key (impostor)".into(),
            signed_request(
                &origin.impostor([9; 32]),
                RELAY_NAME,
                method,
                target,
                ok_body,
            ),
        ),
        (
            "signed by one trusted server, claiming another".into(),
            with(header(&[
                ("origin", DEST_NAME),
                ("destination", RELAY_NAME),
                ("key", dest.key_id()),
                ("sig", &sig),
            ])),
        ),
        (
            "signature not base64".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("key", &key),
                ("sig", "!!!not-base64!!!"),
            ])),
        ),
        (
            "signature truncated".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("key", &key),
                ("sig", &sig[..40]),
            ])),
        ),
        (
            "origin is not a server name".into(),
            base().header(
                "Authorization",
                &origin.raw_authorization(
                    "origin_example!",
                    Some(RELAY_NAME),
                    method,
                    target,
                    ok_body,
                ),
            ),
        ),
        (
            "origin is empty".into(),
            base().header(
                "Authorization",
                &origin.raw_authorization("", Some(RELAY_NAME), method, target, ok_body),
            ),
        ),
        (
            "key id is not a key id".into(),
            with(header(&[
                ("origin", ORIGIN_NAME),
                ("destination", RELAY_NAME),
                ("key", "nocolon"),
                ("sig", &sig),
            ])),
        ),
        (
            "wrong method (signed as POST)".into(),
            signed_request(&origin, RELAY_NAME, "POST", target, ok_body).with_method(method),
        ),
        (
            "tampered uri (another target signed)".into(),
            signed_request(&origin, RELAY_NAME, method, &format!("{target}x"), ok_body)
                .with_target(target),
        ),
        (
            "tampered uri (query added)".into(),
            signed_request(&origin, RELAY_NAME, method, target, ok_body)
                .with_target(&format!("{target}?a=b")),
        ),
    ];
    if target.contains('@') {
        // uri is the raw target: the encoded form signed, the raw form sent.
        let encoded = target.replace('@', "%40").replace(':', "%3A");
        v.push((
            "uri signed percent-encoded, sent raw".into(),
            signed_request(&origin, RELAY_NAME, method, &encoded, ok_body).with_target(target),
        ));
    }
    if ok_body.is_empty() {
        v.push((
            "signed with content, sent without".into(),
            signed_request(&origin, RELAY_NAME, method, target, br#"{"entry_id":0}"#)
                .body(Vec::new()),
        ));
    } else {
        v.push((
            "tampered body".into(),
            signed_request(&origin, RELAY_NAME, method, target, ok_body).body(tamper(ok_body)),
        ));
        v.push((
            "signed without content, sent with".into(),
            signed_request(&origin, RELAY_NAME, method, target, b"").body(ok_body),
        ));
    }
    v
}

fn tamper(body: &[u8]) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
    value["tampered"] = json!(true);
    serde_json::to_vec(&value).expect("serialise")
}

trait Tweak {
    fn with_method(self, method: &str) -> Self;
    fn with_target(self, target: &str) -> Self;
}

impl Tweak for Request {
    fn with_method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }
    fn with_target(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }
}

fn trusted_relay() -> RelayProcess {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    RelayProcess::standard(&[&origin, &dest])
}

#[test]
fn put_without_valid_authentication_is_401_and_stores_nothing() {
    let relay = trusted_relay();
    let target = send_relay_path("t1", ALICE);
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "x")).expect("serialise");
    for (what, req) in unauthenticated_variants("PUT", &target, &body) {
        let resp = req.send(relay.addr());
        assert_eq!(
            (resp.status, resp.errcode().as_deref()),
            (401, Some("M_UNAUTHORIZED")),
            "PUT with {what}:\n{resp:?}"
        );
        resp.assert_matrix_error_shape();
    }
    let dest = Server::named(DEST_NAME);
    assert!(
        drain(&relay, &dest, ALICE).is_empty(),
        "an unauthenticated PUT stored something"
    );
    // The correct request does work (so the variants failed for their flaw).
    store(&relay, &Server::origin_example(), "t1", ALICE, "x");
}

#[test]
fn get_without_valid_authentication_is_401_and_hands_out_nothing() {
    let origin = Server::origin_example();
    let relay = trusted_relay();
    store(&relay, &origin, "t1", ALICE, "secret");
    let target = relay_txn_path(ALICE);
    let dest = Server::named(DEST_NAME);
    for body in [&br#"{"entry_id":0}"#[..], b""] {
        // Built around origin.example: none authenticates anyone, so each
        // is a 401 before the question of who may ask (403) comes up.
        for (what, req) in unauthenticated_variants("GET", &target, body) {
            let resp = req.send(relay.addr());
            assert_eq!(
                (resp.status, resp.errcode().as_deref()),
                (401, Some("M_UNAUTHORIZED")),
                "GET (body {:?}) with {what}:\n{resp:?}",
                String::from_utf8_lossy(body)
            );
            resp.assert_matrix_error_shape();
            assert!(!resp.text().contains("secret"));
        }
    }
    assert_eq!(markers(&drain(&relay, &dest, ALICE)), ["secret"]);
}

/// An Authorization header around a given signature.
type HeaderForm = fn(&str) -> String;

#[test]
fn lenient_header_forms_are_accepted() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = trusted_relay();
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "x")).expect("serialise");
    let forms: Vec<(&str, HeaderForm)> = vec![
        (
            "strict",
            (|sig| {
                format!(
                    r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{sig}""#
                )
            }),
        ),
        (
            "Dendrite's order",
            (|sig| {
                format!(
                    r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{sig}",destination="relay.example""#
                )
            }),
        ),
        (
            "ruma's unquoted tokens",
            (|sig| {
                format!(
                    r#"X-Matrix destination=relay.example,key="ed25519:1",origin=origin.example,sig="{sig}""#
                )
            }),
        ),
        (
            "unquoted key with a colon",
            (|sig| {
                format!(
                    r#"X-Matrix origin=origin.example,destination=relay.example,key=ed25519:1,sig="{sig}""#
                )
            }),
        ),
        (
            "scheme in lower case, several spaces",
            (|sig| {
                format!(
                    r#"x-matrix   origin="origin.example",destination="relay.example",key="ed25519:1",sig="{sig}""#
                )
            }),
        ),
        (
            "names in upper case",
            (|sig| {
                format!(
                    r#"X-Matrix ORIGIN="origin.example",Destination="relay.example",KEY="ed25519:1",Sig="{sig}""#
                )
            }),
        ),
        (
            "spaces and tabs around commas",
            (|sig| {
                format!(
                    "X-Matrix origin=\"origin.example\" ,\tdestination=\"relay.example\"\t, key=\"ed25519:1\" , sig=\"{sig}\""
                )
            }),
        ),
        (
            "backslash escapes in quotes",
            (|sig| {
                format!(
                    r#"X-Matrix origin="origin\.example",destination="relay.example",key="ed25519\:1",sig="{sig}""#
                )
            }),
        ),
        (
            "unknown parameters",
            (|sig| {
                format!(
                    r#"X-Matrix origin="origin.example",foo="bar",destination="relay.example",key="ed25519:1",sig="{sig}",baz=qux"#
                )
            }),
        ),
        (
            "no destination",
            (|sig| format!(r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{sig}""#)),
        ),
        (
            "padded base64 signature",
            (|sig| {
                format!(
                    r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{sig}==""#
                )
            }),
        ),
    ];
    for (i, (what, form)) in forms.iter().enumerate() {
        let target = send_relay_path(&format!("t{i}"), ALICE);
        let sig = good_sig(&origin, "PUT", &target, &body);
        let resp = Request::new("PUT", &target)
            .header("Authorization", &form(&sig))
            .body(body.clone())
            .send(relay.addr());
        assert_eq!(
            (resp.status, resp.json()),
            (200, json!({})),
            "{what}: {}\n{resp:?}",
            form(&sig)
        );
    }
    assert_eq!(drain(&relay, &dest, ALICE).len(), forms.len());
}

/// Unquoted values everywhere, `sig` included with `/`, `+` and `=` (as
/// Synapse accepts them): 200.
#[test]
fn unquoted_values_are_accepted() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = trusted_relay();
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "x")).expect("serialise");
    // Signatures are deterministic: the first target whose signature holds
    // both `/` and `+` is always the same.
    let (target, sig) = (0..1_000)
        .map(|i| send_relay_path(&format!("unquoted{i}"), ALICE))
        .map(|target| {
            let sig = good_sig(&origin, "PUT", &target, &body);
            (target, sig)
        })
        .find(|(_, sig)| sig.contains('/') && sig.contains('+'))
        .expect("a signature with / and +");
    for (i, header) in [
        format!("X-Matrix origin=origin.example,destination=relay.example,key=ed25519:1,sig={sig}"),
        format!("X-Matrix sig={sig}== , key=ed25519:1,\torigin=origin.example"),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = Request::new("PUT", &target)
            .header("Authorization", &header)
            .body(body.clone())
            .send(relay.addr());
        assert_eq!(
            (resp.status, resp.json()),
            (200, json!({})),
            "{header}\n{resp:?}"
        );
        // The same transaction again (an idempotent repeat) on the second.
        assert_eq!(drain(&relay, &dest, ALICE).len(), 1 - i);
    }
}

#[test]
fn content_type_is_not_required() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = trusted_relay();
    let body = serde_json::to_vec(&txn_body(ORIGIN_NAME, "no-ct")).expect("serialise");
    for (i, ct) in [None, Some("text/plain"), Some("application/octet-stream")]
        .into_iter()
        .enumerate()
    {
        let target = send_relay_path(&format!("t{i}"), ALICE);
        let mut req = signed_request(&origin, RELAY_NAME, "PUT", &target, &body)
            .without_header("Content-Type");
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let resp = req.send(relay.addr());
        assert_eq!(
            (resp.status, resp.json()),
            (200, json!({})),
            "Content-Type {ct:?}:\n{resp:?}"
        );
    }
    // GET with a body and no Content-Type, as some clients send it.
    let req = signed_request(
        &dest,
        RELAY_NAME,
        "GET",
        &relay_txn_path(ALICE),
        br#"{"entry_id":0}"#,
    )
    .without_header("Content-Type");
    assert_eq!(
        req.send(relay.addr()).ok_json()["entries_queued"],
        json!(true)
    );
}

/// Vector A of the reference, sent byte for byte (header and body as in
/// PROTOCOL §5), independent of this crate's signing code.
#[test]
fn reference_vector_a_is_accepted_verbatim() {
    let origin = Server::origin_example();
    let dest = Server::named(DEST_NAME);
    let relay = RelayProcess::standard(&[&origin, &dest]);
    let body = r#"{"origin":"origin.example","origin_server_ts":1,"pdus":[],"edus":[]}"#;
    let raw = format!(
        "PUT /_matrix/federation/v1/send_relay/txn1/@alice:dest.example HTTP/1.1\r\n\
Host: relay.example\r\n\
Authorization: X-Matrix origin=\"origin.example\",destination=\"relay.example\",key=\"ed25519:1\",sig=\"STBA1xu0p9jKYatO5IAB/Um7OEkoMewBqfy6Anp5JbAOubPnQvKeAl3yn0wEw0IMPo5QVBTzKVOaFZxsV78FBA\"\r\n\
Content-Type: application/json\r\n\
Content-Length: {}\r\n\
Connection: close\r\n\
\r\n\
{body}",
        body.len()
    );
    let out = relay_tests::http::send_raw(
        relay.addr(),
        raw.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .expect("connect");
    let resp = out
        .response()
        .expect("an answer")
        .expect("an HTTP response");
    assert_eq!((resp.status, resp.json()), (200, json!({})), "{resp:?}");
    let pulled = drain(&relay, &dest, "%40alice%3Adest.example");
    assert_eq!(pulled.len(), 1);
    assert_eq!(
        pulled[0].transaction,
        json!({"origin": "origin.example", "origin_server_ts": 1, "pdus": [], "edus": []})
    );
    assert_eq!(pulled[0].txn_id.as_deref(), Some("txn1"));
}

/// Vector B: a Dendrite P2P node's GET with a body, byte for byte.
#[test]
fn reference_vector_b_is_accepted_verbatim() {
    let node = Server::p2p(spec_seed());
    let relay = RelayProcess::builder()
        .p2p_keys()
        .serve_for(node.name())
        .start();
    let body = br#"{"entry_id":0}"#;
    let req = format!(
        "GET /_matrix/federation/v1/relay_txn/@alice:{} HTTP/1.1\r\nHost: relay.example\r\nAuthorization: X-Matrix origin=\"{}\",destination=\"relay.example\",key=\"ed25519:dendrite-demo-yggdrasil\",sig=\"gE/9/hruZZSqaGhXDxFlZ+r/Wa2Q1JlNkE5aZ0nGABBrAQcd1ZhExBXiTcnEK+wbW9jXtpIPhl/o8tLwCZx0CA\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        node.name(),
        node.name(),
        body.len(),
        String::from_utf8_lossy(body)
    );
    let out = relay_tests::http::send_raw(
        relay.addr(),
        req.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .expect("connect");
    let resp = out
        .response()
        .expect("an answer")
        .expect("an HTTP response");
    assert_eq!(
        resp.ok_json(),
        json!({"transaction": {"origin": "", "origin_server_ts": 0, "pdus": [], "edus": []}, "entries_queued": false}),
        "{resp:?}"
    );
}
