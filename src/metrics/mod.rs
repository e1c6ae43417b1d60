//! Prometheus metrics, rendered at `/metrics` in the text format (0.0.4).
//!
//! One registry per proxy instance (no global recorder), so in-process tests stay independent.
//! Hot paths hold pre-resolved handles: relaying one message costs two atomic adds; an HTTP
//! request costs one label lookup (no allocation) and one histogram observation. Gauges that
//! mirror state (sessions, draining) are set when scraped, not on every change.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod child;
mod edge;
mod jwks;

use child::exit_reason_label;
pub(crate) use child::{ChildMetrics, ExitReason};
pub(crate) use edge::{EdgeMetrics, Refusal};
pub use jwks::JwksStats;

/// The `Content-Type` of `/metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name starts with this (`mcp_proxy_…_total`, `mcp_proxy_…_seconds`).
pub(crate) const PREFIX: &str = "mcp_proxy";

/// Request latency buckets, in seconds: sub-millisecond POSTs up to long tool calls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpawnLabels {
    server: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    server: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    server: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    transport: &'static str,
    method: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// The proxy's metrics. Built once at start from the configured server names.
pub(crate) struct Metrics {
    registry: Registry,
    sessions_active: Family<ServerLabels, Gauge>,
    draining: Gauge,
    sessions_refused: Family<ReasonLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<ScopeLabels, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    http_latency: HistogramFamily<LatencyLabels>,
    edge: EdgeMetrics,
    audit_lines: Counter,
    audit_dropped: Counter,
    servers: HashMap<String, ServerMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Pre-resolved handles for one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerMetrics {
    pub child: ChildMetrics,
}

/// Which transport a request path belongs to (a label with three values).
pub(crate) fn transport_of(path: &str) -> &'static str {
    if path.ends_with("/sse") || path.ends_with("/message") {
        "sse"
    } else if path.ends_with("/mcp") {
        "streamable"
    } else {
        "other"
    }
}

