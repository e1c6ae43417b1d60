//! The routing table of one child: which client request each proxy id stands for, where its
//! answer goes, and until when it may wait.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Finish, ItemTx};

/// One request in flight.
pub(super) struct Route {
    pub(super) tx: ItemTx,
    pub(super) original_id: Box<str>,
    /// The session that sent it (for duplicate-id checks and id translation of cancellations).
    pub(super) owner: Option<u64>,
    pub(super) progress: Option<Box<str>>,
    /// The request's method, kept only when a [`Finish`] hook will need it.
    pub(super) method: Option<Box<str>>,
    /// When the proxy answers it with the timeout error itself.
    pub(super) deadline: Option<Instant>,
    /// Rewrites this request's answer (a filtered `tools/list`).
    pub(super) finish: Option<Arc<dyn Finish>>,
    /// Its audit line, written when the answer comes (dropped unanswered: `cancelled`).
    pub(super) audit: Option<crate::audit::Pending>,
    /// Its span, ended when the answer comes (dropped unanswered: cancelled).
    /// Boxed: off (`None`) it costs a route one word.
    pub(super) trace: Option<Box<crate::telemetry::McpSpan>>,
}

#[derive(Default)]
pub(super) struct Routes {
    pub(super) next_id: u64,
    pub(super) routes: HashMap<u64, Route>,
    /// (owner, original id) → proxy id, for requests of sessions.
    pub(super) by_client_id: HashMap<(u64, Box<str>), u64>,
    /// proxy progress token → (proxy id, original token).
    pub(super) progress: HashMap<Box<str>, (u64, Box<str>)>,
    /// Routes with a deadline (the timer sleeps while there are none).
    pub(super) with_deadline: usize,
    pub(super) closed: bool,
}

impl Routes {
    pub(super) fn insert(&mut self, proxy_id: u64, route: Route) {
        if let Some(owner) = route.owner {
            self.by_client_id
                .insert((owner, route.original_id.clone()), proxy_id);
        }
        if route.deadline.is_some() {
            self.with_deadline += 1;
        }
        self.routes.insert(proxy_id, route);
    }

    /// Forgets a route and everything that points at it.
    pub(super) fn remove(&mut self, proxy_id: u64) -> Option<Route> {
        let route = self.routes.remove(&proxy_id)?;
        if let Some(owner) = route.owner {
            self.by_client_id
                .remove(&(owner, route.original_id.clone()));
        }
        if let Some(token) = &route.progress {
            self.progress.remove(token);
        }
        if route.deadline.is_some() {
            self.with_deadline -= 1;
        }
        Some(route)
    }

    /// Removes and returns the routes whose deadline has passed.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<(u64, Route)> {
        if self.with_deadline == 0 {
            return Vec::new();
        }
        let ids: Vec<u64> = self
            .routes
            .iter()
            .filter(|(_, r)| r.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|r| (id, r)))
            .collect()
    }

    /// Closes the table (the child is gone) and returns every route still waiting.
    pub(super) fn close(&mut self) -> Vec<Route> {
        self.closed = true;
        self.by_client_id.clear();
        self.progress.clear();
        self.with_deadline = 0;
        self.routes.drain().map(|(_, r)| r).collect()
    }
}
