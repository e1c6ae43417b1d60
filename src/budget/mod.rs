//! A byte budget for what waits for a slow reader (issue 13: memory bounded in bytes, not in
//! messages): a queued item carries its [`Charge`], which gives its bytes back when the item is
//! consumed or dropped, wherever that happens. One item always fits an empty budget, so a
//! single answer larger than the whole budget is still delivered to a client that keeps up.
//! [`queue`]: the queue toward one client stream whose items carry their charges.

pub(crate) mod queue;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes that may wait, shared by everything charged to it. Cloning shares the budget.
#[derive(Debug, Clone)]
pub(crate) struct Budget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    used: AtomicUsize,
    max: usize,
    /// Tasks in [`Budget::charge`] waiting for room; a charge only wakes anyone when > 0, so
    /// the common drop is a subtraction and a load.
    waiting: AtomicUsize,
    freed: Notify,
}

/// Bytes held on a [`Budget`] until dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Inner>,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Budget(Arc::new(Inner {
            used: AtomicUsize::new(0),
            max,
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }))
    }

    /// Charges `bytes` unless that passes the maximum while something else is charged (one
    /// item of any size fits an empty budget); `None` when refused.
    pub(crate) fn try_charge(&self, bytes: usize) -> Option<Charge> {
        // A compare-and-swap rather than add-then-undo: a refusal never touches `used`, so it
        // can neither wake the waiters for nothing nor make one of them miss room.
        let mut used = self.0.used.load(Ordering::SeqCst);
        loop {
            if used > 0 && used.saturating_add(bytes) > self.0.max {
                return None;
            }
            match self.0.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(self.charge_of(bytes)),
                Err(now) => used = now,
            }
        }
    }

    /// Charges `bytes` whatever the budget holds: for the proxy's own answers (a timeout, a
    /// child exit), which are small and one per request, so that a full budget never leaves a
    /// request without its answer.
    pub(crate) fn charge_anyway(&self, bytes: usize) -> Charge {
        self.0.used.fetch_add(bytes, Ordering::SeqCst);
        self.charge_of(bytes)
    }

    /// Charges `bytes`, waiting until there is room (for a stream whose producer waits, with
    /// a timeout around it). Cancel-safe: dropping the future charges nothing.
    pub(crate) async fn charge(&self, bytes: usize) -> Charge {
        loop {
            if let Some(charge) = self.try_charge(bytes) {
                return charge;
            }
            let mut freed = pin!(self.0.freed.notified());
            freed.as_mut().enable();
            let _waiting = Waiting::new(&self.0);
            // Bytes given back before `_waiting` counted us went unnoticed: look again.
            if let Some(charge) = self.try_charge(bytes) {
                return charge;
            }
            freed.await;
        }
    }

    /// Bytes charged right now.
    pub(crate) fn used(&self) -> usize {
        self.0.used.load(Ordering::SeqCst)
    }

    fn charge_of(&self, bytes: usize) -> Charge {
        Charge {
            budget: self.0.clone(),
            bytes,
        }
    }
}

impl Inner {
    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Counts one waiter of [`Budget::charge`] for as long as it waits (also when its future is
/// dropped mid-wait).
struct Waiting<'a>(&'a Inner);

impl<'a> Waiting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Charges add up to the maximum and come back on drop; one item larger than the whole
    /// budget passes only when nothing else is charged.
    #[test]
    fn charges_are_bounded_and_given_back_on_drop() {
        let budget = Budget::new(10);
        let a = budget.try_charge(6).expect("fits");
        let b = budget.try_charge(4).expect("fits exactly");
        assert_eq!(budget.used(), 10);
        assert!(budget.try_charge(1).is_none(), "full");
        assert_eq!(budget.used(), 10, "a refusal charges nothing");
        drop(a);
        assert_eq!(budget.used(), 4);
        assert!(budget.try_charge(7).is_none(), "4 + 7 > 10");
        let c = budget.try_charge(6).expect("4 + 6 fits");
        drop((b, c));
        assert_eq!(budget.used(), 0);

        let big = budget
            .try_charge(100)
            .expect("one item of any size fits an empty budget");
        assert!(budget.try_charge(1).is_none(), "then nothing more");
        drop(big);
        let small = budget.try_charge(1).expect("fits");
        assert!(
            budget.try_charge(100).is_none(),
            "an oversized item waits for an empty budget"
        );
        let own = budget.charge_anyway(50);
        assert_eq!(budget.used(), 51, "the proxy's own answers are counted");
        drop((small, own));
        assert_eq!(budget.used(), 0);
    }

    /// A waiting charge is served when bytes come back, and a cancelled wait charges nothing.
    #[tokio::test]
    async fn a_waiting_charge_gets_room_when_bytes_come_back() {
        let budget = Budget::new(10);
        let held = budget.try_charge(8).expect("fits");
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.charge(5).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "8 + 5 does not fit");
        drop(held);
        let charge = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(budget.used(), 5);
        let cancelled = tokio::time::timeout(Duration::from_millis(10), budget.charge(6)).await;
        assert!(cancelled.is_err(), "5 + 6 does not fit");
        assert_eq!(budget.used(), 5, "a cancelled wait charges nothing");
        assert_eq!(budget.0.waiting.load(Ordering::SeqCst), 0);
        drop(charge);
        assert_eq!(budget.used(), 0);
    }
}
