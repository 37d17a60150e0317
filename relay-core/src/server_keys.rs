//! Server key documents (`GET /_matrix/key/v2/server`): publishing our own,
//! and checking one fetched from another server.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::canonical::CanonicalJsonError;
use crate::id::{KeyId, ServerName};
use crate::signing::{SigningKey, VerifyKey, sign_json, verify_json_by_any};
use crate::time::UnixMillis;

/// Longest a fetched key is trusted, whatever `valid_until_ts` says (a spec
/// MUST).
pub const MAX_KEY_CACHE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Largest fetched key document read, in bytes: a server publishes one or
/// two keys in well under a kilobyte.
pub const MAX_KEY_DOCUMENT_BYTES: usize = 64 * 1024;

/// Most `verify_keys` a fetched document may list; one listing more is
/// refused.
pub const MAX_VERIFY_KEYS: usize = 32;

/// The key document of `server_name`, signed with `key`, valid until
/// `valid_until`.
pub fn document(
    server_name: &ServerName,
    key: &SigningKey,
    valid_until: UnixMillis,
) -> Result<Value, CanonicalJsonError> {
    let mut verify_keys = Map::new();
    verify_keys.insert(
        key.key_id().as_str().to_owned(),
        json!({"key": key.verify_key().to_base64()}),
    );
    let mut doc = json!({
        "server_name": server_name.as_str(),
        "verify_keys": verify_keys,
        "old_verify_keys": {},
        "valid_until_ts": valid_until.0,
    });
    sign_json(server_name.as_str(), key, &mut doc)?;
    Ok(doc)
}

/// The current keys of a server, from a checked document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKeys {
    /// Its `verify_keys`.
    pub keys: HashMap<KeyId, VerifyKey>,
    /// Trusted until then: the earlier of `valid_until_ts` and 7 days after
    /// the fetch.
    pub expires: UnixMillis,
}

/// Why a fetched key document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDocError {
    /// Not a JSON object of the spec's shape.
    #[error("not a server key document: {0}")]
    Shape(&'static str),
    /// `server_name` is another server.
    #[error("the document is for {0}, not the server asked")]
    WrongServer(String),
    /// No `ed25519` key in `verify_keys` signed the document.
    #[error("the document is not signed by any of its own ed25519 keys")]
    NotSelfSigned,
    /// `valid_until_ts` is in the past.
    #[error("the document expired")]
    Expired,
    /// Over [`MAX_KEY_DOCUMENT_BYTES`].
    #[error("the document is over {MAX_KEY_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// Over [`MAX_VERIFY_KEYS`] keys in `verify_keys`.
    #[error("the document lists more than {MAX_VERIFY_KEYS} keys")]
    TooManyKeys,
}

