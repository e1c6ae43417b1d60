//! JWT validation: the issuer picks the key source, the header's `alg` must be on that issuer's
//! allow-list and of the key's family, then signature, `exp`, `nbf`, `iss`, `aud` and `sub` are
//! checked with a `Validation` pinned to that one algorithm (no HS/RS confusion).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::authorize::AccessRules;
use super::jwk::decoding_key_for;
use super::jwks::{JwksCache, JwksSource, JwksStats};
use super::{AuthError, Principal};
use crate::config::{Config, IssuerConfig, is_hmac, parse_algorithm};

/// Where an issuer's verification keys come from.
enum KeySource {
    /// An HMAC secret read from the environment at start-up.
    Secret(DecodingKey),
    /// The issuer's JWKS, found directly or by OIDC discovery.
    Jwks(Arc<JwksCache>),
}

struct Issuer {
    name: String,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
}

/// Validates bearer tokens against the configured issuers; [`Authenticator::authorize`]
/// decides a request with them.
pub struct Authenticator {
    /// In config order: the first is the operator's primary identity provider.
    issuers: Vec<Issuer>,
    /// `iss` → index into `issuers`.
    by_iss: HashMap<String, usize>,
    /// Audiences, audience binding and required scopes (see [`super::authorize`]).
    pub(super) access: AccessRules,
    leeway: u64,
    cache: super::cache::TokenCache,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("environment variable `{0}` (secret_env) is not set")]
    MissingSecret(String),
    #[error("building the HTTP client failed: {0}")]
    Client(String),
}

impl Authenticator {
    /// Builds the validators and the access rules of `config` for a proxy reachable at
    /// `public_url` (no trailing slash). HMAC secrets are read from `env` now; JWKS are
    /// fetched by the caches' [`JwksCache::maintain`] tasks (see [`Authenticator::jwks_caches`]).
    pub fn new(
        config: &Config,
        public_url: &str,
        env: &[(String, String)],
    ) -> Result<Self, AuthSetupError> {
        let client = reqwest::Client::builder()
            .timeout(super::fetch::FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("mcp-auth-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthSetupError::Client(e.to_string()))?;
        let mut issuers = Vec::with_capacity(config.auth.issuers.len());
        let mut by_iss = HashMap::new();
        for issuer in &config.auth.issuers {
            by_iss.insert(issuer.issuer.clone(), issuers.len());
            issuers.push(build_issuer(issuer, env, &client)?);
        }
        Ok(Self {
            issuers,
            by_iss,
            access: AccessRules::new(config, public_url),
            leeway: config.auth.leeway_secs,
            cache: super::cache::TokenCache::new(super::cache::DEFAULT_CAPACITY),
        })
    }

    /// The issuers a client can ask for a token: those whose identifier is an http(s) URL
    /// (RFC 9728 `authorization_servers` holds RFC 8414 issuer identifiers; a bare name such as
    /// a development HS issuer's is no authorization server a client could discover). In
    /// config order: a client starts its OAuth flow with the first (RFC 9728 §2 leaves the
    /// choice to it), which must be the operator's primary, not whichever name sorts first.
    pub fn authorization_servers(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| &i.name)
            .filter(|name| {
                url::Url::parse(name)
                    .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host())
            })
            .cloned()
            .collect()
    }

    /// True when every JWKS issuer has a key set loaded.
    pub fn keys_loaded(&self) -> bool {
        self.issuers.iter().all(|i| match &i.keys {
            KeySource::Secret(_) => true,
            KeySource::Jwks(cache) => cache.is_loaded(),
        })
    }

    /// Every issuer's JWKS cache; each runs [`JwksCache::maintain`] in the background.
    pub fn jwks_caches(&self) -> Vec<Arc<JwksCache>> {
        self.issuers
            .iter()
            .filter_map(|i| match &i.keys {
                KeySource::Jwks(cache) => Some(cache.clone()),
                KeySource::Secret(_) => None,
            })
            .collect()
    }