/// An HTTP method as a bounded label value.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl Metrics {
    /// Registers every metric; `servers` are the configured server names.
    pub(crate) fn new<'a>(servers: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let sessions_active = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "sessions_active",
            "Open sessions, per server",
            sessions_active.clone(),
        );
        let children_active = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "children_active",
            "Running child processes, per server",
            children_active.clone(),
        );
        let spawns = Family::<SpawnLabels, Counter>::default();
        registry.register(
            "child_spawns",
            "Child processes started (result=ok) or that failed to start (result=error)",
            spawns.clone(),
        );
        let exits = Family::<ExitLabels, Counter>::default();
        registry.register(
            "child_exits",
            "Child processes gone, by reason: stopped (by the proxy), exited (on its own), consumer_gone",
            exits.clone(),
        );
        let relayed_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register_with_unit(
            "relayed",
            "JSON-RPC bytes relayed between clients and children",
            Unit::Bytes,
            relayed_bytes.clone(),
        );
        let relayed_messages = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "relayed_messages",
            "JSON-RPC messages relayed between clients and children",
            relayed_messages.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while the proxy drains for shutdown",
            draining.clone(),
        );
        let sessions_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sessions_refused",
            "New sessions refused: draining, max_sessions, max_sessions_per_principal",
            sessions_refused.clone(),
        );
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by scope: ip (before authentication), principal",
            rate_limited.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication or authorization, by reason",
            auth_failures.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by transport (sse, streamable, other), method and status",
            http_requests.clone(),
        );
        let http_latency: HistogramFamily<LatencyLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to the response head (for a stream: until it starts)",
            Unit::Seconds,
            http_latency.clone(),
        );
        let edge = EdgeMetrics::register(&mut registry);
        let audit_lines = Counter::default();
        registry.register(
            "audit_lines",
            "Audit log lines queued for writing",
            audit_lines.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit log lines dropped because the writer's queue was full",
            audit_dropped.clone(),
        );

        let mut per_server = HashMap::new();
        for name in servers {
            let server = || name.to_owned();
            let exit = |reason: ExitReason| {
                exits.get_or_create_owned(&ExitLabels {
                    server: server(),
                    reason: exit_reason_label(reason),
                })
            };
            let relay = |family: &Family<DirectionLabels, Counter>, direction| {
                family.get_or_create_owned(&DirectionLabels {
                    server: server(),
                    direction,
                })
            };
            let metrics = ServerMetrics {
                child: ChildMetrics {
                    children_active: children_active
                        .get_or_create_owned(&ServerLabels { server: server() }),
                    spawned: spawns.get_or_create_owned(&SpawnLabels {
                        server: server(),
                        result: "ok",
                    }),
                    spawn_failed: spawns.get_or_create_owned(&SpawnLabels {
                        server: server(),
                        result: "error",
                    }),
                    exit_stopped: exit(ExitReason::Stopped),
                    exit_exited: exit(ExitReason::Exited),
                    exit_consumer_gone: exit(ExitReason::ConsumerGone),
                    exit_oom: exit(ExitReason::Oom),
                    exit_pids: exit(ExitReason::Pids),
                    bytes_to_child: relay(&relayed_bytes, "to_child"),
                    bytes_from_child: relay(&relayed_bytes, "from_child"),
                    messages_to_child: relay(&relayed_messages, "to_child"),
                    messages_from_child: relay(&relayed_messages, "from_child"),
                },
            };
            per_server.insert(name.to_owned(), metrics);
        }
        Self {
            registry,
            sessions_active,
            draining,
            sessions_refused,
            auth_failures,
            rate_limited,
            http_requests,
            http_latency,
            edge,
            audit_lines,
            audit_dropped,
            servers: per_server,
        }
    }

    /// The audit log's counters: lines queued, lines dropped.
    pub(crate) fn audit(&self) -> (Counter, Counter) {
        (self.audit_lines.clone(), self.audit_dropped.clone())
    }

    /// The connection layer's handles.
    pub(crate) fn edge(&self) -> EdgeMetrics {
        self.edge.clone()
    }

    /// The handles of a configured server (`None` only for a name not in the config).
    pub(crate) fn server(&self, name: &str) -> Option<&ServerMetrics> {
        self.servers.get(name)
    }

    /// One finished HTTP request (its response head is out).
    pub(crate) fn request(
        &self,
        transport: &'static str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.http_requests
            .get_or_create(&RequestLabels {
                transport,
                method,
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&LatencyLabels { transport, method })
            .observe(elapsed.as_secs_f64());
    }

    /// A request refused by authentication (`AuthError::reason`).
    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A request refused by a rate limit (`ip` or `principal`).
    pub(crate) fn rate_limited(&self, scope: &'static str) {
        self.rate_limited
            .get_or_create(&ScopeLabels { scope })
            .inc();
    }

    /// A new session refused while draining.
    pub(crate) fn refused_draining(&self) {
        self.sessions_refused
            .get_or_create(&ReasonLabels { reason: "draining" })
            .inc();
    }

    /// A new session refused by a cap (`max_sessions`, `max_sessions_per_principal`).
    pub(crate) fn refused_cap(&self, reason: &'static str) {
        self.sessions_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Renders the text exposition; `sessions` is the number of open sessions per server,
    /// `jwks` each JWKS issuer's cache counters.
    pub(crate) fn render<'a>(
        &self,
        sessions: impl IntoIterator<Item = (&'a str, usize)>,
        draining: bool,
        jwks: &[(String, JwksStats)],
    ) -> String {
        let mut counts: HashMap<&str, usize> = self.servers.keys().map(|k| (&**k, 0)).collect();
        for (server, n) in sessions {
            *counts.entry(server).or_insert(0) += n;
        }
        for (server, n) in counts {
            self.sessions_active
                .get_or_create(&ServerLabels {
                    server: server.to_owned(),
                })
                .set(n as i64);
        }
        self.draining.set(i64::from(draining));
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        jwks::render(&mut out, jwks);
        out
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
pub(super) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_values_move() {
        let m = Metrics::new(["default", "other"]);
        let s = m.server("default").expect("server");
        s.child.spawned();
        s.child.relayed_to_child(10);
        s.child.relayed_from_child(25);
        s.child.exited(ExitReason::Exited);
        m.auth_failure("expired");
        m.request("sse", "POST", 202, Duration::from_millis(3));
        let jwks = [(
            "https://idp/\"x\"".to_owned(),
            JwksStats {
                fetches_ok: 3,
                keys: 2,
                last_success_unix: Some(1_700_000_000),
                ..JwksStats::default()
            },
        )];
        let text = m.render([("default", 2)], true, &jwks);
        for line in [
            "mcp_proxy_sessions_active{server=\"default\"} 2",
            "mcp_proxy_sessions_active{server=\"other\"} 0",
            "mcp_proxy_children_active{server=\"default\"} 0",
            "mcp_proxy_child_spawns_total{server=\"default\",result=\"ok\"} 1",
            "mcp_proxy_child_exits_total{server=\"default\",reason=\"exited\"} 1",
            "mcp_proxy_relayed_bytes_total{server=\"default\",direction=\"to_child\"} 10",
            "mcp_proxy_relayed_bytes_total{server=\"default\",direction=\"from_child\"} 25",
            "mcp_proxy_relayed_messages_total{server=\"default\",direction=\"from_child\"} 1",
            "mcp_proxy_auth_failures_total{reason=\"expired\"} 1",
            "mcp_proxy_http_requests_total{transport=\"sse\",method=\"POST\",status=\"202\"} 1",
            "mcp_proxy_http_request_duration_seconds_count{transport=\"sse\",method=\"POST\"} 1",
            "mcp_proxy_jwks_fetches_total{issuer=\"https://idp/\\\"x\\\"\"} 3",
            "mcp_proxy_jwks_keys{issuer=\"https://idp/\\\"x\\\"\"} 2",
            "mcp_proxy_jwks_last_success_timestamp_seconds{issuer=\"https://idp/\\\"x\\\"\"} 1700000000",
            "mcp_proxy_draining 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("# TYPE mcp_proxy_http_request_duration_seconds histogram"));
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(transport_of("/servers/x/sse"), "sse");
        assert_eq!(transport_of("/message"), "sse");
        assert_eq!(transport_of("/mcp"), "streamable");
        assert_eq!(transport_of("/metrics"), "other");
        assert_eq!(method_label(&http::Method::CONNECT), "other");
    }
}
