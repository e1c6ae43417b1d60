//! The era bridge: serves stateless 2026-07-28 ("modern") requests from a legacy,
//! `initialize`-based stdio server, which by the spec's compatibility matrix cannot talk to a
//! modern client at all (spec 2026-07-28 versioning §Compatibility Matrix).
//!
//! Every child that serves modern traffic (the per-principal and shared children of the pool)
//! gets a [`ChildBridge`] before its first request:
//! - its era is probed with `server/discover` (spec 2026-07-28 stdio §Backward Compatibility),
//!   or taken from `era = "legacy" | "modern"`, and remembered per server ([`EraCache`]);
//! - a **modern** child gets modern requests unchanged;
//! - a **legacy** child gets the `initialize` / `notifications/initialized` handshake from the
//!   proxy (no client capabilities, so it has no reason to send server-initiated requests); the
//!   proxy then answers `server/discover` and `subscriptions/listen` itself, forwards the rest
//!   with ids and progress tokens rewritten by [`Mux`], adds what modern results require
//!   (`resultType`, `ttlMs`, `cacheScope`), and delivers the child's change notifications to
//!   the listen streams that asked for them.
//!
//! Server-initiated requests cannot reach a stateless client: from any pool child they are
//! answered with a JSON-RPC error (a `ping` with an empty result) and logged.
//!
//! The bridge returns data — answers as JSON-RPC lines, listen streams as streams of lines,
//! failures as [`BridgeError`] — and leaves HTTP to the transport.

mod era;
mod listen;
mod results;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub(crate) use era::EraCache;
pub(crate) use listen::ListenStream;

use crate::budget::Budget;
use crate::child::ChildError;
use crate::error::Error;
use crate::mux::{Delivery, Finish, Mux, RouteError, Unrouted};
use crate::protocol::METHOD_NOT_FOUND;
use crate::protocol::jsonrpc::{self, ClientMessage};

/// What a child speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Era {
    Legacy,
    Modern,
}

/// What the legacy child declared in its `InitializeResult`.
#[derive(Debug, Clone)]
pub(crate) struct Legacy {
    /// The legacy protocol version the child agreed to.
    pub(crate) protocol_version: String,
    pub(crate) capabilities: serde_json::Value,
    /// Its `serverInfo` (`Implementation`), `Null` when it sent none.
    pub(crate) server_info: serde_json::Value,
    pub(crate) instructions: Option<String>,
}

/// Why a child could not be made ready for modern requests.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BridgeError {
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("the server did not answer initialize within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the server refused initialize for every legacy version: {0}")]
    Refused(String),
    #[error("the server chose protocol version `{0}`, which the proxy does not speak")]
    Version(String),
}

impl From<RouteError> for BridgeError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Child(e) => BridgeError::Child(e),
            // The proxy's own requests have no session, so ids are never checked for duplicates.
            RouteError::DuplicateId => BridgeError::Refused("duplicate request id".into()),
        }
    }
}

impl From<BridgeError> for Error {
    fn from(e: BridgeError) -> Self {
        match e {
            BridgeError::Child(ChildError::Stalled) => Error::Stalled,
            BridgeError::Child(ChildError::Full) => Error::QueueFull,
            BridgeError::Child(ChildError::Sandbox(reason)) => Error::Sandbox(reason),
            BridgeError::Child(ChildError::Spawn { .. } | ChildError::Gone)
            | BridgeError::Timeout(_)
            | BridgeError::Refused(_)
            | BridgeError::Version(_) => Error::Handshake,
        }
    }
}

#[derive(Debug, Clone)]
enum Ready {
    Modern,
    Legacy(Arc<Legacy>),
}

/// The era state of one child: its probe/handshake (done once, by the first request) and the
/// `subscriptions/listen` streams the proxy serves for it.
pub(crate) struct ChildBridge {
    mux: Weak<Mux>,
    ready: OnceCell<Ready>,
    listeners: listen::Listeners,
}

impl std::fmt::Debug for ChildBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildBridge")
            .field("ready", &self.ready.get())
            .field("listeners", &self.listeners())
            .finish()
    }
}

impl ChildBridge {
    /// Listen streams open on this child.
    pub(crate) fn listeners(&self) -> usize {
        self.listeners.len()
    }

    /// Probes and, for a legacy child, performs the handshake — once; concurrent first
    /// requests wait for the same attempt. A failed attempt leaves the cell empty.
    async fn ready(
        self: &Arc<Self>,
        mux: &Arc<Mux>,
        cache: &EraCache,
    ) -> Result<Ready, BridgeError> {
        self.ready
            .get_or_try_init(|| async {
                let era = match cache.known() {
                    Some(era) => era,
                    None => era::probe(mux, cache).await?,
                };
                match era {
                    Era::Modern => {
                        cache.remember(Era::Modern);
                        Ok(Ready::Modern)
                    }
                    Era::Legacy => match era::handshake(mux).await {
                        Ok(legacy) => {
                            cache.remember(Era::Legacy);
                            tracing::info!(
                                version = %legacy.protocol_version,
                                "legacy server initialized by the proxy; bridging 2026-07-28 requests"
                            );
                            mux.set_finish(self.clone());
                            Ok(Ready::Legacy(Arc::new(legacy)))
                        }
                        Err(e) => {
                            // Re-probe the next child: the remembered answer may be wrong.
                            cache.forget();
                            Err(e)
                        }
                    },
                }
            })
            .await
            .cloned()
    }

