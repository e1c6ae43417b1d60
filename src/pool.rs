//! Children that serve modern-era (2026-07-28) traffic, which has no sessions: one child per
//! `(server, principal)` — or one per server for `child_scope = "shared"` — spawned on first use,
//! reused by every request of that principal (ids rewritten by [`Mux`]), and dropped when it
//! exits or idles out (DESIGN §2, §3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;

use crate::auth::{Principal, PrincipalKey};
use crate::child::ChildError;
use crate::config::ChildScope;
use crate::mux::Mux;
use crate::session::{CapError, SessionRegistry, Slot};
use crate::state::{ClaimEnvError, ServerRuntime};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    server: String,
    /// `None` for a shared child.
    owner: Option<PrincipalKey>,
}

struct Entry {
    mux: Arc<Mux>,
    _slot: Slot,
    created: Instant,
    last_used_ms: AtomicU64,
}

impl Entry {
    fn touch(&self) {
        self.last_used_ms
            .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Cap(#[from] CapError),
    #[error(transparent)]
    Spawn(#[from] ChildError),
    #[error(transparent)]
    Claims(#[from] ClaimEnvError),
}

#[derive(Default)]
pub struct ChildPool {
    map: Mutex<HashMap<PoolKey, Arc<Entry>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ChildPool {
    /// The child for this principal on this server, spawned if there is none (or it died).
    /// A pool child takes a session slot, so the caps bound it too.
    pub fn get_or_spawn(
        self: &Arc<Self>,
        server: &ServerRuntime,
        principal: &Principal,
        sessions: &SessionRegistry,
        tracker: &TaskTracker,
    ) -> Result<Arc<Mux>, PoolError> {
        let shared = server.config.child_scope == ChildScope::Shared;
        let key = PoolKey {
            server: server.name.clone(),
            owner: (!shared).then(|| principal.key()),
        };
        let mut map = lock(&self.map);
        if let Some(entry) = map.get(&key) {
            if !entry.mux.child().has_exited() {
                entry.touch();
                return Ok(entry.mux.clone());
            }
            map.remove(&key);
        }
        let slot = sessions.reserve(&principal.key())?;
        let spec = server.child_spec((!shared).then_some(principal))?;
        let span = match &key.owner {
            Some(owner) => tracing::info_span!("child", server = %server.name, sub = %owner.sub),
            None => tracing::info_span!("child", server = %server.name, scope = "shared"),
        };
        let mux = Mux::spawn(&spec, span, tracker)?;
        let entry = Arc::new(Entry {
            mux: mux.clone(),
            _slot: slot,
            created: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        });
        let weak_entry = Arc::downgrade(&entry);
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
                    map.remove(&key);
                }
            }
        });
        Ok(mux)
    }

    /// Stops children with no request in flight for longer than `idle`.
    pub fn reap_idle(&self, idle: Duration) -> usize {
        let mut map = lock(&self.map);
        let before = map.len();
        map.retain(|_, e| e.mux.in_flight() > 0 || e.idle_for() < idle);
        before - map.len()
    }

    /// Stops every child (shutdown).
    pub fn clear(&self) {
        lock(&self.map).clear();
    }

    /// Requests in flight across every pool child.
    pub fn in_flight(&self) -> usize {
        lock(&self.map).values().map(|e| e.mux.in_flight()).sum()
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
