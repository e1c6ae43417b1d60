//! `mcp-example-server`: the example stdio MCP server bundled with `mcp-auth-proxy`.
//!
//! It speaks MCP over stdio (one JSON-RPC message per line on stdin/stdout, logs only on
//! stderr) and is what the README's run command, the integration tests and the benchmarks
//! put behind the proxy. It negotiates protocol versions 2024-11-05, 2025-03-26, 2025-06-18
//! and 2025-11-25, answers JSON-RPC batches, and offers one resource (`example://readme`),
//! one prompt (`greet`) and these tools:
//!
//! - `echo` {message}: returns `message` as text.
//! - `add` {a, b}: returns the sum as text (`5`, not `5.0`, for two integers).
//! - `sleep` {ms}: answers `slept N ms` after N ms, without blocking other requests;
//!   `notifications/cancelled` for it suppresses the answer.
//! - `progress` {steps, ms?}: sends `steps` `notifications/progress` (when the request carries
//!   `_meta.progressToken`), `ms` apart, then answers `done N steps`.
//! - `whoami`: the `MCP_USER` environment variable, or `anonymous`.
//! - `env` {name}: the value of that environment variable, or an empty string.
//!
//! Fault-injection tools, for the proxy's fault tests:
//!
//! - `crash` {code?}: exits at once with `code` (default 3), without answering.
//! - `garbage`: writes the line `this is not json`, then answers `ok`.
//! - `long_line` {bytes}: writes a `notifications/message` line of at least `bytes` bytes,
//!   then answers `ok`.
//! - `stderr` {message}: writes `message` to stderr, answers `ok`.
//! - `spawn_grandchild`: spawns `sleep 3600` (same process group, never waited for) and
//!   answers its pid.
//! - `stop_reading`: answers `ok`, then never reads stdin again but stays alive.
//! - `ignore_sigterm`: from now on SIGTERM no longer terminates the server; answers `ok`.
//! - `notify` {method}: sends a notification with that method, then answers `ok`.
//!
//! Flags: `--help`, `--ignore-sigterm`, `--startup-delay-ms N`, `--exit-after N`.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use serde_json::{Map, Value, json};

const SERVER_NAME: &str = "mcp-example-server";
const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";
const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    LATEST_PROTOCOL_VERSION,
];
const INSTRUCTIONS: &str = "Example MCP server bundled with mcp-auth-proxy. Try the `echo` and \
    `add` tools, the `example://readme` resource and the `greet` prompt; the other tools exist \
    for the proxy's tests.";
const README_URI: &str = "example://readme";
const README_TEXT: &str = "This is mcp-example-server, the example stdio MCP server bundled \
    with mcp-auth-proxy. It offers a few simple tools, this resource and a `greet` prompt.\n";
/// Upper bound for `long_line`, so a typo cannot exhaust memory.
const MAX_LONG_LINE_BYTES: u64 = 1 << 30;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const RESOURCE_NOT_FOUND: i64 = -32002;

const USAGE: &str = "\
mcp-example-server: the example stdio MCP server bundled with mcp-auth-proxy.

Reads JSON-RPC messages (one per line) on stdin and answers on stdout; logs go to stderr.

Usage: mcp-example-server [OPTIONS]

Options:
  --ignore-sigterm        ignore SIGTERM from the start
  --startup-delay-ms N    wait N ms before reading stdin (a slow-starting server)
  --exit-after N          exit after answering N requests
  --help                  print this help and exit
";

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("{SERVER_NAME}: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if opts.ignore_sigterm {
        ignore_sigterm();
    }
    if opts.startup_delay_ms > 0 {
        thread::sleep(Duration::from_millis(opts.startup_delay_ms));
    }
    if opts.exit_after == Some(0) {
        std::process::exit(0);
    }
    let mut server = Server {
        shared: Arc::new(Shared {
            stdout: Mutex::new(io::stdout()),
            answered: AtomicU64::new(0),
            exit_after: opts.exit_after,
            in_flight: Mutex::new(HashMap::new()),
        }),
        stop_reading: false,
        grandchildren: Vec::new(),
    };
    server.run();
}

#[derive(Debug, Default)]
struct Options {
    ignore_sigterm: bool,
    startup_delay_ms: u64,
    exit_after: Option<u64>,
}

