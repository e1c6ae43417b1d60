//! What the sessions sharing one child (`child_scope = "principal" | "shared"`) share: the
//! child's `initialize` result, and a broadcast of its unrouted messages to every session's
//! GET stream.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::lock;
use super::replay::Standalone;
use crate::mux::{Delivery, Unrouted};

/// The child is initialized once (the first session's `initialize` goes through, later ones
/// are answered from its result), and messages that belong to no request reach every
/// session's GET stream.
#[derive(Debug, Default)]
pub(crate) struct SessionShare {
    /// The `result` of the child's `InitializeResult`, once known.
    pub(crate) init: tokio::sync::Mutex<Option<String>>,
    /// Whether `notifications/initialized` was forwarded (it must be, once).
    pub(crate) initialized_sent: AtomicBool,
    pub(crate) broadcast: Arc<Broadcast>,
}

/// The GET streams of every session sharing one child: notifications go to all of them, a
/// server request to one (a request must be answered once).
#[derive(Debug, Default)]
pub(crate) struct Broadcast {
    members: Mutex<Vec<std::sync::Weak<Standalone>>>,
}

impl Broadcast {
    pub(crate) fn add(&self, member: &Arc<Standalone>) {
        let mut members = lock(&self.members);
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(member));
    }

    fn live(&self) -> Vec<Arc<Standalone>> {
        let mut members = lock(&self.members);
        members.retain(|m| m.strong_count() > 0);
        members
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }
}

impl Unrouted for Broadcast {
    fn deliver(&self, line: String, server_request: bool) -> Delivery {
        let live = self.live();
        if server_request {
            let target = live
                .iter()
                .find(|m| m.is_connected())
                .or_else(|| live.first());
            return match target {
                Some(m) => m.deliver(line, true),
                None => Delivery::Buffered,
            };
        }
        let mut delivered = Delivery::Buffered;
        for m in &live {
            if m.deliver(line.clone(), false) == Delivery::Delivered {
                delivered = Delivery::Delivered;
            }
        }
        delivered
    }

    fn is_connected(&self) -> bool {
        self.live().iter().any(|m| m.is_connected())
    }
}
