//! One line in the access log and one observation in the request metrics per HTTP request.
//! Only the method, the path (never the query string), the status, the time to the response
//! head and the session id are logged — never a header value, so never a token.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use http_body::Body as _;

use super::{AppState, RequestId};
use crate::error::Reason;
use crate::metrics::{method_label, transport_of};
use crate::protocol::{PROTOCOL_HEADER, SESSION_HEADER};
use crate::telemetry::HttpSpan;

/// The headers read for every request with the audit log on, as names: looked up by a
/// `&str`, each lookup would parse the name first.
const SESSION: HeaderName = HeaderName::from_static(SESSION_HEADER);
const PROTOCOL: HeaderName = HeaderName::from_static(PROTOCOL_HEADER);

/// Longest session id echoed into the log (ours are 32 hex digits).
const MAX_LOGGED_SESSION_ID: usize = 64;

/// Runs `inner` (the rest of the stack) on `request`, then measures and logs it.
pub(crate) async fn log_and_measure<F, Fut>(
    state: &AppState,
    request: Request,
    inner: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let mut request = request;
    let method = method_label(request.method());
    let transport = transport_of(request.uri().path());
    let live = state.live.load();
    let trust_forwarded = live.config.http.trust_forwarded_headers;
    let request_id = request_id(&request, trust_forwarded);
    // What a refusal's audit line needs, copied before the request moves on. Copied, not
    // kept as handles: a URI or header value held to the end would share hyper's read buffer
    // and make it allocate a new one for the connection's next request.
    let refusal = state
        .audit
        .as_ref()
        .filter(|_| transport != "other")
        .map(|audit| {
            let session = request
                .headers()
                .get(&SESSION)
                .and_then(|v| v.to_str().ok())
                .or_else(|| legacy_session(request.uri().query()))
                .filter(|s| plausible_session_id(s));
            let context = crate::audit::Context::new(
                audit,
                crate::audit::Who {
                    started,
                    request_id: &request_id,
                    client: super::limits::address_of(
                        request.headers(),
                        request.extensions(),
                        trust_forwarded,
                    ),
                    iss: None,
                    sub: None,
                    server: server_of(&live.config, request.uri().path()),
                    era: era_of(&request, transport),
                    session,
                },
            );
            let request_bytes = request
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            (context, request_bytes)
        });
    drop(live);
    request.extensions_mut().insert(RequestId {
        id: request_id.clone(),
        started,
    });
    // The request's span, only with `[telemetry]` on (off, nothing is built).
    let span = (state.telemetry && transport != "other").then(|| {
        let span = HttpSpan::start(method, request.uri().path(), request.headers());
        request.extensions_mut().insert(span.clone());
        span
    });
    // The log line's strings are only built when the access log is on (benchmarks and
    // RUST_LOG=warn deployments skip the allocations).
    let logging = tracing::enabled!(target: "access", tracing::Level::INFO);
    let logged = logging.then(|| {
        // Bounded and printable only: the path is client-controlled.
        let path: String = request
            .uri()
            .path()
            .chars()
            .take(256)
            .filter(|c| !c.is_control())
            .collect();
        (path, session_from_request(&request))
    });
    let mut response = inner(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(transport, method, status, elapsed);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if let Some((context, request_bytes)) = refusal
        && status >= 400
    {
        let reason = response
            .extensions()
            .get::<Reason>()
            .map_or("http_error", |r| r.0);
        context.refused(
            status,
            reason,
            elapsed,
            request_bytes,
            response.body().size_hint().exact().unwrap_or(0) as usize,
        );
    }
    if let Some((path, request_session)) = logged {
        let session = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| plausible_session_id(s))
            .map(str::to_owned)
            .or(request_session)
            .unwrap_or_default();
        tracing::info!(
            target: "access",
            method,
            path,
            status,
            micros = elapsed.as_micros() as u64,
            transport,
            session,
            request_id = &*request_id,
            "request"
        );
    }
    match span {
        // The span lasts as long as the response body (an SSE stream's as long as the stream).
        Some(span) => {
            span.status(status);
            response.map(|body| axum::body::Body::new(SpannedBody { body, _span: span }))
        }
        None => response,
    }
}

/// A response body that holds its request's span until the body ends.
struct SpannedBody {
    body: axum::body::Body,
    _span: HttpSpan,
}

impl http_body::Body for SpannedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The `sessionId` (or `session_id`) of a legacy POST's query.
fn legacy_session(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| {
        pair.strip_prefix("sessionId=")
            .or_else(|| pair.strip_prefix("session_id="))
    })
}

/// The request's id: a trusted incoming `X-Request-Id` (printable, at most 128 bytes) when
/// forwarded headers are trusted, else a new one — a random per-process prefix and a counter,
/// unique without a random draw per request.
fn request_id(request: &Request, trust_forwarded: bool) -> Arc<str> {
    if trust_forwarded
        && let Some(id) = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
    {
        return id.into();
    }
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_fields().0);
    // 24 hex digits by hand (`format!` cost ~2,000 instructions a request).
    let id = (u128::from(*prefix) << 64) | u128::from(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut hex = [0u8; 24];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((id >> (4 * (23 - i))) & 0xf) as usize];
    }
    std::str::from_utf8(&hex).unwrap_or_default().into()
}

/// The server a path belongs to: `/servers/NAME/…`, else the root server.
fn server_of<'a>(config: &'a crate::config::Config, path: &'a str) -> &'a str {
    match path.strip_prefix("/servers/") {
        Some(rest) => rest.split('/').next().unwrap_or_default(),
        None => config.root_server().unwrap_or_default(),
    }
}

/// The protocol era a request speaks, from its transport and headers.
fn era_of(request: &Request, transport: &str) -> &'static str {
    if transport == "sse" {
        return "legacy";
    }
    let modern = request
        .headers()
        .get(&PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crate::protocol::MODERN_VERSIONS.contains(&v));
    if modern { "modern" } else { "session" }
}

/// The session a request names (header or legacy query parameter), if it looks like one.
fn session_from_request(request: &Request) -> Option<String> {
    if let Some(id) = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return plausible_session_id(id).then(|| id.to_owned());
    }
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (matches!(k, "sessionId" | "session_id") && plausible_session_id(v)).then(|| v.to_owned())
    })
}

fn plausible_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LOGGED_SESSION_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new id is 24 lowercase hex digits: the process prefix, then the counter, which
    /// moves by one per request.
    #[test]
    fn new_request_ids_are_a_prefix_and_a_counter_in_hex() {
        let request = || Request::new(axum::body::Body::empty());
        let (a, b) = (request_id(&request(), false), request_id(&request(), false));
        for id in [&a, &b] {
            assert_eq!(id.len(), 24, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert_eq!(a[..8], b[..8], "one prefix per process");
        let counter = |id: &str| u64::from_str_radix(&id[8..], 16).expect("hex");
        assert!(counter(&b) > counter(&a));
    }

    #[test]
    fn a_legacy_posts_session_is_read_from_either_query_name() {
        assert_eq!(legacy_session(Some("sessionId=ab12")), Some("ab12"));
        assert_eq!(legacy_session(Some("x=1&session_id=cd34&y")), Some("cd34"));
        assert_eq!(legacy_session(Some("sessionIdx=1&y=2")), None);
        assert_eq!(legacy_session(None), None);
    }
}
