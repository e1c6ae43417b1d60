//! The configuration file: strict serde structs, named defaults, and one `validate` pass that
//! names the offending key. The keys are pinned by DESIGN §7; `proxy.toml.example` documents them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use url::Url;

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
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_LOG_LEVEL: &str = "info";
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
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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
    pub servers: BTreeMap<String, ServerConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

/// Log output: one line per event on stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (`--log-format`/`MCP_PROXY_LOG_FORMAT` override it).
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,access=warn`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: DEFAULT_LOG_LEVEL.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    pub addr: String,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_LISTEN_ADDR.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    pub max_sessions: usize,
    pub max_sessions_per_principal: usize,
    pub idle_timeout_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_principal: DEFAULT_MAX_SESSIONS_PER_PRINCIPAL,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
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
/// Compatibility); it decides whether modern requests are bridged (see [`crate::bridge`]).
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

#[derive(Debug, Clone, Deserialize)]
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
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}
fn default_request_timeout_secs() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    pub tools: Vec<String>,
    pub require_scopes: Vec<String>,
}

/// Keys whose environment override is a list (comma-separated).
const LIST_KEYS: &[&str] = &[
    "http.allowed_origins",
    "http.allowed_hosts",
    "auth.audiences",
    "auth.required_scopes",
];

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
        let config = Self::parse(&text, &env)?;
        config.validate(&env)?;
        Ok(config)
    }

    /// Parses TOML text plus environment overrides, without validation.
    pub fn parse(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        // Only our prefixed variables are overrides; `MCP_PROXY_JWT_SECRET` (single underscore)
        // and `MCP_PROXY_CONFIG` are not.
        let overrides: std::collections::HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .cloned()
            .collect();
        let mut environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(overrides));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .map_err(|e| ConfigError::new("(file)", e.to_string()))?;
        raw.try_deserialize::<Config>()
            .map_err(|e| ConfigError::new(error_key(&e), e.to_string()))
    }

    /// Rejects values and combinations that cannot work, naming the key.
    pub fn validate(&self, env: &[(String, String)]) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(url) = &self.http.public_url {
            parse_public_url(url)?;
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::new("http.max_body_bytes", "must be > 0"));
        }
        if self.http.sse_keepalive_secs == 0 {
            return Err(ConfigError::new("http.sse_keepalive_secs", "must be > 0"));
        }
        for (i, host) in self.http.allowed_hosts.iter().enumerate() {
            let ok = !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
                });
            if !ok {
                return Err(ConfigError::new(
                    format!("http.allowed_hosts[{i}]"),
                    format!("`{host}` is not a host name like mcp.example.com or localhost:8080"),
                ));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "`{}` is not a filter like `info` or `info,access=warn`",
                    self.log.level
                ),
            ));
        }
        for (i, origin) in self.http.allowed_origins.iter().enumerate() {
            if origin != "*" && Url::parse(origin).is_err() {
                return Err(ConfigError::new(
                    format!("http.allowed_origins[{i}]"),
                    format!("`{origin}` is not an origin like https://app.example.com"),
                ));
            }
        }
        self.validate_auth(env)?;
        self.validate_sessions()?;
        self.validate_servers()
    }

    fn validate_auth(&self, env: &[(String, String)]) -> Result<(), ConfigError> {
        if self.auth.issuers.is_empty() {
            return Err(ConfigError::new(
                "auth.issuers",
                "at least one issuer is required (the proxy never serves unauthenticated requests)",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            let key = |k: &str| format!("auth.issuers[{i}].{k}");
            if issuer.issuer.trim().is_empty() {
                return Err(ConfigError::new(key("issuer"), "must not be empty"));
            }
            if !seen.insert(issuer.issuer.as_str()) {
                return Err(ConfigError::new(
                    key("issuer"),
                    format!("`{}` is listed twice", issuer.issuer),
                ));
            }
            if issuer.algorithms.is_empty() {
                return Err(ConfigError::new(
                    key("algorithms"),
                    "list the accepted algorithms explicitly, e.g. [\"RS256\"]",
                ));
            }
            let mut hmac = 0;
            for alg in &issuer.algorithms {
                match parse_algorithm(alg) {
                    Some(a) if is_hmac(a) => hmac += 1,
                    Some(_) => {}
                    None => {
                        return Err(ConfigError::new(
                            key("algorithms"),
                            format!(
                                "unsupported algorithm `{alg}` (supported: HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
                            ),
                        ));
                    }
                }
            }
            let jwks = issuer.discovery || issuer.jwks_url.is_some();
            if hmac > 0 && hmac != issuer.algorithms.len() {
                return Err(ConfigError::new(
                    key("algorithms"),
                    "an issuer is either HMAC (HS*) with secret_env or asymmetric with a JWKS; declare two issuers to mix",
                ));
            }
            if hmac > 0 {
                if jwks {
                    return Err(ConfigError::new(
                        key("jwks_url"),
                        "HS* algorithms take their key from secret_env, never from a JWKS",
                    ));
                }
                let Some(var) = &issuer.secret_env else {
                    return Err(ConfigError::new(
                        key("secret_env"),
                        "HS* algorithms need secret_env (the name of an environment variable holding the secret)",
                    ));
                };
                let value = env.iter().find(|(k, _)| k == var).map(|(_, v)| v);
                match value {
                    None => {
                        return Err(ConfigError::new(
                            key("secret_env"),
                            format!("environment variable `{var}` is not set"),
                        ));
                    }
                    Some(v) if v.len() < MIN_HMAC_SECRET_BYTES => {
                        return Err(ConfigError::new(
                            key("secret_env"),
                            format!(
                                "the secret in `{var}` is shorter than {MIN_HMAC_SECRET_BYTES} bytes"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            } else {
                if issuer.secret_env.is_some() {
                    return Err(ConfigError::new(
                        key("secret_env"),
                        "only HS* algorithms use a secret",
                    ));
                }
                match (&issuer.jwks_url, issuer.discovery) {
                    (Some(_), true) => {
                        return Err(ConfigError::new(
                            key("jwks_url"),
                            "set either jwks_url or discovery = true, not both",
                        ));
                    }
                    (None, false) => {
                        return Err(ConfigError::new(
                            key("jwks_url"),
                            "asymmetric algorithms need jwks_url or discovery = true",
                        ));
                    }
                    (Some(url), false) => {
                        parse_http_url(url).map_err(|m| ConfigError::new(key("jwks_url"), m))?;
                    }
                    (None, true) => {
                        parse_http_url(&issuer.issuer)
                            .map_err(|m| ConfigError::new(key("issuer"), m))?;
                    }
                }
                if issuer.jwks_refresh_secs == 0 {
                    return Err(ConfigError::new(key("jwks_refresh_secs"), "must be > 0"));
                }
            }
        }
        Ok(())
    }

    fn validate_sessions(&self) -> Result<(), ConfigError> {
        if self.sessions.max_sessions == 0 {
            return Err(ConfigError::new("sessions.max_sessions", "must be > 0"));
        }
        if self.sessions.max_sessions_per_principal == 0 {
            return Err(ConfigError::new(
                "sessions.max_sessions_per_principal",
                "must be > 0",
            ));
        }
        if self.sessions.idle_timeout_secs == 0 {
            return Err(ConfigError::new(
                "sessions.idle_timeout_secs",
                "must be > 0",
            ));
        }
        Ok(())
    }

    fn validate_servers(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() {
            return Err(ConfigError::new(
                "servers",
                "at least one server is required, e.g. [servers.default]",
            ));
        }
        for (name, server) in &self.servers {
            let key = |k: &str| format!("servers.{name}.{k}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::new(
                    format!("servers.{name}"),
                    "server names may contain only ASCII letters, digits, '-' and '_'",
                ));
            }
            if server.command.trim().is_empty() {
                return Err(ConfigError::new(key("command"), "must not be empty"));
            }
            for k in server.env.keys().chain(server.env_from_claims.keys()) {
                if !is_env_name(k) {
                    return Err(ConfigError::new(
                        key("env"),
                        format!("`{k}` is not a valid environment variable name"),
                    ));
                }
            }
            if !server.env_from_claims.is_empty() && server.child_scope == ChildScope::Shared {
                return Err(ConfigError::new(
                    key("env_from_claims"),
                    "a shared child serves everyone: it cannot carry one caller's claims",
                ));
            }
            if server.warm_pool > 0 && !server.env_from_claims.is_empty() {
                return Err(ConfigError::new(
                    key("warm_pool"),
                    "a warm child is spawned before its caller is known: it cannot carry env_from_claims",
                ));
            }
            if server.warm_pool > 0 && server.child_scope != ChildScope::Session {
                return Err(ConfigError::new(
                    key("warm_pool"),
                    "the warm pool serves child_scope = \"session\" only",
                ));
            }
            if server.warm_pool > 64 {
                return Err(ConfigError::new(key("warm_pool"), "must be <= 64"));
            }
            if server.max_line_bytes < 1024 {
                return Err(ConfigError::new(key("max_line_bytes"), "must be >= 1024"));
            }
            if server.request_timeout_secs == 0 {
                return Err(ConfigError::new(key("request_timeout_secs"), "must be > 0"));
            }
            for (i, rule) in server.tool_rules.iter().enumerate() {
                if rule.tools.is_empty() {
                    return Err(ConfigError::new(
                        format!("servers.{name}.tool_rules[{i}].tools"),
                        "must list at least one tool name or pattern",
                    ));
                }
            }
        }
        Ok(())
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

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_http_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must be an http(s) URL"));
    }
    Ok(parsed)
}

/// Parses `http.public_url`: http(s), no query or fragment, trailing slash removed.
pub fn parse_public_url(url: &str) -> Result<String, ConfigError> {
    let parsed = parse_http_url(url).map_err(|m| ConfigError::new("http.public_url", m))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::new(
            "http.public_url",
            "must not have a query or fragment",
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Best effort to name the key in a serde error from the `config` crate.
fn error_key(e: &config::ConfigError) -> String {
    let text = e.to_string();
    // The crate reports e.g. "unknown field `foo`, expected … for key `auth.issuers[0]`".
    if let Some(pos) = text.rfind("for key `") {
        let rest = &text[pos + "for key `".len()..];
        if let Some(end) = rest.find('`') {
            let parent = &rest[..end];
            if let Some(field) = backticked_after(&text, "unknown field `") {
                return format!("{parent}.{field}");
            }
            return parent.to_owned();
        }
    }
    if let Some(field) = backticked_after(&text, "unknown field `") {
        return field;
    }
    if let Some(field) = backticked_after(&text, "missing field `") {
        return field;
    }
    "(file)".to_owned()
}

