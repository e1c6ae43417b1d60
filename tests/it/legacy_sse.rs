//! The legacy HTTP+SSE transport end to end with the bundled example server.

use std::time::Duration;

use serde_json::json;

use crate::common::sse::SseClient;
use crate::common::{Proxy, base_config, example_server, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_endpoint_event_and_headers() {
    let proxy = Proxy::start().await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    assert_eq!(
        c.session_id.len(),
        32,
        "Mcp-Session-Id header carries the session id"
    );
    assert_eq!(
        c.endpoint,
        format!("{}/message?sessionId={}", proxy.url, c.session_id)
    );
    assert_eq!(c.headers["x-accel-buffering"], "no");
    assert_eq!(c.headers["content-type"], "text/event-stream");
    assert_eq!(c.headers["cache-control"], "no-cache");
    let init = c.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-example-server");
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    let tools = c.call(json!(1), "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"echo") && names.contains(&"add"),
        "{names:?}"
    );
    assert_eq!(
        c.tool_text(json!("two"), "add", json!({"a": 2, "b": 3}))
            .await,
        "5"
    );
    assert_eq!(
        c.tool_text(json!(3), "echo", json!({"message": "héllo\nworld"}))
            .await,
        "héllo\nworld"
    );
    assert_eq!(proxy.spawned(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_echoed_exactly_string_and_number_distinct() {
    let proxy = Proxy::start().await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let a = c.call(json!("1"), "ping", json!({})).await;
    let b = c.call(json!(1), "ping", json!({})).await;
    assert_eq!(a["id"], json!("1"));
    assert_eq!(b["id"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_alias_and_multiline_body_become_one_line() {
    let proxy = Proxy::start().await;
    let token = proxy.token("alice");
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    c.initialize().await;
    // The Python SDK posts to ?session_id=…; a pretty-printed body must reach the child as one line.
    let url = c.endpoint.replace("sessionId=", "session_id=");
    let body = "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 9,\n  \"method\": \"tools/call\",\n  \"params\": {\"name\": \"echo\", \"arguments\": {\"message\": \"pretty\"}}\n}";
    let status = http()
        .post(&url)
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, 202);
    let r = c.response_to(&json!(9)).await;
    assert_eq!(r["result"]["content"][0]["text"], "pretty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_and_the_session_is_kept() {
    let proxy = Proxy::with_config(
        &base_config(&format!(
            "[http]\nmax_body_bytes = 2048\n{}",
            crate::common::example_server_section()
        )),
        &[],
    )
    .await;
    let token = proxy.token("alice");
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    c.initialize().await;
    let post = |body: Vec<u8>| {
        let url = c.endpoint.clone();
        let token = token.clone();
        async move {
            let r = http()
                .post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .expect("post");
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, text)
        }
    };
    let (s, body) = post(b"{not json".to_vec()).await;
    assert_eq!(s, 400);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON-RPC error body");
    assert_eq!(v["error"]["code"], -32700);
    let (s, body) = post(br#"{"id":1,"method":"ping"}"#.to_vec()).await;
    assert_eq!(s, 400);
    assert!(body.contains("-32600"), "{body}");
    // Just over the limit: 413; the session survives.
    let big = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x".repeat(2100)}}});
    let (s, _) = post(big.to_string().into_bytes()).await;
    assert_eq!(s, 413);
    assert_eq!(
        c.tool_text(json!(6), "echo", json!({"message": "still here"}))
            .await,
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_session_ids() {
    let proxy = Proxy::start().await;
    let token = proxy.token("alice");
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    let r = http()
        .post(format!("{}/message?sessionId=deadbeef", proxy.url))
        .bearer_auth(&token)
        .json(&ping)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
    let r = http()
        .post(format!("{}/message", proxy.url))
        .bearer_auth(&token)
        .json(&ping)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    // Unauthenticated: 401 before the session is even looked up.
    let r = http()
        .post(format!("{}/message?sessionId=deadbeef", proxy.url))
        .json(&ping)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
}

/// B's POST to A's session is answered exactly like an unknown session, and A's child never
/// sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principals_session_is_404_and_untouched() {
    let proxy = Proxy::start().await;
    let mut a = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    let b = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("bob")).await;
    a.initialize().await;
    let intruder = json!({"jsonrpc":"2.0","id":"intruder","method":"tools/call","params":{"name":"echo","arguments":{"message":"from bob"}}});
    let status = a
        .post_raw(intruder.to_string().into_bytes(), &proxy.token("bob"))
        .await;
    assert_eq!(status, 404);
    // Same subject, other issuer-less variations: a token for "alice " is someone else.
    let status = a
        .post_raw(intruder.to_string().into_bytes(), &proxy.token("alice "))
        .await;
    assert_eq!(status, 404);
    // The child answers in order: if the intruder had been delivered, its answer would come
    // before this one.
    let mut seen = Vec::new();
    assert_eq!(
        a.post(&json!({"jsonrpc":"2.0","id":"after","method":"ping"}))
            .await,
        202
    );
    loop {
        let m = a.next_message().await.expect("message");
        seen.push(m.clone());
        if m["id"] == "after" {
            break;
        }
    }
    assert!(
        seen.iter().all(|m| m["id"] != "intruder"),
        "A's child saw B's message: {seen:?}"
    );
    drop(b);
}

/// Many sessions, many concurrent calls: every response arrives on its own session only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_cross_wire() {
    let proxy = Proxy::start().await;
    let mut tasks = Vec::new();
    for s in 0..8 {
        let url = format!("{}/sse", proxy.url);
        let token = proxy.token(&format!("user{}", s % 4));
        tasks.push(tokio::spawn(async move {
            let mut c = SseClient::connect(&url, &token).await;
            c.initialize().await;
            // Fire all requests, then read all answers.
            let n = 40;
            let posts = (0..n).map(|i| {
                let body = json!({"jsonrpc":"2.0","id":i,"method":"tools/call",
                    "params":{"name":"echo","arguments":{"message": format!("s{s}-m{i}")}}});
                let c = &c;
                async move { c.post(&body).await }
            });
            for status in futures::future::join_all(posts).await {
                assert_eq!(status, 202);
            }
            let mut got = std::collections::HashSet::new();
            while got.len() < n as usize {
                let m = c.next_message().await.expect("message");
                let Some(id) = m["id"].as_i64() else { continue };
                let text = m["result"]["content"][0]["text"].as_str().expect("text");
                assert_eq!(text, format!("s{s}-m{id}"), "foreign or mismatched answer");
                assert!(got.insert(id), "duplicate answer {id}");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("in time")
            .expect("task");
    }
    assert_eq!(proxy.spawned(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_servers_are_mounted_under_servers() {
    let cfg = base_config(&format!(
        "[servers.default]\ncommand = \"{0}\"\n[servers.other]\ncommand = \"{0}\"\n",
        example_server()
    ));
    let proxy = Proxy::with_config(&cfg, &[]).await;
    let token = proxy.token("alice");
    let mut c = SseClient::connect(&format!("{}/servers/other/sse", proxy.url), &token).await;
    assert!(
        c.endpoint
            .starts_with(&format!("{}/servers/other/message?sessionId=", proxy.url)),
        "{}",
        c.endpoint
    );
    c.initialize().await;
    // A session of `other` is not reachable through the root server's message endpoint.
    let root_endpoint = c.endpoint.replace("/servers/other", "");
    let r = http()
        .post(root_endpoint)
        .bearer_auth(&token)
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
    assert_eq!(
        c.tool_text(json!(2), "echo", json!({"message": "m"})).await,
        "m"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_claims_reaches_the_child() {
    let cfg = base_config(&format!(
        "[servers.default]\ncommand = \"{}\"\nenv = {{ STATIC = \"s\" }}\nenv_from_claims = {{ MCP_USER = \"sub\" }}\n",
        example_server()
    ));
    let proxy = Proxy::with_config(&cfg, &[]).await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("carol")).await;
    c.initialize().await;
    assert_eq!(c.tool_text(json!(1), "whoami", json!({})).await, "carol");
    assert_eq!(
        c.tool_text(json!(2), "env", json!({"name": "STATIC"}))
            .await,
        "s"
    );
}