    /// The JWKS counters per issuer (sorted by issuer), for metrics.
    pub fn jwks_stats(&self) -> Vec<(String, JwksStats)> {
        let mut out: Vec<(String, JwksStats)> = self
            .issuers
            .iter()
            .filter_map(|i| match &i.keys {
                KeySource::Jwks(cache) => Some((i.name.clone(), cache.stats())),
                KeySource::Secret(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// [`Authenticator::validate`] through the cache of validated tokens ([`super::cache`]):
    /// the path every request takes (from [`Authenticator::authorize`]).
    pub async fn validate_cached(&self, token: &str) -> Result<Principal, AuthError> {
        let epoch = self.key_epoch();
        if let Some(principal) = self.cache.get(token, epoch) {
            return Ok(principal);
        }
        let principal = self.validate(token).await?;
        self.cache.insert(token, &principal, epoch);
        Ok(principal)
    }

    /// Changes whenever any issuer's JWKS is fetched again, so cached validations do not
    /// outlive the key set they were checked against.
    fn key_epoch(&self) -> u64 {
        self.issuers
            .iter()
            .map(|i| match &i.keys {
                KeySource::Jwks(cache) => cache.stats().fetches_ok,
                KeySource::Secret(_) => 0,
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// Validates a token: signature, algorithm, time, issuer, audience, subject.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed("unknown".into()),
            _ => AuthError::Malformed("bad header"),
        })?;
        let iss = unverified_issuer(token)?;
        let issuer = self
            .by_iss
            .get(&iss)
            .and_then(|&i| self.issuers.get(i))
            .ok_or(AuthError::UnknownIssuer)?;
        let alg = header.alg;
        if !issuer.algorithms.contains(&alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{alg:?}")));
        }
        let key = match &issuer.keys {
            KeySource::Secret(key) => {
                if !is_hmac(alg) {
                    return Err(AuthError::KeyMismatch("HMAC issuer"));
                }
                key.clone()
            }
            KeySource::Jwks(cache) => {
                if is_hmac(alg) {
                    // Never build an HMAC key from public JWKS material.
                    return Err(AuthError::KeyMismatch("HMAC with a JWKS issuer"));
                }
                let jwk = cache
                    .key(header.kid.as_deref())
                    .await
                    .ok_or(AuthError::UnknownKey)?;
                decoding_key_for(&jwk, alg)?
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.name]);
        validation.set_audience(&self.access.audiences);
        // Without these, jsonwebtoken checks iss/aud only when present.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(map_jwt_error)?;
        principal_from_claims(data.claims, self.leeway)
    }
}

fn build_issuer(
    config: &IssuerConfig,
    env: &[(String, String)],
    client: &reqwest::Client,
) -> Result<Issuer, AuthSetupError> {
    let algorithms: Vec<Algorithm> = config
        .algorithms
        .iter()
        .filter_map(|a| parse_algorithm(a))
        .collect();
    let keys = if let Some(var) = &config.secret_env {
        let secret = env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v)
            .ok_or_else(|| AuthSetupError::MissingSecret(var.clone()))?;
        KeySource::Secret(DecodingKey::from_secret(secret.as_bytes()))
    } else {
        let source = match &config.jwks_url {
            Some(url) => JwksSource::Url(url.clone()),
            None => JwksSource::Discovery {
                issuer: config.issuer.clone(),
            },
        };
        let cache = JwksCache::new(
            source,
            client.clone(),
            Duration::from_secs(config.jwks_refresh_secs),
            Duration::from_secs(config.jwks_min_refetch_secs),
        );
        KeySource::Jwks(Arc::new(cache))
    };
    Ok(Issuer {
        name: config.issuer.clone(),
        algorithms,
        keys,
    })
}

/// Reads `iss` from the payload without verifying it, only to choose the issuer's keys; the
/// signature check that follows pins `iss` again.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three segments"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("payload is not base64url"))?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let parsed: Iss =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("payload is not JSON"))?;
    parsed
        .iss
        .ok_or_else(|| AuthError::MissingClaim("iss".into()))
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed("mismatch".into()),
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => AuthError::Malformed("undecodable"),
        other => AuthError::Invalid(format!("{other:?}")),
    }
}

fn principal_from_claims(claims: Map<String, Value>, leeway: u64) -> Result<Principal, AuthError> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::MissingClaim("iss".into()))?
        .to_owned();
    let sub = match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => return Err(AuthError::MissingClaim("sub".into())),
    };
    let exp = numeric_date(&claims, "exp")?.ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
    // `iat` in the future (beyond leeway) means a broken clock or a forged token; `nbf` or
    // `iat` after `exp` describes a token that was never valid.
    let now = jsonwebtoken::get_current_timestamp();
    let iat = numeric_date(&claims, "iat")?;
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(AuthError::NotYetValid);
    }
    let nbf = numeric_date(&claims, "nbf")?;
    if iat.into_iter().chain(nbf).any(|t| t > exp) {
        return Err(AuthError::Invalid("iat or nbf after exp".into()));
    }
    // `scope` (RFC 8693 §4.2, RFC 9068: space-separated) or `scp` (Okta: an array; Entra ID:
    // space-separated); either form is accepted in either claim.
    let mut scopes: Vec<String> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    scopes.sort();
    scopes.dedup();
    Ok(Principal {
        iss,
        sub,
        scopes,
        exp,
        claims: std::sync::Arc::new(claims),
    })
}

