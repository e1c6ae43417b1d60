//! Real nginx, configured by `examples/nginx.conf`, in front of two proxy binaries, for the
//! traffic that file is for: stateless 2026-07-28 requests. Twelve clients of three
//! principals call through it while one instance is drained with SIGTERM; every call gets its
//! own answer (nginx retries the draining instance's `503` and its closed port on the other).
//! What the test changes in the example: the `listen` line (loopback, no TLS — so also no
//! `ssl_certificate*`), the upstream addresses, and a wrapper with `daemon off`, logs to
//! stderr and temp paths in a temp dir. The file as it is (TLS included, with a throw-away
//! certificate) must pass `nginx -t`. nginx comes from Debian (scripts/install-test-deps.sh).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::common::lb::{LoadBalancer, bridge_backend, free_port, sbin_program};
use crate::common::wait::eventually;
use crate::common::{claims, hs_token, mcp};

const CLIENTS: usize = 12;
const PRINCIPALS: usize = 3;
const ROUNDS: usize = 8;
/// Each call sleeps this long in the child, so the drain happens while calls are in flight.
const CALL_MS: u64 = 100;

fn nginx() -> PathBuf {
    sbin_program("nginx")
}

/// `examples/nginx.conf` with the substitutions listed in the module comment.
fn nginx_config(dir: &Path, port: u16, backends: &[SocketAddr]) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx.conf");
    let text = std::fs::read_to_string(example).expect("examples/nginx.conf");
    let mut site = String::new();
    let mut upstreams = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        if words.first() == Some(&"server") && words.get(1).is_some_and(|a| a.contains(':')) {
            // An upstream member: our address, the example's parameters.
            if let Some(addr) = backends.get(upstreams) {
                let params = words[2..].join(" ");
                site.push_str(&format!("    server {addr} {params}\n"));
            }
            upstreams += 1;
        } else if words.first() == Some(&"listen") {
            site.push_str(&format!("    listen 127.0.0.1:{port};\n"));
        } else if trimmed.starts_with("ssl_certificate") {
            continue;
        } else {
            site.push_str(line);
            site.push('\n');
        }
    }
    assert!(
        upstreams >= backends.len(),
        "too few upstream servers in examples/nginx.conf"
    );
    wrap(dir, &site)
}

/// The main context around a site (`upstream` + `server` blocks): foreground, one process,
/// logs to stderr, every path in `dir`.
fn wrap(dir: &Path, site: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         {site}}}\n"
    )
}

/// The example as it is, with a throw-away certificate for its `ssl_certificate*` paths and
/// its `listen` port on loopback: `nginx -t` must accept it.
#[test]
fn example_nginx_config_passes_nginx_t() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["mcp.example.com".to_owned()])
            .expect("certificate");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.pem()).expect("write certificate");
    std::fs::write(&key, signing_key.serialize_pem()).expect("write key");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx.conf");
    let text = std::fs::read_to_string(example).expect("examples/nginx.conf");
    let port = free_port();
    let site = text
        .replace("/etc/ssl/mcp.example.com.crt", &crt.display().to_string())
        .replace("/etc/ssl/mcp.example.com.key", &key.display().to_string())
        .replace("listen 443 ", &format!("listen 127.0.0.1:{port} "));
    assert_ne!(site, text, "the certificate paths or listen line moved");
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, wrap(dir.path(), &site)).expect("write nginx.conf");
    let out = std::process::Command::new(nginx())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg("stderr")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run nginx -t");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {log}");
    assert!(!log.contains("[warn]"), "nginx -t warns: {log}");
}

/// nginx on `port` (it binds it itself), with the example's site in front of `backends`.
async fn start_nginx(dir: &tempfile::TempDir, port: u16, backends: &[SocketAddr]) -> LoadBalancer {
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, nginx_config(dir.path(), port, backends)).expect("write nginx.conf");
    let mut cmd = Command::new(nginx());
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg("stderr")
        .arg("-c")
        .arg(&path);
    LoadBalancer::start_listening(cmd, "nginx", port).await
}

/// One client: `ROUNDS` calls, all with JSON-RPC id 1; each answer must be its own. Counts
/// its answered calls in `done`.
async fn client(url: String, token: String, c: usize, done: Arc<AtomicUsize>) {
    for round in 0..ROUNDS {
        let message = format!("client-{c}-round-{round}");
        let a = mcp::modern_tool(&url, &token, json!(1), "sleep", json!({"ms": CALL_MS})).await;
        assert_eq!(a.status, 200, "client {c} round {round}: {a:?}");
        assert_eq!(a.last()["id"], 1, "client {c}: {a:?}");
        let echoed =
            mcp::modern_tool(&url, &token, json!(1), "echo", json!({"message": message})).await;
        assert_eq!(echoed.status, 200, "client {c} round {round}: {echoed:?}");
        assert_eq!(
            echoed.last()["result"]["content"][0]["text"],
            message,
            "client {c} got someone else's answer: {echoed:?}"
        );
        done.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_nginx_config_serves_modern_clients_through_a_drain() {
    nginx(); // fail early, with instructions, when nginx is missing
    let dir = tempfile::tempdir().expect("tempdir");
    let lb_port = free_port();
    let lb = format!("http://127.0.0.1:{lb_port}");
    let (mut a, b) = tokio::join!(bridge_backend("a", &lb), bridge_backend("b", &lb));
    let nginx = start_nginx(&dir, lb_port, &[a.addr, b.addr]).await;
    let url = format!("{lb}/mcp");
    let tokens: Vec<String> = (0..PRINCIPALS)
        .map(|p| hs_token(&claims(&lb, &format!("principal-{p}"), json!({}))))
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let runs: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                url.clone(),
                tokens[c % PRINCIPALS].clone(),
                c,
                done.clone(),
            ))
        })
        .collect();
    // Drain `a` once every client has finished a round (so calls are in flight on both).
    eventually(Duration::from_secs(30), "no progress", async || {
        done.load(Ordering::SeqCst) >= CLIENTS
    })
    .await;
    a.sigterm();
    for run in futures::future::join_all(runs).await {
        run.expect("a client failed");
    }
    assert_eq!(done.load(Ordering::SeqCst), CLIENTS * ROUNDS);
    let status = a.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "drained proxy: {status}");
    nginx.stop().await;
    b.kill().await;
}
