//! Request authentication: building, signing and verifying `X-Matrix`
//! requests, and where verify keys come from.

use std::collections::HashMap;

use serde_json::Value;

use crate::canonical::CanonicalJsonError;
use crate::id::{KeyId, ServerName};
use crate::signing::{SigningKey, VerifyKey};
use crate::time::UnixMillis;
use crate::xmatrix::XMatrixError;

/// Where verify keys of other servers come from.
///
/// Implementation note: a synchronous lookup, because it only answers from
/// what is already known (configuration, P2P names, a cache); fetching keys
/// over the network happens outside the core.
pub trait KeyLookup {
    /// `origin`'s key `key_id`, if known and valid at `at`.
    fn verify_key(&self, origin: &ServerName, key_id: &KeyId, at: UnixMillis) -> Option<VerifyKey>;
}

/// The keys a relay knows without asking anyone: pinned keys, and with P2P
/// names on, the key that a 64-hex server name spells.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pinned: HashMap<ServerName, HashMap<KeyId, VerifyKey>>,
    p2p: bool,
}

/// A `--trusted-key` value that is not `NAME=ed25519:ID:BASE64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAME=ed25519:ID:BASE64, got {0:?}")]
pub struct TrustedKeyError(pub String);

impl KeyRing {
    /// An empty ring; `p2p` accepts hex public-key server names.
    pub fn new(p2p: bool) -> Self {
        Self {
            pinned: HashMap::new(),
            p2p,
        }
    }

    /// Pins `server`'s key `key_id`.
    pub fn pin(&mut self, server: ServerName, key_id: KeyId, key: VerifyKey) {
        self.pinned.entry(server).or_default().insert(key_id, key);
    }

    /// Parses `NAME=ed25519:ID:BASE64` (the `--trusted-key` form).
    pub fn parse_trusted(spec: &str) -> Result<(ServerName, KeyId, VerifyKey), TrustedKeyError> {
        todo!("{spec}")
    }
}

impl KeyLookup for KeyRing {
    fn verify_key(&self, origin: &ServerName, key_id: &KeyId, _at: UnixMillis) -> Option<VerifyKey> {
        todo!("{origin}{key_id}")
    }
}

/// Why a request is not authenticated. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `X-Matrix` Authorization header.
    #[error("missing X-Matrix Authorization header")]
    Missing,
    /// The header does not parse.
    #[error(transparent)]
    Malformed(#[from] XMatrixError),
    /// `origin` is not a server name.
    #[error("X-Matrix origin is not a server name")]
    BadOrigin,
    /// `key` is not a key ID.
    #[error("X-Matrix key is not a key ID")]
    BadKeyId,
    /// `destination` is not this server.
    #[error("X-Matrix destination is not this server")]
    WrongDestination,
    /// The origin's key is not known.
    #[error("no key {key_id} known for {origin}")]
    UnknownKey {
        /// The origin.
        origin: ServerName,
        /// The key it claimed.
        key_id: KeyId,
    },
    /// The signature does not verify.
    #[error("invalid signature for {origin} with key {key_id}")]
    BadSignature {
        /// The origin.
        origin: ServerName,
        /// The key it claimed.
        key_id: KeyId,
    },
}

/// A parsed, not yet verified, `X-Matrix` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The origin it claims.
    pub origin: ServerName,
    /// The key it claims to be signed with.
    pub key_id: KeyId,
    /// The signature, base64.
    pub sig: String,
}

/// The signed object `{method, uri, origin, destination, content?}`.
pub fn request_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Value {
    todo!("{method}{uri}{origin}{destination}{content:?}")
}

/// The `Authorization` header value for a request from `origin` to
/// `destination`, in the strict form.
pub fn sign_request(
    key: &SigningKey,
    origin: &ServerName,
    destination: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String, CanonicalJsonError> {
    todo!("{key:?}{origin}{destination}{method}{uri}{content:?}")
}

/// Verification steps 1 and 2: finds the `X-Matrix` header among
/// `authorization` values, parses it, and checks that its `destination`,
/// when present, is `our_name`.
pub fn parse_authorization<'a>(
    authorization: impl IntoIterator<Item = &'a str>,
    our_name: &ServerName,
) -> Result<Claimed, AuthError> {
    let _ = (authorization.into_iter().count(), our_name);
    todo!()
}

/// Verification steps 4 and 5: resolves the claimed key and checks the
/// signature over the request as received (`uri` raw, `content` the parsed
/// body when the body is non-empty).
pub fn verify_claimed(
    claimed: &Claimed,
    our_name: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    keys: &impl KeyLookup,
    at: UnixMillis,
) -> Result<(), AuthError> {
    todo!("{claimed:?}{our_name}{method}{uri}{content:?}{}{at:?}", keys.verify_key(our_name, &claimed.key_id, at).is_some())
}
