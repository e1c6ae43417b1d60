//! Rate limits (`[limits]`, `[servers.NAME.limits]`): token buckets in memory, one per client
//! address (checked before authentication) and one per principal (checked right after it),
//! both before anything is spawned. Buckets of idle keys are dropped, so a flood of distinct
//! keys cannot grow memory without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use tokio::time::Instant;

use crate::auth::{Principal, PrincipalKey};
use crate::config::{Config, RateLimits};
use crate::sync::lock;

/// Buckets kept before idle ones are swept; the threshold then doubles with what is left.
const FIRST_SWEEP: usize = 1024;

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets<K> {
    map: HashMap<K, Bucket>,
    next_sweep: usize,
}

/// A token bucket per key: `rate` tokens a second, at most `burst`.
pub(crate) struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets<K>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `None` when the rate is 0 (off). A burst of 0 means twice the rate, at least 1.
    pub(crate) fn new(rate: f64, burst: u32) -> Option<Self> {
        if rate <= 0.0 {
            return None;
        }
        let burst = if burst == 0 {
            (2.0 * rate).max(1.0)
        } else {
            f64::from(burst)
        };
        Some(Self {
            rate,
            burst,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                next_sweep: FIRST_SWEEP,
            }),
        })
    }

    /// Takes a token for `key`, or says how long until one is available.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.map.len() >= buckets.next_sweep {
            self.sweep(&mut buckets, now);
        }
        let bucket = buckets.map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = self.refill(bucket, now);
        bucket.tokens = refilled;
        bucket.at = now;
        if refilled >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // A tiny rate (validation accepts any finite rate ≥ 0) can need longer than a
            // `Duration` holds: that is "not in this lifetime", not a panic.
            let wait = (1.0 - refilled) / self.rate;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }

    fn refill(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Drops the buckets that are full again: their keys have been idle long enough that a
    /// fresh bucket is the same.
    fn sweep(&self, buckets: &mut Buckets<K>, now: Instant) {
        buckets.map.retain(|_, b| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate) < self.burst
        });
        buckets.next_sweep = (buckets.map.len() * 2).max(FIRST_SWEEP);
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        lock(&self.buckets).map.len()
    }
}

/// The limiters of one scope of endpoints: the whole proxy, or one server that overrides it.
#[derive(Default)]
struct Scope {
    principal: Option<RateLimiter<PrincipalKey>>,
    ip: Option<RateLimiter<IpAddr>>,
}

impl Scope {
    fn new(limits: &RateLimits) -> Self {
        Self {
            principal: RateLimiter::new(limits.principal_rate_per_sec, limits.principal_burst),
            ip: RateLimiter::new(limits.ip_rate_per_sec, limits.ip_burst),
        }
    }
}

/// Which limit refused a request (the `scope` label of `mcp_proxy_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    Ip(Duration),
    Principal(Duration),
}

/// Every rate limiter of the proxy.
#[derive(Default)]
pub(crate) struct Limits {
    global: Scope,
    servers: HashMap<String, Scope>,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            global: Scope::new(&config.limits.rates()),
            servers: config
                .servers
                .iter()
                .filter_map(|(name, s)| s.limits.as_ref().map(|l| (name.clone(), Scope::new(l))))
                .collect(),
        }
    }

    fn scope(&self, server: &str) -> &Scope {
        self.servers.get(server).unwrap_or(&self.global)
    }

    /// The client-address limit of `server`'s endpoints (before authentication).
    pub(crate) fn check_ip(&self, server: &str, addr: Option<IpAddr>) -> Result<(), Limited> {
        match (&self.scope(server).ip, addr) {
            (Some(limiter), Some(addr)) => limiter.check(&addr).map_err(Limited::Ip),
            _ => Ok(()),
        }
    }

    /// The per-principal limit of `server`'s endpoints (right after authentication); the key
    /// is built only when the limit is on.
    pub(crate) fn check_principal(&self, server: &str, who: &Principal) -> Result<(), Limited> {
        match &self.scope(server).principal {
            Some(limiter) => limiter.check(&who.key()).map_err(Limited::Principal),
            None => Ok(()),
        }
    }
}

/// The client's address: the first `X-Forwarded-For` entry when forwarded headers are trusted
/// (and it parses), else the peer of the connection.
pub(crate) fn client_address(parts: &Parts, trust_forwarded: bool) -> Option<IpAddr> {
    address_of(&parts.headers, &parts.extensions, trust_forwarded)
}

/// As [`client_address`], from a request's headers and extensions.
pub(crate) fn address_of(
    headers: &HeaderMap,
    extensions: &http::Extensions,
    trust_forwarded: bool,
) -> Option<IpAddr> {
    if trust_forwarded && let Some(ip) = forwarded_for(headers) {
        return Some(ip);
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    value.split(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst, then one token per 1/rate seconds, with the wait told exactly; idle keys are
    /// swept. Time is paused.
    #[tokio::test(start_paused = true)]
    async fn buckets_refill_at_the_rate_and_idle_ones_go() {
        let limiter = RateLimiter::new(5.0, 0).expect("on");
        for _ in 0..10 {
            assert_eq!(limiter.check(&"a"), Ok(()), "burst of twice the rate");
        }
        let wait = limiter.check(&"a").expect_err("empty");
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        assert_eq!(limiter.check(&"b"), Ok(()), "other keys are unaffected");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(limiter.check(&"a"), Ok(()));
        assert!(limiter.check(&"a").is_err());
        assert!(RateLimiter::<u32>::new(0.0, 5).is_none(), "0 is off");

        let many = RateLimiter::new(1.0, 1).expect("on");
        for k in 0..FIRST_SWEEP as u32 {
            let _ = many.check(&k);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let _ = many.check(&u32::MAX);
        assert_eq!(many.keys(), 1, "full buckets of idle keys were dropped");
    }

    /// A rate the config accepts (any finite number ≥ 0) but so small that the wait for the
    /// next token is beyond what a `Duration` holds: the refusal must still be a 429, not a
    /// panic of the connection's task.
    #[test]
    fn a_tiny_rate_waits_without_overflow() {
        let limiter = RateLimiter::new(1e-20, 0).expect("on");
        assert_eq!(limiter.check(&"a"), Ok(()));
        let wait = limiter.check(&"a").expect_err("empty");
        assert!(wait.as_secs() > 1_000_000_000, "{wait:?}");
    }
}
