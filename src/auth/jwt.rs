//! JWT validation: the issuer picks the key source, the header's `alg` must be on that issuer's
//! allow-list and of the key's family, then signature, `exp`, `nbf`, `iss`, `aud` and `sub` are
//! checked with a `Validation` pinned to that one algorithm (no HS/RS confusion).

use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use super::authorize::AccessRules;
use super::issuers::{AuthSetupError, Issuers, KeySource};
use super::jwk::decoding_key_for;
use super::jwks::{JwksCache, JwksStats};
use super::{AuthError, Principal};
use crate::config::{Config, is_hmac};

/// Validates bearer tokens against the configured issuers; [`Authenticator::authorize`]
/// decides a request with them.
pub struct Authenticator {
    issuers: Issuers,
    /// Audiences, audience binding and required scopes (see [`super::authorize`]).
    pub(super) access: AccessRules,
    leeway: u64,
    cache: super::cache::TokenCache,
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
        Ok(Self {
            issuers: Issuers::new(config, env)?,
            access: AccessRules::new(config, public_url),
            leeway: config.auth.leeway_secs,
            cache: super::cache::TokenCache::new(super::cache::DEFAULT_CAPACITY),
        })
    }

    /// The issuers a client can ask for a token (RFC 9728 `authorization_servers`): the
    /// configured issuers named by an http(s) URL, in config order.
    pub fn authorization_servers(&self) -> Vec<String> {
        self.issuers.authorization_servers()
    }

    /// True when every JWKS issuer has a key set loaded.
    pub fn keys_loaded(&self) -> bool {
        self.issuers.keys_loaded()
    }

    /// Every issuer's JWKS cache; each runs [`JwksCache::maintain`] in the background.
    pub fn jwks_caches(&self) -> Vec<Arc<JwksCache>> {
        self.issuers.jwks_caches()
    }

    /// The JWKS counters per issuer (sorted by issuer), for metrics.
    pub fn jwks_stats(&self) -> Vec<(String, JwksStats)> {
        self.issuers.jwks_stats()
    }

    /// [`Authenticator::validate`] through the cache of validated tokens ([`super::cache`]):
    /// the path every request takes (from [`Authenticator::authorize`]).
    pub async fn validate_cached(&self, token: &str) -> Result<Principal, AuthError> {
        let epoch = self.issuers.key_epoch();
        if let Some(principal) = self.cache.get(token, epoch) {
            return Ok(principal);
        }
        let principal = self.validate(token).await?;
        self.cache.insert(token, &principal, epoch);
        Ok(principal)
    }

    /// Validates a token: signature, algorithm, time, issuer, audience, subject.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let (header, iss) = unverified_parts(token)?;
        let issuer = self.issuers.get(&iss).ok_or(AuthError::UnknownIssuer)?;
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

/// What is read of a token before its signature is checked: the header (for `alg` and `kid`)
/// and the unverified `iss` (for the issuer's keys). Nothing here is trusted yet.
pub(crate) fn unverified_parts(token: &str) -> Result<(jsonwebtoken::Header, String), AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed("unknown".into()),
        _ => AuthError::Malformed("bad header"),
    })?;
    Ok((header, unverified_issuer(token)?))
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
        .into();
    let sub = match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s.into(),
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
        scopes: scopes.into(),
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
    use crate::config::tests::{MINIMAL, SECRET, env};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const AUD: &str = "http://127.0.0.1:8080";

    /// [`MINIMAL`]'s HS256 issuer `dev`, tokens for [`AUD`].
    fn authenticator() -> Authenticator {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let toml = format!("[auth]\naudiences = [\"{AUD}\"]\n{MINIMAL}");
        let config = Config::parse(&toml, &env()).expect("config");
        Authenticator::new(&config, AUD, &env()).expect("authenticator")
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
        assert_eq!((&*p.iss, &*p.sub), ("dev", "alice"));
        assert_eq!(*p.scopes, ["a", "b"]);
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
            assert_eq!(p.scopes.to_vec(), want, "{claims}");
        }
    }
}
