//! What the `cargo fuzz` targets (`fuzz/fuzz_targets/`) drive, through the production code
//! (not an API): thin wrappers that turn the crate's internal types into plain data, so the
//! targets can state their properties without the internals becoming public.

use axum::http::HeaderMap;

pub use crate::auth::Authenticator;

use crate::auth::{self, Principal};
use crate::config::Config;
use crate::http::limits::Limits;
use crate::http::streamable;
use crate::mux::{Unrouted, rewrite};
use crate::protocol::{self, jsonrpc};
use crate::session::Standalone;

/// The mirrored request headers of the modern era (spec 2026-07-28 Streamable HTTP).
pub const PROTOCOL_HEADER: &str = protocol::PROTOCOL_HEADER;
pub const METHOD_HEADER: &str = protocol::METHOD_HEADER;
pub const NAME_HEADER: &str = protocol::NAME_HEADER;

/// A message's kind, from its `id` and `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

impl From<jsonrpc::Kind> for Kind {
    fn from(kind: jsonrpc::Kind) -> Self {
        match kind {
            jsonrpc::Kind::Request => Kind::Request,
            jsonrpc::Kind::Notification => Kind::Notification,
            jsonrpc::Kind::Response => Kind::Response,
        }
    }
}

/// A child line as the multiplexer classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub kind: Kind,
    /// The raw `id` (`Some("null")` for an explicit null).
    pub id: Option<String>,
}

/// Classifies one line (every child line is looked at this way).
pub fn probe(line: &str) -> Option<Probed> {
    jsonrpc::probe(line).map(|p| Probed {
        kind: p.kind().into(),
        id: p.id.map(|id| id.get().to_owned()),
    })
}

/// Replaces a line's raw id with `with`, as the multiplexer restores the client's id in the
/// child's answer.
pub fn splice_id(line: &str, with: &str) -> Option<String> {
    let probe = jsonrpc::probe(line)?;
    jsonrpc::splice(line, probe.id?.get(), with)
}

/// One message of a client body, as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: Kind,
    /// The message's own text (an element of a batch, or the whole line).
    pub text: String,
    pub id: Option<String>,
    pub method: Option<String>,
    pub name: Option<String>,
    pub uri: Option<String>,
    pub protocol_version: Option<String>,
    /// The raw `params._meta.progressToken`.
    pub progress_token: Option<String>,
    pub cancelled_id: Option<String>,
}

/// A validated client body: its line for the child, whether it is a batch, its messages.
#[derive(Debug, Clone)]
pub struct Body {
    pub line: String,
    pub batch: bool,
    pub items: Vec<Item>,
}

/// Validates a client body; the error is the JSON-RPC code it is answered with.
pub fn client_message(body: &[u8]) -> Result<Body, i64> {
    let message = jsonrpc::client_message(body).map_err(jsonrpc::BodyError::code)?;
    let items = message
        .items
        .iter()
        .map(|m| Item {
            kind: m.kind.into(),
            text: message.text(m).to_owned(),
            id: message.id(m).map(str::to_owned),
            method: m.method.clone(),
            name: m.name.clone(),
            uri: m.uri.clone(),
            protocol_version: m.protocol_version.clone(),
            progress_token: message.progress_token(m).map(str::to_owned),
            cancelled_id: message.cancelled_id(m).map(str::to_owned),
        })
        .collect();
    Ok(Body {
        line: message.line.clone(),
        batch: message.batch,
        items,
    })
}

/// Message `index` of a client body with its id, `params.requestId` and progress token
/// replaced where given (raw JSON), as the multiplexer rewrites what it forwards.
pub fn rewrite(
    body: &[u8],
    index: usize,
    id: Option<&str>,
    request_id: Option<&str>,
    progress_token: Option<&str>,
) -> Option<String> {
    let message = jsonrpc::client_message(body).ok()?;
    let item = message.items.get(index)?;
    let with = jsonrpc::Replace {
        id,
        request_id,
        progress_token,
    };
    Some(message.rewrite(item, with))
}

