//! A real OTLP/HTTP receiver for the telemetry tests: `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest`, decoded with the `opentelemetry-proto` types, on 127.0.0.1:0.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;

/// One exported span and the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn name(&self) -> &str {
        &self.span.name
    }
    /// An attribute as JSON (string, integer, double or bool).
    pub fn attr(&self, key: &str) -> Value {
        attribute(&self.span.attributes, key)
    }
    /// The names of its events.
    pub fn events(&self) -> Vec<String> {
        self.span.events.iter().map(|e| e.name.clone()).collect()
    }
    /// Status code: 0 unset, 1 ok, 2 error.
    pub fn status(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }
}

pub fn attribute(attributes: &[KeyValue], key: &str) -> Value {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map_or(Value::Null, any)
}

fn any(v: &AnyValue) -> Value {
    match &v.value {
        Some(Any::StringValue(s)) => Value::from(s.as_str()),
        Some(Any::IntValue(i)) => Value::from(*i),
        Some(Any::DoubleValue(d)) => Value::from(*d),
        Some(Any::BoolValue(b)) => Value::from(*b),
        _ => Value::Null,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
struct Store {
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
}

/// The receiver; it stops when dropped.
pub struct Collector {
    /// `http://127.0.0.1:PORT` (the base URL, as `telemetry.otlp_endpoint` takes it).
    pub url: String,
    store: Store,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        let store = Store::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector { url, store, task }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.store
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self
            .store
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn traces(State(store): State<Store>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    *store.requests.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let mut spans = store.spans.lock().unwrap_or_else(|e| e.into_inner());
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .map(|r| attribute(&r.attributes, "service.name"))
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse is an empty protobuf message.
    (StatusCode::OK, Vec::new())
}