/// `Ok(None)` means `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options::default();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut number = |flag: &str| -> Result<u64, String> {
            let value = match inline_value {
                Some(value) => value.to_owned(),
                None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
            };
            value
                .parse()
                .map_err(|_| format!("{flag}: not a non-negative integer: {value:?}"))
        };
        match flag.as_str() {
            "--help" | "-h" if inline_value.is_none() => return Ok(None),
            "--ignore-sigterm" if inline_value.is_none() => opts.ignore_sigterm = true,
            "--startup-delay-ms" => opts.startup_delay_ms = number("--startup-delay-ms")?,
            "--exit-after" => opts.exit_after = Some(number("--exit-after")?),
            _ => return Err(format!("unknown argument: {arg}")),
        }
    }
    Ok(Some(opts))
}

/// Makes SIGTERM harmless without `unsafe` (the crate denies `unsafe_code`, and installing
/// `SIG_IGN` with nix is `unsafe`): the signal is blocked on the main thread, and worker
/// threads always have it blocked (see [`spawn_worker`]), so a SIGTERM sent to the process
/// stays pending forever. Children spawned with `Command` start with a clean signal mask.
fn ignore_sigterm() {
    if let Err(err) = SigSet::from(Signal::SIGTERM).thread_block() {
        eprintln!("{SERVER_NAME}: cannot block SIGTERM: {err}");
    }
}

/// State shared with the worker threads that run `sleep` and `progress`.
struct Shared {
    /// Every line written to stdout goes through this lock, one message at a time.
    stdout: Mutex<io::Stdout>,
    /// Responses written so far (for `--exit-after`).
    answered: AtomicU64,
    exit_after: Option<u64>,
    /// Cancellation flags of the requests running on worker threads, by serialized id.
    in_flight: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Shared {
    /// Writes one message as one line, counting `responses` answered requests.
    fn send(&self, message: &Value, responses: u64) {
        let mut line = Vec::with_capacity(128);
        if let Err(err) = serde_json::to_writer(&mut line, message) {
            eprintln!("{SERVER_NAME}: cannot serialize a message: {err}");
            return;
        }
        line.push(b'\n');
        self.send_raw(&line, responses);
    }

    /// Writes bytes that already end with a newline.
    fn send_raw(&self, line: &[u8], responses: u64) {
        let written = {
            let mut stdout = lock(&self.stdout);
            stdout.write_all(line).and_then(|()| stdout.flush())
        };
        if let Err(err) = written {
            eprintln!("{SERVER_NAME}: cannot write to stdout: {err}");
            std::process::exit(1);
        }
        if responses > 0 {
            let answered = self.answered.fetch_add(responses, Ordering::SeqCst) + responses;
            if self.exit_after.is_some_and(|limit| answered >= limit) {
                std::process::exit(0);
            }
        }
    }

    fn notify(&self, method: &str, params: Option<Value>) {
        let mut message = json!({ "jsonrpc": "2.0", "method": method });
        if let Some(params) = params {
            message["params"] = params;
        }
        self.send(&message, 0);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The main thread's view: reads stdin and answers everything but `sleep` and `progress`.
struct Server {
    shared: Arc<Shared>,
    stop_reading: bool,
    /// Children of `spawn_grandchild`, kept (never waited for) so they are not reaped.
    grandchildren: Vec<Child>,
}

/// What handling one message produced.
enum Outcome {
    /// A notification, or a response: nothing to write.
    Silent,
    Reply(Value),
    /// Work for a worker thread, which returns the reply (or nothing, when cancelled).
    Deferred(Box<dyn FnOnce() -> Option<Value> + Send>),
}

type RpcResult = Result<Value, RpcError>;

struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
}

fn response(id: &Value, result: RpcResult) -> Value {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(error) => error_response(id, error),
    }
}

fn error_response(id: &Value, error: RpcError) -> Value {
    let mut body = json!({ "code": error.code, "message": error.message });
    if let Some(data) = error.data {
        body["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": body })
}

fn text_result(text: impl Into<String>) -> RpcResult {
    Ok(json!({ "content": [{ "type": "text", "text": text.into() }] }))
}

impl Server {
    fn run(&mut self) {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::with_capacity(4096);
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => std::process::exit(0),
                Ok(_) => {}
                Err(err) => {
                    eprintln!("{SERVER_NAME}: cannot read stdin: {err}");
                    std::process::exit(1);
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.handle_line(&line);
            if self.stop_reading {
                eprintln!("{SERVER_NAME}: stop_reading: no longer reading stdin");
                loop {
                    thread::park();
                }
            }
        }
    }

