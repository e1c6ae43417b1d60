//! TLS for the `tls-*` targets: a certificate for 127.0.0.1 made at start (rcgen), the proxy
//! started with it, and the client side that trusts exactly that certificate. An address
//! written `tls://host:port` is dialled through TLS (HTTP/1.1 by ALPN, like the plain rows).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;

/// The prefix of an address the client dials through TLS.
pub(crate) const SCHEME: &str = "tls://";

static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// The server's certificate and key files.
pub(crate) struct Files {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    _dir: tempfile::TempDir,
}

/// Makes an ECDSA P-256 certificate for 127.0.0.1 (what a current CA would issue), writes it
/// for the proxy and makes the client trust it.
pub(crate) fn setup() -> Result<Files> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key)?;
    let dir = tempfile::tempdir()?;
    let files = Files {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        _dir: dir,
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.pem().as_bytes())
        .context("the certificate just made")?;
    roots.add(der)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let _ = CLIENT.set(Arc::new(config));
    Ok(files)
}

/// The client configuration, once [`setup`] ran.
pub(crate) fn client() -> Option<tokio_rustls::TlsConnector> {
    CLIENT.get().cloned().map(tokio_rustls::TlsConnector::from)
}
