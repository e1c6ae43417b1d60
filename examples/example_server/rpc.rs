//! JSON-RPC for the example server: parsing a line, answering batches, dispatching methods,
//! and the error codes and response shapes every answer is built from.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use serde_json::{Map, Value, json};

use crate::{Server, catalog, lock, spawn_worker};

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
pub(crate) const INTERNAL_ERROR: i64 = -32603;
pub(crate) const RESOURCE_NOT_FOUND: i64 = -32002;

/// What handling one message produced.
pub(crate) enum Outcome {
    /// A notification, or a response: nothing to write.
    Silent,
    Reply(Value),
    /// Work for a worker thread, which returns the reply (or nothing, when cancelled).
    Deferred(Box<dyn FnOnce() -> Option<Value> + Send>),
}

pub(crate) type RpcResult = Result<Value, RpcError>;

pub(crate) struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub(crate) fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    pub(crate) fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

pub(crate) fn response(id: &Value, result: RpcResult) -> Value {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => error_response(id, error),
    }
}

pub(crate) fn error_response(id: &Value, error: RpcError) -> Value {
    let mut body = json!({ "code": error.code, "message": error.message });
    if let Some(data) = error.data {
        body["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": body })
}

pub(crate) fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a str, RpcError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("argument `{name}` must be a string")))
}

pub(crate) fn u64_arg(args: &Map<String, Value>, name: &str) -> Result<u64, RpcError> {
    args.get(name).and_then(Value::as_u64).ok_or_else(|| {
        RpcError::invalid_params(format!("argument `{name}` must be a non-negative integer"))
    })
}

pub(crate) fn number_arg<'a>(
    args: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a serde_json::Number, RpcError> {
    match args.get(name) {
        Some(Value::Number(number)) => Ok(number),
        _ => Err(RpcError::invalid_params(format!(
            "argument `{name}` must be a number"
        ))),
    }
}

impl Server {
    pub(crate) fn handle_line(&mut self, line: &[u8]) {
        let message: Value = match serde_json::from_slice(line) {
            Ok(message) => message,
            Err(err) => {
                let error = RpcError::new(PARSE_ERROR, format!("Parse error: {err}"));
                self.shared.send(&error_response(&Value::Null, error), 1);
                return;
            }
        };
        match message {
            Value::Array(batch) if !batch.is_empty() => self.handle_batch(batch),
            single => match self.handle_message(single) {
                Outcome::Silent => {}
                Outcome::Reply(reply) => self.shared.send(&reply, 1),
                Outcome::Deferred(work) => {
                    let shared = Arc::clone(&self.shared);
                    spawn_worker(move || {
                        if let Some(reply) = work() {
                            shared.send(&reply, 1);
                        }
                    });
                }
            },
        }
    }

    /// Answers a batch with one array; when it holds `sleep` or `progress` calls, the array
    /// is written by a worker thread once they have all finished.
    fn handle_batch(&mut self, batch: Vec<Value>) {
        let outcomes: Vec<Outcome> = batch.into_iter().map(|m| self.handle_message(m)).collect();
        if !outcomes.iter().any(|o| matches!(o, Outcome::Deferred(_))) {
            let replies: Vec<Value> = outcomes
                .into_iter()
                .filter_map(|outcome| match outcome {
                    Outcome::Reply(reply) => Some(reply),
                    _ => None,
                })
                .collect();
            self.shared.send_batch(replies);
            return;
        }
        let shared = Arc::clone(&self.shared);
        spawn_worker(move || {
            enum Pending {
                Done(Value),
                Running(thread::JoinHandle<Option<Value>>),
            }
            let pending: Vec<Pending> = outcomes
                .into_iter()
                .filter_map(|outcome| match outcome {
                    Outcome::Silent => None,
                    Outcome::Reply(reply) => Some(Pending::Done(reply)),
                    // Spawned by a worker, so SIGTERM is blocked in these threads too.
                    Outcome::Deferred(work) => Some(Pending::Running(thread::spawn(work))),
                })
                .collect();
            let replies: Vec<Value> = pending
                .into_iter()
                .filter_map(|pending| match pending {
                    Pending::Done(reply) => Some(reply),
                    Pending::Running(handle) => handle.join().ok().flatten(),
                })
                .collect();
            shared.send_batch(replies);
        });
    }

    fn handle_message(&mut self, message: Value) -> Outcome {
        let Value::Object(mut message) = message else {
            let error = RpcError::new(INVALID_REQUEST, "Invalid Request: not a JSON object");
            return Outcome::Reply(error_response(&Value::Null, error));
        };
        let id = message.remove("id");
        let method = match message.remove("method") {
            Some(Value::String(method)) => Some(method),
            _ => None,
        };
        let params = message.remove("params").unwrap_or(Value::Null);
        let valid_version = message.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
        let Some(id) = id else {
            // A notification: never answered.
            if valid_version && let Some(method) = method {
                self.handle_notification(&method, &params);
            }
            return Outcome::Silent;
        };
        if method.is_none() && (message.contains_key("result") || message.contains_key("error")) {
            // A response to a request of ours; we send none, so there is nothing to match.
            return Outcome::Silent;
        }
        let (id, method) = match (id, method) {
            (id @ (Value::String(_) | Value::Number(_)), Some(method)) if valid_version => {
                (id, method)
            }
            (id, _) => {
                let id = if id.is_string() || id.is_number() {
                    id
                } else {
                    Value::Null
                };
                let error = RpcError::new(INVALID_REQUEST, "Invalid Request");
                return Outcome::Reply(error_response(&id, error));
            }
        };
        let params = match params {
            Value::Object(params) => params,
            Value::Null => Map::new(),
            _ => {
                let error = RpcError::invalid_params("params must be an object");
                return Outcome::Reply(error_response(&id, error));
            }
        };
        self.handle_request(id, &method, params)
    }

    fn handle_notification(&mut self, method: &str, params: &Value) {
        let Some(request_id) = params.get("requestId") else {
            return;
        };
        if method != "notifications/cancelled" {
            return;
        }
        {
            let mut seen = lock(&self.shared.cancelled);
            if seen.len() == 64 {
                seen.remove(0);
            }
            seen.push(request_id.clone());
        }
        if let Some(flag) = lock(&self.shared.in_flight).get(&request_id.to_string()) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    fn handle_request(&mut self, id: Value, method: &str, params: Map<String, Value>) -> Outcome {
        let result = match method {
            "initialize" => Ok(catalog::initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({ "tools": catalog::tool_list() })),
            "tools/call" => return self.call_tool(id, params),
            "resources/list" => Ok(json!({ "resources": catalog::resource_list() })),
            "resources/templates/list" => Ok(json!({ "resourceTemplates": [] })),
            "resources/read" => catalog::read_resource(&params),
            "prompts/list" => Ok(json!({ "prompts": catalog::prompt_list() })),
            "prompts/get" => catalog::get_prompt(&params),
            _ => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            )),
        };
        Outcome::Reply(response(&id, result))
    }
}
