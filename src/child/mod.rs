//! One child process (the wrapped stdio MCP server), process only: spawned without a shell in
//! its own process group with a parent-death signal ([`command`]); stdin fed from a bounded
//! queue ([`stdin`]); stdout framed into bounded lines ([`framing`]) and handed to a
//! [`LineSink`]; stderr drained into the log; when it ends, its whole process group is stopped
//! ([`actor`], DESIGN §1). A configured sandbox is prepared by the parent and entered between
//! fork and exec ([`sandbox`], [`preexec`]; issue 15). What the lines mean is the
//! multiplexer's business, not the child's.

mod actor;
mod command;
mod framing;
mod preexec;
pub(crate) mod sandbox;
mod stdin;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::metrics::{ChildMetrics, ExitReason};

/// Messages waiting for the child's stdin; past this, senders wait (backpressure).
pub(crate) const STDIN_QUEUE: usize = 256;
/// Lines of a warm child waiting for the session that adopts it.
const WARM_QUEUE: usize = 64;
/// After stdin is closed, how long a child gets to exit on its own.
const STDIN_CLOSE_GRACE: Duration = Duration::from_millis(500);
/// After SIGTERM, how long before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long a write to stdin may wait for queue space before the child counts as stalled.
const STDIN_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the consumer of a child's output may leave it unread before the child is stopped:
/// a slow client must not hold a child and its memory forever.
pub(crate) const CONSUMER_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    pub(crate) command: String,
    pub(crate) args: Vec<String>,
    /// Set in the child's environment (after `env_remove`).
    pub(crate) env: Vec<(String, String)>,
    /// Removed from the inherited environment (the proxy's own secrets and settings).
    pub(crate) env_remove: Vec<String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) max_line_bytes: usize,
    /// How long a request may wait for its answer (enforced by the multiplexer).
    pub(crate) request_timeout: Duration,
    /// Bytes that may wait for stdin (`sessions.max_queued_bytes`).
    pub(crate) max_queued_bytes: usize,
    /// Bytes of its output that may wait for clients (`sessions.max_pending_bytes`, enforced
    /// by the multiplexer).
    pub(crate) max_pending_bytes: usize,
    /// Where spawns, the live count and exits are recorded (`Default`: recorded nowhere).
    pub(crate) metrics: ChildMetrics,
    /// What contains the child (`[servers.NAME.sandbox]`); `None`: nothing.
    pub(crate) sandbox: Option<sandbox::SandboxSpec>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChildError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A requested restriction could not be applied: the child was not started (fail closed).
    #[error("the sandbox could not be applied: {0}")]
    Sandbox(String),
    #[error("the server process has exited")]
    Gone,
    #[error("the server process is not reading its input")]
    Stalled,
    /// More than `max_queued_bytes` wait for its stdin; the message was not queued.
    #[error("the server process's input queue is full")]
    Full,
}

/// Where a child's stdout lines go.
pub(crate) trait LineSink: Send + Sync + 'static {
    /// One line of output (not yet known to be JSON); `false` stops the child (nobody is
    /// listening any more). May wait: that is the backpressure on the child's stdout.
    fn line(&self, line: String) -> impl Future<Output = bool> + Send;
    /// The child and its process group are gone (`reason`: why): fail whatever still waits
    /// for it.
    fn closed(&self, reason: ExitReason) -> impl Future<Output = ()> + Send;
}

/// The sink of a warm child: its lines wait in a channel for the session that adopts it.
pub(crate) struct ChannelSink(mpsc::Sender<String>);

impl LineSink for ChannelSink {
    async fn line(&self, line: String) -> bool {
        match tokio::time::timeout(CONSUMER_STALL_TIMEOUT, self.0.send(line)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::warn!(
                    "the child's output has not been read for {}s; stopping it",
                    CONSUMER_STALL_TIMEOUT.as_secs()
                );
                false
            }
        }
    }

    async fn closed(&self, _: ExitReason) {}
}

/// The handle that owns a running child. Dropping it stops the child and its process group.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pid: u32,
    stdin_tx: mpsc::Sender<Bytes>,
    /// What waits for stdin, in bytes, and when the writer last made progress.
    queue: Arc<stdin::Queued>,
    max_queued_bytes: usize,
    stop: CancellationToken,
    exited: CancellationToken,
    /// Why it ended, set before `exited` is cancelled.
    reason: Arc<std::sync::OnceLock<ExitReason>>,
}

