//! The session era of Streamable HTTP (2025-03-26 … 2025-11-25; spec 2025-11-25 Transports
//! §Session Management): `initialize` opens a session — with its own child, or joining the
//! child its principal's (or everyone's) sessions share — later POSTs name it, `GET` opens its
//! standalone stream, `DELETE` ends it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::super::sse::sse_response;
use super::super::{
    AppState, Caller, NewSession, admit, cap_reached, new_session, pool_error, stream_expiry,
};
use super::respond::{Exchange, next_item, respond, times_out};
use super::{accepts_sse, header_str};
use crate::budget::Budget;
use crate::config::ChildScope;
use crate::error::{Error, accepted, json_answer};
use crate::mux::{Dispatch, Item, ROUTE_QUEUE, queue};
use crate::protocol::jsonrpc::ClientMessage;
use crate::protocol::{
    BATCH_VERSION, DEFAULT_SESSION_VERSION, INVALID_REQUEST, SESSION_HEADER, SESSION_VERSIONS,
};
use crate::session::{Kind, Session, Standalone, StreamEvent};

fn with_session_header(mut response: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// `initialize` without a session: a new session and child.
pub(super) async fn initialize(c: &Caller, message: &ClientMessage) -> Result<Response, Error> {
    let (state, route, headers) = (&c.state, &c.route, &c.headers);
    admit(c)?;
    // No tool is called by `initialize`: the gate only sets up a filter, nothing to audit.
    let finish = match c.gate(&None, &None, message) {
        Ok(finish) => finish,
        Err(denied) => return Ok(json_answer(denied, false)),
    };
    if route.server.config.child_scope != ChildScope::Session {
        return initialize_shared(c, message).await;
    }
    let NewSession {
        slot,
        id,
        span,
        mux,
    } = new_session(c, None)?;
    // The session has the child to itself: its streams charge the child's budget.
    let standalone = Arc::new(Standalone::new(
        mux.budget().clone(),
        c.live.config.sessions.replay_buffer_bytes,
    ));
    mux.set_unrouted(standalone.clone());
    let kind = Kind::Streamable {
        standalone,
        share: None,
    };
    let session = state
        .sessions
        .insert(id, slot, route.name(), mux.clone(), kind);
    tracing::info!(parent: &span, "streamable HTTP session opened");
    end_with_child(state, &session, span);
    let exchange = Exchange {
        mux: &mux,
        message,
        owner: Some(session.tag),
        sse_ok: accepts_sse(headers),
        timeout: times_out(message),
        finish,
        audit: c.audit("session", Some(&session.id)),
        trace: c.trace("session", Some(&session.id)),
        budget: session.budget().clone(),
    };
    let response = respond(c, exchange).await?;
    Ok(with_session_header(response, &session.id))
}

/// `initialize` under `child_scope = "principal" | "shared"`: the session joins the child that
/// the principal's (or everyone's) sessions share. The child is initialized once; later
/// sessions get that `InitializeResult` with their own id. Ids of all sessions are rewritten by
/// the multiplexer, so they never collide.
async fn initialize_shared(c: &Caller, message: &ClientMessage) -> Result<Response, Error> {
    let (state, route, principal) = (&c.state, &c.route, &c.principal);
    let slot = state
        .sessions
        .reserve(&principal.key())
        .map_err(|e| cap_reached(state, e))?;
    let (mux, share) = state
        .pool
        .get_or_spawn_for_sessions(&route.server, principal, &state.sessions, &state.tracker)
        .map_err(|e| pool_error(state, route, e))?;
    let id = crate::session::new_session_id();
    let span =
        tracing::info_span!("session", id = %id, sub = %principal.sub, server = %route.name());
    // A budget of the session's own: a client of the shared child that stops reading must not
    // take the room of the other sessions' streams.
    let sessions_config = &c.live.config.sessions;
    let standalone = Arc::new(Standalone::new(
        Budget::new(sessions_config.max_pending_bytes),
        sessions_config.replay_buffer_bytes,
    ));
    share.broadcast.add(&standalone);
    let kind = Kind::Streamable {
        standalone,
        share: Some(share.clone()),
    };
    let session = state
        .sessions
        .insert(id, slot, route.name(), mux.clone(), kind);
    tracing::info!(parent: &span, pid = mux.child().pid(), "session joined a shared child");
    end_with_child(state, &session, span);
    let client_id = message.first_request_id();
    let mut init = share.init.lock().await;
    if init.is_none() {
        let (tx, mut rx) = queue(ROUTE_QUEUE, session.budget().clone());
        let dispatch = Dispatch {
            owner: Some(session.tag),
            tx,
            cancel_on_drop: true,
            timeout: true,
            finish: None,
            audit: c.audit("session", Some(&session.id)),
            trace: c.trace("session", Some(&session.id)),
        };
        let _ticket = mux
            .send(message, dispatch)
            .await
            .map_err(|_| Error::ChildExited)?;
        let answer = loop {
            match next_item(&mut rx, &state.shutdown).await {
                Some(Item::Final(line)) => break line,
                Some(Item::Message(_)) => continue,
                None => {
                    state.sessions.remove(&session.id);
                    return Err(Error::ShuttingDown);
                }
            }
        };
        let parsed: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        match parsed.get("result") {
            Some(r) => *init = Some(r.to_string()),
            None => {
                // The child refused (or did not answer in time): pass its error on, cache
                // nothing.
                state.sessions.remove(&session.id);
                return Ok(json_answer(answer, false));
            }
        }
    }
    let cached = init.clone().unwrap_or_else(|| "{}".into());
    drop(init);
    let body = format!(r#"{{"jsonrpc":"2.0","id":{client_id},"result":{cached}}}"#);
    Ok(with_session_header(json_answer(body, false), &session.id))
}

/// Ends a session when its child exits.
fn end_with_child(state: &Arc<AppState>, session: &Session, span: tracing::Span) {
    let sessions = state.sessions.clone();
    let exited = session.mux.child().exited_token();
    let session_id = session.id.clone();
    state.tracker.spawn(async move {
        exited.cancelled().await;
        if sessions.remove(&session_id).is_some() {
            tracing::info!(parent: &span, "session ended: the server process exited");
        }
    });
}

/// A POST that names a session.
pub(super) async fn post(
    c: &Caller,
    session_id: &str,
    version: Option<&str>,
    message: &ClientMessage,
) -> Result<Response, Error> {
    let (state, route, principal, headers) = (&c.state, &c.route, &c.principal, &c.headers);
    let session = state
        .sessions
        .get(session_id, &principal.key(), route.name())
        .filter(|s| matches!(s.kind, Kind::Streamable { .. }))
        .ok_or(Error::NoSession)?;
    // On a shared child only the first session's `notifications/initialized` is forwarded.
    if let Some(share) = session.share()
        && message.first_method() == Some("notifications/initialized")
        && share.initialized_sent.swap(true, Ordering::AcqRel)
    {
        return Ok(accepted(""));
    }
    let version = version.unwrap_or(DEFAULT_SESSION_VERSION);
    if !SESSION_VERSIONS.contains(&version) {
        return Err(Error::UnsupportedVersion {
            id: message.first_request_id().to_owned(),
            requested: version.to_owned(),
        });
    }
    // JSON-RPC batches existed only in 2025-03-26 (removed in 2025-06-18).
    if message.batch && version != BATCH_VERSION {
        return Err(Error::BadRequest {
            code: INVALID_REQUEST,
            message: "JSON-RPC batches are only accepted for protocol version 2025-03-26",
        });
    }
    if message.first_method() == Some("initialize") {
        return Err(Error::BadRequest {
            code: INVALID_REQUEST,
            message: "this session is already initialized",
        });
    }
    session.touch();
    let audit = c.audit("session", Some(&session.id));
    let trace = c.trace("session", Some(&session.id));
    let finish = match c.gate(&audit, &trace, message) {
        Ok(finish) => finish,
        Err(denied) => return Ok(json_answer(denied, false)),
    };
    let exchange = Exchange {
        mux: &session.mux,
        message,
        owner: Some(session.tag),
        sse_ok: accepts_sse(headers),
        timeout: times_out(message),
        finish,
        audit,
        trace,
        budget: session.budget().clone(),
    };
    respond(c, exchange).await
}

/// `GET /mcp`: the session's standalone stream; without a session, 405 (modern era has no GET).
pub(crate) async fn get(c: Caller) -> Result<Response, Error> {
    let session = session_for(&c)?;
    let (state, principal, headers) = (&c.state, &c.principal, &c.headers);
    let Kind::Streamable { standalone, .. } = &session.kind else {
        return Err(Error::NoSession);
    };
    let rx = standalone.connect(last_event_id(headers));
    session.touch();
    let expiry = stream_expiry(&c.live, principal);
    let stream = standalone_stream(rx, session.clone(), state.shutdown.clone(), expiry);
    Ok(sse_response(stream, c.live.config.http.sse_keepalive_secs))
}

/// The event id a reconnecting client resumes after (spec 2025-11-25 Transports §Resumability
/// and Redelivery); an unreadable one counts as absent, so the stream replays what it never got.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "last-event-id").and_then(|v| v.trim().parse().ok())
}

fn standalone_stream(
    rx: crate::budget::queue::Receiver<StreamEvent>,
    session: Arc<Session>,
    shutdown: CancellationToken,
    expiry: Option<Duration>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let exited = session.mux.child().exited_token();
    let expiry = expiry.map(|d| Box::pin(tokio::time::sleep(d)));
    futures::stream::unfold(
        (rx, session, shutdown, exited, expiry),
        |(mut rx, session, shutdown, exited, mut expiry)| async move {
            let expired = async {
                match expiry.as_mut() {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = rx.recv() => {
                    let (id, line) = event?;
                    session.touch();
                    let ev = Event::default().id(id.to_string()).data(&*line);
                    Some((Ok(ev), (rx, session, shutdown, exited, expiry)))
                }
                _ = shutdown.cancelled() => None,
                _ = exited.cancelled() => None,
                _ = expired => None,
            }
        },
    )
}

/// `DELETE /mcp`: ends the session and its child.
pub(crate) async fn delete(c: Caller) -> Result<Response, Error> {
    let session = session_for(&c)?;
    c.state.sessions.remove(&session.id);
    tracing::info!(session = %session.id, "session deleted by the client");
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// The session the caller's `Mcp-Session-Id` names (GET and DELETE): 405 without the header
/// (the modern era has no sessions), 404 for an unknown or someone else's session.
fn session_for(c: &Caller) -> Result<Arc<Session>, Error> {
    let session_id = header_str(&c.headers, SESSION_HEADER).ok_or(Error::MethodNotAllowed)?;
    c.state
        .sessions
        .get(session_id, &c.principal.key(), c.route.name())
        .ok_or(Error::NoSession)
}
