//! Bounded waits for a condition that becomes true on its own (a child reaped, a gauge moved):
//! every wait in the tests has a deadline, so a regression fails with a message, never hangs.

use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked: short next to any deadline used here.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `cond` until it holds or `within` has passed; true if it held. For callers that
/// build their own failure message from what the condition saw.
pub async fn wait_until(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Checks `cond` until it holds; panics with `what` once `within` has passed.
pub async fn eventually(within: Duration, what: &str, cond: impl AsyncFnMut() -> bool) {
    assert!(wait_until(within, cond).await, "{what}");
}

/// Waits (bounded) until `count()` returns `want`; returns the last value seen, for the caller
/// to assert on.
pub async fn wait_for_count(
    mut count: impl FnMut() -> usize,
    want: usize,
    within: Duration,
) -> usize {
    // `wait_until` checks at least once, so `seen` is always a value `count` returned.
    let mut seen = 0;
    wait_until(within, async || {
        seen = count();
        seen == want
    })
    .await;
    seen
}
