//! The multiplexer in front of every child, whatever the transport: each client request gets a
//! proxy-unique JSON-RPC id (and progress token) on its way in, and the child's answer is
//! routed back to that request's own stream with the original id restored exactly — so many
//! requests, of one session or of many clients sharing a child, never collide or cross-wire
//! (DESIGN §2). It is also the one place that answers for the child when it cannot: a request
//! past `request_timeout_secs` gets `-32001` "request timed out" and the child gets
//! `notifications/cancelled`; when the child exits, every request in flight gets `-32603`
//! "server process exited" (DESIGN §6).

pub(crate) mod rewrite;
mod routes;
mod sink;
#[cfg(test)]
mod tests;
mod timeout;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::budget::queue::{self, Weigh};
use crate::child::{self, ChildError, ChildHandle, ChildSpec, LineSink};
use crate::metrics::{ChildMetrics, ExitReason};
use crate::protocol::jsonrpc::{self, ClientMessage, Kind};
use crate::sync::lock;
use routes::{Route, Routes};
use sink::Sink;

/// Messages waiting for one request's stream; a client that does not read them (or lets more
/// than `sessions.max_pending_bytes` wait) loses the route.
pub(crate) const ROUTE_QUEUE: usize = 256;
/// Lines waiting for a legacy SSE session's one stream, besides its byte budget (then the
/// child waits).
pub(crate) const STREAM_QUEUE: usize = 64;

/// What a request's stream receives.
#[derive(Debug)]
pub(crate) enum Item {
    /// A notification or server request related to the request.
    Message(String),
    /// The response to one of the request's ids (the child's, or the proxy's error for it).
    Final(String),
}

impl Weigh for Item {
    fn weight(&self) -> usize {
        let (Item::Message(line) | Item::Final(line)) = self;
        line.len()
    }
}

/// The multiplexer's end of one client stream's queue: bounded in items and, through its
/// budget, in bytes; the multiplexer ends it when its client falls behind.
pub(crate) type ItemTx = queue::Sender<Item>;
/// The stream's end of its queue.
pub(crate) type ItemRx = queue::Receiver<Item>;

/// A stream's queue of at most `messages` items, its bytes charged to `budget`.
pub(crate) fn queue(messages: usize, budget: Budget) -> (ItemTx, ItemRx) {
    queue::channel(messages, budget)
}

/// Where messages go that belong to no request (server-initiated requests and notifications):
/// the session's standalone GET stream, for example.
pub(crate) trait Unrouted: Send + Sync + 'static {
    /// Delivers a message; `server_request` marks a JSON-RPC request from the server.
    fn deliver(&self, line: String, server_request: bool) -> Delivery;
    /// Whether a stream is connected right now.
    fn is_connected(&self) -> bool;
}

/// Whether an unrouted message reached a connected stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    /// Kept for later (nobody is connected).
    Buffered,
}

/// Rewrites the child's answer to a request before it reaches the client (the era bridge's
/// modern result fields, a filtered `tools/list`).
pub(crate) trait Finish: Send + Sync + 'static {
    /// The response `line` (client id already restored) to a request of `method`.
    fn finish(&self, method: &str, line: String) -> String;
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("a request with this id is already in flight in this session")]
    DuplicateId,
    #[error(transparent)]
    Child(#[from] ChildError),
}

struct Shared {
    routes: Mutex<Routes>,
    unrouted: Mutex<Option<Arc<dyn Unrouted>>>,
    finish: OnceLock<Arc<dyn Finish>>,
    /// A legacy SSE session's one stream: everything the child says goes there, waited for.
    stream: Mutex<Option<ItemTx>>,
    backpressure: bool,
    /// The bytes of this child's output that may wait for its clients
    /// (`sessions.max_pending_bytes`); see [`Mux::budget`] for who charges it.
    budget: Budget,
    metrics: ChildMetrics,
    /// Woken when a route with a deadline is added (the timer sleeps while there is none).
    deadline_added: Notify,
}

