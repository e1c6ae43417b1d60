//! mcp-auth-proxy: an authenticating reverse proxy in front of stdio MCP servers.
//!
//! Module map (the path of one message, DESIGN §1):
//! - [`config`]: the TOML file, environment overrides, validation.
//! - [`auth`]: bearer token → [`auth::Principal`] (JWT, JWK fit, JWKS cache, RFC 9728 metadata).
//! - [`router`]: routes and the shared [`state::AppState`].
//! - [`transport`]: legacy HTTP+SSE (`/sse`, `/message`).
//! - [`session`]: the registry of sessions and their owners; caps.
//! - [`child`]: one stdio server process as an actor.
//! - [`bridge`]: the era bridge — 2026-07-28 requests served by legacy (`initialize`) children.
//! - [`jsonrpc`]: message classification and framing.
//! - [`origin`], [`forwarded`], [`access`]: Origin/Host/CORS, the address the client used,
//!   the access log; [`metrics`]: Prometheus; [`serve`]: graceful drain.

pub mod access;
pub mod auth;
pub mod bridge;
pub mod child;
pub mod config;
pub mod forwarded;
pub mod jsonrpc;
pub mod metrics;
pub mod mux;
pub mod origin;
pub mod policy;
pub mod pool;
pub mod router;
pub mod session;
pub mod state;
pub mod transport;
pub mod warm;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::SessionRegistry;
use crate::state::{AppState, ServerRuntime};

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Auth(#[from] auth::jwt::AuthSetupError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Installs the JWT crypto backend as the process default (exactly one must be active, or
/// the first verification panics; DEPENDENCIES.md).
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// Builds the shared state from a validated config, for a proxy reachable at `local_addr`.
pub fn build_state(
    config: Config,
    local_addr: std::net::SocketAddr,
    env: &[(String, String)],
) -> Result<Arc<AppState>, StartError> {
    install_crypto_provider();
    let public_url = match &config.http.public_url {
        Some(url) => config::parse_public_url(url)?,
        None => format!("http://{local_addr}"),
    };
    let authenticator = Authenticator::new(&config, &public_url, env)?;
    // The child must not inherit the proxy's secrets or settings.
    let mut env_remove: Vec<String> = env
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(config::ENV_PREFIX))
        .cloned()
        .collect();
    env_remove.extend(
        config
            .auth
            .issuers
            .iter()
            .filter_map(|i| i.secret_env.clone()),
    );
    let metrics = Metrics::new(config.servers.keys().map(String::as_str));
    let servers = config
        .servers
        .iter()
        .map(|(name, server)| {
            let runtime = ServerRuntime::new(name, server.clone(), env_remove.clone())
                .with_metrics(metrics.server(name).cloned().unwrap_or_default());
            (name.clone(), runtime)
        })
        .collect();
    let sessions = SessionRegistry::new(
        config.sessions.max_sessions,
        config.sessions.max_sessions_per_principal,
    );
    let state = AppState {
        public_url,
        auth: Arc::new(authenticator),
        sessions: Arc::new(sessions),
        servers,
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        draining: CancellationToken::new(),
        metrics: Arc::new(metrics),
        spawned: Default::default(),
        pool: Default::default(),
        config: Arc::new(config),
    };
    create_warm_pools(&state);
    Ok(Arc::new(state))
}

/// After the drain, how long stopping the children (stdin close, SIGTERM, SIGKILL: about
/// 2.5 s per child, in parallel) and finishing in-flight HTTP exchanges may take.
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// Runs the proxy on an already bound listener until `shutdown` resolves, then drains (see
/// [`serve`]).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let state = build_state(config, listener.local_addr()?, &env)?;
    serve(state, listener, shutdown).await
}

