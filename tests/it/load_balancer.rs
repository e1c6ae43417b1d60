//! Real HAProxy, configured by `examples/haproxy.cfg`, in front of 3 proxy binaries; 30 clients
//! of the official TypeScript SDK. One instance is drained with SIGTERM mid-run: its clients
//! finish, no client sees an error, and every session opened after the signal lands on a live
//! instance. HAProxy comes from Debian (scripts/install-test-deps.sh).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::lb::{LoadBalancer, lb_socket};
use crate::common::process::ProxyProcess;
use crate::common::sse::SseClient;
use crate::common::wait::{eventually, wait_until};
use crate::common::{SECRET, claims, example_server, hs_token, http, metric, wait_ready};
use crate::interop::{call_args, ts_client};

const INSTANCES: usize = 3;
/// Clients started before the SIGTERM, and as many after it.
const WAVE: usize = 15;
/// Each client keeps its session busy this long (calls × ms) so the drain happens mid-run.
const CALLS: &str = "6";
const CALL_MS: u64 = 250;
/// Sessions opened right after the SIGTERM, before HAProxy has seen the failed health check.
const QUICK_SESSIONS: usize = 6;

/// `examples/haproxy.cfg` with its `bind` line on the inherited listening socket `fd` and its
/// `server` lines replaced by `servers`.
fn haproxy_config(fd: i32, servers: &[std::net::SocketAddr]) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/haproxy.cfg");
    let text = std::fs::read_to_string(example).expect("examples/haproxy.cfg");
    let mut out = String::new();
    let mut servers_written = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("# log stdout") {
            // HAProxy's own request log, for the failure message.
            out.push_str(&format!("    {}\n", trimmed.trim_start_matches("# ")));
        } else if trimmed.starts_with("bind ") {
            out.push_str(&format!("    bind fd@{fd}\n"));
        } else if trimmed.starts_with("server ") {
            if !servers_written {
                for (i, addr) in servers.iter().enumerate() {
                    out.push_str(&format!("    server proxy{} {addr} check\n", i + 1));
                }
                servers_written = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers_written, "no server lines in examples/haproxy.cfg");
    out
}

/// The proxy config every instance shares: the load balancer's address as `public_url`.
fn instance_config(public_url: &str) -> String {
    format!(
        r#"
[http]
public_url = "{public_url}"
shutdown_grace_secs = 30
# Behind HAProxy a client that went away is noticed at the second write after it left (the
# first one only draws the RST): keep-alive comments every second end such sessions quickly.
sse_keepalive_secs = 1

[[auth.issuers]]
issuer = "{issuer}"
algorithms = ["HS256"]
secret_env = "MCP_PROXY_JWT_SECRET"

[sessions]
max_sessions = 100

[servers.default]
command = "{server}"
"#,
        issuer = crate::common::HS_ISSUER,
        server = example_server()
    )
}

async fn active_sessions(instance: &ProxyProcess) -> f64 {
    let Ok(r) = http().get(format!("{}/metrics", instance.url)).send().await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    metric(&text, "mcp_proxy_sessions_active{server=\"default\"}").unwrap_or(0.0)
}

/// Positions in an instance's log of the drain start and of every child spawned.
fn spawns_around_drain(instance: &ProxyProcess) -> (Option<usize>, Vec<usize>, Value) {
    let log = instance.log.lock().unwrap_or_else(|e| e.into_inner());
    let drain = log.iter().position(|e| {
        e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("draining"))
    });
    let spawns = log
        .iter()
        .enumerate()
        .filter(|(_, e)| e["fields"]["message"] == "child spawned")
        .map(|(i, _)| i)
        .collect();
    let drain_event = drain.map(|i| log[i].clone()).unwrap_or(Value::Null);
    (drain, spawns, drain_event)
}

/// Launches one TypeScript SDK client through the load balancer.
fn client(lb: &str, transport: &'static str, token: String) -> tokio::task::JoinHandle<Value> {
    let path = match transport {
        "sse" => "/sse",
        "streamable" => "/mcp",
        other => panic!("unknown transport {other}"),
    };
    let url = format!("{lb}{path}");
    tokio::spawn(async move {
        let arguments = json!({ "ms": CALL_MS }).to_string();
        let extra = ["--repeat", CALLS, "--timeout-ms", "60000"];
        ts_client(&call_args(
            &url, transport, &token, "sleep", &arguments, &extra,
        ))
        .await
    })
}

