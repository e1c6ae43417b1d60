//! One issuer's JSON Web Key Set: fetched at start-up, refreshed in the background, refetched
//! on an unknown `kid` at most once per `jwks_min_refetch_secs`; the last good set keeps serving
//! while the identity provider is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use tokio::sync::Mutex as AsyncMutex;

/// A JWKS document larger than this is refused (a JWKS holds a handful of keys).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Every fetch is bounded.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url} failed: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} is not a JWK set: {reason}")]
    Parse { url: String, reason: String },
}

/// A fetched key set and when it was fetched.
#[derive(Debug)]
struct Snapshot {
    keys: JwkSet,
}

/// The key cache of one issuer. Reads are lock-free; fetches are single-flight.
#[derive(Debug)]
pub struct JwksCache {
    /// Known at start (`jwks_url`) or after OIDC discovery.
    url: std::sync::OnceLock<String>,
    client: reqwest::Client,
    min_refetch: Duration,
    current: ArcSwapOption<Snapshot>,
    /// Serializes fetches; holds the time of the last refetch caused by an unknown `kid`.
    fetch_lock: AsyncMutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(url: Option<String>, client: reqwest::Client, min_refetch: Duration) -> Self {
        let cell = std::sync::OnceLock::new();
        if let Some(url) = url {
            let _ = cell.set(url);
        }
        Self {
            url: cell,
            client,
            min_refetch,
            current: ArcSwapOption::empty(),
            fetch_lock: AsyncMutex::new(None),
        }
    }

    pub fn url(&self) -> Option<&str> {
        self.url.get().map(String::as_str)
    }

    /// Sets the JWKS URL found by discovery (first one wins).
    pub fn set_url(&self, url: String) {
        let _ = self.url.set(url);
    }

    /// True once a key set has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Fetches now, regardless of the refetch limit (start-up and background refresh).
    /// Scheduled fetches do not count against the unknown-`kid` limit, which exists to keep
    /// a flood of made-up kids from hammering the identity provider.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _serialized = self.fetch_lock.lock().await;
        self.fetch_and_store().await
    }

    /// The key with this `kid`; on a miss, one refetch if the last fetch is older than
    /// `jwks_min_refetch_secs` (concurrent misses wait for the same fetch).
    pub async fn key(&self, kid: Option<&str>) -> Option<Jwk> {
        if let Some(jwk) = self.lookup(kid) {
            return Some(jwk);
        }
        let seen_before = self.current.load_full();
        let mut last = self.fetch_lock.lock().await;
        // Someone else fetched while we waited: look again before fetching ourselves.
        let changed = match (&seen_before, &*self.current.load()) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, Some(_)) => true,
            _ => false,
        };
        if changed {
            return self.lookup(kid);
        }
        if let Some(at) = *last
            && at.elapsed() < self.min_refetch
        {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(error = %e, "JWKS refetch after an unknown kid failed; keeping the last good key set");
        }
        drop(last);
        self.lookup(kid)
    }

    fn lookup(&self, kid: Option<&str>) -> Option<Jwk> {
        let snapshot = self.current.load();
        let keys = &snapshot.as_ref()?.keys;
        match kid {
            Some(kid) => keys.find(kid).cloned(),
            // No `kid`: only unambiguous when the set has exactly one key.
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        }
    }

    async fn fetch_and_store(&self) -> Result<usize, JwksError> {
        let Some(url) = self.url() else {
            return Err(JwksError::Fetch {
                url: "(not yet discovered)".into(),
                reason: "OIDC discovery has not succeeded yet".into(),
            });
        };
        let keys = fetch_jwks(&self.client, url).await?;
        let n = keys.keys.len();
        self.current.store(Some(Arc::new(Snapshot { keys })));
        tracing::info!(url, keys = n, "JWKS loaded");
        Ok(n)
    }
}

/// GETs a JSON document with a timeout and a size limit.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, JwksError> {
    let fetch_err = |e: reqwest::Error| JwksError::Fetch {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let mut response = client
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(fetch_err)?;
    if !response.status().is_success() {
        return Err(JwksError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(JwksError::TooLarge {
            url: url.to_owned(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_err)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge {
                url: url.to_owned(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| JwksError::Parse {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<JwkSet, JwksError> {
    // Parse leniently: keys of types we do not support are skipped, not fatal.
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = fetch_json(client, url).await?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|k| match serde_json::from_value::<Jwk>(k) {
            Ok(jwk) => Some(jwk),
            Err(e) => {
                tracing::debug!(url, error = %e, "skipping a JWK we cannot use");
                None
            }
        })
        .collect();
    Ok(JwkSet { keys })
}
