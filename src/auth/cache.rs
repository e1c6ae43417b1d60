//! A bounded cache of validated tokens, so a client that sends the same bearer token on every
//! POST pays the signature check once (RS256 ≈ 21 µs, ES256 ≈ 55 µs per verification;
//! DEPENDENCIES.md) instead of on every message.
//!
//! - Keyed by the SHA-256 of the token: the token itself is never stored, and a collision
//!   (which would hand one caller another's identity) is out of reach.
//! - An entry is never used at or past the token's `exp` (no leeway: leeway is for clock skew
//!   with the issuer, a cached answer needs none), nor longer than [`MAX_ENTRY_AGE`] after it
//!   was validated.
//! - Each entry carries the key-set epoch it was validated under (the caller's count of JWKS
//!   fetches, read before validating); a lookup under another epoch misses, so a key withdrawn
//!   from a JWKS stops working at the refresh that drops it, as without the cache.
//! - Only successful validations are cached; a token that fails is checked again next time.
//! - At most `capacity` entries: when full, expired entries go first, then arbitrary ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use super::Principal;

/// Default number of cached tokens.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;
/// Longest time an entry is trusted after its token was validated.
pub(crate) const MAX_ENTRY_AGE: Duration = Duration::from_secs(300);

type Key = [u8; 32];

struct Entry {
    principal: Principal,
    epoch: u64,
    /// `exp` (seconds since the epoch): unusable from this second on.
    exp: u64,
    /// Unusable from this instant on.
    stale_at: Instant,
}

/// Validated tokens by SHA-256, bounded in size and in time.
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

fn key(token: &str) -> Key {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables caching).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The principal of a token validated before under key-set `epoch`, if its entry is
    /// still usable.
    pub(crate) fn get(&self, token: &str, epoch: u64) -> Option<Principal> {
        self.get_at(
            token,
            epoch,
            jsonwebtoken::get_current_timestamp(),
            Instant::now(),
        )
    }

    /// Remembers a token that has just been validated under key-set `epoch` (read before
    /// validating).
    pub(crate) fn insert(&self, token: &str, principal: &Principal, epoch: u64) {
        self.insert_at(
            token,
            principal,
            epoch,
            jsonwebtoken::get_current_timestamp(),
            Instant::now(),
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get_at(&self, token: &str, epoch: u64, now: u64, instant: Instant) -> Option<Principal> {
        if self.capacity == 0 {
            return None;
        }
        let k = key(token);
        let mut entries = self.lock();
        let entry = entries.get(&k)?;
        if now < entry.exp && instant < entry.stale_at && entry.epoch == epoch {
            return Some(entry.principal.clone());
        }
        entries.remove(&k);
        None
    }

    fn insert_at(
        &self,
        token: &str,
        principal: &Principal,
        epoch: u64,
        now: u64,
        instant: Instant,
    ) {
        if self.capacity == 0 || principal.exp <= now {
            return;
        }
        let k = key(token);
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&k) {
            entries.retain(|_, e| now < e.exp && instant < e.stale_at);
            // Still full: drop an eighth, in the map's (arbitrary) order. Amortized, this
            // keeps inserts O(1) without a second index for LRU order.
            if entries.len() >= self.capacity {
                let drop: Vec<Key> = entries
                    .keys()
                    .take((self.capacity / 8).max(1))
                    .copied()
                    .collect();
                for k in drop {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(
            k,
            Entry {
                principal: principal.clone(),
                epoch,
                exp: principal.exp,
                stale_at: instant + MAX_ENTRY_AGE,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(sub: &str, exp: u64) -> Principal {
        Principal {
            iss: "i".into(),
            sub: sub.into(),
            scopes: Default::default(),
            exp,
            claims: Default::default(),
        }
    }

    #[test]
    fn hit_until_exp_never_past_it() {
        let c = TokenCache::new(10);
        let t0 = Instant::now();
        c.insert_at("tok", &principal("alice", 1000), 0, 900, t0);
        assert_eq!(
            c.get_at("tok", 0, 999, t0).map(|p| p.sub),
            Some("alice".into())
        );
        assert!(c.get_at("other", 0, 999, t0).is_none());
        assert!(c.get_at("tok", 0, 1000, t0).is_none(), "at exp: revalidate");
        assert!(c.is_empty(), "expired entry dropped on lookup");
    }

    #[test]
    fn a_new_key_set_epoch_misses() {
        let c = TokenCache::new(10);
        let t0 = Instant::now();
        c.insert_at("tok", &principal("alice", 1000), 3, 1, t0);
        assert!(c.get_at("tok", 3, 2, t0).is_some());
        assert!(
            c.get_at("tok", 4, 2, t0).is_none(),
            "keys refetched: revalidate"
        );
    }

    #[test]
    fn entries_age_out() {
        let c = TokenCache::new(10);
        let t0 = Instant::now();
        c.insert_at("tok", &principal("alice", u64::MAX), 0, 0, t0);
        assert!(c.get_at("tok", 0, 1, t0 + MAX_ENTRY_AGE).is_none());
    }

    #[test]
    fn expired_tokens_are_not_cached() {
        let c = TokenCache::new(10);
        c.insert_at("tok", &principal("alice", 100), 0, 100, Instant::now());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_size() {
        let c = TokenCache::new(64);
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert_at(&format!("tok{i}"), &principal("a", 1000), 0, 1, t0);
            assert!(c.len() <= 64);
        }
        assert!(
            c.get_at("tok999", 0, 2, t0).is_some(),
            "latest insert is kept"
        );
        // Expired entries are the first to go.
        let c = TokenCache::new(4);
        for i in 0..3 {
            c.insert_at(&format!("old{i}"), &principal("a", 10), 0, 1, t0);
        }
        c.insert_at("keep", &principal("a", 1000), 0, 1, t0);
        c.insert_at("new", &principal("a", 1000), 0, 20, t0);
        assert_eq!(c.len(), 2);
        assert!(c.get_at("keep", 0, 20, t0).is_some());
    }

    #[test]
    fn zero_capacity_disables() {
        let c = TokenCache::new(0);
        c.insert_at("tok", &principal("a", 1000), 0, 1, Instant::now());
        assert!(c.get_at("tok", 0, 2, Instant::now()).is_none());
    }
}
