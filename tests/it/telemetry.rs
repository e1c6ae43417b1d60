//! OpenTelemetry traces (issue 14, `[telemetry]`), against a real OTLP/HTTP receiver started by
//! the test: a SERVER span per HTTP request and a CLIENT span per JSON-RPC request, named and
//! attributed by the semantic conventions for MCP; an incoming `traceparent` (header, or
//! `_meta` of a 2026-07-28 body) is continued; the child gets the proxy's span in
//! `params._meta.traceparent`; sampling is parent-based; the last spans are exported on
//! SIGTERM. Off, the child's request is the client's, byte for byte.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::mcp::{self, MODERN, Session};
use crate::common::otlp::{Collector, Received};
use crate::common::process::ProxyProcess;
use crate::common::sse::SseClient;
use crate::common::{base_config, claims, example_server, hs_token};

const EXIT: Duration = Duration::from_secs(30);
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "00f067aa0ba902b7";

fn config(telemetry: &str) -> String {
    base_config(&format!(
        r#"
[http]
shutdown_grace_secs = 1

{telemetry}

[servers.default]
command = "{}"
[[servers.default.tool_rules]]
tools = ["secret_*"]
require_scopes = ["mcp:admin"]
"#,
        example_server()
    ))
}

fn telemetry(collector: &Collector, ratio: f64) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"proxy-under-test\"\nsample_ratio = {ratio}\n",
        collector.url
    )
}

/// A modern `tools/call` with extra headers and `_meta` members.
async fn modern_call(
    url: &str,
    token: &str,
    id: Value,
    tool: &str,
    headers: &[(&str, &str)],
    meta: Value,
) -> mcp::Answer {
    let (mut all, body) = mcp::modern_request(
        id,
        "tools/call",
        json!({"name": tool, "arguments": {"message": "hi"}, "_meta": meta}),
    );
    all.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    mcp::post(&format!("{url}/mcp"), token, &all, &body).await
}

/// The child's `_meta` as the `meta` tool returned it.
fn child_meta(answer: &mcp::Answer) -> Value {
    let text = answer.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a tool result: {answer:?}"));
    serde_json::from_str(text).expect("the tool returns JSON")
}

/// `(trace id, span id)` of a traceparent.
fn ids(traceparent: &Value) -> (String, String) {
    let tp = traceparent
        .as_str()
        .unwrap_or_else(|| panic!("a traceparent: {traceparent}"));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// Stops the proxy with SIGTERM (which must export what is queued) and returns the spans.
async fn stop_and_collect(mut proxy: ProxyProcess, collector: &Collector) -> Vec<Received> {
    proxy.sigterm();
    let status = proxy.wait(EXIT).await;
    assert!(status.success(), "{status:?}\n{}", proxy.log_text());
    collector.spans()
}

fn find<'a>(spans: &'a [Received], what: &str, f: impl Fn(&Received) -> bool) -> &'a Received {
    spans
        .iter()
        .find(|s| f(s))
        .unwrap_or_else(|| panic!("no {what} among {:#?}", names(spans)))
}

