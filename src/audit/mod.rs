//! The audit log (`[audit]`, issue 14): one JSON line per MCP request and per refused
//! request — who (`iss`, `sub`, client address), what (server, transport and era, session,
//! JSON-RPC method, the tool, prompt or resource it names), what came of it (`ok`, the JSON-RPC
//! error code, `denied` by a tool rule, `cancelled`, or the HTTP status and reason of a
//! refusal), how long it took and how many bytes went each way. Never a token or a secret;
//! tool arguments only with `include_arguments`; never results.
//!
//! Off the hot path: a request appends a record to a bounded queue (no formatting, no I/O,
//! no wake-up, no allocation or reference count that the writer would touch); a thread of
//! its own takes what is queued every 20 ms, formats and writes it. When the queue is full
//! the record is counted as dropped in `mcp_proxy_audit_dropped_total` rather than slowing
//! the request. The file is opened for appending and reopened on SIGHUP (logrotate's
//! `postrotate`).
//!
//! A leaf: it knows records and files, not HTTP or sessions; the layers above build the
//! [`Context`] of a request, the multiplexer completes a [`Pending`] when the answer comes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::config::AuditConfig;

mod text;
mod writer;

use text::Text;
use writer::{open, write_lines};

/// Records waiting for the writer; beyond this they are counted as dropped. At one tick of
/// [`WRITE_INTERVAL`] this holds 400,000 requests a second, and a writer that finds a
/// quarter of it taken does not wait for the next tick. Each of the two buffers reserves
/// room for all of them (~370 bytes a record) but only what a tick fills is ever touched.
pub(super) const QUEUE: usize = 8 * 1024;

/// How often the writer takes what is queued (a line reaches the file within this). Not
/// shorter: on 2 cores, passes every 5 ms cost ~0.7 µs more CPU per request than every 20 ms
/// (`tput-1x16`, legacy SSE), for a p99 latency at saturation of ~0.5 ms instead of ~0.7 ms
/// (a pass of 20 ms of records at 50,000 requests a second is ~1 ms of the writer's work).
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The audit log of one proxy instance.
pub(crate) struct Audit {
    queue: Arc<Queue>,
    include_arguments: bool,
    written: Counter,
    dropped: Counter,
}

/// What the requests and the writer thread share: records are pushed into a buffer that the
/// writer swaps for an empty one each tick. A channel costs more on 2 cores: each send is
/// an atomic read-modify-write of a line the receiver has just read, and a slot the receiver
/// has just emptied, both stalls of the request's task (measured: ~4% of `tput-1x16`, where
/// this lock, whose line stays with the request's core between ticks, costs nothing seen).
struct Queue {
    records: Mutex<Vec<Record>>,
    /// SIGHUP: reopen the file.
    reopen: AtomicBool,
    /// The [`Audit`] is gone: write what is left and end.
    closed: AtomicBool,
}

impl Queue {
    /// The records, even after a panic while they were held (a record is whole or absent).
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the lines go.
#[derive(Debug, Clone)]
enum Sink {
    Stderr,
    File(PathBuf),
}

impl Audit {
    /// `None` when `[audit] path` is empty (off). The writer is a thread of its own (on 2
    /// cores the proxy's runtime has one worker, and formatting there would cost every request
    /// its time); it writes what is queued and ends after the audit log is dropped.
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
        let queue = Arc::new(Queue {
            records: Mutex::new(Vec::with_capacity(QUEUE)),
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let taken = queue.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_lines(&sink, out, &taken))?;
        let reopen = queue.clone();
        tokio::spawn(async move {
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    Some(()) = hangup.recv() => reopen.reopen.store(true, Ordering::Release),
                    () = stop.cancelled() => return,
                }
            }
        });
        Ok(Some(Arc::new(Self {
            queue,
            include_arguments: config.include_arguments,
            written,
            dropped,
        })))
    }

    fn emit(&self, record: Record) {
        let mut records = self.queue.lock();
        if records.len() < QUEUE {
            records.push(record);
            drop(records);
            self.written.inc();
        } else {
            drop(records);
            self.dropped.inc();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
    }
}

