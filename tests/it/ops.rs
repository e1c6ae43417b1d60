//! Production operations in-process: metrics, several servers in one proxy.

use std::time::Duration;

use serde_json::json;

use crate::common::sse::SseClient;
use crate::common::{Proxy, base_config, example_server, http, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_present_and_move_with_traffic() {
    let proxy = Proxy::start().await;
    let text = proxy.metrics().await;
    for series in [
        "mcp_proxy_sessions_active{server=\"default\"}",
        "mcp_proxy_children_active{server=\"default\"}",
        "mcp_proxy_child_spawns_total{server=\"default\",result=\"ok\"}",
        "mcp_proxy_draining",
    ] {
        assert_eq!(metric(&text, series), Some(0.0), "{series} in\n{text}");
    }
    let r = http()
        .get(format!("{}/metrics", proxy.url))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    // An unauthenticated request and one with a bad token.
    let r = http()
        .get(format!("{}/sse", proxy.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let r = http()
        .get(format!("{}/sse", proxy.url))
        .bearer_auth(proxy.token_with("x", json!({"exp": 1})))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);

    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    assert_eq!(
        c.tool_text(json!(1), "echo", json!({"message": "metered"}))
            .await,
        "metered"
    );
    let text = proxy.metrics().await;
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(value("mcp_proxy_sessions_active{server=\"default\"}"), 1.0);
    assert_eq!(value("mcp_proxy_children_active{server=\"default\"}"), 1.0);
    assert_eq!(
        value("mcp_proxy_child_spawns_total{server=\"default\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value("mcp_proxy_auth_failures_total{reason=\"missing\"}"),
        1.0
    );
    assert_eq!(
        value("mcp_proxy_auth_failures_total{reason=\"expired\"}"),
        1.0
    );
    // initialize, notifications/initialized, tools/call
    assert_eq!(
        value("mcp_proxy_http_requests_total{transport=\"sse\",method=\"POST\",status=\"202\"}"),
        3.0
    );
    assert_eq!(
        value("mcp_proxy_relayed_messages_total{server=\"default\",direction=\"to_child\"}"),
        3.0
    );
    assert!(
        value("mcp_proxy_relayed_bytes_total{server=\"default\",direction=\"to_child\"}") > 100.0
    );
    assert!(
        value("mcp_proxy_relayed_bytes_total{server=\"default\",direction=\"from_child\"}") > 100.0
    );
    assert!(
        value("mcp_proxy_http_request_duration_seconds_count{transport=\"sse\",method=\"POST\"}")
            >= 3.0
    );
    assert!(text.contains("# TYPE mcp_proxy_http_request_duration_seconds histogram"));
    assert!(text.contains(
        "mcp_proxy_http_request_duration_seconds_bucket{le=\"+Inf\",transport=\"sse\",method=\"GET\"}"
    ) || text.contains(
        "mcp_proxy_http_request_duration_seconds_bucket{transport=\"sse\",method=\"GET\",le=\"+Inf\"}"
    ), "{text}");

    // The client goes away: the session and its child end, and the metrics say so.
    let session = proxy.state.sessions.all()[0].clone();
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), session.child.wait())
        .await
        .expect("child stopped");
    let text = proxy.metrics().await;
    assert_eq!(
        metric(&text, "mcp_proxy_sessions_active{server=\"default\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "mcp_proxy_children_active{server=\"default\"}"),
        Some(0.0)
    );
    let exits: f64 = ["stopped", "exited", "consumer_gone"]
        .iter()
        .filter_map(|r| {
            metric(
                &text,
                &format!("mcp_proxy_child_exits_total{{server=\"default\",reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert_eq!(exits, 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers_without_a_default() {
    let cfg = base_config(&format!(
        "[servers.alpha]\ncommand = \"{0}\"\nenv = {{ WHICH = \"alpha\" }}\n[servers.beta]\ncommand = \"{0}\"\nenv = {{ WHICH = \"beta\" }}\n",
        example_server()
    ));
    let proxy = Proxy::with_config(&cfg, &[]).await;
    let token = proxy.token("alice");
    // No server is named default and there are two: nothing at the root.
    let r = http()
        .get(format!("{}/sse", proxy.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let mut a = SseClient::connect(&format!("{}/servers/alpha/sse", proxy.url), &token).await;
    let mut b = SseClient::connect(&format!("{}/servers/beta/sse", proxy.url), &token).await;
    a.initialize().await;
    b.initialize().await;
    assert_eq!(
        a.tool_text(json!(1), "env", json!({"name": "WHICH"})).await,
        "alpha"
    );
    assert_eq!(
        b.tool_text(json!(1), "env", json!({"name": "WHICH"})).await,
        "beta"
    );
    // beta's session is not reachable through alpha's message endpoint.
    let r = http()
        .post(b.endpoint.replace("/servers/beta/", "/servers/alpha/"))
        .bearer_auth(&token)
        .json(&json!({"jsonrpc":"2.0","id":2,"method":"ping"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
    drop(b);
    let text = proxy.metrics().await;
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_child_spawns_total{server=\"alpha\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_child_spawns_total{server=\"beta\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "mcp_proxy_sessions_active{server=\"alpha\"}"),
        Some(1.0)
    );
}
