//! One line in the access log and one observation in the request metrics per HTTP request.
//! Only the method, the path (never the query string), the status, the time to the response
//! head and the session id are logged — never a header value, so never a token.

use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;

use super::AppState;
use crate::metrics::{method_label, transport_of};
use crate::protocol::SESSION_HEADER;

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
    let method = method_label(request.method());
    let transport = transport_of(request.uri().path());
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
    let response = inner(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(transport, method, status, elapsed);
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
            "request"
        );
    }
    response
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
