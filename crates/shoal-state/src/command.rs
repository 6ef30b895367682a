//! Commands: the only way the state changes. They are what the Raft log carries.

use serde::{Deserialize, Serialize};
use shoal_types::{
    JobStatus, Network, NetworkId, Node, NodeId, NodeSpec, NodeState, Service, ServiceId, ServiceSpec, Task,
    TaskId, TaskState, TaskStatus, UpdateStatus,
};

use crate::{ClusterConfig, ClusterObject};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// An agent (re)registers: description and status are replaced, the spec is kept.
    RegisterNode {
        node: Box<Node>,
    },
    /// The operator changes role, availability or labels.
    UpdateNodeSpec {
        id: NodeId,
        expected_version: Option<u64>,
        spec: NodeSpec,
    },
    /// The dispatcher saw the node come or go.
    SetNodeStatus {
        id: NodeId,
        state: NodeState,
        message: String,
    },
    RemoveNode {
        id: NodeId,
    },
    CreateService {
        service: Box<Service>,
    },
    UpdateService {
        id: ServiceId,
        expected_version: Option<u64>,
        spec: Box<ServiceSpec>,
    },
    /// Return to `previous_spec` using `rollback_config`.
    RollbackService {
        id: ServiceId,
        expected_version: Option<u64>,
    },
    /// Deletes the service and tells all its tasks to stop and be removed.
    /// `service rebalance`: even out a replicated service's spread, one task at a time.
    RebalanceService {
        id: ServiceId,
    },
    RemoveService {
        id: ServiceId,
    },
    /// `job run`: start a run of a scheduled job now (the controllers start it on their next
    /// pass, recording it in the same entry as its task).
    RunJob {
        id: ServiceId,
    },
    SetConfig {
        config: ClusterConfig,
    },
    /// Records the cluster's identity, CA and join tokens (once).
    InitCluster {
        cluster: Box<ClusterObject>,
    },
    /// `cluster init --restore`: the state becomes a backup's (see
    /// `ClusterState::restore_backup`); only before the cluster is initialized.
    RestoreBackup {
        snapshot: Box<crate::Snapshot>,
    },
    /// Rotates a join token.
    SetJoinToken {
        role: shoal_types::NodeRole,
        token: String,
    },
    /// A verified plan from the controllers.
    ApplyPlan {
        plan: Plan,
    },
    /// A running task moves to another node from a checkpoint: the old task is told to stop and
    /// `task` (same slot, bound to its node, with `restore` set) replaces it.
    MigrateTask {
        task_id: TaskId,
        task_version: u64,
        task: Box<Task>,
    },
    /// Observed task states, batched by the agent of `node_id`.
    ReportTaskStatus {
        node_id: NodeId,
        reports: Vec<TaskStatusReport>,
    },
    /// A new network: `apply` validates the spec and allocates its VNI, subnet and the nodes'
    /// addresses on it.
    CreateNetwork {
        network: Box<Network>,
    },
    /// Removes a network no service uses (its VNI, subnet and addresses are released).
    RemoveNetwork {
        id: NetworkId,
    },
    /// Operations on the user key-value store (etcd's API), applied in order, each its own
    /// revision (group commit: many clients' writes in one log entry). They change no cluster
    /// object and leave the cluster-state index alone; each op's outcome is in
    /// [`crate::Applied::kv`].
    Kv {
        ops: Vec<shoal_kv::Op>,
    },
    /// A new secret or config (`secret create`, `config create`); names are unique per kind.
    CreateSecret {
        secret: Box<shoal_types::Secret>,
    },
    /// Removes a secret or config no service or live task uses.
    RemoveSecret {
        id: shoal_types::SecretId,
    },
    /// Autolock on (with this unlock key, new or rotated) or off (none). Every manager then
    /// rewraps its own data key.
    SetUnlockKey {
        key: Option<shoal_types::SecretString>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatusReport {
    pub task_id: TaskId,
    pub status: TaskStatus,
}

/// A set of changes computed by the controllers on a snapshot. Every change names the version of
/// the object it was computed from; `apply` skips changes whose object moved on since.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    /// The state index the plan was computed on. Verification refuses to create a task in a slot
    /// that changed after it (so two plans can never fill one slot twice).
    pub base_index: u64,
    pub create_tasks: Vec<Task>,
    pub assign: Vec<Assignment>,
    pub set_desired: Vec<DesiredChange>,
    pub set_status: Vec<StatusChange>,
    pub delete_tasks: Vec<(TaskId, u64)>,
    pub service_updates: Vec<ServiceStatusChange>,
    /// Scheduled jobs' new records. Verification refuses one whose job changed since the plan's
    /// base together with the tasks it creates, so a run and its task commit together or not
    /// at all. Left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub job_updates: Vec<JobUpdate>,
}

/// A scheduled job's record as the controllers computed it from version `service_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub service_id: ServiceId,
    pub service_version: u64,
    pub status: JobStatus,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create_tasks.is_empty()
            && self.assign.is_empty()
            && self.set_desired.is_empty()
            && self.set_status.is_empty()
            && self.delete_tasks.is_empty()
            && self.service_updates.is_empty()
            && self.job_updates.is_empty()
    }

    pub fn len(&self) -> usize {
        self.create_tasks.len()
            + self.assign.len()
            + self.set_desired.len()
            + self.set_status.len()
            + self.delete_tasks.len()
            + self.service_updates.len()
            + self.job_updates.len()
    }

    pub fn extend(&mut self, other: Plan) {
        self.create_tasks.extend(other.create_tasks);
        self.assign.extend(other.assign);
        self.set_desired.extend(other.set_desired);
        self.set_status.extend(other.set_status);
        self.delete_tasks.extend(other.delete_tasks);
        self.service_updates.extend(other.service_updates);
        self.job_updates.extend(other.job_updates);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task_id: TaskId,
    pub task_version: u64,
    pub node_id: NodeId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredChange {
    pub task_id: TaskId,
    pub task_version: u64,
    pub desired_state: TaskState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub task_id: TaskId,
    pub task_version: u64,
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatusChange {
    pub service_id: ServiceId,
    pub service_version: u64,
    pub update_status: Option<UpdateStatus>,
    /// Switch the spec back to `previous_spec` (automatic rollback after a failed update).
    #[serde(default)]
    pub rollback: bool,
    /// The spread is even: clear `rebalance_requested_at`.
    #[serde(default)]
    pub rebalance_done: bool,
}

/// Names one item of a plan (for skip reports and verification results).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum PlanItem {
    Create(TaskId),
    Assign(TaskId),
    Desired(TaskId),
    Status(TaskId),
    Delete(TaskId),
    Service(ServiceId),
}

impl PlanItem {
    /// The task this item changes, if it is about a task.
    pub fn task_id(&self) -> Option<&TaskId> {
        match self {
            PlanItem::Create(t)
            | PlanItem::Assign(t)
            | PlanItem::Desired(t)
            | PlanItem::Status(t)
            | PlanItem::Delete(t) => Some(t),
            PlanItem::Service(_) => None,
        }
    }
}