fn backticked_after(text: &str, marker: &str) -> Option<String> {
    let pos = text.find(marker)?;
    let rest = &text[pos + marker.len()..];
    rest.find('`').map(|end| rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn env() -> Vec<(String, String)> {
        vec![("MCP_PROXY_JWT_SECRET".to_owned(), SECRET.to_owned())]
    }

    const MINIMAL: &str = r#"
[[auth.issuers]]
issuer = "dev"
algorithms = ["HS256"]
secret_env = "MCP_PROXY_JWT_SECRET"

[servers.default]
command = "true"
"#;

    fn load(text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
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
        let s = &c.servers["default"];
        assert_eq!(s.child_scope, ChildScope::Session);
        assert_eq!(s.era, Era::Auto);
        assert_eq!(s.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(c.root_server(), Some("default"));
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let mut e = env();
        e.push(("MCP_PROXY__LISTEN__ADDR".into(), "127.0.0.1:9999".into()));
        e.push((
            "MCP_PROXY__SERVERS__DEFAULT__COMMAND".into(),
            "/bin/cat".into(),
        ));
        e.push((
            "MCP_PROXY__AUTH__REQUIRED_SCOPES".into(),
            "mcp:read,mcp:write".into(),
        ));
        e.push(("MCP_PROXY__SESSIONS__MAX_SESSIONS".into(), "7".into()));
        let c = load(MINIMAL, &e).expect("valid");
        assert_eq!(c.listen.addr, "127.0.0.1:9999");
        assert_eq!(c.servers["default"].command, "/bin/cat");
        assert_eq!(c.auth.required_scopes, vec!["mcp:read", "mcp:write"]);
        assert_eq!(c.sessions.max_sessions, 7);
    }

    #[test]
    fn broken_configs_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("[listen]\naddr = \"nonsense\"\n", "listen.addr"),
            ("[listen]\nbogus = 1\n", "bogus"),
            ("[http]\npublic_url = \"ftp://x\"\n", "http.public_url"),
            ("[sessions]\nmax_sessions = 0\n", "sessions.max_sessions"),
            ("[servers.default]\nchild_scope = \"nope\"\n", "child_scope"),
            ("[servers.default]\nera = \"2025\"\n", "era"),
        ];
        for (extra, key) in cases {
            // Put the extra section after the minimal one; duplicate tables are a TOML error,
            // so the server cases replace the minimal server.
            let text = if extra.contains("[servers.default]") {
                format!(
                    "[[auth.issuers]]\nissuer = \"dev\"\nalgorithms = [\"HS256\"]\nsecret_env = \"MCP_PROXY_JWT_SECRET\"\n{extra}command = \"true\"\n"
                )
            } else {
                format!("{extra}\n{MINIMAL}")
            };
            let err = load(&text, &env()).expect_err(extra);
            assert!(
                err.key.contains(key),
                "{extra:?}: expected key {key}, got {err}"
            );
        }
    }

    #[test]
    fn issuer_rules() {
        let cases: &[(&str, &str)] = &[
            (
                "issuer = \"a\"\nalgorithms = [\"HS256\"]\nsecret_env = \"UNSET_VAR\"",
                "secret_env",
            ),
            (
                "issuer = \"a\"\nalgorithms = [\"HS256\"]\nsecret_env = \"SHORT\"",
                "secret_env",
            ),
            ("issuer = \"a\"\nalgorithms = [\"RS256\"]", "jwks_url"),
            (
                "issuer = \"a\"\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"http://x/jwks\"",
                "algorithms",
            ),
            (
                "issuer = \"a\"\nalgorithms = [\"none\"]\njwks_url = \"http://x/jwks\"",
                "algorithms",
            ),
            (
                "issuer = \"a\"\nalgorithms = [\"HS256\"]\nsecret_env = \"MCP_PROXY_JWT_SECRET\"\njwks_url = \"http://x\"",
                "jwks_url",
            ),
            (
                "issuer = \"a\"\nalgorithms = []\njwks_url = \"http://x\"",
                "algorithms",
            ),
        ];
        let mut e = env();
        e.push(("SHORT".into(), "tooshort".into()));
        for (issuer, key) in cases {
            let text =
                format!("[[auth.issuers]]\n{issuer}\n[servers.default]\ncommand = \"true\"\n");
            let err = load(&text, &e).expect_err(issuer);
            assert!(err.key.ends_with(key), "{issuer:?}: got {err}");
        }
        let none = "[servers.default]\ncommand = \"true\"\n";
        assert_eq!(load(none, &e).expect_err("no issuer").key, "auth.issuers");
    }
}
