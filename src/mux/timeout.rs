//! Request deadlines (`request_timeout_secs`): the timer of one child, and what a request
//! past its deadline gets — the timeout error for its client, `notifications/cancelled` for
//! the child (spec 2025-11-25 basic/utilities cancellation).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::{Item, Mux};
use crate::child;
use crate::protocol::jsonrpc;
use crate::protocol::{REQUEST_TIMEOUT, TIMED_OUT};
use crate::sync::lock;

impl Mux {
    /// Tells the child to stop working on a request (spec 2025-11-25 basic/utilities
    /// cancellation).
    pub(super) fn cancel(&self, proxy_id: u64, reason: &str) {
        let note = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{proxy_id},"reason":"{reason}"}}}}"#
        );
        if !self.child.try_send(note.into_bytes()) {
            tracing::debug!(proxy_id, "could not queue notifications/cancelled");
        }
    }

    /// Answers requests past their deadline with the timeout error and cancels them at the
    /// child; a late answer finds no route and is dropped.
    async fn expire(&self) {
        let expired = lock(&self.shared.routes).expired(tokio::time::Instant::now());
        for (proxy_id, mut route) in expired {
            tracing::warn!(proxy_id, id = %route.original_id, "request timed out (request_timeout_secs)");
            self.cancel(proxy_id, TIMED_OUT);
            let line = jsonrpc::error_response(&route.original_id, REQUEST_TIMEOUT, TIMED_OUT);
            if let Some(audit) = route.audit.take() {
                audit.answered(&line);
            }
            if let Some(span) = route.trace.take() {
                span.answered(&line, false);
            }
            let item = Item::Final(line);
            if self.shared.backpressure {
                let _ =
                    tokio::time::timeout(child::CONSUMER_STALL_TIMEOUT, route.tx.send_anyway(item))
                        .await;
            } else if route.tx.try_send_anyway(item).is_err() {
                tracing::debug!(proxy_id, "the timed-out request's stream is gone");
            }
        }
    }

    /// The timer of this child's request deadlines: asleep while no request has one, then a
    /// tick of a quarter of the timeout (at least 100 ms, at most 1 s); it ends with the child.
    pub(super) fn start_timer(self: &Arc<Self>, tracker: &TaskTracker) {
        if self.request_timeout.is_zero() {
            return;
        }
        let tick =
            (self.request_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mux = Arc::downgrade(self);
        let shared = self.shared.clone();
        let exited = self.child.exited_token();
        tracker.spawn(async move {
            loop {
                let idle = lock(&shared.routes).with_deadline == 0;
                tokio::select! {
                    _ = exited.cancelled() => return,
                    _ = shared.deadline_added.notified(), if idle => continue,
                    _ = tokio::time::sleep(tick), if !idle => {}
                }
                let Some(mux) = mux.upgrade() else {
                    return;
                };
                mux.expire().await;
            }
        });
    }
}
