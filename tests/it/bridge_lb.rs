//! Stateless behind a load balancer: 20 concurrent modern clients of 3 principals through
//! HAProxy (round robin, no stickiness) in front of two proxy processes, each bridging to its
//! own legacy children. Every answer must reach its own client.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::lb::{LoadBalancer, bridge_backend, lb_socket};
use crate::common::{claims, hs_token, mcp};

const CLIENTS: usize = 20;
const PRINCIPALS: usize = 3;
const ROUNDS: usize = 3;

/// HAProxy in round robin over the two proxies: no stickiness of any kind.
fn start_haproxy(
    dir: &tempfile::TempDir,
    listener: std::net::TcpListener,
    fd: i32,
    backends: &[SocketAddr],
) -> LoadBalancer {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server p{i} {addr}\n"))
        .collect();
    let config = format!(
        "global\n    maxconn 512\n\
         defaults\n    mode http\n    option http-no-delay\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend mcp\n    bind fd@{fd}\n    default_backend proxies\n\
         backend proxies\n    balance roundrobin\n{servers}"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    LoadBalancer::haproxy(&path, listener)
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
        let a = mcp::modern_tool(&url, &token, json!(1), "echo", json!({"message": message})).await;
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
        let a = mcp::modern_tool(
            &url,
            &token,
            json!(1),
            "env",
            json!({"name":"BRIDGE_INSTANCE"}),
        )
        .await;
        instances.push(text(&a));
    }
    instances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_without_stickiness_serves_every_client_its_own_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, fd, lb) = lb_socket();
    let (a, b) = tokio::join!(bridge_backend("a", &lb), bridge_backend("b", &lb));
    let haproxy = start_haproxy(&dir, listener, fd, &[a.addr, b.addr]);
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
    haproxy.stop().await;
    a.kill().await;
    b.kill().await;
}
