//! Routing of raw request targets, and the path parameters in them.
//!
//! Implementation note: routing splits the raw target on `/` before any
//! percent-decoding, so an encoded `%2F` stays inside its segment; the raw
//! target is also what the `X-Matrix` signature covers, so it is never
//! normalised.

use crate::error::{ErrCode, MatrixError};
use crate::id::{TxnId, UserId};

/// A route the relay serves, with its path parameters still raw
/// (percent-encoded) so that decoding errors surface in the right order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `PUT /_matrix/federation/v1/send_relay/{txnID}/{userID}`.
    SendRelay {
        /// The raw `txnID` segment.
        txn_id: &'a str,
        /// The raw `userID` segment.
        user_id: &'a str,
    },
    /// `GET /_matrix/federation/v1/relay_txn/{userID}`.
    RelayTxn {
        /// The raw `userID` segment.
        user_id: &'a str,
    },
    /// `POST /_matrix/federation/unstable/org.matrix_relay/relay_txns/{userID}`:
    /// this project's batch drain.
    RelayTxns {
        /// The raw `userID` segment.
        user_id: &'a str,
    },
    /// `GET /_matrix/key/v2/server`.
    ServerKeys,
    /// `GET /_matrix/federation/v1/version`.
    Version,
}

/// The namespace of this project's unstable federation endpoints.
pub const UNSTABLE_NAMESPACE: &str = "org.matrix_relay";

/// The path of the batch drain of `user_id` (already percent-encoded),
/// [`Route::RelayTxns`].
pub fn relay_txns_path(encoded_user_id: &str) -> String {
    format!("/_matrix/federation/unstable/{UNSTABLE_NAMESPACE}/relay_txns/{encoded_user_id}")
}

/// Maps a method and raw request target to its route: 404 for an
/// unknown path, 405 for a known path with another method.
pub fn route<'a>(method: &str, target: &'a str) -> Result<Route<'a>, MatrixError> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut segments = path.split('/');
    if segments.next() != Some("") || segments.next() != Some("_matrix") {
        return Err(not_found());
    }
    let rest: Vec<&str> = segments.collect();
    let (route, allowed) = match rest.as_slice() {
        ["federation", "v1", "send_relay", txn, user] => (
            Route::SendRelay {
                txn_id: txn,
                user_id: user,
            },
            "PUT",
        ),
        ["federation", "v1", "relay_txn", user] => (Route::RelayTxn { user_id: user }, "GET"),
        [
            "federation",
            "unstable",
            UNSTABLE_NAMESPACE,
            "relay_txns",
            user,
        ] => (Route::RelayTxns { user_id: user }, "POST"),
        ["key", "v2", "server"] => (Route::ServerKeys, "GET"),
        ["federation", "v1", "version"] => (Route::Version, "GET"),
        _ => return Err(not_found()),
    };
    if method == allowed {
        Ok(route)
    } else {
        Err(MatrixError::new(
            ErrCode::UnrecognizedMethod,
            format!("{method} is not allowed here; use {allowed}"),
        ))
    }
}

fn not_found() -> MatrixError {
    MatrixError::new(ErrCode::UnrecognizedPath, "unrecognized request")
}

/// Decodes and validates a raw `userID` path segment (400
/// `M_INVALID_USERNAME`).
pub fn user_id(raw: &str) -> Result<UserId, MatrixError> {
    percent_decode(raw)
        .and_then(|s| UserId::parse(&s).ok())
        .ok_or_else(|| {
            MatrixError::new(
                ErrCode::InvalidUsername,
                "the userID path segment is not a valid user ID",
            )
        })
}

/// Decodes and validates a raw `txnID` path segment (400 `M_INVALID_PARAM`).
pub fn txn_id(raw: &str) -> Result<TxnId, MatrixError> {
    percent_decode(raw)
        .and_then(|s| TxnId::parse(&s).ok())
        .ok_or_else(|| {
            MatrixError::new(
                ErrCode::InvalidParam,
                "the txnID path segment must be 1 to 255 bytes of UTF-8 without control characters",
            )
        })
}

/// Strict percent-decoding: a `%` not followed by two hex digits, or bytes
/// that are not UTF-8, give `None`.
pub fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a path segment, leaving RFC 3986 unreserved characters
/// and `@`, `:` (as Go's `url.PathEscape`, which Dendrite uses) as they are.
pub fn percent_encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(
                "PUT",
                "/_matrix/federation/v1/send_relay/t%2F1/%40a%3Ab?x=1"
            ),
            Ok(Route::SendRelay {
                txn_id: "t%2F1",
                user_id: "%40a%3Ab"
            })
        );
        assert_eq!(
            route("GET", "/_matrix/federation/v1/relay_txn/@a:b"),
            Ok(Route::RelayTxn { user_id: "@a:b" })
        );
        assert_eq!(
            route("GET", "/_matrix/key/v2/server"),
            Ok(Route::ServerKeys)
        );
        assert_eq!(
            route("GET", "/_matrix/federation/v1/version"),
            Ok(Route::Version)
        );
        let status = |m, t| route(m, t).map_err(|e| e.status()).err();
        assert_eq!(
            status("GET", "/_matrix/federation/v1/send_relay/t/@a:b"),
            Some(405)
        );
        assert_eq!(
            status("POST", "/_matrix/federation/v1/relay_txn/@a:b"),
            Some(405)
        );
        assert_eq!(status("PUT", "/_matrix/key/v2/server"), Some(405));
        assert_eq!(
            status("GET", "/_matrix/federation/v1/relay_txn/@a:b/x"),
            Some(404)
        );
        assert_eq!(status("GET", "/_matrix/federation/v1/relay_txn"), Some(404));
        assert_eq!(status("GET", "/"), Some(404));
        assert_eq!(status("GET", ""), Some(404));
        assert_eq!(status("GET", "_matrix/key/v2/server"), Some(404));
    }

    #[test]
    fn path_parameters() {
        assert_eq!(
            user_id("%40alice%3Adest.example").unwrap().as_str(),
            "@alice:dest.example"
        );
        assert_eq!(
            user_id("@alice:dest.example").unwrap().as_str(),
            "@alice:dest.example"
        );
        for bad in ["%4", "%zz", "%40", "%FF", "alice", "@alice:bad_host", ""] {
            let e = user_id(bad).unwrap_err();
            assert_eq!(
                (e.status(), e.code),
                (400, ErrCode::InvalidUsername),
                "{bad}"
            );
        }
        assert_eq!(txn_id("a%2Fb").unwrap().as_str(), "a/b");
        assert_eq!(txn_id("").unwrap_err().code, ErrCode::InvalidParam);
        assert_eq!(txn_id("%ZZ").unwrap_err().code, ErrCode::InvalidParam);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for s in ["@alice:dest.example", "t x/y?z#%", "日本"] {
            let enc = percent_encode_segment(s);
            assert!(!enc.contains('/') && !enc.contains('?') && !enc.contains(' '));
            assert_eq!(percent_decode(&enc).as_deref(), Some(s));
        }
        assert_eq!(percent_encode_segment("@a:b"), "@a:b");
    }
}
