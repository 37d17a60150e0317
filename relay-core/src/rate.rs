//! Rate limits on the time the caller passes in: a [`TokenBucket`], a
//! [`RateLimiter`] keeping one per key in bounded memory, and
//! [`OriginWindows`], which counts the distinct origins each key brings
//! per window.
//!
//! Each table holds at most a named number of keys. When a new key finds
//! it full, entries that carry nothing (a full bucket, an ended window)
//! are forgotten first; if that frees less than a quarter of the table,
//! so is the quarter that carries least (the buckets nearest full, the
//! windows nearest their end). So a stranger with more addresses than the
//! table holds cannot grow it, and the work is O(1) per call, amortised.
//! Forgetting a key gives it a fresh budget: that is the price of the
//! bound, and only a client with that many addresses, each with its own
//! budget anyway, can make it pay.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::time::Instant;

/// The key rate limits count a client address under: an IPv4 address
/// (an IPv4-mapped IPv6 address counts as the IPv4 one), or the /64
/// prefix of an IPv6 address (what one household or host is given;
/// counting whole IPv6 addresses would give one host budgets without end).
pub fn client_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

/// A sustained rate and a burst: `per_sec` a second on average, and up
/// to `burst` at once after a quiet time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_sec: u32,
    burst: u32,
}

impl Rate {
    /// `per_sec` a second with bursts of `burst`; `None` if either is 0.
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        (per_sec > 0 && burst > 0).then_some(Self { per_sec, burst })
    }

    /// The sustained rate, a second.
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// The most taken at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one token takes to come back.
    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_sec
    }
}

/// A token bucket: [`Rate::burst`] tokens when full, one coming back
/// every `1 / per_sec` seconds.
///
/// Implementation note: kept as the instant at which it will be full
/// again (the "theoretical arrival time" of GCRA, an equivalent form of
/// the token bucket), so that a bucket is one `Instant`, refills without
/// a timer, and a full one is one whose instant has passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBucket {
    full_at: Option<Instant>,
}

impl TokenBucket {
    /// Takes one token at `now`, or says how long until one is back.
    pub fn take(&mut self, now: Instant, rate: Rate) -> Result<(), Duration> {
        let interval = rate.interval();
        let full_at = self.full_at.map_or(now, |at| at.max(now));
        // Tokens missing, as time: `owed / interval` of the burst is used.
        let owed = full_at - now;
        let tolerance = interval.saturating_mul(rate.burst - 1);
        if owed > tolerance {
            return Err(owed - tolerance);
        }
        self.full_at = Some(full_at.checked_add(interval).unwrap_or(full_at));
        Ok(())
    }

    /// Whether every token is back at `now`: such a bucket is as good as
    /// a new one.
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|at| at <= now)
    }

    /// When it is full again; `None` for a bucket never taken from.
    fn full_at(&self) -> Option<Instant> {
        self.full_at
    }
}

/// One [`TokenBucket`] per key (a client address), all at one [`Rate`],
/// for at most `max_keys` keys (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// Buckets at `rate`, for at most `max_keys` keys (at least 1).
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token of `key`'s bucket at `now`, or says how long until
    /// one is back.
    pub fn take(&mut self, now: Instant, key: &K) -> Result<(), Duration> {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(now, self.rate);
        }
        make_room(
            &mut self.buckets,
            self.max_keys,
            |bucket| bucket.is_full(now),
            |bucket| bucket.full_at(),
        );
        let mut bucket = TokenBucket::default();
        let taken = bucket.take(now, self.rate);
        self.buckets.insert(key.clone(), bucket);
        taken
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The distinct origins each key (a client address) brought within its
/// window, at most `limit` per window, for at most `max_keys` keys (see
/// the [module docs](self)).
///
/// A key's window begins with the first origin it brings, and lasts
/// `window`; an origin counts once per window, however often it comes
/// back.
///
/// Implementation note: origins are kept as the first 8 bytes of their
/// SHA-256, not as names: 8 bytes each whatever the name's length, and
/// no one can make up a new name that passes for one already counted.
#[derive(Debug, Clone)]
pub struct OriginWindows<K> {
    limit: usize,
    window: Duration,
    max_keys: usize,
    windows: HashMap<K, Window>,
}

/// The origins one key brought since `started`.
#[derive(Debug, Clone)]
struct Window {
    started: Instant,
    origins: HashSet<u64>,
}

impl<K: Hash + Eq + Clone> OriginWindows<K> {
    /// At most `limit` origins per `window` per key, for at most
    /// `max_keys` keys (at least 1).
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            window,
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
        }
    }

    /// Counts `origin` as brought by `key` at `now`: `Ok` if it was
    /// brought already in this window, or the window has room for it;
    /// otherwise how long until the window ends.
    pub fn bring(&mut self, now: Instant, key: &K, origin: &str) -> Result<(), Duration> {
        let digest = origin_digest(origin);
        let window = self.window;
        if !self.windows.contains_key(key) {
            make_room(
                &mut self.windows,
                self.max_keys,
                |w| w.started.checked_add(window).is_some_and(|end| end <= now),
                |w| Some(w.started),
            );
        }
        let entry = self.windows.entry(key.clone()).or_insert_with(|| Window {
            started: now,
            origins: HashSet::new(),
        });
        let ends = entry.started.checked_add(window);
        if ends.is_some_and(|end| end <= now) {
            entry.started = now;
            entry.origins.clear();
        }
        if entry.origins.contains(&digest) {
            return Ok(());
        }
        if entry.origins.len() >= self.limit {
            let ends = entry.started.checked_add(window);
            return Err(ends.map_or(window, |end| end - now));
        }
        entry.origins.insert(digest);
        Ok(())
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// The first 8 bytes of `origin`'s SHA-256.
fn origin_digest(origin: &str) -> u64 {
    let hash = Sha256::digest(origin.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// Makes room for one more entry in `map`, which is to hold at most
/// `max` (at least 1): when full, forgets the entries `spent` says carry
/// nothing; if that leaves it over three quarters full, forgets the
/// entries of earliest `age` down to three quarters (`None` is earliest).
///
/// Implementation note: each pass that scans the map leaves room for a
/// quarter of `max` more entries before the next, so the scans cost O(1)
/// per entry added, amortised.
pub(crate) fn make_room<K, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    spent: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> Option<Instant>,
) where
    K: Hash + Eq,
{
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !spent(v));
    let target = max - max.div_ceil(4);
    if map.len() <= target {
        return;
    }
    let excess = map.len() - target;
    let mut ages: Vec<Option<Instant>> = map.values().map(&age).collect();
    let (_, cutoff, _) = ages.select_nth_unstable(excess - 1);
    let cutoff = *cutoff;
    // Everything older than the cutoff goes, then as many of its equals
    // as make up the excess.
    let before = map.len();
    map.retain(|_, v| age(v) >= cutoff);
    let mut ties = excess - (before - map.len());
    map.retain(|_, v| {
        if ties > 0 && age(v) == cutoff {
            ties -= 1;
            return false;
        }
        true
    });
}

#[cfg(test)]
mod tests;