/// Checks a key document fetched from `server` at `now`: its size, its
/// `server_name`, its self-signature by one of its `verify_keys`, and its
/// validity. Keys with other algorithms are ignored.
///
/// Implementation note: the cost is bounded by the document, not by what
/// it claims: at most [`MAX_KEY_DOCUMENT_BYTES`] are parsed, at most
/// [`MAX_VERIFY_KEYS`] keys are considered, the document is canonicalised
/// once and each key's signature checked once.
pub fn check_document(
    body: &[u8],
    server: &ServerName,
    now: UnixMillis,
) -> Result<FetchedKeys, KeyDocError> {
    if body.len() > MAX_KEY_DOCUMENT_BYTES {
        return Err(KeyDocError::TooLarge);
    }
    let doc: Value = serde_json::from_slice(body).map_err(|_| KeyDocError::Shape("not JSON"))?;
    let name = doc
        .get("server_name")
        .and_then(Value::as_str)
        .ok_or(KeyDocError::Shape("no server_name"))?;
    if name != server.as_str() {
        return Err(KeyDocError::WrongServer(name.to_owned()));
    }
    let valid_until = doc
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .ok_or(KeyDocError::Shape("no valid_until_ts"))?;
    if valid_until <= now.0 {
        return Err(KeyDocError::Expired);
    }
    let listed = doc
        .get("verify_keys")
        .and_then(Value::as_object)
        .ok_or(KeyDocError::Shape("no verify_keys"))?;
    if listed.len() > MAX_VERIFY_KEYS {
        return Err(KeyDocError::TooManyKeys);
    }
    let mut keys = HashMap::new();
    for (id, entry) in listed {
        let Ok(key_id) = KeyId::parse(id) else {
            continue;
        };
        if key_id.algorithm() != "ed25519" {
            continue;
        }
        if let Some(key) = entry
            .get("key")
            .and_then(Value::as_str)
            .and_then(VerifyKey::from_base64)
        {
            keys.insert(key_id, key);
        }
    }
    verify_json_by_any(server.as_str(), &keys, &doc).map_err(|_| KeyDocError::NotSelfSigned)?;
    Ok(FetchedKeys {
        keys,
        expires: UnixMillis(valid_until.min(now.0.saturating_add(MAX_KEY_CACHE_MS))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn server() -> (ServerName, SigningKey) {
        let key = SigningKey::from_seed(KeyId::parse("ed25519:a").unwrap(), [4; 32]);
        (ServerName::parse("keys.example").unwrap(), key)
    }

    #[test]
    fn round_trip_and_cache_limit() {
        let (name, key) = server();
        let far = NOW.saturating_add_ms(30 * MAX_KEY_CACHE_MS);
        let doc = document(&name, &key, far).unwrap().to_string();
        let fetched = check_document(doc.as_bytes(), &name, NOW).unwrap();
        assert_eq!(fetched.keys[key.key_id()], key.verify_key());
        assert_eq!(
            fetched.expires,
            NOW.saturating_add_ms(MAX_KEY_CACHE_MS),
            "7 days at most"
        );
        let soon = NOW.saturating_add_ms(1000);
        let doc = document(&name, &key, soon).unwrap().to_string();
        assert_eq!(
            check_document(doc.as_bytes(), &name, NOW).unwrap().expires,
            soon
        );
    }

    #[test]
    fn refusals() {
        let (name, key) = server();
        let valid = NOW.saturating_add_ms(1000);
        let doc = document(&name, &key, valid).unwrap();
        let other = ServerName::parse("other.example").unwrap();
        let check =
            |v: &Value, who: &ServerName| check_document(v.to_string().as_bytes(), who, NOW);
        assert_eq!(
            check(&doc, &other),
            Err(KeyDocError::WrongServer("keys.example".into()))
        );
        assert_eq!(
            check_document(b"[", &name, NOW),
            Err(KeyDocError::Shape("not JSON"))
        );
        let mut tampered = doc.clone();
        tampered["valid_until_ts"] = json!(valid.0 + 1);
        assert_eq!(check(&tampered, &name), Err(KeyDocError::NotSelfSigned));
        let expired = document(&name, &key, NOW).unwrap();
        assert_eq!(check(&expired, &name), Err(KeyDocError::Expired));
        // Signed by a key the document does not list.
        let stranger = SigningKey::from_seed(KeyId::parse("ed25519:a").unwrap(), [5; 32]);
        let mut forged = document(&name, &stranger, valid).unwrap();
        forged["verify_keys"] = doc["verify_keys"].clone();
        forged["signatures"] = document(&name, &stranger, valid).unwrap()["signatures"].clone();
        assert_eq!(check(&forged, &name), Err(KeyDocError::NotSelfSigned));
        // More keys than considered, each with a (bogus) signature: refused
        // before any is checked.
        let mut crowded = doc.clone();
        for i in 0..MAX_VERIFY_KEYS {
            let id = format!("ed25519:x{i}");
            crowded["verify_keys"][&id] = json!({"key": key.verify_key().to_base64()});
            crowded["signatures"]["keys.example"][&id] = json!("AAAA");
        }
        sign_json("keys.example", &key, &mut crowded).unwrap();
        assert_eq!(check(&crowded, &name), Err(KeyDocError::TooManyKeys));
        // As many as considered: the one good signature among them counts.
        crowded["verify_keys"]
            .as_object_mut()
            .unwrap()
            .remove("ed25519:x0");
        sign_json("keys.example", &key, &mut crowded).unwrap();
        assert_eq!(check(&crowded, &name).unwrap().keys.len(), MAX_VERIFY_KEYS);
        let mut padded = doc.clone();
        padded["pad"] = json!("x".repeat(MAX_KEY_DOCUMENT_BYTES));
        assert_eq!(check(&padded, &name), Err(KeyDocError::TooLarge));
        let mut no_keys = doc;
        no_keys.as_object_mut().unwrap().remove("verify_keys");
        assert_eq!(
            check(&no_keys, &name),
            Err(KeyDocError::Shape("no verify_keys"))
        );
    }
}
