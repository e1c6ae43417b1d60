//! The spans of one HTTP request and of each JSON-RPC request it carries, named and
//! attributed by the OpenTelemetry semantic conventions for MCP
//! (https://opentelemetry.io/docs/specs/semconv/gen-ai/mcp/) and for HTTP servers.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{TARGET, context, meta};
use crate::protocol::jsonrpc::{self, Message};

/// Longest tool or prompt name put in a span name (client-chosen text).
const MAX_NAME: usize = 128;

/// The SERVER span of one HTTP request to an MCP endpoint, from the request head to the end of
/// its response body; in the request's extensions for the handlers.
#[derive(Clone)]
pub(crate) struct HttpSpan {
    span: tracing::Span,
    /// Whether its parent came from `traceparent`/`tracestate` headers (else a 2026-07-28
    /// body's `_meta.traceparent` may still give it one).
    from_headers: bool,
}

impl HttpSpan {
    /// The span of a request for `path` (an MCP endpoint), continuing the trace its
    /// `traceparent` header names.
    pub(crate) fn start(method: &str, path: &str, headers: &HeaderMap) -> Self {
        let route = route_of(path);
        let span = tracing::info_span!(
            target: TARGET,
            "http",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method,
            http.route = route,
            url.path = route_path(path, &route),
        );
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let parent = header("traceparent").and_then(|tp| context::parse(tp, header("tracestate")));
        let from_headers = parent.is_some();
        if let Some(parent) = parent {
            let _ = span.set_parent(OtelContext::new().with_remote_span_context(parent));
        }
        Self { span, from_headers }
    }

    /// The response's status (a 5xx is an error of the server, HTTP semantic conventions).
    pub(crate) fn status(&self, status: u16) {
        self.span
            .set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            self.span.set_attribute("error.type", status.to_string());
            self.span.set_status(Status::error(""));
        }
    }
}

/// `/mcp`, `/sse`, `/message`, or `/servers/{name}/…`: the route, not the client's path.
fn route_of(path: &str) -> String {
    match path.strip_prefix("/servers/") {
        Some(rest) => {
            let last = rest.rsplit('/').next().unwrap_or_default();
            format!("/servers/{{name}}/{last}")
        }
        None => path.to_owned(),
    }
}

/// The path itself when it is one of the proxy's routes (bounded, printable), else the route.
fn route_path(path: &str, route: &str) -> String {
    if path.len() <= 256 && path.bytes().all(|b| b.is_ascii_graphic()) {
        path.to_owned()
    } else {
        route.to_owned()
    }
}

/// What the spans of one HTTP request's JSON-RPC requests share.
pub(crate) struct Context {
    pub(crate) parent: HttpSpan,
    pub(crate) server: Arc<str>,
    pub(crate) sub: Arc<str>,
    pub(crate) session: Option<Arc<str>>,
    /// `MCP-Protocol-Version` of the request, when it had one.
    pub(crate) protocol_version: Option<Arc<str>>,
    /// A 2026-07-28 request: its body's `_meta.traceparent` is a trace context too.
    pub(crate) modern: bool,
}

impl Context {
    /// The CLIENT span of one JSON-RPC request on its way to the child (the child is the MCP
    /// server), and `line` — the request as the child gets it — with that span's context in
    /// `params._meta.traceparent` in place of the client's.
    pub(crate) fn request(
        &self,
        item: &Message,
        original_id: &str,
        line: String,
    ) -> (McpSpan, String) {
        if self.modern
            && !self.parent.from_headers
            && let Some((tp, ts)) = meta::incoming(&line)
            && let Some(parent) = context::parse(&tp, ts.as_deref())
        {
            // Refused (harmlessly) once the HTTP span has a child: the first request decides.
            let _ = self
                .parent
                .span
                .set_parent(OtelContext::new().with_remote_span_context(parent));
        }
        let method = item.method.as_deref().unwrap_or_default();
        let target = match method {
            "tools/call" | "prompts/get" => item.name.as_deref(),
            _ => None,
        };
        let name = match target {
            Some(t) => format!("{method} {}", bounded(t)),
            None => method.to_owned(),
        };
        let (tool, prompt) = match (method, target) {
            ("tools/call", Some(tool)) => (Some(bounded(tool)), None),
            ("prompts/get", Some(prompt)) => (None, Some(bounded(prompt))),
            _ => (None, None),
        };
        let version = item
            .protocol_version
            .as_deref()
            .or(self.protocol_version.as_deref());
        // Every attribute at creation: each later `set_attribute` is a look-up of its own.
        let span = tracing::info_span!(
            target: TARGET,
            parent: &self.parent.span,
            "mcp",
            otel.name = name,
            otel.kind = "client",
            mcp.method.name = method,
            gen_ai.tool.name = tool,
            gen_ai.operation.name = tool.map(|_| "execute_tool"),
            gen_ai.prompt.name = prompt,
            mcp.resource.uri = item.uri.as_deref().map(bounded),
            mcp.session.id = self.session.as_deref(),
            mcp.protocol.version = version.map(bounded),
            mcp.server.name = &*self.server,
            enduser.id = &*self.sub,
            network.transport = "pipe",
            jsonrpc.request.id = &*request_id(original_id),
        );
        let cx = span.context();
        let own = cx.span().span_context().clone();
        let line = match own.is_valid() {
            true => meta::inject(
                &line,
                &context::traceparent(&own),
                &own.trace_state().header(),
            )
            .unwrap_or(line),
            false => line,
        };
        let mcp = McpSpan {
            span,
            started: Instant::now(),
            tool: method == "tools/call",
            done: false,
        };
        (mcp, line)
    }
}