/// Serves a prepared state (tests build the state themselves) until `shutdown` resolves, then
/// drains (DESIGN §5):
/// 1. `draining`: `/readyz` answers 503 and new sessions (and new sessionless requests) get
///    503 at once; the listener stays open, so existing sessions (whose POSTs may come on new
///    connections) keep working;
/// 2. when the last session has ended the listener closes and the exchanges still in flight
///    may finish — all within `shutdown_grace_secs` from the signal;
/// 3. then every remaining child is stopped — its in-flight requests are answered with a
///    JSON-RPC error and its stream ends — and reaped; streams still open are cancelled
///    (bounded by [`STOP_BOUND`]).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    tracing::info!(addr = %listener.local_addr()?, public_url = %state.public_url, "listening");
    start_key_loading(&state);
    start_idle_reaper(&state);
    start_warm_pools(&state);
    let app = router::router(state.clone());
    // Nagle's algorithm holds a small SSE event back until the previous one is acknowledged,
    // and the client delays that ACK (up to 40 ms on Linux): with several answers in flight on
    // one stream, p99 was 44 ms. Every write here is a complete message; send it now.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let close_listener = CancellationToken::new();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(close_listener.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        _ = shutdown => {}
        // Not expected: axum::serve returns only after the graceful shutdown asked for below.
        result = &mut server => {
            state.shutdown.cancel();
            return match result {
                Ok(r) => r.map_err(StartError::Io),
                Err(e) => Err(StartError::Io(std::io::Error::other(e))),
            };
        }
    }
    let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        sessions = state.sessions.len(),
        grace_secs = grace.as_secs(),
        "draining: new sessions refused, existing sessions may finish"
    );
    state.draining.cancel();
    if tokio::time::timeout_at(deadline, state.sessions.wait_empty())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = state.sessions.len(),
            "shutdown_grace_secs passed; stopping the remaining sessions"
        );
    }
    // No session needs the listener any more. Closing it lets the exchanges in flight (a
    // sessionless request on a pooled child) finish, within what is left of the grace.
    close_listener.cancel();
    let mut served = tokio::time::timeout_at(deadline, &mut server).await.is_ok();
    if !served {
        tracing::warn!(
            in_flight = state.pool.in_flight(),
            "shutdown_grace_secs passed with requests in flight; stopping their children"
        );
    }
    for session in state.sessions.all() {
        state.sessions.remove(&session.id);
    }
    state.pool.stop_all();
    for server in state.servers.values() {
        if let Some(warm) = server.warm.get() {
            warm.clear();
        }
    }
    state.tracker.close();
    let stopped = tokio::time::timeout(STOP_BOUND, async {
        state.tracker.wait().await;
        state.shutdown.cancel();
        if !served {
            let _ = (&mut server).await;
            served = true;
        }
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("children or connections did not stop in time");
        state.shutdown.cancel();
        if !served {
            server.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Creates the warm pool of every server that has `warm_pool > 0` (filled by `serve`).
fn create_warm_pools(state: &AppState) {
    for server in state.servers.values() {
        if server.config.warm_pool == 0 {
            continue;
        }
        let Ok(spec) = server.child_spec(None) else {
            continue;
        };
        server.warm.get_or_init(|| {
            warm::WarmPool::new(
                &server.name,
                server.config.warm_pool,
                spec,
                state.tracker.clone(),
                state.shutdown.clone(),
            )
        });
    }
}

/// Spawns the `warm_pool` children of every server that has one.
fn start_warm_pools(state: &Arc<AppState>) {
    for server in state.servers.values() {
        if let Some(pool) = server.warm.get() {
            pool.refill();
        }
    }
}

/// Ends sessions and pool children idle for longer than `sessions.idle_timeout_secs` — also
/// legacy sessions whose stream is open but silent (a stream a client forgot holds a child).
fn start_idle_reaper(state: &Arc<AppState>) {
    let idle = Duration::from_secs(state.config.sessions.idle_timeout_secs);
    let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for session in state.sessions.all() {
                let busy = match &session.pipe {
                    session::Pipe::Mux { mux, .. } => mux.in_flight() > 0,
                    session::Pipe::Direct { .. } => false,
                };
                if !busy
                    && session.idle_for() >= idle
                    && state.sessions.remove(&session.id).is_some()
                {
                    tracing::info!(session = %session.id, "session idle for {}s; ended", idle.as_secs());
                }
            }
            let reaped = state.pool.reap_idle(idle);
            if reaped > 0 {
                tracing::info!(reaped, "idle children stopped");
            }
        }
    });
}

/// Starts one task per JWKS issuer that loads its keys (retrying until they load; readiness
/// waits for every issuer) and then keeps them fresh until shutdown.
fn start_key_loading(state: &Arc<AppState>) {
    for cache in state.auth.jwks_caches() {
        tokio::spawn(cache.maintain(state.shutdown.clone()));
    }
}
