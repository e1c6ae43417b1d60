//! Test signing keys (generated at test time) and a real JWKS endpoint on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

/// A private key with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    /// The public key in PEM (SPKI), used to forge HS256-with-public-key tokens.
    pub public_pem: String,
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        Self::generate(kid, Algorithm::RS256, &rcgen::PKCS_RSA_SHA256)
    }

    pub fn ec(kid: &str) -> TestKey {
        Self::generate(kid, Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn generate(kid: &str, alg: Algorithm, sig: &'static rcgen::SignatureAlgorithm) -> TestKey {
        mcp_auth_proxy::install_crypto_provider();
        let pair = rcgen::KeyPair::generate_for(sig).expect("keygen");
        let pem = pair.serialize_pem();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .expect("encoding key");
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        TestKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    /// The same key, its JWK declaring another `alg`.
    pub fn with_jwk_alg(mut self, alg: KeyAlgorithm) -> TestKey {
        self.jwk.common.key_algorithm = Some(alg);
        self
    }

    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document served over real HTTP on 127.0.0.1:0, with a fetch counter.
pub struct JwksServer {
    pub url: String,
    pub keys: Arc<Mutex<Vec<Jwk>>>,
    pub fetches: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Jwk>) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/jwks",
            get({
                let keys = keys.clone();
                let fetches = fetches.clone();
                move || {
                    let keys = keys.clone();
                    let fetches = fetches.clone();
                    async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let set = JwkSet {
                            keys: keys.lock().map(|k| k.clone()).unwrap_or_default(),
                        };
                        axum::Json(set)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer {
            url,
            keys,
            fetches,
            _task: task,
        }
    }

    pub fn fetch_count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set_keys(&self, keys: Vec<Jwk>) {
        if let Ok(mut k) = self.keys.lock() {
            *k = keys;
        }
    }
}