    fn handle_line(&mut self, line: &[u8]) {
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
            if !replies.is_empty() {
                let count = replies.len() as u64;
                self.shared.send(&Value::Array(replies), count);
            }
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
            if !replies.is_empty() {
                let count = replies.len() as u64;
                shared.send(&Value::Array(replies), count);
            }
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
        if method == "notifications/cancelled"
            && let Some(request_id) = params.get("requestId")
            && let Some(flag) = lock(&self.shared.in_flight).get(&request_id.to_string())
        {
            flag.store(true, Ordering::SeqCst);
        }
    }

    fn handle_request(&mut self, id: Value, method: &str, params: Map<String, Value>) -> Outcome {
        let result = match method {
            "initialize" => Ok(initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({ "tools": tool_list() })),
            "tools/call" => return self.call_tool(id, params),
            "resources/list" => Ok(json!({ "resources": [{
                "uri": README_URI,
                "name": "readme",
                "description": "About this server",
                "mimeType": "text/plain",
            }] })),
            "resources/templates/list" => Ok(json!({ "resourceTemplates": [] })),
            "resources/read" => read_resource(&params),
            "prompts/list" => Ok(json!({ "prompts": [{
                "name": "greet",
                "description": "Greets someone by name",
                "arguments": [{ "name": "name", "description": "Who to greet", "required": true }],
            }] })),
            "prompts/get" => get_prompt(&params),
            _ => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            )),
        };
        Outcome::Reply(response(&id, result))
    }

    fn call_tool(&mut self, id: Value, mut params: Map<String, Value>) -> Outcome {
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
            "crash" => crash(&args),
            "garbage" => {
                self.shared.send_raw(b"this is not json\n", 0);
                text_result("ok")
            }
            "long_line" => self.long_line(&args),
            "stderr" => str_arg(&args, "message").and_then(|message| {
                eprintln!("{message}");
                text_result("ok")
            }),
            "spawn_grandchild" => self.spawn_grandchild(),
            "stop_reading" => {
                self.stop_reading = true;
                text_result("ok")
            }
            "ignore_sigterm" => {
                ignore_sigterm();
                text_result("ok")
            }
            "notify" => str_arg(&args, "method").and_then(|method| {
                self.shared.notify(method, None);
                text_result("ok")
            }),
            _ => Err(RpcError::invalid_params(format!("Unknown tool: {name}"))),
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

    fn long_line(&self, args: &Map<String, Value>) -> RpcResult {
        let bytes = u64_arg(args, "bytes")?;
        if bytes > MAX_LONG_LINE_BYTES {
            return Err(RpcError::invalid_params(format!(
                "`bytes` must be at most {MAX_LONG_LINE_BYTES}"
            )));
        }
        let data = "x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX));
        let params = json!({ "level": "info", "logger": "long_line", "data": data });
        self.shared.notify("notifications/message", Some(params));
        text_result("ok")
    }

    fn spawn_grandchild(&mut self) -> RpcResult {
        let child = Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|err| RpcError::new(INTERNAL_ERROR, format!("cannot spawn sleep: {err}")))?;
        let pid = child.id();
        self.grandchildren.push(child);
        text_result(pid.to_string())
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

/// Runs `work` on its own thread. Worker threads never take SIGTERM: it is blocked around the
/// spawn, so the new thread starts with it blocked (threads inherit the signal mask), and the
/// main thread's mask alone decides whether SIGTERM terminates the process (see
/// [`ignore_sigterm`]).
fn spawn_worker(work: impl FnOnce() + Send + 'static) {
    let previous_mask = SigSet::from(Signal::SIGTERM).thread_swap_mask(SigmaskHow::SIG_BLOCK);
    let spawned = thread::Builder::new().spawn(work);
    if let Ok(mask) = previous_mask
        && let Err(err) = mask.thread_set_mask()
    {
        eprintln!("{SERVER_NAME}: cannot restore the signal mask: {err}");
    }
    if let Err(err) = spawned {
        eprintln!("{SERVER_NAME}: cannot spawn a thread: {err}");
    }
}

fn initialize(params: &Map<String, Value>) -> Value {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = requested
        .filter(|version| SUPPORTED_PROTOCOL_VERSIONS.contains(version))
        .unwrap_or(LATEST_PROTOCOL_VERSION);
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": { "listChanged": false },
            "resources": {},
            "prompts": {},
        },
        "serverInfo": { "name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION") },
        "instructions": INSTRUCTIONS,
    })
}

