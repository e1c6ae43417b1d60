//! The legacy HTTP+SSE transport (spec 2024-11-05 "Transports" §HTTP with SSE): `GET /sse`
//! opens a session with its own child and streams everything the child says; `POST /message`
//! delivers one client message to that child (through the multiplexer, like every transport:
//! ids rewritten, timeouts and child exits answered there).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::response::sse::Event;
use futures::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::sse::sse_response;
use super::{Caller, NewSession, admit, new_session, stream_expiry};
use crate::budget::Budget;
use crate::child::ChildError;
use crate::error::{Error, accepted};
use crate::mux::{Dispatch, Item, ItemRx, RouteError, STREAM_QUEUE, queue};
use crate::protocol::jsonrpc;
use crate::protocol::{INVALID_REQUEST, SESSION_HEADER};
use crate::session::{Kind, Session, SessionRegistry};

/// `GET /sse`: authenticate, spawn a child for a new session, stream its output.
pub(crate) async fn open(c: Caller) -> Result<Response, Error> {
    admit(&c)?;
    // The session's one stream carries everything its child says: its budget is the session's.
    let budget = Budget::new(c.live.config.sessions.max_pending_bytes);
    let (stream_tx, stream_rx) = queue(STREAM_QUEUE, budget);
    let NewSession {
        slot,
        id,
        span,
        mux,
    } = new_session(&c, Some(stream_tx))?;
    let (state, route, principal, headers) = (&c.state, &c.route, &c.principal, &c.headers);
    let session = state
        .sessions
        .insert(id, slot, route.name(), mux, Kind::Legacy);
    tracing::info!(parent: &span, "legacy SSE session opened");

    // The endpoint event names the POST URL, built from public_url so that it survives any
    // path prefix and proxy in between (spec 2024-11-05 §HTTP with SSE: "endpoint" event).
    let endpoint = format!(
        "{}{}/message?sessionId={}",
        state.public_url_for(&c.live, headers),
        route.base,
        session.id
    );
    let stream = SessionStream {
        endpoint: Some(endpoint),
        rx: stream_rx,
        guard: SessionGuard {
            registry: state.sessions.clone(),
            session: session.clone(),
            span,
        },
        shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
        expiry: stream_expiry(&c.live, principal).map(|d| Box::pin(tokio::time::sleep(d))),
        done: false,
    };
    let mut response = sse_response(stream, c.live.config.http.sse_keepalive_secs);
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(response)
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

/// The session's event stream: the endpoint event, then one `message` event per child line
/// (and per answer the proxy gives in its place), until the child is gone, shutdown, or the
/// token expires. A hand-written `Stream` so that the shutdown and expiry futures are
/// registered once per session, not once per event.
struct SessionStream {
    endpoint: Option<String>,
    rx: ItemRx,
    guard: SessionGuard,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

fn message_event(item: Item) -> Event {
    let (Item::Message(line) | Item::Final(line)) = item;
    Event::default().event("message").data(line)
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
            return match this.rx.try_recv() {
                Some(item) => Poll::Ready(Some(Ok(message_event(item)))),
                None => {
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
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                this.guard.session.touch();
                Poll::Ready(Some(Ok(message_event(item))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `POST /message?sessionId=…` (also `session_id`, as the Python SDK sends): one client
/// message for the session's child; `202 Accepted`, the answer comes on the stream.
pub(crate) async fn message(
    c: Caller,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Error> {
    let (state, route, principal) = (&c.state, &c.route, &c.principal);
    let id = params
        .get("sessionId")
        .or_else(|| params.get("session_id"))
        .ok_or(Error::MissingSessionId)?;
    let session = state
        .sessions
        .get(id, &principal.key(), route.name())
        // A Streamable HTTP session is not reachable through the legacy POST endpoint.
        .filter(|s| matches!(s.kind, Kind::Legacy))
        .ok_or(Error::NoSession)?;
    let message = jsonrpc::client_message(&body).map_err(|e| Error::BadRequest {
        code: e.code(),
        message: e.message(),
    })?;
    session.touch();
    let audit = c.audit("legacy", Some(&session.id));
    let trace = c.trace("legacy", Some(&session.id));
    let finish = match c.gate(&audit, &trace, &message) {
        Ok(finish) => finish,
        Err(denied) => {
            return if session.mux.inject(denied) {
                Ok(accepted("Accepted"))
            } else {
                Err(Error::Busy)
            };
        }
    };
    let Some(tx) = session.mux.stream() else {
        return Err(Error::NoSession);
    };
    let dispatch = Dispatch {
        owner: Some(session.tag),
        tx,
        cancel_on_drop: false,
        timeout: true,
        finish,
        audit,
        trace,
    };
    match session.mux.send(&message, dispatch).await {
        Ok(ticket) => {
            ticket.detach();
            Ok(accepted("Accepted"))
        }
        Err(RouteError::DuplicateId) => Err(Error::BadRequest {
            code: INVALID_REQUEST,
            message: "a request with this id is already in flight in this session",
        }),
        Err(RouteError::Child(ChildError::Gone)) => Err(Error::NoSession),
        Err(RouteError::Child(ChildError::Full)) => Err(Error::QueueFull),
        Err(RouteError::Child(e)) => {
            tracing::warn!(session = %session.id, error = %e, "message not delivered");
            state.sessions.remove(&session.id);
            Err(Error::Stalled)
        }
    }
}
