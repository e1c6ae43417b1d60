//! The queue toward one client stream: bounded in items and, through the [`Budget`] each item
//! is charged to, in bytes. Unlike a channel, the sending side can end it: what waits is
//! dropped at once and its bytes come back, so a stream whose client stopped reading holds
//! nothing of its budget from the moment it is ended (not from the moment, maybe much later,
//! its connection closes).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::{Budget, Charge};
use crate::sync::lock;

/// What an item weighs on the budget: the bytes it holds.
pub(crate) trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for String {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// Why an item was not queued; it comes back.
#[derive(Debug)]
pub(crate) enum Refused<T> {
    /// The reader is behind: its items or its budget are full.
    Full(T),
    /// The queue was ended, or its reader is gone.
    Closed(T),
}

struct Chan<T> {
    state: Mutex<State<T>>,
    budget: Budget,
    /// Senders waiting for a free slot.
    room: Notify,
}

struct State<T> {
    items: VecDeque<(T, Charge)>,
    capacity: usize,
    /// Ended by a sender, or the reader is gone: nothing more is queued.
    closed: bool,
    senders: usize,
    reader: Option<Waker>,
}

/// The sending end; clones share the queue.
pub(crate) struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The reading end: items come out without their charge (their bytes are given back).
pub(crate) struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

/// A queue of at most `capacity` items whose bytes are charged to `budget`.
pub(crate) fn channel<T>(capacity: usize, budget: Budget) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            closed: false,
            senders: 1,
            reader: None,
        }),
        budget,
        room: Notify::new(),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("budget", &self.chan.budget)
            .finish()
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("budget", &self.chan.budget)
            .finish()
    }
}

impl<T> Chan<T> {
    /// Queues a charged item; gives it back (with its charge) when there is no slot or the
    /// queue is closed.
    fn push(&self, item: T, charge: Charge) -> Result<(), (Refused<T>, Charge)> {
        let reader = {
            let mut st = lock(&self.state);
            if st.closed {
                return Err((Refused::Closed(item), charge));
            }
            if st.items.len() >= st.capacity {
                return Err((Refused::Full(item), charge));
            }
            st.items.push_back((item, charge));
            st.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        Ok(())
    }

    /// Waits for a slot; `Err` once the queue is closed.
    async fn push_waiting(&self, mut item: T, mut charge: Charge) -> Result<(), T> {
        loop {
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            match self.push(item, charge) {
                Ok(()) => return Ok(()),
                Err((Refused::Closed(back), _)) => return Err(back),
                Err((Refused::Full(back), kept)) => (item, charge) = (back, kept),
            }
            room.await;
        }
    }

    /// Ends the queue: nothing more is queued, what waits is dropped (its bytes come back).
    fn close(&self) {
        let (items, reader) = {
            let mut st = lock(&self.state);
            st.closed = true;
            (std::mem::take(&mut st.items), st.reader.take())
        };
        drop(items);
        if let Some(reader) = reader {
            reader.wake();
        }
        self.room.notify_waiters();
    }
}

impl<T: Weigh> Sender<T> {
    /// The budget this queue charges.
    pub(crate) fn budget(&self) -> &Budget {
        &self.chan.budget
    }

    /// Queues without waiting.
    pub(crate) fn try_send(&self, item: T) -> Result<(), Refused<T>> {
        let Some(charge) = self.chan.budget.try_charge(item.weight()) else {
            return Err(if self.is_closed() {
                Refused::Closed(item)
            } else {
                Refused::Full(item)
            });
        };
        self.chan.push(item, charge).map_err(|(refused, _)| refused)
    }

    /// Queues an item the proxy makes itself (small, one per request: a timeout, a child
    /// exit), counted on the budget but never refused for bytes.
    pub(crate) fn try_send_anyway(&self, item: T) -> Result<(), Refused<T>> {
        let charge = self.chan.budget.charge_anyway(item.weight());
        self.chan.push(item, charge).map_err(|(refused, _)| refused)
    }

    /// Queues, waiting for bytes and for a slot as long as it takes (callers bound the wait);
    /// `Err` when the queue is closed.
    pub(crate) async fn send(&self, item: T) -> Result<(), T> {
        let charge = self.chan.budget.charge(item.weight()).await;
        self.chan.push_waiting(item, charge).await
    }