/// A child with its router. Dropping the last `Arc<Mux>` stops the child.
pub(crate) struct Mux {
    child: ChildHandle,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("pid", &self.child.pid())
            .finish()
    }
}

/// How one client body is sent.
pub(crate) struct Dispatch {
    /// The session that sends it (duplicate ids are refused within it); `None` for the modern
    /// era, where every POST stands alone.
    pub(crate) owner: Option<u64>,
    /// Where its answers go (and which budget they are charged to).
    pub(crate) tx: ItemTx,
    /// Whether dropping an incomplete [`Ticket`] sends `notifications/cancelled`.
    pub(crate) cancel_on_drop: bool,
    /// Whether its requests get `request_timeout_secs` (not `subscriptions/listen`, not the
    /// proxy's own requests, which bound their wait themselves).
    pub(crate) timeout: bool,
    /// Rewrites the answers (a filtered `tools/list`).
    pub(crate) finish: Option<Arc<dyn Finish>>,
    /// Who sent it, for the audit log: each request's line is written when its answer comes
    /// (`None`: the audit log is off, or the proxy's own request).
    pub(crate) audit: Option<crate::audit::Context>,
    /// What its requests' spans share (`None`: telemetry is off, or the proxy's own request).
    /// With it, each request reaches the child with its span in `params._meta.traceparent`.
    pub(crate) trace: Option<Arc<crate::telemetry::Context>>,
}

/// A request in flight. Dropping it before the response arrived forgets the route and, when
/// asked to, tells the child with `notifications/cancelled` (spec 2026-07-28 Streamable HTTP
/// §Cancellation: closing the response stream is the cancellation).
pub(crate) struct Ticket {
    mux: Weak<Mux>,
    ids: Vec<u64>,
    done: usize,
    cancel_on_drop: bool,
}

impl Ticket {
    /// Records that one response arrived; true when all of the ticket's responses have.
    pub(crate) fn complete_one(&mut self) -> bool {
        self.done += 1;
        self.done >= self.ids.len()
    }

    /// Whether the body held requests (else it was only notifications or responses).
    pub(crate) fn has_requests(&self) -> bool {
        !self.ids.is_empty()
    }

    /// Leaves the routes in place after the ticket is gone: a legacy SSE POST is answered
    /// `202` at once, its answer comes on the session's stream whenever it comes.
    pub(crate) fn detach(mut self) {
        self.ids.clear();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let Some(mux) = self.mux.upgrade() else {
            return;
        };
        let complete = self.done >= self.ids.len();
        let cancelled: Vec<u64> = {
            let mut st = lock(&mux.shared.routes);
            self.ids
                .iter()
                .filter(|id| st.remove(**id).is_some())
                .copied()
                .collect()
        };
        if self.cancel_on_drop && !complete {
            for id in cancelled {
                mux.cancel(id, "client closed the stream");
            }
        }
    }
}

impl Mux {
    fn new(child: ChildHandle, shared: Arc<Shared>, spec: &ChildSpec) -> Arc<Mux> {
        Arc::new(Mux {
            child,
            shared,
            request_timeout: spec.request_timeout,
        })
    }

    fn shared(spec: &ChildSpec, stream: Option<ItemTx>) -> Arc<Shared> {
        let budget = match &stream {
            Some(stream) => stream.budget().clone(),
            None => Budget::new(spec.max_pending_bytes),
        };
        Arc::new(Shared {
            budget,
            routes: Mutex::new(Routes::default()),
            unrouted: Mutex::new(None),
            finish: OnceLock::new(),
            backpressure: stream.is_some(),
            stream: Mutex::new(stream),
            metrics: spec.metrics.clone(),
            deadline_added: Notify::new(),
        })
    }

