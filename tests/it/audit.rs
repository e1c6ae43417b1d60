//! The audit log (issue 14, `[audit]`): one JSON line per MCP request and per refused request,
//! over each transport, with who, what and what came of it — never a token, and arguments only
//! when asked; `X-Request-Id` ties a line to the response; under load no line is lost without
//! being counted; SIGHUP reopens the file (logrotate).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::mcp::{self, Session};
use crate::common::process::ProxyProcess;
use crate::common::sse::SseClient;
use crate::common::wait::eventually;
use crate::common::{base_config, claims, example_server, hs_token, metric};

const WAIT: Duration = Duration::from_secs(20);
const SECRET_ARGUMENT: &str = "classified-argument-value";

fn config(audit: &Path, extra_audit: &str, extra: &str) -> String {
    base_config(&format!(
        r#"
[audit]
path = "{}"
{extra_audit}

{extra}

[servers.default]
command = "{server}"
[[servers.default.tool_rules]]
tools = ["secret_*"]
require_scopes = ["mcp:admin"]

[servers.capped]
command = "{server}"
[servers.capped.limits]
principal_rate_per_sec = 0.001
principal_burst = 1
"#,
        audit.display(),
        server = example_server()
    ))
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The first line matching every `(key, value)` of `want`.
fn find<'a>(lines: &'a [Value], want: &[(&str, Value)]) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| want.iter().all(|(k, v)| l.get(*k) == Some(v)))
}

async fn line_like(path: &Path, want: &[(&str, Value)]) -> Value {
    let mut found = None;
    eventually(WAIT, &format!("an audit line with {want:?}"), async || {
        found = find(&lines(path), want).cloned();
        found.is_some()
    })
    .await;
    found.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_and_refusal_gets_one_line_with_who_what_and_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let proxy = ProxyProcess::with_config(&config(&path, "", ""), &[]).await;
    let token = hs_token(&claims(&proxy.url, "alice", json!({})));
    let mcp = format!("{}/mcp", proxy.url);

    // Legacy SSE.
    let mut sse = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    sse.initialize().await;
    sse.call(
        json!(2),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": SECRET_ARGUMENT}}),
    )
    .await;
    let legacy = line_like(
        &path,
        &[("era", json!("legacy")), ("method", json!("tools/call"))],
    )
    .await;
    assert_eq!(legacy["transport"], "sse");
    assert_eq!(legacy["target"], "echo");
    assert_eq!(legacy["outcome"], "ok");
    assert_eq!(legacy["iss"], crate::common::HS_ISSUER);
    assert_eq!(legacy["sub"], "alice");
    assert_eq!(legacy["server"], "default");
    assert_eq!(legacy["client"], "127.0.0.1");
    assert_eq!(legacy["session"], sse.session_id.as_str());
    assert!(legacy["request_bytes"].as_u64().is_some_and(|n| n > 0));
    assert!(legacy["response_bytes"].as_u64().is_some_and(|n| n > 0));
    assert!(legacy["duration_ms"].as_f64().is_some());
    assert!(
        legacy["time"]
            .as_str()
            .is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
        "RFC 3339 with ms: {legacy}"
    );
    assert!(!legacy["request_id"].as_str().unwrap_or_default().is_empty());

    // Session-era Streamable HTTP.
    let session = Session::open(&mcp, &token, "2025-11-25").await;
    session
        .call_tool(json!(3), "echo", json!({"message": SECRET_ARGUMENT}))
        .await;
    let era = line_like(
        &path,
        &[("era", json!("session")), ("method", json!("tools/call"))],
    )
    .await;
    assert_eq!(era["transport"], "streamable");
    assert_eq!(era["session"], session.id.as_str());
    assert!(
        find(
            &lines(&path),
            &[("era", json!("session")), ("method", json!("initialize"))]
        )
        .is_some()
    );

    // 2026-07-28: ok, a child's JSON-RPC error, a tool denied by a rule.
    let ok = reqwest_modern(&mcp, &token, "echo").await;
    let modern = line_like(&path, &[("request_id", json!(ok))]).await;
    assert_eq!(modern["era"], "modern");
    assert_eq!(modern["outcome"], "ok");
    assert!(modern["session"].is_null());
    reqwest_modern(&mcp, &token, "no_such_tool").await;
    let error = line_like(&path, &[("target", json!("no_such_tool"))]).await;
    assert_eq!(error["outcome"], "error");
    assert_eq!(error["error_code"], -32602);
    reqwest_modern(&mcp, &token, "secret_delete").await;
    let denied = line_like(&path, &[("target", json!("secret_delete"))]).await;
    assert_eq!(denied["outcome"], "denied");

    // Refusals: a bad token (the reason, never the token) and a rate limit.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(&proxy.url, "mallory", json!({})),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-0123456789abcdef-xyz"),
    )
    .expect("sign");
    let a = mcp::modern_tool(&mcp, &forged, json!(9), "echo", json!({"message": "x"})).await;
    assert_eq!(a.status, 401);
    let refused = line_like(&path, &[("reason", json!("signature"))]).await;
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["status"], 401);
    assert!(refused["sub"].is_null(), "an unverified token names nobody");
    let capped = format!("{}/servers/capped/mcp", proxy.url);
    for i in 0..2 {
        mcp::modern_tool(&capped, &token, json!(i), "echo", json!({"message": "x"})).await;
    }
    let limited = line_like(&path, &[("reason", json!("rate_limited"))]).await;
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["server"], "capped");

    let text = std::fs::read_to_string(&path).expect("audit file");
    assert!(
        !text.contains(SECRET_ARGUMENT),
        "no argument without include_arguments"
    );
    assert!(
        !text.contains(&token) && !text.contains(&forged),
        "no token"
    );
    assert!(!text.contains(crate::common::SECRET), "no secret");
    assert!(!text.contains("\"arguments\""));
}

