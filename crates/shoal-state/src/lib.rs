//! The cluster state: every node, service and task, indexed for the brain, changed only by
//! [`ClusterState::apply`]. `apply` is deterministic — same state, same `at`, same command, same
//! result and events on every replica — so the Raft crate can use it as its state machine and the
//! simulator can replay it. No I/O, no clock reads: `at` (the proposal time) is an argument.

mod command;
mod jobs;
mod network;
mod secrets;
mod usage;

pub use command::{
    Assignment, Command, DesiredChange, JobUpdate, Plan, PlanItem, ServiceStatusChange, StatusChange,
    TaskStatusReport,
};
pub use jobs::MAX_PENDING_MANUAL_RUNS;
pub use network::{IpamSnapshot, NodeAddress, STILL_STOPPING};
pub use usage::NodeUsage;

use serde::{Deserialize, Serialize};
use shoal_types::{
    Node, NodeId, NodeState, NodeStatus, Service, ServiceId, ServiceSpec, Task, TaskId, TaskState, Timestamp,
    UpdateState, UpdateStatus, ValidationError,
};
use std::collections::{BTreeMap, BTreeSet};

/// Default number of old (terminal) tasks kept per slot, like Swarm's task history limit.
pub const DEFAULT_TASK_HISTORY_LIMIT: u64 = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Old tasks kept per slot (or per node for global services).
    pub task_history_limit: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { task_history_limit: DEFAULT_TASK_HISTORY_LIMIT }
    }
}

/// The UDP port of the VXLAN data path between nodes unless `cluster init --data-path-port` chose
/// another (IANA's, as Docker's default).
pub const DEFAULT_DATA_PATH_PORT: u16 = 4789;

/// The data-path ports `cluster init` accepts: Docker's rule, neither a well-known port nor an
/// ephemeral one.
pub const DATA_PATH_PORTS: std::ops::RangeInclusive<u16> = 1024..=49151;

/// A data-path port outside [`DATA_PATH_PORTS`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "data path port {0} is out of range: it must be within 1024-49151 (neither a well-known nor an ephemeral port)"
)]
pub struct DataPathPortError(pub u64);

/// Checks a `--data-path-port` (any number, so that 70000 gets the same message as 80).
pub fn validate_data_path_port(port: u64) -> Result<u16, DataPathPortError> {
    u16::try_from(port).ok().filter(|p| DATA_PATH_PORTS.contains(p)).ok_or(DataPathPortError(port))
}

/// The data-path port of state written before it could be chosen.
pub fn default_data_path_port() -> u16 {
    DEFAULT_DATA_PATH_PORT
}

/// The cluster itself: its identity, its root CA and its join tokens. Replicated so that any
/// manager can sign certificates and check tokens after a failover. `Debug` never prints the CA
/// key or the tokens, and the API never serves them except `join-token` to the local root user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterObject {
    pub id: String,
    pub created_at: Timestamp,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
    /// The UDP port VXLAN uses between nodes (`cluster init --data-path-port`), fixed for the
    /// cluster's life: every node's tunnels use it. Older state reads back with 4789.
    #[serde(default = "default_data_path_port")]
    pub data_path_port: u16,
}

