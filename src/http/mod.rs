//! The HTTP edge: the router and its layers ([`router`], [`access`], [`origin`],
//! [`forwarded`]), the state every handler shares ([`AppState`]), and the transports — legacy
//! HTTP+SSE ([`legacy_sse`]) and Streamable HTTP in both eras ([`streamable`]) — which share
//! the prologue here: who is calling ([`Caller`]), may new work start ([`admit`]), and what a
//! new session needs ([`new_session`]).

pub(crate) mod access;
pub(crate) mod forwarded;
pub(crate) mod legacy_sse;
pub(crate) mod limits;
pub(crate) mod origin;
pub(crate) mod router;
pub(crate) mod sse;
mod state;
pub(crate) mod streamable;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

pub use state::AppState;
pub(crate) use state::Live;

use crate::auth::Principal;
use crate::auth::metadata::metadata_url;
use crate::child::ChildError;
use crate::error::Error;
use crate::mux::{ItemTx, Mux};
use crate::pool::PoolError;
use crate::protocol::jsonrpc::ClientMessage;
use crate::server::ServerRuntime;
use crate::session::{CapError, Slot};

/// Which server a route serves, and its base path (`""` or `/servers/NAME`).
#[derive(Clone)]
pub(crate) struct ServerRoute {
    pub(crate) server: Arc<ServerRuntime>,
    pub(crate) base: Arc<str>,
    /// A server a reload removed: its open sessions are served, new ones refused (404).
    pub(crate) retired: bool,
}

impl ServerRoute {
    pub(crate) fn name(&self) -> &str {
        &self.server.name
    }
}

/// An authenticated request for one server: what every MCP handler starts from. Extracting it
/// authenticates the request (the whole decision is [`crate::auth::Authenticator::authorize`]);
/// a refusal is logged, counted and answered with its challenge before the handler runs.
pub(crate) struct Caller {
    pub(crate) state: Arc<AppState>,
    /// The config generation this request is served by, from start to end.
    pub(crate) live: Arc<Live>,
    pub(crate) route: ServerRoute,
    pub(crate) principal: Principal,
    pub(crate) headers: HeaderMap,
    /// This HTTP request's id (`X-Request-Id`), for the audit log.
    pub(crate) request_id: Arc<str>,
    /// When the access layer received it (the audit log's `time` and `duration_ms`).
    pub(crate) started: std::time::Instant,
    /// The client's address (the trusted forwarded one, else the peer).
    pub(crate) client: Option<std::net::IpAddr>,
    /// The request's span (`[telemetry]` on), set by the access layer.
    pub(crate) span: Option<crate::telemetry::HttpSpan>,
}

impl Caller {
    /// The audit context of this request's JSON-RPC messages; `None` when the audit log is off
    /// (nothing is built then). `era`: `legacy`, `session` or `modern`.
    pub(crate) fn audit(
        &self,
        era: &'static str,
        session: Option<&str>,
    ) -> Option<crate::audit::Context> {
        let audit = self.state.audit.as_ref()?;
        Some(crate::audit::Context::new(
            audit,
            crate::audit::Who {
                started: self.started,
                request_id: &self.request_id,
                client: self.client,
                iss: Some(&self.principal.iss),
                sub: Some(&self.principal.sub),
                server: &self.route.server.name,
                era,
                session,
            },
        ))
    }

