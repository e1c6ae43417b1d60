//! Feeding a child's stdin from its bounded queue, several waiting messages in one write.

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::ChildMetrics;

/// Queued messages are joined into one write up to about this many bytes.
const STDIN_BATCH_BYTES: usize = 64 * 1024;

/// Writes queued messages (each already ending in a newline) to the child's stdin. When
/// several are waiting they go out in one write: one syscall and one wake-up of the child.
/// Returning drops stdin, which closes the pipe: the polite first step of stopping a stdio
/// server (spec 2026-07-28 stdio §Shutdown).
pub(super) async fn write_stdin(
    mut stdin: impl AsyncWrite + Unpin,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

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
        write_stdin(w, rx, CancellationToken::new(), ChildMetrics::default()).await;
        let mut out = String::new();
        r.read_to_string(&mut out).await.expect("read");
        let expected: String = (0..10).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        assert_eq!(out, expected);
    }
}
