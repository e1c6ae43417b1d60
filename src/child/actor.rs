//! The task that owns a running child: reads its stdout line by line into the sink, and when
//! the child exits, is asked to stop, or nobody reads its output any more, stops its whole
//! process group (stdin closed, SIGTERM, SIGKILL) and tells the sink.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::process::Child;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::framing::{BoundedLines, Frame};
use super::{LineSink, STDIN_CLOSE_GRACE, TERM_GRACE};
use crate::metrics::{ChildMetrics, ExitReason};

/// After the child exits, how long its stdout may still deliver buffered lines.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// Longest stderr line logged; longer ones are cut.
const MAX_STDERR_LINE: usize = 8 * 1024;

pub(super) struct Actor<S> {
    pub(super) child: Child,
    pub(super) pgid: Pid,
    pub(super) sink: Arc<S>,
    pub(super) stop: CancellationToken,
    pub(super) exited: CancellationToken,
    pub(super) max_line_bytes: usize,
    pub(super) metrics: ChildMetrics,
    /// The sandbox's cgroup and TMPDIR, removed once the tree is gone.
    pub(super) running: Option<super::sandbox::Running>,
    /// Where the handle learns why the child ended.
    pub(super) reason: Arc<std::sync::OnceLock<ExitReason>>,
}

impl<S: LineSink> Actor<S> {
    pub(super) async fn run(mut self, stdout: impl AsyncRead + Unpin) {
        let mut lines = FramedRead::new(stdout, BoundedLines::new(self.max_line_bytes));
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
                                Some(Ok(Frame::Line(line))) => {
                                    if !self.sink.line(line).await { break; }
                                }
                                Some(Ok(bad)) => self.dropped(&bad),
                                _ => break,
                            }
                        }
                    }
                    break ExitReason::Exited;
                }
                line = lines.next() => match line {
                    Some(Ok(Frame::Line(line))) => {
                        if !self.sink.line(line).await {
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
        let reason = match self.running.take() {
            Some(running) => running.finish(reason).await,
            None => reason,
        };
        match reason {
            ExitReason::Oom => tracing::warn!(
                status = %DisplayStatus(status),
                "child killed: its tree exceeded sandbox.memory_max_bytes"
            ),
            ExitReason::Pids => tracing::warn!(
                status = %DisplayStatus(status),
                "child exited after its tree reached sandbox.pids_max"
            ),
            _ => tracing::info!(?reason, status = %DisplayStatus(status), "child gone"),
        }
        self.metrics.exited(reason);
        let _ = self.reason.set(reason);
        self.sink.closed(reason).await;
        self.exited.cancel();
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
}

/// Logs the child's stderr line by line, bounded.
pub(super) async fn drain_stderr(stderr: impl AsyncRead + Unpin) {
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
