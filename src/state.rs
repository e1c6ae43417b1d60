//! The state every handler shares, and per-server runtime settings.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Principal};
use crate::child::ChildSpec;
use crate::config::{Config, ServerConfig};
use crate::metrics::{Metrics, ServerMetrics};
use crate::session::SessionRegistry;

/// Longest claim value copied into a child's environment.
pub const MAX_CLAIM_ENV_BYTES: usize = 4096;

pub struct AppState {
    pub config: Arc<Config>,
    /// `http.public_url`, or `http://<bound address>`; no trailing slash.
    pub public_url: String,
    pub auth: Arc<Authenticator>,
    pub sessions: Arc<SessionRegistry>,
    pub servers: HashMap<String, ServerRuntime>,
    /// Every child actor runs on this tracker, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the proxy shuts down: every stream ends.
    pub shutdown: CancellationToken,
    /// Cancelled when draining starts (SIGTERM): `/readyz` answers 503 and new sessions are
    /// refused, while existing sessions go on until they end or `shutdown_grace_secs` passes.
    pub draining: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// Children serving the modern era (per principal, or shared).
    pub pool: Arc<crate::pool::ChildPool>,
    /// Children spawned since start (tests assert that refused requests spawn nothing).
    pub spawned: std::sync::atomic::AtomicU64,
}

/// A configured server and what is needed to spawn its children.
pub struct ServerRuntime {
    pub name: String,
    pub config: ServerConfig,
    pub policy: crate::policy::ToolPolicy,
    /// Children spawned ahead (`warm_pool`), when configured.
    pub warm: std::sync::OnceLock<Arc<crate::warm::WarmPool>>,
    env_remove: Vec<String>,
    /// This server's metric handles (children record into them).
    pub metrics: ServerMetrics,
    /// The era of this server's children, configured or probed once (see [`crate::bridge`]).
    pub era: crate::bridge::EraCache,
}

/// Why a child environment could not be built from the caller's claims.
#[derive(Debug, thiserror::Error)]
#[error("claim `{claim}` for {var} is missing or unusable")]
pub struct ClaimEnvError {
    pub var: String,
    pub claim: String,
}

impl ServerRuntime {
    pub fn new(name: &str, config: ServerConfig, env_remove: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            policy: crate::policy::ToolPolicy::new(&config.tool_rules),
            warm: std::sync::OnceLock::new(),
            era: crate::bridge::EraCache::new(config.era),
            config,
            env_remove,
            metrics: ServerMetrics::default(),
        }
    }

    /// Records this server's children and traffic into `metrics`.
    pub fn with_metrics(mut self, metrics: ServerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The spawn recipe for a child serving `principal`: the server's `env`, then
    /// `env_from_claims` (string, number or boolean claims; no NUL; bounded length).
    /// The client's token itself is never passed (DESIGN §3).
    pub fn child_spec(&self, principal: Option<&Principal>) -> Result<ChildSpec, ClaimEnvError> {
        let mut env: Vec<(String, String)> = self
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(principal) = principal {
            for (var, claim) in &self.config.env_from_claims {
                let value = match principal.claims.get(claim) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    Some(serde_json::Value::Bool(b)) => b.to_string(),
                    _ => String::new(),
                };
                if value.is_empty() || value.contains('\0') || value.len() > MAX_CLAIM_ENV_BYTES {
                    return Err(ClaimEnvError {
                        var: var.clone(),
                        claim: claim.clone(),
                    });
                }
                env.push((var.clone(), value));
            }
        }
        Ok(ChildSpec {
            command: self.config.command.clone(),
            args: self.config.args.clone(),
            env,
            env_remove: self.env_remove.clone(),
            cwd: self.config.cwd.clone(),
            max_line_bytes: self.config.max_line_bytes,
            request_timeout: std::time::Duration::from_secs(self.config.request_timeout_secs),
            metrics: self.metrics.child.clone(),
        })
    }
}

impl AppState {
    /// True once draining has started (new sessions are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// The public base URL for this request: `public_url`, with the scheme and host taken
    /// from `X-Forwarded-Proto`/`X-Forwarded-Host` when `trust_forwarded_headers` is on.
    pub fn public_url_for(&self, headers: &http::HeaderMap) -> std::borrow::Cow<'_, str> {
        if !self.config.http.trust_forwarded_headers {
            return std::borrow::Cow::Borrowed(&self.public_url);
        }
        crate::forwarded::public_url(&self.public_url, headers)
    }
}
