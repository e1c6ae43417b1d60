//! The configuration file's schema: strict serde structs, named defaults, and `Config::load`.
//! The keys are pinned by DESIGN §7; `proxy.toml.example` documents them. Environment overrides
//! live in `env.rs`, the checks that name the offending key in `validate.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use serde::Deserialize;

mod env;
mod sandbox;
mod sections;
mod telemetry;
mod validate;

pub use sandbox::{ComponentError, Network, SandboxConfig, encode_component, expand_cwd};
pub use sections::{AuditConfig, LimitsConfig, ListenConfig, LogConfig, LogFormat, RateLimits};
pub use telemetry::{DEFAULT_SERVICE_NAME, TelemetryConfig};
pub use validate::parse_public_url;

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_SSE_KEEPALIVE_SECS: u64 = 15;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;
pub const DEFAULT_JWKS_MIN_REFETCH_SECS: u64 = 10;
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
pub const DEFAULT_MAX_SESSIONS_PER_PRINCIPAL: usize = 16;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 1800;
/// Bytes that may wait for one child's stdin (issue 13: memory bounded in bytes).
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of a child's output that may wait for one session's clients (issue 13).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of the GET stream's replay buffer (events kept for `Last-Event-ID`), per session.
pub const DEFAULT_REPLAY_BUFFER_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `[limits]` before authentication (issue 13), in the spirit of nginx's and HAProxy's.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT_SECS: u64 = 120;
/// HMAC keys shorter than the hash output weaken the MAC (RFC 7518 §3.2); we refuse them.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The prefix of environment overrides: `MCP_PROXY__LISTEN__ADDR=…`.
pub const ENV_PREFIX: &str = "MCP_PROXY";

/// A configuration error: the dotted key it concerns and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("config error at `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: ListenConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub sessions: SessionsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL clients use to reach the proxy; default `http://<listen.addr>`.
    pub public_url: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub trust_forwarded_headers: bool,
    pub max_body_bytes: usize,
    pub sse_keepalive_secs: u64,
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            trust_forwarded_headers: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            sse_keepalive_secs: DEFAULT_SSE_KEEPALIVE_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted `aud` values; empty means the proxy's own resource URLs (no token passthrough).
    pub audiences: Vec<String>,
    pub leeway_secs: u64,
    pub required_scopes: Vec<String>,
    pub close_streams_on_expiry: bool,
    pub issuers: Vec<IssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            audiences: Vec::new(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            required_scopes: Vec::new(),
            close_streams_on_expiry: true,
            issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    #[serde(default)]
    pub discovery: bool,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    #[serde(default = "default_jwks_min_refetch_secs")]
    pub jwks_min_refetch_secs: u64,
    /// The name of the environment variable holding the HMAC secret (never the secret itself).
    #[serde(default)]
    pub secret_env: Option<String>,
}

fn default_jwks_refresh_secs() -> u64 {
    DEFAULT_JWKS_REFRESH_SECS
}
fn default_jwks_min_refetch_secs() -> u64 {
    DEFAULT_JWKS_MIN_REFETCH_SECS
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    pub max_sessions: usize,
    pub max_sessions_per_principal: usize,
    pub idle_timeout_secs: u64,
    /// Bytes that may wait for one child's stdin; a message beyond them is refused (503).
    pub max_queued_bytes: usize,
    /// Bytes of child output that may wait for one session's clients, all its streams
    /// together (the legacy SSE stream, POST response streams, the GET stream). Per session
    /// for sessions that have their child to themselves and for every session-era session;
    /// per child for 2026-07-28 requests, which have no session (the per-principal child's,
    /// or the shared child's). A stream that falls this far behind ends (a legacy SSE
    /// stream: the child waits for it, at most 10 s, then the session ends). One message
    /// larger than this still passes when nothing else waits.
    pub max_pending_bytes: usize,
    /// Bytes of a session's GET-stream replay buffer (events kept for `Last-Event-ID`),
    /// besides its 256 events; the oldest go first.
    pub replay_buffer_bytes: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_principal: DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            replay_buffer_bytes: DEFAULT_REPLAY_BUFFER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChildScope {
    /// A fresh child per session (the default).
    #[default]
    Session,
    /// One child per `(iss, sub)`.
    Principal,
    /// One child for everyone.
    Shared,
}

/// Which protocol era a server's children speak (spec 2026-07-28 versioning §Backward
/// Compatibility); it decides whether modern requests are bridged (the era bridge, `src/bridge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// Probe the first child with `server/discover` and remember the answer (the default).
    #[default]
    Auto,
    /// An `initialize`-based server: the proxy bridges modern requests to it.
    Legacy,
    /// A 2026-07-28 server: modern requests pass through unchanged.
    Modern,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub child_scope: ChildScope,
    #[serde(default)]
    pub warm_pool: usize,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    #[serde(default)]
    pub env_from_claims: BTreeMap<String, String>,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    #[serde(default)]
    pub tool_rules: Vec<ToolRule>,
    #[serde(default)]
    pub era: Era,
    /// This server's rate limits, replacing `[limits]` for its endpoints.
    #[serde(default)]
    pub limits: Option<RateLimits>,
    /// What contains this server's children (absent: nothing, as before issue 15).
    #[serde(default)]
    pub sandbox: Option<SandboxConfig>,
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}
fn default_request_timeout_secs() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    pub tools: Vec<String>,
    pub require_scopes: Vec<String>,
}

