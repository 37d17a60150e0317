//! Request authentication: building, signing and verifying `X-Matrix`
//! requests, and where verify keys come from.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::canonical::{CanonicalJsonError, to_canonical_string, to_lenient_string};
use crate::id::{KeyId, ServerName};
use crate::server_keys::FetchedKeys;
use crate::signing::{SigningKey, VerifyKey};
use crate::time::UnixMillis;
use crate::xmatrix::{XMatrix, XMatrixError};

/// Where verify keys of other servers come from.
///
/// Implementation note: a synchronous lookup, because it only answers from
/// what is already known (configuration, P2P names, a cache); fetching keys
/// over the network happens outside the core.
pub trait KeyLookup {
    /// `origin`'s key `key_id`, if known and valid at `at`.
    fn verify_key(&self, origin: &ServerName, key_id: &KeyId, at: UnixMillis) -> Option<VerifyKey>;
}

/// The keys a relay is configured with: pinned keys and, with P2P names
/// on, the key that a 64-hex server name spells. Keys fetched at run time
/// are kept apart, in a [`KeyCache`].
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pinned: HashMap<ServerName, HashMap<KeyId, VerifyKey>>,
    p2p: bool,
}

/// Most servers whose fetched keys are kept.
pub const MAX_FETCHED_SERVERS: usize = 10_000;

/// A `--trusted-key` value that is not `NAME=ed25519:ID:BASE64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAME=ed25519:ID:BASE64, got {0:?}")]
pub struct TrustedKeyError(pub String);

impl KeyRing {
    /// An empty ring that also accepts P2P names: the key of a 64-hex
    /// server name is the one it spells. ([`KeyRing::default`] does not.)
    pub fn with_p2p_names() -> Self {
        Self {
            pinned: HashMap::new(),
            p2p: true,
        }
    }

    /// Pins `server`'s key `key_id`.
    pub fn pin(&mut self, server: ServerName, key_id: KeyId, key: VerifyKey) {
        self.pinned.entry(server).or_default().insert(key_id, key);
    }

    /// Whether `server` has pinned keys. Its keys are then the pinned ones
    /// only: they are never fetched, so a pin cannot be widened by whoever
    /// answers for the name.
    pub fn is_pinned(&self, server: &ServerName) -> bool {
        self.pinned.contains_key(server)
    }

    /// Parses `NAME=ed25519:ID:BASE64` (the `--trusted-key` form).
    ///
    /// `NAME` ends at the first `=`; the rest splits at its first two `:`,
    /// so `ID` cannot contain `:` while `BASE64` may be padded.
    pub fn parse_trusted(spec: &str) -> Result<(ServerName, KeyId, VerifyKey), TrustedKeyError> {
        let parsed = || {
            let (name, key) = spec.split_once('=')?;
            let mut parts = key.splitn(3, ':');
            let (alg, version, b64) = (parts.next()?, parts.next()?, parts.next()?);
            if alg != "ed25519" {
                return None;
            }
            Some((
                ServerName::parse(name).ok()?,
                KeyId::ed25519(version).ok()?,
                VerifyKey::from_base64(b64)?,
            ))
        };
        parsed().ok_or_else(|| TrustedKeyError(spec.to_owned()))
    }
}

impl KeyLookup for KeyRing {
    /// Pinned keys first; then, with P2P names on, the key a 64-hex `origin`
    /// spells, for any `ed25519:*` key ID.
    fn verify_key(
        &self,
        origin: &ServerName,
        key_id: &KeyId,
        _at: UnixMillis,
    ) -> Option<VerifyKey> {
        if let Some(key) = self.pinned.get(origin).and_then(|keys| keys.get(key_id)) {
            return Some(*key);
        }
        if self.p2p
            && key_id.algorithm() == "ed25519"
            && let Some(key) = origin.p2p_public_key()
        {
            return Some(VerifyKey(key));
        }
        None
    }
}

/// Keys fetched from servers' key documents, each trusted until it
/// expires.
///
/// Implementation note: at most [`MAX_FETCHED_SERVERS`] servers are kept;
/// when full, expired entries go first, then the one expiring soonest, so
/// strangers cannot grow the cache without bound.
#[derive(Debug, Clone, Default)]
pub struct KeyCache {
    fetched: HashMap<ServerName, FetchedKeys>,
}

