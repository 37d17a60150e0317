//! A throwaway certificate authority for HTTPS tests: a CA made at test
//! time, server certificates it signs for any names, and its PEM file to
//! hand to `--tls-ca`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;

/// A CA whose certificate is written to a temporary PEM file.
pub struct TestCa {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    pem_file: PathBuf,
    _dir: TempDir,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("pem_file", &self.pem_file)
            .finish()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestCa {
    /// A new CA (ECDSA P-256, valid for decades).
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "matrix-relay test CA");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().expect("generate the CA key");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let dir = tempfile::tempdir().expect("a directory for the CA file");
        let pem_file = dir.path().join("ca.pem");
        std::fs::write(&pem_file, cert.pem()).expect("write the CA file");
        Self {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            pem_file,
            _dir: dir,
        }
    }

    /// The CA certificate as a PEM file (for `--tls-ca`).
    pub fn pem_file(&self) -> &Path {
        &self.pem_file
    }

    /// The CA certificate (for a client's trusted roots).
    pub fn cert(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// A rustls client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert())
            .expect("the CA certificate is usable");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A server certificate signed by this CA for every name in `names`
    /// (DNS names or IP addresses), and its new key.
    fn leaf(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid names");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generate a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        (cert, key)
    }

    /// PEM texts of a server certificate chain (leaf, then this CA) for
    /// `names` and of its PKCS#8 key, as `serve --tls-cert/--tls-key` read.
    pub fn server_pem(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.leaf(names);
        let ca_pem = std::fs::read_to_string(&self.pem_file).expect("read the CA file");
        (format!("{}{ca_pem}", cert.pem()), key.serialize_pem())
    }

    /// A rustls server configuration presenting a certificate, signed by
    /// this CA, for every name in `names` (DNS names or IP addresses).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.leaf(names);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.der.clone()], key)
            .expect("a usable certificate and key");
        Arc::new(config)
    }
}