impl Context {
    /// A request the proxy answered itself (a tool rule's refusal, the era bridge's answer):
    /// its span ends at once with `answer`.
    /// `text` is the request as the client sent it (its `_meta` may hold the trace context).
    pub(crate) fn answered_by_proxy(
        &self,
        item: &Message,
        original_id: &str,
        text: &str,
        answer: &str,
    ) {
        let (span, _) = self.request(item, original_id, text.to_owned());
        span.answered(answer, false);
    }
}

/// `jsonrpc.request.id`: a string id unquoted, a number as written.
fn request_id(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).map_or(raw.into(), Into::into)
    } else {
        raw.into()
    }
}

fn bounded(s: &str) -> &str {
    match s.char_indices().nth(MAX_NAME) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// The span of one JSON-RPC request in flight; it ends when dropped, after
/// [`McpSpan::answered`] or (the client went away) unanswered.
pub(crate) struct McpSpan {
    span: tracing::Span,
    started: Instant,
    tool: bool,
    done: bool,
}

impl McpSpan {
    /// The answer `line` came: from the child (`from_child`), or from the proxy for it (a
    /// timeout, a child that exited). An error answer sets `rpc.jsonrpc.error_code`,
    /// `error.type` and status ERROR; a tool result with `isError` is a `tool_error`.
    pub(crate) fn answered(mut self, line: &str, from_child: bool) {
        self.done = true;
        if from_child {
            let ms = self.started.elapsed().as_secs_f64() * 1000.0;
            self.span.add_event(
                "mcp.child.answer",
                vec![KeyValue::new("mcp.child.answer_ms", ms)],
            );
        }
        if let Some(code) = jsonrpc::error_code(line) {
            self.span.set_attribute("rpc.jsonrpc.error_code", code);
            // The newer RPC conventions' name for the same code, as a string.
            self.span
                .set_attribute("rpc.response.status_code", code.to_string());
            self.span.set_attribute("error.type", code.to_string());
            self.span
                .set_status(Status::error(format!("JSON-RPC error {code}")));
        } else if self.tool && is_tool_error(line) {
            self.span.set_attribute("error.type", "tool_error");
            self.span.set_status(Status::error("tool_error"));
        }
    }
}

impl Drop for McpSpan {
    fn drop(&mut self) {
        if !self.done {
            self.span.add_event("mcp.request.cancelled", Vec::new());
        }
    }
}

/// A `tools/call` result with `"isError": true`.
fn is_tool_error(line: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Option<ToolResult>,
    }
    #[derive(serde::Deserialize)]
    struct ToolResult {
        #[serde(default, rename = "isError")]
        is_error: bool,
    }
    line.contains("\"isError\"")
        && serde_json::from_str::<Answer>(line)
            .ok()
            .and_then(|a| a.result)
            .is_some_and(|r| r.is_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_bounded() {
        assert_eq!(route_of("/mcp"), "/mcp");
        assert_eq!(route_of("/servers/weather/mcp"), "/servers/{name}/mcp");
        assert_eq!(request_id(r#""a\"b""#), "a\"b");
        assert_eq!(request_id("42"), "42");
        assert_eq!(bounded(&"é".repeat(300)).chars().count(), MAX_NAME);
        assert!(is_tool_error(
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#
        ));
        assert!(!is_tool_error(
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#
        ));
    }
}
