//! Entry point of `mcp-example-server`: its flags, the stdin loop, the stdout writer and the
//! worker threads.
//!
//! `mcp-example-server` is the example stdio MCP server bundled with `mcp-auth-proxy`.
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
//! - `flood` {count, bytes}: sends `count` notifications with `bytes` bytes of payload each
//!   (`notifications/progress` for the request's `progressToken` when it has one, else
//!   `notifications/message`), then answers `sent N`.
//! - `cancelled`: the `requestId`s of the `notifications/cancelled` received so far, as a JSON
//!   array in the text (what the proxy's cancellations looked like from here).
//!
//! Flags: `--help`, `--ignore-sigterm`, `--startup-delay-ms N`, `--exit-after N`.
//!
//! Modules: `rpc` (parsing, dispatch, errors), `catalog` (what the server offers), `tools`
//! (the ordinary tools) and `faults` (the fault-injection tools).

mod catalog;
mod faults;
mod probe;
mod rpc;
mod tools;

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use serde_json::{Value, json};

use crate::faults::ignore_sigterm;

const SERVER_NAME: &str = "mcp-example-server";

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
            cancelled: Mutex::new(Vec::new()),
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

/// State shared with the worker threads that run `sleep` and `progress`.
struct Shared {
    /// Every line written to stdout goes through this lock, one message at a time.
    stdout: Mutex<io::Stdout>,
    /// Responses written so far (for `--exit-after`).
    answered: AtomicU64,
    exit_after: Option<u64>,
    /// Cancellation flags of the requests running on worker threads, by serialized id.
    in_flight: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The `requestId`s of the cancellations received (at most the last 64).
    cancelled: Mutex<Vec<Value>>,
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

    /// Writes a batch's replies as one array; a batch of nothing but notifications gets none.
    fn send_batch(&self, replies: Vec<Value>) {
        if !replies.is_empty() {
            let count = replies.len() as u64;
            self.send(&Value::Array(replies), count);
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
