//! The modern era of Streamable HTTP (spec 2026-07-28 "Streamable HTTP"): no session; each
//! request carries its version and capabilities, its method and name are mirrored into headers
//! that must agree with the body, and it goes to the pool child of its principal (or the shared
//! one), through the era bridge when that child speaks a legacy version.

use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use futures::StreamExt;

use super::super::sse::{message as event, sse_response};
use super::super::{Caller, admit, pool_error, stream_expiry};
use super::accepts_sse;
use super::respond::{Exchange, respond, times_out};
use crate::bridge::{self, Bridged, StreamEnd};
use crate::budget::Budget;
use crate::config::ChildScope;
use crate::error::{Error, accepted, json_answer};
use crate::protocol::jsonrpc::{ClientMessage, Kind, Message};
use crate::protocol::{INVALID_REQUEST, METHOD_HEADER, NAME_HEADER, PROTOCOL_HEADER};

/// A modern-era POST: validate, then route to the principal's child.
pub(super) async fn post(c: &Caller, message: &ClientMessage) -> Result<Response, Error> {
    let (state, route, principal, headers) = (&c.state, &c.route, &c.principal, &c.headers);
    if message.batch {
        return Err(Error::BadRequest {
            code: INVALID_REQUEST,
            message: "JSON-RPC batches are not part of protocol version 2026-07-28",
        });
    }
    let Some(first) = message.first() else {
        return Err(Error::BadRequest {
            code: INVALID_REQUEST,
            message: "Invalid Request",
        });
    };
    if first.kind == Kind::Response {
        // 2026-07-28 Streamable HTTP §Sending Messages: clients MUST NOT send responses.
        return Err(Error::BadRequest {
            code: INVALID_REQUEST,
            message: "responses are not accepted in protocol version 2026-07-28",
        });
    }
    check_mirrored_headers(headers, first).map_err(|why| Error::HeaderMismatch {
        id: message.first_request_id().to_owned(),
        why,
    })?;
    if first.kind == Kind::Notification {
        // Closing a response stream already cancelled its request (§Cancellation); other
        // notifications have no meaning without a session.
        return Ok(accepted(""));
    }
    admit(c)?;
    let audit = c.audit("modern", None);
    let trace = c.trace("modern", None);
    let finish = match c.gate(&audit, &trace, message) {
        Ok(finish) => finish,
        Err(denied) => return Ok(json_answer(denied, false)),
    };
    let child = state
        .pool
        .get_or_spawn(&route.server, principal, &state.sessions, &state.tracker)
        .map_err(|e| pool_error(state, route, e))?;
    // The era bridge: a legacy child gets a handshake first and some requests are answered by
    // the proxy itself (src/bridge).
    let max_pending_bytes = c.live.config.sessions.max_pending_bytes;
    let end = StreamEnd {
        shutdown: state.shutdown.clone(),
        expiry: stream_expiry(&c.live, principal),
        budget: Budget::new(max_pending_bytes),
    };
    let rewritten =
        match bridge::prepare(&route.server.era, &child.bridge, &child.mux, message, end).await? {
            Bridged::Answer(line) => {
                // Answered by the proxy for a legacy child (the era bridge).
                if let Some(audit) = &audit {
                    audit
                        .pending(
                            first.method.as_deref(),
                            first.name.as_deref(),
                            message.text(first),
                        )
                        .answered(&line);
                }
                if let Some(trace) = &trace {
                    let id = message.first_request_id();
                    trace.answered_by_proxy(first, id, message.text(first), &line);
                }
                return Ok(json_answer(line, true));
            }
            Bridged::Listen(stream) => {
                let events = stream.map(|line| Ok(event(line)));
                return Ok(sse_response(events, c.live.config.http.sse_keepalive_secs));
            }
            Bridged::Forward(rewritten) => rewritten,
        };
    // No session: what waits for this principal's streams is charged to its child's budget;
    // on a child everyone shares, each request has a budget of its own, so that one client
    // that stops reading cannot take the room of the others.
    let budget = match route.server.config.child_scope {
        ChildScope::Shared => Budget::new(max_pending_bytes),
        ChildScope::Session | ChildScope::Principal => child.mux.budget().clone(),
    };
    let exchange = Exchange {
        mux: &child.mux,
        message: rewritten.as_ref().unwrap_or(message),
        owner: None,
        sse_ok: accepts_sse(headers),
        timeout: times_out(message),
        finish,
        audit,
        trace,
        budget,
    };
    respond(c, exchange).await
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel (spec 2026-07-28
/// Streamable HTTP §Value Encoding).
pub(crate) fn decode_header_value(value: &str) -> Option<String> {
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

/// Checks `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` against the body (spec
/// 2026-07-28 Streamable HTTP §Server Validation); the error is the message of the -32020
/// answer.
pub(crate) fn check_mirrored_headers(headers: &HeaderMap, message: &Message) -> Result<(), String> {
    let value = |name: &str| -> Result<Option<&str>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| format!("{name} header contains invalid characters")),
        }
    };
    let is_request = message.kind == Kind::Request;
    let version = value(PROTOCOL_HEADER)?.unwrap_or_default();
    let body_version = message.protocol_version.as_deref();
    if is_request && body_version != Some(version) {
        return Err(format!(
            "MCP-Protocol-Version header value '{version}' does not match body value '{}'",
            body_version.unwrap_or("(missing)")
        ));
    }
    let method = message.method.as_deref().unwrap_or_default();
    match value(METHOD_HEADER)? {
        Some(h) if h != method => {
            return Err(format!(
                "Mcp-Method header value '{h}' does not match body value '{method}'"
            ));
        }
        None if is_request => return Err("Mcp-Method header is missing".into()),
        _ => {}
    }
    if matches!(method, "tools/call" | "resources/read" | "prompts/get") {
        let body_name = if method == "resources/read" {
            message.uri.as_deref()
        } else {
            message.name.as_deref()
        };
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
    } else if headers.contains_key(NAME_HEADER) && is_request {
        // A name header on a method without a name cannot match anything.
        return Err(format!("Mcp-Name header is not expected for {method}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc;
    use axum::http::HeaderValue;

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
        let call = jsonrpc::client_message(CALL.as_bytes()).expect("valid");
        let call = call.first().expect("one");
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("get wéather")
        );
        let ok = headers(&[
            (PROTOCOL_HEADER, "2026-07-28"),
            (METHOD_HEADER, "tools/call"),
            (NAME_HEADER, &encoded),
        ]);
        assert_eq!(check_mirrored_headers(&ok, call), Ok(()));
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
            assert!(check_mirrored_headers(h, call).is_err(), "case {i}");
        }
    }
}