/// A NumericDate claim (RFC 7519 §2): absent, or a non-negative number of seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(t as u64)),
            _ => Err(AuthError::Invalid(format!("{name} is not a NumericDate"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, IssuerConfig};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const AUD: &str = "http://127.0.0.1:8080";

    fn install_crypto() {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    }

    /// A config with these `auth` settings and nothing else.
    fn config(auth: AuthConfig) -> Config {
        let mut config = Config::parse("", &[]).expect("empty config");
        config.auth = auth;
        config
    }

    fn authenticator() -> Authenticator {
        install_crypto();
        let config = config(AuthConfig {
            audiences: vec![AUD.into()],
            issuers: vec![IssuerConfig {
                issuer: "dev".into(),
                discovery: false,
                jwks_url: None,
                algorithms: vec!["HS256".into()],
                jwks_refresh_secs: 300,
                jwks_min_refetch_secs: 10,
                secret_env: Some("S".into()),
            }],
            ..AuthConfig::default()
        });
        Authenticator::new(&config, AUD, &[("S".into(), SECRET.into())]).expect("authenticator")
    }

    fn claims(overrides: Value) -> Map<String, Value> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut base = json!({"iss": "dev", "sub": "alice", "aud": AUD, "exp": now + 600, "iat": now, "scope": "a b"});
        if let (Some(b), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        base.as_object().cloned().unwrap_or_default()
    }

    fn sign(secret: &[u8], alg: Algorithm, claims: &Map<String, Value>) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret))
            .expect("sign")
    }

    fn token(overrides: Value) -> String {
        sign(SECRET.as_bytes(), Algorithm::HS256, &claims(overrides))
    }

    #[tokio::test]
    async fn accepts_a_good_token_and_reads_scopes() {
        let p = authenticator()
            .validate_cached(&token(json!({})))
            .await
            .expect("valid");
        assert_eq!((p.iss.as_str(), p.sub.as_str()), ("dev", "alice"));
        assert_eq!(p.scopes, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn rejection_table() {
        let now = jsonwebtoken::get_current_timestamp();
        let a = authenticator();
        let other_secret = sign(
            b"another-secret-another-secret-123",
            Algorithm::HS256,
            &claims(json!({})),
        );
        let hs384 = sign(SECRET.as_bytes(), Algorithm::HS384, &claims(json!({})));
        let cases: Vec<(&str, String, &str)> = vec![
            ("expired", token(json!({"exp": now - 3600})), "expired"),
            (
                "nbf future",
                token(json!({"nbf": now + 3600})),
                "not_yet_valid",
            ),
            (
                "iat future",
                token(json!({"iat": now + 3600})),
                "not_yet_valid",
            ),
            (
                "wrong aud",
                token(json!({"aud": "http://evil"})),
                "audience",
            ),
            ("no aud", token(json!({"aud": null})), "missing_claim"),
            ("no sub", token(json!({"sub": null})), "missing_claim"),
            ("no exp", token(json!({"exp": null})), "missing_claim"),
            (
                "unknown iss",
                token(json!({"iss": "evil"})),
                "unknown_issuer",
            ),
            ("bad signature", other_secret, "signature"),
            ("alg not listed", hs384, "algorithm"),
            ("garbage", "a.b.c".into(), "malformed"),
            ("two parts", "abc.def".into(), "malformed"),
        ];
        for (name, t, reason) in cases {
            let err = a.validate_cached(&t).await.expect_err(name);
            assert_eq!(err.reason(), reason, "{name}: {err}");
        }
        // alg: none, crafted by hand.
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(Value::Object(claims(json!({}))))
        );
        assert!(a.validate_cached(&none).await.is_err());
    }

    #[tokio::test]
    async fn claim_sanity_and_scope_forms() {
        let now = jsonwebtoken::get_current_timestamp();
        let a = authenticator();
        for (name, overrides, reason) in [
            ("nbf after exp", json!({"nbf": now + 700}), "not_yet_valid"),
            (
                "iat after exp",
                json!({"iat": now - 10, "exp": now - 20}),
                "invalid",
            ),
            ("iat not a date", json!({"iat": "yesterday"}), "invalid"),
            ("exp not a date", json!({"exp": "later"}), "missing_claim"),
            ("empty sub", json!({"sub": ""}), "missing_claim"),
        ] {
            let err = a.validate_cached(&token(overrides)).await.expect_err(name);
            assert_eq!(err.reason(), reason, "{name}: {err}");
        }
        // Issued before nbf and after exp: never valid, whatever the clock says.
        let mut a = authenticator();
        a.leeway = 100_000;
        let err = a
            .validate_cached(&token(json!({"nbf": now + 50, "exp": now + 10})))
            .await
            .expect_err("nbf > exp");
        assert_eq!(err.reason(), "invalid", "{err}");
        let a = authenticator();
        for (claims, want) in [
            (json!({"scope": "b a", "scp": null}), vec!["a", "b"]),
            (json!({"scope": null, "scp": ["x", "y"]}), vec!["x", "y"]),
            (json!({"scope": null, "scp": "x y"}), vec!["x", "y"]),
            (json!({"scope": "a", "scp": ["a", "z"]}), vec!["a", "z"]),
            (json!({"scope": null}), vec![]),
        ] {
            let p = a
                .validate_cached(&token(claims.clone()))
                .await
                .expect("valid");
            assert_eq!(p.scopes, want, "{claims}");
        }
    }

    #[test]
    fn only_url_issuers_are_authorization_servers() {
        install_crypto();
        let issuer = |name: &str| IssuerConfig {
            issuer: name.into(),
            discovery: false,
            jwks_url: Some("http://127.0.0.1:1/jwks".into()),
            algorithms: vec!["RS256".into()],
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 10,
            secret_env: None,
        };
        let config = config(AuthConfig {
            issuers: vec![
                issuer("https://idp.example.com/realms/mcp"),
                issuer("mcp-auth-proxy-dev"),
                issuer("http://127.0.0.1:4444"),
                issuer("urn:example:issuer"),
            ],
            ..AuthConfig::default()
        });
        let a = Authenticator::new(&config, AUD, &[]).expect("authenticator");
        assert_eq!(
            a.authorization_servers(),
            vec![
                "https://idp.example.com/realms/mcp",
                "http://127.0.0.1:4444"
            ]
        );
    }

    #[test]
    fn authorization_servers_keep_the_config_order() {
        install_crypto();
        let issuer = |name: &str| IssuerConfig {
            issuer: name.into(),
            discovery: true,
            jwks_url: None,
            algorithms: vec!["RS256".into()],
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 10,
            secret_env: None,
        };
        let primary = "https://login.example.com/tenant";
        let secondary = "https://auth.example.com/realms/mcp";
        for order in [[primary, secondary], [secondary, primary]] {
            let config = config(AuthConfig {
                issuers: order.iter().map(|name| issuer(name)).collect(),
                ..AuthConfig::default()
            });
            let a = Authenticator::new(&config, AUD, &[]).expect("authenticator");
            assert_eq!(a.authorization_servers(), order);
        }
    }
}
