//! Streamable HTTP on `/mcp`, both eras on one endpoint, decided per request (DESIGN §2):
//! - the session era (2025-03-26 … 2025-11-25, spec 2025-11-25 "Transports" §Streamable HTTP;
//!   [`session_era`]): `initialize` creates a session with its own child, later requests carry
//!   `Mcp-Session-Id`, `GET` opens the standalone stream, `DELETE` ends the session;
//! - the modern era (2026-07-28, spec 2026-07-28 "Streamable HTTP"; [`modern`]): no session;
//!   the mirrored headers are checked against the body, and requests go to a pool child.
//!
//! Each request's answer goes back on that request's own response ([`respond`]) and never on
//! another stream.

mod modern;
mod respond;
mod session_era;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use axum::response::Response;

pub(crate) use modern::{check_mirrored_headers, decode_header_value};
pub(crate) use session_era::{delete, get, last_event_id};

use super::Caller;
use crate::error::Error;
use crate::protocol::jsonrpc;
use crate::protocol::{MODERN_VERSIONS, PROTOCOL_HEADER, SESSION_HEADER, SESSION_VERSIONS};

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
pub(crate) async fn post(c: Caller, body: Bytes) -> Result<Response, Error> {
    let message = jsonrpc::client_message(&body).map_err(|e| Error::BadRequest {
        code: e.code(),
        message: e.message(),
    })?;
    let version = header_str(&c.headers, PROTOCOL_HEADER);
    if let Some(session_id) = header_str(&c.headers, SESSION_HEADER) {
        return session_era::post(&c, session_id, version, &message).await;
    }
    if !message.batch && message.first_method() == Some("initialize") {
        return session_era::initialize(&c, &message).await;
    }
    match version {
        Some(v) if MODERN_VERSIONS.contains(&v) => modern::post(&c, &message).await,
        Some(v) if !SESSION_VERSIONS.contains(&v) => Err(Error::UnsupportedVersion {
            id: message.first_request_id().to_owned(),
            requested: v.to_owned(),
        }),
        _ => Err(Error::SessionRequired),
    }
}
