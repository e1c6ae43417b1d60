//! OpenTelemetry traces (`[telemetry]`, issue 14): a SERVER span per HTTP request to an MCP
//! endpoint and a CLIENT span per JSON-RPC request it sends the child, exported as OTLP/HTTP
//! protobuf by the SDK's batch processor (a thread of its own; a full queue drops spans, it
//! never slows a request). The incoming trace context comes from the W3C `traceparent` /
//! `tracestate` headers or, for 2026-07-28 requests, `params._meta`; the child's request carries
//! the proxy's span in `params._meta.traceparent`, so a server that traces continues the trace.
//!
//! Off (`otlp_endpoint` empty) nothing here runs: no layer is installed, no span is built and
//! the request goes to the child byte for byte. The spans are `tracing` spans of target
//! [`TARGET`], which only the OpenTelemetry layer takes (the log layer never sees them).
//!
//! A leaf: it knows spans and JSON-RPC lines, not HTTP handlers or sessions; the layers above
//! build the [`Context`] of a request, the multiplexer ends each [`McpSpan`] when the answer
//! comes.

mod context;
mod meta;
mod span;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::TelemetryConfig;

pub(crate) use span::{Context, HttpSpan, McpSpan};

/// The `tracing` target of the exported spans.
pub const TARGET: &str = "mcp_auth_proxy::otel";

/// How long one export may take before the batch processor gives up on it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter of a running proxy: shut it down (it exports what is queued) before exit.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still queued and stops the batch processor (at most
    /// [`SHUTDOWN_TIMEOUT`]). Call it outside the async runtime: the exporter's HTTP client
    /// blocks.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(error = %e, "telemetry: the last spans may not have been exported");
        }
    }
}

/// The OpenTelemetry layer for the process's subscriber, and its exporter; `None` when
/// `[telemetry]` is off. Only spans of [`TARGET`] pass the layer. Build it before the async
/// runtime starts (the exporter's blocking HTTP client has a runtime of its own).
pub fn layer<S>(
    config: &TelemetryConfig,
) -> Result<Option<(impl Layer<S> + Send + Sync + 'static, Telemetry)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !config.enabled() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: cannot build the exporter: {e}"))?;
    // Parent-based: an incoming sampled context is always continued, an unsampled one never;
    // new traces are sampled at the configured ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(OnlyTarget);
    Ok(Some((layer, Telemetry { provider })))
}

/// The filter of the OpenTelemetry layer: spans of [`TARGET`] only. Its interest in them is
/// "sometimes", so that each is filtered when it is created: with an "always" interest a span
/// takes the per-layer filter state a `tracing::enabled!` check (the access log's) left on the
/// thread, which says "not this layer", and the span is lost.
struct OnlyTarget;

impl<S> tracing_subscriber::layer::Filter<S> for OnlyTarget {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        meta.target() == TARGET
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.target() == TARGET {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}
