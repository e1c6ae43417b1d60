//! The real `mcp-auth-proxy` binary as a subprocess (for signals, exit codes, its log, its
//! process tree and RSS), on a port it picks itself (`--listen 127.0.0.1:0`), its JSON log
//! lines collected for assertions.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::procfs;

pub struct ProxyProcess {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// `http://<addr>`: the process itself, not a load balancer in front of it.
    pub url: String,
    /// Every stderr line so far (JSON log events), parsed.
    pub log: Arc<Mutex<Vec<Value>>>,
    /// Ends when the log reader has seen the end of stderr (every line is in `log`).
    log_done: Option<tokio::task::JoinHandle<()>>,
    /// The config file of [`ProxyProcess::with_config`]; dropped after `child`.
    _dir: Option<tempfile::TempDir>,
}

impl ProxyProcess {
    /// Starts the binary from TOML text (written to a temp file), with `TEST_SECRET` set as
    /// [`super::Proxy::with_config`] does; `env` adds variables.
    pub async fn with_config(toml: &str, env: &[(&str, &str)]) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut env = env.to_vec();
        env.push(("TEST_SECRET", super::SECRET));
        Self::spawn(&path, &env, Some(dir)).await
    }

    /// Starts the binary with `--config path --listen 127.0.0.1:0 --log-format json` and waits
    /// (bounded) for its `listening` line.
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> ProxyProcess {
        Self::spawn(config, env, None).await
    }

    async fn spawn(
        config: &Path,
        env: &[(&str, &str)],
        dir: Option<tempfile::TempDir>,
    ) -> ProxyProcess {
        let mut cmd = Command::new(super::proxy_binary());
        cmd.arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `("RUST_LOG", "")`: no RUST_LOG at all, so the config's `log.level` decides.
        if env.iter().any(|(k, v)| *k == "RUST_LOG" && v.is_empty()) {
            cmd.env_remove("RUST_LOG");
        }
        let mut child = cmd.spawn().expect("spawn proxy");
        let pid = child.id().expect("pid");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        // The reader keeps draining stderr to its end, so the proxy never blocks on a full pipe.
        let log_done = tokio::spawn({
            let log = log.clone();
            async move {
                let mut addr_tx = Some(addr_tx);
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(event) = serde_json::from_str::<Value>(&line) else {
                        eprintln!("proxy (not JSON): {line}");
                        continue;
                    };
                    if event["fields"]["message"] == "listening"
                        && let Some(tx) = addr_tx.take()
                    {
                        let addr = event["fields"]["addr"].as_str().unwrap_or_default();
                        let _ = tx.send(addr.parse::<SocketAddr>().ok());
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(event);
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), addr_rx)
            .await
            .expect("the proxy logged its address in time")
            .expect("stderr open")
            .expect("a socket address");
        ProxyProcess {
            child,
            pid,
            addr,
            url: format!("http://{addr}"),
            log,
            log_done: Some(log_done),
            _dir: dir,
        }
    }

    /// The log events whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e["fields"]["message"] == message)
            .cloned()
            .collect()
    }

    /// Every log line as text (for failure messages and secret checks).
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Resident memory of the proxy alone, in KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid)
    }

    /// Live processes below the proxy.
    pub fn descendants(&self) -> Vec<u32> {
        procfs::descendants(self.pid)
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
    }

    /// SIGKILL, and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits (bounded) for the exit, then for the last log lines (the reader may lag behind the exit).
    pub async fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the proxy exited in time")
            .expect("exit status");
        if let Some(reader) = self.log_done.take() {
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("stderr reaches its end after the exit")
                .expect("log reader");
        }
        status
    }
}