    /// What the spans of this request's JSON-RPC requests share; `None` when telemetry is off
    /// (nothing is built then). `era` as for [`Caller::audit`].
    pub(crate) fn trace(
        &self,
        era: &'static str,
        session: Option<&str>,
    ) -> Option<Arc<crate::telemetry::Context>> {
        let parent = self.span.clone()?;
        let protocol_version = self
            .headers
            .get(crate::protocol::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(Into::into);
        Some(Arc::new(crate::telemetry::Context {
            parent,
            server: self.route.server.name.clone(),
            sub: self.principal.sub.clone(),
            session: session.map(Into::into),
            protocol_version,
            modern: era == "modern",
        }))
    }

    /// The tool gate (`policy::gate`), with a refusal written to the audit log as `denied`
    /// and, with telemetry on, a span that ends with the refusal's error.
    pub(crate) fn gate(
        &self,
        audit: &Option<crate::audit::Context>,
        trace: &Option<Arc<crate::telemetry::Context>>,
        message: &ClientMessage,
    ) -> Result<Option<Arc<dyn crate::mux::Finish>>, String> {
        let gated = crate::policy::gate(&self.route.server.policy, message, &self.principal.scopes);
        if let (Err(answer), Some(first)) = (&gated, message.first()) {
            if let Some(audit) = audit {
                audit.denied(
                    first.method.as_deref(),
                    first.name.as_deref(),
                    message.text(first),
                    answer,
                );
            }
            if let Some(trace) = trace {
                let id = message.id(first).unwrap_or("null");
                trace.answered_by_proxy(first, id, message.text(first), answer);
            }
        }
        gated
    }
}

/// The id of an HTTP request (`X-Request-Id`) and when it came, set by the access layer.
#[derive(Debug, Clone)]
pub(crate) struct RequestId {
    pub(crate) id: Arc<str>,
    pub(crate) started: std::time::Instant,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let live = state.live();
        let route = live.route(parts.uri.path()).ok_or(Error::NoSuchServer)?;
        // The resource a challenge points at: `/mcp`, or `/sse` for both legacy endpoints.
        let endpoint = if parts.uri.path().ends_with("/mcp") {
            "/mcp"
        } else {
            "/sse"
        };
        // Limits before authentication: an address over its rate costs no token check.
        let address = limits::client_address(parts, live.config.http.trust_forwarded_headers);
        live.limits
            .check_ip(route.name(), address)
            .map_err(|l| rate_limited(state, l))?;
        let principal = authenticate(
            state,
            &live,
            &route,
            endpoint,
            &parts.headers,
            parts.uri.query(),
        )
        .await?;
        live.limits
            .check_principal(route.name(), &principal)
            .map_err(|l| rate_limited(state, l))?;
        let (request_id, started) = parts.extensions.get::<RequestId>().map_or_else(
            || (Arc::from(""), std::time::Instant::now()),
            |r| (r.id.clone(), r.started),
        );
        Ok(Caller {
            state: state.clone(),
            live,
            route,
            principal,
            // Taken, not copied (a copy is ~3,700 instructions): nothing after this extractor
            // reads the request's headers but through the caller.
            headers: std::mem::take(&mut parts.headers),
            request_id,
            started,
            client: address,
            span: parts
                .extensions
                .get::<crate::telemetry::HttpSpan>()
                .cloned(),
        })
    }
}

async fn authenticate(
    state: &AppState,
    live: &Live,
    route: &ServerRoute,
    endpoint: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Principal, Error> {
    let result = live.auth.authorize(route.name(), headers, query).await;
    result.map_err(|e| {
        tracing::info!(reason = e.reason(), detail = %e, server = %route.name(), "request refused");
        state.metrics.auth_failure(e.reason());
        // Built only for a refusal: a granted request does not pay for the URL.
        let resource_metadata = metadata_url(
            &state.public_url_for(live, headers),
            &format!("{}{endpoint}", route.base),
        );
        let scope = live.auth.required_scope(route.name());
        Error::Auth(Box::new(e.challenge(resource_metadata, scope)))
    })
}

/// A request over a rate limit, counted: 429 with `Retry-After`, nothing spawned.
fn rate_limited(state: &AppState, limited: limits::Limited) -> Error {
    let (scope, wait) = match limited {
        limits::Limited::Ip(wait) => ("ip", wait),
        limits::Limited::Principal(wait) => ("principal", wait),
    };
    tracing::debug!(scope, "request over the rate limit");
    state.metrics.rate_limited(scope);
    Error::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil() as u64,
    }
}

