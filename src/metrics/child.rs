//! What a child's life records: spawns, the live count, exits by reason, and the JSON-RPC
//! traffic through its stdin and stdout.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Why a child ended (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// Stopped by the proxy (session ended, shutdown).
    Stopped,
    /// Exited by itself or closed its stdout.
    Exited,
    /// Nobody is reading its output any more.
    ConsumerGone,
    /// Killed by the OOM killer at its cgroup's memory limit (`sandbox.memory_max_bytes`).
    Oom,
    /// Exited after its tree hit the cgroup's process limit (`sandbox.pids_max`).
    Pids,
}

/// What a child's life records: spawns, the live count, exits by reason, and the JSON-RPC
/// traffic through its stdin and stdout (whatever the transport).
#[derive(Debug, Clone, Default)]
pub(crate) struct ChildMetrics {
    pub(super) children_active: Gauge,
    pub(super) spawned: Counter,
    pub(super) spawn_failed: Counter,
    pub(super) exit_stopped: Counter,
    pub(super) exit_exited: Counter,
    pub(super) exit_consumer_gone: Counter,
    pub(super) exit_oom: Counter,
    pub(super) exit_pids: Counter,
    pub(super) bytes_to_child: Counter,
    pub(super) bytes_from_child: Counter,
    pub(super) messages_to_child: Counter,
    pub(super) messages_from_child: Counter,
}

impl ChildMetrics {
    /// One line written to the child's stdin (its length without the newline).
    pub(crate) fn relayed_to_child(&self, bytes: usize) {
        self.messages_to_child.inc();
        self.bytes_to_child.inc_by(bytes as u64);
    }

    /// One JSON line read from the child's stdout and passed on.
    pub(crate) fn relayed_from_child(&self, bytes: usize) {
        self.messages_from_child.inc();
        self.bytes_from_child.inc_by(bytes as u64);
    }

    pub(crate) fn spawned(&self) {
        self.spawned.inc();
        self.children_active.inc();
    }

    pub(crate) fn spawn_failed(&self) {
        self.spawn_failed.inc();
    }

    /// The child and its process group are gone.
    pub(crate) fn exited(&self, reason: ExitReason) {
        self.children_active.dec();
        match reason {
            ExitReason::Stopped => self.exit_stopped.inc(),
            ExitReason::Exited => self.exit_exited.inc(),
            ExitReason::ConsumerGone => self.exit_consumer_gone.inc(),
            ExitReason::Oom => self.exit_oom.inc(),
            ExitReason::Pids => self.exit_pids.inc(),
        };
    }
}

/// The label value of an exit reason.
pub(super) fn exit_reason_label(reason: ExitReason) -> &'static str {
    match reason {
        ExitReason::Stopped => "stopped",
        ExitReason::Exited => "exited",
        ExitReason::ConsumerGone => "consumer_gone",
        ExitReason::Oom => "oom",
        ExitReason::Pids => "pids",
    }
}
