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

pub mod auth;
pub mod bridge;
pub mod child;
pub mod config;
pub mod jsonrpc;
pub mod mux;
pub mod policy;
pub mod pool;
pub mod router;
pub mod session;
pub mod state;
pub mod transport;
pub mod warm;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
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
    let audiences = if config.auth.audiences.is_empty() {
        router::default_audiences(&public_url, &config)
    } else {
        config.auth.audiences.clone()
    };
    let authenticator = Authenticator::new(&config.auth, audiences, env)?;
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
    let servers = config
        .servers
        .iter()
        .map(|(name, server)| {
            (
                name.clone(),
                ServerRuntime::new(name, server.clone(), env_remove.clone()),
            )
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
        spawned: Default::default(),
        pool: Default::default(),
        config: Arc::new(config),
    };
    create_warm_pools(&state);
    Ok(Arc::new(state))
}

/// Runs the proxy on an already bound listener until `shutdown` resolves, then stops every
/// session and waits (bounded by `shutdown_grace_secs`) for every child to be reaped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let state = build_state(config, listener.local_addr()?, &env)?;
    serve(state, listener, shutdown).await
}

/// Serves a prepared state (tests build the state themselves).
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
    let token = state.shutdown.clone();
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down");
        token.cancel();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    for session in state.sessions.all() {
        state.sessions.remove(&session.id);
    }
    state.pool.clear();
    for server in state.servers.values() {
        if let Some(warm) = server.warm.get() {
            warm.clear();
        }
    }
    state.tracker.close();
    let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
    if tokio::time::timeout(grace, state.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some children did not stop within shutdown_grace_secs");
    }
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
