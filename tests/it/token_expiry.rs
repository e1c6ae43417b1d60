//! Long-lived streams and token lifetimes: with `close_streams_on_expiry` the SSE stream ends
//! when the token that opened it expires; every POST is authenticated on its own, so a
//! refreshed token of the same principal keeps the session working until then.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::sse::SseClient;
use crate::common::wait::{eventually, wait_until};
use crate::common::{Proxy, base_config, example_server_section};

async fn proxy(close_on_expiry: bool) -> Proxy {
    let cfg = base_config(&format!(
        "[auth]\nleeway_secs = 0\nclose_streams_on_expiry = {close_on_expiry}\n{}",
        example_server_section()
    ));
    Proxy::with_config(&cfg, &[]).await
}

fn ping(id: u64) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
        .to_string()
        .into_bytes()
}

async fn stream_closes_at_expiry() {
    let p = proxy(true).await;
    let now = jsonwebtoken::get_current_timestamp();
    let short = p.token_with("alice", json!({"exp": now + 3}));
    let refreshed = p.token_with("alice", json!({"exp": now + 600}));
    let opened = Instant::now();
    let mut c = SseClient::connect(&format!("{}/sse", p.url), &short).await;
    c.initialize().await;
    // A refreshed token of the same principal drives the same session.
    assert_eq!(c.post_raw(ping(7), &refreshed).await, 202);
    assert_eq!(c.response_to(&json!(7)).await["result"], json!({}));
    // Another principal's valid token does not.
    assert_eq!(c.post_raw(ping(8), &p.token("bob")).await, 404);
    // The stream ends when the opening token expires (not before), and the session with it.
    while c.next_event().await.is_some() {}
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(1500) && lived < Duration::from_secs(6),
        "stream lived {lived:?} for a token valid for ~3 s"
    );
    assert_eq!(
        c.post_raw(ping(9), &refreshed).await,
        404,
        "session survived"
    );
    assert!(p.state.session_count() == 0);
    // And the expired token itself is refused from now on.
    let mut status = 0;
    let refused = wait_until(Duration::from_secs(3), async || {
        status = c.post_raw(ping(10), &short).await;
        status == 401
    })
    .await;
    assert!(refused, "got {status}");
}

async fn stream_outlives_the_token_when_configured() {
    let p = proxy(false).await;
    let now = jsonwebtoken::get_current_timestamp();
    let short = p.token_with("alice", json!({"exp": now + 2}));
    let refreshed = p.token_with("alice", json!({"exp": now + 600}));
    let mut c = SseClient::connect(&format!("{}/sse", p.url), &short).await;
    c.initialize().await;
    // Wait until the opening token is refused, then use the stream with the refreshed one.
    eventually(Duration::from_secs(6), "token never expired", async || {
        c.post_raw(ping(1), &short).await == 401
    })
    .await;
    assert_eq!(c.post_raw(ping(2), &refreshed).await, 202);
    let r = c.response_to(&json!(2)).await;
    assert_eq!(r["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_and_token_expiry() {
    // Both waits overlap, so the test costs one token lifetime.
    tokio::join!(
        stream_closes_at_expiry(),
        stream_outlives_the_token_when_configured()
    );
}
