//! Fault injection against the proxy binary, with the bundled server's fault tools: each fault
//! gets its DESIGN §6 answer, the other sessions are unaffected, and afterwards the proxy's
//! process tree holds exactly the children it should.

use std::time::Duration;

use serde_json::json;

use crate::common::mcp;
use crate::common::process::ProxyProcess;
use crate::common::procfs::wait_gone;
use crate::common::sse::SseClient;
use crate::common::wait::wait_for_count;
use crate::common::{base_config, claims, example_server, example_server_section, hs_token, http};

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

/// The proxy's peak RSS (KiB) while `work` runs, sampled every 10 ms.
async fn peak_rss_during<T>(proxy: &ProxyProcess, work: impl Future<Output = T>) -> (T, u64) {
    let mut work = std::pin::pin!(work);
    let mut peak = proxy.rss_kib();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            out = &mut work => return (out, peak.max(proxy.rss_kib())),
            _ = tick.tick() => peak = peak.max(proxy.rss_kib()),
        }
    }
}

/// 64 notifications of 1 MiB: eight times `sessions.max_pending_bytes` (8 MiB by default).
fn flood_args() -> serde_json::Value {
    json!({"count": 64, "bytes": 1 << 20})
}

/// Memory bounded in bytes toward clients (`sessions.max_pending_bytes`, 8 MiB): a legacy SSE
/// client that stops reading while its child writes 64 MiB of notifications (64 lines, as many
/// as the stream's message bound) costs the proxy at most ~16 MiB; the child waits for the
/// client, and once it has waited the stall time (10 s) its session ends; another session is
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_client_that_stops_reading_holds_bounded_bytes() {
    let (proxy, slow, mut other) = proxy_with_two_sessions("slow", "other").await;
    let rss_before = proxy.rss_kib();
    let started = std::time::Instant::now();
    // From here on `slow` never reads its stream.
    let flood = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"flood","arguments":flood_args()}});
    assert_eq!(slow.post(&flood).await, 202);
    let children = || proxy.descendants().len();
    let (left, peak) =
        peak_rss_during(&proxy, wait_for_count(children, 1, Duration::from_secs(40))).await;
    let ended = started.elapsed();
    let grown_kib = peak.saturating_sub(rss_before);
    eprintln!(
        "legacy SSE, 64 MiB for a client that does not read: proxy RSS grew by at most \
         {grown_kib} KiB; the session's child was gone after {ended:.1?}"
    );
    assert_eq!(
        left, 1,
        "the unread session's child still runs after {ended:?}"
    );
    assert!(
        grown_kib <= 16 * 1024,
        "proxy RSS grew by {grown_kib} KiB with 64 MiB waiting for a client that does not read"
    );
    assert!(
        ended < Duration::from_secs(25),
        "ended after {ended:?}: the stall time is 10 s"
    );
    assert_eq!(
        proxy
            .events("the client has not read its stream for 10s; ending the session")
            .len(),
        1
    );
    assert_eq!(
        other
            .tool_text(json!(1), "echo", json!({"message":"fine"}))
            .await,
        "fine"
    );
}

/// A session-era POST whose SSE stream is not read: once its session's bytes are used up it
/// loses its route — what waited for it is dropped, the stream ends without the answer — while
/// the proxy stays small and the session's next request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_post_stream_loses_its_route_without_the_proxy_growing() {
    let proxy = ProxyProcess::with_config(&base_config(&example_server_section()), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let token = token(&proxy.url, "s");
    let session = mcp::Session::open(&url, &token, "2025-11-25").await;
    let rss_before = proxy.rss_kib();
    let flood = json!({"jsonrpc":"2.0","id":"flood","method":"tools/call","params":{
        "name":"flood","arguments":flood_args(),"_meta":{"progressToken":"f"}}});
    let client = http();
    let (unread, peak) = peak_rss_during(&proxy, async {
        let unread = client
            .post(&url)
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &session.id)
            .header("mcp-protocol-version", "2025-11-25")
            .body(flood.to_string())
            .send()
            .await
            .expect("POST flood");
        // The child answers in order: by the time this is answered, the flood has been routed.
        let echo = session
            .call_tool(json!(2), "echo", json!({"message": "after"}))
            .await;
        assert_eq!(
            echo.last()["result"]["content"][0]["text"],
            "after",
            "{echo:?}"
        );
        unread
    })
    .await;
    let grown_kib = peak.saturating_sub(rss_before);
    assert_eq!(unread.status(), 200);
    // Read now: what had left the proxy before it ended the stream, then the end, no answer.
    let body = tokio::time::timeout(Duration::from_secs(20), unread.text())
        .await
        .expect("the ended stream closes")
        .expect("body");
    let events = mcp::sse_data(&body);
    let progress = events
        .iter()
        .filter(|d| d.contains("notifications/progress"))
        .count();
    eprintln!(
        "session-era POST, 64 MiB for a stream that is not read: proxy RSS grew by at most \
         {grown_kib} KiB; {progress} of 64 notifications had left before the route ended"
    );
    assert!(
        grown_kib <= 16 * 1024,
        "proxy RSS grew by {grown_kib} KiB with 64 MiB for a stream that is not read"
    );
    assert!(progress < 64, "the stream was never ended");
    assert_eq!(
        proxy
            .events("a response stream is not being read; ending it")
            .len(),
        1
    );
    assert!(
        !events.iter().any(|d| d.contains(r#""id":"flood""#)),
        "an ended stream carries no answer"
    );
}

/// The GET stream's replay buffer is bounded in bytes (`sessions.replay_buffer_bytes`, 1 MiB):
/// 64 MiB of notifications for a session with no GET stream open cost the proxy little, and a
/// GET stream opened afterwards gets only the newest (the 256-event bound would keep them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_buffer_keeps_bounded_bytes() {
    let proxy = ProxyProcess::with_config(&base_config(&example_server_section()), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let token = token(&proxy.url, "r");
    let session = mcp::Session::open(&url, &token, "2025-11-25").await;
    let rss_before = proxy.rss_kib();
    let (answer, peak) =
        peak_rss_during(&proxy, session.call_tool(json!(1), "flood", flood_args())).await;
    assert_eq!(
        answer.last()["result"]["content"][0]["text"],
        "sent 64",
        "{:?}",
        answer.status
    );
    let grown_kib = peak.saturating_sub(rss_before);
    let mut get = http()
        .get(&url)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("GET /mcp");
    assert_eq!(get.status(), 200);
    let first_id = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = String::new();
        loop {
            while let Some(pos) = buf.find("\n\n") {
                let block: String = buf.drain(..pos + 2).collect();
                if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id:")) {
                    return id.trim().to_owned();
                }
            }
            let chunk = get.chunk().await.expect("read").expect("an event");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the replay in time");
    eprintln!(
        "replay buffer, 64 MiB for a session without a GET stream: proxy RSS grew by at most \
         {grown_kib} KiB; the replay starts at event {first_id}"
    );
    assert_eq!(first_id, "64", "only the newest 1 MiB event is kept");
    assert!(
        grown_kib <= 16 * 1024,
        "proxy RSS grew by {grown_kib} KiB with 64 MiB for the replay buffer"
    );
}
