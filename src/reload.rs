//! Config reload on SIGHUP (DESIGN §7): the file (and the environment overrides) read again,
//! validated as `check` does, and applied as one new [`Live`] generation without dropping a
//! connection — or, when anything is wrong with it, nothing changes at all.
//!
//! - Issuers and key sources: the new JWKS are fetched before the new generation is used, so
//!   `/readyz` and every request stay on the old set until then; a key set that cannot be
//!   fetched refuses the reload.
//! - Servers: an unchanged server keeps its runtime (children, warm pool, probed era); a
//!   changed one serves new sessions and new pooled children with the new definition while
//!   open sessions keep their child; a removed one refuses new sessions (404) and its open
//!   sessions end within `shutdown_grace_secs`.
//! - What is bound at start (the listener, TLS paths, connection limits, `public_url`,
//!   `max_body_bytes`, the audit log, the log format, `[telemetry]`) keeps its old value, and the log line
//!   names each such key that changed: it needs a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{self, Config, ConfigError};
use crate::error::StartError;
use crate::http::{AppState, Live};
use crate::server::ServerRuntime;
use crate::warm::WarmPool;

/// How long a reload waits for a new issuer's key set before it gives up (the old config
/// stays in use).
const KEYS_BOUND: Duration = Duration::from_secs(30);