/// Who sent an HTTP request and where it went, for [`Context::new`].
pub(crate) struct Who<'a> {
    /// When the proxy received the request: a line's `time`, and where its `duration_ms`
    /// starts.
    pub(crate) started: Instant,
    pub(crate) request_id: &'a str,
    pub(crate) client: Option<IpAddr>,
    pub(crate) iss: Option<&'a str>,
    pub(crate) sub: Option<&'a str>,
    pub(crate) server: &'a str,
    /// `legacy` (HTTP+SSE, transport `sse`), `session` (2024-11-05 … 2025-11-25 Streamable
    /// HTTP) or `modern` (2026-07-28), both transport `streamable`.
    pub(crate) era: &'static str,
    pub(crate) session: Option<&'a str>,
}

/// What the lines of one HTTP request share (its JSON-RPC requests, or its refusal). Built
/// on the request's task and never sent to the writer: each line copies what it needs.
pub(crate) struct Context {
    audit: Arc<Audit>,
    started: Instant,
    client: Option<IpAddr>,
    era: &'static str,
    /// The request id, `iss`, `sub`, server and session.
    text: Text,
}

impl Context {
    pub(crate) fn new(audit: &Arc<Audit>, who: Who<'_>) -> Self {
        let mut text = Text::new();
        text.push(Some(who.request_id));
        text.push(who.iss);
        text.push(who.sub);
        text.push(Some(who.server));
        text.push(who.session);
        Self {
            audit: audit.clone(),
            started: who.started,
            client: who.client,
            era: who.era,
            text,
        }
    }

    /// The line of one JSON-RPC request of this HTTP request, written when it is answered.
    pub(crate) fn pending(
        &self,
        method: Option<&str>,
        target: Option<&str>,
        request: &str,
    ) -> Pending {
        let mut text = self.text.clone();
        text.push(target);
        let arguments = self
            .audit
            .include_arguments
            .then(|| arguments_of(request))
            .flatten();
        Pending {
            audit: self.audit.clone(),
            record: Some(Record {
                started: self.started,
                duration: Duration::ZERO,
                client: self.client,
                era: self.era,
                method: method.map(method_name),
                outcome: Outcome::Cancelled,
                request_bytes: request.len(),
                response_bytes: 0,
                text,
                arguments,
            }),
        }
    }

    /// A request answered by the proxy with a tool rule's refusal.
    pub(crate) fn denied(
        &self,
        method: Option<&str>,
        target: Option<&str>,
        request: &str,
        answer: &str,
    ) {
        self.pending(method, target, request)
            .finish(Outcome::Denied, answer.len());
    }

    /// An HTTP request refused before it reached a child: its status and why, `elapsed`
    /// after it came.
    pub(crate) fn refused(
        &self,
        status: u16,
        reason: &'static str,
        elapsed: Duration,
        request_bytes: usize,
        response_bytes: usize,
    ) {
        let mut text = self.text.clone();
        text.push(None);
        self.audit.emit(Record {
            started: self.started,
            duration: elapsed,
            client: self.client,
            era: self.era,
            method: None,
            outcome: Outcome::Refused { status, reason },
            request_bytes,
            response_bytes,
            text,
            arguments: None,
        });
    }
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
    /// `None` once written (or disarmed).
    record: Option<Record>,
}

impl Pending {
    /// The answer `line` came (or the proxy answered for the child).
    pub(crate) fn answered(self, line: &str) {
        self.finish(outcome_of(line), line.len());
    }

    /// The child's answer came, an error with `error_code` or a result, `response_bytes` long
    /// (what [`Pending::answered`] reads from the line, when the caller already knows it).
    pub(crate) fn answered_with(self, error_code: Option<i64>, response_bytes: usize) {
        let outcome = error_code.map_or(Outcome::Ok, Outcome::Error);
        self.finish(outcome, response_bytes);
    }

    /// Writes nothing: the request was refused before it was sent, and the refusal is its line.
    pub(crate) fn disarm(mut self) {
        self.record = None;
    }

    pub(crate) fn finish(mut self, outcome: Outcome, response_bytes: usize) {
        self.write(outcome, response_bytes);
    }

    fn write(&mut self, outcome: Outcome, response_bytes: usize) {
        if let Some(mut record) = self.record.take() {
            record.duration = record.started.elapsed();
            record.outcome = outcome;
            record.response_bytes = response_bytes;
            self.audit.emit(record);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.write(Outcome::Cancelled, 0);
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

/// One line, as the writer thread gets it: plain values and inline strings, nothing shared
/// with the request's task (see [`text`]).
struct Record {
    started: Instant,
    duration: Duration,
    client: Option<IpAddr>,
    era: &'static str,
    method: Option<Method>,
    outcome: Outcome,
    request_bytes: usize,
    response_bytes: usize,
    text: Text,
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
