//! The warm pool (`warm_pool = N`, DESIGN §3): N children of a server spawned ahead of need
//! and handed to new sessions, so a session does not pay the server's start-up (hundreds of ms
//! for a Node or Python server). A warm child is spawned before its caller is known, so only
//! servers whose environment does not depend on the caller have one (config validation).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::child::{self, ChildHandle, ChildSpec};
use crate::sync::lock;

/// A spawned, not yet initialized child and its output.
pub(crate) struct Warm {
    pub(crate) child: ChildHandle,
    pub(crate) output: mpsc::Receiver<String>,
}

pub(crate) struct WarmPool {
    server: String,
    target: usize,
    spec: ChildSpec,
    ready: Mutex<VecDeque<Warm>>,
    refilling: AtomicBool,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl WarmPool {
    pub(crate) fn new(
        server: &str,
        target: usize,
        spec: ChildSpec,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            server: server.to_owned(),
            target,
            spec,
            ready: Mutex::new(VecDeque::new()),
            refilling: AtomicBool::new(false),
            tracker,
            shutdown,
        })
    }

    /// A ready child, if one is alive; starts a refill either way.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Warm> {
        let warm = {
            let mut ready = lock(&self.ready);
            let mut found = None;
            while let Some(w) = ready.pop_front() {
                if !w.child.has_exited() {
                    found = Some(w);
                    break;
                }
            }
            found
        };
        self.refill();
        warm
    }

    /// Spawns children until `target` are ready (one refill task at a time). Runs on the
    /// runtime's worker threads: a child's parent-death signal is tied to the spawning thread.
    pub(crate) fn refill(self: &Arc<Self>) {
        if self.shutdown.is_cancelled() || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        self.tracker.spawn(async move {
            loop {
                let missing = {
                    let mut ready = lock(&pool.ready);
                    ready.retain(|w| !w.child.has_exited());
                    pool.target.saturating_sub(ready.len())
                };
                if missing == 0 || pool.shutdown.is_cancelled() {
                    break;
                }
                let span = tracing::info_span!("warm", server = %pool.server);
                match child::spawn_warm(&pool.spec, span, &pool.tracker) {
                    Ok((child, output)) => lock(&pool.ready).push_back(Warm { child, output }),
                    Err(e) => {
                        tracing::warn!(server = %pool.server, error = %e, "warm child could not be spawned");
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }

    /// Pids of the children ready now (tests).
    pub(crate) fn pids(&self) -> Vec<u32> {
        lock(&self.ready).iter().map(|w| w.child.pid()).collect()
    }

    /// Stops every warm child (shutdown).
    pub(crate) fn clear(&self) {
        lock(&self.ready).clear();
    }
}
