//! One child process (the wrapped stdio MCP server) as an actor: spawned without a shell in its
//! own process group with a parent-death signal; stdin fed from a bounded queue; stdout framed
//! into bounded JSON lines; stderr drained into the log; on exit every in-flight request gets a
//! JSON-RPC error, and the whole process group is stopped (DESIGN §1).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::jsonrpc;
use crate::metrics::ChildMetrics;

/// Messages waiting for the child's stdin; past this, senders wait (backpressure).
pub const STDIN_QUEUE: usize = 256;
/// Lines waiting for the consumer (the client's stream).
pub const STDOUT_QUEUE: usize = 64;
/// After stdin is closed, how long a child gets to exit on its own.
pub const STDIN_CLOSE_GRACE: Duration = Duration::from_millis(500);
/// After SIGTERM, how long before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// After the child exits, how long its stdout may still deliver buffered lines.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// How long a write to stdin may wait for queue space before the child counts as stalled.
pub const STDIN_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued messages are joined into one write up to about this many bytes.
const STDIN_BATCH_BYTES: usize = 64 * 1024;
/// How long the consumer of a child's output (a legacy SSE client) may leave it unread before
/// the session is ended: a slow client must not hold a child and its memory forever.
pub const CONSUMER_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// JSON-RPC error for a request the child did not answer in time (the TypeScript SDK's
/// `RequestTimeout`).
pub const REQUEST_TIMEOUT_CODE: i64 = -32001;
/// Ids of timed-out requests remembered, so a late answer is not delivered twice.
const TIMED_OUT_MEMORY: usize = 1024;
/// Longest stderr line logged; longer ones are cut.
const MAX_STDERR_LINE: usize = 8 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub command: String,
    pub args: Vec<String>,
    /// Set in the child's environment (after `env_remove`).
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment (the proxy's own secrets and settings).
    pub env_remove: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub max_line_bytes: usize,
    /// How long a request sent through [`ChildHandle::send`] may wait for its answer.
    pub request_timeout: Duration,
    /// Where spawns, the live count and exits are recorded (`Default`: recorded nowhere).
    pub metrics: ChildMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("the server process has exited")]
    Gone,
    #[error("the server process is not reading its input")]
    Stalled,
}

/// Why a child ended (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Stopped by the proxy (session ended, shutdown).
    Stopped,
    /// Exited by itself or closed its stdout.
    Exited,
    /// Nobody is reading its output any more.
    ConsumerGone,
}

/// Where a child's stdout lines go: a channel (one consumer, with backpressure) or a sink
/// that routes each line synchronously (the multiplexer of [`crate::mux`]).
pub trait LineSink: Send + Sync + 'static {
    /// One JSON line from the child; `false` stops reading (nobody is listening any more).
    fn line(&self, line: String) -> bool;
    /// The child is gone: fail whatever still waits for it.
    fn closed(&self);
}

enum Output {
    Channel(mpsc::Sender<String>),
    Sink(Arc<dyn LineSink>),
}

/// The handle that owns a running child. Dropping it stops the child and its process group.
#[derive(Debug)]
pub struct ChildHandle {
    pid: u32,
    stdin_tx: mpsc::Sender<Bytes>,
    pending: Arc<Mutex<HashMap<String, Instant>>>,
    stop: CancellationToken,
    exited: CancellationToken,
    request_timeout: Duration,
}

