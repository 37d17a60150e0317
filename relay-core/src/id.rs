//! Identifiers, validated on construction.
//!
//! Grammars follow the Matrix appendices; see `id` tests for the edge cases.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest user ID the relay accepts, in bytes, `@` and server name included.
pub const MAX_USER_ID_BYTES: usize = 255;
/// Longest server name accepted, in bytes (a 255-byte host plus `:65535`).
pub const MAX_SERVER_NAME_BYTES: usize = 261;
/// Longest transaction ID accepted, in bytes.
pub const MAX_TXN_ID_BYTES: usize = 255;
/// Longest key ID accepted, in bytes.
pub const MAX_KEY_ID_BYTES: usize = 255;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a server name (`hostname[:port]`).
    #[error("invalid server name")]
    ServerName,
    /// Not a user ID (`@localpart:server_name`).
    #[error("invalid user ID")]
    UserId,
    /// Empty or too long transaction ID, or one with a control character.
    #[error("invalid transaction ID")]
    TxnId,
    /// Not `algorithm:version`.
    #[error("invalid key ID")]
    KeyId,
}

/// A Matrix server name: `hostname [":" port]`. Compared case-sensitively.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerName(String);

impl ServerName {
    /// Validates `s` against the server-name grammar.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if is_server_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::ServerName)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-byte public key a peer-to-peer name spells: exactly 64
    /// lower-case hex characters, as Dendrite's Pinecone nodes use.
    pub fn p2p_public_key(&self) -> Option<[u8; 32]> {
        let b = self.0.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (lower_hex(pair[0])? << 4) | lower_hex(pair[1])?;
        }
        Some(out)
    }
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn is_server_name(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_SERVER_NAME_BYTES {
        return false;
    }
    let Some((host, _port)) = split_host_port(s) else {
        return false;
    };
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        return (2..=45).contains(&inner.len()) && inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Splits `host[:port]` at its port, an IPv6 host keeping its brackets:
/// `[::1]:80` is `("[::1]", Some(80))`, `example.org` is
/// `("example.org", None)`. `None` if the port is not 1 to 5 digits of a
/// `u16`, or a `[` has no `]` followed by nothing or `:port`. The host
/// itself is not checked.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')? + 1;
        match &s[end..] {
            "" => (s, None),
            after => (&s[..end], Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        // `parse` alone would take a sign.
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

/// `host` without the brackets of an IPv6 literal.
pub fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ServerName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        if is_server_name(&s) {
            Ok(Self(s))
        } else {
            Err(IdError::ServerName)
        }
    }
}

impl From<ServerName> for String {
    fn from(s: ServerName) -> String {
        s.0
    }
}

/// A user ID `@localpart:server_name`, whose server name is a relay
/// destination.
///
/// Implementation note: the localpart may be any non-empty printable ASCII
/// without `:` (a superset of the strict grammar that still excludes the
/// historical non-compliant forms), and the whole ID is at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId {
    full: String,
    colon: usize,
}

impl UserId {
    /// Validates `s` as a user ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() > MAX_USER_ID_BYTES {
            return Err(IdError::UserId);
        }
        let rest = s.strip_prefix('@').ok_or(IdError::UserId)?;
        let colon = rest.find(':').ok_or(IdError::UserId)?;
        let (local, server) = (&rest[..colon], &rest[colon + 1..]);
        if local.is_empty() || !local.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(IdError::UserId);
        }
        if !is_server_name(server) {
            return Err(IdError::UserId);
        }
        Ok(Self {
            full: s.to_owned(),
            colon: colon + 1,
        })
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The localpart, without `@`.
    pub fn localpart(&self) -> &str {
        &self.full[1..self.colon]
    }

    /// The server name: the destination this user's transactions go to.
    pub fn server_name(&self) -> ServerName {
        ServerName(self.full[self.colon + 1..].to_owned())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A sender's transaction ID: opaque, non-empty, at most
/// [`MAX_TXN_ID_BYTES`] bytes, without control characters (a NUL cannot be
/// stored as PostgreSQL text, and none belongs in an ID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TxnId(String);

impl TxnId {
    /// Validates `s` as a transaction ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::try_from(s.to_owned())
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TxnId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > MAX_TXN_ID_BYTES || s.chars().any(char::is_control) {
            Err(IdError::TxnId)
        } else {
            Ok(Self(s))
        }
    }
}

impl From<TxnId> for String {
    fn from(s: TxnId) -> String {
        s.0
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A queue entry's ID on one relay. Entry IDs are positive; `0` on the wire
/// means "acknowledge nothing".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub u64);

/// A signing key ID, `algorithm:version` (e.g. `ed25519:1`).
///
/// Implementation note: the spec limits the version to `[a-zA-Z0-9_]`, but
/// Dendrite's P2P nodes use `ed25519:dendrite-demo-yggdrasil` and Synapse
/// keeps non-compliant versions, so any version of visible ASCII other than
/// `"`, `\` and `,` is accepted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Validates `s` as a key ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::try_from(s.to_owned())
    }

