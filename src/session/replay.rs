//! The replay buffer of a Streamable HTTP session's standalone GET stream (spec 2025-11-25 Transports
//! §Listening for Messages from the Server): server-initiated requests and notifications,
//! each with an event id, kept in a bounded buffer so a reconnecting client can ask for what it
//! missed with `Last-Event-ID` (§Resumability and Redelivery).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::lock;
use crate::mux::{Delivery, Unrouted};

/// Events kept for replay; older ones are forgotten.
const REPLAY_BUFFER: usize = 256;
/// Events waiting for the connected GET stream.
const STREAM_QUEUE: usize = 256;

/// One event of the GET stream.
pub(crate) type StreamEvent = (u64, Arc<str>);

#[derive(Debug, Default)]
struct Inner {
    next_event: u64,
    buffer: VecDeque<StreamEvent>,
    /// Highest event id handed to a connected stream.
    delivered: u64,
    tx: Option<mpsc::Sender<StreamEvent>>,
}

#[derive(Debug, Default)]
pub(crate) struct Standalone {
    inner: Mutex<Inner>,
}

impl Standalone {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Connects a new GET stream, replacing any previous one (a client reconnecting after a
    /// half-dead connection must not be locked out). Replays the events after
    /// `last_event_id`, or, without it, those never handed to a stream.
    pub(crate) fn connect(&self, last_event_id: Option<u64>) -> mpsc::Receiver<StreamEvent> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE.max(REPLAY_BUFFER));
        let mut inner = lock(&self.inner);
        let after = last_event_id.unwrap_or(inner.delivered);
        let mut last = inner.delivered;
        for (id, line) in inner.buffer.iter().filter(|(id, _)| *id > after) {
            if tx.try_send((*id, line.clone())).is_err() {
                break;
            }
            last = last.max(*id);
        }
        inner.delivered = last;
        inner.tx = Some(tx);
        rx
    }
}

impl Unrouted for Standalone {
    fn deliver(&self, line: String, _server_request: bool) -> Delivery {
        let mut inner = lock(&self.inner);
        inner.next_event += 1;
        let id = inner.next_event;
        let line: Arc<str> = line.into();
        if inner.buffer.len() == REPLAY_BUFFER {
            inner.buffer.pop_front();
        }
        inner.buffer.push_back((id, line.clone()));
        if let Some(tx) = &inner.tx {
            if tx.try_send((id, line)).is_ok() {
                inner.delivered = id;
                return Delivery::Delivered;
            }
            // Closed, or a client that does not read: it can resume with Last-Event-ID.
            inner.tx = None;
        }
        Delivery::Buffered
    }

    fn is_connected(&self) -> bool {
        lock(&self.inner)
            .tx
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_after_last_event_id_is_exact() {
        let s = Standalone::new();
        // Nothing connected: buffered.
        assert_eq!(s.deliver("a".into(), false), Delivery::Buffered);
        let mut rx = s.connect(None);
        assert_eq!(
            rx.try_recv().ok().map(|e| e.0),
            Some(1),
            "undelivered event handed over"
        );
        assert_eq!(s.deliver("b".into(), false), Delivery::Delivered);
        assert_eq!(s.deliver("c".into(), false), Delivery::Delivered);
        drop(rx);
        assert_eq!(s.deliver("d".into(), false), Delivery::Buffered);
        let mut rx = s.connect(Some(2));
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok().map(|e| e.0)).collect();
        assert_eq!(got, vec![3, 4]);
    }
}
