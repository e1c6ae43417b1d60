//! Every error answer the proxy gives, and the one place that turns each into HTTP: status,
//! body (a JSON-RPC error, a small JSON object or text), `Retry-After`, `WWW-Authenticate`
//! (DESIGN §6). Internal detail is logged where the error arises; nothing here echoes a token,
//! a key or an internal message to the client. Also [`StartError`]: why the proxy cannot start.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::protocol::jsonrpc::error_response;
use crate::protocol::{
    HEADER_MISMATCH, INVALID_REQUEST, MODERN_VERSIONS, RATE_LIMITED, SERVER_BUSY, SESSION_VERSIONS,
    UNSUPPORTED_VERSION,
};

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Auth(String),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// An OAuth bearer-token challenge (RFC 6750 §3; spec 2025-11-25 Authorization §Protected
/// Resource Metadata Discovery Requirements).
#[derive(Debug)]
pub(crate) struct Challenge {
    /// Why, as counted in `mcp_proxy_auth_failures_total{reason}` (for the audit log).
    pub(crate) reason: &'static str,
    /// 403 (`insufficient_scope`) rather than 401.
    pub(crate) forbidden: bool,
    /// The `error` parameter and body field (`invalid_token`, …); `None`: no token was sent.
    pub(crate) error: Option<&'static str>,
    /// `error_description` in the header (only where it helps the client: expiry).
    pub(crate) header_description: Option<&'static str>,
    /// The body's `error_description`.
    pub(crate) description: &'static str,
    /// The scopes named in the header (for 403: those needed; for 401: those the endpoint
    /// requires), space-separated.
    pub(crate) scope: String,
    /// The RFC 9728 metadata URL of the endpoint.
    pub(crate) resource_metadata: String,
}

