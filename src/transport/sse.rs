//! The legacy HTTP+SSE transport (spec 2024-11-05 "Transports" §HTTP with SSE): `GET /sse`
//! opens a session with its own child and streams the child's output; `POST /message`
//! delivers one client message to that child.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{
    NewSession, ServerRoute, authorize, draining, http_error, jsonrpc_error, no_session,
    prepare_session, spawn_failed,
};
use crate::child::{self, ChildError};
use crate::jsonrpc;
use crate::policy::{TOOL_DENIED, Verdict};
use crate::session::{Session, SessionRegistry};
use crate::state::AppState;

/// The response header that carries the session id, so a load balancer can learn it
/// (DESIGN §5) and clients can correlate.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// `GET /sse`: authenticate, spawn a child for a new session, stream its output.
pub async fn open(
    State(state): State<Arc<AppState>>,
    Extension(route): Extension<ServerRoute>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let principal = match authorize(&state, &route, "/sse", &headers, uri.query()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if state.is_draining() {
        state.metrics.refused_draining();
        return draining();
    }
    let Some(server) = state.servers.get(&*route.name) else {
        return no_session();
    };
    let NewSession {
        slot,
        spec,
        id,
        span,
        warm,
    } = match prepare_session(&state, &route, &principal) {
        Ok(n) => n,
        Err(response) => return response,
    };
    let spawned = match warm {
        Some(w) => Ok((w.child, w.output)),
        None => child::spawn(&spec, span.clone(), &state.tracker),
    };
    let (child, out_rx) = match spawned {
        Ok(pair) => pair,
        Err(e) => return spawn_failed(&span, &e),
    };
    let (inject, inject_rx) = mpsc::channel(INJECT_QUEUE);
    let session = state.sessions.insert(
        id,
        slot,
        &route.name,
        crate::session::Pipe::Direct(crate::session::Direct {
            child,
            inject,
            list_requests: Default::default(),
        }),
    );
    tracing::info!(parent: &span, "legacy SSE session opened");

    // The endpoint event names the POST URL, built from public_url so that it survives any
    // path prefix and proxy in between (spec 2024-11-05 §HTTP with SSE: "endpoint" event).
    let endpoint = format!(
        "{}{}/message?sessionId={}",
        state.public_url_for(&headers),
        route.base,
        session.id
    );
    let expiry = state
        .config
        .auth
        .close_streams_on_expiry
        .then(|| expiry_in(principal.exp));
    let stream = session_stream(
        endpoint,
        out_rx,
        inject_rx,
        server.policy.clone(),
        SessionGuard {
            registry: state.sessions.clone(),
            session: session.clone(),
            span: span.clone(),
        },
        state.shutdown.clone(),
        expiry,
    );
    let keepalive = KeepAlive::new()
        .interval(Duration::from_secs(state.config.http.sse_keepalive_secs))
        .text("");
    let mut response = Sse::new(stream).keep_alive(keepalive).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        h.insert(SESSION_HEADER, v);
    }
    // nginx and others buffer responses unless told not to; SSE must flow event by event.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// Time left until a token's `exp`.
fn expiry_in(exp: u64) -> Duration {
    let now = jsonwebtoken::get_current_timestamp();
    Duration::from_secs(exp.saturating_sub(now))
}

/// Removes the session (and so stops its child) when the stream is dropped: client gone,
/// child gone, token expired or shutdown (STYLE habit 8).
struct SessionGuard {
    registry: Arc<SessionRegistry>,
    session: Arc<Session>,
    span: tracing::Span,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.remove(&self.session.id);
        tracing::info!(parent: &self.span, "session closed");
    }
}

/// Answers the proxy itself puts on a legacy stream (denied tool calls).
const INJECT_QUEUE: usize = 64;

