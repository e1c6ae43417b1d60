//! Streamable HTTP on `/mcp`, both eras on one endpoint, decided per request (DESIGN §2):
//! - the session era (2025-03-26 … 2025-11-25, spec 2025-11-25 "Transports" §Streamable HTTP):
//!   `initialize` creates a session with its own child, later requests carry `Mcp-Session-Id`,
//!   `GET` opens the standalone stream, `DELETE` ends the session;
//! - the modern era (2026-07-28, spec 2026-07-28 "Streamable HTTP"): no session; the mirrored
//!   headers are checked against the body, and requests go to a per-principal child.
//!
//! Each request's answer goes back on that request's own response — `application/json` when
//! the answer is the first thing the child sends for it, an SSE stream when notifications
//! come first — and never on another stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sse::SESSION_HEADER;
use super::standalone::Standalone;
use super::{
    NewSession, ServerRoute, authorize, cap_reached, draining, http_error, jsonrpc_error,
    no_session, prepare_session, spawn_failed,
};
use crate::auth::Principal;
use crate::bridge::{self, Bridged};
use crate::child::ChildError;
use crate::jsonrpc::{self, ClientMessage, Kind};
use crate::mux::{Item, Mux, ROUTE_QUEUE, RouteError, Ticket};
use crate::policy::{TOOL_DENIED, ToolPolicy, Verdict};
use crate::pool::PoolError;
use crate::session::{Pipe, Session};
use crate::state::AppState;

/// Versions served with sessions over Streamable HTTP.
pub const SESSION_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Versions served statelessly.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
/// Assumed when a session-era request carries no `MCP-Protocol-Version` (spec 2025-11-25
/// Transports §Protocol Version Header).
const DEFAULT_SESSION_VERSION: &str = "2025-03-26";
/// JSON-RPC `HeaderMismatch` (spec 2026-07-28 Streamable HTTP §Server Validation).
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC `UnsupportedProtocolVersionError` (spec 2026-07-28 versioning).
pub const UNSUPPORTED_VERSION: i64 = -32022;

