//! The multiplexer in front of a child served over Streamable HTTP: every client request gets a
//! proxy-unique JSON-RPC id (and progress token) on its way in, and the child's answer is routed
//! back to that request's own stream with the original id restored exactly — so many requests,
//! of one session or of many clients sharing a child, never collide or cross-wire (DESIGN §2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::child::{self, ChildError, ChildHandle, ChildSpec, LineSink};
use crate::jsonrpc::{self, Kind};

/// Messages waiting for one request's stream; a client that does not read them loses the route.
pub const ROUTE_QUEUE: usize = 256;
/// The `_meta` key that ties a notification to its `subscriptions/listen` request
/// (spec 2026-07-28 patterns/subscriptions §Receiving Notifications).
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// What a request's stream receives.
#[derive(Debug)]
pub enum Item {
    /// A notification or server request related to the request.
    Message(String),
    /// The response to one of the request's ids.
    Final(String),
}

/// Where messages go that belong to no request (server-initiated requests and notifications):
/// the session's standalone GET stream, for example.
pub trait Unrouted: Send + Sync + 'static {
    /// Delivers a message; `server_request` marks a JSON-RPC request from the server.
    fn deliver(&self, line: String, server_request: bool) -> Delivery;
    /// Whether a stream is connected right now.
    fn is_connected(&self) -> bool;
}

/// Whether an unrouted message reached a connected stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Kept for later (nobody is connected).
    Buffered,
}

/// Rewrites the child's answers to modern-era requests before they reach the client: the era
/// bridge adds the fields 2026-07-28 results require to a legacy child's results.
pub trait Finish: Send + Sync + 'static {
    /// The response `line` (client id already restored) to a request of `method`.
    fn finish(&self, method: &str, line: String) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("a request with this id is already in flight in this session")]
    DuplicateId,
    #[error(transparent)]
    Child(#[from] ChildError),
}

struct Route {
    tx: mpsc::Sender<Item>,
    original_id: Box<str>,
    /// The session that sent it (for duplicate-id checks and id translation of cancellations).
    owner: Option<u64>,
    progress: Option<Box<str>>,
    /// The request's method, kept only when a [`Finish`] hook will need it.
    method: Option<Box<str>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    routes: HashMap<u64, Route>,
    /// (owner, original id) → proxy id, for requests of sessions.
    by_client_id: HashMap<(u64, Box<str>), u64>,
    /// proxy progress token → (proxy id, original token).
    progress: HashMap<Box<str>, (u64, Box<str>)>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    unrouted: Mutex<Option<Arc<dyn Unrouted>>>,
    finish: OnceLock<Arc<dyn Finish>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A child with its router. Dropping the last `Arc<Mux>` stops the child.
pub struct Mux {
    child: ChildHandle,
    shared: Arc<Shared>,
    /// The era bridge of a child serving modern traffic (see [`crate::bridge`]).
    bridge: OnceLock<Arc<crate::bridge::ChildBridge>>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("pid", &self.child.pid())
            .finish()
    }
}

/// A request in flight. Dropping it before the response arrived forgets the route and, when
/// asked to, tells the child with `notifications/cancelled` (spec 2026-07-28 Streamable HTTP
/// §Cancellation: closing the response stream is the cancellation).
pub struct Ticket {
    mux: Weak<Mux>,
    ids: Vec<u64>,
    done: usize,
    cancel_on_drop: bool,
}

impl Ticket {
    /// Records that one response arrived; true when all of the ticket's responses have.
    pub fn complete_one(&mut self) -> bool {
        self.done += 1;
        self.done >= self.ids.len()
    }

    /// Whether dropping an incomplete ticket sends `notifications/cancelled` (timeouts do).
    pub fn set_cancel_on_drop(&mut self, cancel: bool) {
        self.cancel_on_drop = cancel;
    }

    pub fn is_complete(&self) -> bool {
        self.done >= self.ids.len()
    }

    /// The proxy-side ids (for logs and tests).
    pub fn proxy_ids(&self) -> &[u64] {
        &self.ids
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(mux) = self.mux.upgrade() else {
            return;
        };
        let complete = self.is_complete();
        let mut cancelled = Vec::new();
        {
            let mut st = lock(&mux.shared.state);
            for id in &self.ids {
                if let Some(route) = st.routes.remove(id) {
                    if let Some(owner) = route.owner {
                        st.by_client_id.remove(&(owner, route.original_id.clone()));
                    }
                    if let Some(token) = route.progress {
                        st.progress.remove(&token);
                    }
                    cancelled.push(*id);
                }
            }
        }
        if self.cancel_on_drop && !complete {
            for id in cancelled {
                let note = format!(
                    r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"client closed the stream"}}}}"#
                );
                if !mux.child.try_send(note.into_bytes()) {
                    tracing::debug!(id, "could not queue notifications/cancelled");
                }
            }
        }
    }
}

