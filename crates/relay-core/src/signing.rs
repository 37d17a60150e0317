//! ed25519 signing keys (Synapse's key-file format) and signed JSON.

use serde_json::Value;

use crate::canonical::CanonicalJsonError;
use crate::id::KeyId;

/// A key file line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Not `ed25519 <version> <seed>`.
    #[error("expected a line `ed25519 <version> <unpadded base64 seed>`")]
    Format,
    /// The seed is not 32 bytes of base64.
    #[error("the seed is not 32 bytes of base64")]
    Seed,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature by that entity and key.
    #[error("no signature by that server and key")]
    Missing,
    /// The signature is not base64 of 64 bytes.
    #[error("malformed signature")]
    Malformed,
    /// The signature does not match.
    #[error("signature does not match")]
    Mismatch,
    /// The object has no canonical form.
    #[error(transparent)]
    Canonical(#[from] CanonicalJsonError),
}

/// A server's ed25519 signing key with its key ID.
#[derive(Clone)]
pub struct SigningKey {
    key_id: KeyId,
    inner: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("public", &self.verify_key())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> Self {
        Self {
            key_id,
            inner: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// Reads the first non-empty line of a Synapse key file.
    pub fn parse_synapse(text: &str) -> Result<Self, KeyFileError> {
        todo!("{text}")
    }

    /// This key as a Synapse key-file line, newline included.
    pub fn to_synapse_line(&self) -> String {
        todo!()
    }

    /// The key ID.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The public half.
    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey(self.inner.verifying_key().to_bytes())
    }

    /// Signs `message`; the unpadded base64 signature.
    pub fn sign(&self, message: &[u8]) -> String {
        todo!("{message:?}")
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyKey(pub [u8; 32]);

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyKey({})", self.to_base64())
    }
}

impl VerifyKey {
    /// From unpadded (or padded) base64.
    pub fn from_base64(s: &str) -> Option<Self> {
        todo!("{s}")
    }

    /// Unpadded base64.
    pub fn to_base64(&self) -> String {
        todo!()
    }

    /// 64 lower-case hex characters: the key as a P2P server name.
    pub fn to_hex(&self) -> String {
        todo!()
    }

    /// Checks `sig_b64` over `message` (strict verification).
    pub fn verify(&self, message: &[u8], sig_b64: &str) -> Result<(), VerifyError> {
        todo!("{message:?}{sig_b64}")
    }
}

/// Signs `value` (an object) as `entity` with the Signing JSON algorithm,
/// keeping existing signatures.
pub fn sign_json(entity: &str, key: &SigningKey, value: &mut Value) -> Result<(), CanonicalJsonError> {
    todo!("{entity}{key:?}{value}")
}

/// Checks `entity`'s signature with `key_id` on `value`.
pub fn verify_json(entity: &str, key_id: &KeyId, key: &VerifyKey, value: &Value) -> Result<(), VerifyError> {
    todo!("{entity}{key_id}{key:?}{value}")
}
