//! The `identifiers` target: identifiers and path segments.

use serde_json::Value;

use super::lossy;
use crate::error::ErrCode;
use crate::id::{
    KeyId, MAX_KEY_ID_BYTES, MAX_SERVER_NAME_BYTES, MAX_TXN_ID_BYTES, MAX_USER_ID_BYTES,
    ServerName, TxnId, UserId,
};
use crate::request::{self, Route, percent_decode, percent_encode_segment};
use crate::signing::VerifyKey;

/// Feeds `data` to every identifier parser and to the path-segment helpers
/// of [`crate::request`].
///
/// Invariants: whatever parses is at most its length limit, displays as the
/// input, round-trips through serde, and parses again to an equal value; a
/// user ID's server name is a server name; `percent_encode_segment` then
/// `percent_decode` is the identity, and the encoded form contains no `/`,
/// `?`, `#` or `%` other than escapes; the path helpers accept exactly the
/// decoded identifiers.
pub fn identifiers(data: &[u8]) {
    let s = lossy(data);
    let s = s.as_ref();

    let server = ServerName::parse(s);
    let via_serde = serde_json::from_value::<ServerName>(Value::from(s)).ok();
    assert_eq!(
        server.as_ref().ok(),
        via_serde.as_ref(),
        "ServerName parse and serde disagree on {s:?}"
    );
    if let Ok(name) = &server {
        assert!(
            s.len() <= MAX_SERVER_NAME_BYTES,
            "server name {s:?} is too long"
        );
        assert_eq!(name.as_str(), s);
        assert_eq!(name.to_string(), s);
        assert_eq!(serde_json::to_value(name).ok(), Some(Value::from(s)));
        if let Some(key) = name.p2p_public_key() {
            assert_eq!(
                VerifyKey(key).to_hex(),
                s,
                "P2P key of {s:?} does not spell the name"
            );
        } else {
            assert!(
                !(s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))),
                "64 lower-case hex {s:?} is not a P2P name"
            );
        }
    }

    if let Ok(user) = UserId::parse(s) {
        assert!(
            s.len() <= MAX_USER_ID_BYTES,
            "user ID {s:?} is over {MAX_USER_ID_BYTES} bytes"
        );
        assert_eq!(user.to_string(), s);
        let server_name = user.server_name();
        assert_eq!(
            ServerName::parse(server_name.as_str()).as_ref(),
            Ok(&server_name),
            "server name of {s:?} does not parse"
        );
        let localpart = user.localpart();
        assert!(
            !localpart.is_empty() && !localpart.contains(':'),
            "bad localpart of {s:?}"
        );
        assert_eq!(format!("@{localpart}:{server_name}"), s);
        assert_eq!(UserId::parse(&user.to_string()).as_ref(), Ok(&user));
    }

    let key_id = KeyId::parse(s);
    let via_serde = serde_json::from_value::<KeyId>(Value::from(s)).ok();
    assert_eq!(
        key_id.as_ref().ok(),
        via_serde.as_ref(),
        "KeyId parse and serde disagree on {s:?}"
    );
    if let Ok(key_id) = &key_id {
        assert!(s.len() <= MAX_KEY_ID_BYTES);
        assert_eq!(key_id.to_string(), s);
        assert_eq!(format!("{}:{}", key_id.algorithm(), key_id.version()), s);
        assert!(!key_id.algorithm().is_empty() && !key_id.version().is_empty());
    }

    let txn_id = TxnId::parse(s);
    let via_serde = serde_json::from_value::<TxnId>(Value::from(s)).ok();
    assert_eq!(
        txn_id.as_ref().ok(),
        via_serde.as_ref(),
        "TxnId parse and serde disagree on {s:?}"
    );
    if let Ok(txn_id) = &txn_id {
        assert!((1..=MAX_TXN_ID_BYTES).contains(&s.len()));
        assert_eq!(txn_id.to_string(), s);
    }

    // Path segments: the raw input as received...
    let decoded = percent_decode(s);
    match request::user_id(s) {
        Ok(user) => assert_eq!(
            Some(user.as_str()),
            decoded.as_deref(),
            "user_id({s:?}) is not its decoding"
        ),
        Err(e) => {
            assert_eq!((e.code, e.status()), (ErrCode::InvalidUsername, 400));
            assert!(
                decoded.as_deref().is_none_or(|d| UserId::parse(d).is_err()),
                "user_id({s:?}) refused"
            );
        }
    }
    match request::txn_id(s) {
        Ok(txn) => assert_eq!(
            Some(txn.as_str()),
            decoded.as_deref(),
            "txn_id({s:?}) is not its decoding"
        ),
        Err(e) => {
            assert_eq!((e.code, e.status()), (ErrCode::InvalidParam, 400));
            assert!(
                decoded.as_deref().is_none_or(|d| TxnId::parse(d).is_err()),
                "txn_id({s:?}) refused"
            );
        }
    }
    if !s.contains('%') {
        assert_eq!(
            decoded.as_deref(),
            Some(s),
            "decoding {s:?} without escapes changed it"
        );
    }

    // ...and the input as an identifier a sender percent-encodes.
    let encoded = percent_encode_segment(s);
    let mut rest = encoded.as_bytes();
    while let [b, tail @ ..] = rest {
        rest = match (b, tail) {
            (b'%', [hi, lo, tail @ ..]) if is_upper_hex(*hi) && is_upper_hex(*lo) => tail,
            (b, _) if b.is_ascii_alphanumeric() || b"-._~@:".contains(b) => tail,
            _ => panic!(
                "percent_encode_segment({s:?}) = {encoded:?} leaves {:?} unescaped",
                char::from(*b)
            ),
        };
    }
    assert_eq!(
        percent_decode(&encoded).as_deref(),
        Some(s),
        "encode then decode of {s:?}"
    );
    assert_eq!(
        request::user_id(&encoded).ok(),
        UserId::parse(s).ok(),
        "user_id of the encoded {s:?}"
    );
    assert_eq!(
        request::txn_id(&encoded).ok(),
        txn_id.ok(),
        "txn_id of the encoded {s:?}"
    );

    // Routing keeps raw segments whole.
    for method in ["GET", "PUT", "POST"] {
        match request::route(method, s) {
            Ok(Route::SendRelay { txn_id, user_id }) => {
                assert!(
                    !format!("{txn_id}{user_id}").contains(['/', '?']),
                    "route({s:?}) split badly"
                );
            }
            Ok(Route::RelayTxn { user_id } | Route::RelayTxns { user_id }) => {
                assert!(!user_id.contains(['/', '?']), "route({s:?}) split badly");
            }
            Ok(Route::ServerKeys | Route::Version) => {}
            Err(e) => assert!(matches!(e.status(), 404 | 405), "route({s:?}): {e}"),
        }
    }
}

fn is_upper_hex(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'F')
}
