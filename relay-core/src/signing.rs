//! ed25519 signing keys (Synapse's key-file format) and signed JSON.

use ed25519_dalek::Signer as _;
use serde_json::{Map, Value};

use crate::b64;
use crate::canonical::{CanonicalJsonError, to_canonical_string_for_signing};
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
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .ok_or(KeyFileError::Format)?;
        let mut fields = line.split_whitespace();
        let (Some(alg), Some(version), Some(seed), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(KeyFileError::Format);
        };
        if alg != "ed25519" {
            return Err(KeyFileError::Format);
        }
        let key_id = KeyId::ed25519(version).map_err(|_| KeyFileError::Format)?;
        let seed = b64::decode(seed).map_err(|_| KeyFileError::Seed)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyFileError::Seed)?;
        Ok(Self::from_seed(key_id, seed))
    }

    /// This key as a Synapse key-file line, newline included.
    pub fn to_synapse_line(&self) -> String {
        format!(
            "ed25519 {} {}\n",
            self.key_id.version(),
            b64::encode(self.inner.as_bytes())
        )
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
        b64::encode(&self.inner.sign(message).to_bytes())
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
        b64::decode(s).ok()?.try_into().ok().map(Self)
    }

    /// Unpadded base64.
    pub fn to_base64(&self) -> String {
        b64::encode(&self.0)
    }

    /// 64 lower-case hex characters: the key as a P2P server name.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.0
            .iter()
            .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
            .map(char::from)
            .collect()
    }

    /// Checks `sig_b64` over `message` (strict verification).
    ///
    /// Implementation note: `verify_strict` rejects small-order keys and
    /// malleable signatures, as libsodium does. A key that is not a curve
    /// point verifies nothing, so it gives [`VerifyError::Mismatch`].
    pub fn verify(&self, message: &[u8], sig_b64: &str) -> Result<(), VerifyError> {
        let sig = b64::decode(sig_b64).map_err(|_| VerifyError::Malformed)?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| VerifyError::Malformed)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| VerifyError::Mismatch)?;
        key.verify_strict(message, &sig)
            .map_err(|_| VerifyError::Mismatch)
    }
}

/// Signs `value` (an object) as `entity` with the Signing JSON algorithm,
/// keeping existing signatures.
///
/// The signature goes to `signatures[entity][key_id]`; `unsigned` stays
/// where it is and is not signed. On error `value` is left unchanged.
pub fn sign_json(
    entity: &str,
    key: &SigningKey,
    value: &mut Value,
) -> Result<(), CanonicalJsonError> {
    if !value.is_object() {
        return Err(CanonicalJsonError::NotAnObject);
    }
    let signed = to_canonical_string_for_signing(value)?;
    let sig = key.sign(signed.as_bytes());
    let Value::Object(object) = value else {
        return Err(CanonicalJsonError::NotAnObject);
    };
    let Value::Object(signatures) = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
    else {
        return Err(CanonicalJsonError::NotAnObject);
    };
    let Value::Object(by_entity) = signatures
        .entry(entity)
        .or_insert_with(|| Value::Object(Map::new()))
    else {
        return Err(CanonicalJsonError::NotAnObject);
    };
    by_entity.insert(key.key_id().as_str().to_owned(), Value::String(sig));
    Ok(())
}

/// Checks `entity`'s signature with `key_id` on `value`.
pub fn verify_json(
    entity: &str,
    key_id: &KeyId,
    key: &VerifyKey,
    value: &Value,
) -> Result<(), VerifyError> {
    verify_json_by_any(entity, [(key_id, key)], value)
}

