//! Server identities for signing requests, and `X-Matrix` signed requests.

use relay_core::auth::{request_json, sign_request};
use relay_core::signing::{SigningKey, sign_json};
use relay_core::{KeyId, ServerName};
use serde_json::Value;

use crate::http::Request;
use crate::rng::Rng;

/// The relay's server name in the tests.
pub const RELAY_NAME: &str = "relay.example";
/// The destination the standard relay serves.
pub const DEST_NAME: &str = "dest.example";
/// The origin of the spec's examples.
pub const ORIGIN_NAME: &str = "origin.example";
/// The spec's test seed (key ID `ed25519:1`), unpadded base64.
pub const SPEC_SEED_B64: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
/// The key version Dendrite's P2P demos sign with.
pub const P2P_KEY_VERSION: &str = "dendrite-demo-yggdrasil";

/// A Matrix server: its name and signing key.
#[derive(Debug, Clone)]
pub struct Server {
    name: String,
    key: SigningKey,
}

impl Server {
    /// A server called `name` signing with `key`. `name` need not be a
    /// valid server name (to test that the relay refuses it).
    pub fn new(name: &str, key: SigningKey) -> Self {
        Self {
            name: name.to_owned(),
            key,
        }
    }

    /// A server with key `ed25519:<version>` from `seed`.
    pub fn with_seed(name: &str, version: &str, seed: [u8; 32]) -> Self {
        let key_id = KeyId::ed25519(version).expect("test key version is valid");
        Self::new(name, SigningKey::from_seed(key_id, seed))
    }

    /// `name` with key `ed25519:1` from a seed derived from the name, so
    /// every test that says `Server::named("a.example")` gets the same key.
    pub fn named(name: &str) -> Self {
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Self::with_seed(name, "1", Rng::new(hash).seed32())
    }

    /// `origin.example` with the spec's test seed, key `ed25519:1`.
    pub fn origin_example() -> Self {
        Self::with_seed(ORIGIN_NAME, "1", spec_seed())
    }

    /// A peer-to-peer node: its name is the 64 lower-case hex characters of
    /// its public key, and it signs with `ed25519:dendrite-demo-yggdrasil`.
    pub fn p2p(seed: [u8; 32]) -> Self {
        let key_id = KeyId::ed25519(P2P_KEY_VERSION).expect("P2P key version is valid");
        let key = SigningKey::from_seed(key_id, seed);
        Self::new(&key.verify_key().to_hex(), key)
    }

