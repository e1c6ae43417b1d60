//! The routes (DESIGN §7): the root server at `/sse`, `/message`; every server under
//! `/servers/NAME/…`; RFC 9728 metadata; health.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::auth::metadata::{self, WELL_KNOWN};
use crate::config::Config;
use crate::state::AppState;
use crate::transport::{ServerRoute, sse, streamable};

/// The endpoints each server is mounted at, relative to its base path.
pub const ENDPOINTS: &[&str] = &["/sse", "/message", "/mcp"];

/// The router that tests drive in-process and `serve` runs.
pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(WELL_KNOWN, get(resource_metadata_root))
        .route(&format!("{WELL_KNOWN}/{{*rest}}"), get(resource_metadata));
    if let Some(root) = state.config.root_server() {
        app = app.merge(server_routes(root, ""));
    }
    for name in state.servers.keys() {
        app = app.merge(server_routes(name, &format!("/servers/{name}")));
    }
    app.layer(RequestBodyLimitLayer::new(state.config.http.max_body_bytes))
        // axum's own 2 MB limit would shadow max_body_bytes (DEPENDENCIES.md, axum traps).
        .layer(DefaultBodyLimit::disable())
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .with_state(state)
}

fn server_routes(name: &str, base: &str) -> Router<Arc<AppState>> {
    let route = ServerRoute {
        name: name.into(),
        base: base.into(),
    };
    Router::new()
        .route(&format!("{base}/sse"), get(sse::open))
        .route(&format!("{base}/message"), post(sse::message))
        .route(
            &format!("{base}/mcp"),
            post(streamable::post)
                .get(streamable::get)
                .delete(streamable::delete),
        )
        .layer(Extension(route))
}

/// The audiences accepted when `auth.audiences` is empty: the proxy's own resource URLs
/// (spec 2025-11-25 Authorization §Token Audience Binding), never another service's.
pub fn default_audiences(public_url: &str, config: &Config) -> Vec<String> {
    let mut out = vec![public_url.to_owned(), format!("{public_url}/")];
    let mut bases = Vec::new();
    if config.root_server().is_some() {
        bases.push(String::new());
    }
    bases.extend(config.servers.keys().map(|n| format!("/servers/{n}")));
    for base in bases {
        for endpoint in ["/mcp", "/sse"] {
            out.push(format!("{public_url}{base}{endpoint}"));
        }
    }
    out
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if !state.auth.keys_loaded() {
        (StatusCode::SERVICE_UNAVAILABLE, "keys not loaded").into_response()
    } else {
        "ready".into_response()
    }
}

async fn resource_metadata_root(State(state): State<Arc<AppState>>) -> Response {
    metadata_document(&state, "")
}

async fn resource_metadata(
    State(state): State<Arc<AppState>>,
    Path(rest): Path<String>,
) -> Response {
    metadata_document(&state, &rest)
}

/// RFC 9728 §3.2: the document for one of our endpoints; 404 for anything else (a document
/// must describe a resource that exists, with `resource` exactly its URL).
fn metadata_document(state: &AppState, rest: &str) -> Response {
    let endpoint = metadata::endpoint_for(&state.public_url, rest);
    match metadata::document(state, &endpoint) {
        Some(doc) => Json(doc).into_response(),
        None => (StatusCode::NOT_FOUND, "no such protected resource").into_response(),
    }
}
