//! The binary: `check`, `token`, exit 64 on a broken config before binding, and a full run
//! as a subprocess (secrets stay out of the child's environment).

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::process::ProxyProcess;
use crate::common::procfs::{process_alive, wait_gone};
use crate::common::sse::SseClient;
use crate::common::wait::wait_until;
use crate::common::{SECRET, example_server, http, proxy_binary, wait_ready};

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn hs_config(listen: &str) -> String {
    format!(
        r#"
[listen]
addr = "{listen}"

[[auth.issuers]]
issuer = "cli-test"
algorithms = ["HS256"]
secret_env = "MCP_PROXY_JWT_SECRET"

[servers.default]
command = "{}"
"#,
        example_server()
    )
}

#[test]
fn check_accepts_a_good_config_and_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(&dir, &hs_config("127.0.0.1:0"));
    let out = Command::new(proxy_binary())
        .args(["check", "--config"])
        .arg(&good)
        .env("MCP_PROXY_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("server default"), "{stdout}");

    // Missing secret: exit 64 naming the key.
    let out = Command::new(proxy_binary())
        .args(["check", "--config"])
        .arg(&good)
        .env_remove("MCP_PROXY_JWT_SECRET")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.issuers[0].secret_env"));

    // Unknown key: exit 64 naming it.
    let bad = write_config(
        &dir,
        &format!(
            "{}\n[sessions]\nmax_sesions = 3\n",
            hs_config("127.0.0.1:0")
        ),
    );
    let out = Command::new(proxy_binary())
        .args(["check", "--config"])
        .arg(&bad)
        .env("MCP_PROXY_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_sesions"));
}

/// A broken config exits 64 before any port is bound: the port stays free.
#[test]
fn broken_config_exits_64_before_binding() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{}\n[http]\npublic_url = \"not a url\"\n",
        hs_config(&format!("127.0.0.1:{port}"))
    );
    let path = write_config(&dir, &cfg);
    let out = Command::new(proxy_binary())
        .arg("--config")
        .arg(&path)
        .env("MCP_PROXY_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.public_url"));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// The real binary on a port of its choosing (`--listen 127.0.0.1:0`): the `token`
/// subcommand's token opens a session; the proxy's secret is not in the child's environment;
/// SIGTERM drains (readyz 503, new sessions 503, the open session keeps working), and after
/// `shutdown_grace_secs` the session is closed, the child stopped, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_subcommand_and_a_full_run_with_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, &hs_config("127.0.0.1:9"));
    let mut proxy = ProxyProcess::start(
        &path,
        &[
            ("MCP_PROXY_JWT_SECRET", SECRET),
            ("MCP_PROXY__SESSIONS__MAX_SESSIONS", "5"),
            ("MCP_PROXY__HTTP__SHUTDOWN_GRACE_SECS", "2"),
        ],
    )
    .await;
    let base = proxy.url.clone();
    let out = Command::new(proxy_binary())
        .args(["token", "--sub", "dana", "--aud", &base, "--config"])
        .arg(&path)
        .env("MCP_PROXY_JWT_SECRET", SECRET)
        .output()
        .expect("token");
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    wait_ready(&base).await;
    let mut c = SseClient::connect(&format!("{base}/sse"), &token).await;
    c.initialize().await;
    for name in ["MCP_PROXY_JWT_SECRET", "MCP_PROXY__SESSIONS__MAX_SESSIONS"] {
        let v = c.tool_text(json!(name), "env", json!({"name": name})).await;
        assert_eq!(v, "", "{name} leaked into the child");
    }
    let pid = c
        .tool_text(json!("pid"), "spawn_grandchild", json!({}))
        .await;
    let grandchild: u32 = pid.trim().parse().expect("pid");
    assert!(process_alive(grandchild));

    proxy.sigterm();
    // The signal is handled asynchronously: poll (bounded) until readiness drops.
    let mut status = reqwest::StatusCode::OK;
    let dropped = wait_until(Duration::from_secs(5), async || {
        status = http()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz while draining")
            .status();
        status == 503
    })
    .await;
    assert!(dropped, "readyz stayed {status}");
    let refused = http()
        .get(format!("{base}/sse"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("new session while draining");
    assert_eq!(refused.status(), 503);
    assert_eq!(
        c.tool_text(json!("after"), "echo", json!({"message": "draining"}))
            .await,
        "draining"
    );

    let status = proxy.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        wait_gone(grandchild, Duration::from_secs(5)).await,
        "the session's grandchild outlived the proxy"
    );
    assert!(c.next_event().await.is_none(), "stream ends at shutdown");
    let log = proxy.log_text();
    assert!(!log.contains(&token), "the token was logged");
    assert!(!log.contains(SECRET), "the secret was logged");
    assert!(!proxy.events("request").is_empty(), "no access log lines");
    assert_eq!(proxy.events("stopped").len(), 1, "{log}");
}
