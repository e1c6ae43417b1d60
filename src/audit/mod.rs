//! The audit log (`[audit]`, issue 14): one JSON line per MCP request and per refused
//! request — who (`iss`, `sub`, client address), what (server, transport and era, session,
//! JSON-RPC method, the tool, prompt or resource it names), what came of it (`ok`, the JSON-RPC
//! error code, `denied` by a tool rule, `cancelled`, or the HTTP status and reason of a
//! refusal), how long it took and how many bytes went each way. Never a token or a secret;
//! tool arguments only with `include_arguments`; never results.
//!
//! Off the hot path: a request hands a record to a bounded channel (no formatting, no I/O, no
//! wake-up); a thread of its own takes them every 20 ms, formats and writes them. When the channel is full the record is counted as dropped in
//! `mcp_proxy_audit_dropped_total` rather than slowing the request. The file is opened for
//! appending and reopened on SIGHUP (logrotate's `postrotate`).
//!
//! A leaf: it knows records and files, not HTTP or sessions; the layers above build the
//! [`Context`] of a request, the multiplexer completes a [`Pending`] when the answer comes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::AuditConfig;

mod writer;

use writer::{open, write_lines};

/// Records waiting for the writer; beyond this they are counted as dropped. At one tick of
/// [`WRITE_INTERVAL`] this holds 400,000 requests a second. The records sit in the channel by
/// value (~150 bytes each, about 1.2 MiB when full): no allocation per record that the writer
/// thread would free, contending with the runtime for the allocator.
const QUEUE: usize = 8 * 1024;

/// How often the writer takes what is queued (a line reaches the file within this).
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The audit log of one proxy instance.
pub(crate) struct Audit {
    tx: std::sync::mpsc::SyncSender<Message>,
    include_arguments: bool,
    written: Counter,
    dropped: Counter,
}

/// Where the lines go.
#[derive(Debug, Clone)]
enum Sink {
    Stderr,
    File(PathBuf),
}

/// What the writer thread is handed.
enum Message {
    Record(Record),
    /// SIGHUP: reopen the file.
    Reopen,
}

impl Audit {
    /// `None` when `[audit] path` is empty (off). The writer is a thread of its own (on 2
    /// cores the proxy's runtime has one worker, and formatting there would cost every request
    /// its time); it writes what is queued and ends when the last sender is gone, after
    /// `stop`.
    pub(crate) fn start(
        config: &AuditConfig,
        written: Counter,
        dropped: Counter,
        stop: CancellationToken,
    ) -> std::io::Result<Option<Arc<Self>>> {
        let sink = match config.path.as_str() {
            "" => return Ok(None),
            "stderr" => Sink::Stderr,
            path => Sink::File(PathBuf::from(path)),
        };
        // Opened here so that an unwritable path fails the start, not the first request.
        let out = open(&sink)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_lines(&sink, out, &rx))?;
        let reopen = tx.clone();
        tokio::spawn(async move {
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    Some(()) = hangup.recv() => {
                        let _ = reopen.try_send(Message::Reopen);
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
        Ok(Some(Arc::new(Self {
            tx,
            include_arguments: config.include_arguments,
            written,
            dropped,
        })))
    }

    fn emit(&self, record: Record) {
        let counter = match self.tx.try_send(Message::Record(record)) {
            Ok(()) => &self.written,
            Err(_) => &self.dropped,
        };
        counter.inc();
    }

    /// A request refused before it reached a child (HTTP status and why).
    pub(crate) fn refusal(&self, refusal: Refusal) {
        self.emit(Record {
            time: SystemTime::now(),
            context: refusal.context,
            method: refusal.method,
            target: refusal.target,
            outcome: Outcome::Refused {
                status: refusal.status,
                reason: refusal.reason,
            },
            duration_ms: refusal.elapsed.as_secs_f64() * 1000.0,
            request_bytes: refusal.request_bytes,
            response_bytes: refusal.response_bytes,
            arguments: None,
        });
    }
}

/// Who sent a request and where it went: shared by the JSON-RPC requests of one HTTP request.
pub(crate) struct Context {
    pub(crate) audit: Arc<Audit>,
    pub(crate) request_id: Arc<str>,
    pub(crate) client: Option<IpAddr>,
    pub(crate) iss: Option<Arc<str>>,
    pub(crate) sub: Option<Arc<str>>,
    pub(crate) server: Arc<str>,
    /// `sse` or `streamable`.
    pub(crate) transport: &'static str,
    /// `legacy` (HTTP+SSE), `session` (2024-11-05 … 2025-11-25 Streamable HTTP) or `modern`
    /// (2026-07-28).
    pub(crate) era: &'static str,
    pub(crate) session: Option<Arc<str>>,
}

impl Context {
    /// The line of one JSON-RPC request of this HTTP request, written when it is answered.
    pub(crate) fn pending(
        self: &Arc<Self>,
        method: Option<&str>,
        target: Option<&str>,
        request: &str,
    ) -> Pending {
        Pending::new(self.audit.clone(), self.clone(), method, target, request)
    }

    /// A request answered by the proxy with a tool rule's refusal.
    pub(crate) fn denied(
        self: &Arc<Self>,
        method: Option<&str>,
        target: Option<&str>,
        request: &str,
        answer: &str,
    ) {
        self.pending(method, target, request)
            .finish(Outcome::Denied, answer.len());
    }
}

/// A request refused by the proxy, for [`Audit::refusal`].
pub(crate) struct Refusal {
    pub(crate) context: Arc<Context>,
    pub(crate) method: Option<Method>,
    pub(crate) target: Option<Box<str>>,
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) elapsed: std::time::Duration,
    pub(crate) request_bytes: usize,
    pub(crate) response_bytes: usize,
}

/// What came of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// A JSON-RPC error answer (the child's, or the proxy's: a timeout, a child that exited).
    Error(i64),
    /// Refused by a tool rule (answered by the proxy; the child never saw it).
    Denied,
    /// The client went away (or cancelled) before the answer.
    Cancelled,
    Refused {
        status: u16,
        reason: &'static str,
    },
}