/// The session's event stream: the endpoint event, then one `message` event per child line
/// (and per answer the proxy itself gives, e.g. a denied tool call), until the child is gone,
/// shutdown, or the token expires. A hand-written `Stream` so that the shutdown and expiry
/// futures are registered once per session, not once per event (a `select!` in `unfold`
/// re-created them, taking the shutdown token's lock twice per message).
struct SessionStream {
    endpoint: Option<String>,
    out_rx: mpsc::Receiver<String>,
    inject_rx: mpsc::Receiver<String>,
    policy: crate::policy::ToolPolicy,
    guard: SessionGuard,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

#[allow(clippy::too_many_arguments)]
fn session_stream(
    endpoint: String,
    out_rx: mpsc::Receiver<String>,
    inject_rx: mpsc::Receiver<String>,
    policy: crate::policy::ToolPolicy,
    guard: SessionGuard,
    shutdown: CancellationToken,
    expiry: Option<Duration>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    SessionStream {
        endpoint: Some(endpoint),
        out_rx,
        inject_rx,
        policy,
        guard,
        shutdown: Box::pin(shutdown.cancelled_owned()),
        expiry: expiry.map(|d| Box::pin(tokio::time::sleep(d))),
        done: false,
    }
}

impl Stream for SessionStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(endpoint) = this.endpoint.take() {
            return Poll::Ready(Some(Ok(Event::default().event("endpoint").data(endpoint))));
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            // Lines already queued (the errors for the in-flight requests of a child stopped
            // by the drain) go out before the stream ends.
            return match this.out_rx.try_recv() {
                Ok(line) => Poll::Ready(Some(Ok(Event::default().event("message").data(line)))),
                Err(_) => {
                    this.done = true;
                    Poll::Ready(None)
                }
            };
        }
        if let Some(expiry) = this.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            tracing::info!(parent: &this.guard.span, "token expired; closing the stream");
            this.done = true;
            return Poll::Ready(None);
        }
        // A closed inject channel just stays silent; the child's channel ends the stream.
        if let Poll::Ready(Some(line)) = this.inject_rx.poll_recv(cx) {
            return Poll::Ready(Some(Ok(Event::default().event("message").data(line))));
        }
        match this.out_rx.poll_recv(cx) {
            Poll::Ready(Some(mut line)) => {
                this.guard.session.touch();
                if !this.policy.is_empty() {
                    let _entered = this.guard.span.enter();
                    line = filter_if_list_answer(&this.guard.session, &this.policy, line);
                }
                Poll::Ready(Some(Ok(Event::default().event("message").data(line))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Filters a `tools/list` answer for the caller that asked (their scopes at that time).
fn filter_if_list_answer(
    session: &Session,
    policy: &crate::policy::ToolPolicy,
    line: String,
) -> String {
    let crate::session::Pipe::Direct(direct) = &session.pipe else {
        return line;
    };
    let Some(id) = jsonrpc::probe(&line).and_then(|p| p.id.map(|id| id.get().to_owned())) else {
        return line;
    };
    match direct.take_filter(&id) {
        Some(scopes) => policy.filter_list(&line, &scopes).unwrap_or(line),
        None => line,
    }
}

/// `POST /message?sessionId=…` (also `session_id`, as the Python SDK sends): one client
/// message for the session's child; `202 Accepted`, the answer comes on the stream.
pub async fn message(
    State(state): State<Arc<AppState>>,
    Extension(route): Extension<ServerRoute>,
    Query(params): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match authorize(&state, &route, "/sse", &headers, uri.query()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(id) = params.get("sessionId").or_else(|| params.get("session_id")) else {
        return http_error(StatusCode::BAD_REQUEST, "missing sessionId");
    };
    let Some(session) = state.sessions.get(id, &principal.key(), &route.name) else {
        return no_session();
    };
    let crate::session::Pipe::Direct(direct) = &session.pipe else {
        // A Streamable HTTP session is not reachable through the legacy POST endpoint.
        return no_session();
    };
    let message = match jsonrpc::client_message(&body) {
        Ok(m) => m,
        Err(e) => return jsonrpc_error(StatusCode::BAD_REQUEST, e.code(), e.message()),
    };
    session.touch();
    if let Some(server) = state.servers.get(&*route.name)
        && !server.policy.is_empty()
        && !message.batch
    {
        match server.policy.judge(&message.line, &principal.scopes) {
            Verdict::Allow => {}
            Verdict::FilterList => {
                if let Some(id) = message.request_ids.first() {
                    direct.filter_answer(id.clone(), principal.scopes.clone());
                }
            }
            Verdict::Deny(why) => {
                tracing::info!(session = %session.id, "{why}");
                let id = message.request_ids.first().map_or("null", String::as_str);
                let line = jsonrpc::error_response(id, TOOL_DENIED, &why);
                return match direct.inject.try_send(line) {
                    Ok(()) => (StatusCode::ACCEPTED, "Accepted").into_response(),
                    Err(_) => http_error(StatusCode::SERVICE_UNAVAILABLE, "session is busy"),
                };
            }
        }
    }
    match direct.child.send(message.line, &message.request_ids).await {
        Ok(()) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Err(ChildError::Gone) => no_session(),
        Err(e) => {
            tracing::warn!(session = %session.id, error = %e, "message not delivered");
            state.sessions.remove(&session.id);
            http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the MCP server is not accepting input",
            )
        }
    }
}
