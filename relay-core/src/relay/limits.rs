//! The relay's rate limits as state: request budgets and new origins per
//! client address, and key fetches per origin and in all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::RequestHead;
use super::client::client_address;
use super::config::{NEW_ORIGINS_WINDOW, RateLimits, RelayConfig};
use crate::error::{ErrCode, MatrixError};
use crate::id::ServerName;
use crate::rate::{OriginWindows, Rate, RateLimiter, TokenBucket, client_key, make_room};
use crate::time::Instant;

/// Most client addresses each request budget keeps a bucket for (about
/// 64 bytes each).
pub const MAX_LIMITED_ADDRESSES: usize = 65_536;
/// Most origins counted at once over all client addresses' windows (8
/// bytes each, plus the table's overhead): the windows kept are at most
/// this divided by the per-address limit.
pub const MAX_COUNTED_ORIGINS: usize = 1 << 20;
/// Most origins whose last key fetch is remembered. The default global
/// cap (50 at once, then 10 a second) fetches at most about 3,050 in a
/// [`DEFAULT_KEY_FETCH_INTERVAL`](super::DEFAULT_KEY_FETCH_INTERVAL), so
/// with the defaults no origin is forgotten before its interval ends.
pub const MAX_FETCH_RECORDS: usize = 10_000;

/// The endpoints with a request budget per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    SendRelay,
    RelayTxn,
}

/// Who sent a request, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Client {
    /// What it counts under ([`client_key`]).
    key: IpAddr,
    /// Whether it is in [`RateLimits::exempt`].
    exempt: bool,
}

impl Client {
    /// The client of `head`, behind a trusted proxy of `config` or not.
    pub(super) fn of(head: &RequestHead, config: &RelayConfig) -> Self {
        let address = client_address(head.peer, &head.forwarded_for, &config.trusted_proxies);
        Self {
            key: client_key(address),
            exempt: config.limits.exempt.iter().any(|c| c.contains(address)),
        }
    }
}

/// The limits' state. Every table in it is bounded.
#[derive(Debug)]
pub(super) struct Limits {
    send_relay: Option<RateLimiter<IpAddr>>,
    relay_txn: Option<RateLimiter<IpAddr>>,
    new_origins: Option<OriginWindows<IpAddr>>,
    key_fetches: Option<(Rate, TokenBucket)>,
    key_fetch_interval: Duration,
    /// When each origin's keys were last asked for.
    fetched: HashMap<ServerName, Instant>,
}

impl Limits {
    pub(super) fn new(config: &RateLimits) -> Self {
        let per_address =
            |rate: Option<Rate>| rate.map(|rate| RateLimiter::new(rate, MAX_LIMITED_ADDRESSES));
        let new_origins = config.new_origins.map(|limit| {
            let per_window = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
            let windows = (MAX_COUNTED_ORIGINS / per_window).max(1);
            OriginWindows::new(limit, NEW_ORIGINS_WINDOW, windows)
        });
        Self {
            send_relay: per_address(config.send_relay),
            relay_txn: per_address(config.relay_txn),
            new_origins,
            key_fetches: config.key_fetches.map(|r| (r, TokenBucket::default())),
            key_fetch_interval: config.key_fetch_interval,
            fetched: HashMap::new(),
        }
    }

    /// Takes one request of `endpoint`'s budget for `client`; `Err` is the
    /// 429 to answer.
    pub(super) fn request(
        &mut self,
        now: Instant,
        client: Client,
        endpoint: Endpoint,
    ) -> Result<(), MatrixError> {
        let (limiter, what) = match endpoint {
            Endpoint::SendRelay => (&mut self.send_relay, "send_relay"),
            Endpoint::RelayTxn => (&mut self.relay_txn, "relay_txn"),
        };
        match limiter {
            Some(limiter) if !client.exempt => limiter.take(now, &client.key).map_err(|wait| {
                limit_exceeded(format!("too many {what} requests from your address"), wait)
            }),
            _ => Ok(()),
        }
    }

    /// Counts `origin` as brought by `client`; `Err` is the 429 to answer
    /// when it is new to the address and the address's window is full.
    pub(super) fn bring(
        &mut self,
        now: Instant,
        client: Client,
        origin: &ServerName,
    ) -> Result<(), MatrixError> {
        match &mut self.new_origins {
            Some(windows) if !client.exempt => windows
                .bring(now, &client.key, origin.as_str())
                .map_err(|wait| limit_exceeded("too many new origins from your address", wait)),
            _ => Ok(()),
        }
    }

    /// Whether `origin`'s keys may be fetched as far as its own interval
    /// goes.
    pub(super) fn fetch_due(&self, now: Instant, origin: &ServerName) -> bool {
        self.fetched
            .get(origin)
            .is_none_or(|at| ended(*at, self.key_fetch_interval, now))
    }

    /// Takes a fetch of the global budget for `origin` and records it;
    /// `false` if the budget is spent (then nothing is recorded).
    pub(super) fn start_fetch(&mut self, now: Instant, origin: &ServerName) -> bool {
        if let Some((rate, bucket)) = &mut self.key_fetches
            && bucket.take(now, *rate).is_err()
        {
            return false;
        }
        let interval = self.key_fetch_interval;
        make_room(
            &mut self.fetched,
            MAX_FETCH_RECORDS,
            |at| ended(*at, interval, now),
            |at| Some(*at),
        );
        self.fetched.insert(origin.clone(), now);
        true
    }
}

#[cfg(test)]
impl Limits {
    /// How many origins' last fetches are remembered.
    pub(super) fn fetched_len(&self) -> usize {
        self.fetched.len()
    }
}

/// Whether `length` from `start` has passed at `now`.
fn ended(start: Instant, length: Duration, now: Instant) -> bool {
    start.checked_add(length).is_some_and(|end| end <= now)
}

/// 429 `M_LIMIT_EXCEEDED` with `message`, to be tried again after `wait`
/// (at least a millisecond, rounded up).
fn limit_exceeded(message: impl Into<String>, wait: Duration) -> MatrixError {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    MatrixError {
        retry_after_ms: Some(u64::try_from(ms).unwrap_or(u64::MAX)),
        ..MatrixError::new(ErrCode::LimitExceeded, message)
    }
}