    /// The same server name with another key (same key ID): a stranger
    /// pretending to be this server.
    pub fn impostor(&self, seed: [u8; 32]) -> Self {
        Self::new(
            &self.name,
            SigningKey::from_seed(self.key.key_id().clone(), seed),
        )
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The key ID, e.g. `ed25519:1`.
    pub fn key_id(&self) -> &str {
        self.key.key_id().as_str()
    }

    /// The public key, unpadded base64.
    pub fn public_key_base64(&self) -> String {
        self.key.verify_key().to_base64()
    }

    /// The `--trusted-key` value that pins this server's key:
    /// `NAME=ed25519:ID:BASE64`.
    pub fn trusted_key_arg(&self) -> String {
        format!(
            "{}={}:{}",
            self.name,
            self.key_id(),
            self.public_key_base64()
        )
    }

    /// A user ID on this server, `@<local>:<name>`.
    pub fn user(&self, local: &str) -> String {
        format!("@{local}:{}", self.name)
    }

    /// The `Authorization` header value for a request to `destination`,
    /// made with `relay_core::auth::sign_request`. `content` is `body`
    /// parsed as JSON when non-empty; a body that is not JSON is signed
    /// without content.
    pub fn authorization(
        &self,
        destination: &str,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> String {
        let content = parse_content(body);
        let origin = ServerName::parse(&self.name).unwrap_or_else(|e| {
            panic!(
                "{:?} is not a server name ({e}); use raw_authorization",
                self.name
            )
        });
        let destination = ServerName::parse(destination).unwrap_or_else(|e| {
            panic!("{destination:?} is not a server name ({e}); use raw_authorization")
        });
        sign_request(
            &self.key,
            &origin,
            &destination,
            method,
            target,
            content.as_ref(),
        )
        .unwrap_or_else(|e| panic!("signing {method} {target} failed: {e}"))
    }

    /// Like [`Server::authorization`], but over a body whose numbers
    /// canonical JSON cannot write (fractions, integers beyond 2^53), as
    /// most JSON libraries write them.
    pub fn lenient_authorization(
        &self,
        destination: &str,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> String {
        let content = parse_content(body);
        let object = request_json(method, target, &self.name, destination, content.as_ref());
        let text = relay_core::canonical::to_lenient_string(&object)
            .unwrap_or_else(|e| panic!("writing {method} {target} failed: {e}"));
        format!(
            r#"X-Matrix origin="{}",destination="{destination}",key="{}",sig="{}""#,
            self.name,
            self.key_id(),
            self.key.sign(text.as_bytes())
        )
    }

    /// Like [`Server::authorization`], for any origin and destination
    /// strings: signs `{method, uri, origin, destination, content?}` with
    /// the Signing JSON algorithm and writes the header itself, with the
    /// given `origin` and `destination` (`None`: no destination parameter).
    pub fn raw_authorization(
        &self,
        origin: &str,
        destination: Option<&str>,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> String {
        let content = parse_content(body);
        let signed_dest = destination.unwrap_or(RELAY_NAME);
        let mut object = request_json(method, target, origin, signed_dest, content.as_ref());
        sign_json(origin, &self.key, &mut object)
            .unwrap_or_else(|e| panic!("signing {method} {target} failed: {e}"));
        let sig = object["signatures"][origin][self.key_id()]
            .as_str()
            .expect("sign_json wrote a signature")
            .to_owned();
        match destination {
            Some(d) => format!(
                r#"X-Matrix origin="{origin}",destination="{d}",key="{}",sig="{sig}""#,
                self.key_id()
            ),
            None => format!(
                r#"X-Matrix origin="{origin}",key="{}",sig="{sig}""#,
                self.key_id()
            ),
        }
    }
}

/// The spec's test seed as bytes.
pub fn spec_seed() -> [u8; 32] {
    relay_core::b64::decode(SPEC_SEED_B64)
        .expect("spec seed is base64")
        .try_into()
        .expect("spec seed is 32 bytes")
}

fn parse_content(body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        None
    } else {
        serde_json::from_slice(body).ok()
    }
}

/// A request from `server` to `destination`, signed over `method`, the raw
/// `target` and the body (as [`Server::authorization`] does), with
/// `Content-Type: application/json` when there is a body.
pub fn signed_request(
    server: &Server,
    destination: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> Request {
    let mut req = Request::new(method, target)
        .header(
            "Authorization",
            &server.authorization(destination, method, target, body),
        )
        .body(body);
    if !body.is_empty() {
        req = req.header("Content-Type", "application/json");
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_servers_are_stable_and_distinct() {
        let a = Server::named("a.example");
        assert_eq!(
            a.public_key_base64(),
            Server::named("a.example").public_key_base64()
        );
        assert_ne!(
            a.public_key_base64(),
            Server::named("b.example").public_key_base64()
        );
        assert_eq!(a.key_id(), "ed25519:1");
        let arg = a.trusted_key_arg();
        assert!(arg.starts_with("a.example=ed25519:1:"), "{arg}");
    }

    /// Vector A of the reference: both signing paths give its signature.
    #[test]
    fn signs_reference_vector_a() {
        let body = br#"{"origin":"origin.example","origin_server_ts":1,"pdus":[],"edus":[]}"#;
        let uri = "/_matrix/federation/v1/send_relay/txn1/@alice:dest.example";
        let expected = r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="STBA1xu0p9jKYatO5IAB/Um7OEkoMewBqfy6Anp5JbAOubPnQvKeAl3yn0wEw0IMPo5QVBTzKVOaFZxsV78FBA""#;
        let origin = Server::origin_example();
        assert_eq!(origin.authorization(RELAY_NAME, "PUT", uri, body), expected);
        assert_eq!(
            origin.raw_authorization(ORIGIN_NAME, Some(RELAY_NAME), "PUT", uri, body),
            expected
        );
    }

    /// Vector B of the reference (P2P GET with a body).
    #[test]
    fn signs_reference_vector_b() {
        let node = Server::p2p(spec_seed());
        let uri = format!("/_matrix/federation/v1/relay_txn/@alice:{}", node.name());
        let header = node.authorization(RELAY_NAME, "GET", &uri, br#"{"entry_id":0}"#);
        assert!(
            header.ends_with(r#"sig="gE/9/hruZZSqaGhXDxFlZ+r/Wa2Q1JlNkE5aZ0nGABBrAQcd1ZhExBXiTcnEK+wbW9jXtpIPhl/o8tLwCZx0CA""#),
            "{header}"
        );
    }

    #[test]
    fn p2p_names_are_the_public_key_in_hex() {
        let node = Server::p2p(spec_seed());
        assert_eq!(node.name().len(), 64);
        // The reference gives this name abbreviated as 5c65f425…c91c24d2.
        assert!(node.name().starts_with("5c65f425"), "{}", node.name());
        assert!(node.name().ends_with("c91c24d2"), "{}", node.name());
        assert_eq!(node.key_id(), "ed25519:dendrite-demo-yggdrasil");
    }
}
