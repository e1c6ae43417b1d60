//! Graceful drain (DESIGN §5): on the shutdown signal `/readyz` turns 503 and new sessions get
//! 503 at once; existing sessions keep working until they end or `shutdown_grace_secs` passes;
//! then in-flight requests are answered with an error, every child is stopped, and `serve`
//! returns.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::mcp;
use crate::common::procfs::wait_group_empty;
use crate::common::sse::SseClient;
use crate::common::wait::eventually;
use crate::common::{Proxy, base_config, example_server_section, http, metric};

fn config(grace_secs: u64) -> String {
    base_config(&format!(
        "[http]\nshutdown_grace_secs = {grace_secs}\n{}",
        example_server_section()
    ))
}

/// A sessionless (2026-07-28) `sleep` call of `ms` sent in the background; returns once the
/// proxy has it in flight on a pooled child.
async fn sleep_in_flight(
    proxy: &Proxy,
    token: &str,
    id: &str,
    ms: u64,
) -> tokio::task::JoinHandle<mcp::Answer> {
    let call = tokio::spawn({
        let (url, token, id) = (format!("{}/mcp", proxy.url), token.to_owned(), json!(id));
        async move { mcp::modern_tool(&url, &token, id, "sleep", json!({"ms": ms})).await }
    });
    eventually(
        Duration::from_secs(10),
        "the modern request never started",
        async || proxy.state.pool_in_flight() > 0,
    )
    .await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_sessions_and_ends_when_the_last_session_does() {
    let mut proxy = Proxy::with_config(&config(60), &[]).await;
    let token = proxy.token("alice");
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    c.initialize().await;
    let pid = proxy.state.session_pids()[0];

    proxy.begin_shutdown().await;
    let get = |path: &str| {
        let r = http()
            .get(format!("{}{path}", proxy.url))
            .bearer_auth(&token);
        async move { r.send().await.expect("get") }
    };
    assert_eq!(get("/readyz").await.status(), 503);
    assert_eq!(get("/healthz").await.status(), 200);
    let refused = get("/sse").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(proxy.spawned(), 1, "nothing spawned while draining");

    // The existing session keeps working, on new connections too (each POST is one).
    for i in 0..3 {
        assert_eq!(
            c.tool_text(json!(i), "echo", json!({"message": format!("still {i}")}))
                .await,
            format!("still {i}")
        );
    }
    let text = proxy.metrics().await;
    assert_eq!(metric(&text, "mcp_proxy_draining"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_sessions_refused_total{reason=\"draining\"}"
        ),
        Some(1.0)
    );

    // The last session ends: the proxy stops long before the 60 s grace.
    let started = Instant::now();
    drop(c);
    assert!(
        proxy.wait_stopped(Duration::from_secs(15)).await,
        "serve did not return after the last session ended"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(wait_group_empty(pid, Duration::from_secs(5)).await);
    assert!(
        http()
            .get(format!("{}/healthz", proxy.url))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_in_flight_requests_are_answered_and_streams_close() {
    let mut proxy = Proxy::with_config(&config(1), &[]).await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let pid = proxy.state.session_pids()[0];
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","id":"long","method":"tools/call",
            "params":{"name":"sleep","arguments":{"ms":60000}}}))
            .await,
        202
    );
    let started = Instant::now();
    proxy.begin_shutdown().await;
    // The in-flight call is told, then the stream ends.
    let mut answer = None;
    while let Some(m) = c.next_message().await {
        if m["id"] == "long" {
            answer = Some(m);
        }
    }
    let answer = answer.expect("the in-flight request was answered");
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "stream closed after {waited:?}, grace is 1 s"
    );
    assert!(proxy.wait_stopped(Duration::from_secs(15)).await);
    assert!(wait_group_empty(pid, Duration::from_secs(5)).await);
}

/// Streamable HTTP: while draining, `initialize` and new sessionless (2026-07-28) requests get
/// 503; an open session keeps working until its DELETE; a sessionless request already in
/// flight on a pooled child gets its answer before the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_sessions_and_in_flight_requests_survive_the_drain() {
    let mut proxy = Proxy::with_config(&config(60), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let session = mcp::Session::open(&url, &token, "2025-11-25").await;
    let in_flight = sleep_in_flight(&proxy, &token, "slow", 1500).await;

    proxy.begin_shutdown().await;
    let refused = mcp::post(
        &url,
        &token,
        &[("mcp-protocol-version", "2025-11-25")],
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "it", "version": "0"}}}),
    )
    .await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let refused = mcp::modern(&url, &token, json!(2), "tools/list", json!({})).await;
    assert_eq!(refused.status, 503, "{refused:?}");

    let a = session
        .call_tool(json!(1), "echo", json!({"message": "draining"}))
        .await;
    assert_eq!(
        a.last()["result"]["content"][0]["text"],
        "draining",
        "{a:?}"
    );
    let r = http()
        .delete(&url)
        .bearer_auth(&token)
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());

    let answer = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("answered in time")
        .expect("task");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.last()["result"]["content"][0]["text"],
        "slept 1500 ms",
        "{answer:?}"
    );
    assert!(
        proxy.wait_stopped(Duration::from_secs(15)).await,
        "serve did not return once the session and the request were done"
    );
}

/// A sessionless request still running when the grace ends is answered with an error, and
/// the proxy stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessionless_request_past_the_grace_is_told() {
    let mut proxy = Proxy::with_config(&config(1), &[]).await;
    let in_flight = sleep_in_flight(&proxy, &proxy.token("alice"), "long", 60000).await;
    let started = Instant::now();
    proxy.begin_shutdown().await;
    let answer = tokio::time::timeout(Duration::from_secs(15), in_flight)
        .await
        .expect("answered in time")
        .expect("task");
    let told = answer.status >= 500 || answer.last()["error"]["code"].is_i64();
    assert!(told, "{answer:?}");
    assert!(proxy.wait_stopped(Duration::from_secs(15)).await);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stopping took {:?}",
        started.elapsed()
    );
}