    /// An `ed25519:<version>` key ID.
    pub fn ed25519(version: &str) -> Result<Self, IdError> {
        Self::parse(&format!("ed25519:{version}"))
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `:`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    /// The part after `:`.
    pub fn version(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, v)| v)
    }
}

impl TryFrom<String> for KeyId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        let Some((alg, ver)) = s.split_once(':') else {
            return Err(IdError::KeyId);
        };
        let alg_ok = !alg.is_empty() && alg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let ver_ok = !ver.is_empty()
            && ver
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\\' | b','));
        if alg_ok && ver_ok && s.len() <= MAX_KEY_ID_BYTES {
            Ok(Self(s))
        } else {
            Err(IdError::KeyId)
        }
    }
}

impl From<KeyId> for String {
    fn from(s: KeyId) -> String {
        s.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in [
            "matrix.org",
            "matrix.org:8888",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[1234:5678::abcd]",
            "[1234:5678::abcd]:5678",
            "MATRIX.ORG",
            "localhost:65535",
            &"a".repeat(64),
        ] {
            assert!(ServerName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "[::1",
            "exa_mple.org",
            ":99999",
            "host:99999",
            "host:",
            "host:12a",
            "[::1]x",
            "[zz]",
            "a b",
            "h\u{e9}",
            &"a".repeat(256),
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn host_and_port() {
        for (s, want) in [
            ("example.org", Some(("example.org", None))),
            ("example.org:8448", Some(("example.org", Some(8448)))),
            ("1.2.3.4:0", Some(("1.2.3.4", Some(0)))),
            ("[::1]", Some(("[::1]", None))),
            ("[::1]:443", Some(("[::1]", Some(443)))),
            // The host is not checked.
            ("::1:80", Some(("::1", Some(80)))),
            (":80", Some(("", Some(80)))),
            ("host:", None),
            ("host:+80", None),
            ("host:65536", None),
            ("host:000080", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("[::1", None),
        ] {
            assert_eq!(split_host_port(s), want, "{s:?}");
        }
        assert_eq!(unbracketed("[::1]"), "::1");
        assert_eq!(unbracketed("::1"), "::1");
        assert_eq!(unbracketed("example.org"), "example.org");
    }

    #[test]
    fn p2p_key_needs_64_lower_hex() {
        let hex = "5c65f42514b601fddb7b7927cf67c18916c0a639b60e1eb58170c903c91c24d2";
        let key = ServerName::parse(hex).unwrap().p2p_public_key().unwrap();
        assert_eq!(key[0], 0x5c);
        assert_eq!(key[31], 0xd2);
        let upper = hex.to_uppercase();
        assert!(
            ServerName::parse(&upper)
                .unwrap()
                .p2p_public_key()
                .is_none()
        );
        assert!(
            ServerName::parse(&hex[1..])
                .unwrap()
                .p2p_public_key()
                .is_none()
        );
    }

    #[test]
    fn user_ids() {
        let u = UserId::parse("@alice:dest.example:8448").unwrap();
        assert_eq!(u.localpart(), "alice");
        assert_eq!(u.server_name().as_str(), "dest.example:8448");
        assert!(UserId::parse("@a+b/=._-:x").is_ok());
        for bad in [
            "alice:x",
            "@:x",
            "@alice",
            "@al ice:x",
            "@alice:",
            "@alice:ex_ample",
            "@\u{e9}:x",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        let long = format!("@{}:x", "a".repeat(252));
        assert_eq!(long.len(), 255);
        assert!(UserId::parse(&long).is_ok());
        let too_long = format!("@{}:x", "a".repeat(253));
        assert!(UserId::parse(&too_long).is_err());
    }

    #[test]
    fn txn_and_key_ids() {
        assert!(TxnId::parse("").is_err());
        assert!(TxnId::parse(&"t".repeat(256)).is_err());
        assert!(TxnId::parse("m1234.5").is_ok());
        assert!(TxnId::parse("ünïcode ok").is_ok());
        for bad in ["a\0b", "a\nb", "\t", "a\u{7f}", "a\u{85}"] {
            assert!(TxnId::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        let k = KeyId::parse("ed25519:dendrite-demo-yggdrasil").unwrap();
        assert_eq!(k.algorithm(), "ed25519");
        assert_eq!(k.version(), "dendrite-demo-yggdrasil");
        for bad in ["ed25519", "ed25519:", ":1", "ed25519:a b", "ed25519:a\"b"] {
            assert!(KeyId::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