fn names(spans: &[Received]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} parent={} span={}",
                s.name(),
                s.trace_id(),
                s.parent_id(),
                s.span_id()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_requests_continue_the_incoming_trace_and_hand_the_child_the_proxys_span() {
    let collector = Collector::start().await;
    let proxy = ProxyProcess::with_config(&config(&telemetry(&collector, 1.0)), &[]).await;
    let token = hs_token(&claims(&proxy.url, "alice", json!({})));

    // 1. The context in the W3C headers; the client's own _meta.traceparent is replaced.
    let header = format!("00-{TRACE}-{PARENT}-01");
    let stale = "00-11111111111111111111111111111111-2222222222222222-01";
    let a = modern_call(
        &proxy.url,
        &token,
        json!(1),
        "meta",
        &[("traceparent", &header), ("tracestate", "vendor=abc")],
        json!({"traceparent": stale}),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = child_meta(&a);
    let (trace, child_parent) = ids(&seen["traceparent"]);
    assert_eq!(
        trace, TRACE,
        "the child continues the client's trace: {seen}"
    );
    assert_ne!(
        child_parent, PARENT,
        "the child's parent is the proxy's span"
    );
    assert_eq!(seen["tracestate"], "vendor=abc", "{seen}");
    assert!(
        seen["traceparent"]
            .as_str()
            .is_some_and(|t| t.ends_with("-01"))
    );

    // 2. No headers: a 2026-07-28 body's _meta.traceparent is the context.
    let body_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body_parent = "a3ce929d0e0e4736";
    let b = modern_call(
        &proxy.url,
        &token,
        json!("b-2"),
        "meta",
        &[],
        json!({"traceparent": format!("00-{body_trace}-{body_parent}-01")}),
    )
    .await;
    let seen_b = child_meta(&b);
    assert_eq!(ids(&seen_b["traceparent"]).0, body_trace, "{seen_b}");

    // 3. An error answer, in a new trace (no context at all).
    let c = modern_call(&proxy.url, &token, json!(3), "no_such_tool", &[], json!({})).await;
    let code = c.last()["error"]["code"].as_i64().expect("an error answer");
    // 4. Refused by a tool rule: the child never sees it, the span records the refusal.
    let d = modern_call(&proxy.url, &token, json!(4), "secret_plans", &[], json!({})).await;
    let denied_code = d.last()["error"]["code"].as_i64().expect("a refusal");

    let spans = stop_and_collect(proxy, &collector).await;
    assert!(spans.iter().all(|s| s.service == "proxy-under-test"));

    // The HTTP span continues the header's context; the MCP span is its child and is the
    // very span the child was handed.
    let http = find(&spans, "HTTP span of request 1", |s| {
        s.trace_id() == TRACE && s.parent_id() == PARENT
    });
    assert_eq!(http.name(), "POST /mcp");
    assert_eq!(http.span.kind, 2, "SERVER");
    assert_eq!(http.attr("http.request.method"), "POST");
    assert_eq!(http.attr("http.response.status_code"), 200);
    let call = find(&spans, "MCP span of request 1", |s| {
        s.parent_id() == http.span_id()
    });
    assert_eq!(
        call.span_id(),
        child_parent,
        "the child saw the MCP span's id"
    );
    assert_eq!(call.trace_id(), TRACE);
    assert_eq!(call.name(), "tools/call meta");
    assert_eq!(call.span.kind, 3, "CLIENT (the child is the MCP server)");
    for (key, want) in [
        ("mcp.method.name", json!("tools/call")),
        ("gen_ai.tool.name", json!("meta")),
        ("gen_ai.operation.name", json!("execute_tool")),
        ("jsonrpc.request.id", json!("1")),
        ("mcp.protocol.version", json!(MODERN)),
        ("mcp.server.name", json!("default")),
        ("enduser.id", json!("alice")),
        ("network.transport", json!("pipe")),
    ] {
        assert_eq!(call.attr(key), want, "{key} of {:?}", call.span.attributes);
    }
    assert_eq!(
        call.attr("mcp.session.id"),
        Value::Null,
        "no session in 2026-07-28"
    );
    assert!(
        call.events().contains(&"mcp.child.answer".to_owned()),
        "{:?}",
        call.events()
    );
    assert_ne!(call.status(), 2);

    // Request 2: both spans in the body's trace, the HTTP span under the body's parent.
    let http_b = find(&spans, "HTTP span of request 2", |s| {
        s.trace_id() == body_trace && s.parent_id() == body_parent
    });
    let call_b = find(&spans, "MCP span of request 2", |s| {
        s.parent_id() == http_b.span_id()
    });
    assert_eq!(call_b.span_id(), ids(&seen_b["traceparent"]).1);
    assert_eq!(call_b.attr("jsonrpc.request.id"), "b-2");

    // Request 3: a root HTTP span, and the error recorded with its JSON-RPC code.
    let failed = find(&spans, "MCP span of request 3", |s| {
        s.name() == "tools/call no_such_tool"
    });
    assert_eq!(failed.attr("rpc.jsonrpc.error_code"), code);
    assert_eq!(failed.attr("error.type"), code.to_string());
    assert_eq!(failed.status(), 2, "status ERROR");
    let root = find(&spans, "HTTP span of request 3", |s| {
        s.span_id() == failed.parent_id()
    });
    assert!(
        root.span.parent_span_id.is_empty(),
        "a new trace starts at the proxy"
    );
    assert!(failed.events().contains(&"mcp.child.answer".to_owned()));

    // Request 4: answered by the proxy, so no child answer.
    let denied = find(&spans, "MCP span of request 4", |s| {
        s.name() == "tools/call secret_plans"
    });
    assert_eq!(denied.attr("rpc.jsonrpc.error_code"), denied_code);
    assert_eq!(denied.status(), 2);
    assert!(denied.events().is_empty(), "{:?}", denied.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_requests_carry_their_session_and_sampling_follows_the_parent() {
    let collector = Collector::start().await;
    // Ratio 0: no new trace is recorded, but an incoming sampled one always is.
    let proxy = ProxyProcess::with_config(&config(&telemetry(&collector, 0.0)), &[]).await;
    let token = hs_token(&claims(&proxy.url, "bob", json!({})));
    let session = Session::open(&format!("{}/mcp", proxy.url), &token, "2025-11-25").await;
    let unsampled = session.call_tool(json!(7), "meta", json!({})).await;
    let seen = child_meta(&unsampled);
    assert!(
        seen["traceparent"]
            .as_str()
            .is_some_and(|t| t.ends_with("-00")),
        "an unsampled context is still propagated, marked not sampled: {seen}"
    );
    let header = format!("00-{TRACE}-{PARENT}-01");
    let sampled = mcp::post(
        &session.url,
        &token,
        &[
            ("mcp-session-id", &session.id),
            ("mcp-protocol-version", "2025-11-25"),
            ("traceparent", &header),
        ],
        &json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}),
    )
    .await;
    assert_eq!(sampled.status, 200, "{sampled:?}");

    let spans = stop_and_collect(proxy, &collector).await;
    assert!(
        spans.iter().all(|s| s.trace_id() == TRACE),
        "only the sampled trace is exported: {:#?}",
        names(&spans)
    );
    let call = find(&spans, "the echo span", |s| s.name() == "tools/call echo");
    assert_eq!(call.attr("mcp.session.id"), session.id.as_str());
    assert_eq!(call.attr("mcp.protocol.version"), "2025-11-25");
    assert_eq!(call.attr("enduser.id"), "bob");
    assert_eq!(call.attr("jsonrpc.request.id"), "8");
    let http = find(&spans, "its HTTP span", |s| s.span_id() == call.parent_id());
    assert_eq!(http.parent_id(), PARENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_the_child_gets_the_clients_meta_untouched() {
    let proxy = ProxyProcess::with_config(&config(""), &[]).await;
    let token = hs_token(&claims(&proxy.url, "carol", json!({})));
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let a = modern_call(
        &proxy.url,
        &token,
        json!(1),
        "meta",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-a3ce929d0e0e4736-01",
        )],
        json!({"traceparent": tp}),
    )
    .await;
    let seen = child_meta(&a);
    assert_eq!(seen["traceparent"], tp.as_str(), "{seen}");
    assert!(seen.get("tracestate").is_none());
    let b = modern_call(&proxy.url, &token, json!(2), "meta", &[], json!({})).await;
    assert!(child_meta(&b).get("traceparent").is_none());
    proxy.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_posts_are_traced_under_the_post_and_the_stream_has_a_span_of_its_own() {
    let collector = Collector::start().await;
    let proxy = ProxyProcess::with_config(&config(&telemetry(&collector, 1.0)), &[]).await;
    let token = hs_token(&claims(&proxy.url, "dave", json!({})));
    let mut sse = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    sse.initialize().await;
    let header = format!("00-{TRACE}-{PARENT}-01");
    let status = crate::common::http()
        .post(&sse.endpoint)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("traceparent", &header)
        .body(
            json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"meta","arguments":{}}})
                .to_string(),
        )
        .send()
        .await
        .expect("POST /message")
        .status();
    assert_eq!(status, 202);
    let answer = sse.response_to(&json!(5)).await;
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a tool result: {answer}"));
    let seen: Value = serde_json::from_str(text).expect("JSON");
    let (trace, child_parent) = ids(&seen["traceparent"]);
    assert_eq!(trace, TRACE, "{seen}");
    let session = sse.session_id.clone();
    drop(sse);

    let spans = stop_and_collect(proxy, &collector).await;
    let post = find(&spans, "the POST's span", |s| s.parent_id() == PARENT);
    assert_eq!(post.name(), "POST /message");
    assert_eq!(post.attr("http.response.status_code"), 202);
    let call = find(&spans, "the call's span", |s| {
        s.parent_id() == post.span_id()
    });
    assert_eq!(call.span_id(), child_parent);
    assert_eq!(call.name(), "tools/call meta");
    assert_eq!(call.attr("mcp.session.id"), session.as_str());
    assert_eq!(call.attr("enduser.id"), "dave");
    // The stream is a request of its own: a span from GET /sse until it closed.
    find(&spans, "the stream's span", |s| s.name() == "GET /sse");
}

#[test]
fn check_shows_the_exporter_and_refuses_a_bad_ratio_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    let run = |text: &str| {
        std::fs::write(&path, text).expect("write config");
        crate::common::check_config(&path)
    };
    let on = "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.5\n";
    let out = run(&config(on));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("telemetry: OTLP/HTTP traces to http://127.0.0.1:4318/v1/traces"),
        "{stdout}"
    );
    let out = run(&config("[telemetry]\nsample_ratio = 2.0\n"));
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("telemetry.sample_ratio"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The environment override is checked the same way.
    std::fs::write(&path, config("")).expect("write config");
    let out = std::process::Command::new(crate::common::proxy_binary())
        .args(["check", "--config"])
        .arg(&path)
        .env("TEST_SECRET", crate::common::SECRET)
        .env("MCP_PROXY__TELEMETRY__OTLP_ENDPOINT", "not a url")
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("telemetry.otlp_endpoint"));
}
