//! Test helpers: an in-process proxy on port 0, token minting, keys, raw MCP clients, the
//! proxy binary as a process, load balancers, /proc, and bounded waits.

#![allow(dead_code, unreachable_pub)]

pub mod keys;
pub mod lb;
pub mod mcp;
pub mod otlp;
pub mod process;
pub mod procfs;
pub mod sse;
pub mod tls;
pub mod wait;

use std::sync::Arc;
use std::time::Duration;

use mcp_auth_proxy::AppState;
use mcp_auth_proxy::config::Config;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const HS_ISSUER: &str = "test-hs";

/// The bundled example server binary.
pub fn example_server() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-example-server")
}

/// The proxy binary.
pub fn proxy_binary() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-auth-proxy")
}

/// A config with the HS test issuer and the example server as `default`; `extra` is appended.
pub fn base_config(extra: &str) -> String {
    format!(
        r#"
[[auth.issuers]]
issuer = "{HS_ISSUER}"
algorithms = ["HS256"]
secret_env = "TEST_SECRET"
{extra}
"#
    )
}

/// The default server section.
pub fn example_server_section() -> String {
    format!("[servers.default]\ncommand = \"{}\"\n", example_server())
}

pub struct Proxy {
    pub url: String,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy with the HS issuer and the example server.
    pub async fn start() -> Proxy {
        Self::with_config(&base_config(&example_server_section()), &[]).await
    }

    /// Starts a proxy from TOML text; `env` adds variables (TEST_SECRET is always set).
    pub async fn with_config(toml: &str, env: &[(&str, &str)]) -> Proxy {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("TEST_SECRET".into(), SECRET.into()));
        let config = Config::parse(toml, &env).expect("config parses");
        config.validate(&env).expect("config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = mcp_auth_proxy::build_state(config, addr, &env).expect("state");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                let stop = async {
                    let _ = rx.await;
                };
                mcp_auth_proxy::serve(state, listener, stop)
                    .await
                    .expect("serve");
            }
        });
        let proxy = Proxy {
            url: format!("http://{addr}"),
            state,
            stop: Some(tx),
            task: Some(task),
        };
        // One answer means `serve` has started: its background tasks (key loading, warm pools,
        // reaper) exist before the test looks at them.
        http()
            .get(format!("{}/healthz", proxy.url))
            .send()
            .await
            .expect("the proxy answers");
        proxy
    }

    /// A valid token for `sub` from the HS issuer, for this proxy's audience.
    pub fn token(&self, sub: &str) -> String {
        self.token_with(sub, json!({}))
    }

    /// A token with claims overridden (`null` removes a claim).
    pub fn token_with(&self, sub: &str, overrides: Value) -> String {
        hs_token(&claims(&self.url, sub, overrides))
    }

    pub fn spawned(&self) -> u64 {
        self.state.spawned()
    }

    /// Sends the shutdown signal (as SIGTERM would) and waits until draining has begun.
    pub async fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.state.draining_started())
            .await
            .expect("draining starts");
    }

    /// Waits (bounded) until `serve` has returned; true if it did.
    pub async fn wait_stopped(&mut self, within: Duration) -> bool {
        match self.task.as_mut() {
            Some(task) => match tokio::time::timeout(within, task).await {
                Ok(r) => {
                    r.expect("serve task");
                    self.task = None;
                    true
                }
                Err(_) => false,
            },
            None => true,
        }
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let r = http()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.expect("metrics body")
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Standard claims for `aud`/`sub`, with overrides (`null` removes).
pub fn claims(aud: &str, sub: &str, overrides: Value) -> Map<String, Value> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut base = json!({
        "iss": HS_ISSUER, "sub": sub, "aud": aud,
        "iat": now, "nbf": now, "exp": now + 600,
    });
    let obj = base.as_object_mut().expect("object");
    if let Some(o) = overrides.as_object() {
        for (k, v) in o {
            if v.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    obj.clone()
}

pub fn hs_token(claims: &Map<String, Value>) -> String {
    mcp_auth_proxy::install_crypto_provider();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Runs `mcp-auth-proxy check --config path` with `TEST_SECRET` set.
pub fn check_config(path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(proxy_binary())
        .args(["check", "--config"])
        .arg(path)
        .env("TEST_SECRET", SECRET)
        .output()
        .expect("run check")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Waits (bounded) until `GET /readyz` answers 200.
pub async fn wait_ready(url: &str) {
    wait::eventually(
        Duration::from_secs(10),
        "the proxy never became ready",
        async || {
            http()
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

/// The value of one series (`name{labels}` exactly as rendered) in a Prometheus text body.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