impl Mux {
    /// Spawns the child with its output routed by this multiplexer.
    pub fn spawn(
        spec: &ChildSpec,
        span: tracing::Span,
        tracker: &TaskTracker,
    ) -> Result<Arc<Mux>, ChildError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            unrouted: Mutex::new(None),
            finish: OnceLock::new(),
        });
        let sink: Arc<dyn LineSink> = Arc::new(Sink(shared.clone()));
        let child = child::spawn_with_sink(spec, span, tracker, sink)?;
        Ok(Arc::new(Mux {
            child,
            shared,
            bridge: OnceLock::new(),
        }))
    }

    /// Takes over a child spawned with a channel for its output (a warm child): a small task
    /// feeds its lines to the router.
    pub fn adopt(
        child: ChildHandle,
        mut output: mpsc::Receiver<String>,
        tracker: &TaskTracker,
    ) -> Arc<Mux> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            unrouted: Mutex::new(None),
            finish: OnceLock::new(),
        });
        let sink = Sink(shared.clone());
        tracker.spawn(async move {
            while let Some(line) = output.recv().await {
                if !sink.line(line) {
                    break;
                }
            }
            sink.closed();
        });
        Arc::new(Mux {
            child,
            shared,
            bridge: OnceLock::new(),
        })
    }

    pub fn child(&self) -> &ChildHandle {
        &self.child
    }

    /// Sets where messages that belong to no request go.
    pub fn set_unrouted(&self, sink: Arc<dyn Unrouted>) {
        *lock(&self.shared.unrouted) = Some(sink);
    }

    /// Sets the hook that rewrites answers to modern-era requests (once; later calls are
    /// ignored). Requests sent before it is set are answered unchanged.
    pub fn set_finish(&self, hook: Arc<dyn Finish>) {
        let _ = self.shared.finish.set(hook);
    }

    /// The slot of this child's era bridge.
    pub fn bridge_slot(&self) -> &OnceLock<Arc<crate::bridge::ChildBridge>> {
        &self.bridge
    }

    /// Registers the requests of a validated client body and sends it to the child with
    /// proxy ids. `owner` is the session (duplicate ids are refused within it); `None` for
    /// the modern era, where every POST stands alone.
    pub async fn send_requests(
        self: &Arc<Self>,
        body: &str,
        owner: Option<u64>,
        tx: mpsc::Sender<Item>,
        cancel_on_drop: bool,
    ) -> Result<Ticket, RouteError> {
        let items: Vec<&RawValue> = if body.trim_start().starts_with('[') {
            serde_json::from_str(body).map_err(|_| ChildError::Gone)?
        } else {
            vec![serde_json::from_str(body).map_err(|_| ChildError::Gone)?]
        };
        let batch = items.len() > 1 || body.trim_start().starts_with('[');
        let mut ticket = Ticket {
            mux: Arc::downgrade(self),
            ids: Vec::new(),
            done: 0,
            cancel_on_drop,
        };
        let mut lines = Vec::with_capacity(items.len());
        {
            let mut st = lock(&self.shared.state);
            if st.closed {
                return Err(ChildError::Gone.into());
            }
            for item in items {
                let text = item.get();
                let Some(probe) = jsonrpc::probe(text) else {
                    continue;
                };
                match (probe.kind(), probe.id) {
                    (Kind::Request, Some(id)) => {
                        let original: Box<str> = id.get().into();
                        if let Some(owner) = owner
                            && st.by_client_id.contains_key(&(owner, original.clone()))
                        {
                            return Err(RouteError::DuplicateId);
                        }
                        st.next_id += 1;
                        let proxy_id = st.next_id;
                        let mut line = jsonrpc::splice(text, id.get(), &proxy_id.to_string())
                            .ok_or(ChildError::Gone)?;
                        let mut progress = None;
                        if line.contains("\"progressToken\"")
                            && let Some((rewritten, original_token)) =
                                rewrite_progress_token(&line, proxy_id)
                        {
                            let token: Box<str> = format!("\"pt-{proxy_id}\"").into();
                            st.progress
                                .insert(token.clone(), (proxy_id, original_token.into()));
                            progress = Some(token);
                            line = rewritten;
                        }
                        if let Some(owner) = owner {
                            st.by_client_id.insert((owner, original.clone()), proxy_id);
                        }
                        let method = (owner.is_none() && self.shared.finish.get().is_some())
                            .then(|| probe.method.as_deref().map(Box::from))
                            .flatten();
                        st.routes.insert(
                            proxy_id,
                            Route {
                                tx: tx.clone(),
                                original_id: original,
                                owner,
                                progress,
                                method,
                            },
                        );
                        ticket.ids.push(proxy_id);
                        lines.push(line);
                    }
                    _ => {
                        // Notifications and responses from the client: cancellations name the
                        // client's id, which the child only knows by its proxy id.
                        let line = match (owner, probe.method.as_deref()) {
                            (Some(owner), Some("notifications/cancelled")) => {
                                match translate_cancel(text, owner, &st) {
                                    Some(line) => line,
                                    None => continue,
                                }
                            }
                            (None, Some("notifications/cancelled")) => continue,
                            _ => text.to_owned(),
                        };
                        lines.push(line);
                    }
                }
            }
        }
        if lines.is_empty() {
            return Ok(ticket);
        }
        let line = if batch {
            format!("[{}]", lines.join(","))
        } else {
            lines.pop().unwrap_or_default()
        };
        self.child.send(line.into_bytes(), &[]).await?;
        Ok(ticket)
    }

    /// Number of requests in flight (tests and metrics), counting the `subscriptions/listen`
    /// streams the era bridge serves itself, so an idle reaper leaves their child alone.
    pub fn in_flight(&self) -> usize {
        let listening = self.bridge.get().map_or(0, |b| b.listeners());
        lock(&self.shared.state).routes.len() + listening
    }
}

