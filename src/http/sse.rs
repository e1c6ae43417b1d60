//! One way to answer with an event stream: every SSE response of the proxy (legacy sessions,
//! request streams, GET streams, listen streams) gets the same keep-alive and headers.

use std::convert::Infallible;

use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

/// An SSE response: comment keep-alives every `keepalive_secs`, and the headers that stop
/// proxies in between from buffering it (nginx and others buffer responses unless told not
/// to; DEPENDENCIES.md: axum's `Sse` sets `no-cache` but not `X-Accel-Buffering`).
pub(crate) fn sse_response<S>(stream: S, keepalive_secs: u64) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let keepalive = KeepAlive::new()
        .interval(std::time::Duration::from_secs(keepalive_secs))
        .text("");
    let mut response = Sse::new(stream).keep_alive(keepalive).into_response();
    let h = response.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// One JSON-RPC message as an SSE event.
pub(crate) fn message(line: impl AsRef<str>) -> Event {
    Event::default().data(line.as_ref())
}
