//! Test signing keys (generated at test time) and a real JWKS endpoint on loopback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
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

    /// A key for any supported asymmetric algorithm: RSA for RS*/PS*, P-256/P-384, Ed25519.
    pub fn for_alg(kid: &str, alg: Algorithm) -> TestKey {
        let sig = match alg {
            Algorithm::RS256 | Algorithm::PS256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::RS384 | Algorithm::PS384 => &rcgen::PKCS_RSA_SHA384,
            Algorithm::RS512 | Algorithm::PS512 => &rcgen::PKCS_RSA_SHA512,
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            other => panic!("no test key for {other:?}"),
        };
        Self::generate(kid, alg, sig)
    }

    fn generate(kid: &str, alg: Algorithm, sig: &'static rcgen::SignatureAlgorithm) -> TestKey {
        mcp_auth_proxy::install_crypto_provider();
        let pair = if matches!(alg.family(), jsonwebtoken::AlgorithmFamily::Rsa) {
            rsa_pair(kid, sig)
        } else {
            rcgen::KeyPair::generate_for(sig).expect("keygen")
        };
        let pem = pair.serialize_pem();
        let encoding = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .expect("encoding key");
        let mut jwk = match alg {
            // jsonwebtoken derives an Ed25519 JWK only from a PKCS#8 v1 key; rcgen writes v2.
            Algorithm::EdDSA => Jwk {
                common: CommonParameters {
                    key_algorithm: Some(KeyAlgorithm::EdDSA),
                    ..Default::default()
                },
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(pair.public_key_raw()),
                }),
            },
            _ => Jwk::from_encoding_key(&encoding, alg).expect("jwk"),
        };
        jwk.common.key_id = Some(kid.to_owned());
        TestKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    /// The same key under another `kid` (e.g. another key material claiming a known kid).
    pub fn with_kid(mut self, kid: &str) -> TestKey {
        self.kid = kid.to_owned();
        self.jwk.common.key_id = Some(kid.to_owned());
        self
    }

    /// The same key, its JWK declaring another `alg`.
    pub fn with_jwk_alg(mut self, alg: KeyAlgorithm) -> TestKey {
        self.jwk.common.key_algorithm = Some(alg);
        self
    }

    /// The same key, its JWK without `alg` (many IdPs publish RSA keys so).
    pub fn without_jwk_alg(mut self) -> TestKey {
        self.jwk.common.key_algorithm = None;
        self
    }

    /// The same key, its JWK declaring `use`.
    pub fn with_jwk_use(mut self, key_use: PublicKeyUse) -> TestKey {
        self.jwk.common.public_key_use = Some(key_use);
        self
    }

    /// A token whose header says `alg` and `kid` but whose signature is this key's own
    /// algorithm's (to probe key/alg confusion).
    pub fn sign_claiming(&self, alg: &str, kid: &str, claims: &Map<String, Value>) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid});
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(Value::Object(claims.clone()).to_string().as_bytes())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg).expect("sign");
        format!("{message}.{signature}")
    }

    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// RSA key generation costs about a third of a second in a debug build, and the suites use
/// dozens of keys: the key material for a kid is generated once per test process. Tests that
/// need two different RSA keys use two kids (see [`TestKey::with_kid`]).
fn rsa_pair(kid: &str, sig: &'static rcgen::SignatureAlgorithm) -> rcgen::KeyPair {
    static CACHE: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let pem = cache
        .entry(kid.to_owned())
        .or_insert_with(|| {
            rcgen::KeyPair::generate_for(sig)
                .expect("keygen")
                .serialize_pem()
        })
        .clone();
    rcgen::KeyPair::from_pem(&pem).expect("cached key")
}

/// A JWKS document served over real HTTP on 127.0.0.1:0, with a fetch counter.
pub struct JwksServer {
    pub url: String,
    pub keys: Arc<Mutex<Vec<Jwk>>>,
    pub fetches: Arc<AtomicUsize>,
    /// The `Cache-Control` header of every answer, if any.
    pub cache_control: Arc<Mutex<Option<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Jwk>) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let cache_control: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let app = axum::Router::new().route(
            "/jwks",
            get({
                let keys = keys.clone();
                let fetches = fetches.clone();
                let cache_control = cache_control.clone();
                move || {
                    let keys = keys.clone();
                    let fetches = fetches.clone();
                    let cache_control = cache_control.clone();
                    async move {
                        use axum::response::IntoResponse;
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let set = JwkSet {
                            keys: keys.lock().map(|k| k.clone()).unwrap_or_default(),
                        };
                        let mut response = axum::Json(set).into_response();
                        let cc = cache_control.lock().ok().and_then(|c| c.clone());
                        if let Some(value) = cc.and_then(|c| c.parse().ok()) {
                            response
                                .headers_mut()
                                .insert(axum::http::header::CACHE_CONTROL, value);
                        }
                        response
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
            cache_control,
            _task: task,
        }
    }

    pub fn fetch_count(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        if let Ok(mut c) = self.cache_control.lock() {
            *c = value.map(str::to_owned);
        }
    }

    pub fn set_keys(&self, keys: Vec<Jwk>) {
        if let Ok(mut k) = self.keys.lock() {
            *k = keys;
        }
    }
}
