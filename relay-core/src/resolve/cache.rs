//! What discovery remembers, and for how long.
//!
//! Implementation note: the lifetimes follow the spec's advice and Synapse's
//! choices: a valid `.well-known` lives as its `Cache-Control: max-age` (or
//! `Expires`) says, 24 h without either, never less than 5 min (so a
//! `max-age=0` cannot turn every request into two) nor more than 48 h. A
//! server that is down (no response, or a 5xx) is asked again after 2 min,
//! as Synapse does, while a valid delegation that just ran out is kept
//! through that for up to 1 h more; a missing or invalid one (a 4xx, a
//! body that is not a valid delegation) is remembered for 1 h. SRV answers
//! live for their TTL within [1 min, 24 h]; a failed DNS exchange (no
//! answer at all) for 1 min. Each table keeps at most [`DEFAULT_CAPACITY`] names: when full,
//! expired entries go first, then the one closest to expiry.

use std::collections::HashMap;
use std::time::Duration;

use crate::{Instant, UnixMillis};

/// Most names each table (well-known, SRV) keeps.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Lifetime of a valid `.well-known` whose response says nothing.
pub const WELL_KNOWN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// Longest a valid `.well-known` is kept, whatever its response says.
pub const WELL_KNOWN_MAX: Duration = Duration::from_secs(48 * 3600);
/// Shortest a valid `.well-known` is kept, whatever its response says.
pub const WELL_KNOWN_MIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime of a missing or invalid `.well-known` (no delegation).
pub const WELL_KNOWN_INVALID: Duration = Duration::from_secs(3600);
/// Lifetime of a `.well-known` fetch that found the server down.
pub const WELL_KNOWN_DOWN: Duration = Duration::from_secs(2 * 60);
/// How long past its lifetime a valid delegation is still used while the
/// server is down.
pub const WELL_KNOWN_GRACE: Duration = Duration::from_secs(3600);
/// Bounds of an SRV answer's lifetime (its TTL, clamped).
pub const SRV_MIN: Duration = Duration::from_secs(60);
/// See [`SRV_MIN`].
pub const SRV_MAX: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of "no SRV record" when the answer carries no TTL.
pub const SRV_NEGATIVE_DEFAULT: Duration = Duration::from_secs(3600);
/// Lifetime of a failed DNS exchange.
pub const SRV_FAILURE: Duration = Duration::from_secs(60);

/// How long a valid `.well-known` response is kept, from its
/// `Cache-Control` and `Expires` headers; `now` is the wall clock.
pub fn well_known_lifetime(
    cache_control: Option<&str>,
    expires: Option<&str>,
    now: UnixMillis,
) -> Duration {
    let from_headers = match cache_control.and_then(max_age) {
        Some(age) => Some(age),
        None if cache_control.is_some_and(|c| has_directive(c, "no-store")) => Some(Duration::ZERO),
        // RFC 9111: an `Expires` that does not parse means "already expired".
        None => expires.map(|e| match parse_http_date(e) {
            Some(at) => Duration::from_millis(at.0.saturating_sub(now.0)),
            None => Duration::ZERO,
        }),
    };
    from_headers
        .unwrap_or(WELL_KNOWN_DEFAULT)
        .clamp(WELL_KNOWN_MIN, WELL_KNOWN_MAX)
}

/// How long an SRV answer is kept: its TTL, or the default, clamped.
pub fn srv_lifetime(ttl: Option<Duration>) -> Duration {
    ttl.unwrap_or(SRV_NEGATIVE_DEFAULT).clamp(SRV_MIN, SRV_MAX)
}

fn directives(cache_control: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    cache_control.split(',').map(|d| {
        let d = d.trim();
        match d.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (d, None),
        }
    })
}

fn has_directive(cache_control: &str, name: &str) -> bool {
    directives(cache_control).any(|(k, _)| k.eq_ignore_ascii_case(name))
}

fn max_age(cache_control: &str) -> Option<Duration> {
    directives(cache_control)
        .find(|(k, _)| k.eq_ignore_ascii_case("max-age"))
        .and_then(|(_, v)| v?.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the one
/// format HTTP senders must use.
pub fn parse_http_date(s: &str) -> Option<UnixMillis> {
    let s = s.trim();
    let (_weekday, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: u64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || year < 1970 || !(1..=31).contains(&day) || h > 23 || m > 59 {
        return None;
    }
    if sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(UnixMillis(secs.checked_mul(1000)?))
}

/// Days from 1970-01-01 to a (proleptic Gregorian) date in or after 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Howard Hinnant's algorithm, shifted so March starts the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A size-bounded map whose entries expire.
#[derive(Debug, Clone)]
pub(crate) struct ExpiringMap<V> {
    entries: HashMap<String, (V, Instant)>,
    capacity: usize,
}

impl<V: Clone> ExpiringMap<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The live value for `key`.
    pub(crate) fn get(&self, now: Instant, key: &str) -> Option<V> {
        let (value, until) = self.entries.get(key)?;
        (now < *until).then(|| value.clone())
    }

    /// The value for `key`, live or expired (until evicted).
    pub(crate) fn get_expired(&self, key: &str) -> Option<V> {
        self.entries.get(key).map(|(value, _)| value.clone())
    }

    /// Keeps `value` until `now + lifetime`, evicting if full.
    pub(crate) fn insert(&mut self, now: Instant, key: String, value: V, lifetime: Duration) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, until)| now < *until);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (value, now + lifetime));
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
