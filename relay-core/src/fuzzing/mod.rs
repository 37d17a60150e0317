//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and the
//! corpus replay in the normal test run (feature `fuzzing`; no release
//! build has it). Each takes arbitrary bytes and panics only on a broken
//! invariant.
//!
//! | function | input | invariants |
//! |---|---|---|
//! | [`xmatrix()`] | a header value | the strict form, and lenient renderings the spec allows, of a parsed header parse back to the same header |
//! | [`identifiers()`] | one identifier or path segment | parsers agree with each other, with `Display` and serde, and with percent-encoding |
//! | [`canonical_json()`] | JSON text | canonical JSON is idempotent, loses nothing, and the signing form only drops `signatures` / `unsigned` |
//! | [`relay_request()`] | a whole request, see [`relay_request()`] | exactly one well-formed response per request, no storage effect without authentication, no operation left pending |
//!
//! Text inputs are read as UTF-8 with invalid sequences replaced (lossy), so
//! random bytes still reach the parsers.
// Test support: a target checks one input's invariants in sequence, and
// reads best as one function.
#![allow(clippy::too_many_lines)]

use std::borrow::Cow;

mod canonical_json;
mod identifiers;
mod relay_request;
mod xmatrix;

pub use canonical_json::canonical_json;
pub use identifiers::identifiers;
pub use relay_request::{
    FLAG_DENY, FLAG_OPEN, FLAG_P2P, FLAG_SIGN, FLAG_SIGNED_LAST, FLAG_SIGNER_MASK, FLAG_TOO_LARGE,
    RELAY_NAME, relay_request,
};
pub use xmatrix::xmatrix;

/// `data` as UTF-8 text, invalid sequences replaced.
fn lossy(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}
