//! The cgroup limits of `[servers.NAME.sandbox]` with real processes (issue 15): a child over
//! its memory limit is killed and reported while its neighbour answers on; a fork bomb stops
//! at `pids_max` while the proxy stays responsive; the child's cgroup goes with it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::mcp::Session;
use crate::common::wait::eventually;
use crate::common::{Proxy, base_config, http, metric};
use crate::sandbox::{VERSION, probe, report, server, work_dir};
use crate::skip_unless_supported;

/// The directories of a process's cgroups (v1 hierarchies or the v2 one), from /proc.
fn cgroup_dirs(pid: u32) -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
            let mount = match controllers {
                "" => "/sys/fs/cgroup/unified",
                c if c.starts_with("name=") => return None,
                c => return Some(format!("/sys/fs/cgroup/{c}{path}").into()),
            };
            Some(format!("{mount}{path}").into())
        })
        .filter(|d: &std::path::PathBuf| d.to_string_lossy().contains("mcp"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_over_its_memory_limit_is_killed_and_reported() {
    skip_unless_supported!(true);
    let dir = work_dir();
    let limits = "memory_max_bytes = 67108864\npids_max = 64";
    let proxy = Proxy::with_config(&base_config(&server("default", dir.path(), limits)), &[]).await;
    let url = format!("{}/mcp", proxy.url);
    let greedy = Session::open(&url, &proxy.token("alice"), VERSION).await;
    let neighbour = Session::open(&url, &proxy.token("bob"), VERSION).await;
    let pid = proxy.state.session_pid(&greedy.id).expect("child");
    let cgroups = cgroup_dirs(pid);
    assert!(!cgroups.is_empty(), "the child is in its own cgroup");

    let a = greedy
        .call_tool(json!(1), "sandbox_probe", json!({"alloc": 512u64 << 20}))
        .await;
    let error = &a.last()["error"];
    assert_eq!(error["code"], -32603, "{a:?}");
    assert_eq!(
        error["message"], "server process exceeded its memory limit",
        "{a:?}"
    );
    eventually(Duration::from_secs(10), "exit counted as oom", async || {
        let text = proxy.metrics().await;
        metric(
            &text,
            "mcp_proxy_child_exits_total{server=\"default\",reason=\"oom\"}",
        ) == Some(1.0)
    })
    .await;
    let r = probe(&neighbour, 2, json!({"alloc": 1u64 << 20})).await;
    assert!(
        r["alloc"].as_str().is_some_and(|s| s.starts_with("ok")),
        "{r}"
    );
    eventually(
        Duration::from_secs(10),
        "the cgroup is removed",
        async || cgroups.iter().all(|d| !d.exists()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_pids_max_and_the_proxy_stays_responsive() {
    skip_unless_supported!(true);
    let dir = work_dir();
    let proxy = Proxy::with_config(
        &base_config(&server("default", dir.path(), "pids_max = 16")),
        &[],
    )
    .await;
    let url = format!("{}/mcp", proxy.url);
    let s = Session::open(&url, &proxy.token("alice"), VERSION).await;
    let bomb = tokio::spawn(async move {
        let a = s
            .call_tool(json!(1), "sandbox_probe", json!({"fork": 1000}))
            .await;
        (report(&a), s)
    });
    // /healthz while the bomb goes off.
    let mut latencies = Vec::new();
    let client = http();
    while latencies.len() < 200 {
        let start = Instant::now();
        let r = client
            .get(format!("{}/healthz", proxy.url))
            .send()
            .await
            .expect("/healthz");
        assert_eq!(r.status(), 200);
        latencies.push(start.elapsed());
    }
    let (r, s) = bomb.await.expect("the bomb's answer");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    assert!(p99 < Duration::from_millis(50), "/healthz p99 {p99:?}");
    let started = r["fork"]["started"].as_u64().expect("started");
    assert!(
        started < 16,
        "stopped below pids_max (the server's own threads count): {r}"
    );
    assert_eq!(r["fork"]["error"], "EAGAIN", "{r}");
    // The child still answers: a fork bomb costs its own tree only.
    let again = probe(&s, 2, json!({})).await;
    assert_eq!(again["uid"], 65534);
    // When it then exits, the limit it hit is the reported fault.
    let a = s.call_tool(json!(3), "crash", json!({})).await;
    assert_eq!(
        a.last()["error"]["message"],
        "server process exceeded its process limit",
        "{a:?}"
    );
    eventually(
        Duration::from_secs(10),
        "exit counted as pids",
        async || {
            let text = proxy.metrics().await;
            metric(
                &text,
                "mcp_proxy_child_exits_total{server=\"default\",reason=\"pids\"}",
            ) == Some(1.0)
        },
    )
    .await;
}
