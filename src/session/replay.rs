//! The replay buffer of a Streamable HTTP session's standalone GET stream (spec 2025-11-25 Transports
//! §Listening for Messages from the Server): server-initiated requests and notifications,
//! each with an event id, kept in a bounded buffer so a reconnecting client can ask for what it
//! missed with `Last-Event-ID` (§Resumability and Redelivery).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::budget::Budget;
use crate::budget::queue::{self, Refused, Weigh};
use crate::mux::{Delivery, Unrouted};

/// Events kept for replay, besides `sessions.replay_buffer_bytes`; older ones are forgotten.
const REPLAY_BUFFER: usize = 256;
/// Events waiting for the connected GET stream, besides the session's byte budget.
const STREAM_QUEUE: usize = 256;

/// One event of the GET stream.
pub(crate) type StreamEvent = (u64, Arc<str>);

impl Weigh for StreamEvent {
    fn weight(&self) -> usize {
        self.1.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_event: u64,
    buffer: VecDeque<StreamEvent>,
    /// Bytes of the lines in `buffer`.
    buffer_bytes: usize,
    /// Highest event id handed to a connected stream.
    delivered: u64,
    tx: Option<queue::Sender<StreamEvent>>,
}

impl Inner {
    /// Keeps an event for replay, forgetting the oldest beyond the event and byte bounds (the
    /// newest is always kept, whatever its size).
    fn keep(&mut self, id: u64, line: Arc<str>, max_bytes: usize) {
        self.buffer_bytes += line.len();
        self.buffer.push_back((id, line));
        while self.buffer.len() > REPLAY_BUFFER
            || (self.buffer_bytes > max_bytes && self.buffer.len() > 1)
        {
            let Some((_, old)) = self.buffer.pop_front() else {
                break;
            };
            self.buffer_bytes -= old.len();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Standalone {
    inner: Mutex<Inner>,
    /// The session's budget: what waits for the GET stream, and for the session's POST
    /// streams (`sessions.max_pending_bytes`).
    budget: Budget,
    /// `sessions.replay_buffer_bytes`.
    replay_bytes: usize,
}

impl Standalone {
    /// The GET stream of a session whose pending bytes are charged to `budget`, keeping at
    /// most `replay_bytes` of events for replay.
    pub(crate) fn new(budget: Budget, replay_bytes: usize) -> Self {
        Standalone {
            inner: Mutex::new(Inner::default()),
            budget,
            replay_bytes,
        }
    }

    /// The session's budget, for the queues of its POST streams.
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Connects a new GET stream, replacing any previous one (a client reconnecting after a
    /// half-dead connection must not be locked out). Replays the events after
    /// `last_event_id`, or, without it, those never handed to a stream.
    pub(crate) fn connect(&self, last_event_id: Option<u64>) -> queue::Receiver<StreamEvent> {
        let (tx, rx) = queue::channel(STREAM_QUEUE.max(REPLAY_BUFFER), self.budget.clone());
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
        inner.keep(id, line.clone(), self.replay_bytes);
        if let Some(tx) = &inner.tx {
            match tx.try_send((id, line)) {
                Ok(()) => {
                    inner.delivered = id;
                    return Delivery::Delivered;
                }
                // A client that does not read (events or bytes): its stream ends, what waited
                // for it is dropped at once; it can resume with Last-Event-ID.
                Err(Refused::Full(_)) => tx.close(),
                Err(Refused::Closed(_)) => {}
            }
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

    fn ids(rx: &mut queue::Receiver<StreamEvent>) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv().map(|e| e.0)).collect()
    }

    #[test]
    fn replay_after_last_event_id_is_exact() {
        let s = Standalone::new(Budget::new(1 << 20), 1 << 20);
        // Nothing connected: buffered.
        assert_eq!(s.deliver("a".into(), false), Delivery::Buffered);
        let mut rx = s.connect(None);
        assert_eq!(
            rx.try_recv().map(|e| e.0),
            Some(1),
            "undelivered event handed over"
        );
        assert_eq!(s.deliver("b".into(), false), Delivery::Delivered);
        assert_eq!(s.deliver("c".into(), false), Delivery::Delivered);
        drop(rx);
        assert_eq!(s.deliver("d".into(), false), Delivery::Buffered);
        let mut rx = s.connect(Some(2));
        assert_eq!(ids(&mut rx), vec![3, 4]);
    }

    /// The replay buffer keeps at most `replay_buffer_bytes`: the oldest events go first, and
    /// the newest is kept whatever its size.
    #[test]
    fn the_replay_buffer_is_bounded_in_bytes() {
        let s = Standalone::new(Budget::new(1 << 20), 250);
        for _ in 0..10 {
            s.deliver("x".repeat(100), false);
        }
        assert_eq!(lock(&s.inner).buffer_bytes, 200);
        assert_eq!(
            ids(&mut s.connect(Some(0))),
            vec![9, 10],
            "two of 100 bytes fit 250"
        );
        s.deliver("y".repeat(1000), false);
        assert_eq!(lock(&s.inner).buffer_bytes, 1000);
        assert_eq!(
            ids(&mut s.connect(Some(0))),
            vec![11],
            "an event larger than the buffer is kept alone"
        );
    }

    /// The connected stream's queue is charged to the session's budget: a client that lets
    /// the budget fill is disconnected (it can resume with Last-Event-ID), and what it had not
    /// taken gives its bytes back at once, though its connection is still open.
    #[test]
    fn the_get_stream_is_charged_to_the_session_budget() {
        let budget = Budget::new(300);
        let s = Standalone::new(budget.clone(), 1 << 20);
        let mut rx = s.connect(None);
        for _ in 0..3 {
            assert_eq!(s.deliver("x".repeat(100), false), Delivery::Delivered);
        }
        assert_eq!(budget.used(), 300);
        assert_eq!(
            s.deliver("x".repeat(100), false),
            Delivery::Buffered,
            "beyond the budget: disconnected"
        );
        assert!(!s.is_connected());
        assert_eq!(budget.used(), 0, "the unread events gave their bytes back");
        assert!(rx.try_recv().is_none(), "and the stream ends");
        drop(rx);
        let mut rx = s.connect(Some(3));
        assert_eq!(ids(&mut rx), vec![4], "resumed after the last event it saw");
        assert_eq!(budget.used(), 0, "taken events hold nothing");
    }
}
