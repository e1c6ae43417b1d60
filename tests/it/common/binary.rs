//! The real `mcp-auth-proxy` binary as a subprocess on a port it picks itself
//! (`--listen 127.0.0.1:0`), its JSON log lines collected for assertions.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line so far (JSON log events), parsed.
    pub log: Arc<Mutex<Vec<Value>>>,
    /// Ends when the log reader has seen the end of stderr (every line is in `log`).
    log_done: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Starts the binary with `--config path --listen 127.0.0.1:0 --log-format json` and waits
    /// (bounded) for its `listening` line.
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> ProxyProcess {
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
        let mut child = cmd.spawn().expect("spawn proxy");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
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
        let addr = tokio::time::timeout(Duration::from_secs(15), addr_rx)
            .await
            .expect("the proxy logged its address in time")
            .expect("stderr open")
            .expect("a socket address");
        ProxyProcess {
            child,
            addr,
            log,
            log_done: Some(log_done),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
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
