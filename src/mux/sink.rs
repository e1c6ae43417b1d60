//! The child's side of the multiplexer: each stdout line is looked at once and routed — an
//! answer to the request's own stream with the client's id restored, a progress or
//! subscription notification to the request it belongs to, everything else to the unrouted
//! sink (or, for a legacy SSE session, its one stream).

use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::rewrite;
use super::{Item, ItemTx, Shared, lock};
use crate::budget::queue::Refused;
use crate::child::{CONSUMER_STALL_TIMEOUT, LineSink};
use crate::metrics::ExitReason;
use crate::protocol::jsonrpc::{self, Kind};
use crate::protocol::{CHILD_EXITED, CHILD_OOM, CHILD_PIDS, INTERNAL_ERROR, SUBSCRIPTION_ID};

/// How long the errors for requests in flight may wait for a stuck stream when a child exits.
const CLOSE_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Sink(pub(super) Arc<Shared>);

impl LineSink for Sink {
    async fn line(&self, line: String) -> bool {
        if jsonrpc::probe(&line).is_some() {
            self.0.metrics.relayed_from_child(line.len());
            return self.route(line).await;
        }
        // A batch response (array) from a 2025-03-26 child: route each element.
        if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(&line) {
            self.0.metrics.relayed_from_child(line.len());
            for item in items {
                if !self.route(item.get().to_owned()).await {
                    return false;
                }
            }
            return true;
        }
        let shown: String = line.chars().take(200).collect();
        tracing::warn!(line = %shown, "child wrote a line that is not JSON; dropped");
        true
    }

    async fn closed(&self, reason: ExitReason) {
        let routes = lock(&self.0.routes).close();
        let stream = lock(&self.0.stream).take();
        // A limit that killed the child is a reported fault, not a mystery (issue 15).
        let message = match reason {
            ExitReason::Oom => CHILD_OOM,
            ExitReason::Pids => CHILD_PIDS,
            ExitReason::Stopped | ExitReason::Exited | ExitReason::ConsumerGone => CHILD_EXITED,
        };
        for mut route in routes {
            let line = jsonrpc::error_response(&route.original_id, INTERNAL_ERROR, message);
            if let Some(audit) = route.audit.take() {
                audit.answered(&line);
            }
            if let Some(span) = route.trace.take() {
                span.answered(&line, false);
            }
            let item = Item::Final(line);
            if stream.is_some() {
                let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, route.tx.send_anyway(item)).await;
            } else {
                let _ = route.tx.try_send_anyway(item);
            }
        }
    }
}

impl Sink {
    /// Routes one JSON-RPC message; false ends the child (a legacy stream is gone or stuck).
    async fn route(&self, line: String) -> bool {
        let Some(probe) = jsonrpc::probe(&line) else {
            return true;
        };
        let routed = match probe.kind() {
            Kind::Response => self.response(&line, probe.id, probe.error_code()),
            Kind::Notification => self.notification(&line, probe.method.as_deref()),
            Kind::Request => {
                drop(probe);
                return self.unrouted(line, true).await;
            }
        };
        match routed {
            Routed::To(proxy_id, tx, item) => self.deliver(proxy_id, &tx, item).await,
            Routed::Unrouted(line, server_request) => self.unrouted(line, server_request).await,
            Routed::Dropped => true,
        }
    }
}

/// Where one line goes.
enum Routed {
    To(u64, ItemTx, Item),
    Unrouted(String, bool),
    Dropped,
}

impl Sink {
    /// `error_code`: the child's answer is an error with this code (for the audit log).
    fn response(&self, line: &str, id: Option<&RawValue>, error_code: Option<i64>) -> Routed {
        let Some(id) = id else {
            return Routed::Dropped;
        };
        let Ok(proxy_id) = id.get().parse::<u64>() else {
            tracing::debug!("child answered an id the proxy never sent; dropped");
            return Routed::Dropped;
        };
        let Some(mut route) = lock(&self.0.routes).remove(proxy_id) else {
            tracing::debug!(
                proxy_id,
                "answer for a request no longer waited for (timed out or cancelled); dropped"
            );
            return Routed::Dropped;
        };
        let Some(mut restored) = jsonrpc::splice(line, id.get(), &route.original_id) else {
            return Routed::Dropped;
        };
        if let Some(method) = &route.method {
            if let Some(hook) = self.0.finish.get() {
                restored = hook.finish(method, restored);
            }
            if let Some(hook) = &route.finish {
                restored = hook.finish(method, restored);
            }
        }
        if let Some(audit) = route.audit.take() {
            audit.answered_with(error_code, restored.len());
        }
        if let Some(span) = route.trace.take() {
            span.answered(&restored, true);
        }
        Routed::To(proxy_id, route.tx, Item::Final(restored))
    }