impl ChildHandle {
    /// Where the child's exit reason appears (set before [`Self::exited_token`] is cancelled).
    pub(crate) fn reason_cell(&self) -> Arc<std::sync::OnceLock<ExitReason>> {
        self.reason.clone()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one line (without newline) for the child's stdin. Beyond `max_queued_bytes`
    /// the line is refused at once (`Full`); past the queue's message count a send waits at
    /// most the stall timeout, then stops the child (`Stalled`). A child whose stdin takes no
    /// write for that long is stopped by its writer.
    pub(crate) async fn send(&self, mut line: Vec<u8>) -> Result<(), ChildError> {
        if self.exited.is_cancelled() || self.stop.is_cancelled() {
            return Err(ChildError::Gone);
        }
        // The newline goes with the message, so the writer needs one write (and the child one
        // wake-up) per message, not two.
        line.push(b'\n');
        if !self.queue.add(line.len(), self.max_queued_bytes) {
            return Err(ChildError::Full);
        }
        let len = line.len();
        match tokio::time::timeout(STDIN_SEND_TIMEOUT, self.stdin_tx.send(Bytes::from(line))).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.queue.done(len);
                // The writer stopped the child for not reading: a stall, not an exit.
                Err(if self.queue.is_stalled() {
                    ChildError::Stalled
                } else {
                    ChildError::Gone
                })
            }
            Err(_) => {
                self.queue.done(len);
                Err(self.stalled())
            }
        }
    }

    fn stalled(&self) -> ChildError {
        tracing::warn!(pid = self.pid, "child stopped reading stdin; stopping it");
        self.stop.cancel();
        ChildError::Stalled
    }

    /// Queues a line without waiting (for cancellations sent from `Drop`); false if the queue
    /// is full or the child is gone.
    pub(crate) fn try_send(&self, mut line: Vec<u8>) -> bool {
        line.push(b'\n');
        let len = line.len();
        self.queue.add(len, usize::MAX);
        let sent = self.stdin_tx.try_send(Bytes::from(line)).is_ok();
        if !sent {
            self.queue.done(len);
        }
        sent
    }

    /// Asks the child to stop (close stdin, SIGTERM, SIGKILL); returns at once.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// True once the child and its process group are gone.
    pub(crate) fn has_exited(&self) -> bool {
        self.exited.is_cancelled()
    }

    /// A token cancelled when the child is gone.
    pub(crate) fn exited_token(&self) -> CancellationToken {
        self.exited.clone()
    }
}

#[cfg(test)]
impl ChildHandle {
    /// A handle without a process: what is sent to it is written, batched as for a real child,
    /// into the returned in-memory pipe (for the multiplexer's unit tests).
    pub(crate) fn in_memory(tracker: &TaskTracker) -> (ChildHandle, tokio::io::DuplexStream) {
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let (write, read) = tokio::io::duplex(1 << 20);
        let stop = CancellationToken::new();
        let queue = Arc::new(stdin::Queued::default());
        tracker.spawn(stdin::write_stdin(
            write,
            stdin_rx,
            stop.clone(),
            ChildMetrics::default(),
            queue.clone(),
            STDIN_SEND_TIMEOUT,
        ));
        let handle = ChildHandle {
            pid: 0,
            stdin_tx,
            queue,
            max_queued_bytes: 8 << 20,
            stop,
            exited: CancellationToken::new(),
            reason: Arc::default(),
        };
        (handle, read)
    }

