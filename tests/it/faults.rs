//! Fault injection against the proxy binary, with the bundled server's fault tools: each fault
//! gets its DESIGN §6 answer, the other sessions are unaffected, and afterwards the proxy's
//! process tree holds exactly the children it should.

use std::time::Duration;

use serde_json::json;

use crate::common::process::ProxyProcess;
use crate::common::procfs::wait_gone;
use crate::common::sse::SseClient;
use crate::common::wait::wait_for_count;
use crate::common::{base_config, claims, example_server, example_server_section, hs_token};

fn token(url: &str, sub: &str) -> String {
    hs_token(&claims(url, sub, json!({})))
}

/// The binary with the example server, and an initialized legacy SSE session for each of two
/// principals.
async fn proxy_with_two_sessions(a: &str, b: &str) -> (ProxyProcess, SseClient, SseClient) {
    let proxy = ProxyProcess::with_config(&base_config(&example_server_section()), &[]).await;
    let sse = format!("{}/sse", proxy.url);
    let mut first = SseClient::connect(&sse, &token(&proxy.url, a)).await;
    let mut second = SseClient::connect(&sse, &token(&proxy.url, b)).await;
    first.initialize().await;
    second.initialize().await;
    (proxy, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_contained_and_leaves_no_process_behind() {
    let cfg = base_config(&format!(
        "[servers.default]\ncommand = \"{}\"\nmax_line_bytes = 4096\n",
        example_server()
    ));
    let proxy = ProxyProcess::with_config(&cfg, &[]).await;
    let sse = format!("{}/sse", proxy.url);
    let mut a = SseClient::connect(&sse, &token(&proxy.url, "a")).await;
    let mut b = SseClient::connect(&sse, &token(&proxy.url, "b")).await;
    let mut c = SseClient::connect(&sse, &token(&proxy.url, "c")).await;
    for s in [&mut a, &mut b, &mut c] {
        s.initialize().await;
    }
    let tree = || proxy.descendants().len();
    assert_eq!(wait_for_count(tree, 3, Duration::from_secs(5)).await, 3);

    // 1. A's child exits mid-request: the in-flight request gets -32603, A's stream closes.
    assert_eq!(a.post(&json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"sleep","arguments":{"ms":10000}}})).await, 202);
    assert_eq!(a.post(&json!({"jsonrpc":"2.0","id":"boom","method":"tools/call","params":{"name":"crash","arguments":{}}})).await, 202);
    let mut answers = Vec::new();
    while let Some(m) = a.next_message().await {
        answers.push(m);
    }
    assert!(
        answers
            .iter()
            .any(|m| m["id"] == "slow" && m["error"]["code"] == -32603),
        "{answers:?}"
    );
    assert_eq!(wait_for_count(tree, 2, Duration::from_secs(10)).await, 2);
    assert_eq!(
        b.tool_text(json!(1), "echo", json!({"message":"b ok"}))
            .await,
        "b ok"
    );

    // 2. Non-JSON and over-long lines are dropped; the session goes on.
    assert_eq!(b.tool_text(json!(2), "garbage", json!({})).await, "ok");
    assert_eq!(
        b.tool_text(json!(3), "long_line", json!({"bytes": 10000}))
            .await,
        "ok"
    );
    assert_eq!(
        b.tool_text(json!(4), "echo", json!({"message":"after"}))
            .await,
        "after"
    );

    // 3. A grandchild goes with its session's process group.
    b.tool_text(json!(5), "spawn_grandchild", json!({})).await;
    assert_eq!(wait_for_count(tree, 3, Duration::from_secs(5)).await, 3);
    drop(b);
    assert_eq!(wait_for_count(tree, 1, Duration::from_secs(10)).await, 1);

    // 4. A child that ignores SIGTERM and no longer reads stdin is SIGKILLed after the grace.
    assert_eq!(
        c.tool_text(json!(1), "ignore_sigterm", json!({})).await,
        "ok"
    );
    assert_eq!(c.tool_text(json!(2), "stop_reading", json!({})).await, "ok");
    drop(c);
    assert_eq!(wait_for_count(tree, 0, Duration::from_secs(15)).await, 0);
}

