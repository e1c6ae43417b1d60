//! Sessions end, and their whole process group with them: on client disconnect, on child
//! exit (in-flight requests answered with -32603), and when the proxy is SIGKILLed.

use std::time::Duration;

use serde_json::json;

use crate::common::Proxy;
use crate::common::procfs::{group_members, wait_gone, wait_group_empty};
use crate::common::sse::SseClient;
use crate::common::wait::eventually;

async fn session_with_grandchild(proxy: &Proxy) -> (SseClient, u32, u32) {
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let child_pid = proxy
        .state
        .session_pid(&c.session_id)
        .expect("session registered");
    let gc: u32 = c
        .tool_text(json!("gc"), "spawn_grandchild", json!({}))
        .await
        .trim()
        .parse()
        .expect("pid");
    let members = group_members(child_pid);
    assert!(
        members.contains(&child_pid) && members.contains(&gc),
        "{members:?}"
    );
    (c, child_pid, gc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_ends_the_session_and_its_process_group() {
    let proxy = Proxy::start().await;
    let (c, child_pid, gc) = session_with_grandchild(&proxy).await;
    drop(c);
    assert!(
        wait_group_empty(child_pid, Duration::from_secs(10)).await,
        "left behind: {:?}",
        group_members(child_pid)
    );
    assert!(wait_gone(gc, Duration::from_secs(1)).await);
    eventually(Duration::from_secs(5), "session not removed", async || {
        proxy.state.session_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_exit_fails_in_flight_requests_and_closes_the_stream() {
    let proxy = Proxy::start().await;
    let (mut c, child_pid, gc) = session_with_grandchild(&proxy).await;
    // A slow request in flight, then the child crashes.
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"sleep","arguments":{"ms":5000}}}))
            .await,
        202
    );
    assert_eq!(
        c.post(&json!({"jsonrpc":"2.0","id":"boom","method":"tools/call","params":{"name":"crash","arguments":{}}}))
            .await,
        202
    );
    let mut errors = std::collections::HashMap::new();
    while let Some(m) = c.next_message().await {
        if let Some(id) = m["id"].as_str() {
            errors.insert(id.to_owned(), m.clone());
        }
    }
    for id in ["slow", "boom"] {
        let m = errors
            .get(id)
            .unwrap_or_else(|| panic!("no answer for {id}: {errors:?}"));
        assert_eq!(m["error"]["code"], -32603, "{m}");
        assert_eq!(m["error"]["message"], "server process exited");
    }
    assert!(wait_group_empty(child_pid, Duration::from_secs(10)).await);
    assert!(wait_gone(gc, Duration::from_secs(1)).await);
    // The ended session is gone: its POST URL now answers 404.
    let status = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_sigterm_is_killed() {
    let proxy = Proxy::start().await;
    let mut c = SseClient::connect(&format!("{}/sse", proxy.url), &proxy.token("alice")).await;
    c.initialize().await;
    let pid = proxy.state.session_pids()[0];
    assert_eq!(
        c.tool_text(json!(1), "ignore_sigterm", json!({})).await,
        "ok"
    );
    assert_eq!(c.tool_text(json!(2), "stop_reading", json!({})).await, "ok");
    drop(c);
    assert!(
        wait_group_empty(pid, Duration::from_secs(10)).await,
        "SIGKILL after the grace did not happen"
    );
}
