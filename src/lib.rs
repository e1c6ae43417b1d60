//! mcp-auth-proxy: an authenticating reverse proxy in front of stdio MCP servers.
//!
//! The path of one message, top to bottom (DESIGN §1, §8; `docs/architecture.md` draws it hop
//! by hop). No module imports one above it.
//! - `drain`: [`serve`] — the listener, graceful drain, the idle reaper, key loading.
//! - `http`: the edge — router, access log and metrics, Origin/Host/CORS, forwarded headers —
//!   and the transports: `legacy_sse` (`/sse`, `/message`) and `streamable` (`/mcp`, session
//!   era and modern era, with its response engine).
//! - `auth`: bearer token → principal (JWT, JWK fit, JWKS cache, token cache), RFC 9728
//!   metadata. `policy`: the tool gate. `bridge`: 2026-07-28 requests served by legacy
//!   (`initialize`-based) children.
//! - `pool` and `server`: the children of modern traffic and shared sessions; each server's
//!   runtime and spawn recipe. `session`: sessions, the registry and its caps, the GET-stream
//!   replay buffer. `warm`: children spawned ahead.
//! - `mux`: id rewriting, routing of answers, request timeouts and child-exit errors — for
//!   every transport. `child`: one process — spawn, stdin, framing, stop.
//! - `protocol`: versions, error codes, header names, the one look at a JSON-RPC message.
//! - Leaves every layer may use: `config` (file, environment, validation), `error` (every
//!   error answer, mapped to HTTP in one place), `metrics` (Prometheus), `sync` (the lock
//!   helper), `budget` (the byte budget of what waits for a slow client).

mod audit;
mod auth;
mod bridge;
mod budget;
mod child;
pub mod config;
mod drain;
mod edge;
mod error;
mod http;
mod metrics;
mod mux;
mod policy;
mod pool;
mod protocol;
mod reload;
mod server;
mod session;
mod sync;
pub mod telemetry;
mod warm;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use child::sandbox::{HostSupport, host_support};
pub use drain::{STOP_BOUND, serve};
pub use error::StartError;
pub use http::AppState;
pub use metrics::JwksStats;
pub use pool::CRASH_LOOP_LIMIT;
pub use reload::{LogLevelHook, Reloader};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::SessionRegistry;

/// Installs the JWT crypto backend as the process default (exactly one must be active, or
/// the first verification panics; DEPENDENCIES.md).
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// Reads the TLS files of `[listen]` as the proxy would at start: each readable, the key
/// matching the certificate, the client CA usable (`check` and start, exit 64 naming the key).
pub fn check_tls(listen: &config::ListenConfig) -> Result<(), config::ConfigError> {
    edge::tls::check_files(listen)
}

/// Whether each server's `[servers.NAME.sandbox]` can be applied on this host (`check` and
/// start, exit 64 naming the key): what it will do, per sandboxed server.
pub fn check_sandboxes(config: &Config) -> Result<Vec<(String, String)>, config::ConfigError> {
    let mut out = Vec::new();
    for (name, server) in &config.servers {
        if let Some(sandbox) = &server.sandbox {
            let applied =
                child::sandbox::server_report(sandbox).map_err(|message| config::ConfigError {
                    key: format!("servers.{name}.sandbox"),
                    message: format!("cannot be applied on this host: {message}"),
                })?;
            out.push((name.clone(), applied));
        }
    }
    Ok(out)
}

/// Builds the shared state from a validated config, for a proxy reachable at `local_addr`.
pub fn build_state(
    config: Config,
    local_addr: std::net::SocketAddr,
    env: &[(String, String)],
) -> Result<Arc<AppState>, StartError> {
    build_state_from(config, local_addr, env, String::new())
}

/// As [`build_state`], for a config read from a file whose SHA-256 prefix is `sha256`
/// (`/readyz` and the reload log name it).
fn build_state_from(
    config: Config,
    local_addr: std::net::SocketAddr,
    env: &[(String, String)],
    sha256: String,
) -> Result<Arc<AppState>, StartError> {
    install_crypto_provider();
    let public_url = match &config.http.public_url {
        Some(url) => config::parse_public_url(url)?,
        None => config.default_public_url(local_addr),
    };
    let metrics = Metrics::new(config.servers.keys().map(String::as_str));
    let mut live = reload::build_live(config, &public_url, env, &metrics, None, 1, sha256)?;
    let config = live.config.clone();
    let sessions = SessionRegistry::new(
        config.sessions.max_sessions,
        config.sessions.max_sessions_per_principal,
    );
    let shutdown = CancellationToken::new();
    live.keys_stop = shutdown.child_token();
    let (lines, dropped) = metrics.audit();
    let audit =
        audit::Audit::start(&config.audit, lines, dropped, shutdown.clone()).map_err(|e| {
            StartError::Config(config::ConfigError {
                key: "audit.path".into(),
                message: format!("cannot open `{}` for appending: {e}", config.audit.path),
            })
        })?;
    let state = AppState {
        live: arc_swap::ArcSwap::from_pointee(live),
        public_url,
        sessions: Arc::new(sessions),
        tracker: TaskTracker::new(),
        shutdown,
        draining: CancellationToken::new(),
        metrics: Arc::new(metrics),
        audit,
        telemetry: config.telemetry.enabled(),
        spawned: Default::default(),
        pool: Default::default(),
    };
    for server in state.live().servers.values() {
        reload::create_warm_pool(&state, server);
    }
    Ok(Arc::new(state))
}

/// Runs the proxy on an already bound listener until `shutdown` resolves, then drains (see
/// [`serve`]).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    if config.servers.values().any(|s| s.sandbox.is_some()) {
        let host = host_support();
        tracing::info!(landlock = %host.landlock, cgroups = %host.cgroups, "children are contained");
    }
    let state = build_state(config, listener.local_addr()?, &env)?;
    serve(state, listener, shutdown).await
}

/// As [`run`], for a config read from a file: SIGHUP reloads it (see [`Reloader`]).
pub async fn run_reloadable(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloader: Reloader,
) -> Result<(), StartError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let sha256 = reloader.file_sha256();
    let state = build_state_from(config, listener.local_addr()?, &env, sha256)?;
    drain::serve_with(state, listener, shutdown, Some(reloader)).await
}

/// What the micro-benches (`benches/hot_path.rs`) measure, through the production code (not an
/// API).
#[doc(hidden)]
pub mod bench {
    pub use crate::auth::Authenticator;
    use crate::protocol::jsonrpc;

    /// Classifies one child line (the per-line work of the multiplexer).
    pub fn probe_kind(line: &str) -> bool {
        jsonrpc::probe(line).map(|p| p.kind()).is_some()
    }

    /// Finds a line's raw id and splices `with` in, as the multiplexer does both ways.
    pub fn rewrite_id(line: &str, with: &str) -> Option<usize> {
        jsonrpc::probe(line)
            .and_then(|p| p.id)
            .and_then(|id| jsonrpc::splice(line, id.get(), with))
            .map(|s| s.len())
    }

    /// Validates a client body (the one look every transport takes).
    pub fn client_message(body: &[u8]) -> bool {
        jsonrpc::client_message(body).is_ok()
    }
}

/// What the `cargo fuzz` targets (`fuzz/`) drive, through the production code (not an API).
#[doc(hidden)]
pub mod fuzz;
