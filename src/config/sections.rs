//! The sections of the file that concern the process around the servers: the listener,
//! `[limits]` (what holds before authentication, and the rate limits), logging and the audit log.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    DEFAULT_BODY_READ_TIMEOUT_SECS, DEFAULT_HEADER_READ_TIMEOUT_SECS,
    DEFAULT_IDLE_CONNECTION_TIMEOUT_SECS, DEFAULT_LISTEN_ADDR, DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
};

/// `[audit]`: one JSON line per MCP request and per refused request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// A file (opened for appending, reopened on SIGHUP), `stderr`, or empty: off.
    pub path: String,
    /// Tool arguments in the lines (never results). Off by default: arguments may hold
    /// personal data or secrets a user pasted.
    pub include_arguments: bool,
}

/// `[limits]`: what holds before authentication (connections, request heads and bodies) and
/// the rate limits (token buckets in memory, per instance; a rate of 0 turns one off, the
/// default). `[servers.NAME.limits]` replaces the rate limits for that server's endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// TCP connections at once; beyond it the proxy stops accepting (the kernel queues).
    pub max_connections: usize,
    /// The request head (and, with TLS, the handshake) must arrive within this.
    pub header_read_timeout_secs: u64,
    /// Request line and headers; beyond them the answer is 431.
    pub max_header_bytes: usize,
    /// A request body must arrive within this, else 408 and the connection closes.
    pub body_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_connection_timeout_secs: u64,
    pub principal_rate_per_sec: f64,
    pub principal_burst: u32,
    pub ip_rate_per_sec: f64,
    pub ip_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            body_read_timeout_secs: DEFAULT_BODY_READ_TIMEOUT_SECS,
            idle_connection_timeout_secs: DEFAULT_IDLE_CONNECTION_TIMEOUT_SECS,
            principal_rate_per_sec: 0.0,
            principal_burst: 0,
            ip_rate_per_sec: 0.0,
            ip_burst: 0,
        }
    }
}

impl LimitsConfig {
    /// The rate limits of `[limits]`, as `[servers.NAME.limits]` would state them.
    pub fn rates(&self) -> RateLimits {
        RateLimits {
            principal_rate_per_sec: self.principal_rate_per_sec,
            principal_burst: self.principal_burst,
            ip_rate_per_sec: self.ip_rate_per_sec,
            ip_burst: self.ip_burst,
        }
    }
}

/// Rate limits (`[servers.NAME.limits]`, and the rate keys of `[limits]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per second per `(iss, sub)`, all endpoints of all servers (or of this one).
    pub principal_rate_per_sec: f64,
    /// Bucket size; 0: twice the rate (at least 1).
    pub principal_burst: u32,
    /// Requests per second per client address, before authentication (the forwarded address
    /// when `http.trust_forwarded_headers` is on).
    pub ip_rate_per_sec: f64,
    pub ip_burst: u32,
}

/// Log output: one line per event on stderr.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    pub addr: String,
    /// With `tls_key`: this listener speaks HTTPS only (PEM chain, leaf first). An empty
    /// string is the same as absent, for all three paths.
    #[serde(deserialize_with = "optional_path")]
    pub tls_cert: Option<PathBuf>,
    /// PKCS#8, PKCS#1 or SEC1 PEM.
    #[serde(deserialize_with = "optional_path")]
    pub tls_key: Option<PathBuf>,
    /// Set: clients must present a certificate signed by this CA (mTLS).
    #[serde(deserialize_with = "optional_path")]
    pub tls_client_ca: Option<PathBuf>,
    /// HTTP/2: by ALPN over TLS, by prior knowledge (h2c) in clear.
    pub http2: bool,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_LISTEN_ADDR.to_owned(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            http2: true,
        }
    }
}

/// A path where `""` means "not set" (the documented way to leave a path key off in TOML or
/// in an environment override).
fn optional_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = Option::<PathBuf>::deserialize(d)?;
    Ok(path.filter(|p| !p.as_os_str().is_empty()))
}

impl ListenConfig {
    /// Whether the listener speaks TLS (both `tls_cert` and `tls_key` are set).
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}
