//! Matrix errors: one typed code, mapped to an HTTP status in one place.

use serde::Serialize;

/// The Matrix error codes the relay answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrCode {
    /// 401: missing, malformed or unverifiable `X-Matrix` authorization.
    Unauthorized,
    /// 403: authenticated, but not allowed.
    Forbidden,
    /// 400: the body is not JSON.
    NotJson,
    /// 400: JSON of the wrong shape.
    BadJson,
    /// 400: the `{userID}` path segment is not a user ID.
    InvalidUsername,
    /// 400: another request parameter (such as the transaction ID) is invalid.
    InvalidParam,
    /// 413: the body is over the limit.
    TooLarge,
    /// 429: a quota is full.
    LimitExceeded,
    /// 404 `M_UNRECOGNIZED`: no such endpoint.
    UnrecognizedPath,
    /// 405 `M_UNRECOGNIZED`: known endpoint, wrong method.
    UnrecognizedMethod,
    /// 500: the relay failed (storage); nothing was half-done.
    Unknown,
    /// 503 `M_LIMIT_EXCEEDED`: the relay is short of a resource it will get
    /// back (its disk nearly full, no room for request bodies in memory);
    /// sent with `Retry-After`, and senders treat it as transient.
    Unavailable,
}

impl ErrCode {
    /// The `errcode` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::Forbidden => "M_FORBIDDEN",
            Self::NotJson => "M_NOT_JSON",
            Self::BadJson => "M_BAD_JSON",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::TooLarge => "M_TOO_LARGE",
            Self::LimitExceeded | Self::Unavailable => "M_LIMIT_EXCEEDED",
            Self::UnrecognizedPath | Self::UnrecognizedMethod => "M_UNRECOGNIZED",
            Self::Unknown => "M_UNKNOWN",
        }
    }

    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotJson | Self::BadJson | Self::InvalidUsername | Self::InvalidParam => 400,
            Self::TooLarge => 413,
            Self::LimitExceeded => 429,
            Self::UnrecognizedPath => 404,
            Self::UnrecognizedMethod => 405,
            Self::Unknown => 500,
            Self::Unavailable => 503,
        }
    }
}

/// A Matrix error response: `{"errcode", "error"}` plus `retry_after_ms`
/// where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    /// The error code.
    pub code: ErrCode,
    /// Human-readable text.
    pub message: String,
    /// For 429 and 503: how long to wait, where known.
    pub retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct Wire<'a> {
    errcode: &'static str,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl MatrixError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            errcode: self.code.as_str(),
            error: &self.message,
            retry_after_ms: self.retry_after_ms,
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for MatrixError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let mut e = MatrixError::new(ErrCode::LimitExceeded, "full");
        e.retry_after_ms = Some(1500);
        assert_eq!(e.status(), 429);
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"full","retry_after_ms":1500}"#
        );
        let e = MatrixError::new(ErrCode::Unavailable, "busy");
        assert_eq!((e.status(), e.code.as_str()), (503, "M_LIMIT_EXCEEDED"));
        let e = MatrixError::new(ErrCode::UnrecognizedMethod, "no");
        assert_eq!((e.status(), e.code.as_str()), (405, "M_UNRECOGNIZED"));
    }
}