/// One refusal or failure, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("authentication required")]
    Auth(Box<Challenge>),
    /// A body that is not JSON (-32700) or not JSON-RPC (-32600), or a message this transport
    /// or session does not take: 400 with a JSON-RPC error without id.
    #[error("{message}")]
    BadRequest { code: i64, message: &'static str },
    /// The 2026-07-28 mirrored headers disagree with the body: 400, `HeaderMismatch`.
    #[error("header mismatch: {why}")]
    HeaderMismatch { id: String, why: String },
    /// A protocol version the proxy does not serve: 400, `UnsupportedProtocolVersionError`.
    #[error("unsupported protocol version")]
    UnsupportedVersion { id: String, requested: String },
    #[error("missing sessionId")]
    MissingSessionId,
    #[error("Mcp-Session-Id header is required")]
    SessionRequired,
    /// GET or DELETE `/mcp` without a session (the modern era has none).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Unknown, ended or someone else's session: the same answer for all three (DESIGN §1).
    #[error("session not found")]
    NoSession,
    #[error("{0}")]
    Cap(&'static str),
    #[error("shutting down")]
    Draining,
    /// A stream or request cut short by shutdown.
    #[error("shutting down")]
    ShuttingDown,
    #[error("the token lacks a claim this server needs")]
    MissingClaim,
    #[error("the MCP server could not be started")]
    SpawnFailed,
    /// A requested restriction of `[servers.NAME.sandbox]` could not be applied: nothing was
    /// started (fail closed). The reason names the step, never a secret.
    #[error("the MCP server could not be started: the sandbox could not be applied: {0}")]
    Sandbox(String),
    #[error("the MCP server process exited")]
    ChildExited,
    #[error("the MCP server is not accepting input")]
    Stalled,
    #[error("session is busy")]
    Busy,
    /// More than `sessions.max_queued_bytes` wait for the child's stdin: 503 with `Retry-After`
    /// and a JSON-RPC error; the session goes on.
    #[error("the MCP server's input queue is full")]
    QueueFull,
    #[error("the MCP server keeps exiting; retry later")]
    Backoff { retry_after_secs: u64 },
    /// Over a rate limit (`[limits]`): 429 with `Retry-After` and a JSON-RPC error body.
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("the MCP server did not complete the initialize handshake")]
    Handshake,
    /// `/readyz` before keys are loaded or while draining (text body).
    #[error("{0}")]
    NotReady(&'static str),
    #[error("no such protected resource")]
    NoSuchResource,
    /// `/servers/NAME/…` of a server that is not configured, or (for a new session) one a
    /// reload removed.
    #[error("no such server")]
    NoSuchServer,
    /// The body did not arrive within `limits.body_read_timeout_secs`: 408, and the connection
    /// closes (what is left of the body is not read).
    #[error("request body timed out")]
    BodyTimeout,
    /// A body beyond `http.max_body_bytes`: 413.
    #[error("request body too large")]
    BodyTooLarge,
    /// Host or Origin not allowed (a JSON-RPC error without id, spec 2025-11-25 Transports
    /// §Security Warning).
    #[error("{0}")]
    Forbidden(&'static str),
}

fn json(status: StatusCode, body: String) -> Response {
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

fn plain(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn with(mut response: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
    response
}

/// Characters that would break a quoted-string are dropped (values come from our own config).
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

impl Challenge {
    fn into_response(self) -> Response {
        let mut params = String::new();
        if let Some(error) = self.error {
            params.push_str(&format!("error=\"{error}\", "));
        }
        if let Some(description) = self.header_description {
            params.push_str(&format!("error_description=\"{description}\", "));
        }
        if !self.scope.is_empty() {
            params.push_str(&format!("scope=\"{}\", ", quote_safe(&self.scope)));
        }
        let challenge = format!(
            "Bearer {params}resource_metadata=\"{}\"",
            quote_safe(&self.resource_metadata)
        );
        let status = if self.forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        let body = serde_json::json!({
            "error": self.error.unwrap_or("unauthorized"),
            "error_description": self.description,
        });
        let response = (status, axum::Json(body)).into_response();
        with(response, header::WWW_AUTHENTICATE, &challenge)
    }
}

/// Why a request was refused, carried by the response for the audit log's refusal line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reason(pub(crate) &'static str);

impl Error {
    /// A short, stable name of the refusal (the audit log's `reason`).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Auth(c) => c.reason,
            Error::BadRequest { .. } => "bad_request",
            Error::HeaderMismatch { .. } => "header_mismatch",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::MissingSessionId => "missing_session_id",
            Error::SessionRequired => "session_required",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NoSession => "no_session",
            Error::Cap(_) => "session_cap",
            Error::Draining => "draining",
            Error::ShuttingDown => "shutting_down",
            Error::MissingClaim => "missing_claim",
            Error::SpawnFailed => "spawn_failed",
            Error::Sandbox(_) => "sandbox_failed",
            Error::ChildExited => "child_exited",
            Error::Stalled => "stalled",
            Error::Busy => "busy",
            Error::QueueFull => "queue_full",
            Error::Backoff { .. } => "backoff",
            Error::RateLimited { .. } => "rate_limited",
            Error::Handshake => "handshake",
            Error::NotReady(_) => "not_ready",
            Error::NoSuchResource => "no_such_resource",
            Error::NoSuchServer => "no_such_server",
            Error::BodyTimeout => "body_timeout",
            Error::BodyTooLarge => "body_too_large",
            Error::Forbidden(_) => "forbidden",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let reason = Reason(self.reason());
        let mut response = self.into_response_inner();
        response.extensions_mut().insert(reason);
        response
    }
}

impl Error {
    fn into_response_inner(self) -> Response {
        match self {
            Error::Auth(challenge) => challenge.into_response(),
            Error::BadRequest { code, message } => json(
                StatusCode::BAD_REQUEST,
                error_response("null", code, message),
            ),
            Error::HeaderMismatch { id, why } => json(
                StatusCode::BAD_REQUEST,
                error_response(&id, HEADER_MISMATCH, &format!("Header mismatch: {why}")),
            ),
            Error::UnsupportedVersion { id, requested } => {
                let mut supported: Vec<&str> = MODERN_VERSIONS.to_vec();
                supported.extend(SESSION_VERSIONS.iter().rev());
                let id: serde_json::Value =
                    serde_json::from_str(&id).unwrap_or(serde_json::Value::Null);
                let body = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {
                        "code": UNSUPPORTED_VERSION,
                        "message": "Unsupported protocol version",
                        "data": { "supported": supported, "requested": requested },
                    }
                });
                (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
            }
            Error::MissingSessionId => plain(StatusCode::BAD_REQUEST, "missing sessionId"),
            Error::SessionRequired => plain(
                StatusCode::BAD_REQUEST,
                "Mcp-Session-Id header is required (send initialize first, or use protocol version 2026-07-28)",
            ),
            Error::MethodNotAllowed => with(
                plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET and DELETE need an Mcp-Session-Id (protocol 2026-07-28 has no sessions)",
                ),
                header::ALLOW,
                "POST",
            ),
            Error::NoSession => plain(StatusCode::NOT_FOUND, "session not found"),
            Error::NoSuchServer => plain(StatusCode::NOT_FOUND, "no such server"),
            Error::Cap(message) => with(
                plain(StatusCode::SERVICE_UNAVAILABLE, message),
                header::RETRY_AFTER,
                "5",
            ),
            // The load balancer retries it on another instance; `Connection: close` moves the
            // client off this one (DESIGN §5).
            Error::Draining => with(
                with(
                    plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                    header::RETRY_AFTER,
                    "1",
                ),
                header::CONNECTION,
                "close",
            ),
            Error::BodyTimeout => with(
                plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                ),
                header::CONNECTION,
                "close",
            ),
            Error::BodyTooLarge => plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            Error::ShuttingDown => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Error::MissingClaim => plain(
                StatusCode::FORBIDDEN,
                "the token lacks a claim this server needs",
            ),
            Error::SpawnFailed => plain(
                StatusCode::BAD_GATEWAY,
                "the MCP server could not be started",
            ),
            Error::Sandbox(reason) => plain(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "the MCP server could not be started: the sandbox could not be applied: {reason}"
                ),
            ),
            Error::ChildExited => plain(StatusCode::BAD_GATEWAY, "the MCP server process exited"),
            Error::Stalled => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the MCP server is not accepting input",
            ),
            Error::Busy => plain(StatusCode::SERVICE_UNAVAILABLE, "session is busy"),
            Error::QueueFull => with(
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    error_response(
                        "null",
                        SERVER_BUSY,
                        "the MCP server's input queue is full; retry later",
                    ),
                ),
                header::RETRY_AFTER,
                "1",
            ),
            Error::Backoff { retry_after_secs } => with(
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the MCP server keeps exiting; retry later",
                ),
                header::RETRY_AFTER,
                &retry_after_secs.max(1).to_string(),
            ),
            Error::RateLimited { retry_after_secs } => with(
                json(
                    StatusCode::TOO_MANY_REQUESTS,
                    error_response("null", RATE_LIMITED, "rate limit exceeded"),
                ),
                header::RETRY_AFTER,
                &retry_after_secs.max(1).to_string(),
            ),
            Error::Handshake => plain(
                StatusCode::BAD_GATEWAY,
                "the MCP server did not complete the initialize handshake",
            ),
            Error::NotReady(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
            Error::NoSuchResource => {
                (StatusCode::NOT_FOUND, "no such protected resource").into_response()
            }
            Error::Forbidden(message) => {
                let body = serde_json::json!({
                    "jsonrpc": "2.0",
                    "error": { "code": INVALID_REQUEST, "message": message },
                });
                (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
            }
        }
    }
}

