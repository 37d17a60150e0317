//! Time as the core sees it: passed in, never read.

/// The monotonic clock type every machine takes as `now`.
///
/// Implementation note: an alias, so tests drive machines on virtual time by
/// adding durations to one base instant.
pub type Instant = std::time::Instant;

/// Wall-clock time in milliseconds since the Unix epoch, as Matrix uses it
/// (`origin_server_ts`, `valid_until_ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// This time plus `ms` milliseconds, saturating.
    pub fn saturating_add_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}
