//! The OTLP/HTTP receiver of the `otel-*` targets: the proxy exports its spans here (POST
//! /v1/traces, protobuf), and the sink counts the export requests and the spans in them. It
//! runs on a thread and a runtime of its own, so that decoding does not take the load
//! generator's time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    spans: AtomicU64,
}

/// A running sink; it stops with the process.
pub(crate) struct Sink {
    /// `http://127.0.0.1:PORT`, as `telemetry.otlp_endpoint` takes it.
    pub(crate) url: String,
    counts: Arc<Counts>,
}

impl Sink {
    pub(crate) fn start() -> Result<Sink> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let state = counts.clone();
        std::thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = axum::Router::new()
                        .route("/v1/traces", axum::routing::post(traces))
                        .with_state(state);
                    let _ = axum::serve(listener, app).await;
                });
            })
            .context("start the OTLP sink")?;
        Ok(Sink { url, counts })
    }

    /// (export requests, spans) received so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.counts.requests.load(Ordering::Relaxed),
            self.counts.spans.load(Ordering::Relaxed),
        )
    }
}

async fn traces(State(counts): State<Arc<Counts>>, body: Bytes) -> axum::http::StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
    axum::http::StatusCode::OK
}
