//! One answer per fault, whatever the transport (DESIGN §6): the same fault driven through
//! legacy SSE, session-era Streamable HTTP and the 2026-07-28 era gets the identical JSON-RPC
//! error object, because the multiplexer — not the transport — gives it.

use serde_json::{Value, json};

use crate::common::mcp::{self, Session};
use crate::common::sse::SseClient;
use crate::common::{Proxy, base_config, example_server};

fn server(extra: &str) -> String {
    base_config(&format!(
        "[servers.default]\ncommand = \"{}\"\n{extra}\n",
        example_server()
    ))
}

/// What one transport got for a request, and a way to ask its child what it saw.
struct Outcome {
    transport: &'static str,
    error: Value,
    id: Value,
    /// The requestIds of the `notifications/cancelled` the child received.
    cancelled: Vec<Value>,
}

fn ids(text: &str) -> Vec<Value> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("cancelled list {text:?}: {e}"))
}

fn text(a: &mcp::Answer) -> String {
    a.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Sends `tools/call {tool, args}` as request id "fault" over each transport (each as its own
/// principal, so each has its own child), then asks the child for the cancellations it saw.
async fn drive(proxy: &Proxy, tool: &str, args: Value, ask: bool) -> Vec<Outcome> {
    let params = json!({"name": tool, "arguments": args});
    let mut out = Vec::new();

    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("legacy")).await;
    c.initialize().await;
    let r = c.call(json!("fault"), "tools/call", params.clone()).await;
    let cancelled = if ask {
        ids(&c.tool_text(json!(2), "cancelled", json!({})).await)
    } else {
        Vec::new()
    };
    out.push(Outcome {
        transport: "legacy SSE",
        error: r["error"].clone(),
        id: r["id"].clone(),
        cancelled,
    });

    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("session"), "2025-11-25").await;
    let a = s.call_tool(json!("fault"), tool, args.clone()).await;
    let cancelled = if ask {
        ids(&text(&s.call_tool(json!(2), "cancelled", json!({})).await))
    } else {
        Vec::new()
    };
    out.push(Outcome {
        transport: "session-era Streamable HTTP",
        error: a.last()["error"].clone(),
        id: a.last()["id"].clone(),
        cancelled,
    });

    let token = proxy.token("modern");
    let a = mcp::modern(&url, &token, json!("fault"), "tools/call", params).await;
    let cancelled = if ask {
        let asked = json!({"name": "cancelled", "arguments": {}});
        ids(&text(
            &mcp::modern(&url, &token, json!(2), "tools/call", asked).await,
        ))
    } else {
        Vec::new()
    };
    out.push(Outcome {
        transport: "2026-07-28",
        error: a.last()["error"].clone(),
        id: a.last()["id"].clone(),
        cancelled,
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_one_error_on_every_transport_and_cancels_at_the_child() {
    let proxy = Proxy::with_config(&server("request_timeout_secs = 1"), &[]).await;
    let outcomes = drive(&proxy, "sleep", json!({"ms": 5000}), true).await;
    for o in &outcomes {
        assert_eq!(
            o.error,
            json!({"code": -32001, "message": "request timed out"}),
            "{}",
            o.transport
        );
        assert_eq!(o.id, json!("fault"), "{}", o.transport);
        // The child saw exactly one cancellation: of the timed-out request (under the proxy's
        // id for it, which the client never sees).
        assert_eq!(o.cancelled.len(), 1, "{}: {:?}", o.transport, o.cancelled);
        assert!(
            o.cancelled[0].is_u64(),
            "{}: {:?}",
            o.transport,
            o.cancelled
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_exit_is_one_error_on_every_transport() {
    let proxy = Proxy::with_config(&server(""), &[]).await;
    let outcomes = drive(&proxy, "crash", json!({}), false).await;
    for o in &outcomes {
        assert_eq!(
            o.error,
            json!({"code": -32603, "message": "server process exited"}),
            "{}",
            o.transport
        );
        assert_eq!(o.id, json!("fault"), "{}", o.transport);
    }
}
