//! The response engine of Streamable HTTP: sends a body through the multiplexer and answers
//! with what comes back for it — `application/json` when the answer is the first thing the
//! child sends for it, an SSE stream when notifications come first (or for a batch) — and only
//! that (spec 2025-11-25 Transports §Sending Messages to the Server).

use std::sync::Arc;

use axum::response::Response;
use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::super::Caller;
use super::super::sse::{message, sse_response};
use crate::budget::Budget;
use crate::child::ChildError;
use crate::error::{Error, accepted, json_answer};
use crate::mux::{Dispatch, Finish, Item, ItemRx, Mux, ROUTE_QUEUE, RouteError, Ticket, queue};
use crate::protocol::INVALID_REQUEST;
use crate::protocol::jsonrpc::ClientMessage;

/// One body to answer.
pub(super) struct Exchange<'a> {
    pub(super) mux: &'a Arc<Mux>,
    pub(super) message: &'a ClientMessage,
    /// The session's tag; `None` in the modern era (closing the stream cancels the request,
    /// and an unknown method is a 404).
    pub(super) owner: Option<u64>,
    /// Whether the client takes `text/event-stream`.
    pub(super) sse_ok: bool,
    /// Whether `request_timeout_secs` applies (not to `subscriptions/listen`).
    pub(super) timeout: bool,
    pub(super) finish: Option<Arc<dyn Finish>>,
    /// Who sent it, for the audit log.
    pub(super) audit: Option<crate::audit::Context>,
    /// What its spans share (`[telemetry]` on).
    pub(super) trace: Option<Arc<crate::telemetry::Context>>,
    /// What the answers waiting for the client are charged to (`sessions.max_pending_bytes`):
    /// the session's budget, or, in the modern era, the child's.
    pub(super) budget: Budget,
}

/// Whether a body's requests get `request_timeout_secs`: all but `subscriptions/listen`,
/// whose stream is meant to stay open.
pub(super) fn times_out(message: &ClientMessage) -> bool {
    message.first_method() != Some("subscriptions/listen")
}

pub(super) async fn respond(c: &Caller, exchange: Exchange<'_>) -> Result<Response, Error> {
    let state = &*c.state;
    let modern = exchange.owner.is_none();
    let (tx, mut rx) = queue(ROUTE_QUEUE, exchange.budget);
    let dispatch = Dispatch {
        owner: exchange.owner,
        tx,
        cancel_on_drop: modern,
        timeout: exchange.timeout,
        finish: exchange.finish,
        audit: exchange.audit,
        trace: exchange.trace,
    };
    let mut ticket = exchange
        .mux
        .send(exchange.message, dispatch)
        .await
        .map_err(|e| match e {
            RouteError::DuplicateId => Error::BadRequest {
                code: INVALID_REQUEST,
                message: "a request with this id is already in flight in this session",
            },
            RouteError::Child(ChildError::Stalled) => Error::Stalled,
            RouteError::Child(ChildError::Full) => Error::QueueFull,
            RouteError::Child(_) if modern => Error::ChildExited,
            RouteError::Child(_) => Error::NoSession,
        })?;
    if !ticket.has_requests() {
        // Only notifications or responses: accepted (spec: 202, no body).
        return Ok(accepted(""));
    }
    let first = next_item(&mut rx, &state.shutdown)
        .await
        .ok_or(Error::ShuttingDown)?;
    let batch = exchange.message.batch;
    if !batch && let Item::Final(line) = first {
        ticket.complete_one();
        return Ok(json_answer(line, modern));
    }
    if !exchange.sse_ok {
        // The client takes JSON only: wait for the answers, drop the notifications.
        let mut finals = Vec::new();
        let mut item = Some(first);
        loop {
            if let Some(Item::Final(line)) = item.take() {
                finals.push(line);
                if ticket.complete_one() {
                    break;
                }
            }
            item = Some(
                next_item(&mut rx, &state.shutdown)
                    .await
                    .ok_or(Error::ShuttingDown)?,
            );
        }
        let body = if batch {
            format!("[{}]", finals.join(","))
        } else {
            finals.pop().unwrap_or_default()
        };
        return Ok(json_answer(body, false));
    }
    let stream = request_stream(first, rx, ticket, state.shutdown.clone());
    Ok(sse_response(stream, c.live.config.http.sse_keepalive_secs))
}

/// The next item for a request; `None` when its route is gone or the proxy shuts down (answers
/// already queued go out first).
pub(super) async fn next_item(rx: &mut ItemRx, shutdown: &CancellationToken) -> Option<Item> {
    tokio::select! {
        item = rx.recv() => item,
        _ = shutdown.cancelled() => rx.try_recv(),
    }
}

struct RequestStream {
    first: Option<Item>,
    rx: ItemRx,
    ticket: Ticket,
    shutdown: CancellationToken,
    done: bool,
}

/// A request's SSE stream: its notifications, then its answer(s); the final response ends it
/// (spec 2025-11-25 Transports: "After the JSON-RPC response has been sent, the server SHOULD
/// terminate the SSE stream"). Dropping it early drops the ticket (a modern request is then
/// cancelled at the child).
fn request_stream(
    first: Item,
    rx: ItemRx,
    ticket: Ticket,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>> + Send + 'static
{
    let st = RequestStream {
        first: Some(first),
        rx,
        ticket,
        shutdown,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let item = match st.first.take() {
            Some(item) => item,
            None => tokio::select! {
                item = st.rx.recv() => item?,
                _ = st.shutdown.cancelled() => return None,
            },
        };
        let line = match item {
            Item::Message(line) => line,
            Item::Final(line) => {
                if st.ticket.complete_one() {
                    st.done = true;
                }
                line
            }
        };
        Some((Ok(message(line)), st))
    })
}
