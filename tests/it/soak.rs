//! Soak: for about a minute, sessions are opened and dropped in every way — clean close, client
//! process killed, DELETE, idle timeout, child crash, modern requests — then no process is left
//! and the proxy's memory is back within 10% of its level after warm-up.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::common::mcp::{self, Session};
use crate::common::process::ProxyProcess;
use crate::common::procfs::processes_with_env;
use crate::common::sse::SseClient;
use crate::common::wait::wait_for_count;
use crate::common::{base_config, claims, example_server, hs_token, http};

async fn round(url: &str, i: usize) {
    let token = hs_token(&claims(url, &format!("soak{}", i % 7), json!({})));
    match i % 6 {
        0 => {
            let mut c = SseClient::connect(&format!("{url}/sse"), &token).await;
            c.initialize().await;
            assert_eq!(
                c.tool_text(json!(1), "echo", json!({"message":"x"})).await,
                "x"
            );
        }
        1 => {
            let s = Session::open(&format!("{url}/mcp"), &token, "2025-11-25").await;
            assert_eq!(
                s.call_tool(json!(1), "add", json!({"a":1,"b":2}))
                    .await
                    .status,
                200
            );
            let r = http()
                .delete(format!("{url}/mcp"))
                .bearer_auth(&token)
                .header("mcp-session-id", &s.id)
                .send()
                .await;
            assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 204);
        }
        2 => {
            // Forgotten: the idle reaper ends it.
            let s = Session::open(&format!("{url}/mcp"), &token, "2025-11-25").await;
            // On a stalled machine the reaper may already have ended it: both are fine here.
            let status = s
                .call_tool(json!(1), "echo", json!({"message":"y"}))
                .await
                .status;
            assert!(status == 200 || status == 404, "status {status}");
        }
        3 => {
            let mut c = SseClient::connect(&format!("{url}/sse"), &token).await;
            c.initialize().await;
            assert_eq!(c.post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"crash","arguments":{}}})).await, 202);
            while c.next_message().await.is_some() {}
        }
        4 => {
            // A client process killed in the middle of its stream.
            let mut curl = tokio::process::Command::new("curl")
                .args([
                    "-sN",
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    &format!("{url}/sse"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("curl");
            let mut out = curl.stdout.take().expect("stdout");
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut out, &mut buf),
            )
            .await;
            let _ = curl.start_kill();
            let _ = curl.wait().await;
        }
        _ => {
            let a = mcp::modern_tool(
                &format!("{url}/mcp"),
                &token,
                json!(1),
                "echo",
                json!({"message":"m"}),
            )
            .await;
            assert_eq!(a.status, 200);
        }
    }
}

async fn run_for(url: &str, duration: Duration, workers: usize) -> usize {
    let deadline = tokio::time::Instant::now() + duration;
    let tasks = (0..workers).map(|w| {
        let url = url.to_owned();
        tokio::spawn(async move {
            let mut n = 0;
            let mut i = w;
            while tokio::time::Instant::now() < deadline {
                round(&url, i).await;
                i += workers;
                n += 1;
            }
            n
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("worker"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_leaves_no_process_and_no_memory_behind() {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let cfg = base_config(&format!(
        "[sessions]\nidle_timeout_secs = 3\n[servers.default]\ncommand = \"{}\"\nenv = {{ SOAK_MARKER = \"{marker}\" }}\n",
        example_server()
    ));
    let proxy = ProxyProcess::with_config(&cfg, &[("MALLOC_ARENA_MAX", "2")]).await;
    let quiet =
        || async { wait_for_count(|| proxy.descendants().len(), 0, Duration::from_secs(20)).await };
    let warm = run_for(&proxy.url, Duration::from_secs(12), 4).await;
    assert_eq!(quiet().await, 0);
    let baseline = proxy.rss_kib();
    let soaked = run_for(&proxy.url, Duration::from_secs(48), 4).await;
    assert_eq!(quiet().await, 0, "processes left below the proxy");
    assert!(
        processes_with_env(&format!("SOAK_MARKER={marker}")).is_empty(),
        "orphaned processes"
    );
    let after = proxy.rss_kib();
    eprintln!(
        "soak: {warm} warm-up rounds, {soaked} soak rounds; RSS {baseline} KiB -> {after} KiB"
    );
    assert!(
        soaked > 100,
        "the soak did too little work: {soaked} rounds"
    );
    assert!(
        after <= baseline + baseline / 10,
        "proxy RSS grew from {baseline} KiB to {after} KiB"
    );
}
