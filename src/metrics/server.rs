//! The per-server families (children, spawns, exits, relayed traffic) and the handles of one
//! server into them, resolved once per server so that relaying a message looks nothing up.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::child::exit_reason_label;
use super::{
    ChildMetrics, DirectionLabels, ExitLabels, ExitReason, ServerLabels, ServerMetrics, SpawnLabels,
};

/// The families whose series are per server.
pub(super) struct ServerFamilies {
    pub(super) children_active: Family<ServerLabels, Gauge>,
    pub(super) spawns: Family<SpawnLabels, Counter>,
    pub(super) exits: Family<ExitLabels, Counter>,
    pub(super) relayed_bytes: Family<DirectionLabels, Counter>,
    pub(super) relayed_messages: Family<DirectionLabels, Counter>,
}

impl ServerFamilies {
    /// The handles of server `name` (its series are created now, at zero).
    pub(super) fn handles(&self, name: &str) -> ServerMetrics {
        let server = || name.to_owned();
        let exit = |reason: ExitReason| {
            self.exits.get_or_create_owned(&ExitLabels {
                server: server(),
                reason: exit_reason_label(reason),
            })
        };
        let relay = |family: &Family<DirectionLabels, Counter>, direction| {
            family.get_or_create_owned(&DirectionLabels {
                server: server(),
                direction,
            })
        };
        let spawn = |result| {
            self.spawns.get_or_create_owned(&SpawnLabels {
                server: server(),
                result,
            })
        };
        ServerMetrics {
            child: ChildMetrics {
                children_active: self
                    .children_active
                    .get_or_create_owned(&ServerLabels { server: server() }),
                spawned: spawn("ok"),
                spawn_failed: spawn("error"),
                exit_stopped: exit(ExitReason::Stopped),
                exit_exited: exit(ExitReason::Exited),
                exit_consumer_gone: exit(ExitReason::ConsumerGone),
                exit_oom: exit(ExitReason::Oom),
                exit_pids: exit(ExitReason::Pids),
                bytes_to_child: relay(&self.relayed_bytes, "to_child"),
                bytes_from_child: relay(&self.relayed_bytes, "from_child"),
                messages_to_child: relay(&self.relayed_messages, "to_child"),
                messages_from_child: relay(&self.relayed_messages, "from_child"),
            },
        }
    }
}