/// Rewrites `params._meta.progressToken` to `"pt-<proxy id>"`; returns the line and the
/// original token as raw JSON.
fn rewrite_progress_token(line: &str, proxy_id: u64) -> Option<(String, String)> {
    let mut value: Value = serde_json::from_str(line).ok()?;
    let token = value.pointer_mut("/params/_meta/progressToken")?;
    let original = serde_json::to_string(token).ok()?;
    *token = Value::String(format!("pt-{proxy_id}"));
    Some((serde_json::to_string(&value).ok()?, original))
}

/// `notifications/cancelled` from a session: its `requestId` names the client's id.
fn translate_cancel(text: &str, owner: u64, st: &State) -> Option<String> {
    let mut value: Value = serde_json::from_str(text).ok()?;
    let request_id = value.pointer_mut("/params/requestId")?;
    let raw = serde_json::to_string(request_id).ok()?;
    let proxy_id = st.by_client_id.get(&(owner, raw.into_boxed_str()))?;
    *request_id = Value::from(*proxy_id);
    serde_json::to_string(&value).ok()
}

/// The child's side: each stdout line is routed synchronously.
struct Sink(Arc<Shared>);

impl LineSink for Sink {
    fn line(&self, line: String) -> bool {
        let Some(probe) = jsonrpc::probe(&line) else {
            // A batch response (array) from a 2025-03-26 child: route each element.
            if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(&line) {
                for item in items {
                    self.line(item.get().to_owned());
                }
            }
            return true;
        };
        match probe.kind() {
            Kind::Response => self.response(&line, probe.id),
            Kind::Notification => self.notification(&line, probe.method.as_deref()),
            Kind::Request => self.unrouted(line, true),
        }
        true
    }

    fn closed(&self) {
        let routes: Vec<Route> = {
            let mut st = lock(&self.0.state);
            st.closed = true;
            st.by_client_id.clear();
            st.progress.clear();
            st.routes.drain().map(|(_, r)| r).collect()
        };
        for route in routes {
            let line = jsonrpc::error_response(
                &route.original_id,
                jsonrpc::INTERNAL_ERROR,
                "server process exited",
            );
            let _ = route.tx.try_send(Item::Final(line));
        }
    }
}

