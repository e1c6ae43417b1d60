//! A real load balancer (HAProxy, nginx) in front of proxy processes: finding its binary,
//! starting it on a socket it inherits or a port it binds itself, and keeping its output for
//! the failure message.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::process::ProxyProcess;
use super::wait::wait_until;

/// A program from PATH, or from the sbin folders Debian puts servers in (often not on PATH);
/// fails with how to get it.
pub fn sbin_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run scripts/install-test-deps.sh (scripts/test.sh does)"
            )
        })
}

/// A loopback port that was free a moment ago, for a program that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A listening loopback socket to hand to a load balancer, its raw fd for the config
/// (`bind fd@<fd>`) and its URL.
pub fn lb_socket() -> (std::net::TcpListener, i32, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let fd = listener.as_raw_fd();
    (listener, fd, url)
}

/// One of several proxy processes behind a load balancer at `public_url`, for stateless
/// (2026-07-28) traffic: per-principal children of the example server, which report `name`
/// as `BRIDGE_INSTANCE` so a test sees which instance served a call.
pub async fn bridge_backend(name: &str, public_url: &str) -> ProxyProcess {
    let config = super::base_config(&format!(
        r#"
[http]
public_url = "{public_url}"

[servers.default]
command = "{server}"
child_scope = "principal"
env = {{ BRIDGE_INSTANCE = "{name}" }}
"#,
        server = super::example_server()
    ));
    ProxyProcess::with_config(&config, &[]).await
}

/// A running load balancer; killed on drop, its output printed if the test is failing.
pub struct LoadBalancer {
    pub child: Child,
    name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoadBalancer {
    /// HAProxy in the foreground with `config`, whose `bind fd@…` line names `listener`.
    pub fn haproxy(config: &Path, listener: std::net::TcpListener) -> LoadBalancer {
        let mut cmd = Command::new(sbin_program("haproxy"));
        cmd.arg("-db").arg("-f").arg(config);
        Self::start_on(cmd, "haproxy", listener)
    }

    /// Runs `cmd` with `listener`, which it inherits: the socket listens before the program
    /// starts, so clients can connect at once and no port can be taken in between.
    fn start_on(cmd: Command, name: &str, listener: std::net::TcpListener) -> LoadBalancer {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        // Let exactly this spawn inherit the socket; close-on-exec again right after.
        fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())).expect("clear FD_CLOEXEC");
        let lb = Self::spawn(cmd, name);
        fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("set FD_CLOEXEC");
        drop(listener);
        lb
    }

    /// Runs `cmd`, which binds `port` itself and announces nothing when ready: returns once it
    /// accepts there; fails at once if it exits instead.
    pub async fn start_listening(cmd: Command, name: &str, port: u16) -> LoadBalancer {
        let mut lb = Self::spawn(cmd, name);
        let mut exited = None;
        let listening = wait_until(Duration::from_secs(20), async || {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return true;
            }
            exited = lb.child.try_wait().ok().flatten();
            exited.is_some()
        })
        .await;
        if let Some(status) = exited {
            panic!("{name} exited: {status}");
        }
        assert!(listening, "{name} did not listen on {port}");
        lb
    }

    fn spawn(mut cmd: Command, name: &str) -> LoadBalancer {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect_lines(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect_lines(err, log.clone());
        }
        LoadBalancer {
            child,
            name: name.to_owned(),
            log,
        }
    }

    /// Everything it printed so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Kills it and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        // Its own log (failed health checks, retries, refused upstreams) often says why.
        if std::thread::panicking() {
            eprintln!("{} output:\n{}", self.name, self.log_text());
        }
    }
}

fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}