impl Config {
    /// Reads the TOML file, applies `MCP_PROXY__SECTION__KEY` overrides, parses strictly and
    /// validates. Every failure names the key (or the file) it concerns.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env = std::env::vars().collect::<Vec<_>>();
        Self::load_with_env(path, env)
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        Self::from_text(&text, &env)
    }

    /// Parses TOML text plus environment overrides and validates, as [`Config::load`] does
    /// with the file's text.
    pub fn from_text(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let config = Self::parse(text, env)?;
        config.validate(env)?;
        Ok(config)
    }

    /// Parses TOML text plus environment overrides, without validation.
    pub fn parse(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        env::with_overrides(text, env)?
            .try_deserialize::<Config>()
            .map_err(|e| ConfigError::new(validate::error_key(&e), e.to_string()))
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.addr.parse().map_err(|_| {
            ConfigError::new(
                "listen.addr",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    self.listen.addr
                ),
            )
        })
    }

    /// `public_url` when it is not set: `https://` with TLS on the listener, else `http://`.
    pub fn default_public_url(&self, addr: impl std::fmt::Display) -> String {
        let scheme = if self.listen.tls() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// The name of the server mounted at the root routes: `default`, or the only one.
    pub fn root_server(&self) -> Option<&str> {
        if self.servers.contains_key("default") {
            Some("default")
        } else if self.servers.len() == 1 {
            self.servers.keys().next().map(String::as_str)
        } else {
            None
        }
    }
}

/// Parses an algorithm name as written in the config or a JWT header.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    use std::str::FromStr;
    Algorithm::from_str(name).ok()
}

pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The configuration every unit test starts from (also for the tests of other modules).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The HS256 secret of [`MINIMAL`]'s issuer `dev`.
    pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef";

    pub(crate) fn env() -> Vec<(String, String)> {
        vec![("MCP_PROXY_JWT_SECRET".to_owned(), SECRET.to_owned())]
    }

    pub(crate) const MINIMAL: &str = r#"
[[auth.issuers]]
issuer = "dev"
algorithms = ["HS256"]
secret_env = "MCP_PROXY_JWT_SECRET"

[servers.default]
command = "true"
"#;

    pub(crate) fn load(text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let c = Config::parse(text, env)?;
        c.validate(env)?;
        Ok(c)
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = load(MINIMAL, &env()).expect("valid");
        assert_eq!(c.listen.addr, DEFAULT_LISTEN_ADDR);
        assert_eq!(c.http.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.auth.leeway_secs, 60);
        assert!(c.auth.close_streams_on_expiry);
        assert_eq!(c.sessions.max_sessions_per_principal, 16);
        assert_eq!(c.sessions.max_pending_bytes, 8 << 20);
        assert_eq!(c.sessions.replay_buffer_bytes, 1 << 20);
        let s = &c.servers["default"];
        assert_eq!(s.child_scope, ChildScope::Session);
        assert_eq!(s.era, Era::Auto);
        assert_eq!(s.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(c.root_server(), Some("default"));
    }
}
