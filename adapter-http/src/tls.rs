//! TLS files: serving with a certificate and key, picking up a renewed
//! certificate without a restart, and reading PEM certificates.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The relay's certificate chain and private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (e.g. Let's Encrypt's
    /// `fullchain.pem`).
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A server TLS configuration whose certificate is re-read from its files
/// when they change ([`ServerTls::reload_if_changed`]).
///
/// Implementation note: handshakes read the current certificate under a
/// read lock; a reload swaps it, so connections after the swap get the new
/// certificate and connections before it keep the old.
pub struct ServerTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The certificate handshakes get, and the file stamps it was read at.
#[derive(Debug)]
struct Current(RwLock<(Arc<CertifiedKey>, Stamp)>);

/// What tells a changed file: modification time and length of both.
type Stamp = [(Option<SystemTime>, u64); 2];

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a valid certificate.
        let guard = self.0.read().unwrap_or_else(|e| e.into_inner());
        Some(guard.0.clone())
    }
}

impl ServerTls {
    /// Reads `files`; fails with a message naming the file at fault if one
    /// is missing, holds no certificate or key, or the key does not match
    /// the certificate.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, stamp) = read(&files, &provider)?;
        let current = Arc::new(Current(RwLock::new((key, stamp))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files,
            provider,
            current,
            config: Arc::new(config),
        })
    }

    /// The configuration to accept connections with.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files if either one's modification time or length
    /// changed since they were last read: `Ok(true)` if the certificate
    /// was replaced. On an error the previous certificate stays in use (a
    /// renewal caught half-written is picked up at the next call). Blocking.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.files);
        {
            let guard = self.current.0.read().unwrap_or_else(|e| e.into_inner());
            if guard.1 == now {
                return Ok(false);
            }
        }
        let (key, stamp) = read(&self.files, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = (key, stamp);
        Ok(true)
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |path: &Path| match fs::metadata(path) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(&files.cert), one(&files.key)]
}

/// Reads both files; the stamp is taken first, so a change made while
/// reading shows at the next check.
fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<(Arc<CertifiedKey>, Stamp), String> {
    let stamp = stamp(files);
    let chain = read_pem_certificates(&files.cert)?;
    let at = |path: &Path, what: &dyn fmt::Display| format!("{}: {what}", path.display());
    let text = fs::read(&files.key).map_err(|e| at(&files.key, &e))?;
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| at(&files.key, &e))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        at(
            &files.key,
            &format!("does not go with the certificate: {e}"),
        )
    })?;
    Ok((Arc::new(certified), stamp))
}

/// Every certificate of a PEM file, in order: a server's chain (leaf
/// first), or the extra roots of
/// [`ClientOptions`](crate::ClientOptions). Fails with a message naming the
/// file if it cannot be read, is not PEM, or holds no certificate.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let at = |what: &dyn fmt::Display| format!("{}: {what}", path.display());
    let text = fs::read(path).map_err(|e| at(&e))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&e))?;
    if certs.is_empty() {
        return Err(at(&"no PEM certificate in it"));
    }
    Ok(certs)
}