    /// Spawns the child with its output routed by this multiplexer; with `stream`, every line
    /// goes to that one stream (a legacy SSE session), waited for.
    pub(crate) fn spawn(
        spec: &ChildSpec,
        span: tracing::Span,
        tracker: &TaskTracker,
        stream: Option<ItemTx>,
    ) -> Result<Arc<Mux>, ChildError> {
        let shared = Self::shared(spec, stream);
        let child = child::spawn(spec, span, tracker, Arc::new(Sink(shared.clone())))?;
        let mux = Self::new(child, shared, spec);
        mux.start_timer(tracker);
        Ok(mux)
    }

    /// Takes over a child spawned with a channel for its output (a warm child): a small task
    /// feeds its lines to the router.
    pub(crate) fn adopt(
        child: ChildHandle,
        mut output: mpsc::Receiver<String>,
        spec: &ChildSpec,
        tracker: &TaskTracker,
        stream: Option<ItemTx>,
    ) -> Arc<Mux> {
        let shared = Self::shared(spec, stream);
        let sink = Sink(shared.clone());
        let exited = child.exited_token();
        let reason = child.reason_cell();
        tracker.spawn(async move {
            while let Some(line) = output.recv().await {
                if !sink.line(line).await {
                    break;
                }
            }
            // Dropping the channel stops a child nobody reads; the reason is set as it ends.
            drop(output);
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.cancelled()).await;
            let reason = reason.get().copied().unwrap_or(ExitReason::Exited);
            sink.closed(reason).await;
        });
        let mux = Self::new(child, shared, spec);
        mux.start_timer(tracker);
        mux
    }

    /// A multiplexer in front of an in-memory child (unit tests of the layers above): what it
    /// sends to the child is readable from the returned pipe.
    #[cfg(test)]
    pub(crate) fn in_memory(
        request_timeout: Duration,
        tracker: &TaskTracker,
    ) -> (Arc<Mux>, tokio::io::DuplexStream) {
        let (child, stdin) = ChildHandle::in_memory(tracker);
        let spec = tests::spec(request_timeout);
        let shared = Self::shared(&spec, None);
        let mux = Self::new(child, shared, &spec);
        mux.start_timer(tracker);
        (mux, stdin)
    }

    pub(crate) fn child(&self) -> &ChildHandle {
        &self.child
    }

    /// The budget of this child's output waiting for its clients (`sessions.max_pending_bytes`),
    /// one per child: a legacy SSE session's is its stream's. The streams of a session that has
    /// the child to itself charge it, and so do the 2026-07-28 requests of a per-principal
    /// child. Each session of a shared child, and each modern request on a child everyone
    /// shares, charges a budget of its own instead: one client that stops reading must not
    /// take the others' room. Which budget a stream charges is its queue's ([`queue`]).
    pub(crate) fn budget(&self) -> &Budget {
        &self.shared.budget
    }

    /// Sets where messages that belong to no request go.
    pub(crate) fn set_unrouted(&self, sink: Arc<dyn Unrouted>) {
        *lock(&self.shared.unrouted) = Some(sink);
    }

    /// Sets the hook that rewrites answers to modern-era requests (once; later calls are
    /// ignored). Requests sent before it is set are answered unchanged.
    pub(crate) fn set_finish(&self, hook: Arc<dyn Finish>) {
        let _ = self.shared.finish.set(hook);
    }

    /// Puts an answer of the proxy's own on a legacy SSE session's stream (a denied tool
    /// call, which echoes the client's id); false when the stream is full (in messages or
    /// bytes) or gone.
    pub(crate) fn inject(&self, line: String) -> bool {
        lock(&self.shared.stream)
            .as_ref()
            .is_some_and(|tx| tx.try_send(Item::Final(line)).is_ok())
    }

    /// The sender of a legacy SSE session's stream, for [`Dispatch::tx`].
    pub(crate) fn stream(&self) -> Option<ItemTx> {
        lock(&self.shared.stream).clone()
    }

    /// Registers the requests of a validated client body and sends it to the child with
    /// proxy ids.
    pub(crate) async fn send(
        self: &Arc<Self>,
        message: &ClientMessage,
        dispatch: Dispatch,
    ) -> Result<Ticket, RouteError> {
        let mut ticket = Ticket {
            mux: Arc::downgrade(self),
            ids: Vec::new(),
            done: 0,
            cancel_on_drop: dispatch.cancel_on_drop,
        };
        let deadline = dispatch
            .timeout
            .then(|| tokio::time::Instant::now() + self.request_timeout);
        let keep_method = dispatch.finish.is_some()
            || (dispatch.owner.is_none() && self.shared.finish.get().is_some());
        let mut lines = Vec::with_capacity(message.items.len());
        {
            let mut st = lock(&self.shared.routes);
            if st.closed {
                return Err(ChildError::Gone.into());
            }
            for item in &message.items {
                match item.kind {
                    Kind::Request => {
                        let original: Box<str> = message.id(item).unwrap_or("null").into();
                        if let Some(owner) = dispatch.owner
                            && st.by_client_id.contains_key(&(owner, original.clone()))
                        {
                            return Err(RouteError::DuplicateId);
                        }
                        st.next_id += 1;
                        let proxy_id = st.next_id;
                        let rewrite::ToChild { line, progress } =
                            rewrite::request_to_child(message, item, proxy_id);
                        let (trace, line) = match &dispatch.trace {
                            Some(context) => {
                                let (span, line) = context.request(item, &original, line);
                                (Some(Box::new(span)), line)
                            }
                            None => (None, line),
                        };
                        let progress = progress.map(|(token, original_token)| {
                            st.progress
                                .insert(token.clone(), (proxy_id, original_token));
                            token
                        });
                        let method = keep_method
                            .then(|| item.method.as_deref().map(Box::from))
                            .flatten();
                        let audit = dispatch.audit.as_ref().map(|context| {
                            context.pending(
                                item.method.as_deref(),
                                item.name.as_deref().or(item.uri.as_deref()),
                                message.text(item),
                            )
                        });
                        st.insert(
                            proxy_id,
                            Route {
                                tx: dispatch.tx.clone(),
                                original_id: original,
                                owner: dispatch.owner,
                                progress,
                                method,
                                deadline,
                                finish: dispatch.finish.clone(),
                                audit,
                                trace,
                            },
                        );
                        ticket.ids.push(proxy_id);
                        lines.push(line);
                    }
                    Kind::Notification
                        if item.method.as_deref() == Some("notifications/cancelled") =>
                    {
                        // A cancellation names the client's id, which the child only knows by
                        // its proxy id. Without a session it has no meaning: closing the
                        // request's stream already cancelled it (2026-07-28 §Cancellation).
                        let Some(owner) = dispatch.owner else {
                            continue;
                        };
                        let proxy_id = message
                            .cancelled_id(item)
                            .and_then(|id| st.by_client_id.get(&(owner, id.into())).copied());
                        if let Some(proxy_id) = proxy_id {
                            let with = jsonrpc::Replace {
                                request_id: Some(&proxy_id.to_string()),
                                ..jsonrpc::Replace::default()
                            };
                            lines.push(message.rewrite(item, with));
                        }
                    }
                    _ => lines.push(message.text(item).to_owned()),
                }
            }
        }
        if deadline.is_some() && ticket.has_requests() {
            self.shared.deadline_added.notify_one();
        }
        if lines.is_empty() {
            return Ok(ticket);
        }
        let line = if message.batch {
            format!("[{}]", lines.join(","))
        } else {
            lines.pop().unwrap_or_default()
        };
        if let Err(e) = self.child.send(line.into_bytes()).await {
            // Refused at the door (the refusal is the request's audit line, not a
            // cancellation): forget its routes now.
            let mut st = lock(&self.shared.routes);
            for id in ticket.ids.drain(..) {
                if let Some(audit) = st.remove(id).and_then(|mut r| r.audit.take()) {
                    audit.disarm();
                }
            }
            return Err(e.into());
        }
        Ok(ticket)
    }

    /// Number of requests in flight (tests, metrics, idle reaping).
    pub(crate) fn in_flight(&self) -> usize {
        lock(&self.shared.routes).routes.len()
    }
}
