//! One configured server at run time: its tool policy, warm pool, era cache, metric handles,
//! and the spawn recipe of its children — the server's `env`, then the caller's claims
//! (`env_from_claims`), never the caller's token (DESIGN §3).

use std::sync::{Arc, OnceLock};

use crate::auth::Principal;
use crate::bridge::EraCache;
use std::path::PathBuf;

use crate::child::ChildSpec;
use crate::child::sandbox::SandboxSpec;
use crate::config::{SandboxConfig, ServerConfig, SessionsConfig, expand_cwd};
use crate::metrics::ServerMetrics;
use crate::policy::ToolPolicy;
use crate::warm::WarmPool;

/// Longest claim value copied into a child's environment.
const MAX_CLAIM_ENV_BYTES: usize = 4096;

/// A configured server and what is needed to spawn its children.
pub(crate) struct ServerRuntime {
    /// Shared with every audit line of the server's requests.
    pub(crate) name: Arc<str>,
    /// Unique per runtime: a reload that changes the server builds a new one, and the pool
    /// keys its children by it (a child of the old definition is never handed out again).
    pub(crate) id: u64,
    pub(crate) config: ServerConfig,
    pub(crate) policy: ToolPolicy,
    /// Children spawned ahead (`warm_pool`), when configured.
    pub(crate) warm: OnceLock<Arc<WarmPool>>,
    env_remove: Vec<String>,
    /// `sessions.max_queued_bytes`, for every child's stdin.
    max_queued_bytes: usize,
    /// `sessions.max_pending_bytes`, for every child's output waiting for clients.
    max_pending_bytes: usize,
    /// This server's metric handles (children record into them).
    metrics: ServerMetrics,
    /// The era of this server's children, configured or probed once (see [`crate::bridge`]).
    pub(crate) era: EraCache,
    /// `[servers.NAME.sandbox]`, shared by every child's spec.
    sandbox: Option<Arc<SandboxConfig>>,
}

/// Why a child environment could not be built from the caller's claims.
#[derive(Debug, thiserror::Error)]
#[error("claim `{claim}` for {var} is missing or unusable")]
pub(crate) struct ClaimEnvError {
    var: String,
    claim: String,
}

impl ServerRuntime {
    /// The sandbox for a child serving `principal`: `cwd` with `{sub}`/`{iss}` encoded into
    /// one path component each (a claim never names another directory).
    fn sandbox_spec(
        &self,
        principal: Option<&Principal>,
    ) -> Result<Option<SandboxSpec>, ClaimEnvError> {
        let Some(config) = &self.sandbox else {
            return Ok(None);
        };
        let cwd = match (&config.cwd, principal) {
            (Some(template), _) if !config.per_principal() => Some(PathBuf::from(template)),
            (Some(template), Some(p)) => Some(expand_cwd(template, &p.sub, &p.iss).map_err(
                |_| ClaimEnvError {
                    var: "sandbox.cwd".into(),
                    claim: "sub/iss".into(),
                },
            )?),
            // Refused by the config checks (a warm or shared child has no caller).
            (Some(_), None) => {
                return Err(ClaimEnvError {
                    var: "sandbox.cwd".into(),
                    claim: "sub/iss".into(),
                });
            }
            (None, _) => None,
        };
        Ok(Some(SandboxSpec {
            config: config.clone(),
            cwd,
        }))
    }

    pub(crate) fn new(
        name: &str,
        config: ServerConfig,
        env_remove: Vec<String>,
        sessions: &SessionsConfig,
        metrics: ServerMetrics,
    ) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            name: name.into(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            policy: ToolPolicy::new(&config.tool_rules),
            warm: OnceLock::new(),
            era: EraCache::new(config.era),
            sandbox: config.sandbox.clone().map(Arc::new),
            config,
            env_remove,
            max_queued_bytes: sessions.max_queued_bytes,
            max_pending_bytes: sessions.max_pending_bytes,
            metrics,
        }
    }

    /// Whether this runtime spawns its children as one built from these settings would (a
    /// reload keeps an unchanged server's runtime: its pool children, warm pool, era).
    pub(crate) fn same_definition(
        &self,
        config: &ServerConfig,
        env_remove: &[String],
        sessions: &SessionsConfig,
    ) -> bool {
        self.config == *config
            && self.env_remove == env_remove
            && self.max_queued_bytes == sessions.max_queued_bytes
            && self.max_pending_bytes == sessions.max_pending_bytes
    }

    /// The spawn recipe for a child serving `principal`: the server's `env`, then
    /// `env_from_claims` (string, number or boolean claims; no NUL; bounded length).
    /// The client's token itself is never passed (DESIGN §3).
    pub(crate) fn child_spec(
        &self,
        principal: Option<&Principal>,
    ) -> Result<ChildSpec, ClaimEnvError> {
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
            max_queued_bytes: self.max_queued_bytes,
            max_pending_bytes: self.max_pending_bytes,
            metrics: self.metrics.child.clone(),
            sandbox: self.sandbox_spec(principal)?,
        })
    }
}