impl ChildHandle {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one line (without newline) for the child's stdin and records the ids of the
    /// requests in it as in flight.
    pub async fn send(&self, mut line: Vec<u8>, request_ids: &[String]) -> Result<(), ChildError> {
        if self.exited.is_cancelled() || self.stop.is_cancelled() {
            return Err(ChildError::Gone);
        }
        if !request_ids.is_empty() {
            let deadline = Instant::now() + self.request_timeout;
            let mut pending = lock(&self.pending);
            pending.extend(request_ids.iter().map(|id| (id.clone(), deadline)));
        }
        // The newline goes with the message, so the writer needs one write (and the child one
        // wake-up) per message, not two.
        line.push(b'\n');
        match tokio::time::timeout(STDIN_SEND_TIMEOUT, self.stdin_tx.send(Bytes::from(line))).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ChildError::Gone),
            Err(_) => {
                tracing::warn!(pid = self.pid, "child stopped reading stdin; stopping it");
                self.stop.cancel();
                Err(ChildError::Stalled)
            }
        }
    }

    /// Queues a line without waiting (for cancellations sent from `Drop`); false if the queue
    /// is full or the child is gone.
    pub fn try_send(&self, mut line: Vec<u8>) -> bool {
        line.push(b'\n');
        self.stdin_tx.try_send(Bytes::from(line)).is_ok()
    }

    /// Asks the child to stop (close stdin, SIGTERM, SIGKILL); returns at once.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// True once the child and its process group are gone.
    pub fn has_exited(&self) -> bool {
        self.exited.is_cancelled()
    }

    /// Waits until the child and its process group are gone.
    pub async fn wait(&self) {
        self.exited.cancelled().await;
    }

    /// A token cancelled when the child is gone.
    pub fn exited_token(&self) -> CancellationToken {
        self.exited.clone()
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns the child. Its stdout lines arrive on the returned receiver, which ends when the
/// child is gone (after a synthesized error for each request still in flight). The actor runs
/// on `tracker`, so shutdown can wait for every child to be reaped.
pub fn spawn(
    spec: &ChildSpec,
    span: tracing::Span,
    tracker: &TaskTracker,
) -> Result<(ChildHandle, mpsc::Receiver<String>), ChildError> {
    let (out_tx, out_rx) = mpsc::channel(STDOUT_QUEUE);
    let handle = start(spec, span, tracker, Output::Channel(out_tx))?;
    Ok((handle, out_rx))
}

/// Spawns the child with its stdout routed line by line into `sink`.
pub fn spawn_with_sink(
    spec: &ChildSpec,
    span: tracing::Span,
    tracker: &TaskTracker,
    sink: Arc<dyn LineSink>,
) -> Result<ChildHandle, ChildError> {
    start(spec, span, tracker, Output::Sink(sink))
}

fn start(
    spec: &ChildSpec,
    span: tracing::Span,
    tracker: &TaskTracker,
    output: Output,
) -> Result<ChildHandle, ChildError> {
    let mut child = command(spec).spawn().map_err(|source| {
        spec.metrics.spawn_failed();
        ChildError::Spawn {
            command: spec.command.clone(),
            source,
        }
    })?;
    let pid = child.id().ok_or_else(|| ChildError::Spawn {
        command: spec.command.clone(),
        source: std::io::Error::other("child exited before it could be tracked"),
    })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ChildError::Spawn {
            command: spec.command.clone(),
            source: std::io::Error::other("missing stdio pipe"),
        });
    };
    tracing::info!(parent: &span, pid, command = %spec.command, "child spawned");
    spec.metrics.spawned();

    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
    let stop = CancellationToken::new();
    let exited = CancellationToken::new();
    let pending = Arc::new(Mutex::new(HashMap::new()));

    let cancel_tx = stdin_tx.clone();
    tracker.spawn(
        write_stdin(stdin, stdin_rx, stop.clone(), spec.metrics.clone()).instrument(span.clone()),
    );
    tracker.spawn(drain_stderr(stderr).instrument(span.clone()));
    let actor = Actor {
        child,
        pgid: Pid::from_raw(pid as i32),
        output,
        cancel_tx,
        timed_out: VecDeque::new(),
        request_timeout: spec.request_timeout,
        pending: pending.clone(),
        stop: stop.clone(),
        exited: exited.clone(),
        max_line_bytes: spec.max_line_bytes,
        metrics: spec.metrics.clone(),
    };
    tracker.spawn(actor.run(stdout).instrument(span));
    Ok(ChildHandle {
        pid,
        stdin_tx,
        pending,
        stop,
        exited,
        request_timeout: spec.request_timeout,
    })
}

/// The command: no shell, piped stdio, own process group, parent-death signal.
fn command(spec: &ChildSpec) -> tokio::process::Command {
    // A relative program path with a directory part is resolved against the proxy's working
    // directory, not the child's `cwd` (std leaves that case platform-defined).
    let program = if spec.command.contains('/') {
        std::path::absolute(&spec.command).unwrap_or_else(|_| PathBuf::from(&spec.command))
    } else {
        PathBuf::from(&spec.command)
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(&spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for key in &spec.env_remove {
        cmd.env_remove(key);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    set_parent_death_signal(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

/// The one `unsafe` of the crate (STYLE.md habit 12): a `pre_exec` hook that asks the kernel to
/// SIGKILL the child when the thread that spawned it dies, so a SIGKILLed proxy leaves nothing
/// behind. Children are spawned from the runtime's own threads (with one worker: the main
/// thread, `main.rs`), which live as long as the process, never from `spawn_blocking`
/// (whose threads exit when idle and would take the child with them).
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid, _exit); it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl: then nobody would signal us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Writes queued messages (each already ending in a newline) to the child's stdin. When
/// several are waiting they go out in one write: one syscall and one wake-up of the child.
async fn write_stdin(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
    metrics: ChildMetrics,
) {
    let mut batch: Vec<u8> = Vec::new();
    // Sizes of the messages in the current write (without their newlines), for the metrics.
    let mut sizes: Vec<usize> = Vec::new();
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => break,
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
        };
        sizes.clear();
        sizes.push(line.len().saturating_sub(1));
        let out: &[u8] = if rx.is_empty() {
            &line
        } else {
            batch.clear();
            batch.extend_from_slice(&line);
            while batch.len() < STDIN_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(more) => {
                        sizes.push(more.len().saturating_sub(1));
                        batch.extend_from_slice(&more);
                    }
                    Err(_) => break,
                }
            }
            &batch
        };
        let written = tokio::select! {
            _ = stop.cancelled() => break,
            r = async {
                stdin.write_all(out).await?;
                stdin.flush().await
            } => r,
        };
        if written.is_ok() {
            for size in &sizes {
                metrics.relayed_to_child(*size);
            }
        }
        if batch.capacity() > 4 * STDIN_BATCH_BYTES {
            batch = Vec::new();
        }
        if let Err(e) = written {
            tracing::debug!(error = %e, "child stdin closed");
            break;
        }
    }
    // Dropping stdin closes the pipe: the polite first step of stopping a stdio server.
}