    /// As [`Sender::try_send_anyway`], waiting for a slot.
    pub(crate) async fn send_anyway(&self, item: T) -> Result<(), T> {
        let charge = self.chan.budget.charge_anyway(item.weight());
        self.chan.push_waiting(item, charge).await
    }
}

impl<T> Sender<T> {
    /// Ends the stream: what waits is dropped and its bytes come back; the reader gets `None`
    /// next. For a reader that fell behind — it would not read what waits anyway.
    pub(crate) fn close(&self) {
        self.chan.close();
    }

    /// Whether the queue was ended or its reader is gone.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.chan.state).closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.chan.state).senders += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let reader = {
            let mut st = lock(&self.chan.state);
            st.senders -= 1;
            if st.senders > 0 {
                return;
            }
            st.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, once there is one; `None` when the queue was ended, or every sender is
    /// gone and nothing waits.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let next = {
            let mut st = lock(&self.chan.state);
            match st.items.pop_front() {
                Some(next) => next,
                None if st.closed || st.senders == 0 => return Poll::Ready(None),
                None => {
                    if !st.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        st.reader = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        self.chan.room.notify_one();
        // The charge drops here, outside the lock: the item's bytes are given back.
        let (item, _charge) = next;
        Poll::Ready(Some(item))
    }

    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one waits.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        let (item, _charge) = lock(&self.chan.state).items.pop_front()?;
        self.chan.room.notify_one();
        Some(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.chan.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn s(n: usize) -> String {
        "x".repeat(n)
    }

    /// The queue's bytes come back as the reader takes items, when the queue is ended by its
    /// sender (at once, whatever the reader does), and when the reader is dropped.
    #[tokio::test]
    async fn bytes_come_back_when_items_leave_the_queue() {
        let budget = Budget::new(10);
        let (tx, mut rx) = channel(8, budget.clone());
        tx.try_send(s(6)).expect("fits");
        assert!(matches!(tx.try_send(s(5)), Err(Refused::Full(_))));
        tx.try_send_anyway(s(5))
            .expect("the proxy's own answer is not refused for bytes");
        assert_eq!(budget.used(), 11);
        assert_eq!(rx.recv().await.map(|l| l.len()), Some(6));
        assert_eq!(budget.used(), 5);
        assert!(tx.send(s(4)).await.is_ok());
        assert_eq!(budget.used(), 9);

        tx.close();
        assert_eq!(
            budget.used(),
            0,
            "an ended queue gives its bytes back at once"
        );
        assert!(rx.recv().await.is_none(), "the reader sees the end");
        assert!(matches!(tx.try_send(s(1)), Err(Refused::Closed(_))));

        let (tx, rx) = channel(8, budget.clone());
        tx.try_send(s(3)).expect("fits");
        drop(rx);
        assert_eq!(budget.used(), 0, "a dropped reader gives its bytes back");
        assert!(tx.is_closed());
    }

    /// Items are bounded in number too; a waiting sender gets the slot the reader frees.
    #[tokio::test]
    async fn a_waiting_sender_gets_the_freed_slot() {
        let (tx, mut rx) = channel(1, Budget::new(1 << 20));
        tx.try_send(s(1)).expect("fits");
        assert!(matches!(tx.try_send(s(1)), Err(Refused::Full(_))));
        let (sent, first) = tokio::join!(tx.send(s(2)), async {
            tokio::task::yield_now().await;
            rx.recv().await
        });
        assert!(sent.is_ok());
        assert_eq!(first.map(|l| l.len()), Some(1));
        assert_eq!(rx.try_recv().map(|l| l.len()), Some(2));
        let waiting = tokio::time::timeout(Duration::from_millis(10), async {
            tx.try_send(s(1)).expect("fits");
            tx.send(s(1)).await
        })
        .await;
        assert!(waiting.is_err(), "no slot, no reader taking one");
        drop(tx);
        assert_eq!(
            rx.recv().await.map(|l| l.len()),
            Some(1),
            "what waits still comes"
        );
        assert!(
            rx.recv().await.is_none(),
            "then the end: every sender is gone"
        );
    }
}
