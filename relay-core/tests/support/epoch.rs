//! The one clock read of relay-core's tests: a base instant they add
//! durations to, as an adapter passes `now`. It lives outside `src/`, so
//! the crate's sources read no clock at all, tests included.

use std::sync::OnceLock;
use std::time::Instant;

/// The same base instant for the whole test run.
#[allow(
    clippy::disallowed_methods,
    reason = "the tests' one clock read; machines only compare and add to it"
)]
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}
