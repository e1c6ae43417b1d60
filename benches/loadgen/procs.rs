//! The processes under test: the proxy (release binary, generated config, HS256 secret),
//! supergateway, and what /proc says about them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// The HS256 issuer of the generated config.
pub(crate) const ISSUER: &str = "loadgen";
const SECRET_ENV: &str = "LOADGEN_JWT_SECRET";

/// A running proxy.
pub(crate) struct Proxy {
    child: Child,
    pub(crate) addr: String,
    pub(crate) pid: u32,
    secret: String,
    _dir: tempfile::TempDir,
}

/// The optional sections of the generated config.
#[derive(Default)]
pub(crate) struct Features {
    /// The audit log on (a file in the proxy's temp folder).
    pub(crate) audit: bool,
    /// `[telemetry]` on, exporting here, every trace sampled.
    pub(crate) otlp_endpoint: Option<String>,
}

/// What the generated config's `[servers.default]` runs.
pub(crate) struct ServerCmd {
    pub(crate) command: String,
    pub(crate) args: Vec<String>,
    pub(crate) warm_pool: usize,
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A free loopback port (bound, then released: the callee binds it right after).
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Proxy {
    pub(crate) async fn start(bin: &Path, server: &ServerCmd, log_level: &str) -> Result<Proxy> {
        Self::start_with(bin, server, log_level, None).await
    }

    /// As [`Proxy::start`]; with `tls`, the listener speaks HTTPS with these files and
    /// [`Proxy::addr`] is a `tls://` address.
    pub(crate) async fn start_with(
        bin: &Path,
        server: &ServerCmd,
        log_level: &str,
        tls: Option<&crate::tls::Files>,
    ) -> Result<Proxy> {
        Self::start_full(bin, server, log_level, tls, &Features::default()).await
    }

    /// As [`Proxy::start_with`], with the optional sections `features` turns on.
    pub(crate) async fn start_full(
        bin: &Path,
        server: &ServerCmd,
        log_level: &str,
        tls: Option<&crate::tls::Files>,
        features: &Features,
    ) -> Result<Proxy> {
        Self::start_inner(bin, server, log_level, tls, features, "").await
    }

    /// As [`Proxy::start`], with `sandbox` (the body of `[servers.default.sandbox]`).
    pub(crate) async fn start_sandboxed(
        bin: &Path,
        server: &ServerCmd,
        log_level: &str,
        sandbox: &str,
    ) -> Result<Proxy> {
        let section = format!("[servers.default.sandbox]\n{sandbox}\n");
        Self::start_inner(bin, server, log_level, None, &Features::default(), &section).await
    }

    async fn start_inner(
        bin: &Path,
        server: &ServerCmd,
        log_level: &str,
        tls: Option<&crate::tls::Files>,
        features: &Features,
        sandbox_section: &str,
    ) -> Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let mut audit_section = if features.audit {
            format!(
                "[audit]\npath = {}\n",
                toml_str(&dir.path().join("audit.jsonl").to_string_lossy())
            )
        } else {
            String::new()
        };
        if let Some(endpoint) = &features.otlp_endpoint {
            audit_section.push_str(&format!(
                "[telemetry]\notlp_endpoint = {}\nsample_ratio = 1.0\n",
                toml_str(endpoint)
            ));
        }
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let tls_keys = tls
            .map(|f| {
                format!(
                    "tls_cert = {}\ntls_key = {}\n",
                    toml_str(&f.cert.to_string_lossy()),
                    toml_str(&f.key.to_string_lossy())
                )
            })
            .unwrap_or_default();
        let secret = format!("loadgen-{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let args = server
            .args
            .iter()
            .map(|a| toml_str(a))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            r#"[listen]
addr = "{addr}"
{tls_keys}
[[auth.issuers]]
issuer = "{ISSUER}"
algorithms = ["HS256"]
secret_env = "{SECRET_ENV}"

[sessions]
max_sessions = 100000
max_sessions_per_principal = 100000
idle_timeout_secs = 3600

{audit_section}
[servers.default]
command = {command}
args = [{args}]
warm_pool = {warm}
{sandbox_section}
"#,
            command = toml_str(&server.command),
            warm = server.warm_pool,
        );
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.path().join("proxy.log"))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .env(SECRET_ENV, &secret)
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id().context("proxy exited at once")?;
        let addr = match tls {
            Some(_) => format!("{}{addr}", crate::tls::SCHEME),
            None => addr,
        };
        let mut proxy = Proxy {
            child,
            addr,
            pid,
            secret,
            _dir: dir,
        };
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("the proxy exited with {status}; log: {}", self.log_tail());
            }
            if let Ok(mut conn) = crate::http::Conn::open(&self.addr).await
                && let Ok(r) = conn
                    .request(http::Method::GET, "/readyz", &[], bytes::Bytes::new())
                    .await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the proxy did not become ready in 20 s")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self._dir.path().join("proxy.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(10).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The proxy's default public URL (the audience of its tokens).
    fn public_url(&self) -> String {
        match self.addr.strip_prefix(crate::tls::SCHEME) {
            Some(addr) => format!("https://{addr}"),
            None => format!("http://{}", self.addr),
        }
    }

    /// An HS256 token for `sub`, valid for `ttl`, for this proxy's audience.
    pub(crate) fn token(&self, sub: &str, ttl: Duration) -> Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": sub, "aud": self.public_url(),
            "iat": now, "nbf": now, "exp": now + ttl.as_secs(),
        });
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )?)
    }

    /// Resident memory of the proxy process itself (children excluded), in bytes.
    pub(crate) fn rss(&self) -> Option<u64> {
        rss_of(self.pid)
    }

    pub(crate) async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// `VmRSS` of a process, in bytes.
pub(crate) fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) a process has used itself, children excluded.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized name: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit(')').next()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Open file descriptors of a process.
pub(crate) fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Threads of a process.
pub(crate) fn thread_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// Direct children of a process, and all their descendants' RSS (for the report).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let mut out: Vec<u32> = Vec::new();
    // Children can be listed under any thread of the process.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let p = task.path().join("children");
            if let Ok(text) = std::fs::read_to_string(p) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|s| s.parse::<u32>().ok()),
                );
            }
        }
    } else if let Ok(text) = std::fs::read_to_string(path) {
        out.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A running supergateway (`--stdio CMD --port N`, SSE mode), wrapping the same child.
pub(crate) struct Supergateway {
    child: Child,
    pub(crate) addr: String,
}

impl Supergateway {
    pub(crate) async fn start(bin: &Path, server: &str) -> Result<Supergateway> {
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["--stdio", server, "--port", &port.to_string()])
            .args(["--logLevel", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(Supergateway { child, addr });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("supergateway did not listen on {addr} within 30 s")
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) async fn stop(mut self) {
        // Its child (the wrapped server) is in its process group.
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Raises this process's open-file soft limit to the hard limit; returns (soft, hard).
pub(crate) fn raise_fd_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                (hard, hard)
            } else {
                (soft, hard)
            }
        }
        Err(_) => (0, 0),
    }
}

/// `target/release` next to this executable's folder, where the bench script builds.
pub(crate) fn default_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/loadgen → target/release/NAME
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}
