//! The routes (DESIGN §7): the root server at `/sse`, `/message`; every server under
//! `/servers/NAME/…`; RFC 9728 metadata; health and metrics; the Origin/CORS guard and the
//! access log around all of them.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use super::origin;
use super::{AppState, access, legacy_sse, streamable};
use crate::auth::metadata::{self, WELL_KNOWN};
use crate::error::Error;

/// The router that `serve` runs.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(WELL_KNOWN, get(resource_metadata_root))
        .route(&format!("{WELL_KNOWN}/{{*rest}}"), get(resource_metadata));
    // Which server a request is for is decided per request from the live config
    // ([`super::Live::route`]), so that a reload may add and remove servers.
    app = app
        .merge(server_routes(""))
        .merge(server_routes("/servers/{server}"));
    let max_body_bytes = state.live().config.http.max_body_bytes;
    let edge = Edge {
        state: state.clone(),
    };
    app.layer(RequestBodyLimitLayer::new(max_body_bytes))
        // axum's own 2 MB limit would shadow max_body_bytes (DEPENDENCIES.md, axum traps).
        .layer(DefaultBodyLimit::disable())
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .layer(middleware::from_fn_with_state(edge, edge_layer))
        .with_state(state)
}

/// What the outermost layer needs.
#[derive(Clone)]
struct Edge {
    state: Arc<AppState>,
}

/// The outermost layer: every request is logged and measured, even one refused by Origin or
/// Host. One middleware rather than two: each axum `from_fn` layer boxes a future and clones
/// the inner service per request (the two layers together cost ~1.5 µs per call on the
/// benchmark machine).
async fn edge_layer(
    State(edge): State<Edge>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let origins = edge.state.live.load().origins.clone();
    access::log_and_measure(&edge.state, request, |request| {
        origin::guard(&origins, request, next)
    })
    .await
}

fn server_routes(base: &str) -> Router<Arc<AppState>> {
    Router::new()
        .route(&format!("{base}/sse"), get(legacy_sse::open))
        .route(&format!("{base}/message"), post(legacy_sse::message))
        .route(
            &format!("{base}/mcp"),
            post(streamable::post)
                .get(streamable::get)
                .delete(streamable::delete),
        )
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready, or why not; the body names the config generation and the file's SHA-256 (first 12
/// hex digits), so an operator can tell which config an instance runs.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let live = state.live.load();
    if state.is_draining() {
        Error::NotReady("draining").into_response()
    } else if !live.auth.keys_loaded() {
        Error::NotReady("keys not loaded").into_response()
    } else if live.sha256.is_empty() {
        format!("ready\nconfig_generation {}\n", live.generation).into_response()
    } else {
        format!(
            "ready\nconfig_generation {}\nconfig_sha256 {}\n",
            live.generation, live.sha256
        )
        .into_response()
    }
}

/// Prometheus text exposition of the proxy's metrics.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let sessions = state.sessions.all();
    let body = state.metrics.render(
        sessions.iter().map(|s| (s.server.as_str(), 1)),
        state.is_draining(),
        &state.live.load().auth.jwks_stats(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

async fn resource_metadata_root(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    metadata_document(&state, &headers, "")
}

async fn resource_metadata(
    State(state): State<Arc<AppState>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    metadata_document(&state, &headers, &rest)
}

/// RFC 9728 §3.2: the document for one of our endpoints; 404 for anything else (a document
/// must describe a resource that exists, with `resource` exactly its URL).
fn metadata_document(state: &AppState, headers: &HeaderMap, rest: &str) -> Response {
    let live = state.live();
    let endpoint = metadata::endpoint_for(&state.public_url, rest);
    let servers = live.auth.authorization_servers();
    match metadata::document(&live.config, &state.public_url, &servers, &endpoint) {
        Some(mut doc) => {
            // The address the client used (trusted X-Forwarded-*), as in the challenge.
            doc.resource = format!("{}{endpoint}", state.public_url_for(&live, headers));
            Json(doc).into_response()
        }
        None => Error::NoSuchResource.into_response(),
    }
}
