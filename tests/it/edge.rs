//! The connection layer's timers and switches (src/edge): an idle keep-alive connection
//! outlives the head timer and closes at the idle timeout; an open SSE stream is never idle;
//! `http2 = false` speaks HTTP/1.1 only.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::sse::SseClient;
use crate::common::{Proxy, base_config, example_server_section, metric};

fn config(extra: &str) -> String {
    base_config(&format!("{extra}\n{}", example_server_section()))
}

/// One `GET /healthz` on `s`; the status line.
async fn healthz(s: &mut TcpStream) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_outlives_the_head_timer_and_closes_when_idle() {
    let proxy = Proxy::with_config(
        &config("[limits]\nheader_read_timeout_secs = 1\nidle_connection_timeout_secs = 3"),
        &[],
    )
    .await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    assert_eq!(healthz(&mut s).await, "HTTP/1.1 200 OK");
    // Longer than the head timer, shorter than the idle timer: waiting between requests is
    // not a slow head.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(healthz(&mut s).await, "HTTP/1.1 200 OK", "still open");
    let idle_from = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the proxy"
    );
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2500) && idle < Duration::from_secs(8),
        "closed after {idle:?} idle (idle_connection_timeout_secs = 3)"
    );
    let text = proxy.metrics().await;
    assert!(
        metric(&text, "mcp_proxy_edge_refused_total{reason=\"idle\"}").is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        metric(
            &text,
            "mcp_proxy_edge_refused_total{reason=\"header_timeout\"}"
        ),
        Some(0.0),
        "the wait between requests was not taken for a slow head"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_sse_stream_is_not_idle() {
    let proxy = Proxy::with_config(
        &config("[limits]\nheader_read_timeout_secs = 1\nidle_connection_timeout_secs = 1"),
        &[],
    )
    .await;
    let token = proxy.token("alice");
    let mut sse = SseClient::connect(&format!("{}/sse", proxy.url), &token).await;
    sse.initialize().await;
    // Well past both timers with the stream open and silent.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = sse
        .call(
            json!(2),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "still streaming"}}),
        )
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "still streaming");
    drop(sse);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_off_speaks_http1_only() {
    let proxy = Proxy::with_config(&config("[listen]\nhttp2 = false"), &[]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    assert!(
        h2.get(format!("{}/healthz", proxy.url))
            .send()
            .await
            .is_err(),
        "h2c by prior knowledge refused"
    );
    let r = crate::common::http()
        .get(format!("{}/healthz", proxy.url))
        .send()
        .await
        .expect("HTTP/1.1");
    assert_eq!(r.status(), 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_never_stops_the_proxy() {
    let proxy = crate::common::process::ProxyProcess::with_config(&config(""), &[]).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    crate::common::wait::eventually(Duration::from_secs(10), "SIGHUP logged", async || {
        !proxy
            .events(
                "SIGHUP: reloading the config; the audit log is reopened and the TLS files checked",
            )
            .is_empty()
            && !proxy.events("config reloaded").is_empty()
    })
    .await;
    let r = crate::common::http()
        .get(format!("{}/healthz", proxy.url))
        .send()
        .await
        .expect("still serving after SIGHUP");
    assert_eq!(r.status(), 200);
}