impl KeyCache {
    /// Remembers `server`'s fetched keys until they expire.
    pub fn insert(&mut self, server: ServerName, keys: FetchedKeys, now: UnixMillis) {
        if self.fetched.len() >= MAX_FETCHED_SERVERS && !self.fetched.contains_key(&server) {
            self.fetched.retain(|_, k| k.expires > now);
            if self.fetched.len() >= MAX_FETCHED_SERVERS
                && let Some(soonest) = self
                    .fetched
                    .iter()
                    .min_by_key(|(name, k)| (k.expires, (*name).clone()))
                    .map(|(name, _)| name.clone())
            {
                self.fetched.remove(&soonest);
            }
        }
        self.fetched.insert(server, keys);
    }
}

impl KeyLookup for KeyCache {
    /// The fetched key, while valid at `at`.
    fn verify_key(&self, origin: &ServerName, key_id: &KeyId, at: UnixMillis) -> Option<VerifyKey> {
        self.fetched
            .get(origin)
            .filter(|k| k.expires > at)
            .and_then(|k| k.keys.get(key_id).copied())
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
    let mut object = Map::new();
    object.insert("method".to_owned(), Value::from(method));
    object.insert("uri".to_owned(), Value::from(uri));
    object.insert("origin".to_owned(), Value::from(origin));
    object.insert("destination".to_owned(), Value::from(destination));
    if let Some(content) = content {
        object.insert("content".to_owned(), content.clone());
    }
    Value::Object(object)
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
    let object = request_json(method, uri, origin.as_str(), destination.as_str(), content);
    let sig = key.sign(to_canonical_string(&object)?.as_bytes());
    let header = XMatrix {
        origin: origin.as_str().to_owned(),
        destination: Some(destination.as_str().to_owned()),
        key: key.key_id().as_str().to_owned(),
        sig,
    };
    Ok(header.to_string())
}

/// Verification steps 1 and 2: finds the `X-Matrix` header among
/// `authorization` values, parses it, and checks that its `destination`,
/// when present, is `our_name`.
///
/// The first value whose scheme is `X-Matrix` counts; others are ignored.
pub fn parse_authorization<'a>(
    authorization: impl IntoIterator<Item = &'a str>,
    our_name: &ServerName,
) -> Result<Claimed, AuthError> {
    let header = authorization
        .into_iter()
        .map(XMatrix::parse)
        .find(|parsed| !matches!(parsed, Err(XMatrixError::Scheme)))
        .ok_or(AuthError::Missing)??;
    let origin = ServerName::parse(&header.origin).map_err(|_| AuthError::BadOrigin)?;
    let key_id = KeyId::parse(&header.key).map_err(|_| AuthError::BadKeyId)?;
    if header
        .destination
        .as_deref()
        .is_some_and(|destination| destination != our_name.as_str())
    {
        return Err(AuthError::WrongDestination);
    }
    Ok(Claimed {
        origin,
        key_id,
        sig: header.sig,
    })
}

/// Verification steps 4 and 5: resolves the claimed key
/// ([`resolve_key`]) and checks the signature over the request as received
/// ([`verify_signature`]).
pub fn verify_claimed(
    claimed: &Claimed,
    our_name: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    keys: &impl KeyLookup,
    at: UnixMillis,
) -> Result<(), AuthError> {
    let key = resolve_key(claimed, keys, at)?;
    verify_signature(claimed, &key, our_name, method, uri, content)
}

/// Verification step 4: the claimed key, if known at `at`. A key ID of
/// another algorithm than ed25519 is an unknown key.
pub fn resolve_key(
    claimed: &Claimed,
    keys: &impl KeyLookup,
    at: UnixMillis,
) -> Result<VerifyKey, AuthError> {
    let unknown = || AuthError::UnknownKey {
        origin: claimed.origin.clone(),
        key_id: claimed.key_id.clone(),
    };
    if claimed.key_id.algorithm() != "ed25519" {
        return Err(unknown());
    }
    keys.verify_key(&claimed.origin, &claimed.key_id, at)
        .ok_or_else(unknown)
}

