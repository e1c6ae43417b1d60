//! Production operations in-process: metrics, Origin/Host checks, CORS, the address the client
//! used behind a path prefix and forwarded headers, several servers in one proxy.

use std::time::Duration;

use serde_json::json;

use crate::common::sse::SseClient;
use crate::common::{
    Proxy, base_config, example_server, example_server_section, http, metric, wait_ready,
};

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
    let child_exit = proxy
        .state
        .session_child_exit(proxy.state.session_pids()[0]);
    drop(c);
    tokio::time::timeout(Duration::from_secs(10), child_exit)
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
async fn a_foreign_origin_gets_403_and_spawns_nothing() {
    let proxy = Proxy::with_config(
        &base_config(&format!(
            "[http]\nallowed_origins = [\"http://app.example\"]\n{}",
            example_server_section()
        )),
        &[],
    )
    .await;
    let token = proxy.token("alice");
    for origin in ["http://evil.example", "null", "http://app.example:8080"] {
        let r = http()
            .get(format!("{}/sse", proxy.url))
            .bearer_auth(&token)
            .header("origin", origin)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403, "{origin}");
        let body: serde_json::Value = r.json().await.expect("JSON-RPC error body");
        assert_eq!(body["error"]["code"], -32600);
        assert!(body.get("id").is_none(), "{body}");
    }
    assert_eq!(proxy.spawned(), 0);
    // The listed origin and the proxy's own origin pass.
    for origin in ["http://app.example", proxy.url.as_str()] {
        let c =
            SseClient::connect_with(&format!("{}/sse", proxy.url), &token, &[("origin", origin)])
                .await;
        assert_eq!(c.headers["access-control-allow-origin"], origin);
    }
    // No Origin (non-browser clients): no check.
    let r = http()
        .get(format!("{}/healthz", proxy.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_without_a_token() {
    let proxy = Proxy::with_config(
        &base_config(&format!(
            "[http]\nallowed_origins = [\"https://app.example\"]\n{}",
            example_server_section()
        )),
        &[],
    )
    .await;
    for path in ["/sse", "/message"] {
        let r = http()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", proxy.url))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-session-id",
            )
            .send()
            .await
            .expect("preflight");
        assert_eq!(r.status(), 204, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        let allowed = h["access-control-allow-headers"].to_str().expect("ascii");
        for name in [
            "authorization",
            "content-type",
            "mcp-session-id",
            "mcp-protocol-version",
        ] {
            assert!(allowed.contains(name), "{allowed}");
        }
        let methods = h["access-control-allow-methods"].to_str().expect("ascii");
        assert!(
            methods.contains("POST") && methods.contains("DELETE"),
            "{methods}"
        );
    }
    // A preflight from elsewhere is refused.
    let r = http()
        .request(reqwest::Method::OPTIONS, format!("{}/sse", proxy.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status(), 403);
    // Actual responses expose what a browser client must read, including on a 401.
    let r = http()
        .get(format!("{}/sse", proxy.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"),
        "{exposed}"
    );
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(proxy.spawned(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_allow_list() {
    let proxy = Proxy::with_config(
        &base_config(&format!(
            "[http]\nallowed_hosts = [\"mcp.example.com\"]\n{}",
            example_server_section()
        )),
        &[],
    )
    .await;
    let get = |path: &str, host: Option<&'static str>| {
        let mut r = http().get(format!("{}{path}", proxy.url));
        if let Some(host) = host {
            r = r.header("host", host);
        }
        async move { r.send().await.expect("get").status().as_u16() }
    };
    // reqwest sends Host: 127.0.0.1:PORT by default.
    assert_eq!(get("/sse", None).await, 403);
    assert_eq!(get("/sse", Some("mcp.example.com")).await, 401);
    assert_eq!(get("/sse", Some("mcp.example.com:443")).await, 401);
    assert_eq!(get("/sse", Some("evil.example")).await, 403);
    // Probes address the instance directly.
    assert_eq!(get("/readyz", None).await, 200);
    assert_eq!(get("/metrics", None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_metadata_urls_behind_a_prefix_with_forwarded_headers() {
    let public = "http://proxy.internal:8080/team";
    let cfg = |trust: bool| {
        base_config(&format!(
            "[http]\npublic_url = \"{public}\"\ntrust_forwarded_headers = {trust}\n{}",
            example_server_section()
        ))
    };
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "mcp.example.com"),
    ];
    let proxy = Proxy::with_config(&cfg(true), &[]).await;
    let token = proxy.token_with("alice", json!({"aud": public}));
    let mut c = SseClient::connect_with(&format!("{}/sse", proxy.url), &token, &forwarded).await;
    assert_eq!(
        c.endpoint,
        format!(
            "https://mcp.example.com/team/message?sessionId={}",
            c.session_id
        )
    );
    // The load balancer strips the prefix; the client's POSTs still reach the session.
    c.endpoint = format!("{}/message?sessionId={}", proxy.url, c.session_id);
    c.initialize().await;
    // Without forwarded headers: public_url as configured.
    let d = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    assert_eq!(
        d.endpoint,
        format!("{public}/message?sessionId={}", d.session_id)
    );
    // The 401 challenge and the metadata document name the same address.
    let mut r = http().get(format!("{}/sse", proxy.url));
    for (k, v) in forwarded {
        r = r.header(k, v);
    }
    let r = r.send().await.expect("get");
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains(
            "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/team/sse\""
        ),
        "{challenge}"
    );
    let mut r = http().get(format!(
        "{}/.well-known/oauth-protected-resource/team/sse",
        proxy.url
    ));
    for (k, v) in forwarded {
        r = r.header(k, v);
    }
    let doc: serde_json::Value = r.send().await.expect("get").json().await.expect("json");
    assert_eq!(doc["resource"], "https://mcp.example.com/team/sse");

    // Not trusted: the headers are ignored.
    let untrusting = Proxy::with_config(&cfg(false), &[]).await;
    let token = untrusting.token_with("alice", json!({"aud": public}));
    let e = SseClient::connect_with(&format!("{}/sse", untrusting.url), &token, &forwarded).await;
    assert_eq!(
        e.endpoint,
        format!("{public}/message?sessionId={}", e.session_id)
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_traffic_is_metered_too() {
    let proxy = Proxy::start().await;
    let url = format!("{}/mcp", proxy.url);
    let s = crate::common::mcp::Session::open(&url, &proxy.token("alice"), "2025-11-25").await;
    let a = s
        .call_tool(json!(1), "echo", json!({"message": "metered"}))
        .await;
    assert_eq!(a.status, 200);
    let text = proxy.metrics().await;
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    // initialize, notifications/initialized, tools/call in; the two answers out.
    assert_eq!(
        value("mcp_proxy_relayed_messages_total{server=\"default\",direction=\"to_child\"}"),
        3.0
    );
    assert!(
        value("mcp_proxy_relayed_messages_total{server=\"default\",direction=\"from_child\"}")
            >= 2.0
    );
    assert_eq!(
        value(
            "mcp_proxy_http_requests_total{transport=\"streamable\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(value("mcp_proxy_sessions_active{server=\"default\"}"), 1.0);
    assert_eq!(value("mcp_proxy_children_active{server=\"default\"}"), 1.0);
}

/// The JWKS caches' counters reach /metrics, per issuer, including an unknown-kid refetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_fetches_are_exported() {
    use crate::common::keys::{JwksServer, TestKey};
    let issuer = "https://idp.test/realms/ops";
    let key = TestKey::rsa("k1");
    let jwks = JwksServer::start(vec![key.jwk.clone()]).await;
    let cfg = format!(
        "[[auth.issuers]]\nissuer = \"{issuer}\"\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\njwks_min_refetch_secs = 0\n{}",
        jwks.url,
        example_server_section()
    );
    let proxy = Proxy::with_config(&cfg, &[]).await;
    wait_ready(&proxy.url).await;
    // A token whose kid is not (yet) published makes the proxy refetch once.
    let stranger = TestKey::rsa("k2");
    let claims = crate::common::claims(&proxy.url, "alice", json!({"iss": issuer}));
    let r = http()
        .get(format!("{}/sse", proxy.url))
        .bearer_auth(stranger.sign(&claims))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let text = proxy.metrics().await;
    let series = |name: &str| format!("{name}{{issuer=\"{issuer}\"}}");
    assert!(
        metric(&text, &series("mcp_proxy_jwks_fetches_total")) >= Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &series("mcp_proxy_jwks_unknown_kid_refetches_total")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, &series("mcp_proxy_jwks_keys")), Some(1.0));
    assert_eq!(
        metric(&text, &series("mcp_proxy_jwks_fetch_failures_total")),
        Some(0.0)
    );
    assert!(text.contains("# TYPE mcp_proxy_jwks_fetches_total counter"));
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_auth_failures_total{reason=\"unknown_kid\"}"
        ),
        Some(1.0)
    );
}