/// New work (a new session, or a sessionless request) is refused while draining: the load
/// balancer retries it elsewhere (DESIGN §5); and on a server a reload removed (404, as for
/// one never configured).
pub(crate) fn admit(c: &Caller) -> Result<(), Error> {
    if c.state.is_draining() {
        c.state.metrics.refused_draining();
        return Err(Error::Draining);
    }
    if c.route.retired {
        return Err(Error::NoSuchServer);
    }
    Ok(())
}

/// A refused cap, counted.
pub(crate) fn cap_reached(state: &AppState, e: CapError) -> Error {
    tracing::warn!(error = %e, "session refused");
    state.metrics.refused_cap(e.label());
    Error::Cap(match e {
        CapError::Global => "the proxy has reached max_sessions",
        CapError::PerPrincipal => "this principal has reached max_sessions_per_principal",
    })
}

/// What a pool failure tells the client.
pub(crate) fn pool_error(state: &AppState, route: &ServerRoute, e: PoolError) -> Error {
    match e {
        PoolError::Cap(e) => cap_reached(state, e),
        PoolError::Backoff {
            crashes,
            retry_after,
        } => {
            tracing::warn!(server = %route.name(), crashes, "child restart delayed");
            Error::Backoff {
                retry_after_secs: retry_after.as_secs(),
            }
        }
        PoolError::Claims(e) => {
            tracing::warn!(error = %e, "cannot build the child environment");
            Error::MissingClaim
        }
        PoolError::Spawn(e) => {
            tracing::error!(error = %e, server = %route.name(), "spawning the server failed");
            spawn_failed(e)
        }
    }
}

/// What a failed spawn tells the client: a sandbox that could not be applied says which step.
fn spawn_failed(e: ChildError) -> Error {
    match e {
        ChildError::Sandbox(reason) => Error::Sandbox(reason),
        ChildError::Spawn { .. } | ChildError::Gone | ChildError::Stalled | ChildError::Full => {
            Error::SpawnFailed
        }
    }
}

/// A new session's parts before it is registered: its counted slot (caps are checked before
/// anything is spawned, DESIGN §3), id, log span, and its child — a warm one when the server
/// keeps some.
pub(crate) struct NewSession {
    pub(crate) slot: Slot,
    pub(crate) id: String,
    pub(crate) span: tracing::Span,
    pub(crate) mux: Arc<Mux>,
}

/// Starts a session of the caller's server for the caller (both transports); `stream` is a
/// legacy SSE session's one stream.
pub(crate) fn new_session(c: &Caller, stream: Option<ItemTx>) -> Result<NewSession, Error> {
    let (state, route, principal) = (&c.state, &c.route, &c.principal);
    let slot = state
        .sessions
        .reserve(&principal.key())
        .map_err(|e| cap_reached(state, e))?;
    let spec = route.server.child_spec(Some(principal)).map_err(|e| {
        tracing::warn!(error = %e, "cannot build the child environment");
        Error::MissingClaim
    })?;
    let id = crate::session::new_session_id();
    let span =
        tracing::info_span!("session", id = %id, sub = %principal.sub, server = %route.name());
    state
        .spawned
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mux = match route.server.warm.get().and_then(|w| w.take()) {
        Some(w) => {
            tracing::info!(parent: &span, pid = w.child.pid(), "warm child handed to the session");
            Mux::adopt(w.child, w.output, &spec, &state.tracker, stream)
        }
        None => Mux::spawn(&spec, span.clone(), &state.tracker, stream).map_err(|e| {
            tracing::error!(parent: &span, error = %e, "spawning the server failed");
            spawn_failed(e)
        })?,
    };
    Ok(NewSession {
        slot,
        id,
        span,
        mux,
    })
}

/// When a stream of this caller must end: their token's `exp`, when
/// `auth.close_streams_on_expiry` is on.
pub(crate) fn stream_expiry(live: &Live, principal: &Principal) -> Option<Duration> {
    live.config.auth.close_streams_on_expiry.then(|| {
        Duration::from_secs(
            principal
                .exp
                .saturating_sub(jsonwebtoken::get_current_timestamp()),
        )
    })
}