    fn notification(&self, line: &str, method: Option<&str>) -> Routed {
        if method == Some("notifications/progress")
            && let Some(routed) = self.progress(line)
        {
            return routed;
        }
        if line.contains(SUBSCRIPTION_ID)
            && let Some(routed) = self.subscription(line)
        {
            return routed;
        }
        Routed::Unrouted(line.to_owned(), false)
    }

    /// A progress notification, by its (proxy) token, with the client's token restored.
    fn progress(&self, line: &str) -> Option<Routed> {
        let mut value: Value = serde_json::from_str(line).ok()?;
        let (token, raw) = rewrite::progress_of(&mut value)?;
        let (tx, original, proxy_id) = {
            let st = lock(&self.0.routes);
            let (proxy_id, original) = st.progress.get(raw.as_str())?;
            let route = st.routes.get(proxy_id)?;
            (route.tx.clone(), original.clone(), *proxy_id)
        };
        *token = serde_json::from_str(&original).ok()?;
        let restored = serde_json::to_string(&value).ok()?;
        Some(Routed::To(proxy_id, tx, Item::Message(restored)))
    }

    /// A notification of a `subscriptions/listen` stream, with the client's id restored.
    fn subscription(&self, line: &str) -> Option<Routed> {
        let mut value: Value = serde_json::from_str(line).ok()?;
        let (sub, proxy_id) = rewrite::subscription_of(&mut value)?;
        let (tx, original) = {
            let st = lock(&self.0.routes);
            let route = st.routes.get(&proxy_id)?;
            (route.tx.clone(), route.original_id.clone())
        };
        *sub = serde_json::from_str(&original).ok()?;
        let restored = serde_json::to_string(&value).ok()?;
        Some(Routed::To(proxy_id, tx, Item::Message(restored)))
    }

    /// Hands an item to a request's stream. A legacy SSE stream is waited for (the child's
    /// stdout backs up behind a slow client) up to [`CONSUMER_STALL_TIMEOUT`]; false ends the
    /// child. Any other stream that does not keep up — its messages, or its session's bytes
    /// (`sessions.max_pending_bytes`), are all waiting — loses its route and ends, what waits
    /// for it dropped at once, rather than growing without bound, silently missing messages,
    /// or holding the room of the session's other streams.
    async fn deliver(&self, proxy_id: u64, tx: &ItemTx, item: Item) -> bool {
        if self.0.backpressure {
            return send_waiting(tx, item).await;
        }
        match tx.try_send(item) {
            Ok(()) => {}
            Err(Refused::Full(item)) => {
                tracing::warn!(
                    proxy_id,
                    pending_bytes = tx.budget().used(),
                    "a response stream is not being read; ending it"
                );
                // An answer's route is already gone; a stream that misses its answer is ended
                // all the same, so that what waits for it is dropped now.
                if matches!(item, Item::Message(_)) {
                    lock(&self.0.routes).remove(proxy_id);
                }
                tx.close();
            }
            Err(Refused::Closed(_)) => {
                tracing::debug!(proxy_id, "the request's stream is gone; answer dropped");
            }
        }
        true
    }

    /// Server-initiated messages: to the unrouted sink; a server request that would only be
    /// buffered goes to a request stream in flight instead (spec 2025-11-25 Transports §Sending
    /// Messages to the Server: the server MAY send requests on a POST's stream).
    async fn unrouted(&self, line: String, server_request: bool) -> bool {
        let stream = lock(&self.0.stream).clone();
        if let Some(stream) = stream {
            return send_waiting(&stream, Item::Message(line)).await;
        }
        let sink = lock(&self.0.unrouted).clone();
        if server_request && !sink.as_ref().is_some_and(|s| s.is_connected()) {
            let newest = {
                let st = lock(&self.0.routes);
                st.routes
                    .iter()
                    .max_by_key(|(id, _)| **id)
                    .map(|(_, r)| r.tx.clone())
            };
            if let Some(tx) = newest
                && tx.try_send(Item::Message(line.clone())).is_ok()
            {
                return true;
            }
        }
        match sink {
            Some(sink) => {
                sink.deliver(line, server_request);
            }
            None => tracing::debug!("message for no request and no listener; dropped"),
        }
        true
    }
}

/// Sends with backpressure — waiting for bytes of the budget and a slot in the queue — bounded
/// by [`CONSUMER_STALL_TIMEOUT`]; false when the stream is gone or stuck (then it is ended,
/// and what waited for it is dropped at once).
async fn send_waiting(tx: &ItemTx, item: Item) -> bool {
    match tokio::time::timeout(CONSUMER_STALL_TIMEOUT, tx.send(item)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            tx.close();
            tracing::warn!(
                "the client has not read its stream for {}s; ending the session",
                CONSUMER_STALL_TIMEOUT.as_secs()
            );
            false
        }
    }
}
