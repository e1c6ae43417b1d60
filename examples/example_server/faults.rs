//! The example server's fault injection, for the proxy's fault tests: the tools that crash,
//! write garbage or huge lines, leak a grandchild, stall stdin, ignore SIGTERM or notify.

use std::process::{Command, Stdio};

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Map, Value, json};

use crate::rpc::{INTERNAL_ERROR, RpcError, RpcResult, str_arg, u64_arg};
use crate::tools::text_result;
use crate::{SERVER_NAME, Server};

/// Upper bound for `long_line` (and for all of a `flood`), so a typo cannot exhaust memory.
const MAX_LONG_LINE_BYTES: u64 = 1 << 30;

/// Makes SIGTERM harmless without `unsafe` (the crate denies `unsafe_code`, and installing
/// `SIG_IGN` with nix is `unsafe`): the signal is blocked on the main thread, and worker
/// threads always have it blocked (see [`crate::spawn_worker`]), so a SIGTERM sent to the
/// process stays pending forever. Children spawned with `Command` start with a clean signal
/// mask.
pub(crate) fn ignore_sigterm() {
    if let Err(err) = SigSet::from(Signal::SIGTERM).thread_block() {
        eprintln!("{SERVER_NAME}: cannot block SIGTERM: {err}");
    }
}

impl Server {
    /// Runs the fault tool `name`; `None` when there is no such tool.
    pub(crate) fn call_fault(
        &mut self,
        name: &str,
        args: &Map<String, Value>,
    ) -> Option<RpcResult> {
        let result = match name {
            "crash" => crash(args),
            "garbage" => {
                self.shared.send_raw(b"this is not json\n", 0);
                text_result("ok")
            }
            "long_line" => self.long_line(args),
            "stderr" => str_arg(args, "message").and_then(|message| {
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
            "notify" => str_arg(args, "method").and_then(|method| {
                self.shared.notify(method, None);
                text_result("ok")
            }),
            _ => return None,
        };
        Some(result)
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

    /// `count` notifications of `bytes` bytes of payload each, written as fast as stdout takes
    /// them: progress notifications for the request's own `progressToken` when it has one (the
    /// proxy routes them to the request's stream), else `notifications/message` (to the
    /// session's stream, or its GET stream).
    pub(crate) fn flood(&self, args: &Map<String, Value>, token: Option<&Value>) -> RpcResult {
        let (count, bytes) = (u64_arg(args, "count")?, u64_arg(args, "bytes")?);
        if count.saturating_mul(bytes) > MAX_LONG_LINE_BYTES {
            return Err(RpcError::invalid_params(format!(
                "`count` × `bytes` must be at most {MAX_LONG_LINE_BYTES}"
            )));
        }
        let data = "x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX));
        for n in 1..=count {
            match token {
                Some(token) => {
                    let params = json!({ "progressToken": token, "progress": n, "total": count, "message": data });
                    self.shared.notify("notifications/progress", Some(params));
                }
                None => {
                    let params = json!({ "level": "info", "logger": "flood", "data": data });
                    self.shared.notify("notifications/message", Some(params));
                }
            }
        }
        text_result(format!("sent {count}"))
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