fn tool_list() -> Value {
    fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
        json!({
            "name": name,
            "description": description,
            "inputSchema": { "type": "object", "properties": properties, "required": required },
        })
    }
    let none = || json!({});
    let string = |description: &str| json!({ "type": "string", "description": description });
    let integer =
        |description: &str| json!({ "type": "integer", "minimum": 0, "description": description });
    json!([
        tool(
            "echo",
            "Returns the message",
            json!({ "message": string("Text to echo") }),
            &["message"]
        ),
        tool(
            "add",
            "Adds two numbers",
            json!({ "a": { "type": "number" }, "b": { "type": "number" } }),
            &["a", "b"],
        ),
        tool(
            "sleep",
            "Answers after the given number of milliseconds",
            json!({ "ms": integer("Milliseconds to sleep") }),
            &["ms"],
        ),
        tool(
            "progress",
            "Sends `steps` progress notifications (given a progress token), `ms` apart",
            json!({ "steps": integer("Number of steps"), "ms": integer("Milliseconds per step") }),
            &["steps"],
        ),
        tool(
            "whoami",
            "Returns the MCP_USER environment variable, or \"anonymous\"",
            none(),
            &[]
        ),
        tool(
            "env",
            "Returns an environment variable of the server, or \"\" when unset",
            json!({ "name": string("Variable name") }),
            &["name"],
        ),
        tool(
            "crash",
            "Fault injection: exits at once with the given code (default 3), without answering",
            json!({ "code": { "type": "integer", "description": "Exit code" } }),
            &[],
        ),
        tool(
            "garbage",
            "Fault injection: writes a line that is not JSON, then answers",
            none(),
            &[]
        ),
        tool(
            "long_line",
            "Fault injection: writes a notification line of at least `bytes` bytes",
            json!({ "bytes": integer("Minimum line length") }),
            &["bytes"],
        ),
        tool(
            "stderr",
            "Fault injection: writes the message to stderr",
            json!({ "message": string("Text for stderr") }),
            &["message"],
        ),
        tool(
            "spawn_grandchild",
            "Fault injection: spawns `sleep 3600` in the server's process group, returns its pid",
            none(),
            &[],
        ),
        tool(
            "stop_reading",
            "Fault injection: answers, then never reads stdin again",
            none(),
            &[]
        ),
        tool(
            "ignore_sigterm",
            "Fault injection: makes the server ignore SIGTERM",
            none(),
            &[]
        ),
        tool(
            "notify",
            "Sends a notification with the given method, then answers",
            json!({ "method": string("e.g. notifications/tools/list_changed") }),
            &["method"],
        ),
    ])
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a str, RpcError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params(format!("argument `{name}` must be a string")))
}

fn u64_arg(args: &Map<String, Value>, name: &str) -> Result<u64, RpcError> {
    args.get(name).and_then(Value::as_u64).ok_or_else(|| {
        RpcError::invalid_params(format!("argument `{name}` must be a non-negative integer"))
    })
}

fn number_arg<'a>(
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

fn crash(args: &Map<String, Value>) -> RpcResult {
    let code = match args.get("code") {
        None | Some(Value::Null) => 3,
        Some(code) => code
            .as_i64()
            .and_then(|code| i32::try_from(code).ok())
            .ok_or_else(|| RpcError::invalid_params("argument `code` must be an integer"))?,
    };
    eprintln!("{SERVER_NAME}: crash: exiting with code {code}");
    std::process::exit(code);
}

fn read_resource(params: &Map<String, Value>) -> RpcResult {
    let uri = str_arg(params, "uri")?;
    if uri != README_URI {
        let mut error = RpcError::new(RESOURCE_NOT_FOUND, "Resource not found");
        error.data = Some(json!({ "uri": uri }));
        return Err(error);
    }
    Ok(json!({ "contents": [{
        "uri": README_URI,
        "mimeType": "text/plain",
        "text": README_TEXT,
    }] }))
}

fn get_prompt(params: &Map<String, Value>) -> RpcResult {
    let name = str_arg(params, "name")?;
    if name != "greet" {
        return Err(RpcError::invalid_params(format!("Unknown prompt: {name}")));
    }
    let who = params
        .get("arguments")
        .and_then(|arguments| arguments.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("prompt `greet` needs the argument `name`"))?;
    Ok(json!({
        "description": "A greeting",
        "messages": [{
            "role": "user",
            "content": { "type": "text", "text": format!("Hello, {who}!") },
        }],
    }))
}
