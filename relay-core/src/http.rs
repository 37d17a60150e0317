//! Requests the client-side machines ask their adapter to send, and what
//! the adapter reports back.
//!
//! The machines build and sign the whole request (path, body, `X-Matrix`
//! header); the adapter only resolves `server` to an address, sends, and
//! reports the outcome.

use crate::id::ServerName;

/// The answer limit of a request that names no smaller one: a `relay_txn`
/// answer holds up to 50 PDUs.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A signed federation request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// The server to send it to (resolve with `--resolve` or discovery).
    pub server: ServerName,
    /// `GET` or `PUT`.
    pub method: &'static str,
    /// The request target (path and query), already percent-encoded.
    pub target: String,
    /// The `Authorization` header value.
    pub authorization: String,
    /// The JSON body; empty for none.
    pub body: Vec<u8>,
    /// Largest answer body to read: one declaring more, or sending more
    /// while it is read, is a failed request.
    pub max_response_bytes: usize,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    /// The server answered.
    Response {
        /// HTTP status.
        status: u16,
        /// The body.
        body: Vec<u8>,
        /// The `Retry-After` header, if any, as sent.
        retry_after: Option<String>,
    },
    /// No answer in time.
    Timeout,
    /// No connection, or it broke (including name resolution failures).
    ConnectionFailed(String),
}

impl HttpOutcome {
    /// A short description for logs and error lists.
    pub fn describe(&self) -> String {
        match self {
            Self::Response { status, body, .. } => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                format!("HTTP {status}: {text}")
            }
            Self::Timeout => "timed out".to_owned(),
            Self::ConnectionFailed(e) => format!("connection failed: {e}"),
        }
    }

    /// How long a 429 or a 503 asks to wait: `retry_after_ms` from the
    /// Matrix error body, else the `Retry-After` header in seconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        let Self::Response {
            status: 429 | 503,
            body,
            retry_after,
        } = self
        else {
            return None;
        };
        let from_body = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("retry_after_ms")?.as_u64());
        from_body.or_else(|| {
            retry_after
                .as_deref()?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|s| s.saturating_mul(1000))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after() {
        let r = |status, body: &str, header: Option<&str>| HttpOutcome::Response {
            status,
            body: body.as_bytes().to_vec(),
            retry_after: header.map(str::to_owned),
        };
        assert_eq!(
            r(429, r#"{"retry_after_ms":1500}"#, Some("9")).retry_after_ms(),
            Some(1500)
        );
        assert_eq!(r(429, "{}", Some("9")).retry_after_ms(), Some(9000));
        assert_eq!(r(429, "nope", None).retry_after_ms(), None);
        // A relay short of disk or memory says when to come back.
        assert_eq!(
            r(503, r#"{"retry_after_ms":1500}"#, None).retry_after_ms(),
            Some(1500)
        );
        assert_eq!(r(503, "{}", Some("30")).retry_after_ms(), Some(30_000));
        assert_eq!(r(500, "{}", Some("30")).retry_after_ms(), None);
        assert_eq!(HttpOutcome::Timeout.retry_after_ms(), None);
    }
}
