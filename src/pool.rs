//! Children that serve modern-era (2026-07-28) traffic, which has no sessions: one child per
//! `(server, principal)` — or one per server for `child_scope = "shared"` — spawned on first use,
//! reused by every request of that principal (ids rewritten by [`Mux`]), and dropped when it
//! exits or idles out (DESIGN §2, §3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::task::TaskTracker;

use crate::auth::{Principal, PrincipalKey};
use crate::bridge::ChildBridge;
use crate::child::ChildError;
use crate::config::ChildScope;
use crate::mux::Mux;
use crate::server::{ClaimEnvError, ServerRuntime};
use crate::session::{CapError, SessionRegistry, SessionShare, Slot};
use crate::sync::lock;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    server: Arc<str>,
    /// The [`ServerRuntime::id`]: children of a definition a reload replaced are not reused.
    runtime: u64,
    /// `None` for a shared child.
    owner: Option<PrincipalKey>,
    /// Serves session-era (initialize-based) sessions rather than modern requests.
    sessions: bool,
}

/// A pool child: its multiplexer, the era bridge of a child serving modern requests, and what
/// its sessions share.
pub(crate) struct PoolChild {
    pub(crate) mux: Arc<Mux>,
    /// The child's era bridge, attached by its first modern request (see [`crate::bridge`]).
    pub(crate) bridge: OnceLock<Arc<ChildBridge>>,
    share: Option<Arc<SessionShare>>,
    _slot: Slot,
    created: Instant,
    last_used_ms: AtomicU64,
}

impl PoolChild {
    /// Requests in flight, counting the `subscriptions/listen` streams the era bridge serves
    /// itself, so the idle reaper leaves their child alone.
    pub(crate) fn in_flight(&self) -> usize {
        self.mux.in_flight() + self.bridge.get().map_or(0, |b| b.listeners())
    }

    fn touch(&self) {
        self.last_used_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed)))
    }
}

/// Restarts after a crash wait 100 ms, doubling per crash in a row, up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A crash later than this after the previous one starts a new count.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Crashes in a row after which the server counts as crash-looping: no restart for
/// `CRASH_WINDOW`, requests get 503.
pub const CRASH_LOOP_LIMIT: u32 = 5;