impl Sink {
    fn response(&self, line: &str, id: Option<&RawValue>) {
        let Some(id) = id else { return };
        let Ok(proxy_id) = id.get().parse::<u64>() else {
            tracing::debug!("child answered an id the proxy never sent; dropped");
            return;
        };
        let route = {
            let mut st = lock(&self.0.state);
            let Some(route) = st.routes.remove(&proxy_id) else {
                tracing::debug!(
                    proxy_id,
                    "answer for a request no longer waited for; dropped"
                );
                return;
            };
            if let Some(owner) = route.owner {
                st.by_client_id.remove(&(owner, route.original_id.clone()));
            }
            if let Some(token) = &route.progress {
                st.progress.remove(token);
            }
            route
        };
        let Some(mut restored) = jsonrpc::splice(line, id.get(), &route.original_id) else {
            return;
        };
        if let (Some(method), Some(hook)) = (&route.method, self.0.finish.get()) {
            restored = hook.finish(method, restored);
        }
        if route.tx.try_send(Item::Final(restored)).is_err() {
            tracing::debug!(
                proxy_id,
                "the request's stream is gone or full; answer dropped"
            );
        }
    }

    fn notification(&self, line: &str, method: Option<&str>) {
        if method == Some("notifications/progress") && self.progress(line) {
            return;
        }
        if line.contains(SUBSCRIPTION_ID) && self.subscription(line) {
            return;
        }
        self.unrouted(line.to_owned(), false);
    }

    /// Routes a progress notification by its (proxy) token, restoring the client's token.
    fn progress(&self, line: &str) -> bool {
        let Ok(mut value) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let Some(token) = value.pointer_mut("/params/progressToken") else {
            return false;
        };
        let Ok(raw) = serde_json::to_string(token) else {
            return false;
        };
        let (tx, original, proxy_id) = {
            let st = lock(&self.0.state);
            let Some((proxy_id, original)) = st.progress.get(raw.as_str()) else {
                return false;
            };
            let Some(route) = st.routes.get(proxy_id) else {
                return false;
            };
            (route.tx.clone(), original.clone(), *proxy_id)
        };
        let Ok(original) = serde_json::from_str::<Value>(&original) else {
            return false;
        };
        *token = original;
        if let Ok(restored) = serde_json::to_string(&value) {
            self.send_or_drop(&tx, proxy_id, restored);
        }
        true
    }

    /// Sends a message to a request's stream; a stream that does not keep up loses its route
    /// (it ends) rather than growing without bound or silently missing messages.
    fn send_or_drop(&self, tx: &mpsc::Sender<Item>, proxy_id: u64, line: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Item::Message(line)) {
            tracing::warn!(proxy_id, "a response stream is not being read; ending it");
            let mut st = lock(&self.0.state);
            if let Some(route) = st.routes.remove(&proxy_id) {
                if let Some(owner) = route.owner {
                    st.by_client_id.remove(&(owner, route.original_id.clone()));
                }
                if let Some(token) = route.progress {
                    st.progress.remove(&token);
                }
            }
        }
    }

    /// Routes a notification of a `subscriptions/listen` stream, restoring the client's id.
    fn subscription(&self, line: &str) -> bool {
        let Ok(mut value) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let Some(meta) = value.pointer_mut("/params/_meta") else {
            return false;
        };
        let Some(sub) = meta.get_mut(SUBSCRIPTION_ID) else {
            return false;
        };
        let Some(proxy_id) = sub.as_u64() else {
            return false;
        };
        let (tx, original) = {
            let st = lock(&self.0.state);
            let Some(route) = st.routes.get(&proxy_id) else {
                return false;
            };
            (route.tx.clone(), route.original_id.clone())
        };
        let Ok(original) = serde_json::from_str::<Value>(&original) else {
            return false;
        };
        *sub = original;
        if let Ok(restored) = serde_json::to_string(&value) {
            self.send_or_drop(&tx, proxy_id, restored);
        }
        true
    }

    /// Server-initiated messages: to the unrouted sink; a server request that would only be
    /// buffered goes to a request stream in flight instead (spec 2025-11-25 Transports §Sending
    /// Messages to the Server: the server MAY send requests on a POST's stream).
    fn unrouted(&self, line: String, server_request: bool) {
        let sink = lock(&self.0.unrouted).clone();
        if server_request {
            let connected = sink.as_ref().is_some_and(|s| s.is_connected());
            if !connected {
                let newest = {
                    let st = lock(&self.0.state);
                    st.routes
                        .iter()
                        .max_by_key(|(id, _)| **id)
                        .map(|(_, r)| r.tx.clone())
                };
                if let Some(tx) = newest
                    && tx.try_send(Item::Message(line.clone())).is_ok()
                {
                    return;
                }
            }
        }
        match sink {
            Some(sink) => {
                sink.deliver(line, server_request);
            }
            None => tracing::debug!("message for no request and no listener; dropped"),
        }
    }
}
