//! TLS on the listener (rustls, TLS 1.2 and 1.3 only): the certificate pair, optional client
//! certificates (mTLS), ALPN, and reloading the pair without a restart — the files are
//! checked every [`RELOAD_CHECK`] and on SIGHUP; a handshake always takes the pair current
//! when it starts, so open connections and streams keep theirs. A broken new pair is logged
//! and counted, and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ListenConfig};
use crate::metrics::EdgeMetrics;
use crate::sync::lock;

/// How often the certificate and key files are compared with what is loaded.
pub(crate) const RELOAD_CHECK: Duration = Duration::from_secs(2);

pub(crate) type TlsError = ConfigError;

fn error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What `check` verifies: every configured file is readable and the key matches the
/// certificate (exit 64 naming the key otherwise).
pub(crate) fn check_files(listen: &ListenConfig) -> Result<(), TlsError> {
    if let (Some(cert), Some(key)) = (&listen.tls_cert, &listen.tls_key) {
        let files = read_pair(cert, key)?;
        parse_pair(&files)?;
    }
    if let Some(ca) = &listen.tls_client_ca {
        client_verifier(ca)?;
    }
    Ok(())
}

/// The bytes of the two files, as last read.
#[derive(PartialEq, Eq)]
struct PairFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read_pair(cert: &Path, key: &Path) -> Result<PairFiles, TlsError> {
    let read = |name: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| error(name, format!("cannot read `{}`: {e}", path.display())))
    };
    Ok(PairFiles {
        cert: read("listen.tls_cert", cert)?,
        key: read("listen.tls_key", key)?,
    })
}

fn parse_pair(files: &PairFiles) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            error(
                "listen.tls_cert",
                format!("not a PEM certificate chain: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(error("listen.tls_cert", "holds no certificate"));
    }
    // PKCS#8, PKCS#1 or SEC1, whichever the file holds.
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .map_err(|e| error("listen.tls_key", format!("not a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => error(
            "listen.tls_key",
            "does not match the certificate in listen.tls_cert",
        ),
        rustls::Error::InvalidCertificate(e) => {
            error("listen.tls_cert", format!("not a valid certificate: {e}"))
        }
        e => error("listen.tls_key", format!("cannot be used: {e}")),
    })
}

fn client_verifier(
    ca: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    const KEY: &str = "listen.tls_client_ca";
    let pem = std::fs::read(ca)
        .map_err(|e| error(KEY, format!("cannot read `{}`: {e}", ca.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| error(KEY, format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| error(KEY, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(error(KEY, "holds no certificate"));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| error(KEY, e.to_string()))
}

/// The pair handed to each new handshake.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The listener's TLS: the acceptor and what reloading needs.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    cert: PathBuf,
    key: PathBuf,
    /// The files of the pair in use, and the last reload error (logged once, not at every
    /// check).
    loaded: std::sync::Mutex<(PairFiles, Option<String>)>,
    metrics: EdgeMetrics,
}

impl Tls {
    /// `None` without `listen.tls_cert`/`tls_key`.
    pub(crate) fn load(
        listen: &ListenConfig,
        metrics: EdgeMetrics,
    ) -> Result<Option<Arc<Self>>, TlsError> {
        let (Some(cert), Some(key)) = (&listen.tls_cert, &listen.tls_key) else {
            return Ok(None);
        };
        let files = read_pair(cert, key)?;
        let pair = parse_pair(&files)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(pair)));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| error("listen.tls_cert", e.to_string()))?;
        let builder = match &listen.tls_client_ca {
            Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = if listen.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Some(Arc::new(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            cert: cert.clone(),
            key: key.clone(),
            loaded: std::sync::Mutex::new((files, None)),
            metrics,
        })))
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reloads the pair if either file changed since it was loaded.
    fn check(&self) {
        let result = read_pair(&self.cert, &self.key).and_then(|files| {
            if lock(&self.loaded).0 == files {
                return Ok(None);
            }
            parse_pair(&files).map(|pair| Some((files, pair)))
        });
        let mut loaded = lock(&self.loaded);
        match result {
            Ok(None) => loaded.1 = None,
            Ok(Some((files, pair))) => {
                self.current.0.store(Arc::new(pair));
                *loaded = (files, None);
                self.metrics.tls_reload(true);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded; new connections use it");
            }
            // The same failure again (a broken pair left in place) is not logged again.
            Err(e) if loaded.1.as_deref() == Some(e.to_string().as_str()) => {}
            Err(e) => {
                loaded.1 = Some(e.to_string());
                self.metrics.tls_reload(false);
                tracing::warn!(error = %e, "TLS certificate not reloaded; the old one stays in use");
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK`] and on SIGHUP, until `stop`.
    pub(crate) fn watch(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(RELOAD_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => tracing::info!("SIGHUP: checking the TLS certificate"),
                    () = stop.cancelled() => return,
                }
                let this = self.clone();
                // File reads off the async threads.
                let _ = tokio::task::spawn_blocking(move || this.check()).await;
            }
        });
    }
}
