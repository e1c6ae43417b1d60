//! The session registry: id → session, bound to the principal that created it, with the caps
//! of DESIGN §3 enforced before anything is spawned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Kind, Session, lock};
use crate::auth::PrincipalKey;
use crate::mux::Mux;

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CapError {
    #[error("the proxy has reached max_sessions")]
    Global,
    #[error("this principal has reached max_sessions_per_principal")]
    PerPrincipal,
}

impl CapError {
    /// The metrics label of the cap.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CapError::Global => "max_sessions",
            CapError::PerPrincipal => "max_sessions_per_principal",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_principal: HashMap<PrincipalKey, usize>,
}

/// A counted place for one session, taken before spawning; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<Counts>>,
    pub(super) owner: PrincipalKey,
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
pub(crate) struct SessionRegistry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    counts: Arc<Mutex<Counts>>,
    /// The caps; a reload may change them (sessions over a lowered cap go on).
    max_sessions: AtomicUsize,
    max_per_principal: AtomicUsize,
    /// Woken whenever a session is removed (drain waits for the registry to empty).
    removed: tokio::sync::Notify,
}

/// A fresh unguessable session id: 122 random bits, visible ASCII only (spec 2025-11-25
/// Transports §Session Management).
pub(crate) fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl SessionRegistry {
    pub(crate) fn new(max_sessions: usize, max_per_principal: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            counts: Arc::new(Mutex::new(Counts::default())),
            max_sessions: AtomicUsize::new(max_sessions),
            max_per_principal: AtomicUsize::new(max_per_principal),
            removed: tokio::sync::Notify::new(),
        }
    }

    /// Sets the caps for the sessions reserved from now on (a config reload).
    pub(crate) fn set_caps(&self, max_sessions: usize, max_per_principal: usize) {
        self.max_sessions.store(max_sessions, Ordering::Relaxed);
        self.max_per_principal
            .store(max_per_principal, Ordering::Relaxed);
    }

    /// Takes a slot for a new session of `owner`, or says which cap is reached.
    pub(crate) fn reserve(&self, owner: &PrincipalKey) -> Result<Slot, CapError> {
        let mut counts = lock(&self.counts);
        if counts.total >= self.max_sessions.load(Ordering::Relaxed) {
            return Err(CapError::Global);
        }
        let mine = counts.per_principal.get(owner).copied().unwrap_or(0);
        if mine >= self.max_per_principal.load(Ordering::Relaxed) {
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
    pub(crate) fn insert(
        &self,
        id: String,
        slot: Slot,
        server: &str,
        mux: Arc<Mux>,
        kind: Kind,
    ) -> Arc<Session> {
        static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
        let session = Arc::new(Session::new(
            id.clone(),
            slot,
            server,
            mux,
            kind,
            NEXT_TAG.fetch_add(1, Ordering::Relaxed),
        ));
        lock(&self.sessions).insert(id, session.clone());
        session
    }

    /// The session with this id if `owner` owns it. Someone else's session is answered
    /// exactly like an unknown one (DESIGN §1), so ids cannot be probed.
    pub(crate) fn get(&self, id: &str, owner: &PrincipalKey, server: &str) -> Option<Arc<Session>> {
        let session = lock(&self.sessions).get(id).cloned()?;
        (session.owner == *owner && session.server == server).then_some(session)
    }

    /// Removes a session and stops its child.
    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let session = lock(&self.sessions).remove(id)?;
        // A child shared with other sessions stays; the pool reaps it when idle.
        if session.share().is_none() {
            session.mux.child().stop();
        }
        self.removed.notify_waiters();
        Some(session)
    }

    /// Resolves once no session is left (graceful drain).
    pub(crate) async fn wait_empty(&self) {
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

    pub(crate) fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session (for shutdown and idle reaping).
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
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
