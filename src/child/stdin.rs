//! Feeding a child's stdin from its bounded queue, several waiting messages in one write.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::ChildMetrics;

/// Queued messages are joined into one write up to about this many bytes.
const STDIN_BATCH_BYTES: usize = 64 * 1024;

/// What waits for a child's stdin, in bytes (the bound of `sessions.max_queued_bytes`), and
/// whether the writer gave up on a child that stopped reading.
#[derive(Debug, Default)]
pub(super) struct Queued {
    bytes: AtomicUsize,
    /// Set when a write made no progress for the stall timeout and the child was stopped.
    stalled: AtomicBool,
}

impl Queued {
    /// Counts `len` more bytes unless that passes `max` (one message always fits an empty
    /// queue); false when refused.
    pub(super) fn add(&self, len: usize, max: usize) -> bool {
        let before = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before.saturating_add(len) > max {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// `len` bytes left the queue (written, or never queued).
    pub(super) fn done(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }

    /// Whether the child was stopped for not reading its stdin.
    pub(super) fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }
}

/// Writes queued messages (each already ending in a newline) to the child's stdin. When
/// several are waiting they go out in one write: one syscall and one wake-up of the child.
/// Returning drops stdin, which closes the pipe: the polite first step of stopping a stdio
/// server (spec 2026-07-28 stdio §Shutdown).
pub(super) async fn write_stdin(
    mut stdin: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
    metrics: ChildMetrics,
    queue: std::sync::Arc<Queued>,
    stall: Duration,
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
        // A write that makes no progress for `stall` means the child stopped reading: it is
        // stopped, and its session with it (DESIGN §6), rather than holding the queue forever.
        let written = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(stall, async {
                stdin.write_all(out).await?;
                stdin.flush().await
            }) => match r {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("child stopped reading stdin for {}s; stopping it", stall.as_secs());
                    queue.stalled.store(true, Ordering::Release);
                    stop.cancel();
                    break;
                }
            },
        };
        // Written or not, these bytes no longer wait.
        queue.done(out.len());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The byte bound: one message always fits an empty queue; beyond the bound a message is
    /// refused until written bytes leave.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let q = Queued::default();
        assert!(q.add(10, 4), "an empty queue takes one message of any size");
        assert!(!q.add(1, 4), "then nothing more");
        q.done(10);
        assert!(q.add(3, 4));
        assert!(q.add(1, 4));
        assert!(!q.add(1, 4));
        assert!(!q.is_stalled());
    }

    /// Messages queued while a write is under way leave in one batch, in order, intact.
    #[tokio::test]
    async fn queued_messages_arrive_in_order() {
        let (w, mut r) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(16);
        for i in 0..10 {
            tx.send(Bytes::from(format!("{{\"n\":{i}}}\n")))
                .await
                .expect("queued");
        }
        drop(tx);
        let queue = std::sync::Arc::new(Queued::default());
        write_stdin(
            w,
            rx,
            CancellationToken::new(),
            ChildMetrics::default(),
            queue,
            Duration::from_secs(10),
        )
        .await;
        let mut out = String::new();
        r.read_to_string(&mut out).await.expect("read");
        let expected: String = (0..10).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        assert_eq!(out, expected);
    }
}
