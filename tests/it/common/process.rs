//! The proxy as a real process (for process-tree counts, signals and RSS), listening on port 0
//! and reporting its address in its first log line.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

pub struct ProxyProcess {
    pub child: tokio::process::Child,
    pub url: String,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `mcp-auth-proxy --config <toml>` with `listen.addr = 127.0.0.1:0`.
    pub async fn start(toml: &str, env: &[(&str, &str)]) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, format!("[listen]\naddr = \"127.0.0.1:0\"\n{toml}")).expect("write");
        let mut cmd = tokio::process::Command::new(super::proxy_binary());
        cmd.arg("--config")
            .arg(&path)
            .env("TEST_SECRET", super::SECRET)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn proxy");
        let pid = child.id().expect("pid");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("public_url=").nth(1) {
                    return rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            String::new()
        })
        .await
        .expect("proxy reported its address");
        assert!(url.starts_with("http://"), "no address in the log");
        // Keep draining the log so the proxy never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ProxyProcess {
            child,
            url,
            pid,
            _dir: dir,
        }
    }

    /// Resident memory of the proxy alone, in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Live processes below the proxy.
    pub fn descendants(&self) -> Vec<u32> {
        descendants(self.pid)
    }
}

/// Live (non-zombie) descendants of `root`.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rsplit(')').next() else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 1
                && f[0] != "Z"
                && let Ok(ppid) = f[1].parse::<u32>()
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid) in &parent_of {
            if *ppid == p {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

/// Waits (bounded) until `count()` returns `want`; returns the last value seen.
pub async fn wait_for_count(
    mut count: impl FnMut() -> usize,
    want: usize,
    within: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = count();
        if n == want || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Processes whose environment carries `marker` (children and anything they left behind).
pub fn processes_with_env(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
                && env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
                && super::process_alive(pid)
            {
                out.push(pid);
            }
        }
    }
    out
}
