//! Tasks: one scheduled instance of a service, and the one place the task state machine lives.

use crate::id::{NodeId, ServiceId, TaskId};
use crate::network::TaskNetwork;
use crate::service::{EndpointSpec, TaskTemplate};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Task states in lifecycle order. Observed states only move forward (see
/// [`TaskState::can_transition_to`]); every state from `Complete` on is terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum TaskState {
    /// Created by an orchestrator.
    #[default]
    New,
    /// Waiting for the scheduler (or for resources).
    Pending,
    /// Placed on a node by the scheduler.
    Assigned,
    /// The node's agent has seen it.
    Accepted,
    /// The driver prepares image, rootfs, mounts.
    Preparing,
    /// The driver is starting it.
    Starting,
    Running,
    /// Exited 0 (or desired complete).
    Complete,
    /// Stopped on request.
    Shutdown,
    /// Exited non-zero or the runtime failed.
    Failed,
    /// The node could not run it at all (bad image, unknown driver...).
    Rejected,
    /// Desired state for tasks to be deleted once stopped.
    Remove,
    /// Its node was lost for good; the state is unknown.
    Orphaned,
}

pub const ALL_TASK_STATES: [TaskState; 13] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Remove,
    TaskState::Orphaned,
];

impl TaskState {
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// The legal transitions of an observed state, encoded once: forward only, never out of a
    /// terminal state; staying in a non-terminal state (to refresh the message) is allowed.
    pub fn can_transition_to(self, next: TaskState) -> bool {
        if self.is_terminal() {
            return false;
        }
        next >= self
    }

    /// Legal desired states a task can be told to reach.
    pub fn is_valid_desired(self) -> bool {
        matches!(self, TaskState::Running | TaskState::Complete | TaskState::Shutdown | TaskState::Remove)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct TaskStatus {
    pub state: TaskState,
    /// When the task entered `state`.
    pub timestamp: Timestamp,
    pub message: String,
    /// Why it is not progressing (scheduler explanation, runtime error); empty when none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    pub id: TaskId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub service_id: ServiceId,
    /// Replica slot (1-based) for replicated services and replicated jobs; `None` for global.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// Where it runs: set by the scheduler, or up front for global services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// Shared: the state hands every task of a service version the same template (see
    /// `ClusterState`'s interning), so a task costs its own fields, not a copy of the template.
    pub spec: std::sync::Arc<TaskTemplate>,
    #[serde(default)]
    pub endpoint: EndpointSpec,
    pub spec_version: u64,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// When this slot was restarted, newest last (bounded; used for max_attempts within a window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_history: Vec<Timestamp>,
    /// Set for a task that continues another from a checkpoint (a migration): the agent
    /// restores it instead of starting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// The task's addresses on the networks of its service (allocated by the managers when the
    /// task is created; released when it is removed from the state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<TaskNetwork>,
}

/// Where a migrated task's checkpoint is and how to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RestoreSpec {
    /// The task this one continues.
    pub from_task: TaskId,
    /// The node it ran on.
    pub from_node: NodeId,
    pub checkpoint_id: String,
    /// Where the archive is: a node-to-node address (the source node's agent, or a manager for
    /// a restored file), empty when it is the unpacked checkpoint the restoring node kept itself.
    pub source_addr: String,
    /// The path to fetch there, and the name its TLS certificate must carry.
    #[serde(default)]
    pub source_path: String,
    #[serde(default)]
    pub source_server_name: String,
    /// The archive's MAC key (hex), derived by the managers for this checkpoint.
    pub key_hex: String,
    /// What the MAC binds the archive to (task, checkpoint and cluster).
    pub binding: String,
}

impl Task {
    /// Counts against its node's resources and ports: placed and not yet stopped.
    pub fn holds_resources(&self) -> bool {
        self.node_id.is_some() && self.status.state >= TaskState::Assigned && !self.status.state.is_terminal()
    }

    /// Meant to run and not yet known to have stopped.
    pub fn is_live(&self) -> bool {
        self.desired_state <= TaskState::Running && !self.status.state.is_terminal()
    }

    /// Running and, if it has a health check, healthy.
    pub fn is_up(&self) -> bool {
        self.status.state == TaskState::Running
            && !matches!(self.status.health, Some(Health::Starting) | Some(Health::Unhealthy))
    }

    /// Networks on which the task has no address yet.
    pub fn networks_without_address(&self) -> impl Iterator<Item = &crate::id::NetworkId> + '_ {
        self.networks.iter().filter(|n| n.addrs.is_empty()).map(|n| &n.network_id)
    }

    /// Waiting for the scheduler.
    pub fn needs_placement(&self) -> bool {
        self.desired_state <= TaskState::Running
            && matches!(self.status.state, TaskState::New | TaskState::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_are_final() {
        for from in ALL_TASK_STATES.iter().copied().filter(|s| s.is_terminal()) {
            for to in ALL_TASK_STATES {
                assert!(!from.can_transition_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn forward_only() {
        assert!(TaskState::Pending.can_transition_to(TaskState::Assigned));
        assert!(TaskState::Assigned.can_transition_to(TaskState::Running));
        assert!(TaskState::Running.can_transition_to(TaskState::Failed));
        assert!(TaskState::Pending.can_transition_to(TaskState::Pending));
        assert!(!TaskState::Running.can_transition_to(TaskState::Starting));
        assert!(!TaskState::Assigned.can_transition_to(TaskState::Pending));
    }

    #[test]
    fn json_is_snake_case() {
        assert_eq!(serde_json::to_string(&TaskState::Running).expect("json"), "\"running\"");
    }
}