/// A modern `tools/call` of `tool` by reqwest; the response's `X-Request-Id`.
async fn reqwest_modern(url: &str, token: &str, tool: &str) -> String {
    let (headers, body) = mcp::modern_request(
        json!(1),
        "tools/call",
        json!({"name": tool, "arguments": {"message": SECRET_ARGUMENT}}),
    );
    let mut req = crate::common::http()
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in &headers {
        req = req.header(*k, v.as_str());
    }
    let r = req.send().await.expect("POST");
    r.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Request-Id on every response")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_only_when_asked_and_a_trusted_request_id_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let proxy = ProxyProcess::with_config(
        &config(
            &path,
            "include_arguments = true",
            "[http]\ntrust_forwarded_headers = true",
        ),
        &[],
    )
    .await;
    let token = hs_token(&claims(&proxy.url, "bob", json!({})));
    let (headers, body) = mcp::modern_request(
        json!(1),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": SECRET_ARGUMENT}}),
    );
    let mut req = crate::common::http()
        .post(format!("{}/mcp", proxy.url))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("x-request-id", "lb-request-42")
        .header("x-forwarded-for", "203.0.113.7")
        .body(body.to_string());
    for (k, v) in &headers {
        req = req.header(*k, v.as_str());
    }
    let r = req.send().await.expect("POST");
    assert_eq!(r.headers()["x-request-id"], "lb-request-42");
    let line = line_like(&path, &[("request_id", json!("lb-request-42"))]).await;
    assert_eq!(line["arguments"], json!({"message": SECRET_ARGUMENT}));
    assert_eq!(line["client"], "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_lose_no_line_and_sighup_reopens_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let proxy = ProxyProcess::with_config(&config(&path, "", ""), &[]).await;
    let token = hs_token(&claims(&proxy.url, "carol", json!({})));
    let url = format!("{}/mcp", proxy.url);
    let client = crate::common::http();
    let workers = (0..16).map(|w| {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tokio::spawn(async move {
            for i in (w..10_000).step_by(16) {
                let (headers, body) = mcp::modern_request(
                    json!(i),
                    "tools/call",
                    json!({"name": "echo", "arguments": {"message": "m"}}),
                );
                let mut req = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("accept", "application/json, text/event-stream")
                    .header("content-type", "application/json")
                    .body(body.to_string());
                for (k, v) in &headers {
                    req = req.header(*k, v.as_str());
                }
                let r = req.send().await.expect("POST");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        w.expect("worker");
    }
    let metrics = async || {
        crate::common::http()
            .get(format!("{}/metrics", proxy.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default()
    };
    let text = metrics().await;
    let dropped = metric(&text, "mcp_proxy_audit_dropped_total").unwrap_or(0.0) as usize;
    eventually(
        WAIT,
        "every call is in the file or counted as dropped",
        async || {
            let calls = lines(&path)
                .iter()
                .filter(|l| l["method"] == "tools/call")
                .count();
            calls + dropped == 10_000
        },
    )
    .await;
    eprintln!("audit under load: 10,000 calls, {dropped} lines dropped");

    // logrotate: move the file away, SIGHUP, the next line goes to a new file.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    eventually(WAIT, "the audit log reopened", async || {
        !proxy.events("SIGHUP: the audit log reopened").is_empty()
    })
    .await;
    let id = reqwest_modern(&url, &token, "echo").await;
    line_like(&path, &[("request_id", json!(id))]).await;
    assert!(find(&lines(&rotated), &[("request_id", json!(id))]).is_none());
}