/// A JSON-RPC answer (the child's, or one the proxy gives in its place) as `application/json`.
/// In the modern era an unknown method is `404` (spec 2026-07-28 Streamable HTTP §Protocol
/// Version Header).
pub(crate) fn json_answer(line: String, modern: bool) -> Response {
    let status = if modern
        && line.contains("-32601")
        && crate::protocol::jsonrpc::error_code(&line) == Some(crate::protocol::METHOD_NOT_FOUND)
    {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    json(status, line)
}

/// `202 Accepted` (a POST of notifications or responses only; a legacy SSE message).
pub(crate) fn accepted(body: &'static str) -> Response {
    (StatusCode::ACCEPTED, body).into_response()
}

/// The status and `WWW-Authenticate` header a client gets for a challenge.
#[cfg(test)]
pub(crate) fn www(challenge: Challenge) -> (u16, String) {
    let r = Error::Auth(Box::new(challenge)).into_response();
    let h = r.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    (r.status().as_u16(), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_what_the_client_needs() {
        let meta = "http://x/.well-known/oauth-protected-resource/sse".to_owned();
        let base = Challenge {
            reason: "missing",
            forbidden: false,
            error: None,
            header_description: None,
            description: "a bearer token is required",
            scope: "mcp:tools".into(),
            resource_metadata: meta.clone(),
        };
        assert_eq!(
            www(base),
            (
                401,
                format!("Bearer scope=\"mcp:tools\", resource_metadata=\"{meta}\"")
            )
        );
        let scope = Challenge {
            reason: "insufficient_scope",
            forbidden: true,
            error: Some("insufficient_scope"),
            header_description: None,
            description: "the token lacks a required scope",
            scope: "mcp:\"admin".into(),
            resource_metadata: meta.clone(),
        };
        assert_eq!(
            www(scope),
            (
                403,
                format!(
                    "Bearer error=\"insufficient_scope\", scope=\"mcp:admin\", resource_metadata=\"{meta}\""
                )
            )
        );
    }

    #[test]
    fn every_refusal_has_its_status() {
        let cases: Vec<(Error, u16)> = vec![
            (Error::NoSession, 404),
            (Error::NoSuchServer, 404),
            (Error::Cap("max"), 503),
            (Error::Draining, 503),
            (
                Error::Backoff {
                    retry_after_secs: 0,
                },
                503,
            ),
            (Error::MethodNotAllowed, 405),
            (Error::SpawnFailed, 502),
            (Error::Sandbox("setting the user's uid: EPERM".into()), 502),
            (
                Error::BadRequest {
                    code: INVALID_REQUEST,
                    message: "Invalid Request",
                },
                400,
            ),
        ];
        for (e, status) in cases {
            let r = e.into_response();
            assert_eq!(r.status().as_u16(), status);
        }
        let r = Error::Backoff {
            retry_after_secs: 0,
        }
        .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = Error::Draining.into_response();
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }
}
