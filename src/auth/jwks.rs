//! One issuer's JSON Web Key Set: found by OIDC discovery or named directly, fetched at
//! start-up (readiness waits for it), refreshed in the background (every `jwks_refresh_secs`, or
//! sooner when the response's `Cache-Control: max-age` says so), refetched on an unknown `kid` at
//! most once per `jwks_min_refetch_secs`; the last good set keeps serving while the identity
//! provider is down. Every fetch outcome is counted ([`JwksCache::stats`]).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::discovery::discover_jwks_uri;
use super::fetch::{MAX_JWKS_BYTES, fetch_bytes};

/// The first retry after a failed fetch; it doubles up to [`MAX_RETRY`].
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between retries while the identity provider is unreachable (never longer
/// than the refresh interval either).
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(30);
/// A `max-age` shorter than this (or `no-cache`) does not make us poll faster than this.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(1);

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
    #[error("OIDC discovery at {url}: {reason}")]
    Discovery { url: String, reason: String },
}

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// `jwks_url`.
    Url(String),
    /// `discovery = true`: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery { issuer: String },
}

pub(crate) use crate::metrics::JwksStats;

#[derive(Debug, Default)]
struct Counters {
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    unknown_kid_refetches: AtomicU64,
    unknown_kid_throttled: AtomicU64,
    keys: AtomicU64,
    last_success_unix: AtomicU64,
}

/// A fetched key set and the freshness its server declared.
#[derive(Debug)]
struct Snapshot {
    keys: JwkSet,
    max_age: Option<Duration>,
}

/// The key cache of one issuer. Reads are lock-free; fetches are single-flight.
#[derive(Debug)]
pub struct JwksCache {
    source: JwksSource,
    /// `jwks_url`, or the `jwks_uri` once discovery succeeded.
    url: OnceLock<String>,
    client: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    current: ArcSwapOption<Snapshot>,
    /// Serializes fetches; holds the time of the last refetch caused by an unknown `kid`.
    fetch_lock: AsyncMutex<Option<Instant>>,
    counters: Counters,
}

impl JwksCache {
    /// A cache that fetches nothing until [`JwksCache::refresh`] or [`JwksCache::maintain`].
    pub fn new(
        source: JwksSource,
        client: reqwest::Client,
        refresh: Duration,
        min_refetch: Duration,
    ) -> Self {
        let url = OnceLock::new();
        if let JwksSource::Url(u) = &source {
            let _ = url.set(u.clone());
        }
        Self {
            source,
            url,
            client,
            refresh,
            min_refetch,
            current: ArcSwapOption::empty(),
            fetch_lock: AsyncMutex::new(None),
            counters: Counters::default(),
        }
    }

    /// The JWKS URL, once known.
    pub fn url(&self) -> Option<&str> {
        self.url.get().map(String::as_str)
    }

