//! Matrix canonical JSON.

use serde_json::Value;

/// A value that has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// A number that is not an integer in ±(2^53−1) (integral floats such
    /// as `-0` and `1e10` count as integers).
    #[error("number {0} is not an integer in the canonical range")]
    BadNumber(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested too deeply")]
    TooDeep,
}

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

/// The canonical JSON text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalJsonError> {
    todo!("{value}")
}
