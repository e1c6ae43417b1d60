//! The HTTP transports, and what they share: authenticating a request for one server and
//! the error answers of DESIGN §6.

pub mod sse;
pub mod standalone;
pub mod streamable;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Principal;
use crate::auth::metadata::metadata_url;
use crate::jsonrpc;
use crate::session::CapError;
use crate::state::AppState;

/// Which server a route serves, and its base path (`""` or `/servers/NAME`).
#[derive(Debug, Clone)]
pub struct ServerRoute {
    pub name: Arc<str>,
    pub base: Arc<str>,
}

/// Authenticates a request for `route`'s server ([`crate::auth::Authenticator::authorize`]).
/// The error is the complete 401/403 answer.
pub async fn authorize(
    state: &AppState,
    route: &ServerRoute,
    endpoint: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Principal, Response> {
    let result = state.auth.authorize(&route.name, headers, query).await;
    result.map_err(|e| {
        tracing::info!(reason = e.reason(), detail = %e, server = %route.name, "request refused");
        state.metrics.auth_failure(e.reason());
        // Built only for a refusal: a granted request does not pay for the URL.
        let resource_metadata = metadata_url(
            &state.public_url_for(headers),
            &format!("{}{endpoint}", route.base),
        );
        e.into_challenge(&resource_metadata, state.auth.required_scope(&route.name))
    })
}

/// A JSON-RPC error body with an HTTP status (400 for bad bodies).
pub fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = jsonrpc::error_response("null", code, message);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A plain error with a small JSON body.
pub fn http_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// 503 with `Retry-After` when a session cap is reached (DESIGN §6).
pub fn cap_reached(e: CapError) -> Response {
    tracing::warn!(error = %e, "session refused");
    let mut r = http_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// 503 for a new session while the proxy drains (DESIGN §5): the load balancer retries it
/// on another instance; `Connection: close` moves the client off this one.
pub fn draining() -> Response {
    let mut r = http_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    let h = r.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// 404 for an unknown, ended or someone else's session: the same answer for all three.
pub fn no_session() -> Response {
    http_error(StatusCode::NOT_FOUND, "session not found")
}

/// What a new session needs before its child runs: a counted slot (caps are checked before
/// anything is spawned, DESIGN §3), the spawn recipe, its id and log span, and a warm child
/// when the server keeps some.
pub struct NewSession {
    pub slot: crate::session::Slot,
    pub spec: crate::child::ChildSpec,
    pub id: String,
    pub span: tracing::Span,
    pub warm: Option<crate::warm::Warm>,
}

/// Prepares a session of `route`'s server for `principal` (both transports).
#[allow(clippy::result_large_err)] // an early answer, built once per new session
pub fn prepare_session(
    state: &AppState,
    route: &ServerRoute,
    principal: &Principal,
) -> Result<NewSession, Response> {
    let Some(server) = state.servers.get(&*route.name) else {
        return Err(no_session());
    };
    let slot = state.sessions.reserve(&principal.key()).map_err(|e| {
        state.metrics.refused_cap(e);
        cap_reached(e)
    })?;
    let spec = server.child_spec(Some(principal)).map_err(|e| {
        tracing::warn!(error = %e, "cannot build the child environment");
        http_error(
            StatusCode::FORBIDDEN,
            "the token lacks a claim this server needs",
        )
    })?;
    let id = crate::session::new_session_id();
    let span = tracing::info_span!("session", id = %id, sub = %principal.sub, server = %route.name);
    let warm = server.warm.get().and_then(|w| w.take());
    if let Some(w) = &warm {
        tracing::info!(parent: &span, pid = w.child.pid(), "warm child handed to the session");
    }
    state
        .spawned
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(NewSession {
        slot,
        spec,
        id,
        span,
        warm,
    })
}

/// 502 when the server cannot be started (the detail goes to the log only).
pub fn spawn_failed(span: &tracing::Span, e: &crate::child::ChildError) -> Response {
    tracing::error!(parent: span, error = %e, "spawning the server failed");
    http_error(
        StatusCode::BAD_GATEWAY,
        "the MCP server could not be started",
    )
}
