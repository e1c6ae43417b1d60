//! Child scopes, the warm pool, caps, idle reaping and timeouts (DESIGN §3, §6).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use crate::common::mcp::{self, Session};
use crate::common::procfs::wait_group_empty;
use crate::common::sse::SseClient;
use crate::common::wait::eventually;
use crate::common::{Proxy, base_config, example_server, http};

fn server(extra: &str) -> String {
    base_config(&format!(
        "[servers.default]\ncommand = \"{}\"\n{extra}\n",
        example_server()
    ))
}

/// The pids of the children serving the proxy's sessions.
fn session_children(proxy: &Proxy) -> HashSet<u32> {
    proxy.state.session_pids().into_iter().collect()
}

fn text(a: &mcp::Answer) -> String {
    a.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `principal` scope: two principals, many sessions each — one child per principal, and no
/// answer crosses sessions or principals even with identical ids everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_scope_one_child_per_principal_across_sessions() {
    let proxy = Proxy::with_config(
        &server("child_scope = \"principal\"\nenv_from_claims = { MCP_USER = \"sub\" }"),
        &[],
    )
    .await;
    let url = format!("{}/mcp", proxy.url);
    let mut sessions = Vec::new();
    for who in ["alice", "bob"] {
        for _ in 0..4 {
            sessions.push((
                who,
                Session::open(&url, &proxy.token(who), "2025-11-25").await,
            ));
        }
    }
    let mut pids: HashMap<&str, HashSet<u32>> = HashMap::new();
    for (sub, pid) in proxy.state.session_children() {
        pids.entry(if sub == "alice" { "alice" } else { "bob" })
            .or_default()
            .insert(pid);
    }
    assert_eq!(pids["alice"].len(), 1, "{pids:?}");
    assert_eq!(pids["bob"].len(), 1, "{pids:?}");
    assert_ne!(pids["alice"], pids["bob"]);
    // Same id 1 on every session at once.
    let calls = sessions.iter().enumerate().map(|(i, (who, s))| async move {
        let a = s
            .call_tool(json!(1), "echo", json!({"message": format!("{who}-{i}")}))
            .await;
        let w = s.call_tool(json!(2), "whoami", json!({})).await;
        (i, *who, a, w)
    });
    for (i, who, a, w) in futures::future::join_all(calls).await {
        assert_eq!(a.last()["id"], 1);
        assert_eq!(text(&a), format!("{who}-{i}"));
        assert_eq!(text(&w), who, "a child of another principal answered");
    }
    // Ending one session leaves the shared child to the others.
    let (_, first) = &sessions[0];
    let r = http()
        .delete(&url)
        .bearer_auth(proxy.token("alice"))
        .header("mcp-session-id", &first.id)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(
        text(
            &sessions[1]
                .1
                .call_tool(json!(3), "echo", json!({"message":"still"}))
                .await
        ),
        "still"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_scope_one_child_for_everyone() {
    let proxy = Proxy::with_config(&server("child_scope = \"shared\""), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let a = Session::open(&url, &proxy.token("alice"), "2025-11-25").await;
    let b = Session::open(&url, &proxy.token("bob"), "2025-11-25").await;
    let pids = session_children(&proxy);
    assert_eq!(pids.len(), 1);
    let (x, y) = tokio::join!(
        a.call_tool(json!(9), "echo", json!({"message": "a"})),
        b.call_tool(json!(9), "echo", json!({"message": "b"}))
    );
    assert_eq!((text(&x), text(&y)), ("a".into(), "b".into()));
    // Bob cannot use Alice's session id even though they share the child.
    let r = mcp::post(
        &url,
        &proxy.token("bob"),
        &[("mcp-session-id", &a.id)],
        &json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_hands_out_prespawned_children_and_refills() {
    let proxy = Proxy::with_config(&server("warm_pool = 2"), &[]).await;
    let warm_pids = || proxy.state.warm_pids("default");
    // One deadline for the fill and, below, the refill.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let filled = async || warm_pids().len() >= 2;
    eventually(Duration::from_secs(10), "warm pool never filled", filled).await;
    let before: HashSet<u32> = warm_pids().into_iter().collect();
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let s = Session::open(
        &format!("{}/mcp", proxy.url),
        &proxy.token("bob"),
        "2025-11-25",
    )
    .await;
    let used = session_children(&proxy);
    assert_eq!(used, before, "sessions got the prespawned children");
    assert_eq!(
        text(
            &s.call_tool(json!(1), "echo", json!({"message":"warm"}))
                .await
        ),
        "warm"
    );
    assert_eq!(
        c.tool_text(json!(1), "echo", json!({"message":"warm"}))
            .await,
        "warm"
    );
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    eventually(left, "warm pool not refilled", filled).await;
    assert!(warm_pids().iter().all(|p| !before.contains(p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_answer_503_with_retry_after_before_spawning() {
    let cfg = base_config(&format!(
        "[sessions]\nmax_sessions = 3\nmax_sessions_per_principal = 2\n[servers.default]\ncommand = \"{}\"\n",
        example_server()
    ));
    let proxy = Proxy::with_config(&cfg, &[]).await;
    let sse = format!("{}/sse", proxy.url);
    let _a1 = SseClient::connect(&sse, &proxy.token("alice")).await;
    let _a2 = SseClient::connect(&sse, &proxy.token("alice")).await;
    let r = http()
        .get(&sse)
        .bearer_auth(proxy.token("alice"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let _b1 = SseClient::connect(&sse, &proxy.token("bob")).await;
    let r = mcp::post(&format!("{}/mcp", proxy.url), &proxy.token("carol"), &[],
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"0"}}})).await;
    assert_eq!(r.status, 503, "global cap");
    // A 2026-07-28 request that would need a new per-principal child meets the same cap.
    let r = mcp::modern_tool(
        &format!("{}/mcp", proxy.url),
        &proxy.token("dave"),
        json!(1),
        "echo",
        json!({"message":"x"}),
    )
    .await;
    assert_eq!(r.status, 503, "global cap, modern era");
    assert_eq!(proxy.spawned(), 3);
    let metrics = proxy.metrics().await;
    let refused = |reason: &str| {
        crate::common::metric(
            &metrics,
            &format!("mcp_proxy_sessions_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        refused("max_sessions_per_principal"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(refused("max_sessions"), Some(2.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_reaped_even_with_an_open_stream() {
    let cfg = base_config(&format!(
        "[sessions]\nidle_timeout_secs = 1\n[servers.default]\ncommand = \"{}\"\n",
        example_server()
    ));
    let proxy = Proxy::with_config(&cfg, &[]).await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let pid = proxy.state.session_pids()[0];
    let s = Session::open(
        &format!("{}/mcp", proxy.url),
        &proxy.token("bob"),
        "2025-11-25",
    )
    .await;
    // The silent SSE stream ends, the children go.
    assert!(
        c.next_message().await.is_none(),
        "stream closed by the reaper"
    );
    assert!(wait_group_empty(pid, Duration::from_secs(10)).await);
    eventually(
        Duration::from_secs(10),
        "the idle Streamable session was not reaped",
        async || proxy.state.session_count() == 0,
    )
    .await;
    assert_eq!(
        s.call_tool(json!(1), "echo", json!({"message":"x"}))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_the_client_on_every_transport() {
    let proxy = Proxy::with_config(&server("request_timeout_secs = 1"), &[]).await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let r = c
        .call(
            json!("slow"),
            "tools/call",
            json!({"name":"sleep","arguments":{"ms":5000}}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    // The session keeps working, and the late answer is not delivered.
    assert_eq!(
        c.tool_text(json!(2), "echo", json!({"message":"next"}))
            .await,
        "next"
    );
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("alice"), "2025-11-25").await;
    let a = s.call_tool(json!(1), "sleep", json!({"ms": 5000})).await;
    assert_eq!(a.last()["error"]["message"], "request timed out", "{a:?}");
    assert_eq!(a.last()["id"], 1);
    let a = mcp::modern_tool(
        &url,
        &proxy.token("alice"),
        json!(1),
        "sleep",
        json!({"ms":5000}),
    )
    .await;
    assert_eq!(a.last()["error"]["message"], "request timed out", "{a:?}");
}

/// A per-principal child that keeps crashing restarts with growing delays, and after
/// `CRASH_LOOP_LIMIT` crashes in a row requests get 503 with a long `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_child_backs_off_then_is_held() {
    let proxy = Proxy::with_config(&server("era = \"legacy\""), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let token = proxy.token("alice");
    let limit = mcp_auth_proxy::CRASH_LOOP_LIMIT as usize;
    // Each crash makes the pool forget the child; the next request starts one, unless the
    // back-off holds it (503).
    let forgotten = async || {
        eventually(
            Duration::from_secs(10),
            "the pool kept a crashed child",
            async || proxy.state.pool_len() == 0,
        )
        .await
    };
    let mut refused = 0;
    let mut crashes = 0;
    eventually(
        Duration::from_secs(60),
        "crash loop not reached in time",
        async || {
            forgotten().await;
            let a = mcp::modern_tool(&url, &token, json!(1), "crash", json!({})).await;
            match a.status {
                503 => {
                    refused += 1;
                    // Asked again soon, but not in a tight loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => crashes += 1,
            }
            crashes > limit
        },
    )
    .await;
    assert!(refused > 0, "restarts were never delayed");
    forgotten().await;
    let held = mcp::modern_tool(&url, &token, json!(2), "echo", json!({"message":"x"})).await;
    assert_eq!(held.status, 503, "{held:?}");
    let other = mcp::modern_tool(
        &url,
        &proxy.token("bob"),
        json!(1),
        "echo",
        json!({"message":"bob"}),
    )
    .await;
    assert_eq!(
        text(&other),
        "bob",
        "another principal's child is unaffected"
    );
}
