//! The `X-Matrix` Authorization header: lenient parse, strict format.

/// A parsed `X-Matrix` header. Values are as sent; identifiers are
/// validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// `origin`: the sending server.
    pub origin: String,
    /// `destination`: the receiving server, when sent.
    pub destination: Option<String>,
    /// `key`: the key ID.
    pub key: String,
    /// `sig`: the base64 signature.
    pub sig: String,
}

/// Why a header is not a usable `X-Matrix` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XMatrixError {
    /// The scheme is not `X-Matrix`.
    #[error("not an X-Matrix authorization")]
    Scheme,
    /// The parameter list does not parse.
    #[error("malformed X-Matrix parameters")]
    Syntax,
    /// `origin`, `key` or `sig` is missing.
    #[error("X-Matrix parameter {0} is missing")]
    Missing(&'static str),
    /// A parameter appears twice.
    #[error("X-Matrix parameter {0} appears twice")]
    Duplicate(String),
}

impl XMatrix {
    /// Parses a header value leniently, as the spec allows.
    pub fn parse(header: &str) -> Result<Self, XMatrixError> {
        todo!("{header}")
    }
}

impl std::fmt::Display for XMatrix {
    /// The strict form: `X-Matrix origin="…",destination="…",key="…",sig="…"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}
