//! Stateless behind a load balancer: 20 concurrent modern clients of 3 principals through
//! HAProxy (round robin, no stickiness) in front of two proxy processes, each bridging to its
//! own legacy children. Every answer must reach its own client.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::mcp;
use crate::common::{HS_ISSUER, SECRET, claims, example_server, hs_token, proxy_binary};

const CLIENTS: usize = 20;
const PRINCIPALS: usize = 3;
const ROUNDS: usize = 3;

/// A loopback port that was free a moment ago (for a subprocess, which binds it itself).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// HAProxy from PATH (or /usr/sbin, where Debian puts it); fails with how to get it.
fn haproxy() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("haproxy"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/haproxy")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "haproxy is not on PATH: run scripts/install-test-deps.sh (scripts/test.sh does)"
            )
        })
}

/// Starts one proxy process and waits until it logs that it listens. Its log keeps being
/// drained (a full stderr pipe would block it).
pub(crate) async fn start_proxy(
    dir: &tempfile::TempDir,
    name: &str,
    port: u16,
    public_url: &str,
) -> Child {
    let config = format!(
        r#"
[listen]
addr = "127.0.0.1:{port}"

[http]
public_url = "{public_url}"

[[auth.issuers]]
issuer = "{HS_ISSUER}"
algorithms = ["HS256"]
secret_env = "TEST_SECRET"

[servers.default]
command = "{}"
child_scope = "principal"
env = {{ BRIDGE_INSTANCE = "{name}" }}
"#,
        example_server()
    );
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(proxy_binary())
        .arg("--config")
        .arg(&path)
        .env("TEST_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the proxy");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let listening = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(listening, Ok(true), "proxy {name} did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// HAProxy in round robin over the two proxies: no stickiness of any kind.
async fn start_haproxy(dir: &tempfile::TempDir, port: u16, backends: &[u16]) -> Child {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server p{i} 127.0.0.1:{p}\n"))
        .collect();
    let config = format!(
        "global\n    maxconn 512\n\
         defaults\n    mode http\n    option http-no-delay\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend mcp\n    bind 127.0.0.1:{port}\n    default_backend proxies\n\
         backend proxies\n    balance roundrobin\n{servers}"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let mut child = Command::new(haproxy())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    // HAProxy announces nothing when ready.
    wait_listening(&mut child, port, "haproxy").await;
    child
}

/// Waits (bounded) until a load balancer that announces nothing accepts on `port`; fails
/// at once if it exits instead.
pub(crate) async fn wait_listening(child: &mut Child, port: u16, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn text(a: &mcp::Answer) -> String {
    a.last()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {a:?}"))
        .to_owned()
}

/// One client's conversation; returns the instances that served its calls.
async fn client(url: String, token: String, c: usize) -> Vec<String> {
    let mut instances = Vec::new();
    // Every client uses the same JSON-RPC id: only the proxy's rewriting keeps them apart.
    let d = mcp::modern(&url, &token, json!(1), "server/discover", json!({})).await;
    assert_eq!(d.status, 200, "client {c}: {d:?}");
    assert_eq!(
        d.last()["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
    let l = mcp::modern(&url, &token, json!(1), "tools/list", json!({})).await;
    assert_eq!(
        l.last()["result"]["cacheScope"],
        "private",
        "client {c}: {l:?}"
    );
    for round in 0..ROUNDS {
        let message = format!("client-{c}-round-{round}");
        let a = mcp::modern(
            &url,
            &token,
            json!(1),
            "tools/call",
            json!({"name":"echo","arguments":{"message": message}}),
        )
        .await;
        assert_eq!(a.last()["id"], 1);
        assert_eq!(text(&a), message, "client {c} got someone else's answer");
        let token_name = format!("tok-{c}-{round}");
        let a = mcp::modern(&url, &token, json!(1), "tools/call",
            json!({"name":"progress","arguments":{"steps":2},"_meta":{"progressToken": token_name}})).await;
        let progress: Vec<&Value> = a
            .messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        assert_eq!(progress.len(), 2, "client {c}: {a:?}");
        assert!(
            progress
                .iter()
                .all(|p| p["params"]["progressToken"] == token_name.as_str()),
            "client {c}: {a:?}"
        );
        assert_eq!(text(&a), "done 2 steps");
        let a = mcp::modern(
            &url,
            &token,
            json!(1),
            "tools/call",
            json!({"name":"env","arguments":{"name":"BRIDGE_INSTANCE"}}),
        )
        .await;
        instances.push(text(&a));
    }
    instances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_without_stickiness_serves_every_client_its_own_answers() {
    let haproxy = haproxy();
    assert!(haproxy.is_file());
    let dir = tempfile::tempdir().expect("tempdir");
    let lb_port = free_port();
    let lb = format!("http://127.0.0.1:{lb_port}");
    let (pa, pb) = (free_port(), free_port());
    let (a, b) = tokio::join!(
        start_proxy(&dir, "a", pa, &lb),
        start_proxy(&dir, "b", pb, &lb)
    );
    let lb_process = start_haproxy(&dir, lb_port, &[pa, pb]).await;
    let url = format!("{lb}/mcp");
    let tokens: Vec<String> = (0..PRINCIPALS)
        .map(|p| hs_token(&claims(&lb, &format!("principal-{p}"), json!({}))))
        .collect();
    let started = std::time::Instant::now();
    let runs =
        (0..CLIENTS).map(|c| tokio::spawn(client(url.clone(), tokens[c % PRINCIPALS].clone(), c)));
    let mut served = Vec::new();
    for run in futures::future::join_all(runs).await {
        served.extend(run.expect("client task"));
    }
    assert_eq!(served.len(), CLIENTS * ROUNDS);
    assert!(
        served.iter().any(|s| s == "a") && served.iter().any(|s| s == "b"),
        "both instances served: {served:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    for mut p in [lb_process, a, b] {
        let _ = p.start_kill();
        let _ = p.wait().await;
    }
}
