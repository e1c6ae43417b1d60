//! Sessions: one MCP conversation bound to the principal that opened it and to the child (its
//! multiplexer) that serves it ([`Session`]); the registry with its caps and ownership checks
//! ([`registry`]); the GET stream's replay buffer ([`replay`]); what sessions sharing one
//! child share ([`share`]). Nothing here knows HTTP.

pub(crate) mod registry;
pub(crate) mod replay;
pub(crate) mod share;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::PrincipalKey;
use crate::budget::Budget;
use crate::mux::Mux;
use crate::sync::lock;

pub(crate) use registry::{CapError, SessionRegistry, Slot, new_session_id};
pub(crate) use replay::{Standalone, StreamEvent};
pub(crate) use share::SessionShare;

/// The transport side of a session.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Legacy HTTP+SSE: every child line goes to the session's one stream.
    Legacy,
    /// Streamable HTTP: answers routed to each request's stream; the rest to the GET stream.
    Streamable {
        standalone: Arc<Standalone>,
        /// Set when the child serves several sessions (`child_scope = "principal" | "shared"`).
        share: Option<Arc<SessionShare>>,
    },
}

/// One MCP conversation and the child that serves it.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) owner: PrincipalKey,
    pub(crate) server: String,
    pub(crate) mux: Arc<Mux>,
    pub(crate) kind: Kind,
    /// A number unique among sessions, naming this session inside a shared multiplexer.
    pub(crate) tag: u64,
    created: Instant,
    /// Milliseconds after `created` of the last client or child activity.
    last_activity_ms: AtomicU64,
    _slot: Slot,
}

impl Session {
    fn new(id: String, slot: Slot, server: &str, mux: Arc<Mux>, kind: Kind, tag: u64) -> Self {
        Self {
            id,
            owner: slot.owner.clone(),
            server: server.to_owned(),
            mux,
            kind,
            tag,
            created: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            _slot: slot,
        }
    }

    pub(crate) fn share(&self) -> Option<&Arc<SessionShare>> {
        match &self.kind {
            Kind::Streamable { share, .. } => share.as_ref(),
            Kind::Legacy => None,
        }
    }

    /// What waits for this session's clients is charged to (`sessions.max_pending_bytes`):
    /// its GET stream's budget, which is its child's when it has the child to itself.
    pub(crate) fn budget(&self) -> &Budget {
        match &self.kind {
            Kind::Streamable { standalone, .. } => standalone.budget(),
            Kind::Legacy => self.mux.budget(),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last activity.
    pub(crate) fn idle_for(&self) -> Duration {
        let now = self.created.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    /// Whether the idle reaper must leave it alone: a Streamable HTTP session with a request
    /// in flight. A legacy session's stream is its activity (a silent stream is idle).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.kind, Kind::Streamable { .. }) && self.mux.in_flight() > 0
    }
}