#[derive(Debug, Clone, Copy)]
struct Crashes {
    count: u32,
    last: Instant,
    next_allowed: Instant,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("the server crashed {crashes} times in a row; next start in {retry_after:?}")]
    Backoff { crashes: u32, retry_after: Duration },
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error(transparent)]
    Spawn(#[from] ChildError),
    #[error(transparent)]
    Claims(#[from] ClaimEnvError),
}

#[derive(Default)]
pub(crate) struct ChildPool {
    map: Mutex<HashMap<PoolKey, Arc<PoolChild>>>,
    crashes: Mutex<HashMap<PoolKey, Crashes>>,
}

impl ChildPool {
    /// The child for this principal on this server, spawned if there is none (or it died).
    /// A pool child takes a session slot, so the caps bound it too.
    pub(crate) fn get_or_spawn(
        self: &Arc<Self>,
        server: &ServerRuntime,
        principal: &Principal,
        sessions: &SessionRegistry,
        tracker: &TaskTracker,
    ) -> Result<Arc<PoolChild>, PoolError> {
        self.entry(server, principal, sessions, tracker, false)
    }

    /// The child that the session-era sessions of this principal (or of everyone, for
    /// `shared`) use under `child_scope = "principal" | "shared"`, with what they share.
    pub(crate) fn get_or_spawn_for_sessions(
        self: &Arc<Self>,
        server: &ServerRuntime,
        principal: &Principal,
        sessions: &SessionRegistry,
        tracker: &TaskTracker,
    ) -> Result<(Arc<Mux>, Arc<SessionShare>), PoolError> {
        let entry = self.entry(server, principal, sessions, tracker, true)?;
        let share = entry.share.clone().unwrap_or_default();
        Ok((entry.mux.clone(), share))
    }

    fn entry(
        self: &Arc<Self>,
        server: &ServerRuntime,
        principal: &Principal,
        sessions: &SessionRegistry,
        tracker: &TaskTracker,
        for_sessions: bool,
    ) -> Result<Arc<PoolChild>, PoolError> {
        let shared = server.config.child_scope == ChildScope::Shared;
        let key = PoolKey {
            server: server.name.clone(),
            runtime: server.id,
            owner: (!shared).then(|| principal.key()),
            sessions: for_sessions,
        };
        let mut map = lock(&self.map);
        if let Some(entry) = map.get(&key) {
            if !entry.mux.child().has_exited() {
                entry.touch();
                return Ok(entry.clone());
            }
            map.remove(&key);
        }
        if let Some(c) = lock(&self.crashes).get(&key)
            && Instant::now() < c.next_allowed
        {
            return Err(PoolError::Backoff {
                crashes: c.count,
                retry_after: c.next_allowed - Instant::now(),
            });
        }
        let slot = sessions.reserve(&principal.key())?;
        let spec = server.child_spec((!shared).then_some(principal))?;
        let span = match &key.owner {
            Some(owner) => tracing::info_span!("child", server = %server.name, sub = %owner.sub),
            None => tracing::info_span!("child", server = %server.name, scope = "shared"),
        };
        let mux = Mux::spawn(&spec, span, tracker, None)?;
        let share = for_sessions.then(|| Arc::new(SessionShare::default()));
        if let Some(share) = &share {
            mux.set_unrouted(share.broadcast.clone());
        }
        let entry = Arc::new(PoolChild {
            mux: mux.clone(),
            bridge: OnceLock::new(),
            share,
            _slot: slot,
            created: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        });
        let weak_entry = Arc::downgrade(&entry);
        let result = entry.clone();
        map.insert(key.clone(), entry);
        drop(map);
        // Forget the child when it exits, so the next request spawns a fresh one. Only weak
        // references here: a reaped entry must be able to drop (and so stop) its child.
        let pool = Arc::downgrade(self);
        let exited = mux.child().exited_token();
        tracker.spawn(async move {
            exited.cancelled().await;
            if let Some(pool) = pool.upgrade() {
                let mut map = lock(&pool.map);
                if map
                    .get(&key)
                    .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), weak_entry.as_ptr()))
                {
                    // Still in the map: nobody stopped it, it exited by itself.
                    map.remove(&key);
                    drop(map);
                    let _ = pool.record_crash(&key);
                }
            }
        });
        Ok(result)
    }

    /// Exponential backoff for restarts of a child that keeps exiting (DESIGN §6); returns
    /// the delay before the next start.
    fn record_crash(&self, key: &PoolKey) -> Duration {
        let now = Instant::now();
        let mut crashes = lock(&self.crashes);
        let c = crashes.entry(key.clone()).or_insert(Crashes {
            count: 0,
            last: now,
            next_allowed: now,
        });
        if now.duration_since(c.last) > CRASH_WINDOW {
            c.count = 0;
        }
        c.count += 1;
        c.last = now;
        let backoff = if c.count > CRASH_LOOP_LIMIT {
            CRASH_WINDOW
        } else {
            (Duration::from_millis(100) * 2u32.saturating_pow(c.count - 1)).min(MAX_BACKOFF)
        };
        c.next_allowed = now + backoff;
        tracing::warn!(server = %key.server, crashes = c.count, backoff_ms = backoff.as_millis() as u64, "child exited; restart delayed");
        backoff
    }

    /// Stops children with no request in flight for longer than `idle`.
    pub(crate) fn reap_idle(&self, idle: Duration) -> usize {
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|_, e| e.in_flight() > 0 || e.idle_for() < idle);
        before - map.len()
    }

    /// Forgets the children of a runtime a reload replaced or removed: new requests get a child
    /// of the new definition, while each old one finishes what it serves and stops when its
    /// last user lets go (a request in flight, a session on a shared child).
    pub(crate) fn retire(&self, runtime: u64) -> usize {
        lock(&self.crashes).retain(|k, _| k.runtime != runtime);
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|k, _| k.runtime != runtime);
        before - map.len()
    }

    /// Stops every child now, also one still answering requests (whose callers then get the
    /// child-exit error): the end of a drain's grace.
    pub(crate) fn stop_all(&self) {
        let mut map = lock(&self.map);
        for entry in map.values() {
            entry.mux.child().stop();
        }
        map.clear();
    }

    /// Requests in flight across every pool child.
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.map).values().map(|e| e.in_flight()).sum()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Restarts wait 100 ms, doubling per crash in a row; past the limit the server is held for
    /// the whole window; a crash after a quiet window starts the count again. Time is paused.
    #[tokio::test(start_paused = true)]
    async fn restart_backoff_doubles_then_holds_then_forgets() {
        let pool = ChildPool::default();
        let key = PoolKey {
            server: "s".into(),
            runtime: 1,
            owner: None,
            sessions: false,
        };
        let delays: Vec<u64> = (0..CRASH_LOOP_LIMIT + 1)
            .map(|_| pool.record_crash(&key).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 60_000]);
        tokio::time::advance(CRASH_WINDOW + Duration::from_secs(1)).await;
        assert_eq!(pool.record_crash(&key), Duration::from_millis(100));
    }
}
