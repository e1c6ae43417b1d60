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

/// A proxy that died leaves its children's cgroups and TMPDIRs behind (and in the cgroups
/// whatever of a tree escaped the process group): the next proxy's first contained child
/// removes them, killing what is left, while a live proxy's cgroups are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_proxys_cgroups_are_swept_by_the_next() {
    skip_unless_supported!(true);
    // The pids hierarchy below this test's own cgroup, as the proxy finds it.
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let Some(path) = own
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_owned()))
    else {
        eprintln!("skipped: no cgroup v1 pids hierarchy here");
        return;
    };
    let base = std::path::Path::new("/sys/fs/cgroup/pids")
        .join(path.trim_start_matches('/'))
        .join("mcp-auth-proxy");
    std::fs::create_dir_all(&base).expect("base");
    // A proxy that has exited: a pid that no longer exists.
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let dead = gone.id();
    gone.wait().expect("reaped");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stale = base.join(format!("{dead}-{id}"));
    let live = base.join(format!("{}-{id}", std::process::id()));
    let stale_tmp = std::env::temp_dir().join(format!("mcp-child-{dead}-{id}"));
    for d in [&stale, &live, &stale_tmp] {
        std::fs::create_dir(d).expect("mkdir");
    }
    // An orphan of the dead proxy's tree, still in its cgroup.
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    std::fs::write(stale.join("cgroup.procs"), orphan.id().to_string()).expect("join");

    let dir = work_dir();
    let proxy = crate::common::process::ProxyProcess::with_config(
        &base_config(&server("default", dir.path(), "pids_max = 64")),
        &[],
    )
    .await;
    let token = crate::common::hs_token(&crate::common::claims(&proxy.url, "alice", json!({})));
    let s = Session::open(&format!("{}/mcp", proxy.url), &token, VERSION).await;
    assert_eq!(probe(&s, 1, json!({})).await["uid"], 65534);
    eventually(
        Duration::from_secs(10),
        "the stale cgroup is removed",
        async || !stale.exists(),
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(status) = orphan.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the orphan was killed");
    assert!(!status.success(), "{status:?}");
    assert!(live.exists(), "a live proxy's cgroup stays");
    assert!(
        !stale_tmp.exists(),
        "a dead proxy's child TMPDIR is removed"
    );
    std::fs::remove_dir(&live).expect("rmdir");
    proxy.kill().await;
}