impl std::fmt::Debug for ClusterObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterObject")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("data_path_port", &self.data_path_port)
            .field("ca_key_pem", &"<redacted>")
            .field("tokens", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} was changed concurrently (version {actual}, expected {expected}); read it again and retry")]
    VersionConflict { kind: &'static str, id: String, expected: u64, actual: u64 },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    #[error("a service named {0:?} already exists")]
    NameConflict(String),
    #[error("invalid service spec: {0}")]
    Invalid(#[from] ValidationError),
    #[error("service mode cannot be changed from {from} to {to}; remove and create the service")]
    ModeChange { from: &'static str, to: &'static str },
    #[error("service {0} has no previous spec to roll back to")]
    NoPreviousSpec(String),
    #[error("service {0} is not replicated: only replicated services are rebalanced")]
    NotReplicated(String),
    #[error("cannot migrate: {0}")]
    Migration(String),
    #[error("invalid network spec: {0}")]
    InvalidNetwork(ValidationError),
    /// Refused because of what exists: a network in use, overlapping subnets, a published port
    /// taken. The message says which.
    #[error("{0}")]
    Conflict(String),
    #[error("node {0} was removed from the cluster: it must leave and join again")]
    NodeRemoved(String),
    /// A backup that cannot be restored (a newer format, no cluster in it).
    #[error("cannot restore the backup: {0}")]
    Backup(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Action {
    Create,
    Update,
    Remove,
}

/// The object an event is about, as it is after the change (before it, for removals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "object", rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Object {
    Node(Box<Node>),
    Service(Box<Service>),
    Task(Box<Task>),
    Network(Box<shoal_types::Network>),
    /// A secret or config, always without its data.
    Secret(Box<shoal_types::Secret>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Node(_) => "node",
            Object::Service(_) => "service",
            Object::Task(_) => "task",
            Object::Network(_) => "network",
            Object::Secret(s) => s.kind.as_str(),
        }
    }
    pub fn id(&self) -> &str {
        match self {
            Object::Node(n) => n.id.as_str(),
            Object::Service(s) => s.id.as_str(),
            Object::Task(t) => t.id.as_str(),
            Object::Network(n) => n.id.as_str(),
            Object::Secret(s) => s.id.as_str(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    pub index: u64,
    pub at: Timestamp,
    pub action: Action,
    #[serde(flatten)]
    pub object: Object,
}

/// What one successful `apply` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The store index after the apply (= the version of every object it touched).
    pub index: u64,
    pub events: Vec<Event>,
    /// Plan items that were skipped because the state moved on (stale version, illegal
    /// transition, missing object), with the reason.
    pub skipped: Vec<(PlanItem, String)>,
    /// For [`Command::Kv`]: each op's outcome (its response and watch events, or etcd's error),
    /// in order.
    pub kv: Vec<Result<shoal_kv::Applied<shoal_kv::OpResponse>, shoal_kv::KvError>>,
}

/// The format of the serialized state ([`Snapshot`], and the commands in the Raft log) this
/// code writes and reads. Data written before formats had a number reads as 1. The rule:
/// fields are only ever added (with `#[serde(default)]`), never renamed or given a new meaning;
/// the number goes up only for a change an older binary would misread, and a reader refuses
/// data of a newer format ([`check_format`]) instead of misreading it.
pub const FORMAT_VERSION: u32 = 1;

/// The format of data written before formats were numbered.
pub fn format_v1() -> u32 {
    1
}

/// Data of a format newer than this binary knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} was written by a newer Shoal (format {found}, this binary knows up to {known}): upgrade this binary")]
pub struct NewerFormat {
    pub what: String,
    pub found: u32,
    pub known: u32,
}

/// Refuses `found` if it is newer than `known` (the reader's own format).
pub fn check_format(what: &str, found: u32, known: u32) -> Result<(), NewerFormat> {
    if found > known {
        return Err(NewerFormat { what: what.to_string(), found, known });
    }
    Ok(())
}

/// A serializable image of the state; indexes are rebuilt on restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`FORMAT_VERSION`] of the code that wrote it (absent before formats were numbered: 1).
    #[serde(default = "format_v1")]
    pub format: u32,
    pub index: u64,
    pub config: ClusterConfig,
    #[serde(default)]
    pub cluster: Option<ClusterObject>,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
    /// Networks with what they were allocated, and the allocators' state (phase 1 networking).
    #[serde(default)]
    pub networks: Vec<shoal_types::Network>,
    #[serde(default)]
    pub ipam: IpamSnapshot,
    /// Nodes removed with `node rm`: their certificates stay valid until they expire, so the
    /// dispatcher refuses them by id (a node that leaves and joins again gets a new id).
    #[serde(default)]
    pub removed_nodes: Vec<NodeId>,
    /// The user key-value store (etcd's API), with its history since the last compaction.
    #[serde(default)]
    pub kv: shoal_kv::KvStore,
    /// Secrets and configs, with their data (left out when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<shoal_types::Secret>,
    /// Autolock's unlock key (left out while autolock is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<shoal_types::SecretString>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    index: u64,
    config: ClusterConfig,
    cluster: Option<ClusterObject>,
    nodes: BTreeMap<NodeId, Node>,
    removed_nodes: BTreeSet<NodeId>,
    services: BTreeMap<ServiceId, Service>,
    tasks: BTreeMap<TaskId, Task>,
    // Secondary indexes, maintained by `put_task`/`drop_task` and rebuilt by `restore`.
    service_by_name: BTreeMap<String, ServiceId>,
    tasks_by_service: BTreeMap<ServiceId, BTreeSet<TaskId>>,
    tasks_by_node: BTreeMap<NodeId, BTreeSet<TaskId>>,
    usage: BTreeMap<NodeId, NodeUsage>,
    needs_placement: BTreeSet<TaskId>,
    /// Networks, their address pools and the nodes' addresses on them (see `network.rs`).
    net: network::NetState,
    /// The user key-value store: its own keyspace and revisions, apart from cluster objects.
    kv: shoal_kv::KvStore,
    /// Secrets and configs, and their ids by kind and name.
    secrets: BTreeMap<shoal_types::SecretId, shoal_types::Secret>,
    secret_by_name: BTreeMap<(shoal_types::SecretKind, String), shoal_types::SecretId>,
    /// Autolock's unlock key: every manager keeps its data key wrapped by it (see shoal-raft's
    /// `seal`); none: autolock is off.
    unlock_key: Option<shoal_types::SecretString>,
    /// The template the tasks of each service version share (see [`Templates`]).
    templates: Templates,
}

/// One shared template per service version (`Task::spec` is an `Arc`): tasks decoded from the
/// log or a snapshot each come with their own copy, and [`ClusterState::put_task`] swaps it for
/// the one a task of the same service version already holds, when they are equal. So 100,000
/// tasks of one service hold one template, not 100,000 copies. Weak references: it keeps no
/// template alive itself. A cache, not state: two states are equal whatever it holds.
#[derive(Clone, Debug, Default)]
struct Templates(BTreeMap<ServiceId, BTreeMap<u64, std::sync::Weak<shoal_types::TaskTemplate>>>);

impl PartialEq for Templates {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Templates {
    fn share(&mut self, t: &mut Task) {
        let held = self.0.get(&t.service_id).and_then(|v| v.get(&t.spec_version)).and_then(|w| w.upgrade());
        match held {
            Some(h) if std::sync::Arc::ptr_eq(&h, &t.spec) => {}
            Some(h) if *h == *t.spec => t.spec = h,
            _ => {
                let versions = self.0.entry(t.service_id.clone()).or_default();
                versions.retain(|_, w| w.strong_count() > 0);
                versions.insert(t.spec_version, std::sync::Arc::downgrade(&t.spec));
            }
        }
    }

    fn forget(&mut self, service: &ServiceId) {
        self.0.remove(service);
    }
}

static EMPTY_USAGE: std::sync::LazyLock<NodeUsage> = std::sync::LazyLock::new(NodeUsage::default);

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- reads -------------------------------------------------------------------------------

    pub fn index(&self) -> u64 {
        self.index
    }

    /// The user key-value store.
    pub fn kv(&self) -> &shoal_kv::KvStore {
        &self.kv
    }

    /// The key-value store's leader-local soft state (lease deadlines: keep-alives and a new
    /// leader's refresh), which is not replicated; replicated changes go through
    /// [`Command::Kv`].
    pub fn kv_leader_mut(&mut self) -> &mut shoal_kv::KvStore {
        &mut self.kv
    }
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }
    /// The cluster's identity, CA and tokens (None before `cluster init`).
    /// Autolock's unlock key, while autolock is on.
    pub fn unlock_key(&self) -> Option<&str> {
        self.unlock_key.as_ref().map(|k| k.0.as_str())
    }

    pub fn cluster(&self) -> Option<&ClusterObject> {
        self.cluster.as_ref()
    }
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.get(id)
    }
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &Node> + '_ {
        self.nodes.values()
    }
    /// Whether `node rm` removed this node: it is no longer served and cannot register again.
    pub fn is_removed(&self, id: &NodeId) -> bool {
        self.removed_nodes.contains(id)
    }
    pub fn service(&self, id: &ServiceId) -> Option<&Service> {
        self.services.get(id)
    }
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.service_by_name.get(name).and_then(|id| self.services.get(id))
    }
    pub fn services(&self) -> impl ExactSizeIterator<Item = &Service> + '_ {
        self.services.values()
    }
    pub fn task(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id)
    }
    pub fn tasks(&self) -> impl ExactSizeIterator<Item = &Task> + '_ {
        self.tasks.values()
    }
    /// Tasks of a service, in id order.
    pub fn tasks_of_service<'a>(&'a self, id: &ServiceId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_service.get(id).into_iter().flatten().filter_map(|t| self.tasks.get(t))
    }
    /// Tasks assigned to a node, in id order.
    pub fn tasks_on_node<'a>(&'a self, id: &NodeId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_node.get(id).into_iter().flatten().filter_map(|t| self.tasks.get(t))
    }
    /// Tasks waiting for the scheduler, in id order (kept incrementally).
    pub fn tasks_needing_placement(&self) -> impl Iterator<Item = &Task> + '_ {
        self.needs_placement.iter().filter_map(|t| self.tasks.get(t))
    }
    /// Every service id that has tasks, including services already removed.
    pub fn task_service_ids(&self) -> impl Iterator<Item = &ServiceId> + '_ {
        self.tasks_by_service.keys()
    }
    /// What the tasks holding resources on `node` use (kept incrementally).
    pub fn usage(&self, node: &NodeId) -> &NodeUsage {
        self.usage.get(node).unwrap_or(&EMPTY_USAGE)
    }

    // ---- snapshot ----------------------------------------------------------------------------

    pub fn snapshot(&self) -> Snapshot {
        let (networks, ipam) = self.net.snapshot();
        Snapshot {
            format: FORMAT_VERSION,
            index: self.index,
            config: self.config.clone(),
            cluster: self.cluster.clone(),
            nodes: self.nodes.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            tasks: self.tasks.values().cloned().collect(),
            networks,
            ipam,
            removed_nodes: self.removed_nodes.iter().cloned().collect(),
            kv: self.kv.clone(),
            secrets: self.secrets.values().cloned().collect(),
            unlock_key: self.unlock_key.clone(),
        }
    }

    pub fn restore(snap: Snapshot) -> Self {
        let mut s = ClusterState {
            index: snap.index,
            config: snap.config,
            cluster: snap.cluster,
            removed_nodes: snap.removed_nodes.into_iter().collect(),
            kv: snap.kv,
            unlock_key: snap.unlock_key,
            ..Default::default()
        };
        for n in snap.nodes {
            s.nodes.insert(n.id.clone(), n);
        }
        for svc in snap.services {
            s.service_by_name.insert(svc.spec.name.clone(), svc.id.clone());
            s.services.insert(svc.id.clone(), svc);
        }
        for t in snap.tasks {
            s.put_task(t);
        }
        s.restore_networks(snap.networks, snap.ipam);
        s.restore_secrets(snap.secrets);
        s
    }

    // ---- writes ------------------------------------------------------------------------------

    /// [`Command::RestoreBackup`]: the state becomes the backup's, except that every manager of
    /// the old cluster is removed (like `node rm --force`: its node object goes, its id is
    /// tombstoned, its tasks are replaced elsewhere), because the new cluster's only Raft member
    /// is the manager that restores. Only a cluster that has not been initialized takes it.
    fn restore_backup(&mut self, index: u64, snap: Snapshot, out: &mut Applied) -> Result<(), StateError> {
        if let Some(c) = &self.cluster {
            return Err(StateError::AlreadyExists { kind: "cluster", id: c.id.clone() });
        }
        check_format("the backup", snap.format, FORMAT_VERSION)
            .map_err(|e| StateError::Backup(e.to_string()))?;
        if snap.cluster.is_none() {
            return Err(StateError::Backup("it holds no cluster (CA and tokens)".into()));
        }
        let mut restored = ClusterState::restore(snap);
        // Nodes already registered here (none when restoring right after start) stay.
        let local: BTreeSet<NodeId> = self.nodes.keys().cloned().collect();
        for (id, n) in std::mem::take(&mut self.nodes) {
            restored.nodes.entry(id).or_insert(n);
        }
        let old_managers: Vec<NodeId> = restored
            .nodes
            .values()
            .filter(|n| n.spec.role == shoal_types::NodeRole::Manager && !local.contains(&n.id))
            .map(|n| n.id.clone())
            .collect();
        for id in old_managers {
            restored.nodes.remove(&id);
            restored.node_left_networks(&id);
            restored.removed_nodes.insert(id);
        }
        restored.index = restored.index.max(index);
        out.index = restored.index;
        *self = restored;
        Ok(())
    }

    /// Applies one command at proposal time `at`. On error nothing changed.
    pub fn apply(&mut self, at: Timestamp, cmd: Command) -> Result<Applied, StateError> {
        if let Command::Kv { ops } = cmd {
            // Its own keyspace and revisions: the cluster index stays.
            let kv = self.kv.apply_batch(ops, at.as_nanos());
            return Ok(Applied { index: self.index, kv, ..Default::default() });
        }
        let index = self.index + 1;
        let mut out = Applied { index, ..Default::default() };
        match cmd {
            Command::RegisterNode { node } => {
                let id = node.id.clone();
                self.register_node(index, at, *node, &mut out)?;
                self.node_joined_networks(&id);
            }
            Command::UpdateNodeSpec { id, expected_version, spec } => {
                let n = self.nodes.get_mut(&id).ok_or_else(|| not_found("node", id.as_str()))?;
                check_version("node", id.as_str(), expected_version, n.version)?;
                n.spec = spec;
                touch(&mut n.version, &mut n.updated_at, index, at);
                out.events.push(event(index, at, Action::Update, Object::Node(Box::new(n.clone()))));
            }
            Command::SetNodeStatus { id, state, message } => {
                let n = self.nodes.get_mut(&id).ok_or_else(|| not_found("node", id.as_str()))?;
                n.status = NodeStatus { state, message, addr: n.status.addr.clone() };
                touch(&mut n.version, &mut n.updated_at, index, at);
                out.events.push(event(index, at, Action::Update, Object::Node(Box::new(n.clone()))));
            }
            // The node is remembered as removed, also a manager that never registered (`node rm`
            // of a member with no node object): it can never come back under this id.
            Command::RemoveNode { id } => {
                if self.removed_nodes.contains(&id) && !self.nodes.contains_key(&id) {
                    return Err(not_found("node", id.as_str()));
                }
                if let Some(n) = self.nodes.remove(&id) {
                    out.events.push(event(index, at, Action::Remove, Object::Node(Box::new(n))));
                }
                self.node_left_networks(&id);
                self.removed_nodes.insert(id);
            }
            Command::CreateService { service } => self.create_service(index, at, *service, &mut out)?,
            Command::UpdateService { id, expected_version, spec } => {
                self.update_service(index, at, &id, expected_version, *spec, false, &mut out)?
            }
            Command::RollbackService { id, expected_version } => {
                let svc = self.services.get(&id).ok_or_else(|| not_found("service", id.as_str()))?;
                let prev =
                    svc.previous_spec.clone().ok_or_else(|| StateError::NoPreviousSpec(id.to_string()))?;
                self.update_service(index, at, &id, expected_version, prev, true, &mut out)?
            }
            Command::RebalanceService { id } => {
                let svc = self.services.get_mut(&id).ok_or_else(|| not_found("service", id.as_str()))?;
                if !matches!(svc.spec.mode, shoal_types::ServiceMode::Replicated { .. }) {
                    return Err(StateError::NotReplicated(svc.spec.name.clone()));
                }
                svc.rebalance_requested_at = Some(at);
                touch(&mut svc.version, &mut svc.updated_at, index, at);
                out.events.push(event(index, at, Action::Update, Object::Service(Box::new(svc.clone()))));
            }
            Command::RemoveService { id } => self.remove_service(index, at, &id, &mut out)?,
            Command::RunJob { id } => {
                let svc = self.services.get_mut(&id).ok_or_else(|| not_found("service", id.as_str()))?;
                if svc.spec.mode.scheduled().is_none() {
                    return Err(StateError::Conflict(format!(
                        "{} is a {} service, not a scheduled job",
                        svc.spec.name,
                        svc.spec.mode.name()
                    )));
                }
                let job = svc.job.get_or_insert_with(Default::default);
                if job.pending_manual >= MAX_PENDING_MANUAL_RUNS {
                    return Err(StateError::Conflict(format!(
                        "job {} already has {MAX_PENDING_MANUAL_RUNS} runs waiting to start",
                        svc.spec.name
                    )));
                }
                job.pending_manual += 1;
                touch(&mut svc.version, &mut svc.updated_at, index, at);
                out.events.push(event(index, at, Action::Update, Object::Service(Box::new(svc.clone()))));
            }
            Command::SetConfig { config } => self.config = config,
            Command::InitCluster { cluster } => {
                if let Some(c) = &self.cluster {
                    return Err(StateError::AlreadyExists { kind: "cluster", id: c.id.clone() });
                }
                let mut c = *cluster;
                // The API checks it first; a command from elsewhere is refused the same way.
                validate_data_path_port(c.data_path_port.into()).map_err(|e| {
                    StateError::InvalidNetwork(ValidationError::single("data_path_port", e.to_string()))
                })?;
                c.created_at = at;
                self.cluster = Some(c);
                // The routing-mesh network exists from the start (best effort: a service that
                // publishes an ingress port creates it later if this could not).
                let _ = self.ensure_ingress(index, at, &mut out);
            }
            Command::RestoreBackup { snapshot } => self.restore_backup(index, *snapshot, &mut out)?,
            Command::SetJoinToken { role, token } => {
                let c = self.cluster.as_mut().ok_or_else(|| not_found("cluster", "(not initialized)"))?;
                match role {
                    shoal_types::NodeRole::Worker => c.worker_token = token,
                    shoal_types::NodeRole::Manager => c.manager_token = token,
                }
            }
            Command::SetUnlockKey { key } => {
                if self.cluster.is_none() {
                    return Err(not_found("cluster", "(not initialized)"));
                }
                self.unlock_key = key;
            }
            Command::ApplyPlan { plan } => self.apply_plan(index, at, plan, &mut out),
            Command::MigrateTask { task_id, task_version, task } => {
                self.migrate_task(index, at, &task_id, task_version, *task, &mut out)?
            }
            Command::ReportTaskStatus { node_id, reports } => {
                for r in reports {
                    self.report_status(index, at, &node_id, r, &mut out)
                }
            }
            Command::CreateNetwork { network } => self.create_network(index, at, *network, &mut out)?,
            Command::RemoveNetwork { id } => self.remove_network(index, at, &id, &mut out)?,
            Command::CreateSecret { secret } => self.create_secret(index, at, *secret, &mut out)?,
            Command::RemoveSecret { id } => self.remove_secret(index, at, &id, &mut out)?,
            Command::Kv { .. } => {}
        }
        // A restored backup may carry a higher index than this state had.
        self.index = index.max(out.index);
        Ok(out)
    }

    fn register_node(
        &mut self,
        index: u64,
        at: Timestamp,
        mut node: Node,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        if self.removed_nodes.contains(&node.id) {
            return Err(StateError::NodeRemoved(node.id.to_string()));
        }
        let action = match self.nodes.get(&node.id) {
            Some(old) => {
                // The operator owns the spec: a re-registering agent cannot change it.
                node.spec = old.spec.clone();
                node.created_at = old.created_at;
                Action::Update
            }
            None => {
                node.created_at = at;
                Action::Create
            }
        };
        touch(&mut node.version, &mut node.updated_at, index, at);
        out.events.push(event(index, at, action, Object::Node(Box::new(node.clone()))));
        self.nodes.insert(node.id.clone(), node);
        Ok(())
    }

    fn create_service(
        &mut self,
        index: u64,
        at: Timestamp,
        mut svc: Service,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        svc.spec.validate_structure()?;
        if self.services.contains_key(&svc.id) {
            return Err(StateError::AlreadyExists { kind: "service", id: svc.id.to_string() });
        }
        if self.service_by_name.contains_key(&svc.spec.name) {
            return Err(StateError::NameConflict(svc.spec.name));
        }
        self.check_job_graph(None, &svc.spec)?;
        self.resolve_service_networks(&mut svc.spec)?;
        self.resolve_service_secrets(&mut svc.spec)?;
        svc.endpoint = Default::default();
        self.attach_service(index, at, &svc.id, &svc.spec, &mut svc.endpoint, out)?;
        svc.job = svc.spec.mode.scheduled().map(|j| self.new_job_status(j, at));
        svc.created_at = at;
        svc.spec_version = 1;
        svc.previous_spec = None;
        svc.update_status = None;
        touch(&mut svc.version, &mut svc.updated_at, index, at);
        self.service_by_name.insert(svc.spec.name.clone(), svc.id.clone());
        out.events.push(event(index, at, Action::Create, Object::Service(Box::new(svc.clone()))));
        self.services.insert(svc.id.clone(), svc);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn update_service(
        &mut self,
        index: u64,
        at: Timestamp,
        id: &ServiceId,
        expected_version: Option<u64>,
        spec: ServiceSpec,
        rollback: bool,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        spec.validate_structure()?;
        let mut spec = spec;
        self.resolve_service_networks(&mut spec)?;
        self.resolve_service_secrets(&mut spec)?;
        let svc = self.services.get(id).ok_or_else(|| not_found("service", id.as_str()))?;
        check_version("service", id.as_str(), expected_version, svc.version)?;
        if svc.spec.mode.is_global() != spec.mode.is_global()
            || svc.spec.mode.is_job() != spec.mode.is_job()
            || svc.spec.mode.scheduled().is_some() != spec.mode.scheduled().is_some()
        {
            return Err(StateError::ModeChange { from: svc.spec.mode.name(), to: spec.mode.name() });
        }
        if spec.name != svc.spec.name && self.service_by_name.contains_key(&spec.name) {
            return Err(StateError::NameConflict(spec.name));
        }
        if spec.name != svc.spec.name {
            self.check_no_children(svc, "rename")?;
        }
        self.check_job_graph(Some(id), &spec)?;
        let mut svc = svc.clone();
        self.attach_service(index, at, id, &spec, &mut svc.endpoint, out)?;
        if let Some(new) = spec.mode.scheduled() {
            svc.job = Some(self.updated_job_status(svc.job.take(), svc.spec.mode.scheduled(), new, at));
        }
        let template_changed = svc.spec.task_template != spec.task_template
            || svc.spec.endpoint != spec.endpoint
            || svc.spec.networks != spec.networks;
        // A scheduled job's settings change when its runs start, not what they run.
        let job_rerun =
            svc.spec.mode.is_job() && svc.spec.mode.scheduled().is_none() && svc.spec.mode != spec.mode;
        if spec.name != svc.spec.name {
            self.service_by_name.remove(&svc.spec.name);
            self.service_by_name.insert(spec.name.clone(), id.clone());
        }
        let old = std::mem::replace(&mut svc.spec, spec);
        svc.previous_spec = Some(old);
        if svc.spec.mode.is_job() && (template_changed || job_rerun) {
            // A job re-runs from scratch; there is no rolling update to track.
            svc.spec_version += 1;
            svc.update_status = None;
        } else if template_changed || job_rerun {
            svc.spec_version += 1;
            let state = if rollback { UpdateState::RollbackStarted } else { UpdateState::Updating };
            let message = if rollback { "rollback in progress" } else { "update in progress" };
            svc.update_status =
                Some(UpdateStatus { state, started_at: at, completed_at: None, message: message.into() });
        } else if rollback {
            svc.update_status = Some(UpdateStatus {
                state: UpdateState::RollbackCompleted,
                started_at: at,
                completed_at: Some(at),
                message: "rollback completed".into(),
            });
        }
        touch(&mut svc.version, &mut svc.updated_at, index, at);
        out.events.push(event(index, at, Action::Update, Object::Service(Box::new(svc.clone()))));
        self.services.insert(id.clone(), svc);
        Ok(())
    }

    fn remove_service(
        &mut self,
        index: u64,
        at: Timestamp,
        id: &ServiceId,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        let svc = self.services.get(id).ok_or_else(|| not_found("service", id.as_str()))?;
        self.check_no_children(svc, "remove")?;
        let svc = self.services.remove(id).ok_or_else(|| not_found("service", id.as_str()))?;
        self.service_by_name.remove(&svc.spec.name);
        self.detach_service(&svc);
        out.events.push(event(index, at, Action::Remove, Object::Service(Box::new(svc))));
        // Every task is told to stop and be removed; the reaper deletes them once stopped.
        let ids: Vec<TaskId> = self.tasks_by_service.get(id).into_iter().flatten().cloned().collect();
        for tid in ids {
            if let Some(t) = self.tasks.get(&tid) {
                if t.desired_state < TaskState::Remove {
                    let mut t = t.clone();
                    t.desired_state = TaskState::Remove;
                    touch(&mut t.version, &mut t.updated_at, index, at);
                    out.events.push(event(index, at, Action::Update, Object::Task(Box::new(t.clone()))));
                    self.put_task(t);
                }
            }
        }
        Ok(())
    }

    fn apply_plan(&mut self, index: u64, at: Timestamp, plan: Plan, out: &mut Applied) {
        for ju in plan.job_updates {
            self.apply_job_update(index, at, ju, out);
        }
        for mut t in plan.create_tasks {
            if self.tasks.contains_key(&t.id) {
                out.skipped.push((PlanItem::Create(t.id.clone()), "task already exists".into()));
                continue;
            }
            if !self.services.contains_key(&t.service_id) {
                out.skipped.push((PlanItem::Create(t.id.clone()), "service no longer exists".into()));
                continue;
            }
            self.attach_new_task(&mut t);
            self.templates.share(&mut t);
            t.created_at = at;
            t.status.timestamp = at;
            touch(&mut t.version, &mut t.updated_at, index, at);
            out.events.push(event(index, at, Action::Create, Object::Task(Box::new(t.clone()))));
            self.put_task(t);
        }
        for a in plan.assign {
            let item = PlanItem::Assign(a.task_id.clone());
            let Some(t) = self.checked_task(&a.task_id, a.task_version, &item, out) else { continue };
            if !t.needs_placement() {
                out.skipped.push((item, format!("task is {} and no longer needs placement", t.status.state)));
                continue;
            }
            if t.node_id.as_ref().is_some_and(|n| *n != a.node_id) {
                out.skipped.push((item, "task is bound to another node".into()));
                continue;
            }
            let mut t = t.clone();
            if let Err(why) = self.allocate_task_addresses(&mut t) {
                out.skipped.push((item, why.clone()));
                self.refuse_placement(index, at, t, why, out);
                continue;
            }
            t.node_id = Some(a.node_id);
            t.status.state = TaskState::Assigned;
            t.status.timestamp = at;
            t.status.message = "scheduled".into();
            t.status.err.clear();
            self.commit_task(index, at, t, out);
        }
        for d in plan.set_desired {
            let item = PlanItem::Desired(d.task_id.clone());
            let Some(t) = self.checked_task(&d.task_id, d.task_version, &item, out) else { continue };
            if d.desired_state < t.desired_state || !d.desired_state.is_valid_desired() {
                out.skipped.push((
                    item,
                    format!("desired state cannot go from {} to {}", t.desired_state, d.desired_state),
                ));
                continue;
            }
            let mut t = t.clone();
            t.desired_state = d.desired_state;
            self.commit_task(index, at, t, out);
        }
        for s in plan.set_status {
            let item = PlanItem::Status(s.task_id.clone());
            let Some(t) = self.checked_task(&s.task_id, s.task_version, &item, out) else { continue };
            if !t.status.state.can_transition_to(s.status.state) {
                out.skipped
                    .push((item, format!("illegal transition {} -> {}", t.status.state, s.status.state)));
                continue;
            }
            let mut t = t.clone();
            let changed_state = t.status.state != s.status.state;
            t.status = s.status;
            if changed_state {
                t.status.timestamp = at;
            }
            self.commit_task(index, at, t, out);
        }
        for (id, version) in plan.delete_tasks {
            let item = PlanItem::Delete(id.clone());
            if self.checked_task(&id, version, &item, out).is_none() {
                continue;
            }
            if let Some(t) = self.drop_task(&id) {
                out.events.push(event(index, at, Action::Remove, Object::Task(Box::new(t))));
            }
        }
        for su in plan.service_updates {
            let item = PlanItem::Service(su.service_id.clone());
            let Some(svc) = self.services.get(&su.service_id) else {
                out.skipped.push((item, "service no longer exists".into()));
                continue;
            };
            if svc.version != su.service_version {
                out.skipped.push((item, "service changed since the plan was made".into()));
                continue;
            }
            if su.rollback {
                if let Some(prev) = svc.previous_spec.clone() {
                    // Automatic rollback (failure_action=rollback): validated when it was stored.
                    let mut out2 = Applied::default();
                    if let Err(e) =
                        self.update_service(index, at, &su.service_id, None, prev, true, &mut out2)
                    {
                        out.skipped.push((item, e.to_string()));
                    } else {
                        if let Some(svc) = self.services.get_mut(&su.service_id) {
                            if let (Some(u), Some(msg)) =
                                (svc.update_status.as_mut(), su.update_status.as_ref())
                            {
                                u.message = msg.message.clone();
                            }
                        }
                        out.events.extend(out2.events);
                    }
                    continue;
                }
            }
            let Some(svc) = self.services.get_mut(&su.service_id) else { continue };
            svc.update_status = su.update_status;
            if su.rebalance_done {
                svc.rebalance_requested_at = None;
            }
            touch(&mut svc.version, &mut svc.updated_at, index, at);
            out.events.push(event(index, at, Action::Update, Object::Service(Box::new(svc.clone()))));
        }
    }

    /// A scheduled job's new record, computed on the state at the plan's base (verification
    /// has refused it, with the tasks it starts, if the job changed since).
    fn apply_job_update(&mut self, index: u64, at: Timestamp, ju: JobUpdate, out: &mut Applied) {
        let item = PlanItem::Service(ju.service_id.clone());
        let Some(svc) = self.services.get_mut(&ju.service_id) else {
            out.skipped.push((item, "service no longer exists".into()));
            return;
        };
        if svc.version != ju.service_version || svc.spec.mode.scheduled().is_none() {
            out.skipped.push((item, "job changed since the plan was made".into()));
            return;
        }
        svc.job = Some(ju.status);
        touch(&mut svc.version, &mut svc.updated_at, index, at);
        out.events.push(event(index, at, Action::Update, Object::Service(Box::new(svc.clone()))));
    }

    fn report_status(
        &mut self,
        index: u64,
        at: Timestamp,
        node: &NodeId,
        r: TaskStatusReport,
        out: &mut Applied,
    ) {
        let item = PlanItem::Status(r.task_id.clone());
        let Some(t) = self.tasks.get(&r.task_id) else {
            out.skipped.push((item, "unknown task".into()));
            return;
        };
        if t.node_id.as_ref() != Some(node) {
            out.skipped.push((item, "task is not assigned to the reporting node".into()));
            return;
        }
        if t.status == r.status {
            return;
        }
        if !t.status.state.can_transition_to(r.status.state) {
            out.skipped.push((item, format!("illegal transition {} -> {}", t.status.state, r.status.state)));
            return;
        }
        // A task the scheduler has not placed yet (a global task is bound to its node from the
        // start) may only be refused by the node, never started.
        if t.status.state < TaskState::Assigned
            && !matches!(r.status.state, TaskState::Rejected | TaskState::Shutdown)
        {
            out.skipped.push((item, "task has not been scheduled yet".into()));
            return;
        }
        let mut t = t.clone();
        let changed_state = t.status.state != r.status.state;
        t.status = r.status;
        if changed_state {
            // State-change times come from the log, not from the reporting node's clock.
            t.status.timestamp = at;
        }
        self.commit_task(index, at, t, out);
    }

    fn checked_task(&self, id: &TaskId, version: u64, item: &PlanItem, out: &mut Applied) -> Option<&Task> {
        match self.tasks.get(id) {
            None => {
                out.skipped.push((item.clone(), "task no longer exists".into()));
                None
            }
            // A change made earlier in this same apply (version == the index being applied) came
            // from this plan itself, so later items of the plan may build on it.
            Some(t) if t.version != version && t.version != self.index + 1 => {
                out.skipped
                    .push((item.clone(), format!("task changed (version {} != {version})", t.version)));
                None
            }
            Some(t) => Some(t),
        }
    }

    /// The old task is told to stop (its process is already stopped by the checkpoint); the new
    /// one, bound to its node and carrying where its checkpoint is, takes the same slot.
    fn migrate_task(
        &mut self,
        index: u64,
        at: Timestamp,
        id: &TaskId,
        version: u64,
        mut new: Task,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        let old = self.tasks.get(id).ok_or_else(|| not_found("task", id.as_str()))?;
        if old.version != version {
            return Err(StateError::VersionConflict {
                kind: "task",
                id: id.to_string(),
                expected: version,
                actual: old.version,
            });
        }
        if old.desired_state > TaskState::Running {
            return Err(StateError::Migration(format!("task {id} is already being stopped")));
        }
        if self.tasks.contains_key(&new.id) {
            return Err(StateError::AlreadyExists { kind: "task", id: new.id.to_string() });
        }
        if new.service_id != old.service_id || new.slot != old.slot || new.restore.is_none() {
            return Err(StateError::Migration(
                "the new task must take the old one's slot and restore".into(),
            ));
        }
        let taken = self.tasks_of_service(&new.service_id).any(|t| {
            t.id != *id
                && t.slot == new.slot
                && t.desired_state == TaskState::Running
                && !t.status.state.is_terminal()
        });
        if taken {
            return Err(StateError::Migration("another task already holds the slot".into()));
        }
        let Some(node) = new.node_id.as_ref().and_then(|n| self.nodes.get(n)) else {
            return Err(StateError::Migration("the target node does not exist".into()));
        };
        if node.status.state != shoal_types::NodeState::Ready {
            return Err(StateError::Migration(format!("node {} is not ready", node.description.hostname)));
        }
        let mut old = old.clone();
        self.attach_task_networks(&mut new).map_err(StateError::Migration)?;
        old.desired_state = TaskState::Shutdown;
        self.commit_task(index, at, old, out);
        new.desired_state = TaskState::Running;
        new.status.state = TaskState::Assigned;
        new.status.timestamp = at;
        new.created_at = at;
        touch(&mut new.version, &mut new.updated_at, index, at);
        self.templates.share(&mut new);
        out.events.push(event(index, at, Action::Create, Object::Task(Box::new(new.clone()))));
        self.put_task(new);
        Ok(())
    }

    fn commit_task(&mut self, index: u64, at: Timestamp, mut t: Task, out: &mut Applied) {
        touch(&mut t.version, &mut t.updated_at, index, at);
        out.events.push(event(index, at, Action::Update, Object::Task(Box::new(t.clone()))));
        self.put_task(t);
    }

    /// Inserts or replaces a task, keeping every index in step.
    fn put_task(&mut self, mut t: Task) {
        self.templates.share(&mut t);
        // Ids are reference-counted strings: a decoded task brings its own copies of its
        // service's and node's ids, swapped here for the ones the service and node maps hold.
        if let Some((k, _)) = self.services.get_key_value(&t.service_id) {
            t.service_id = k.clone();
        }
        if let Some((k, _)) = t.node_id.as_ref().and_then(|n| self.nodes.get_key_value(n)) {
            t.node_id = Some(k.clone());
        }
        let id = t.id.clone();
        if let Some(old) = self.drop_task(&id) {
            drop(old);
        }
        self.tasks_by_service.entry(t.service_id.clone()).or_default().insert(id.clone());
        if t.needs_placement() {
            self.needs_placement.insert(id.clone());
        }
        if let Some(n) = &t.node_id {
            self.tasks_by_node.entry(n.clone()).or_default().insert(id.clone());
            if t.holds_resources() {
                self.usage.entry(n.clone()).or_default().add(&t);
            }
        }
        self.hold_task_addresses(&t);
        self.tasks.insert(id, t);
    }

    fn drop_task(&mut self, id: &TaskId) -> Option<Task> {
        let t = self.tasks.remove(id)?;
        self.release_task_addresses(&t);
        self.needs_placement.remove(id);
        if let Some(set) = self.tasks_by_service.get_mut(&t.service_id) {
            set.remove(id);
            if set.is_empty() {
                self.tasks_by_service.remove(&t.service_id);
                self.templates.forget(&t.service_id);
            }
        }
        if let Some(n) = &t.node_id {
            if let Some(set) = self.tasks_by_node.get_mut(n) {
                set.remove(id);
                if set.is_empty() {
                    self.tasks_by_node.remove(n);
                }
            }
            if t.holds_resources() {
                if let Some(u) = self.usage.get_mut(n) {
                    u.remove(&t);
                    if u.is_empty() {
                        self.usage.remove(n);
                    }
                }
            }
        }
        Some(t)
    }

    /// Recomputes the derived indexes from scratch and compares: for tests and debug checks.
    pub fn check_indexes(&self) -> Result<(), String> {
        let rebuilt = ClusterState::restore(self.snapshot());
        if rebuilt.usage != self.usage {
            return Err("usage index out of step".into());
        }
        if rebuilt.tasks_by_node != self.tasks_by_node || rebuilt.tasks_by_service != self.tasks_by_service {
            return Err("task indexes out of step".into());
        }
        if rebuilt.needs_placement != self.needs_placement {
            return Err("placement index out of step".into());
        }
        if rebuilt.service_by_name != self.service_by_name {
            return Err("service name index out of step".into());
        }
        if rebuilt.net != self.net {
            return Err("network address index out of step".into());
        }
        Ok(())
    }

    /// Nodes that are ready (for callers that need a quick count).
    pub fn ready_nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.values().filter(|n| n.status.state == NodeState::Ready)
    }
}

