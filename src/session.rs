//! The session registry: id → session, bound to the principal that created it, with the caps
//! of DESIGN §3 enforced before anything is spawned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::auth::PrincipalKey;
use crate::child::ChildHandle;
use crate::mux::Mux;
use crate::transport::standalone::Standalone;

/// How a session talks to its child.
#[derive(Debug)]
pub enum Pipe {
    /// Legacy HTTP+SSE: every child line goes to the session's one stream.
    Direct(Direct),
    /// Streamable HTTP: answers routed to each request's stream; the rest to the GET stream.
    Mux {
        mux: Arc<Mux>,
        standalone: Arc<Standalone>,
        /// Set when the child serves several sessions (`child_scope = "principal" | "shared"`).
        share: Option<Arc<crate::pool::SessionShare>>,
    },
}

/// The legacy transport's pipe: the child, a way for the proxy to add its own answers to the
/// stream (denied tool calls), and the `tools/list` requests whose results must be filtered,
/// with the scopes of the caller who sent each.
#[derive(Debug)]
pub struct Direct {
    pub child: ChildHandle,
    pub inject: tokio::sync::mpsc::Sender<String>,
    pub list_requests: Mutex<HashMap<String, Vec<String>>>,
}

impl Direct {
    /// Records a `tools/list` request id whose answer is filtered for `scopes`.
    pub fn filter_answer(&self, id: String, scopes: Vec<String>) {
        let mut map = lock(&self.list_requests);
        // Bounded: a client that never gets answers cannot grow this without limit.
        if map.len() < 1024 {
            map.insert(id, scopes);
        }
    }

    /// The scopes to filter this answer for, if it answers a recorded `tools/list`.
    pub fn take_filter(&self, id: &str) -> Option<Vec<String>> {
        let mut map = lock(&self.list_requests);
        if map.is_empty() {
            return None;
        }
        map.remove(id)
    }
}

/// One MCP conversation and the child that serves it.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub owner: PrincipalKey,
    pub server: String,
    pub pipe: Pipe,
    /// A number unique among sessions, naming this session inside a shared multiplexer.
    pub tag: u64,
    created: Instant,
    /// Milliseconds after `created` of the last client or child activity.
    last_activity_ms: AtomicU64,
    _slot: Slot,
}

impl Session {
    pub fn child(&self) -> &ChildHandle {
        match &self.pipe {
            Pipe::Direct(direct) => &direct.child,
            Pipe::Mux { mux, .. } => mux.child(),
        }
    }

    pub fn touch(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last activity.
    pub fn idle_for(&self) -> std::time::Duration {
        let now = self.created.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(
            now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)),
        )
    }
}

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("the proxy has reached max_sessions")]
    Global,
    #[error("this principal has reached max_sessions_per_principal")]
    PerPrincipal,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_principal: HashMap<PrincipalKey, usize>,
}

/// A counted place for one session, taken before spawning; released on drop.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    owner: PrincipalKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_principal.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                counts.per_principal.remove(&self.owner);
            }
        }
    }
}

#[derive(Debug)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    counts: Arc<Mutex<Counts>>,
    max_sessions: usize,
    max_per_principal: usize,
    /// Woken whenever a session is removed (drain waits for the registry to empty).
    removed: tokio::sync::Notify,
}

/// A fresh unguessable session id: 122 random bits, visible ASCII only (spec 2025-11-25
/// Transports §Session Management).
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionRegistry {
    pub fn new(max_sessions: usize, max_per_principal: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            counts: Arc::new(Mutex::new(Counts::default())),
            max_sessions,
            max_per_principal,
            removed: tokio::sync::Notify::new(),
        }
    }

    /// Takes a slot for a new session of `owner`, or says which cap is reached.
    pub fn reserve(&self, owner: &PrincipalKey) -> Result<Slot, CapError> {
        let mut counts = lock(&self.counts);
        if counts.total >= self.max_sessions {
            return Err(CapError::Global);
        }
        let mine = counts.per_principal.get(owner).copied().unwrap_or(0);
        if mine >= self.max_per_principal {
            return Err(CapError::PerPrincipal);
        }
        counts.total += 1;
        *counts.per_principal.entry(owner.clone()).or_insert(0) += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            owner: owner.clone(),
        })
    }

    /// Registers a session under `id` (from [`new_session_id`]).
    pub fn insert(&self, id: String, slot: Slot, server: &str, pipe: Pipe) -> Arc<Session> {
        static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
        let session = Arc::new(Session {
            id: id.clone(),
            owner: slot.owner.clone(),
            server: server.to_owned(),
            pipe,
            tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            created: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            _slot: slot,
        });
        lock(&self.sessions).insert(id, session.clone());
        session
    }

    /// The session with this id if `owner` owns it. Someone else's session is answered
    /// exactly like an unknown one (DESIGN §1), so ids cannot be probed.
    pub fn get(&self, id: &str, owner: &PrincipalKey, server: &str) -> Option<Arc<Session>> {
        let session = lock(&self.sessions).get(id).cloned()?;
        (session.owner == *owner && session.server == server).then_some(session)
    }

    /// Removes a session and stops its child.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let session = lock(&self.sessions).remove(id)?;
        // A child shared with other sessions stays; the pool reaps it when idle.
        if !matches!(session.pipe, Pipe::Mux { share: Some(_), .. }) {
            session.child().stop();
        }
        self.removed.notify_waiters();
        Some(session)
    }

    /// Resolves once no session is left (graceful drain).
    pub async fn wait_empty(&self) {
        loop {
            // Register for the wake-up before looking, so a removal in between is not missed.
            let removed = self.removed.notified();
            tokio::pin!(removed);
            removed.as_mut().enable();
            if self.is_empty() {
                return;
            }
            removed.await;
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session (for shutdown and idle reaping).
    pub fn all(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sub: &str) -> PrincipalKey {
        PrincipalKey {
            iss: "i".into(),
            sub: sub.into(),
        }
    }

    #[test]
    fn caps_are_counted_and_released() {
        let r = SessionRegistry::new(3, 2);
        let a1 = r.reserve(&key("a")).expect("1");
        let _a2 = r.reserve(&key("a")).expect("2");
        assert_eq!(r.reserve(&key("a")).err(), Some(CapError::PerPrincipal));
        let _b1 = r.reserve(&key("b")).expect("3");
        assert_eq!(r.reserve(&key("c")).err(), Some(CapError::Global));
        drop(a1);
        assert!(r.reserve(&key("a")).is_ok());
    }
}
