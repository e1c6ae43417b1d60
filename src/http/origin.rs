//! Browser-facing checks, before authentication: `Origin` validation against DNS rebinding
//! (a present Origin that is not allowed gets 403; spec 2025-11-25 Transports §Security
//! Warning), the optional `Host` allow-list, and CORS for browser-based clients (preflights are
//! answered here, without a token; `Mcp-Session-Id` and `WWW-Authenticate` are exposed).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use url::Url;

use super::forwarded::request_host;
use crate::config::HttpConfig;
use crate::error::Error;

/// Request headers a browser client may send (MCP transports and auth).
const ALLOW_HEADERS: &str = "authorization, content-type, accept, last-event-id, mcp-session-id, mcp-protocol-version, mcp-method, mcp-name";
/// Response headers a browser client may read.
const EXPOSE_HEADERS: &str = "mcp-session-id, mcp-protocol-version, www-authenticate, retry-after";
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// How long a browser may cache a preflight answer.
const MAX_AGE_SECS: &str = "600";
/// Operational endpoints probed by address (load balancers, Prometheus): no Host check.
const OPS_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Who may call from a browser, and under which host names.
#[derive(Debug)]
pub(crate) struct OriginPolicy {
    any_origin: bool,
    /// ASCII-serialized origins (`https://app.example.com`, default port dropped).
    origins: Vec<String>,
    /// Lower-cased `host` or `host:port` entries; empty: any host.
    hosts: Vec<String>,
    trust_forwarded: bool,
}

/// `scheme://host[:port]` of a URL, or `None` for an opaque origin.
fn origin_of(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

impl OriginPolicy {
    /// The allowed origins are `allowed_origins` plus `public_url`'s own origin.
    pub(crate) fn new(config: &HttpConfig, public_url: &str) -> Self {
        let mut origins: Vec<String> = config
            .allowed_origins
            .iter()
            .filter(|o| *o != "*")
            .filter_map(|o| origin_of(o))
            .collect();
        origins.extend(origin_of(public_url));
        Self {
            any_origin: config.allowed_origins.iter().any(|o| o == "*"),
            origins,
            hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            trust_forwarded: config.trust_forwarded_headers,
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        origin_of(origin).is_some_and(|o| self.origins.contains(&o))
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if self.hosts.is_empty() {
            return true;
        }
        let Some(host) = request_host(headers, self.trust_forwarded) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let name = host_name(&host);
        // An entry without a port matches the host on any port.
        self.hosts.iter().any(|h| *h == host || *h == name)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The 403 answer: a JSON-RPC error without an id (spec: "MAY comprise a JSON-RPC error
/// response that has no id").
fn forbidden(message: &'static str) -> Response {
    Error::Forbidden(message).into_response()
}

/// The middleware: Host, then Origin, then a preflight answer or CORS headers on the response.
pub(crate) async fn guard(policy: &OriginPolicy, request: Request, next: Next) -> Response {
    if !OPS_PATHS.contains(&request.uri().path()) && !policy.host_allowed(request.headers()) {
        tracing::info!("request refused: Host not in http.allowed_hosts");
        return forbidden("Host not allowed");
    }
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    if !origin.to_str().is_ok_and(|o| policy.origin_allowed(o)) {
        tracing::info!("request refused: Origin not in http.allowed_origins");
        return forbidden("Origin not allowed");
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECS),
        );
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        return response;
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], hosts: &[&str]) -> OriginPolicy {
        let config = HttpConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..HttpConfig::default()
        };
        OriginPolicy::new(&config, "https://mcp.example.com/team")
    }

    #[test]
    fn origins() {
        let p = policy(&["http://localhost:3000"], &[]);
        assert!(p.origin_allowed("https://mcp.example.com"));
        assert!(p.origin_allowed("https://mcp.example.com:443"));
        assert!(p.origin_allowed("http://localhost:3000"));
        assert!(!p.origin_allowed("http://localhost:3001"));
        assert!(!p.origin_allowed("http://evil.example"));
        assert!(!p.origin_allowed("null"));
        assert!(policy(&["*"], &[]).origin_allowed("http://anything.example"));
    }

    #[test]
    fn hosts() {
        let p = policy(&[], &["mcp.example.com", "localhost:8080", "[::1]"]);
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static(v));
            m
        };
        assert!(p.host_allowed(&h("mcp.example.com")));
        assert!(p.host_allowed(&h("MCP.example.com:443")));
        assert!(p.host_allowed(&h("localhost:8080")));
        assert!(!p.host_allowed(&h("localhost:9090")));
        assert!(p.host_allowed(&h("[::1]:8080")));
        assert!(!p.host_allowed(&h("attacker.example")));
        assert!(!p.host_allowed(&HeaderMap::new()));
        assert!(policy(&[], &[]).host_allowed(&HeaderMap::new()));
    }
}