/// Sets the log filter (an `EnvFilter` directive); `Err` says why it does not parse.
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where a reload reads the config from, and what the command line overrides in it.
pub struct Reloader {
    path: PathBuf,
    listen_override: Option<String>,
    log_level: Option<LogLevelHook>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reloads from `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            listen_override: None,
            log_level: None,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// `--listen`, which replaces `listen.addr` in every reload too.
    pub fn listen_override(mut self, addr: Option<String>) -> Self {
        self.listen_override = addr;
        self
    }

    /// How a changed `log.level` takes effect (the binary's log subscriber).
    pub fn on_log_level(mut self, hook: LogLevelHook) -> Self {
        self.log_level = Some(hook);
        self
    }

    /// The SHA-256 (first 12 hex digits) of the file as it is now; empty when unreadable.
    pub fn file_sha256(&self) -> String {
        std::fs::read(&self.path).map_or_else(|_| String::new(), |b| sha256_prefix(&b))
    }

    /// Reads, validates and applies the file; every failure leaves the running config as it
    /// was, is logged once (naming the key, as `check` prints it) and counted.
    pub(crate) async fn reload(&self, state: &Arc<AppState>) {
        let _one = self.running.lock().await;
        let old = state.live();
        match self.prepare(state, &old).await {
            Ok(next) => apply(state, old, next, self.log_level.as_ref()),
            Err(e) => {
                state.metrics.config_reloaded(None);
                tracing::error!(
                    error = %e,
                    generation = old.generation,
                    config_sha256 = %old.sha256,
                    "config reload refused"
                );
            }
        }
    }

    /// The next generation, its key sets loaded, not yet in use.
    async fn prepare(&self, state: &AppState, old: &Live) -> Result<Live, ConfigError> {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| ConfigError::new(self.path.display().to_string(), e.to_string()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::new(self.path.display().to_string(), "not UTF-8"))?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut config = Config::from_text(&text, &env)?;
        if let Some(addr) = &self.listen_override {
            config.listen.addr = addr.clone();
        }
        crate::check_tls(&config.listen)?;
        // A sandbox this host cannot apply refuses the reload, as it refuses the start.
        crate::check_sandboxes(&config)?;
        let restart = keep_start_settings(&mut config, &old.config);
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "config reload: these keys changed but take effect only after a restart"
            );
        }
        let mut next = build_live(
            config,
            &state.public_url,
            &env,
            &state.metrics,
            Some(old),
            old.generation + 1,
            sha256_prefix(text.as_bytes()),
        )
        .map_err(|e| match e {
            StartError::Config(e) => e,
            other => ConfigError::new("auth", other.to_string()),
        })?;
        next.keys_stop = state.shutdown.child_token();
        for cache in next.auth.jwks_caches() {
            let url = cache.url().unwrap_or_default().to_owned();
            match tokio::time::timeout(KEYS_BOUND, cache.refresh()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(ConfigError::new(
                        "auth.issuers",
                        format!("cannot load the key set of `{url}`: {e}"),
                    ));
                }
                Err(_) => {
                    return Err(ConfigError::new(
                        "auth.issuers",
                        format!("the key set of `{url}` did not load within {KEYS_BOUND:?}"),
                    ));
                }
            }
        }
        Ok(next)
    }
}

/// Puts the new generation in use, then settles what the old one leaves behind.
fn apply(state: &Arc<AppState>, old: Arc<Live>, next: Live, log_level: Option<&LogLevelHook>) {
    let next = Arc::new(next);
    state.live.store(next.clone());
    old.keys_stop.cancel();
    start_key_loading(&next);
    let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (name, server) in &next.servers {
        match old.servers.get(name) {
            Some(was) if Arc::ptr_eq(was, server) => continue,
            Some(_) => changed.push(name.as_str()),
            None => added.push(name.as_str()),
        }
        start_warm_pool(state, server);
    }
    for (name, was) in &old.servers {
        if next.servers.get(name).is_some_and(|s| Arc::ptr_eq(s, was)) {
            continue;
        }
        if let Some(warm) = was.warm.get() {
            warm.clear();
        }
        state.pool.retire(was.id);
        if !next.servers.contains_key(name) {
            removed.push(name.as_str());
            end_sessions_after_grace(state, name.clone(), &next);
        }
    }
    let sessions = &next.config.sessions;
    state
        .sessions
        .set_caps(sessions.max_sessions, sessions.max_sessions_per_principal);
    if next.config.log.level != old.config.log.level
        && let Some(set) = log_level
        && let Err(e) = set(&next.config.log.level)
    {
        tracing::warn!(error = %e, "log.level not applied");
    }
    state.metrics.config_reloaded(Some(next.generation));
    tracing::info!(
        generation = next.generation,
        config_sha256 = %next.sha256,
        added = ?added,
        changed = ?changed,
        removed = ?removed,
        "config reloaded"
    );
}

/// A removed server's sessions may finish within `shutdown_grace_secs`; then the ones still
/// open end (their children stop), and the server is forgotten — unless a reload brought it
/// back meanwhile.
fn end_sessions_after_grace(state: &Arc<AppState>, name: String, live: &Live) {
    let grace = Duration::from_secs(live.config.http.shutdown_grace_secs);
    let state = state.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(grace) => {}
        }
        if state.live().servers.contains_key(&name) {
            return;
        }
        let mut ended = 0;
        for session in state.sessions.all() {
            if session.server == name && state.sessions.remove(&session.id).is_some() {
                ended += 1;
            }
        }
        state.live.rcu(|live| {
            let mut live = Live::clone(live);
            live.retired.remove(&name);
            live
        });
        tracing::info!(server = %name, sessions = ended, "removed server: its last sessions ended");
    });
}

/// The keys bound at start keep their running value in `config`; returns the names of those
/// the file changed.
fn keep_start_settings(config: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if config.$($field).+ != running.$($field).+ {
                changed.push($name);
                config.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(listen.addr, "listen.addr");
    keep!(listen.tls_cert, "listen.tls_cert");
    keep!(listen.tls_key, "listen.tls_key");
    keep!(listen.tls_client_ca, "listen.tls_client_ca");
    keep!(listen.http2, "listen.http2");
    keep!(http.public_url, "http.public_url");
    keep!(http.max_body_bytes, "http.max_body_bytes");
    keep!(limits.max_connections, "limits.max_connections");
    keep!(
        limits.header_read_timeout_secs,
        "limits.header_read_timeout_secs"
    );
    keep!(limits.max_header_bytes, "limits.max_header_bytes");
    keep!(
        limits.body_read_timeout_secs,
        "limits.body_read_timeout_secs"
    );
    keep!(
        limits.idle_connection_timeout_secs,
        "limits.idle_connection_timeout_secs"
    );
    keep!(audit.path, "audit.path");
    keep!(audit.include_arguments, "audit.include_arguments");
    keep!(log.format, "log.format");
    keep!(telemetry.otlp_endpoint, "telemetry.otlp_endpoint");
    keep!(telemetry.service_name, "telemetry.service_name");
    keep!(telemetry.sample_ratio, "telemetry.sample_ratio");
    changed
}

/// One generation built from a validated config: the authenticator, each server's runtime
/// (the running one when its definition is unchanged), the rate limiters (the running ones
/// when the rates are unchanged) and the Origin policy. Its key sets are not loaded yet.
pub(crate) fn build_live(
    config: Config,
    public_url: &str,
    env: &[(String, String)],
    metrics: &crate::metrics::Metrics,
    prev: Option<&Live>,
    generation: u64,
    sha256: String,
) -> Result<Live, StartError> {
    let auth = Authenticator::new(&config, public_url, env)
        .map_err(|e| StartError::Auth(e.to_string()))?;
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
    let servers: HashMap<String, Arc<ServerRuntime>> = config
        .servers
        .iter()
        .map(|(name, server)| {
            let running = prev
                .and_then(|p| p.servers.get(name))
                .filter(|r| r.same_definition(server, &env_remove, &config.sessions));
            let runtime = match running {
                Some(r) => r.clone(),
                None => Arc::new(ServerRuntime::new(
                    name,
                    server.clone(),
                    env_remove.clone(),
                    &config.sessions,
                    metrics.server(name),
                )),
            };
            (name.clone(), runtime)
        })
        .collect();
    // Removed servers whose sessions may still finish.
    let mut retired: HashMap<String, Arc<ServerRuntime>> = HashMap::new();
    if let Some(prev) = prev {
        for (name, runtime) in prev.servers.iter().chain(&prev.retired) {
            if !servers.contains_key(name) {
                retired
                    .entry(name.clone())
                    .or_insert_with(|| runtime.clone());
            }
        }
    }
    let limits = match prev {
        Some(p) if same_rates(&p.config, &config) => p.limits.clone(),
        _ => Arc::new(crate::http::limits::Limits::new(&config)),
    };
    let origins = Arc::new(crate::http::origin::OriginPolicy::new(
        &config.http,
        public_url,
    ));
    Ok(Live {
        generation,
        sha256,
        auth: Arc::new(auth),
        servers,
        retired,
        limits,
        origins,
        keys_stop: CancellationToken::new(),
        config: Arc::new(config),
    })
}

/// Whether two configs state the same rate limits (then the buckets carry over).
fn same_rates(a: &Config, b: &Config) -> bool {
    a.limits.rates() == b.limits.rates()
        && a.servers.len() == b.servers.len()
        && a.servers
            .iter()
            .all(|(name, s)| b.servers.get(name).is_some_and(|t| t.limits == s.limits))
}

/// Starts one task per JWKS issuer of `live` that keeps its keys fresh until the generation is
/// replaced (the first fetch retried until it succeeds; readiness waits for every issuer).
pub(crate) fn start_key_loading(live: &Live) {
    for cache in live.auth.jwks_caches() {
        tokio::spawn(cache.maintain(live.keys_stop.clone()));
    }
}

/// Creates the warm pool of a server that has `warm_pool > 0`, if it has none yet (filled by
/// [`fill_warm_pool`]).
pub(crate) fn create_warm_pool(state: &AppState, server: &ServerRuntime) {
    if server.config.warm_pool == 0 {
        return;
    }
    let Ok(spec) = server.child_spec(None) else {
        return;
    };
    server.warm.get_or_init(|| {
        WarmPool::new(
            &server.name,
            server.config.warm_pool,
            spec,
            state.tracker.clone(),
            state.shutdown.clone(),
        )
    });
}

/// Spawns a server's warm children, if it keeps some.
pub(crate) fn fill_warm_pool(server: &ServerRuntime) {
    if let Some(pool) = server.warm.get() {
        pool.refill();
    }
}

fn start_warm_pool(state: &AppState, server: &ServerRuntime) {
    create_warm_pool(state, server);
    fill_warm_pool(server);
}

/// The first 12 hex digits of the SHA-256 of `bytes`.
fn sha256_prefix(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