    /// True once a key set has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> JwksStats {
        let c = &self.counters;
        let last = c.last_success_unix.load(Ordering::Relaxed);
        JwksStats {
            fetches_ok: c.fetches_ok.load(Ordering::Relaxed),
            fetches_failed: c.fetches_failed.load(Ordering::Relaxed),
            unknown_kid_refetches: c.unknown_kid_refetches.load(Ordering::Relaxed),
            unknown_kid_throttled: c.unknown_kid_throttled.load(Ordering::Relaxed),
            keys: c.keys.load(Ordering::Relaxed),
            last_success_unix: (last > 0).then_some(last),
        }
    }

    /// Fetches now, regardless of the refetch limit (start-up and background refresh).
    /// Scheduled fetches do not count against the unknown-`kid` limit, which exists to keep
    /// a flood of made-up kids from hammering the identity provider.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _serialized = self.fetch_lock.lock().await;
        self.fetch_and_store().await
    }

    /// Keeps the key set fresh until `shutdown`: the first fetch now (retried with backoff until
    /// it succeeds), then one every [`JwksCache::refresh_interval`]. Failures are logged and
    /// counted; the last good set keeps serving.
    pub async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let delay = match self.refresh().await {
                Ok(_) => {
                    failures = 0;
                    self.refresh_interval()
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry = retry_delay(failures, self.refresh);
                    if self.is_loaded() {
                        tracing::warn!(error = %e, retry_in = ?retry, "JWKS refresh failed; keeping the last good key set");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?retry, "loading the JWKS failed; not ready until it loads");
                    }
                    retry
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// How long the current set is used before the next scheduled fetch: `jwks_refresh_secs`,
    /// or the server's `max-age` when that is shorter (never below [`MIN_REFRESH`]). A longer
    /// `max-age` does not stretch the interval: `jwks_refresh_secs` bounds how long a key the
    /// identity provider has withdrawn can still be accepted.
    pub fn refresh_interval(&self) -> Duration {
        let max_age = self.current.load().as_ref().and_then(|s| s.max_age);
        refresh_interval(self.refresh, max_age)
    }

    /// The key with this `kid`; on a miss, one refetch if the last unknown-`kid` refetch is
    /// older than `jwks_min_refetch_secs` (concurrent misses wait for the same fetch).
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
            self.counters
                .unknown_kid_throttled
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(Instant::now());
        self.counters
            .unknown_kid_refetches
            .fetch_add(1, Ordering::Relaxed);
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

    /// One fetch (after discovery if the URL is not known yet), counted either way.
    async fn fetch_and_store(&self) -> Result<usize, JwksError> {
        let result = self.fetch().await;
        match &result {
            Ok(snapshot) => {
                let n = snapshot.keys.keys.len();
                let c = &self.counters;
                c.keys.store(n as u64, Ordering::Relaxed);
                c.last_success_unix
                    .store(jsonwebtoken::get_current_timestamp(), Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.fetches_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let snapshot = result?;
        let n = snapshot.keys.keys.len();
        // Key ids only: key material never goes to the log.
        let kids: Vec<&str> = snapshot
            .keys
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.as_deref())
            .collect();
        tracing::info!(url = self.url().unwrap_or_default(), keys = n, ?kids, max_age = ?snapshot.max_age, "JWKS loaded");
        self.current.store(Some(Arc::new(snapshot)));
        // Counted after the store: the token cache reads this count as the key-set epoch,
        // and must never see the new epoch while the old set still serves.
        self.counters.fetches_ok.fetch_add(1, Ordering::Release);
        Ok(n)
    }

    async fn fetch(&self) -> Result<Snapshot, JwksError> {
        let url = match (self.url(), &self.source) {
            (Some(url), _) => url,
            (None, JwksSource::Discovery { issuer }) => {
                let found = discover_jwks_uri(&self.client, issuer).await?;
                tracing::info!(issuer, jwks_uri = %found, "OIDC discovery done");
                let _ = self.url.set(found);
                self.url().unwrap_or_default()
            }
            (None, JwksSource::Url(url)) => url,
        };
        fetch_jwks(&self.client, url).await
    }
}

/// The scheduled refresh interval for a configured `refresh` and a server `max-age`.
fn refresh_interval(refresh: Duration, max_age: Option<Duration>) -> Duration {
    match max_age {
        Some(age) => age.clamp(MIN_REFRESH, refresh.max(MIN_REFRESH)),
        None => refresh,
    }
}

/// The wait after `failures` consecutive failed fetches.
fn retry_delay(failures: u32, refresh: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FIRST_RETRY
        .saturating_mul(1 << exp)
        .min(MAX_RETRY)
        .min(refresh.max(FIRST_RETRY))
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<Snapshot, JwksError> {
    // Parse leniently: keys of types we do not support are skipped, not fatal.
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let (body, max_age) = fetch_bytes(client, url).await?;
    let raw: RawSet = serde_json::from_slice(&body).map_err(|e| JwksError::Parse {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|k| match serde_json::from_value::<Jwk>(k) {
            // A symmetric key in a public key set is a misconfiguration at best; never use one.
            Ok(jwk) if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) => {
                tracing::warn!(url, kid = ?jwk.common.key_id, "skipping a symmetric (oct) key published in a JWKS");
                None
            }
            Ok(jwk) => Some(jwk),
            Err(e) => {
                tracing::debug!(url, error = %e, "skipping a JWK we cannot use");
                None
            }
        })
        .collect();
    Ok(Snapshot {
        keys: JwkSet { keys },
        max_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_shortens_but_never_stretches_the_refresh() {
        let s = Duration::from_secs;
        assert_eq!(refresh_interval(s(300), None), s(300));
        assert_eq!(refresh_interval(s(300), Some(s(60))), s(60));
        assert_eq!(refresh_interval(s(300), Some(s(86_400))), s(300));
        assert_eq!(refresh_interval(s(300), Some(Duration::ZERO)), MIN_REFRESH);
    }

    #[test]
    fn retries_back_off_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(1, s(300)), FIRST_RETRY);
        assert_eq!(retry_delay(2, s(300)), FIRST_RETRY * 2);
        assert_eq!(retry_delay(40, s(300)), MAX_RETRY);
        assert_eq!(retry_delay(40, s(5)), s(5));
    }

    /// A cache whose endpoint refuses connections: the failure is counted, nothing is loaded.
    #[tokio::test]
    async fn failures_are_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        drop(listener);
        let cache = JwksCache::new(
            JwksSource::Url(url),
            reqwest::Client::new(),
            Duration::from_secs(300),
            Duration::from_secs(10),
        );
        assert!(cache.refresh().await.is_err());
        assert!(cache.key(Some("k")).await.is_none());
        let stats = cache.stats();
        assert_eq!(stats.fetches_ok, 0);
        assert_eq!(stats.fetches_failed, 2);
        assert_eq!(stats.unknown_kid_refetches, 1);
        assert_eq!(stats.last_success_unix, None);
        assert!(!cache.is_loaded());
    }
}
