//! What a relay is told at start.

use std::collections::HashSet;
use std::time::Duration;

use crate::auth::KeyRing;
use crate::cidr::Cidr;
use crate::id::ServerName;
use crate::rate::Rate;
use crate::signing::SigningKey;
use crate::store::Quota;
use crate::time::UnixMillis;

/// Default request body limit: 50 PDUs of 64 KiB, plus room for EDUs and
/// the envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 50 * 65_536 + 1_048_576;

/// Largest PDU accepted, in bytes of JSON as sent (the spec's limit).
pub const MAX_PDU_BYTES: usize = 65_536;
/// Most PDUs in one transaction.
pub const MAX_PDUS: usize = 50;
/// Most EDUs in one transaction.
pub const MAX_EDUS: usize = 100;
/// Most entries one batch drain hands out (also its default).
pub const MAX_BATCH_ENTRIES: usize = 100;
/// Most transaction bytes one batch drain hands out past its first entry
/// (also its default): large answers are held in the relay's buffer
/// budget until written.
pub const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Most entry IDs one batch drain acknowledges.
pub const MAX_BATCH_ACKS: usize = 1_000;
/// Longest a batch drain that finds nothing may wait for an entry (its
/// `timeout_ms`), in milliseconds.
pub const MAX_BATCH_WAIT_MS: u64 = 60_000;

/// [`RateLimits::send_relay`] by default: 50 a second, bursts of 500.
pub const DEFAULT_SEND_RELAY_RATE: (u32, u32) = (50, 500);
/// [`RateLimits::relay_txn`] by default: 100 a second, bursts of 1,000.
pub const DEFAULT_RELAY_TXN_RATE: (u32, u32) = (100, 1_000);
/// [`RateLimits::new_origins`] by default: 100 an hour.
pub const DEFAULT_NEW_ORIGINS_PER_HOUR: u32 = 100;
/// The window [`RateLimits::new_origins`] counts in.
pub const NEW_ORIGINS_WINDOW: Duration = Duration::from_secs(3_600);
/// [`RateLimits::key_fetches`] by default: 10 a second, bursts of 50.
pub const DEFAULT_KEY_FETCH_RATE: (u32, u32) = (10, 50);
/// [`RateLimits::key_fetch_interval`] by default: 5 minutes.
pub const DEFAULT_KEY_FETCH_INTERVAL: Duration = Duration::from_secs(300);

/// Limits on how fast clients may make the relay work: requests and new
/// origins per client address (429 past them), key fetches per origin and
/// in all (401 without a fetch past them). `None` is no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// `send_relay` requests per client address.
    pub send_relay: Option<Rate>,
    /// `relay_txn` requests per client address, a budget apart from
    /// `send_relay`'s.
    pub relay_txn: Option<Rate>,
    /// Most origins one client address may bring in a
    /// [`NEW_ORIGINS_WINDOW`]: an origin counts the first time the address
    /// brings it in the window. Origins with pinned keys do not count.
    pub new_origins: Option<u32>,
    /// Client addresses none of the per-address limits apply to.
    pub exempt: Vec<Cidr>,
    /// Key fetches, over all origins.
    pub key_fetches: Option<Rate>,
    /// Least time between two fetches of one origin's keys, whatever the
    /// first one's outcome and whatever key ID is asked for.
    pub key_fetch_interval: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        let rate = |(per_sec, burst)| Rate::new(per_sec, burst);
        Self {
            send_relay: rate(DEFAULT_SEND_RELAY_RATE),
            relay_txn: rate(DEFAULT_RELAY_TXN_RATE),
            new_origins: Some(DEFAULT_NEW_ORIGINS_PER_HOUR),
            exempt: Vec::new(),
            key_fetches: rate(DEFAULT_KEY_FETCH_RATE),
            key_fetch_interval: DEFAULT_KEY_FETCH_INTERVAL,
        }
    }
}

impl RateLimits {
    /// No limit at all, for a relay whose clients are all trusted (a
    /// benchmark): an origin's keys may be fetched for every request that
    /// needs them.
    pub fn none() -> Self {
        Self {
            send_relay: None,
            relay_txn: None,
            new_origins: None,
            exempt: Vec::new(),
            key_fetches: None,
            key_fetch_interval: Duration::ZERO,
        }
    }
}

/// Which destinations the relay stores transactions for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServePolicy {
    /// Every destination (`--open`).
    Open,
    /// Only these (`--serve-for`); empty serves nobody.
    Only(HashSet<ServerName>),
}

impl ServePolicy {
    /// Whether `destination` is served.
    pub fn serves(&self, destination: &ServerName) -> bool {
        match self {
            Self::Open => true,
            Self::Only(set) => set.contains(destination),
        }
    }
}

/// A relay's configuration, fixed once given to
/// [`Relay::new`](super::Relay::new).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This relay's server name: requests must be addressed to it.
    pub server_name: ServerName,
    /// The key it signs its key document with.
    pub signing_key: SigningKey,
    /// Destinations it stores for.
    pub serve: ServePolicy,
    /// Origins that may not store anything.
    pub denied_origins: HashSet<ServerName>,
    /// Verify keys of other servers: pinned, and with P2P names spelled by
    /// the name. Keys the relay fetches are kept by the [`Relay`](super::Relay),
    /// not here.
    pub keys: KeyRing,
    /// Fetch the keys of unknown origins from their
    /// `/_matrix/key/v2/server` ([`Output::FetchKeys`](super::Output::FetchKeys)).
    pub fetch_keys: bool,
    /// Request body limit (413 past it).
    pub max_body_bytes: usize,
    /// Storage quotas (429 past them).
    pub quota: Quota,
    /// How long an entry is kept, in milliseconds from when it was
    /// received: an older one is never handed out (and the adapter's sweep
    /// deletes it). 0 keeps entries until they are acknowledged.
    pub max_entry_age_ms: u64,
    /// Rate limits.
    pub limits: RateLimits,
    /// Peers whose `X-Forwarded-For` names the client: reverse proxies.
    /// Of any other peer the header is ignored.
    pub trusted_proxies: Vec<Cidr>,
    /// How long the published key document is valid, in milliseconds.
    pub key_validity_ms: u64,
    /// The software version reported by `/_matrix/federation/v1/version`.
    pub version: String,
}

/// The default of [`RelayConfig::max_entry_age_ms`]: 30 days, longer
/// than a node is usually offline, short enough that a queue for a node
/// that never comes back does not stay for good.
pub const DEFAULT_MAX_ENTRY_AGE_MS: u64 = 30 * 24 * 60 * 60 * 1000;

impl RelayConfig {
    /// Entries received before this are expired at `unix`
    /// (`UnixMillis(0)` when entries never expire).
    pub fn expired_before(&self, unix: UnixMillis) -> UnixMillis {
        if self.max_entry_age_ms == 0 {
            return UnixMillis(0);
        }
        UnixMillis(unix.0.saturating_sub(self.max_entry_age_ms))
    }

    /// A configuration with defaults: serving nobody, no pinned keys, P2P
    /// names off, no trusted proxy, default limits.
    pub fn new(server_name: ServerName, signing_key: SigningKey) -> Self {
        Self {
            server_name,
            signing_key,
            serve: ServePolicy::Only(HashSet::new()),
            denied_origins: HashSet::new(),
            keys: KeyRing::default(),
            fetch_keys: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            quota: Quota::default(),
            max_entry_age_ms: DEFAULT_MAX_ENTRY_AGE_MS,
            limits: RateLimits::default(),
            trusted_proxies: Vec::new(),
            key_validity_ms: 24 * 60 * 60 * 1000,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
