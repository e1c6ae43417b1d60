//! The connection layer: the accept loop and what holds before a request reaches the router
//! (issue 13) — `max_connections`, the TLS handshake and the request head within
//! `header_read_timeout_secs`, `max_header_bytes` (431), the body within
//! `body_read_timeout_secs` (408), idle keep-alive connections closed — plus TLS (rustls,
//! certificates reloaded without a restart) and HTTP/2 (ALPN `h2`, or h2c by prior knowledge).
//! It knows connections and bytes, not MCP: the router is a service it is handed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::{EdgeMetrics, Refusal};

mod conn;
pub(crate) mod tls;

/// What the connection layer enforces, from `[listen]`, `[limits]` and `[http]`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) http2: bool,
}

impl Settings {
    pub(crate) fn new(config: &Config) -> Self {
        let l = &config.limits;
        Self {
            max_connections: l.max_connections,
            header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
            max_header_bytes: l.max_header_bytes,
            body_read_timeout: Duration::from_secs(l.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(l.idle_connection_timeout_secs),
            max_body_bytes: config.http.max_body_bytes,
            http2: config.listen.http2,
        }
    }
}

/// Counts what the layer refuses and logs it at most once a second per reason, with the
/// number left unlogged since: a flood of bad connections must not become a flood of lines.
pub(crate) struct Refusals {
    metrics: EdgeMetrics,
    started: Instant,
    /// Per reason: the millisecond (since `started`) of the last line, and the count since.
    last_logged: [AtomicU64; Refusal::ALL.len()],
    unlogged: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    pub(crate) fn new(metrics: EdgeMetrics) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            last_logged: std::array::from_fn(|_| AtomicU64::new(0)),
            unlogged: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(crate) fn note(&self, refusal: Refusal, peer: SocketAddr) {
        self.metrics.refused(refusal);
        let i = Refusal::ALL
            .iter()
            .position(|r| *r == refusal)
            .unwrap_or_default();
        // +1000 so that the first one is logged at once.
        let now = self.started.elapsed().as_millis() as u64 + 1000;
        let last = self.last_logged[i].load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1000
            || self.last_logged[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let also = self.unlogged[i].swap(0, Ordering::Relaxed);
        let reason = refusal.label();
        if refusal == Refusal::Idle {
            tracing::debug!(%peer, reason, also, "connection closed");
        } else {
            tracing::info!(%peer, reason, also, "refused before routing (`also`: refused since the last line)");
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then accepts nothing more, asks every
/// connection to finish what it is doing (HTTP/1.1: after the response in flight; HTTP/2:
/// GOAWAY) and returns when all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Settings,
    tls: Option<Arc<tls::Tls>>,
    metrics: EdgeMetrics,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let settings = Arc::new(settings);
    let refusals = Arc::new(Refusals::new(metrics.clone()));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let connections = TaskTracker::new();
    let builder = Arc::new(conn::builder(&settings));
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the limit: stop accepting; the kernel's backlog holds the next ones.
                refusals.note(Refusal::MaxConnections, unspecified());
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = stop.cancelled() => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Nagle's algorithm holds a small SSE event back until the previous one is
        // acknowledged, and the client delays that ACK (up to 40 ms on Linux): with several
        // answers in flight on one stream, p99 was 44 ms. Every write is a complete message.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let open = metrics.connection();
        let c = conn::Connection {
            peer,
            app: app.clone(),
            settings: settings.clone(),
            refusals: refusals.clone(),
            builder: builder.clone(),
            stop: stop.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            c.run(tcp, tls).await;
            drop((open, permit));
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of `accept` itself: those of one connection (reset before it was accepted) are
/// skipped; running out of descriptors or memory waits a little, so the loop does not spin.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
