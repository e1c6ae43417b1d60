//! The example server's ordinary tools: `tools/call` argument handling and `echo`, `add`,
//! `sleep`, `progress`, `whoami`, `env`, `meta` and `cancelled` (the fault tools live in `faults`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::rpc::{
    Outcome, RpcError, RpcResult, error_response, number_arg, response, str_arg, u64_arg,
};
use crate::{Server, lock};

/// A tool's answer: one text content item.
pub(crate) fn text_result(text: impl Into<String>) -> RpcResult {
    Ok(json!({ "content": [{ "type": "text", "text": text.into() }] }))
}

impl Server {
    pub(crate) fn call_tool(&mut self, id: Value, mut params: Map<String, Value>) -> Outcome {
        let name = match params.remove("name") {
            Some(Value::String(name)) => name,
            _ => {
                let error = RpcError::invalid_params("tools/call needs a string `name`");
                return Outcome::Reply(error_response(&id, error));
            }
        };
        let args = match params.remove("arguments") {
            Some(Value::Object(args)) => args,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                let error = RpcError::invalid_params("`arguments` must be an object");
                return Outcome::Reply(error_response(&id, error));
            }
        };
        let progress_token = params
            .get("_meta")
            .and_then(|meta| meta.get("progressToken"))
            .filter(|token| token.is_string() || token.is_number())
            .cloned();
        let result = match name.as_str() {
            "echo" => str_arg(&args, "message").and_then(text_result),
            "add" => add(&args),
            "sleep" => return self.sleep(id, &args),
            "progress" => return self.progress(id, &args, progress_token),
            "whoami" => {
                text_result(std::env::var("MCP_USER").unwrap_or_else(|_| "anonymous".into()))
            }
            "env" => env_var(&args),
            // What a proxy put in `_meta` (the trace context of issue 14's telemetry).
            "meta" => text_result(
                params
                    .get("_meta")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            ),
            "cancelled" => {
                text_result(Value::Array(lock(&self.shared.cancelled).clone()).to_string())
            }
            "flood" => self.flood(&args, progress_token.as_ref()),
            "sandbox_probe" => crate::probe::sandbox_probe(&args),
            // The fault tools, or no tool at all.
            other => self
                .call_fault(other, &args)
                .unwrap_or_else(|| Err(RpcError::invalid_params(format!("Unknown tool: {name}")))),
        };
        Outcome::Reply(response(&id, result))
    }

    fn sleep(&mut self, id: Value, args: &Map<String, Value>) -> Outcome {
        let ms = match u64_arg(args, "ms") {
            Ok(ms) => ms,
            Err(error) => return Outcome::Reply(error_response(&id, error)),
        };
        let (key, cancelled) = self.register(&id);
        let shared = Arc::clone(&self.shared);
        Outcome::Deferred(Box::new(move || {
            let completed = sleep_unless_cancelled(ms, &cancelled);
            lock(&shared.in_flight).remove(&key);
            completed.then(|| response(&id, text_result(format!("slept {ms} ms"))))
        }))
    }

    fn progress(&mut self, id: Value, args: &Map<String, Value>, token: Option<Value>) -> Outcome {
        let (steps, ms) = match u64_arg(args, "steps").and_then(|steps| {
            let ms = if args.contains_key("ms") {
                u64_arg(args, "ms")?
            } else {
                0
            };
            Ok((steps, ms))
        }) {
            Ok(parsed) => parsed,
            Err(error) => return Outcome::Reply(error_response(&id, error)),
        };
        let (key, cancelled) = self.register(&id);
        let shared = Arc::clone(&self.shared);
        Outcome::Deferred(Box::new(move || {
            let mut completed = true;
            for step in 1..=steps {
                if !sleep_unless_cancelled(ms, &cancelled) {
                    completed = false;
                    break;
                }
                if let Some(token) = &token {
                    let params =
                        json!({ "progressToken": token, "progress": step, "total": steps });
                    shared.notify("notifications/progress", Some(params));
                }
            }
            lock(&shared.in_flight).remove(&key);
            completed.then(|| response(&id, text_result(format!("done {steps} steps"))))
        }))
    }

    /// Registers a request that runs on a worker thread, so it can be cancelled.
    fn register(&self, id: &Value) -> (String, Arc<AtomicBool>) {
        let key = id.to_string();
        let flag = Arc::new(AtomicBool::new(false));
        lock(&self.shared.in_flight).insert(key.clone(), Arc::clone(&flag));
        (key, flag)
    }
}

/// Sleeps `ms` milliseconds in short slices; `false` when cancelled meanwhile.
fn sleep_unless_cancelled(ms: u64, cancelled: &AtomicBool) -> bool {
    const SLICE_MS: u64 = 10;
    let mut remaining = ms;
    while remaining > 0 && !cancelled.load(Ordering::SeqCst) {
        let slice = remaining.min(SLICE_MS);
        thread::sleep(Duration::from_millis(slice));
        remaining -= slice;
    }
    !cancelled.load(Ordering::SeqCst)
}

fn add(args: &Map<String, Value>) -> RpcResult {
    let (a, b) = (number_arg(args, "a")?, number_arg(args, "b")?);
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return text_result(sum.to_string());
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Err(RpcError::invalid_params(
            "arguments `a` and `b` must be numbers",
        ));
    };
    text_result((x + y).to_string())
}

fn env_var(args: &Map<String, Value>) -> RpcResult {
    let name = str_arg(args, "name")?;
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(RpcError::invalid_params(
            "argument `name` is not a valid variable name",
        ));
    }
    let value = std::env::var_os(name).unwrap_or_default();
    text_result(value.to_string_lossy())
}