/// The scenario, for clients spread over `transports` (`sse`, `streamable`).
async fn drain_behind_haproxy(transports: &[&'static str]) {
    crate::interop::interop(); // fail early, with instructions, when the clients are missing
    let (listener, fd, lb) = lb_socket();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("proxy.toml");
    std::fs::write(&config_path, instance_config(&lb)).expect("write config");

    let env = [("MCP_PROXY_JWT_SECRET", SECRET)];
    let mut instances =
        futures::future::join_all((0..INSTANCES).map(|_| ProxyProcess::start(&config_path, &env)))
            .await;
    for instance in &instances {
        wait_ready(&instance.url).await;
    }
    let addrs: Vec<_> = instances.iter().map(|i| i.addr).collect();
    let haproxy_cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&haproxy_cfg, haproxy_config(fd, &addrs)).expect("write haproxy.cfg");
    let haproxy = LoadBalancer::haproxy(&haproxy_cfg, listener);

    let token = |i: usize| hs_token(&claims(&lb, &format!("lb-user-{i}"), json!({})));
    let transport = |i: usize| transports[i % transports.len()];
    let mut clients = Vec::new();
    for i in 0..WAVE {
        clients.push(client(&lb, transport(i), token(i)));
    }

    // Drain the first instance while it is serving sessions (the cluster is mid-run).
    let (mut mine, mut total) = (0.0, 0.0);
    let going = wait_until(Duration::from_secs(45), async || {
        mine = active_sessions(&instances[0]).await;
        total = mine;
        for other in &instances[1..] {
            total += active_sessions(other).await;
        }
        mine >= 2.0 && total >= 6.0
    })
    .await;
    assert!(
        going,
        "the clients did not get going (the instance to drain has {mine}, all {total})"
    );
    instances[0].sigterm();
    // Sessions opened in the moment between the drain and HAProxy's next health check reach
    // the draining instance, get 503, and are retried on a live one (`retry-on 503`).
    eventually(Duration::from_secs(5), "readyz stayed 200", async || {
        !http()
            .get(format!("{}/readyz", instances[0].url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    for i in 0..QUICK_SESSIONS {
        let quick = SseClient::connect(&format!("{lb}/sse"), &token(1000 + i)).await;
        assert!(
            quick
                .endpoint
                .starts_with(&format!("{lb}/message?sessionId="))
        );
    }
    for i in WAVE..2 * WAVE {
        clients.push(client(&lb, transport(i), token(i)));
    }

    let mut failures = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let report = c.await.expect("client task");
        if report["ok"] != true {
            failures.push(format!("client {i} ({}): {report}", transport(i)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} clients failed:\n{}",
        failures.len(),
        2 * WAVE,
        failures.join("\n")
    );

    // The drained instance exits 0 once its sessions have ended (well before its 30 s grace).
    let status = instances[0].wait(Duration::from_secs(20)).await;
    assert!(status.success(), "drained instance: {status}");
    let (drain_at, spawns, drain_event) = spawns_around_drain(&instances[0]);
    let drain_at = drain_at.expect("the drained instance logged the drain");
    assert!(
        instances[0]
            .events("shutdown_grace_secs passed; stopping the remaining sessions")
            .is_empty(),
        "the drained instance waited for its grace instead of its sessions' end"
    );
    assert!(
        drain_event["fields"]["sessions"].as_u64() >= Some(2),
        "the drained instance had no session in flight: {drain_event}"
    );
    assert!(
        spawns.iter().all(|&i| i < drain_at),
        "the drained instance spawned a child after SIGTERM"
    );
    // Some of the quick sessions reached it before HAProxy took it out (two failed checks
    // 2 s apart) and were refused there, then retried on a live instance.
    let refused = instances[0]
        .events("request")
        .iter()
        .filter(|e| e["fields"]["path"] == "/sse" && e["fields"]["status"] == 503)
        .count();
    assert!(
        refused >= 1,
        "no new session reached the draining instance, so HAProxy's retry went untested"
    );
    // Every client had exactly one session, on some instance; none was created twice (a
    // retried one was refused before anything was spawned).
    let mut total = spawns.len();
    for other in &instances[1..] {
        total += spawns_around_drain(other).1.len();
    }
    assert_eq!(
        total,
        2 * WAVE + QUICK_SESSIONS,
        "children spawned across the instances"
    );

    for other in &instances[1..] {
        other.sigterm();
    }
    for other in &mut instances[1..] {
        let status = other.wait(Duration::from_secs(20)).await;
        assert!(status.success(), "{status}");
    }
    haproxy.stop().await;
}

/// Half the clients on legacy SSE, half on Streamable HTTP (2025-11-25 sessions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_drain_with_typescript_clients_over_sse_and_streamable_http() {
    drain_behind_haproxy(&["sse", "streamable"]).await;
}
