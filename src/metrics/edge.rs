//! What the connection layer records (src/edge): connections open and accepted, what it
//! refused before a request reached the router, by reason, and certificate reloads.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ReasonLabels, ResultLabels};

/// Why the connection layer refused or closed something (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` connections were open: accepting paused.
    MaxConnections,
    /// The request head (or the TLS handshake) did not arrive within `header_read_timeout_secs`.
    HeaderTimeout,
    /// The request head exceeded `max_header_bytes` (431).
    HeaderTooLarge,
    /// A request head hyper could not parse (400).
    Malformed,
    /// A body did not arrive within `body_read_timeout_secs` (408).
    BodyTimeout,
    /// A body beyond `http.max_body_bytes` (413).
    BodyTooLarge,
    /// A TLS handshake that failed (no shared version or cipher, a refused client certificate).
    TlsHandshake,
    /// A keep-alive connection idle for `idle_connection_timeout_secs` (closed, not an error).
    Idle,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 8] = [
        Refusal::MaxConnections,
        Refusal::HeaderTimeout,
        Refusal::HeaderTooLarge,
        Refusal::Malformed,
        Refusal::BodyTimeout,
        Refusal::BodyTooLarge,
        Refusal::TlsHandshake,
        Refusal::Idle,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::Malformed => "malformed",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::Idle => "idle",
        }
    }
}

/// Pre-resolved handles: the connection layer touches them once per connection or refusal.
#[derive(Debug, Clone, Default)]
pub(crate) struct EdgeMetrics {
    connections_open: Gauge,
    connections: Counter,
    refused: Family<ReasonLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
}

impl EdgeMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "connections_open",
            "TCP connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections",
            "TCP connections accepted",
            m.connections.clone(),
        );
        registry.register(
            "edge_refused",
            "Connections and requests refused or closed before routing, by reason",
            m.refused.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate reloads (result=ok, or error: the old certificate is kept)",
            m.tls_reloads.clone(),
        );
        for refusal in Refusal::ALL {
            // Every reason shows at 0 from the start, so rate() works on the first refusal.
            drop(m.refused.get_or_create(&ReasonLabels {
                reason: refusal.label(),
            }));
        }
        m
    }

    /// A connection accepted; the gauge goes down when the returned guard drops.
    pub(crate) fn connection(&self) -> OpenConnection {
        self.connections.inc();
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: refusal.label(),
            })
            .inc();
    }

    pub(crate) fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// Counts one open connection while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