const PROTOCOL_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream") || v.contains("*/*"))
}

/// `POST /mcp`.
pub async fn post(
    State(state): State<Arc<AppState>>,
    Extension(route): Extension<ServerRoute>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match authorize(&state, &route, "/mcp", &headers, uri.query()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let message = match jsonrpc::client_message(&body) {
        Ok(m) => m,
        Err(e) => return jsonrpc_error(StatusCode::BAD_REQUEST, e.code(), e.message()),
    };
    let version = header_str(&headers, PROTOCOL_HEADER);
    if let Some(session_id) = header_str(&headers, SESSION_HEADER) {
        return session_post(
            &state, &route, &principal, session_id, version, &headers, &message,
        )
        .await;
    }
    if !message.batch && message.first_method.as_deref() == Some("initialize") {
        return initialize(&state, &route, &principal, &headers, &message).await;
    }
    match version {
        Some(v) if MODERN_VERSIONS.contains(&v) => {
            modern_post(&state, &route, &principal, &headers, &message).await
        }
        Some(v) if !SESSION_VERSIONS.contains(&v) => unsupported_version(v, &message),
        _ => http_error(
            StatusCode::BAD_REQUEST,
            "Mcp-Session-Id header is required (send initialize first, or use protocol version 2026-07-28)",
        ),
    }
}

/// 400 with `UnsupportedProtocolVersionError` listing what we serve.
fn unsupported_version(requested: &str, message: &ClientMessage) -> Response {
    let mut supported: Vec<&str> = MODERN_VERSIONS.to_vec();
    supported.extend(SESSION_VERSIONS.iter().rev());
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": first_id(message),
        "error": {
            "code": UNSUPPORTED_VERSION,
            "message": "Unsupported protocol version",
            "data": { "supported": supported, "requested": requested },
        }
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn first_id(message: &ClientMessage) -> serde_json::Value {
    message
        .request_ids
        .first()
        .and_then(|id| serde_json::from_str(id).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// `initialize` without a session: a new session and child (session era).
async fn initialize(
    state: &Arc<AppState>,
    route: &ServerRoute,
    principal: &Principal,
    headers: &HeaderMap,
    message: &ClientMessage,
) -> Response {
    let (server, list_filter) = match admit(state, route, principal, message) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if server.config.child_scope != crate::config::ChildScope::Session {
        return initialize_shared(state, route, principal, message).await;
    }
    let NewSession {
        slot,
        spec,
        id,
        span,
        warm,
    } = match prepare_session(state, route, principal) {
        Ok(n) => n,
        Err(response) => return response,
    };
    let spawned = match warm {
        Some(w) => Ok(Mux::adopt(w.child, w.output, &state.tracker)),
        None => Mux::spawn(&spec, span.clone(), &state.tracker),
    };
    let mux = match spawned {
        Ok(mux) => mux,
        Err(e) => return spawn_failed(&span, &e),
    };
    let standalone = Arc::new(Standalone::new());
    mux.set_unrouted(standalone.clone());
    let session = state.sessions.insert(
        id,
        slot,
        &route.name,
        Pipe::Mux {
            mux: mux.clone(),
            standalone,
            share: None,
        },
    );
    tracing::info!(parent: &span, "streamable HTTP session opened");
    // The session ends when its child does.
    let sessions = state.sessions.clone();
    let exited = mux.child().exited_token();
    let session_id = session.id.clone();
    state.tracker.spawn(async move {
        exited.cancelled().await;
        if sessions.remove(&session_id).is_some() {
            tracing::info!(parent: &span, "session ended: the server process exited");
        }
    });
    let mut response = respond(
        state,
        &mux,
        message,
        Some(session.tag),
        accepts_sse(headers),
        false,
        timeout_for(state, route, message),
        list_filter,
    )
    .await;
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// `initialize` under `child_scope = "principal" | "shared"`: the session joins the child that
/// the principal's (or everyone's) sessions share. The child is initialized once; later
/// sessions get that `InitializeResult` with their own id. Ids of all sessions are rewritten by
/// the multiplexer, so they never collide.
async fn initialize_shared(
    state: &Arc<AppState>,
    route: &ServerRoute,
    principal: &Principal,
    message: &ClientMessage,
) -> Response {
    let Some(server) = state.servers.get(&*route.name) else {
        return no_session();
    };
    let slot = match state.sessions.reserve(&principal.key()) {
        Ok(slot) => slot,
        Err(e) => {
            state.metrics.refused_cap(e);
            return cap_reached(e);
        }
    };
    let (mux, share) = match state.pool.get_or_spawn_for_sessions(
        server,
        principal,
        &state.sessions,
        &state.tracker,
    ) {
        Ok(pair) => pair,
        Err(e) => return pool_error(state, route, e),
    };
    let id = crate::session::new_session_id();
    let span = tracing::info_span!("session", id = %id, sub = %principal.sub, server = %route.name);
    let standalone = Arc::new(Standalone::new());
    share.broadcast.add(&standalone);
    let session = state.sessions.insert(
        id,
        slot,
        &route.name,
        Pipe::Mux {
            mux: mux.clone(),
            standalone,
            share: Some(share.clone()),
        },
    );
    tracing::info!(parent: &span, pid = mux.child().pid(), "session joined a shared child");
    watch_child_exit(state, &mux, &session.id, span);
    let client_id = message
        .request_ids
        .first()
        .cloned()
        .unwrap_or_else(|| "null".into());
    let mut init = share.init.lock().await;
    if init.is_none() {
        let Ok(text) = std::str::from_utf8(&message.line) else {
            return jsonrpc_error(StatusCode::BAD_REQUEST, jsonrpc::PARSE_ERROR, "Parse error");
        };
        let (tx, mut rx) = mpsc::channel(ROUTE_QUEUE);
        let _ticket = match mux.send_requests(text, Some(session.tag), tx, true).await {
            Ok(t) => t,
            Err(_) => return http_error(StatusCode::BAD_GATEWAY, "the MCP server process exited"),
        };
        let deadline = timeout_for(state, route, message).map(|t| tokio::time::Instant::now() + t);
        let result = loop {
            match next_item(&mut rx, deadline, &state.shutdown).await {
                Next::Item(Item::Final(line)) => break line,
                Next::Item(Item::Message(_)) => continue,
                Next::TimedOut | Next::Closed => {
                    state.sessions.remove(&session.id);
                    return http_error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the MCP server did not answer initialize",
                    );
                }
            }
        };
        let parsed: serde_json::Value = serde_json::from_str(&result).unwrap_or_default();
        match parsed.get("result") {
            Some(r) => *init = Some(r.to_string()),
            None => {
                // The child refused: pass its error on, cache nothing.
                state.sessions.remove(&session.id);
                return json_response(&result, false);
            }
        }
    }
    let cached = init.clone().unwrap_or_else(|| "{}".into());
    drop(init);
    let body = format!(r#"{{"jsonrpc":"2.0","id":{client_id},"result":{cached}}}"#);
    let mut response = json_response(&body, false);
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// Ends a session when its child exits.
fn watch_child_exit(state: &Arc<AppState>, mux: &Arc<Mux>, session_id: &str, span: tracing::Span) {
    let sessions = state.sessions.clone();
    let exited = mux.child().exited_token();
    let session_id = session_id.to_owned();
    state.tracker.spawn(async move {
        exited.cancelled().await;
        if sessions.remove(&session_id).is_some() {
            tracing::info!(parent: &span, "session ended: the server process exited");
        }
    });
}

fn pool_error(state: &AppState, route: &ServerRoute, e: PoolError) -> Response {
    match e {
        PoolError::Cap(e) => {
            state.metrics.refused_cap(e);
            cap_reached(e)
        }
        PoolError::Backoff {
            crashes,
            retry_after,
        } => {
            tracing::warn!(server = %route.name, crashes, "child restart delayed");
            let mut r = http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the MCP server keeps exiting; retry later",
            );
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        PoolError::Claims(e) => {
            tracing::warn!(error = %e, "cannot build the child environment");
            http_error(
                StatusCode::FORBIDDEN,
                "the token lacks a claim this server needs",
            )
        }
        PoolError::Spawn(e) => {
            tracing::error!(error = %e, server = %route.name, "spawning the server failed");
            http_error(
                StatusCode::BAD_GATEWAY,
                "the MCP server could not be started",
            )
        }
    }
}

/// A POST that names a session.
async fn session_post(
    state: &Arc<AppState>,
    route: &ServerRoute,
    principal: &Principal,
    session_id: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    message: &ClientMessage,
) -> Response {
    let Some(session) = state
        .sessions
        .get(session_id, &principal.key(), &route.name)
    else {
        return no_session();
    };
    let Pipe::Mux { mux, share, .. } = &session.pipe else {
        return no_session();
    };
    // On a shared child only the first session's `notifications/initialized` is forwarded.
    if let Some(share) = share
        && message.first_method.as_deref() == Some("notifications/initialized")
        && share
            .initialized_sent
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return StatusCode::ACCEPTED.into_response();
    }
    let version = version.unwrap_or(DEFAULT_SESSION_VERSION);
    if !SESSION_VERSIONS.contains(&version) {
        return unsupported_version(version, message);
    }
    // JSON-RPC batches existed only in 2025-03-26 (removed in 2025-06-18).
    if message.batch && version != "2025-03-26" {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "JSON-RPC batches are only accepted for protocol version 2025-03-26",
        );
    }
    if message.first_method.as_deref() == Some("initialize") {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "this session is already initialized",
        );
    }
    session.touch();
    let list_filter = match tool_gate(state, route, principal, message) {
        Ok(f) => f,
        Err(response) => return response,
    };
    respond(
        state,
        mux,
        message,
        Some(session.tag),
        accepts_sse(headers),
        false,
        timeout_for(state, route, message),
        list_filter,
    )
    .await
}

/// The request's deadline: `request_timeout_secs`, none for `subscriptions/listen`.
fn timeout_for(state: &AppState, route: &ServerRoute, message: &ClientMessage) -> Option<Duration> {
    if message.first_method.as_deref() == Some("subscriptions/listen") {
        return None;
    }
    state
        .servers
        .get(&*route.name)
        .map(|s| Duration::from_secs(s.config.request_timeout_secs))
}

/// The fields of a modern request that are mirrored into headers.
#[derive(Deserialize)]
struct ModernProbe<'a> {
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<ModernParams<'a>>,
}

#[derive(Deserialize)]
struct ModernParams<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<ModernMeta<'a>>,
}

#[derive(Deserialize)]
struct ModernMeta<'a> {
    #[serde(borrow, default, rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<std::borrow::Cow<'a, str>>,
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel (spec 2026-07-28
/// Streamable HTTP §Value Encoding).
fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_owned()),
    }
}

/// Checks `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` against the body; the error
/// is the message for a -32020 answer.
fn check_mirrored_headers(headers: &HeaderMap, body: &[u8], kind: Kind) -> Result<(), String> {
    let probe: ModernProbe<'_> = serde_json::from_slice(body)
        .map_err(|_| "the body is not a single JSON-RPC message".to_owned())?;
    let present = |name: &str| headers.contains_key(name);
    let value = |name: &str| -> Result<Option<&str>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| format!("{name} header contains invalid characters")),
        }
    };
    let version = value(PROTOCOL_HEADER)?.unwrap_or_default();
    let body_version = probe
        .params
        .as_ref()
        .and_then(|p| p.meta.as_ref())
        .and_then(|m| m.protocol_version.as_deref());
    if kind == Kind::Request && body_version != Some(version) {
        return Err(format!(
            "MCP-Protocol-Version header value '{version}' does not match body value '{}'",
            body_version.unwrap_or("(missing)")
        ));
    }
    let method = probe.method.as_deref().unwrap_or_default();
    match value(METHOD_HEADER)? {
        Some(h) if h != method => {
            return Err(format!(
                "Mcp-Method header value '{h}' does not match body value '{method}'"
            ));
        }
        None if kind == Kind::Request => return Err("Mcp-Method header is missing".into()),
        _ => {}
    }
    let named = matches!(method, "tools/call" | "resources/read" | "prompts/get");
    if named {
        let body_name = probe.params.as_ref().and_then(|p| {
            if method == "resources/read" {
                p.uri.as_deref()
            } else {
                p.name.as_deref()
            }
        });
        let Some(raw) = value(NAME_HEADER)? else {
            return Err("Mcp-Name header is missing".into());
        };
        let decoded = decode_header_value(raw)
            .ok_or_else(|| "Mcp-Name header has a malformed base64 value".to_owned())?;
        if Some(decoded.as_str()) != body_name {
            return Err(format!(
                "Mcp-Name header value '{decoded}' does not match body value '{}'",
                body_name.unwrap_or("(missing)")
            ));
        }
    } else if present(NAME_HEADER) && kind == Kind::Request {
        // A name header on a method without a name cannot match anything.
        return Err(format!("Mcp-Name header is not expected for {method}"));
    }
    Ok(())
}

/// A modern-era POST: validate, then route to the principal's child.
async fn modern_post(
    state: &Arc<AppState>,
    route: &ServerRoute,
    principal: &Principal,
    headers: &HeaderMap,
    message: &ClientMessage,
) -> Response {
    if message.batch {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "JSON-RPC batches are not part of protocol version 2026-07-28",
        );
    }
    let kind = message.kinds.first().copied().unwrap_or(Kind::Notification);
    if kind == Kind::Response {
        // 2026-07-28 Streamable HTTP §Sending Messages: clients MUST NOT send responses.
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "responses are not accepted in protocol version 2026-07-28",
        );
    }
    if let Err(why) = check_mirrored_headers(headers, &message.line, kind) {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": first_id(message),
            "error": { "code": HEADER_MISMATCH, "message": format!("Header mismatch: {why}") },
        });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    if kind == Kind::Notification {
        // Closing a response stream already cancelled its request (§Cancellation); other
        // notifications have no meaning without a session.
        return StatusCode::ACCEPTED.into_response();
    }
    let (server, list_filter) = match admit(state, route, principal, message) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let mux = match state
        .pool
        .get_or_spawn(server, principal, &state.sessions, &state.tracker)
    {
        Ok(mux) => mux,
        Err(e) => return pool_error(state, route, e),
    };
    // The era bridge: a legacy child gets a handshake first and some requests are answered by
    // the proxy itself (src/bridge).
    let rewritten = match bridge::prepare(state, server, &mux, principal, message).await {
        Bridged::Answered(response) => return response,
        Bridged::Forward(rewritten) => rewritten,
    };
    respond(
        state,
        &mux,
        rewritten.as_ref().unwrap_or(message),
        None,
        accepts_sse(headers),
        true,
        timeout_for(state, route, message),
        list_filter,
    )
    .await
}

/// New work (a new session, or a sessionless request): refused while draining (the load
/// balancer retries it elsewhere), then the server and its tool policy.
#[allow(clippy::result_large_err)] // an early answer, built once per request
fn admit<'a>(
    state: &'a AppState,
    route: &ServerRoute,
    principal: &Principal,
    message: &ClientMessage,
) -> Result<(&'a crate::state::ServerRuntime, ListFilter), Response> {
    if state.is_draining() {
        state.metrics.refused_draining();
        return Err(draining());
    }
    let Some(server) = state.servers.get(&*route.name) else {
        return Err(no_session());
    };
    let list_filter = tool_gate(state, route, principal, message)?;
    Ok((server, list_filter))
}

/// A `tools/list` answer to filter: the server's policy and the caller's scopes.
type ListFilter = Option<(ToolPolicy, Vec<String>)>;

/// Applies the server's tool rules (DESIGN §4): a denied `tools/call` is answered here with a
/// JSON-RPC error and never reaches the child; a `tools/list` gets its answer filtered.
#[allow(clippy::result_large_err)] // an early answer, built once per request
fn tool_gate(
    state: &AppState,
    route: &ServerRoute,
    principal: &Principal,
    message: &ClientMessage,
) -> Result<ListFilter, Response> {
    let Some(server) = state.servers.get(&*route.name) else {
        return Ok(None);
    };
    if server.policy.is_empty() || message.batch {
        return Ok(None);
    }
    match server.policy.judge(&message.line, &principal.scopes) {
        Verdict::Allow => Ok(None),
        Verdict::FilterList => Ok(Some((server.policy.clone(), principal.scopes.clone()))),
        Verdict::Deny(why) => {
            tracing::info!(sub = %principal.sub, "{why}");
            let id = message.request_ids.first().map_or("null", String::as_str);
            Err(json_response(
                &jsonrpc::error_response(id, TOOL_DENIED, &why),
                false,
            ))
        }
    }
}

fn apply_filter(filter: &ListFilter, line: String) -> String {
    match filter {
        Some((policy, scopes)) => policy.filter_list(&line, scopes).unwrap_or(line),
        None => line,
    }
}

/// Sends the message to the child and answers with what comes back for it.
#[allow(clippy::too_many_arguments)]
async fn respond(
    state: &Arc<AppState>,
    mux: &Arc<Mux>,
    message: &ClientMessage,
    owner: Option<u64>,
    sse_ok: bool,
    cancel_on_drop: bool,
    timeout: Option<Duration>,
    list_filter: ListFilter,
) -> Response {
    let Ok(text) = std::str::from_utf8(&message.line) else {
        return jsonrpc_error(StatusCode::BAD_REQUEST, jsonrpc::PARSE_ERROR, "Parse error");
    };
    let (tx, mut rx) = mpsc::channel(ROUTE_QUEUE);
    let mut ticket = match mux.send_requests(text, owner, tx, cancel_on_drop).await {
        Ok(t) => t,
        Err(RouteError::DuplicateId) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "a request with this id is already in flight in this session",
            );
        }
        Err(RouteError::Child(ChildError::Stalled)) => {
            return http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the MCP server is not accepting input",
            );
        }
        Err(RouteError::Child(_)) => {
            return if owner.is_some() {
                no_session()
            } else {
                http_error(StatusCode::BAD_GATEWAY, "the MCP server process exited")
            };
        }
    };
    if ticket.proxy_ids().is_empty() {
        // Only notifications or responses: accepted (spec: 202, no body).
        return StatusCode::ACCEPTED.into_response();
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let original_id = message
        .request_ids
        .first()
        .cloned()
        .unwrap_or_else(|| "null".into());
    let first = match next_item(&mut rx, deadline, &state.shutdown).await {
        Next::Item(item) => item,
        Next::TimedOut => {
            // Dropping the ticket tells the child (notifications/cancelled).
            ticket.set_cancel_on_drop(true);
            return json_response(
                &jsonrpc::error_response(
                    &original_id,
                    jsonrpc::INTERNAL_ERROR,
                    "request timed out",
                ),
                owner.is_none(),
            );
        }
        Next::Closed => return http_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    if !message.batch
        && let Item::Final(line) = first
    {
        ticket.complete_one();
        return json_response(&apply_filter(&list_filter, line), owner.is_none());
    }
    if !sse_ok {
        // The client takes JSON only: wait for the answers, drop the notifications.
        let mut finals = Vec::new();
        let mut item = Some(first);
        loop {
            if let Some(Item::Final(line)) = item.take() {
                finals.push(apply_filter(&list_filter, line));
                if ticket.complete_one() {
                    break;
                }
            }
            match next_item(&mut rx, deadline, &state.shutdown).await {
                Next::Item(i) => item = Some(i),
                Next::TimedOut | Next::Closed => {
                    ticket.set_cancel_on_drop(true);
                    return http_error(StatusCode::GATEWAY_TIMEOUT, "request timed out");
                }
            }
        }
        let body = if message.batch {
            format!("[{}]", finals.join(","))
        } else {
            finals.pop().unwrap_or_default()
        };
        return json_response(&body, false);
    }
    let stream = request_stream(
        first,
        rx,
        ticket,
        deadline,
        state.shutdown.clone(),
        original_id,
        list_filter,
    );
    let keepalive = KeepAlive::new()
        .interval(Duration::from_secs(state.config.http.sse_keepalive_secs))
        .text("");
    let mut response = Sse::new(stream).keep_alive(keepalive).into_response();
    sse_headers(response.headers_mut());
    response
}

pub(crate) fn sse_headers(h: &mut HeaderMap) {
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// A single JSON-RPC answer as `application/json`. In the modern era an unknown method is
/// `404` (spec 2026-07-28 Streamable HTTP §Protocol Version Header).
fn json_response(line: &str, modern: bool) -> Response {
    let status = if modern && is_method_not_found(line) {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        line.to_owned(),
    )
        .into_response()
}

fn is_method_not_found(line: &str) -> bool {
    line.contains("-32601")
        && serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.pointer("/error/code").and_then(serde_json::Value::as_i64))
            == Some(jsonrpc::METHOD_NOT_FOUND)
}

enum Next {
    Item(Item),
    TimedOut,
    Closed,
}

async fn next_item(
    rx: &mut mpsc::Receiver<Item>,
    deadline: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) -> Next {
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        item = rx.recv() => item.map_or(Next::Closed, Next::Item),
        _ = sleep => Next::TimedOut,
        // Answers already queued go out before a shutdown closes the stream.
        _ = shutdown.cancelled() => rx.try_recv().map_or(Next::Closed, Next::Item),
    }
}

struct RequestStream {
    first: Option<Item>,
    rx: mpsc::Receiver<Item>,
    ticket: Ticket,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    shutdown: CancellationToken,
    original_id: String,
    list_filter: ListFilter,
    done: bool,
}

fn request_stream(
    first: Item,
    rx: mpsc::Receiver<Item>,
    ticket: Ticket,
    deadline: Option<tokio::time::Instant>,
    shutdown: CancellationToken,
    original_id: String,
    list_filter: ListFilter,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let st = RequestStream {
        first: Some(first),
        rx,
        ticket,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        shutdown,
        original_id,
        list_filter,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let item = match st.first.take() {
            Some(item) => item,
            None => {
                let expired = async {
                    match st.deadline.as_mut() {
                        Some(d) => d.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    item = st.rx.recv() => item?,
                    _ = expired => {
                        st.ticket.set_cancel_on_drop(true);
                        st.done = true;
                        let line = jsonrpc::error_response(&st.original_id, jsonrpc::INTERNAL_ERROR, "request timed out");
                        return Some((Ok(Event::default().data(line)), st));
                    }
                    _ = st.shutdown.cancelled() => return None,
                }
            }
        };
        let line = match item {
            Item::Message(line) => line,
            Item::Final(line) => {
                // The final response ends the stream (spec 2025-11-25 Transports: "After the
                // JSON-RPC response has been sent, the server SHOULD terminate the SSE stream").
                if st.ticket.complete_one() {
                    st.done = true;
                }
                apply_filter(&st.list_filter, line)
            }
        };
        Some((Ok(Event::default().data(line)), st))
    })
}

/// `GET /mcp`: the session's standalone stream; without a session, 405 (modern era has no GET).
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(route): Extension<ServerRoute>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (principal, session) = match session_for(&state, &route, &uri, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Pipe::Mux { standalone, .. } = &session.pipe else {
        return no_session();
    };
    let last_event_id = header_str(&headers, "last-event-id").and_then(|v| v.trim().parse().ok());
    let rx = standalone.connect(last_event_id);
    session.touch();
    let expiry = state.config.auth.close_streams_on_expiry.then(|| {
        Duration::from_secs(
            principal
                .exp
                .saturating_sub(jsonwebtoken::get_current_timestamp()),
        )
    });
    let stream = standalone_stream(rx, session.clone(), state.shutdown.clone(), expiry);
    let keepalive = KeepAlive::new()
        .interval(Duration::from_secs(state.config.http.sse_keepalive_secs))
        .text("");
    let mut response = Sse::new(stream).keep_alive(keepalive).into_response();
    sse_headers(response.headers_mut());
    response
}

fn standalone_stream(
    rx: mpsc::Receiver<(u64, Arc<str>)>,
    session: Arc<Session>,
    shutdown: CancellationToken,
    expiry: Option<Duration>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let exited = session.child().exited_token();
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
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(route): Extension<ServerRoute>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (_, session) = match session_for(&state, &route, &uri, &headers).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    state.sessions.remove(&session.id);
    tracing::info!(session = %session.id, "session deleted by the client");
    StatusCode::NO_CONTENT.into_response()
}

/// The caller and the session its `Mcp-Session-Id` names (GET and DELETE): 405 without the
/// header (the modern era has no sessions), 404 for an unknown or someone else's session.
#[allow(clippy::result_large_err)] // an early answer, built once per request
async fn session_for(
    state: &AppState,
    route: &ServerRoute,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Principal, Arc<Session>), Response> {
    let principal = authorize(state, route, "/mcp", headers, uri.query()).await?;
    let Some(session_id) = header_str(headers, SESSION_HEADER) else {
        return Err(method_not_allowed());
    };
    let session = state
        .sessions
        .get(session_id, &principal.key(), &route.name)
        .ok_or_else(no_session)?;
    Ok((principal, session))
}

fn method_not_allowed() -> Response {
    let mut r = http_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "GET and DELETE need an Mcp-Session-Id (protocol 2026-07-28 has no sessions)",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get wéather","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    #[test]
    fn mirrored_headers() {
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("get wéather")
        );
        let ok = headers(&[
            (PROTOCOL_HEADER, "2026-07-28"),
            (METHOD_HEADER, "tools/call"),
            (NAME_HEADER, &encoded),
        ]);
        assert_eq!(
            check_mirrored_headers(&ok, CALL.as_bytes(), Kind::Request),
            Ok(())
        );
        let cases = [
            headers(&[
                (PROTOCOL_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/call"),
            ]),
            headers(&[
                (PROTOCOL_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/list"),
                (NAME_HEADER, &encoded),
            ]),
            headers(&[(PROTOCOL_HEADER, "2026-07-28"), (NAME_HEADER, &encoded)]),
            headers(&[
                (PROTOCOL_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/call"),
                (NAME_HEADER, "other"),
            ]),
            headers(&[
                (PROTOCOL_HEADER, "2026-07-28"),
                (METHOD_HEADER, "tools/call"),
                (NAME_HEADER, "=?base64?!!?="),
            ]),
            headers(&[
                (PROTOCOL_HEADER, "2099-01-01"),
                (METHOD_HEADER, "tools/call"),
                (NAME_HEADER, &encoded),
            ]),
        ];
        for (i, h) in cases.iter().enumerate() {
            assert!(
                check_mirrored_headers(h, CALL.as_bytes(), Kind::Request).is_err(),
                "case {i}"
            );
        }
    }
}