/// One JSON-RPC request on its way: completed by [`Pending::finish`] when its answer comes;
/// dropped unanswered (the client closed its stream) it is logged as `cancelled`.
pub(crate) struct Pending {
    audit: Arc<Audit>,
    context: Arc<Context>,
    method: Option<Method>,
    target: Option<Box<str>>,
    arguments: Option<Box<RawValue>>,
    started_at: SystemTime,
    started: Instant,
    request_bytes: usize,
    done: bool,
}

impl Pending {
    pub(crate) fn new(
        audit: Arc<Audit>,
        context: Arc<Context>,
        method: Option<&str>,
        target: Option<&str>,
        request: &str,
    ) -> Self {
        let arguments = audit
            .include_arguments
            .then(|| arguments_of(request))
            .flatten();
        Self {
            audit,
            context,
            method: method.map(method_name),
            target: target.map(Box::from),
            arguments,
            started_at: SystemTime::now(),
            started: Instant::now(),
            request_bytes: request.len(),
            done: false,
        }
    }

    /// The answer `line` came (or the proxy answered for the child).
    pub(crate) fn answered(self, line: &str) {
        self.finish(outcome_of(line), line.len());
    }

    /// Writes nothing: the request was refused before it was sent, and the refusal is its line.
    pub(crate) fn disarm(mut self) {
        self.done = true;
    }

    pub(crate) fn finish(mut self, outcome: Outcome, response_bytes: usize) {
        self.done = true;
        self.write(outcome, response_bytes);
    }

    fn write(&mut self, outcome: Outcome, response_bytes: usize) {
        self.audit.emit(Record {
            time: self.started_at,
            context: self.context.clone(),
            method: self.method.take(),
            target: self.target.take(),
            outcome,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            request_bytes: self.request_bytes,
            response_bytes,
            arguments: self.arguments.take(),
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.write(Outcome::Cancelled, 0);
        }
    }
}

/// `ok`, or the code of a JSON-RPC error answer.
fn outcome_of(line: &str) -> Outcome {
    // Most answers are results: no parse for them.
    if !line.contains("\"error\"") {
        return Outcome::Ok;
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Option<ErrorCode>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorCode {
        code: i64,
    }
    match serde_json::from_str::<Answer>(line) {
        Ok(Answer {
            error: Some(ErrorCode { code }),
        }) => Outcome::Error(code),
        _ => Outcome::Ok,
    }
}

/// `params.arguments` of a request, as sent.
fn arguments_of(request: &str) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct Request {
        params: Option<Params>,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        arguments: Option<Box<RawValue>>,
    }
    serde_json::from_str::<Request>(request)
        .ok()?
        .params?
        .arguments
}

/// A JSON-RPC method name: the MCP ones without an allocation, any other copied.
type Method = std::borrow::Cow<'static, str>;

fn method_name(name: &str) -> Method {
    const KNOWN: &[&str] = &[
        "tools/call",
        "tools/list",
        "resources/read",
        "resources/list",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/get",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "initialize",
        "ping",
        "server/discover",
        "subscriptions/listen",
    ];
    match KNOWN.iter().find(|k| **k == name) {
        Some(known) => Method::Borrowed(known),
        None => Method::Owned(name.to_owned()),
    }
}

struct Record {
    time: SystemTime,
    context: Arc<Context>,
    method: Option<Method>,
    target: Option<Box<str>>,
    outcome: Outcome,
    duration_ms: f64,
    request_bytes: usize,
    response_bytes: usize,
    arguments: Option<Box<RawValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_arguments_are_read_from_the_lines() {
        assert_eq!(
            outcome_of(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            Outcome::Ok
        );
        assert_eq!(
            outcome_of(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"x"}}"#),
            Outcome::Error(-32001)
        );
        let args = arguments_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#,
        );
        assert_eq!(
            args.map(|a| a.get().to_owned()).as_deref(),
            Some(r#"{"message":"hi"}"#)
        );
    }
}