/// Verification step 5: checks the signature by `key` over the request as
/// received (`uri` raw, `content` the parsed body when the body is
/// non-empty).
///
/// A signature that is not base64 of 64 bytes, or a `content` without a
/// canonical form, is a bad signature.
pub fn verify_signature(
    claimed: &Claimed,
    key: &VerifyKey,
    our_name: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<(), AuthError> {
    let bad = || AuthError::BadSignature {
        origin: claimed.origin.clone(),
        key_id: claimed.key_id.clone(),
    };
    let object = request_json(
        method,
        uri,
        claimed.origin.as_str(),
        our_name.as_str(),
        content,
    );
    // A body with numbers canonical JSON cannot write is checked as the
    // sender's JSON library most likely wrote them: the caller refuses such
    // a body anyway, but only after knowing who sent it.
    let signed = to_canonical_string(&object)
        .or_else(|_| to_lenient_string(&object))
        .map_err(|_| bad())?;
    key.verify(signed.as_bytes(), &claimed.sig)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
    const SPEC_PUBLIC: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";
    const P2P_NAME: &str = "5c65f42514b601fddb7b7927cf67c18916c0a639b60e1eb58170c903c91c24d2";
    const URI_A: &str = "/_matrix/federation/v1/send_relay/txn1/@alice:dest.example";
    const SIG_A: &str =
        "STBA1xu0p9jKYatO5IAB/Um7OEkoMewBqfy6Anp5JbAOubPnQvKeAl3yn0wEw0IMPo5QVBTzKVOaFZxsV78FBA";
    const SIG_B: &str =
        "gE/9/hruZZSqaGhXDxFlZ+r/Wa2Q1JlNkE5aZ0nGABBrAQcd1ZhExBXiTcnEK+wbW9jXtpIPhl/o8tLwCZx0CA";
    const AT: UnixMillis = UnixMillis(1_700_000_000_000);

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn key_id(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    fn spec_key(version: &str) -> SigningKey {
        SigningKey::parse_synapse(&format!("ed25519 {version} {SPEC_SEED}")).unwrap()
    }

    fn relay() -> ServerName {
        name("relay.example")
    }

    fn content_a() -> Value {
        json!({"origin": "origin.example", "origin_server_ts": 1, "pdus": [], "edus": []})
    }

    fn uri_b() -> String {
        format!("/_matrix/federation/v1/relay_txn/@alice:{P2P_NAME}")
    }

    fn header_a() -> String {
        format!(
            r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{SIG_A}""#
        )
    }

    /// A ring that pins the spec key for `origin.example` as `ed25519:1`.
    fn ring_a() -> KeyRing {
        let mut ring = KeyRing::default();
        ring.pin(
            name("origin.example"),
            key_id("ed25519:1"),
            spec_key("1").verify_key(),
        );
        ring
    }

    /// Parses and verifies in one go, as the relay does.
    fn authenticate(
        headers: &[&str],
        method: &str,
        uri: &str,
        content: Option<&Value>,
        keys: &impl KeyLookup,
    ) -> Result<Claimed, AuthError> {
        let claimed = parse_authorization(headers.iter().copied(), &relay())?;
        verify_claimed(&claimed, &relay(), method, uri, content, keys, AT)?;
        Ok(claimed)
    }

    #[test]
    fn vector_a_signs_and_verifies() {
        let object = request_json(
            "PUT",
            URI_A,
            "origin.example",
            "relay.example",
            Some(&content_a()),
        );
        assert_eq!(
            crate::canonical::to_canonical_string(&object).unwrap(),
            concat!(
                r#"{"content":{"edus":[],"origin":"origin.example","origin_server_ts":1,"pdus":[]},"#,
                r#""destination":"relay.example","method":"PUT","origin":"origin.example","#,
                r#""uri":"/_matrix/federation/v1/send_relay/txn1/@alice:dest.example"}"#
            )
        );
        let header = sign_request(
            &spec_key("1"),
            &name("origin.example"),
            &relay(),
            "PUT",
            URI_A,
            Some(&content_a()),
        )
        .unwrap();
        assert_eq!(header, header_a());
        let claimed =
            authenticate(&[&header], "PUT", URI_A, Some(&content_a()), &ring_a()).unwrap();
        assert_eq!(claimed.origin, name("origin.example"));
        assert_eq!(claimed.key_id, key_id("ed25519:1"));
        assert_eq!(claimed.sig, SIG_A);
    }

    #[test]
    fn vector_b_verifies_through_p2p_names() {
        let content = json!({"entry_id": 0});
        let key = spec_key("dendrite-demo-yggdrasil");
        assert_eq!(key.verify_key().to_hex(), P2P_NAME);
        let header = sign_request(
            &key,
            &name(P2P_NAME),
            &relay(),
            "GET",
            &uri_b(),
            Some(&content),
        )
        .unwrap();
        assert_eq!(
            header,
            format!(
                r#"X-Matrix origin="{P2P_NAME}",destination="relay.example",key="ed25519:dendrite-demo-yggdrasil",sig="{SIG_B}""#
            )
        );
        // Dendrite's own order of parameters.
        let dendrite = format!(
            r#"X-Matrix origin="{P2P_NAME}",key="ed25519:dendrite-demo-yggdrasil",sig="{SIG_B}",destination="relay.example""#
        );
        let p2p = KeyRing::with_p2p_names();
        let claimed = authenticate(&[&dendrite], "GET", &uri_b(), Some(&content), &p2p).unwrap();
        assert_eq!(claimed.origin, name(P2P_NAME));
        assert_eq!(
            authenticate(
                &[&dendrite],
                "GET",
                &uri_b(),
                Some(&content),
                &KeyRing::default()
            ),
            Err(AuthError::UnknownKey {
                origin: name(P2P_NAME),
                key_id: key_id("ed25519:dendrite-demo-yggdrasil"),
            })
        );
    }

    #[test]
    fn key_cache_is_bounded_and_expires() {
        let key = spec_key("1").verify_key();
        let fetched = |expires: u64| FetchedKeys {
            keys: HashMap::from([(key_id("ed25519:1"), key)]),
            expires: UnixMillis(AT.0 + expires),
        };
        let mut cache = KeyCache::default();
        for i in 0..MAX_FETCHED_SERVERS as u64 {
            // The first server expires soonest.
            cache.insert(name(&format!("s{i}.example")), fetched(1000 + i), AT);
        }
        let first = name("s0.example");
        assert_eq!(
            cache.verify_key(&first, &key_id("ed25519:1"), AT),
            Some(key)
        );
        cache.insert(name("new.example"), fetched(5000), AT);
        assert_eq!(cache.fetched.len(), MAX_FETCHED_SERVERS);
        assert_eq!(cache.verify_key(&first, &key_id("ed25519:1"), AT), None);
        let new = name("new.example");
        assert_eq!(cache.verify_key(&new, &key_id("ed25519:1"), AT), Some(key));
        let expired = UnixMillis(AT.0 + 5000);
        assert_eq!(cache.verify_key(&new, &key_id("ed25519:1"), expired), None);
    }

    #[test]
    fn key_ring_lookup_order() {
        let hex = name(P2P_NAME);
        let spec = spec_key("1").verify_key();
        let other = SigningKey::from_seed(key_id("ed25519:x"), [3; 32]).verify_key();
        let p2p = KeyRing::with_p2p_names();
        assert_eq!(
            p2p.verify_key(&hex, &key_id("ed25519:any_version"), AT),
            Some(spec)
        );
        assert_eq!(p2p.verify_key(&hex, &key_id("curve25519:1"), AT), None);
        assert_eq!(
            p2p.verify_key(&name(&P2P_NAME.to_uppercase()), &key_id("ed25519:1"), AT),
            None
        );
        assert_eq!(
            p2p.verify_key(&name("origin.example"), &key_id("ed25519:1"), AT),
            None
        );
        assert_eq!(
            KeyRing::default().verify_key(&hex, &key_id("ed25519:1"), AT),
            None
        );
        assert_eq!(
            KeyRing::default().verify_key(&hex, &key_id("ed25519:1"), AT),
            None
        );

        let mut pinned = KeyRing::with_p2p_names();
        pinned.pin(hex.clone(), key_id("ed25519:1"), other);
        assert_eq!(
            pinned.verify_key(&hex, &key_id("ed25519:1"), AT),
            Some(other)
        );
        assert_eq!(
            pinned.verify_key(&hex, &key_id("ed25519:2"), AT),
            Some(spec)
        );
        let ring = ring_a();
        assert_eq!(
            ring.verify_key(&name("origin.example"), &key_id("ed25519:1"), AT),
            Some(spec)
        );
        assert_eq!(
            ring.verify_key(&name("origin.example"), &key_id("ed25519:2"), AT),
            None
        );
        assert_eq!(
            ring.verify_key(&name("other.example"), &key_id("ed25519:1"), AT),
            None
        );
    }

    #[test]
    fn trusted_key_specs() {
        let spec = spec_key("1").verify_key();
        for ok in [
            format!("origin.example=ed25519:1:{SPEC_PUBLIC}"),
            format!("origin.example=ed25519:1:{SPEC_PUBLIC}="),
        ] {
            assert_eq!(
                KeyRing::parse_trusted(&ok),
                Ok((name("origin.example"), key_id("ed25519:1"), spec)),
                "{ok}"
            );
        }
        assert_eq!(
            KeyRing::parse_trusted(&format!("[::1]:8448=ed25519:a_B-c:{SPEC_PUBLIC}")),
            Ok((name("[::1]:8448"), key_id("ed25519:a_B-c"), spec))
        );
        for bad in [
            String::new(),
            format!("origin.example:ed25519:1:{SPEC_PUBLIC}"),
            format!("=ed25519:1:{SPEC_PUBLIC}"),
            format!("exa_mple=ed25519:1:{SPEC_PUBLIC}"),
            format!("origin.example=curve25519:1:{SPEC_PUBLIC}"),
            format!("origin.example=ed25519:{SPEC_PUBLIC}"),
            format!("origin.example=ed25519::{SPEC_PUBLIC}"),
            format!("origin.example=ed25519:a:b:{SPEC_PUBLIC}"),
            "origin.example=ed25519:1:Zm9v".to_owned(),
            "origin.example=ed25519:1:".to_owned(),
            "origin.example=ed25519:1:!!!".to_owned(),
        ] {
            assert_eq!(
                KeyRing::parse_trusted(&bad),
                Err(TrustedKeyError(bad.clone())),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_body_get_signs_without_content() {
        let object = request_json("GET", "/x?a=%41", "o.example", "relay.example", None);
        assert_eq!(
            crate::canonical::to_canonical_string(&object).unwrap(),
            r#"{"destination":"relay.example","method":"GET","origin":"o.example","uri":"/x?a=%41"}"#
        );
        let header = sign_request(
            &spec_key("1"),
            &name("origin.example"),
            &relay(),
            "GET",
            "/x?a=%41",
            None,
        )
        .unwrap();
        assert!(authenticate(&[&header], "GET", "/x?a=%41", None, &ring_a()).is_ok());
        // `content: {}` is a different object, and `uri` is never normalised.
        assert!(matches!(
            authenticate(&[&header], "GET", "/x?a=%41", Some(&json!({})), &ring_a()),
            Err(AuthError::BadSignature { .. })
        ));
        assert!(matches!(
            authenticate(&[&header], "GET", "/x?a=A", None, &ring_a()),
            Err(AuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn header_failures() {
        let content = content_a();
        let check =
            |headers: &[&str]| authenticate(headers, "PUT", URI_A, Some(&content), &ring_a());
        assert_eq!(check(&[]), Err(AuthError::Missing));
        assert_eq!(
            check(&["Bearer abc", "Basic Zm9v"]),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&[r#"X-Matrix origin="origin.example",key="ed25519:1""#]),
            Err(AuthError::Malformed(XMatrixError::Missing("sig")))
        );
        assert_eq!(
            check(&[r#"X-Matrix origin="o"#]),
            Err(AuthError::Malformed(XMatrixError::Syntax))
        );
        assert_eq!(
            check(&[&format!(
                r#"X-Matrix origin="exa_mple.org",key="ed25519:1",sig="{SIG_A}""#
            )]),
            Err(AuthError::BadOrigin)
        );
        assert_eq!(
            check(&[&format!(
                r#"X-Matrix origin="origin.example",key="ed25519",sig="{SIG_A}""#
            )]),
            Err(AuthError::BadKeyId)
        );
        assert_eq!(
            check(&[&format!(
                r#"X-Matrix origin="origin.example",destination="other.example",key="ed25519:1",sig="{SIG_A}""#
            )]),
            Err(AuthError::WrongDestination)
        );
        // Destination is compared case-sensitively, as server names are.
        assert_eq!(
            check(&[&format!(
                r#"X-Matrix origin="origin.example",destination="RELAY.example",key="ed25519:1",sig="{SIG_A}""#
            )]),
            Err(AuthError::WrongDestination)
        );
        // Without `destination`, the signed object still names us.
        assert!(
            check(&[&format!(
                r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{SIG_A}""#
            )])
            .is_ok()
        );
        // The first X-Matrix header counts; other schemes are skipped.
        assert!(check(&["Bearer abc", &header_a(), "X-Matrix broken"]).is_ok());
        assert_eq!(
            check(&["X-Matrix broken", &header_a()]),
            Err(AuthError::Malformed(XMatrixError::Syntax))
        );
    }

    #[test]
    fn verification_failures() {
        let content = content_a();
        let header = header_a();
        let origin = name("origin.example");
        let bad = |k: &str| AuthError::BadSignature {
            origin: origin.clone(),
            key_id: key_id(k),
        };
        let unknown = |o: &ServerName, k: &str| AuthError::UnknownKey {
            origin: o.clone(),
            key_id: key_id(k),
        };
        let ring = ring_a();

        let other_key =
            format!(r#"X-Matrix origin="origin.example",key="ed25519:2",sig="{SIG_A}""#);
        assert_eq!(
            authenticate(&[&other_key], "PUT", URI_A, Some(&content), &ring),
            Err(unknown(&origin, "ed25519:2"))
        );
        let other_origin =
            format!(r#"X-Matrix origin="other.example",key="ed25519:1",sig="{SIG_A}""#);
        assert_eq!(
            authenticate(&[&other_origin], "PUT", URI_A, Some(&content), &ring),
            Err(unknown(&name("other.example"), "ed25519:1"))
        );
        // Only ed25519 keys, even if something is pinned under another
        // algorithm.
        let mut odd = ring_a();
        odd.pin(
            origin.clone(),
            key_id("curve25519:1"),
            spec_key("1").verify_key(),
        );
        let curve = format!(r#"X-Matrix origin="origin.example",key="curve25519:1",sig="{SIG_A}""#);
        assert_eq!(
            authenticate(&[&curve], "PUT", URI_A, Some(&content), &odd),
            Err(unknown(&origin, "curve25519:1"))
        );

        let mut tampered = content.clone();
        tampered["origin_server_ts"] = json!(2);
        for (method, uri, body) in [
            ("POST", URI_A, Some(&content)),
            ("put", URI_A, Some(&content)),
            (
                "PUT",
                "/_matrix/federation/v1/send_relay/txn2/@alice:dest.example",
                Some(&content),
            ),
            (
                "PUT",
                "/_matrix/federation/v1/send_relay/txn1/%40alice%3Adest.example",
                Some(&content),
            ),
            ("PUT", URI_A, Some(&tampered)),
            ("PUT", URI_A, None),
        ] {
            assert_eq!(
                authenticate(&[&header], method, uri, body, &ring),
                Err(bad("ed25519:1")),
                "{method} {uri}"
            );
        }
        let mut float = content.clone();
        float["origin_server_ts"] = json!(1.5);
        assert_eq!(
            authenticate(&[&header], "PUT", URI_A, Some(&float), &ring),
            Err(bad("ed25519:1"))
        );

        let mut wrong_key = KeyRing::default();
        wrong_key.pin(
            origin.clone(),
            key_id("ed25519:1"),
            SigningKey::from_seed(key_id("ed25519:1"), [4; 32]).verify_key(),
        );
        assert_eq!(
            authenticate(&[&header], "PUT", URI_A, Some(&content), &wrong_key),
            Err(bad("ed25519:1"))
        );

        for sig in ["", "!!!not base64!!!", &SIG_A[..40], "Zm9v"] {
            let h = format!(r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{sig}""#);
            assert_eq!(
                authenticate(&[&h], "PUT", URI_A, Some(&content), &ring),
                Err(bad("ed25519:1")),
                "{sig:?}"
            );
        }
        // Padding on the signature is tolerated.
        let padded = format!(r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{SIG_A}==""#);
        assert!(authenticate(&[&padded], "PUT", URI_A, Some(&content), &ring).is_ok());
    }
}