/// Checks `entity`'s signatures on `value` by each of `keys` in turn, until
/// one verifies. The error is the last key's: [`VerifyError::Missing`] if
/// none of them signed.
///
/// Implementation note: the signing form is computed once, and only when a
/// signature is there to check, so the work is one canonicalisation of
/// `value` plus one signature check per key, however many keys there are.
pub fn verify_json_by_any<'k>(
    entity: &str,
    keys: impl IntoIterator<Item = (&'k KeyId, &'k VerifyKey)>,
    value: &Value,
) -> Result<(), VerifyError> {
    let signatures = value.get("signatures").and_then(|s| s.get(entity));
    let mut signed: Option<String> = None;
    let mut last = VerifyError::Missing;
    for (key_id, key) in keys {
        let Some(sig) = signatures.and_then(|s| s.get(key_id.as_str())) else {
            continue;
        };
        let Some(sig) = sig.as_str() else {
            last = VerifyError::Malformed;
            continue;
        };
        let signed = match &signed {
            Some(signed) => signed,
            None => signed.insert(to_canonical_string_for_signing(value)?),
        };
        match key.verify(signed.as_bytes(), sig) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
    const SPEC_PUBLIC: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";
    const SPEC_PUBLIC_HEX: &str =
        "5c65f42514b601fddb7b7927cf67c18916c0a639b60e1eb58170c903c91c24d2";

    fn spec_key() -> SigningKey {
        SigningKey::parse_synapse(&format!("ed25519 1 {SPEC_SEED}")).unwrap()
    }

    fn key_id(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    #[test]
    fn spec_key_derives_the_known_public_key() {
        let key = spec_key();
        assert_eq!(key.key_id().as_str(), "ed25519:1");
        assert_eq!(key.verify_key().to_base64(), SPEC_PUBLIC);
        assert_eq!(key.verify_key().to_hex(), SPEC_PUBLIC_HEX);
        assert_eq!(VerifyKey::from_base64(SPEC_PUBLIC), Some(key.verify_key()));
        assert_eq!(
            VerifyKey::from_base64(&format!("{SPEC_PUBLIC}=")),
            Some(key.verify_key())
        );
        assert_eq!(VerifyKey::from_base64("Zm9v"), None);
        assert_eq!(VerifyKey::from_base64("not base64!"), None);
    }

    #[test]
    fn spec_signing_vectors() {
        let vectors = [
            (
                json!({}),
                r#"{"signatures":{"domain":{"ed25519:1":"K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}}"#,
            ),
            (
                json!({"one": 1, "two": "Two"}),
                r#"{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}"#,
            ),
        ];
        let key = spec_key();
        for (mut value, expected) in vectors {
            sign_json("domain", &key, &mut value).unwrap();
            assert_eq!(
                crate::canonical::to_canonical_string(&value).unwrap(),
                expected
            );
            let expected: Value = serde_json::from_str(expected).unwrap();
            verify_json("domain", &key_id("ed25519:1"), &key.verify_key(), &expected).unwrap();
        }
    }

    #[test]
    fn verify_json_failures() {
        let key = spec_key();
        let mut value = json!({"one": 1, "two": "Two"});
        sign_json("domain", &key, &mut value).unwrap();
        let vk = key.verify_key();
        let k1 = key_id("ed25519:1");

        let mut tampered = value.clone();
        tampered["one"] = json!(2);
        assert_eq!(
            verify_json("domain", &k1, &vk, &tampered),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_json("other", &k1, &vk, &value),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify_json("domain", &key_id("ed25519:2"), &vk, &value),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify_json("domain", &k1, &vk, &json!({"one": 1})),
            Err(VerifyError::Missing)
        );
        let other_key = SigningKey::from_seed(k1.clone(), [7; 32]).verify_key();
        assert_eq!(
            verify_json("domain", &k1, &other_key, &value),
            Err(VerifyError::Mismatch)
        );

        for bad_sig in [json!("!!!"), json!("Zm9v"), json!(7)] {
            let mut v = value.clone();
            v["signatures"]["domain"]["ed25519:1"] = bad_sig;
            assert_eq!(
                verify_json("domain", &k1, &vk, &v),
                Err(VerifyError::Malformed)
            );
        }
        let mut float = value.clone();
        float["one"] = json!(1.5);
        assert!(matches!(
            verify_json("domain", &k1, &vk, &float),
            Err(VerifyError::Canonical(CanonicalJsonError::BadNumber(_)))
        ));
    }

    #[test]
    fn verify_json_by_any_key() {
        let key = spec_key();
        let mut value = json!({"one": 1});
        sign_json("domain", &key, &mut value).unwrap();
        let good = (key_id("ed25519:1"), key.verify_key());
        let other = (
            key_id("ed25519:2"),
            SigningKey::from_seed(key_id("ed25519:2"), [7; 32]).verify_key(),
        );
        let unsigned = (key_id("ed25519:3"), other.1);
        let check = |keys: &[&(KeyId, VerifyKey)], value: &Value| {
            verify_json_by_any("domain", keys.iter().map(|(id, k)| (id, k)), value)
        };
        assert_eq!(check(&[&unsigned, &good], &value), Ok(()));
        assert_eq!(check(&[&unsigned], &value), Err(VerifyError::Missing));
        assert_eq!(check(&[], &value), Err(VerifyError::Missing));
        // A signature under another key's ID does not verify with this key.
        value["signatures"]["domain"]["ed25519:2"] =
            value["signatures"]["domain"]["ed25519:1"].clone();
        assert_eq!(check(&[&other], &value), Err(VerifyError::Mismatch));
        assert_eq!(check(&[&other, &good], &value), Ok(()));
        assert_eq!(check(&[&good, &other], &value), Ok(()));
    }

    #[test]
    fn sign_json_keeps_signatures_and_unsigned() {
        let key = spec_key();
        let second = SigningKey::from_seed(key_id("ed25519:2"), [9; 32]);
        let mut value = json!({"a": 1, "unsigned": {"age": 5}});
        sign_json("domain", &key, &mut value).unwrap();
        sign_json("domain", &second, &mut value).unwrap();
        sign_json("other", &key, &mut value).unwrap();
        assert_eq!(value["unsigned"], json!({"age": 5}));
        assert_eq!(value["signatures"]["domain"].as_object().unwrap().len(), 2);
        // Neither `unsigned` nor earlier signatures are signed.
        let plain_sig = {
            let mut plain = json!({"a": 1});
            sign_json("domain", &key, &mut plain).unwrap();
            plain["signatures"]["domain"]["ed25519:1"].clone()
        };
        assert_eq!(value["signatures"]["domain"]["ed25519:1"], plain_sig);
        assert_eq!(value["signatures"]["other"]["ed25519:1"], plain_sig);
        value["unsigned"] = json!({"age": 6});
        verify_json("domain", &key_id("ed25519:1"), &key.verify_key(), &value).unwrap();
        verify_json("domain", &key_id("ed25519:2"), &second.verify_key(), &value).unwrap();
    }

    #[test]
    fn sign_json_needs_an_object() {
        let key = spec_key();
        for bad in [
            json!([1]),
            json!("x"),
            json!({"signatures": 1}),
            json!({"signatures": {"domain": []}}),
        ] {
            let mut value = bad.clone();
            assert_eq!(
                sign_json("domain", &key, &mut value),
                Err(CanonicalJsonError::NotAnObject)
            );
            assert_eq!(value, bad, "left unchanged");
        }
        let mut float = json!({"a": 0.5});
        assert!(matches!(
            sign_json("domain", &key, &mut float),
            Err(CanonicalJsonError::BadNumber(_))
        ));
        assert_eq!(float, json!({"a": 0.5}));
    }

    #[test]
    fn verify_is_strict() {
        // The identity point as key, with R = identity and S = 0, passes
        // plain ed25519 verification for every message; strict rejects it.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let sig = crate::b64::encode(&sig);
        assert_eq!(
            VerifyKey(weak).verify(b"anything", &sig),
            Err(VerifyError::Mismatch)
        );
        let key = spec_key();
        let good = key.sign(b"msg");
        assert_eq!(key.verify_key().verify(b"msg", &good), Ok(()));
        assert_eq!(
            key.verify_key().verify(b"msh", &good),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            key.verify_key().verify(b"msg", &good[..40]),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn synapse_key_files() {
        let key = SigningKey::parse_synapse(&format!(
            "\n  \n\ted25519   a_AbCd\t{SPEC_SEED}=\r\nignored line\n"
        ))
        .unwrap();
        assert_eq!(key.key_id().as_str(), "ed25519:a_AbCd");
        assert_eq!(key.verify_key().to_base64(), SPEC_PUBLIC);
        // The canonical encoding clears the seed's non-zero trailing bits.
        let line = spec_key().to_synapse_line();
        assert_eq!(
            line,
            "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0\n"
        );
        let again = SigningKey::parse_synapse(&line).unwrap();
        assert_eq!(again.verify_key(), spec_key().verify_key());
        assert_eq!(again.key_id(), spec_key().key_id());

        for (bad, err) in [
            ("", KeyFileError::Format),
            ("\n \n", KeyFileError::Format),
            (SPEC_SEED, KeyFileError::Format),
            ("ed25519 1", KeyFileError::Format),
            ("ed25519 1 AAAA extra", KeyFileError::Format),
            ("ed448 1 AAAA", KeyFileError::Format),
            ("ED25519 1 AAAA", KeyFileError::Format),
            ("ed25519 a\"b AAAA", KeyFileError::Format),
            ("ed25519 1 not-base64!", KeyFileError::Seed),
            ("ed25519 1 Zm9v", KeyFileError::Seed),
        ] {
            assert_eq!(SigningKey::parse_synapse(bad).unwrap_err(), err, "{bad:?}");
        }
    }

    #[test]
    fn debug_does_not_show_the_seed() {
        let debug = format!("{:?}", spec_key());
        assert!(debug.contains(SPEC_PUBLIC), "{debug}");
        assert!(!debug.contains("YJDBA9"), "{debug}");
    }
}