/// A child that stops reading stdin: the write queue is bounded; when it stays full the
/// session ends (503), proxy memory stays bounded, other sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_stops_reading_ends_its_session() {
    let (proxy, mut stuck, mut other) = proxy_with_two_sessions("s", "o").await;
    assert_eq!(
        stuck.tool_text(json!(0), "stop_reading", json!({})).await,
        "ok"
    );
    let rss_before = proxy.rss_kib();
    let big = "x".repeat(16 * 1024);
    // One at a time: the pipe and the bounded queue fill, then a write waits and fails.
    let mut statuses = Vec::new();
    for i in 0..600 {
        let body =
            json!({"jsonrpc":"2.0","method":"notifications/message","params":{"n":i,"data":big}});
        let status = stuck.post(&body).await;
        statuses.push(status);
        if status != 202 {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "the stalled session was never ended: {} posts",
        statuses.len()
    );
    assert!(
        stuck.next_event().await.is_none(),
        "the stalled session's stream closed"
    );
    assert!(
        proxy.rss_kib() < rss_before + 64 * 1024,
        "proxy memory grew with the stalled queue"
    );
    assert_eq!(
        other
            .tool_text(json!(1), "echo", json!({"message":"fine"}))
            .await,
        "fine"
    );
    assert_eq!(
        wait_for_count(|| proxy.descendants().len(), 1, Duration::from_secs(10)).await,
        1
    );
}

/// SIGKILL the proxy: its children die with it (parent-death signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_proxy_leaves_no_child_running() {
    let (mut proxy, _a, _b) = proxy_with_two_sessions("a", "b").await;
    let children = proxy.descendants();
    assert_eq!(children.len(), 2);
    proxy.child.start_kill().expect("SIGKILL");
    let _ = proxy.child.wait().await;
    for pid in children {
        assert!(
            wait_gone(pid, Duration::from_secs(5)).await,
            "child {pid} outlived the proxy"
        );
    }
}

/// A legacy SSE client that stops reading: once the buffers are full and stay full for the
/// stall timeout, its session (and child) end; another session is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_session_only() {
    let (proxy, slow, mut other) = proxy_with_two_sessions("slow", "other").await;
    assert_eq!(
        wait_for_count(|| proxy.descendants().len(), 2, Duration::from_secs(5)).await,
        2
    );
    // From here on `slow` never reads its stream; its child keeps writing 64 KiB lines.
    let mut refused = false;
    for i in 0..2000 {
        let body = json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"long_line","arguments":{"bytes":65536}}});
        if slow.post(&body).await != 202 {
            refused = true;
            break;
        }
        if proxy.descendants().len() < 2 {
            break;
        }
    }
    assert_eq!(
        wait_for_count(|| proxy.descendants().len(), 1, Duration::from_secs(30)).await,
        1,
        "the unread session's child is still running (refused: {refused})"
    );
    assert_eq!(
        other
            .tool_text(json!(1), "echo", json!({"message":"fine"}))
            .await,
        "fine"
    );
}

/// Memory bounded in bytes (`sessions.max_queued_bytes`, 8 MiB by default): a child that stops
/// reading while a client posts 80 MiB in 512 KiB messages costs the proxy at most a few MiB;
/// the posts beyond the bound get 503 with a JSON-RPC-shaped refusal while the session lives,
/// and the stalled child's session ends once its stdin has taken no write for the stall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_a_child_that_stops_reading_are_bounded_in_bytes() {
    let (proxy, mut stuck, mut other) = proxy_with_two_sessions("s", "o").await;
    assert_eq!(
        stuck.tool_text(json!(0), "stop_reading", json!({})).await,
        "ok"
    );
    let rss_before = proxy.rss_kib();
    let big = "x".repeat(512 * 1024);
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for i in 0..160 {
        let body =
            json!({"jsonrpc":"2.0","method":"notifications/message","params":{"n":i,"data":big}});
        let status = stuck.post(&body).await;
        statuses.push(status);
        if status == 404 {
            // The stall time passed while posting (a slow machine): the session has ended.
            break;
        }
    }
    let accepted = statuses.iter().take_while(|s| **s == 202).count();
    assert!(
        (1..=20).contains(&accepted),
        "{accepted} posts of 512 KiB queued for a child that reads nothing: {statuses:?}"
    );
    let rest = &statuses[accepted..];
    assert_eq!(
        rest.first(),
        Some(&503),
        "the first post beyond the bound is refused: {statuses:?}"
    );
    assert!(
        rest.iter().all(|s| matches!(s, 503 | 404)),
        "beyond the bound: refused (503), or gone once the session ended (404): {statuses:?}"
    );
    let grown_kib = proxy.rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib <= 16 * 1024,
        "proxy RSS grew by {grown_kib} KiB with 80 MiB posted to a stalled child"
    );
    // The session ends once the child has taken no write for the stall time (10 s).
    assert!(
        stuck.next_event().await.is_none(),
        "the stalled session's stream closed"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        other
            .tool_text(json!(1), "echo", json!({"message":"fine"}))
            .await,
        "fine"
    );
}