fn touch(version: &mut u64, updated_at: &mut Timestamp, index: u64, at: Timestamp) {
    *version = index;
    *updated_at = at;
}

fn event(index: u64, at: Timestamp, action: Action, object: Object) -> Event {
    Event { index, at, action, object }
}

fn not_found(kind: &'static str, id: &str) -> StateError {
    StateError::NotFound { kind, id: id.to_string() }
}

fn check_version(kind: &'static str, id: &str, expected: Option<u64>, actual: u64) -> Result<(), StateError> {
    match expected {
        Some(e) if e != actual => {
            Err(StateError::VersionConflict { kind, id: id.to_string(), expected: e, actual })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod data_path_port_tests {
    use super::*;

    fn cluster(port: u16) -> ClusterObject {
        ClusterObject {
            id: "c1".into(),
            created_at: Timestamp::ZERO,
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            worker_token: String::new(),
            manager_token: String::new(),
            data_path_port: port,
        }
    }

    #[test]
    fn only_ports_within_1024_to_49151_are_accepted() {
        for ok in [1024, 4789, 7789, 49151] {
            assert_eq!(validate_data_path_port(ok), Ok(ok as u16));
        }
        for bad in [0, 80, 1023, 49152, 65535, 70000] {
            let e = validate_data_path_port(bad).expect_err("refused");
            let msg = e.to_string();
            assert!(msg.contains(&format!("data path port {bad} ")) && msg.contains("1024-49151"), "{msg}");
        }
    }

    #[test]
    fn state_from_before_the_port_reads_back_with_4789() {
        // What a version without the field wrote: today's JSON less `data_path_port`.
        let mut snap = serde_json::to_value(Snapshot { cluster: Some(cluster(7789)), ..Default::default() })
            .expect("json");
        let old = snap["cluster"].as_object_mut().expect("cluster");
        assert!(old.remove("data_path_port").is_some());
        let c: ClusterObject = serde_json::from_value(snap["cluster"].clone()).expect("old cluster object");
        assert_eq!(c.data_path_port, DEFAULT_DATA_PATH_PORT);
        let snap: Snapshot = serde_json::from_value(snap).expect("old snapshot");
        let s = ClusterState::restore(snap);
        assert_eq!(s.cluster().map(|c| c.data_path_port), Some(4789));
    }

    #[test]
    fn the_port_chosen_at_init_survives_a_snapshot() {
        let mut s = ClusterState::new();
        s.apply(Timestamp::from_secs(1), Command::InitCluster { cluster: Box::new(cluster(7789)) })
            .expect("init");
        let json = serde_json::to_string(&s.snapshot()).expect("snapshot");
        let back = ClusterState::restore(serde_json::from_str(&json).expect("read back"));
        assert_eq!(back.cluster().map(|c| c.data_path_port), Some(7789));
        assert_eq!(back, s);
    }

    #[test]
    fn init_with_a_port_out_of_range_is_refused_and_creates_nothing() {
        let mut s = ClusterState::new();
        let e = s
            .apply(Timestamp::from_secs(1), Command::InitCluster { cluster: Box::new(cluster(80)) })
            .expect_err("refused");
        assert!(e.to_string().contains("1024-49151"), "{e}");
        assert_eq!(s, ClusterState::new());
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use shoal_types::NodeRole;

    fn cluster() -> ClusterObject {
        ClusterObject {
            id: "c1".into(),
            created_at: Timestamp::ZERO,
            ca_cert_pem: "ca".into(),
            ca_key_pem: "key".into(),
            worker_token: "w".into(),
            manager_token: "m".into(),
            data_path_port: DEFAULT_DATA_PATH_PORT,
        }
    }

    fn node(id: &str, role: NodeRole) -> Node {
        let mut n = Node::test(id, id);
        n.spec.role = role;
        n
    }

    fn backup() -> Snapshot {
        let mut s = ClusterState::new();
        s.apply(Timestamp::from_secs(1), Command::InitCluster { cluster: Box::new(cluster()) })
            .expect("init");
        for n in [node("m1", NodeRole::Manager), node("m2", NodeRole::Manager), node("w1", NodeRole::Worker)]
        {
            s.apply(Timestamp::from_secs(2), Command::RegisterNode { node: Box::new(n) }).expect("node");
        }
        let mut spec = ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.command = vec!["sleep".into(), "1000".into()];
        let svc = Service::new(ServiceId::new("s1"), spec);
        s.apply(Timestamp::from_secs(3), Command::CreateService { service: Box::new(svc) }).expect("svc");
        s.snapshot()
    }

    #[test]
    fn a_snapshot_without_a_format_reads_as_1_and_new_ones_carry_the_current_one() {
        let snap = backup();
        assert_eq!(snap.format, FORMAT_VERSION);
        let mut v = serde_json::to_value(&snap).expect("json");
        assert!(v.as_object_mut().expect("object").remove("format").is_some());
        let old: Snapshot = serde_json::from_value(v).expect("old snapshot");
        assert_eq!(old.format, 1);
        let e = check_format("the snapshot", FORMAT_VERSION + 1, FORMAT_VERSION).expect_err("newer");
        assert_eq!(
            e.to_string(),
            format!(
                "the snapshot was written by a newer Shoal (format {}, this binary knows up to {FORMAT_VERSION}): \
                 upgrade this binary",
                FORMAT_VERSION + 1
            )
        );
    }

    #[test]
    fn restoring_a_backup_keeps_workers_and_services_and_removes_the_old_managers() {
        let snap = backup();
        let mut s = ClusterState::new();
        let applied = s
            .apply(Timestamp::from_secs(9), Command::RestoreBackup { snapshot: Box::new(snap.clone()) })
            .expect("restore");
        assert_eq!(s.cluster().map(|c| c.ca_key_pem.as_str()), Some("key"));
        assert!(s.service_by_name("web").is_some());
        assert!(s.node(&NodeId::new("w1")).is_some());
        for m in ["m1", "m2"] {
            assert!(s.node(&NodeId::new(m)).is_none(), "{m} is no phantom manager");
            assert!(s.is_removed(&NodeId::new(m)), "{m} is tombstoned");
        }
        assert!(applied.index >= snap.index && s.index() == applied.index);
        s.check_indexes().expect("indexes");
        // Once initialized, a restore is refused and changes nothing.
        let before = s.clone();
        let e =
            s.apply(Timestamp::from_secs(10), Command::RestoreBackup { snapshot: Box::new(snap.clone()) });
        assert!(matches!(e, Err(StateError::AlreadyExists { .. })), "{e:?}");
        assert_eq!(s, before);
        // A newer format is refused.
        let mut newer = snap;
        newer.format = FORMAT_VERSION + 1;
        let mut fresh = ClusterState::new();
        let e = fresh
            .apply(Timestamp::from_secs(9), Command::RestoreBackup { snapshot: Box::new(newer) })
            .expect_err("newer");
        assert!(e.to_string().contains("written by a newer Shoal"), "{e}");
        assert_eq!(fresh, ClusterState::new());
    }
}