    /// Marks an in-memory child as gone.
    pub(crate) fn exit_in_memory(&self) {
        self.stop.cancel();
        self.exited.cancel();
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Spawns a warm child: its stdout lines wait on the returned receiver, which ends when the
/// child is gone.
pub(crate) fn spawn_warm(
    spec: &ChildSpec,
    span: tracing::Span,
    tracker: &TaskTracker,
) -> Result<(ChildHandle, mpsc::Receiver<String>), ChildError> {
    let (out_tx, out_rx) = mpsc::channel(WARM_QUEUE);
    let handle = spawn(spec, span, tracker, Arc::new(ChannelSink(out_tx)))?;
    Ok((handle, out_rx))
}

/// Spawns the child with its stdout handed line by line to `sink`. Its tasks run on
/// `tracker`, so shutdown can wait for every child to be reaped.
pub(crate) fn spawn<S: LineSink>(
    spec: &ChildSpec,
    span: tracing::Span,
    tracker: &TaskTracker,
    sink: Arc<S>,
) -> Result<ChildHandle, ChildError> {
    let spawn_error = |source| ChildError::Spawn {
        command: spec.command.clone(),
        source,
    };
    let mut prepared = match &spec.sandbox {
        Some(s) => Some(
            sandbox::prepare(s, &uuid::Uuid::new_v4().simple().to_string()).map_err(|e| {
                spec.metrics.spawn_failed();
                ChildError::Sandbox(e.to_string())
            })?,
        ),
        None => None,
    };
    let mut cmd = command::command(spec, prepared.as_mut());
    let spawned = cmd.spawn();
    // The pre-exec hook (and what it holds) goes before the parent's descriptors are closed.
    drop(cmd);
    let (mut child, running) = match (spawned, prepared) {
        (Ok(child), None) => (child, None),
        (Err(source), None) => {
            spec.metrics.spawn_failed();
            return Err(spawn_error(source));
        }
        (Ok(child), Some(p)) => (child, Some(p.started())),
        (Err(source), Some(p)) => {
            spec.metrics.spawn_failed();
            return Err(match p.failed(source) {
                sandbox::SpawnFailure::Sandbox(e) => ChildError::Sandbox(e.to_string()),
                sandbox::SpawnFailure::Exec(source) => spawn_error(source),
            });
        }
    };
    let pid = child.id().ok_or_else(|| {
        spawn_error(std::io::Error::other(
            "child exited before it could be tracked",
        ))
    })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(spawn_error(std::io::Error::other("missing stdio pipe")));
    };
    tracing::info!(parent: &span, pid, command = %spec.command, "child spawned");
    spec.metrics.spawned();

    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
    let stop = CancellationToken::new();
    let exited = CancellationToken::new();
    let queue = Arc::new(stdin::Queued::default());
    let reason = Arc::new(std::sync::OnceLock::new());
    tracker.spawn(
        stdin::write_stdin(
            stdin,
            stdin_rx,
            stop.clone(),
            spec.metrics.clone(),
            queue.clone(),
            STDIN_SEND_TIMEOUT,
        )
        .instrument(span.clone()),
    );
    tracker.spawn(actor::drain_stderr(stderr).instrument(span.clone()));
    let actor = actor::Actor {
        child,
        pgid: Pid::from_raw(pid as i32),
        sink,
        stop: stop.clone(),
        exited: exited.clone(),
        max_line_bytes: spec.max_line_bytes,
        metrics: spec.metrics.clone(),
        running,
        reason: reason.clone(),
    };
    tracker.spawn(actor.run(stdout).instrument(span));
    Ok(ChildHandle {
        pid,
        stdin_tx,
        queue,
        max_queued_bytes: spec.max_queued_bytes,
        stop,
        exited,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A sink that forwards what it gets: `Some(line)`, then `None` once the child is gone.
    struct Collect(mpsc::UnboundedSender<Option<String>>);

    impl LineSink for Collect {
        async fn line(&self, line: String) -> bool {
            self.0.send(Some(line)).is_ok()
        }
        async fn closed(&self, _: ExitReason) {
            let _ = self.0.send(None);
        }
    }

    fn sh(script: &str) -> ChildSpec {
        ChildSpec {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            max_line_bytes: 16,
            request_timeout: Duration::from_secs(60),
            max_queued_bytes: 1 << 20,
            max_pending_bytes: 1 << 20,
            metrics: ChildMetrics::default(),
            sandbox: None,
        }
    }

    /// Spawns `/bin/sh -c script` into a collecting sink.
    fn start(script: &str) -> (ChildHandle, mpsc::UnboundedReceiver<Option<String>>) {
        let tracker = TaskTracker::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let child = spawn(
            &sh(script),
            tracing::Span::none(),
            &tracker,
            Arc::new(Collect(tx)),
        )
        .expect("spawned");
        (child, rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Option<String>>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("sink alive")
    }

    /// A real process: its lines reach the sink in order (an over-long one dropped, not the
    /// end), and when it exits the sink hears so and the handle says so.
    #[tokio::test]
    async fn lines_then_exit_reach_the_sink() {
        let (child, mut rx) =
            start("echo one; echo this-line-is-over-sixteen-bytes; echo two; exit 3");
        assert_eq!(next(&mut rx).await.as_deref(), Some("one"));
        assert_eq!(next(&mut rx).await.as_deref(), Some("two"));
        assert_eq!(next(&mut rx).await, None, "closed after the exit");
        tokio::time::timeout(Duration::from_secs(10), child.exited_token().cancelled())
            .await
            .expect("exit reported");
        assert!(child.has_exited());
        assert!(matches!(
            child.send(b"x".to_vec()).await,
            Err(ChildError::Gone)
        ));
    }

    /// Stopping a child stops its whole process group, grandchildren included.
    #[tokio::test]
    async fn stop_takes_the_process_group() {
        let (child, mut rx) = start("sleep 30 & echo $!; wait");
        let grandchild = next(&mut rx).await.expect("pid");
        // Running (not a zombie): the state follows the parenthesized command name.
        let running = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|r| !r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        };
        assert!(running(), "grandchild {grandchild} started");
        child.stop();
        assert_eq!(next(&mut rx).await, None);
        tokio::time::timeout(Duration::from_secs(10), child.exited_token().cancelled())
            .await
            .expect("stopped");
        assert!(!running(), "grandchild {grandchild} outlived the stop");
    }
}
