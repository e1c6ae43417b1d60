//! The state every handler shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::ChildPool;
use crate::server::ServerRuntime;
use crate::session::SessionRegistry;

/// What a config reload replaces as one (SIGHUP, `crate::reload`): the config and everything
/// built from it. A request loads it once ([`AppState::live`]) and sees one generation
/// throughout, whatever reload happens meanwhile.
#[derive(Clone)]
pub(crate) struct Live {
    /// 1 at start, one more per applied reload.
    pub(crate) generation: u64,
    /// The first 12 hex digits of the config file's SHA-256 (empty for a config not read
    /// from a file, as in in-process tests).
    pub(crate) sha256: String,
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Arc<Authenticator>,
    /// The configured servers; a request names one by its path.
    pub(crate) servers: HashMap<String, Arc<ServerRuntime>>,
    /// Servers a reload removed whose sessions may still finish (within
    /// `shutdown_grace_secs`): requests of those sessions are served, new ones get 404.
    pub(crate) retired: HashMap<String, Arc<ServerRuntime>>,
    /// The rate limiters (`[limits]`); kept across a reload that leaves the rates as they are.
    pub(crate) limits: Arc<super::limits::Limits>,
    pub(crate) origins: Arc<super::origin::OriginPolicy>,
    /// Cancelled when this generation is replaced: its JWKS caches stop refreshing.
    pub(crate) keys_stop: CancellationToken,
}

impl Live {
    /// The server a request path names: `/servers/NAME/…`, else the root server; `None` for
    /// a name that is not configured (404). A server removed by a reload still serves the
    /// requests of its open sessions ([`super::ServerRoute::retired`]).
    pub(crate) fn route(&self, path: &str) -> Option<super::ServerRoute> {
        let (name, base) = match path.strip_prefix("/servers/") {
            Some(rest) => {
                let name = rest.split('/').next().unwrap_or_default();
                (name, &path[..path.len() - rest.len() + name.len()])
            }
            None => (self.config.root_server()?, ""),
        };
        let (server, retired) = match self.servers.get(name) {
            Some(s) => (s, false),
            None => (self.retired.get(name)?, true),
        };
        Some(super::ServerRoute {
            server: server.clone(),
            base: base.into(),
            retired,
        })
    }
}

/// What every handler shares: the live config and what is built from it, the sessions and
/// pool children, the metrics, and the shutdown and drain signals. Built by
/// [`crate::build_state`], served by [`crate::serve`].
pub struct AppState {
    /// The config generation in use (replaced whole by a reload).
    pub(crate) live: ArcSwap<Live>,
    /// `http.public_url`, or `http://<bound address>`; no trailing slash.
    pub(crate) public_url: String,
    pub(crate) sessions: Arc<SessionRegistry>,
    /// Every child actor runs on this tracker, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the proxy shuts down: every stream ends.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when draining starts (SIGTERM): `/readyz` answers 503 and new sessions are
    /// refused, while existing sessions go on until they end or `shutdown_grace_secs` passes.
    pub(crate) draining: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    /// The audit log (`[audit]`); `None` when off.
    pub(crate) audit: Option<Arc<crate::audit::Audit>>,
    /// Whether requests get spans (`[telemetry] otlp_endpoint` set at start, when the binary
    /// installs the exporter; a config read later does not change it).
    pub(crate) telemetry: bool,
    /// Children serving the modern era (per principal, or shared).
    pub(crate) pool: Arc<ChildPool>,
    /// Children spawned since start (tests assert that refused requests spawn nothing).
    pub(crate) spawned: AtomicU64,
}

impl AppState {
    /// The config generation in use, for the whole of one request.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// True once draining has started (new sessions are refused).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// The public base URL for this request: `public_url`, with the scheme and host taken
    /// from `X-Forwarded-Proto`/`X-Forwarded-Host` when `trust_forwarded_headers` is on.
    pub(crate) fn public_url_for(
        &self,
        live: &Live,
        headers: &http::HeaderMap,
    ) -> std::borrow::Cow<'_, str> {
        if !live.config.http.trust_forwarded_headers {
            return std::borrow::Cow::Borrowed(&self.public_url);
        }
        super::forwarded::public_url(&self.public_url, headers)
    }
}

/// What the integration tests read of a running proxy (not an API).
#[doc(hidden)]
impl AppState {
    /// Resolves when draining has started.
    pub async fn draining_started(&self) {
        self.draining.cancelled().await;
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The pid of each open session's child.
    pub fn session_pids(&self) -> Vec<u32> {
        self.sessions
            .all()
            .iter()
            .map(|s| s.mux.child().pid())
            .collect()
    }

    /// The owner (`sub`) and child pid of each open session.
    pub fn session_children(&self) -> Vec<(String, u32)> {
        self.sessions
            .all()
            .iter()
            .map(|s| (s.owner.sub.to_string(), s.mux.child().pid()))
            .collect()
    }

    /// A future that resolves when the child of the open session with `pid` is gone (looked
    /// up now, so it still resolves after the session has ended).
    pub fn session_child_exit(&self, pid: u32) -> impl Future<Output = ()> + use<> {
        let exited = self
            .sessions
            .all()
            .iter()
            .find(|s| s.mux.child().pid() == pid)
            .map(|s| s.mux.child().exited_token());
        async move {
            if let Some(exited) = exited {
                exited.cancelled().await;
            }
        }
    }

    /// Children of the pool (per principal, shared).
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Requests in flight across the pool's children.
    pub fn pool_in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// `server/discover` probes sent for `server`'s children.
    pub fn era_probes(&self, server: &str) -> u64 {
        self.live()
            .servers
            .get(server)
            .map_or(0, |s| s.era.probes())
    }

    /// Pids of `server`'s warm children ready now.
    pub fn warm_pids(&self, server: &str) -> Vec<u32> {
        self.live()
            .servers
            .get(server)
            .and_then(|s| s.warm.get())
            .map(|w| w.pids())
            .unwrap_or_default()
    }

    /// The child pid of the open session `id`.
    pub fn session_pid(&self, id: &str) -> Option<u32> {
        self.sessions
            .all()
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.mux.child().pid())
    }

    /// Children spawned since start.
    pub fn spawned(&self) -> u64 {
        self.spawned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Each JWKS issuer's cache counters, sorted by issuer.
    pub fn jwks_stats(&self) -> Vec<(String, crate::metrics::JwksStats)> {
        self.live().auth.jwks_stats()
    }

    /// Whether every JWKS issuer has its keys.
    pub fn keys_loaded(&self) -> bool {
        self.live().auth.keys_loaded()
    }
}
