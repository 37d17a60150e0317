//! Signing key files: generating, reading, creating on first start.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use relay_core::KeyId;
use relay_core::signing::SigningKey;

/// A new key with a seed from the OS. `key_id` is `ed25519:VERSION` or the
/// bare `VERSION` (as the key file spells it); the default version is the
/// first 8 hex characters of the public key, so it is stable and readable.
pub(crate) fn generate(key_id: Option<&str>) -> Result<SigningKey, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let provisional = SigningKey::from_seed(KeyId::ed25519("0").map_err(|e| e.to_string())?, seed);
    let key_id = match key_id {
        Some(id) => if id.contains(':') {
            KeyId::parse(id)
        } else {
            KeyId::ed25519(id)
        }
        .map_err(|_| format!("{id:?} is not a key ID like ed25519:abc or abc"))?,
        None => {
            KeyId::ed25519(&provisional.verify_key().to_hex()[..8]).map_err(|e| e.to_string())?
        }
    };
    if key_id.algorithm() != "ed25519" {
        return Err(format!("only ed25519 keys are supported, not {key_id}"));
    }
    // Other servers' key IDs are read leniently; ours follow the spec.
    if !key_id
        .version()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "{key_id}: a key ID's version is letters, digits and `_` only"
        ));
    }
    Ok(SigningKey::from_seed(key_id, seed))
}

/// Writes `key` to a new file at `path` (mode 0600), refusing to overwrite.
pub(crate) fn write_new(path: &Path, key: &SigningKey) -> Result<(), String> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{} exists already; not overwriting it", path.display())
        }
        _ => format!("cannot create {}: {e}", path.display()),
    })?;
    file.write_all(key.to_synapse_line().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads the key at `path`.
pub(crate) fn read(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    SigningKey::parse_synapse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the key at `path`, creating it first if there is none.
pub(crate) fn load_or_create(path: &Path) -> Result<SigningKey, String> {
    if path.exists() {
        return read(path);
    }
    let key = generate(None)?;
    write_new(path, &key)?;
    tracing::info!(
        path = %path.display(),
        key_id = %key.key_id(),
        public_key = %key.verify_key().to_base64(),
        "created a new signing key"
    );
    Ok(key)
}

/// `matrix-relay keygen`.
pub(crate) fn keygen(out: &Path, key_id: Option<&str>) -> Result<(), String> {
    let key = generate(key_id)?;
    write_new(out, &key)?;
    let public = key.verify_key();
    println!("wrote {}", out.display());
    println!("key id:          {}", key.key_id());
    println!("public key:      {}", public.to_base64());
    println!("p2p server name: {}", public.to_hex());
    Ok(())
}