/// A request as the child gets it under `proxy_id`.
#[derive(Debug, Clone)]
pub struct ToChild {
    pub line: String,
    /// The proxy's progress token and the client's, both raw JSON.
    pub progress: Option<(String, String)>,
}

/// Request `index` of a client body rewritten for the child, exactly as the multiplexer sends
/// it; `None` when the body is invalid or that message is not a request.
pub fn request_to_child(body: &[u8], index: usize, proxy_id: u64) -> Option<ToChild> {
    let message = jsonrpc::client_message(body).ok()?;
    let item = message.items.get(index)?;
    if item.kind != jsonrpc::Kind::Request {
        return None;
    }
    let out = rewrite::request_to_child(&message, item, proxy_id);
    Some(ToChild {
        line: out.line,
        progress: out.progress.map(|(t, o)| (t.into(), o.into())),
    })
}

/// Decodes an `Mcp-Name`-style header value (the `=?base64?…?=` sentinel, or plain).
pub fn decode_header_value(value: &str) -> Option<String> {
    streamable::decode_header_value(value)
}

/// Checks the mirrored headers against the first message of `body`, as a modern-era POST
/// does; `None` when the body is not a valid client message.
pub fn check_mirrored_headers(headers: &HeaderMap, body: &[u8]) -> Option<Result<(), String>> {
    let message = jsonrpc::client_message(body).ok()?;
    let first = message.first()?;
    Some(streamable::check_mirrored_headers(headers, first))
}

/// The bearer token of a request, or the label of why there is none.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    auth::bearer_token(headers).map_err(|e| e.reason())
}

/// What a token's header says, read before any signature check.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: String,
}

/// Reads a token's header and unverified issuer, as validation does before the signature.
pub fn unverified_parts(token: &str) -> Result<Unverified, &'static str> {
    let (header, iss) = auth::jwt::unverified_parts(token).map_err(|e| e.reason())?;
    Ok(Unverified {
        alg: format!("{:?}", header.alg),
        kid: header.kid,
        iss,
    })
}

/// Validates a token completely (no cache); the error is the refusal's label.
pub fn validate(auth: &Authenticator, token: &str) -> Result<Principal, &'static str> {
    futures::executor::block_on(auth.validate(token)).map_err(|e| e.reason())
}

/// The `Last-Event-ID` a GET stream resumes after.
pub fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    streamable::last_event_id(headers)
}

/// The event ids a GET stream connecting with `last_event_id` is handed after `buffered`
/// server messages arrived while no stream was connected.
pub fn replay(buffered: usize, last_event_id: Option<u64>) -> Vec<u64> {
    let standalone = Standalone::new(
        crate::budget::Budget::new(crate::config::DEFAULT_MAX_PENDING_BYTES),
        crate::config::DEFAULT_REPLAY_BUFFER_BYTES,
    );
    for i in 0..buffered {
        standalone.deliver(format!("{{\"n\":{i}}}"), false);
    }
    let mut rx = standalone.connect(last_event_id);
    std::iter::from_fn(|| rx.try_recv().map(|(id, _)| id)).collect()
}

/// Builds what the proxy derives from a validated config without I/O, and uses its rate
/// limiters (two requests per server, per address and per principal, so an empty bucket
/// computes its wait).
pub fn use_config(config: &Config) {
    let limits = Limits::new(config);
    let who = Principal {
        iss: "fuzz".into(),
        sub: "fuzz".into(),
        scopes: Default::default(),
        exp: 0,
        claims: Default::default(),
    };
    let addr = std::net::IpAddr::from([127, 0, 0, 1]);
    for server in config.servers.keys() {
        for _ in 0..2 {
            let _ = limits.check_ip(server, Some(addr));
            let _ = limits.check_principal(server, &who);
        }
    }
}
