//! What a relay is told at start.

use std::collections::HashSet;

use crate::auth::KeyRing;
use crate::id::ServerName;
use crate::signing::SigningKey;
use crate::store::Quota;

/// Default request body limit: 50 PDUs of 64 KiB, plus room for EDUs and
/// the envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 50 * 65_536 + 1_048_576;

/// Largest PDU accepted, in bytes of JSON as sent (the spec's limit).
pub const MAX_PDU_BYTES: usize = 65_536;
/// Most PDUs in one transaction.
pub const MAX_PDUS: usize = 50;
/// Most EDUs in one transaction.
pub const MAX_EDUS: usize = 100;

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
    /// How long the published key document is valid, in milliseconds.
    pub key_validity_ms: u64,
    /// The software version reported by `/_matrix/federation/v1/version`.
    pub version: String,
}

impl RelayConfig {
    /// A configuration with defaults: serving nobody, no pinned keys, P2P
    /// names off, default limits.
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
            key_validity_ms: 24 * 60 * 60 * 1000,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