    /// Answers a request the child sent (stateless clients cannot receive one).
    fn refuse_server_request(&self, line: &str) {
        let Some(probe) = jsonrpc::probe(line) else {
            return;
        };
        let (Some(id), Some(method)) = (probe.id, probe.method.as_deref()) else {
            return;
        };
        let answer = if method == "ping" {
            format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, id.get())
        } else {
            tracing::warn!(
                method,
                "the server sent a request, which 2026-07-28 clients cannot receive; answered with an error"
            );
            jsonrpc::error_response(
                id.get(),
                METHOD_NOT_FOUND,
                "server-initiated requests are not available: this server is reached through \
                 mcp-auth-proxy by stateless 2026-07-28 clients",
            )
        };
        if let Some(mux) = self.mux.upgrade()
            && !mux.child().try_send(answer.into_bytes())
        {
            tracing::debug!(method, "could not queue the answer to a server request");
        }
    }
}

impl Unrouted for ChildBridge {
    fn deliver(&self, line: String, server_request: bool) -> Delivery {
        if server_request {
            self.refuse_server_request(&line);
        } else if !self.listeners.deliver(&line) {
            tracing::debug!("notification for no request and no listen stream; dropped");
        }
        Delivery::Delivered
    }

    /// Always: server requests must come here, never to a request's stream.
    fn is_connected(&self) -> bool {
        true
    }
}

impl Finish for ChildBridge {
    fn finish(&self, method: &str, line: String) -> String {
        match self.ready.get() {
            Some(Ready::Legacy(legacy)) => results::finish(method, line, &legacy.server_info),
            Some(Ready::Modern) | None => line,
        }
    }
}

/// The bridge of a pool child, created on first use (in `slot`, which the pool keeps beside
/// the child): from then on it answers the child's server-initiated requests and receives its
/// unrouted notifications.
fn attach(slot: &OnceLock<Arc<ChildBridge>>, mux: &Arc<Mux>) -> Arc<ChildBridge> {
    slot.get_or_init(|| {
        let bridge = Arc::new(ChildBridge {
            mux: Arc::downgrade(mux),
            ready: OnceCell::new(),
            listeners: listen::Listeners::default(),
        });
        mux.set_unrouted(bridge.clone());
        bridge
    })
    .clone()
}

/// What the bridge made of a modern request.
pub(crate) enum Bridged {
    /// The proxy answers it itself: one JSON-RPC line.
    Answer(String),
    /// A `subscriptions/listen` stream the proxy serves itself.
    Listen(ListenStream),
    /// Send it to the child: unchanged (`None`) or rewritten.
    Forward(Option<ClientMessage>),
}

/// What a listen stream needs beyond the request: when it must end, and what the
/// notifications waiting for it are charged to.
pub(crate) struct StreamEnd {
    pub(crate) shutdown: CancellationToken,
    /// Time left until the caller's token expires, when streams close on expiry.
    pub(crate) expiry: Option<Duration>,
    /// `sessions.max_pending_bytes` for this stream alone.
    pub(crate) budget: Budget,
}

/// Readies `mux`'s child for modern requests and decides what to do with this one (a
/// request, already validated by the transport). A child that cannot be readied is stopped.
pub(crate) async fn prepare(
    era: &EraCache,
    slot: &OnceLock<Arc<ChildBridge>>,
    mux: &Arc<Mux>,
    message: &ClientMessage,
    end: StreamEnd,
) -> Result<Bridged, BridgeError> {
    let bridge = attach(slot, mux);
    let legacy = match bridge.ready(mux, era).await {
        Ok(Ready::Modern) => return Ok(Bridged::Forward(None)),
        Ok(Ready::Legacy(legacy)) => legacy,
        Err(e) => {
            tracing::error!(error = %e, "the server could not be readied for 2026-07-28 requests; stopping it");
            mux.child().stop();
            return Err(e);
        }
    };
    let id = message.first_request_id();
    Ok(match message.first_method() {
        Some("server/discover") => Bridged::Answer(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{}}}"#,
            results::discover_result(&legacy)
        )),
        Some("subscriptions/listen") => {
            Bridged::Listen(listen::open(&bridge, mux, &legacy, message, end))
        }
        _ => Bridged::Forward(
            results::strip_modern_meta(message.line.as_bytes())
                .and_then(|line| jsonrpc::client_message(&line).ok()),
        ),
    })
}
