//! One child process (the wrapped stdio MCP server) as an actor: spawned without a shell in its
//! own process group with a parent-death signal; stdin fed from a bounded queue; stdout framed
//! into bounded JSON lines; stderr drained into the log; on exit every in-flight request gets a
//! JSON-RPC error, and the whole process group is stopped (DESIGN §1).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::jsonrpc;
use crate::metrics::ChildMetrics;

/// Messages waiting for the child's stdin; past this, senders wait (backpressure).
pub const STDIN_QUEUE: usize = 256;
/// Lines waiting for the consumer (the client's stream).
pub const STDOUT_QUEUE: usize = 256;
/// After stdin is closed, how long a child gets to exit on its own.
pub const STDIN_CLOSE_GRACE: Duration = Duration::from_millis(500);
/// After SIGTERM, how long before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// After the child exits, how long its stdout may still deliver buffered lines.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// How long a write to stdin may wait for queue space before the child counts as stalled.
pub const STDIN_SEND_TIMEOUT: Duration = Duration::from_secs(10);
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

/// The handle that owns a running child. Dropping it stops the child and its process group.
#[derive(Debug)]
pub struct ChildHandle {
    pid: u32,
    stdin_tx: mpsc::Sender<Bytes>,
    pending: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
    exited: CancellationToken,
}

impl ChildHandle {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one line (without newline) for the child's stdin and records the ids of the
    /// requests in it as in flight.
    pub async fn send(&self, line: Vec<u8>, request_ids: &[String]) -> Result<(), ChildError> {
        if self.exited.is_cancelled() || self.stop.is_cancelled() {
            return Err(ChildError::Gone);
        }
        if !request_ids.is_empty() {
            let mut pending = lock(&self.pending);
            pending.extend(request_ids.iter().cloned());
        }
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
    let (out_tx, out_rx) = mpsc::channel(STDOUT_QUEUE);
    let stop = CancellationToken::new();
    let exited = CancellationToken::new();
    let pending = Arc::new(Mutex::new(HashSet::new()));

    tracker.spawn(write_stdin(stdin, stdin_rx, stop.clone()).instrument(span.clone()));
    tracker.spawn(drain_stderr(stderr).instrument(span.clone()));
    let actor = Actor {
        child,
        pgid: Pid::from_raw(pid as i32),
        out_tx,
        pending: pending.clone(),
        stop: stop.clone(),
        exited: exited.clone(),
        max_line_bytes: spec.max_line_bytes,
        metrics: spec.metrics.clone(),
    };
    tracker.spawn(actor.run(stdout).instrument(span));
    Ok((
        ChildHandle {
            pid,
            stdin_tx,
            pending,
            stop,
            exited,
        },
        out_rx,
    ))
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
/// behind. Children are spawned from the runtime's long-lived worker threads, never from
/// `spawn_blocking` (whose threads exit when idle and would take the child with them).
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

async fn write_stdin(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => break,
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
        };
        let written = tokio::select! {
            _ = stop.cancelled() => break,
            r = async {
                stdin.write_all(&line).await?;
                stdin.write_all(b"\n").await?;
                stdin.flush().await
            } => r,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "child stdin closed");
            break;
        }
    }
    // Dropping stdin closes the pipe: the polite first step of stopping a stdio server.
}

async fn drain_stderr(stderr: tokio::process::ChildStderr) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(MAX_STDERR_LINE));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => tracing::info!(target: "child_stderr", "{line}"),
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::info!(target: "child_stderr", "(stderr line over {MAX_STDERR_LINE} bytes dropped)")
            }
            Err(LinesCodecError::Io(_)) => break,
        }
    }
}

struct Actor {
    child: Child,
    pgid: Pid,
    out_tx: mpsc::Sender<String>,
    pending: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
    exited: CancellationToken,
    max_line_bytes: usize,
    metrics: ChildMetrics,
}

impl Actor {
    async fn run(mut self, stdout: ChildStdout) {
        let mut lines =
            FramedRead::new(stdout, LinesCodec::new_with_max_length(self.max_line_bytes));
        let mut status: Option<ExitStatus> = None;
        let reason = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break ExitReason::Stopped,
                st = self.child.wait(), if status.is_none() => {
                    status = st.ok();
                    // Deliver what the child wrote before it died, then stop.
                    let deadline = tokio::time::sleep(DRAIN_AFTER_EXIT);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            _ = &mut deadline => break,
                            line = lines.next() => match line {
                                Some(Ok(line)) => { if !self.forward(line).await { break; } }
                                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => self.oversized(),
                                _ => break,
                            }
                        }
                    }
                    break ExitReason::Exited;
                }
                line = lines.next() => match line {
                    Some(Ok(line)) => {
                        if !self.forward(line).await {
                            break ExitReason::ConsumerGone;
                        }
                    }
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => self.oversized(),
                    Some(Err(LinesCodecError::Io(e))) => {
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
                return self.send_out(line).await;
            }
            let shown: String = line.chars().take(200).collect();
            tracing::warn!(line = %shown, "child wrote a line that is not JSON; dropped");
            return true;
        };
        if probe.kind() == jsonrpc::Kind::Response
            && let Some(id) = probe.id
        {
            lock(&self.pending).remove(id.get());
        }
        self.send_out(line).await
    }

    async fn send_out(&self, line: String) -> bool {
        tokio::select! {
            r = self.out_tx.send(line) => r.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    fn oversized(&self) {
        tracing::warn!(
            max_line_bytes = self.max_line_bytes,
            "child wrote a line over max_line_bytes; dropped"
        );
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
        let ids: Vec<String> = lock(&self.pending).drain().collect();
        for id in ids {
            let line =
                jsonrpc::error_response(&id, jsonrpc::INTERNAL_ERROR, "server process exited");
            // The consumer may be gone or stuck: do not wait for it long.
            let sent = tokio::time::timeout(Duration::from_secs(1), self.out_tx.send(line)).await;
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