/// One frame of a child's output.
#[derive(Debug)]
enum Frame {
    Line(String),
    /// A line over the limit (discarded up to its newline).
    Oversized,
    /// A line that is not UTF-8 (discarded).
    NotUtf8,
}

/// Newline framing with a length limit that survives bad lines. `FramedRead` ends the stream
/// after any decoder error, so `LinesCodec`'s recoverable errors (an over-long line, which it
/// discards up to the next newline; a line that is not UTF-8, already consumed) are turned into
/// frames here instead: one bad line must not end the session.
struct BoundedLines(LinesCodec);

impl BoundedLines {
    fn new(max: usize) -> Self {
        Self(LinesCodec::new_with_max_length(max))
    }

    fn map(r: Result<Option<String>, LinesCodecError>) -> Result<Option<Frame>, std::io::Error> {
        match r {
            Ok(line) => Ok(line.map(Frame::Line)),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Frame::Oversized)),
            Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Ok(Some(Frame::NotUtf8))
            }
            Err(LinesCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for BoundedLines {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Self::map(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Self::map(self.0.decode_eof(buf))
    }
}

async fn drain_stderr(stderr: tokio::process::ChildStderr) {
    let mut lines = FramedRead::new(stderr, BoundedLines::new(MAX_STDERR_LINE));
    while let Some(frame) = lines.next().await {
        match frame {
            Ok(Frame::Line(line)) => tracing::info!(target: "child_stderr", "{line}"),
            Ok(Frame::Oversized) => {
                tracing::info!(target: "child_stderr", "(stderr line over {MAX_STDERR_LINE} bytes dropped)")
            }
            Ok(Frame::NotUtf8) => tracing::info!(target: "child_stderr", "(stderr line not UTF-8)"),
            Err(_) => break,
        }
    }
}

struct Actor {
    child: Child,
    pgid: Pid,
    output: Output,
    /// For `notifications/cancelled` after a timeout.
    cancel_tx: mpsc::Sender<Bytes>,
    timed_out: VecDeque<String>,
    request_timeout: Duration,
    pending: Arc<Mutex<HashMap<String, Instant>>>,
    stop: CancellationToken,
    exited: CancellationToken,
    max_line_bytes: usize,
    metrics: ChildMetrics,
}

impl Actor {
    async fn run(mut self, stdout: ChildStdout) {
        let mut lines = FramedRead::new(stdout, BoundedLines::new(self.max_line_bytes));
        let mut status: Option<ExitStatus> = None;
        let tick_every =
            (self.request_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break ExitReason::Stopped,
                _ = tick.tick() => {
                    if !self.expire_requests().await {
                        break ExitReason::ConsumerGone;
                    }
                }
                st = self.child.wait(), if status.is_none() => {
                    status = st.ok();
                    // Deliver what the child wrote before it died, then stop.
                    let deadline = tokio::time::sleep(DRAIN_AFTER_EXIT);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            _ = &mut deadline => break,
                            line = lines.next() => match line {
                                Some(Ok(Frame::Line(line))) => { if !self.forward(line).await { break; } }
                                Some(Ok(bad)) => self.dropped(&bad),
                                _ => break,
                            }
                        }
                    }
                    break ExitReason::Exited;
                }
                line = lines.next() => match line {
                    Some(Ok(Frame::Line(line))) => {
                        if !self.forward(line).await {
                            break ExitReason::ConsumerGone;
                        }
                    }
                    Some(Ok(bad)) => self.dropped(&bad),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "reading child stdout failed");
                        break ExitReason::Exited;
                    }
                    None => break ExitReason::Exited,
                },
            }
        };
        let status = self.terminate(status, reason).await;
        tracing::info!(?reason, status = %DisplayStatus(status), "child gone");
        self.metrics.exited(reason);
        self.fail_pending().await;
        self.exited.cancel();
    }

    /// Forwards one stdout line if it is JSON; false when the consumer is gone.
    async fn forward(&mut self, line: String) -> bool {
        let Some(probe) = jsonrpc::probe(&line) else {
            if serde_json::from_str::<serde::de::IgnoredAny>(&line).is_ok() {
                // Valid JSON but not an object: a batch response array, forward as is.
                self.metrics.relayed_from_child(line.len());
                return self.send_out(line).await;
            }
            let shown: String = line.chars().take(200).collect();
            tracing::warn!(line = %shown, "child wrote a line that is not JSON; dropped");
            return true;
        };
        if probe.kind() == jsonrpc::Kind::Response
            && let Some(id) = probe.id
        {
            let known = lock(&self.pending).remove(id.get()).is_some();
            if !known && self.timed_out.iter().any(|t| t == id.get()) {
                tracing::debug!(id = id.get(), "late answer to a timed-out request; dropped");
                return true;
            }
        }
        self.metrics.relayed_from_child(line.len());
        self.send_out(line).await
    }

    async fn send_out(&self, line: String) -> bool {
        match &self.output {
            Output::Channel(tx) => tokio::select! {
                r = tokio::time::timeout(CONSUMER_STALL_TIMEOUT, tx.send(line)) => match r {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => {
                        tracing::warn!("the client has not read its stream for {}s; ending the session", CONSUMER_STALL_TIMEOUT.as_secs());
                        false
                    }
                },
                _ = self.stop.cancelled() => false,
            },
            Output::Sink(sink) => sink.line(line),
        }
    }

    /// Answers requests past their deadline with a JSON-RPC error and tells the child
    /// (`notifications/cancelled`); false when the consumer is gone.
    async fn expire_requests(&mut self) -> bool {
        let now = Instant::now();
        let expired: Vec<String> = {
            let mut pending = lock(&self.pending);
            if pending.is_empty() {
                return true;
            }
            let ids: Vec<String> = pending
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                pending.remove(id);
            }
            ids
        };
        for id in expired {
            tracing::warn!(id = %id, "request timed out (request_timeout_secs)");
            let cancel = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"request timed out"}}}}"#
            ) + "\n";
            let _ = self.cancel_tx.try_send(Bytes::from(cancel));
            let line = jsonrpc::error_response(&id, REQUEST_TIMEOUT_CODE, "request timed out");
            if self.timed_out.len() == TIMED_OUT_MEMORY {
                self.timed_out.pop_front();
            }
            self.timed_out.push_back(id);
            if !self.send_out(line).await {
                return false;
            }
        }
        true
    }

    fn dropped(&self, frame: &Frame) {
        match frame {
            Frame::Oversized => tracing::warn!(
                max_line_bytes = self.max_line_bytes,
                "child wrote a line over max_line_bytes; dropped"
            ),
            _ => tracing::warn!("child wrote a line that is not UTF-8; dropped"),
        }
    }

    /// Stops the child and every process in its group; returns the child's exit status.
    async fn terminate(
        &mut self,
        mut status: Option<ExitStatus>,
        reason: ExitReason,
    ) -> Option<ExitStatus> {
        // Closing stdin is the stdio transport's shutdown signal (spec 2026-07-28 stdio §Shutdown).
        self.stop.cancel();
        if status.is_none() && reason != ExitReason::Exited {
            status = tokio::time::timeout(STDIN_CLOSE_GRACE, self.child.wait())
                .await
                .ok()
                .and_then(Result::ok);
        }
        if status.is_none() || group_alive(self.pgid) {
            let _ = killpg(self.pgid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + TERM_GRACE;
            if status.is_none() {
                status = tokio::time::timeout_at(deadline, self.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            // Grandchildren may outlive the leader: give the group the same grace.
            while group_alive(self.pgid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if status.is_none() || group_alive(self.pgid) {
                let _ = killpg(self.pgid, Signal::SIGKILL);
            }
        }
        if status.is_none() {
            status = self.child.wait().await.ok();
        }
        status
    }

    async fn fail_pending(&mut self) {
        let tx = match &self.output {
            Output::Sink(sink) => {
                sink.closed();
                return;
            }
            Output::Channel(tx) => tx,
        };
        let ids: Vec<String> = lock(&self.pending).drain().map(|(id, _)| id).collect();
        for id in ids {
            let line =
                jsonrpc::error_response(&id, jsonrpc::INTERNAL_ERROR, "server process exited");
            // The consumer may be gone or stuck: do not wait for it long.
            let sent = tokio::time::timeout(Duration::from_secs(1), tx.send(line)).await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
    }
}

/// True while any process of the group exists (signal 0 probes without signalling).
fn group_alive(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
}

struct DisplayStatus(Option<ExitStatus>);

impl std::fmt::Display for DisplayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("unknown"),
        }
    }
}
