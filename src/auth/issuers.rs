//! The configured issuers: each one's algorithm allow-list and key source (an HMAC secret read
//! from the environment, or a JWKS cache), found by a token's `iss`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwks::{JwksCache, JwksSource, JwksStats};
use crate::config::{Config, IssuerConfig, parse_algorithm};

/// Where an issuer's verification keys come from.
pub(super) enum KeySource {
    /// An HMAC secret read from the environment at start-up.
    Secret(DecodingKey),
    /// The issuer's JWKS, found directly or by OIDC discovery.
    Jwks(Arc<JwksCache>),
}

pub(super) struct Issuer {
    pub(super) name: String,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) keys: KeySource,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("environment variable `{0}` (secret_env) is not set")]
    MissingSecret(String),
    #[error("building the HTTP client failed: {0}")]
    Client(String),
}

/// Every configured issuer.
pub(super) struct Issuers {
    /// In config order: the first is the operator's primary identity provider.
    list: Vec<Issuer>,
    /// `iss` → index into `list`.
    by_iss: HashMap<String, usize>,
}

impl Issuers {
    /// The issuers of `config`. HMAC secrets are read from `env` now; JWKS are fetched by the
    /// caches' [`JwksCache::maintain`] tasks (see [`Issuers::jwks_caches`]).
    pub(super) fn new(config: &Config, env: &[(String, String)]) -> Result<Self, AuthSetupError> {
        let client = reqwest::Client::builder()
            .timeout(super::fetch::FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("mcp-auth-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthSetupError::Client(e.to_string()))?;
        let mut list = Vec::with_capacity(config.auth.issuers.len());
        let mut by_iss = HashMap::new();
        for issuer in &config.auth.issuers {
            by_iss.insert(issuer.issuer.clone(), list.len());
            list.push(build_issuer(issuer, env, &client)?);
        }
        Ok(Self { list, by_iss })
    }

    /// The issuer configured for this `iss`.
    pub(super) fn get(&self, iss: &str) -> Option<&Issuer> {
        self.by_iss.get(iss).and_then(|&i| self.list.get(i))
    }

    /// The issuers a client can ask for a token: those whose identifier is an http(s) URL
    /// (RFC 9728 `authorization_servers` holds RFC 8414 issuer identifiers; a bare name such as
    /// a development HS issuer's is no authorization server a client could discover). In
    /// config order: a client starts its OAuth flow with the first (RFC 9728 §2 leaves the
    /// choice to it), which must be the operator's primary, not whichever name sorts first.
    pub(super) fn authorization_servers(&self) -> Vec<String> {
        self.list
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
    pub(super) fn keys_loaded(&self) -> bool {
        self.list.iter().all(|i| match &i.keys {
            KeySource::Secret(_) => true,
            KeySource::Jwks(cache) => cache.is_loaded(),
        })
    }

    /// Every issuer's JWKS cache; each runs [`JwksCache::maintain`] in the background.
    pub(super) fn jwks_caches(&self) -> Vec<Arc<JwksCache>> {
        self.list
            .iter()
            .filter_map(|i| match &i.keys {
                KeySource::Jwks(cache) => Some(cache.clone()),
                KeySource::Secret(_) => None,
            })
            .collect()
    }

    /// The JWKS counters per issuer (sorted by issuer), for metrics.
    pub(super) fn jwks_stats(&self) -> Vec<(String, JwksStats)> {
        let mut out: Vec<(String, JwksStats)> = self
            .list
            .iter()
            .filter_map(|i| match &i.keys {
                KeySource::Jwks(cache) => Some((i.name.clone(), cache.stats())),
                KeySource::Secret(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Changes whenever any issuer's JWKS is fetched again, so cached validations do not
    /// outlive the key set they were checked against.
    pub(super) fn key_epoch(&self) -> u64 {
        self.list
            .iter()
            .map(|i| match &i.keys {
                KeySource::Jwks(cache) => cache.stats().fetches_ok,
                KeySource::Secret(_) => 0,
            })
            .fold(0u64, u64::wrapping_add)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// RS256 issuers with these names, each with the key source `keys` (a TOML line).
    fn issuers(names: &[&str], keys: &str) -> Issuers {
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let toml: String = names
            .iter()
            .map(|name| {
                format!("[[auth.issuers]]\nissuer = \"{name}\"\nalgorithms = [\"RS256\"]\n{keys}\n")
            })
            .collect();
        let config = Config::parse(&toml, &[]).expect("config");
        Issuers::new(&config, &[]).expect("issuers")
    }

    #[test]
    fn only_url_issuers_are_authorization_servers() {
        let names = [
            "https://idp.example.com/realms/mcp",
            "mcp-auth-proxy-dev",
            "http://127.0.0.1:4444",
            "urn:example:issuer",
        ];
        let a = issuers(&names, "jwks_url = \"http://127.0.0.1:1/jwks\"");
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
        let primary = "https://login.example.com/tenant";
        let secondary = "https://auth.example.com/realms/mcp";
        for order in [[primary, secondary], [secondary, primary]] {
            let a = issuers(&order, "discovery = true");
            assert_eq!(a.authorization_servers(), order);
        }
    }
}
