//! Rate limits (`[limits]`): token buckets per principal (after authentication) and per client
//! address (before it); a refused request gets 429 with `Retry-After` and a JSON-RPC error,
//! spawns nothing, and leaves other principals and addresses alone.

use serde_json::{Value, json};

use crate::common::mcp;
use crate::common::{Proxy, base_config, example_server, http};

fn config(limits: &str) -> String {
    base_config(&format!(
        "[limits]\n{limits}\n[servers.default]\ncommand = \"{}\"\n",
        example_server()
    ))
}

/// One modern `tools/call echo` on `client`: its status, `Retry-After` and body.
async fn call(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    id: u64,
    extra: &[(&str, &str)],
) -> (u16, Option<u64>, Value) {
    let (headers, body) = mcp::modern_request(
        json!(id),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "x"}}),
    );
    let mut request = client
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    for (k, v) in headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra.iter().copied())
    {
        request = request.header(k, v);
    }
    let r = request.send().await.expect("POST");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = r.text().await.expect("body");
    let value = mcp::sse_data(&text)
        .last()
        .and_then(|d| serde_json::from_str(d).ok())
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (status, retry, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_gets_429_and_others_are_served() {
    // A burst of 5 (not the default 10): at most 5 + 5/s pass, so 50 quick calls give at least
    // 40 refusals even when the machine takes up to a second for them.
    let limits = "principal_rate_per_sec = 5\nprincipal_burst = 5";
    let proxy = Proxy::with_config(&config(limits), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let client = http();
    let alice = proxy.token("alice");
    let calls = (0..50).map(|i| call(&client, &url, &alice, i, &[]));
    let answers = futures::future::join_all(calls).await;
    let refused: Vec<&(u16, Option<u64>, Value)> = answers
        .iter()
        .filter(|(status, _, _)| *status == 429)
        .collect();
    assert!(refused.len() >= 40, "only {} of 50 refused", refused.len());
    for (_, retry, body) in &refused {
        assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
        assert_eq!(body["error"]["code"], -32029, "{body}");
    }
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| matches!(status, 200 | 429)),
        "{answers:?}"
    );
    // Another principal is unaffected.
    let bob = proxy.token("bob");
    for i in 0..5 {
        let (status, _, body) = call(&client, &url, &bob, i, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    // A refused GET /sse spawns nothing (alice's bucket emptied again first: it refills at
    // 5 a second meanwhile).
    futures::future::join_all((100..120).map(|i| call(&client, &url, &alice, i, &[]))).await;
    let before = proxy.spawned();
    let r = client
        .get(format!("{}/sse", proxy.url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("GET /sse");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        proxy.spawned(),
        before,
        "nothing spawned for a refused request"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcp_proxy_rate_limited_total{scope=\"principal\"}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_rate_is_refused_before_authentication() {
    // One token every 5 s: the third call is refused however slow the machine is.
    let cfg = config("ip_rate_per_sec = 0.2\nip_burst = 2").replace(
        "[limits]",
        "[http]\ntrust_forwarded_headers = true\n[limits]",
    );
    let proxy = Proxy::with_config(&cfg, &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let client = http();
    let token = proxy.token("alice");
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for i in 0..2 {
        assert_eq!(
            call(&client, &url, &token, i, &from("192.0.2.1")).await.0,
            200
        );
    }
    let (status, retry, _) = call(&client, &url, &token, 3, &from("192.0.2.1")).await;
    assert_eq!((status, retry.is_some()), (429, true));
    // Refused before the token is even looked at: a bad token from there gets 429, not 401.
    assert_eq!(
        call(&client, &url, "not-a-token", 4, &from("192.0.2.1"))
            .await
            .0,
        429
    );
    // Another address is unaffected.
    assert_eq!(
        call(&client, &url, &token, 5, &from("192.0.2.2")).await.0,
        200
    );
}
