//! Services: what the operator wants running. `spec` is the user's; `spec_version`,
//! `previous_spec` and `update_status` are the system's record of rolling updates.
//!
//! Every type of the user's spec refuses unknown fields (`deny_unknown_fields`), so a misspelled
//! field is an error that names it instead of a setting silently left at its default. The
//! system-owned types (`Service`, `UpdateStatus`) stay tolerant: other replicas and agents send
//! them, possibly from a newer version.

use crate::container::{DnsConfig, LogDriver, Ulimit};
use crate::id::ServiceId;
use crate::network::{NetworkAttachmentConfig, ServiceEndpoint};
use crate::resources::Resources;
use crate::time::{duration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Service {
    pub id: ServiceId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: ServiceSpec,
    /// Bumped whenever the task template changes (or is forced); tasks record the version they
    /// were created from, and a task with an older one is "dirty" and gets replaced by the updater.
    pub spec_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// Set by `service rebalance` (system-owned, not a spec change): the orchestrator moves tasks
    /// one at a time until the spread is even, then clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_requested_at: Option<Timestamp>,
    /// The service's virtual IPs on its networks (allocated by the managers).
    #[serde(default, skip_serializing_if = "ServiceEndpoint::is_empty")]
    pub endpoint: ServiceEndpoint,
    /// A scheduled job's record (mode `scheduled` only): next occurrence, runs, counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::job::JobStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskTemplate,
    pub mode: ServiceMode,
    pub update_config: UpdateConfig,
    pub rollback_config: UpdateConfig,
    pub endpoint: EndpointSpec,
    /// `auto`: even out the spread whenever it is off by more than one (a node joined or came
    /// back); `manual` (default): only on `service rebalance`.
    pub rebalance: RebalanceMode,
    /// What happens to the service's tasks when their node drains: `restart` (default) elsewhere
    /// from scratch, or `migrate` with their state (checkpoint/restore, where the node can).
    pub on_drain: OnDrain,
    /// Overlay networks the tasks join (name or id; stored as the id). Empty: the node's own
    /// network, as before networks existed. Left out of the JSON when empty (as `endpoint.mode`
    /// when `vip`), so a spec that does not use networks reads the same to a version without them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    /// Services (by name) whose tasks must be up before a task of this one is placed (compose's
    /// `depends_on`): a new task waits, pending and explained, until every dependency has a
    /// running (or healthy) task; tasks already running never stop for a dependency. Not part
    /// of the tasks: changing it redeploys nothing. Left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
}

/// One entry of [`ServiceSpec::depends_on`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct Dependency {
    /// The service's name.
    pub service: String,
    pub condition: DependencyCondition,
}

/// When a dependency counts as satisfied: at least one of its tasks is running (`started`), or
/// running and, when it has a health check, healthy (`healthy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum DependencyCondition {
    #[default]
    #[serde(alias = "service_started")]
    Started,
    #[serde(alias = "service_healthy")]
    Healthy,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Started => "started",
            DependencyCondition::Healthy => "healthy",
        }
    }
}

/// See [`ServiceSpec::on_drain`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum OnDrain {
    #[default]
    Restart,
    Migrate,
}

/// When a replicated service's tasks are moved to even out their spread over eligible nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum RebalanceMode {
    #[default]
    Manual,
    Auto,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    GlobalJob,
    /// A job whose runs start on a schedule, after parent jobs, or by hand; one task per run.
    Scheduled(Box<crate::job::ScheduledJob>),
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

impl ServiceMode {
    /// Tasks run to completion (jobs, including scheduled ones): no rolling updates.
    pub fn is_job(&self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob | ServiceMode::Scheduled(_))
    }
    /// The schedule and its settings, for a scheduled job.
    pub fn scheduled(&self) -> Option<&crate::job::ScheduledJob> {
        match self {
            ServiceMode::Scheduled(j) => Some(j),
            _ => None,
        }
    }
    pub fn is_global(&self) -> bool {
        matches!(self, ServiceMode::Global | ServiceMode::GlobalJob)
    }
    pub fn name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
            ServiceMode::Scheduled(_) => "scheduled",
        }
    }
}

/// What each task runs. Copied into every task, so a task is self-describing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct TaskTemplate {
    /// `process`, `oci` or `docker`; `None` lets the node pick (see the agent issue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub resources: ResourceRequirements,
    pub restart_policy: RestartPolicy,
    pub placement: Placement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Time between SIGTERM and SIGKILL when the task is stopped (update, scale down, rm,
    /// drain); [`DEFAULT_STOP_GRACE_PERIOD`] unless set.
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub stop_grace_period: Duration,
    /// Incremented by `service update --force` to redeploy an unchanged spec.
    pub force_update: u64,
    // Container options (see `crate::container`): each is left out of the JSON while unused, so
    // a template without them reads the same to a version that does not know them.
    /// Mount the task's root filesystem read-only (docker, oci).
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Capabilities added to the runtime's default set (`CAP_NET_ADMIN`, or `ALL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the runtime's default set (`CAP_NET_RAW`, or `ALL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Resolver settings of the task's `resolv.conf`.
    #[serde(skip_serializing_if = "DnsConfig::is_empty")]
    pub dns: DnsConfig,
    /// Run an init process (docker-init/tini) as the task's pid 1 (docker, oci).
    #[serde(skip_serializing_if = "is_false")]
    pub init: bool,
    /// Give the task a pseudo-terminal (docker).
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    /// Labels of the task's container (docker) or OCI annotations (oci); the service's labels
    /// are `ServiceSpec::labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub container_labels: BTreeMap<String, String>,
    /// Resource limits (`setrlimit`) of the task's processes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Supplementary groups of the task's user (names or gids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How the task's output is kept: Shoal's own store (`json-file`/`local` with
    /// `max-size`/`max-file`); `None`: the node's default rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriver>,
    /// Registry credentials for pulling the image (`--with-registry-auth`), sealed by the
    /// managers: never the plaintext (see [`SealedAuth`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<SealedAuth>,
    /// Secrets the task finds in files (`--secret`), in memory only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secret::SecretReference>,
    /// Configs the task finds in files (`--config`), in memory only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<crate::secret::SecretReference>,
}

/// Registry credentials sealed by the managers (AES-256-GCM under a key derived from the cluster
/// CA's key, bound to the service id), as base64 text. Only the managers can open them; the
/// dispatcher hands the plaintext to the nodes that run a task of the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[derive(schemars::JsonSchema)]
pub struct SealedAuth(pub String);

/// The longest sealed credentials accepted (base64 characters).
pub const MAX_SEALED_AUTH: usize = 16 * 1024;

fn is_false(b: &bool) -> bool {
    !*b
}

/// Docker's default: a stopped task gets 10 s to exit on SIGTERM before it is killed.
pub const DEFAULT_STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Also what a JSON template without a field gets for it (`#[serde(default)]`).
impl Default for TaskTemplate {
    fn default() -> Self {
        TaskTemplate {
            driver: None,
            image: None,
            command: Vec::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            workdir: String::new(),
            user: String::new(),
            hostname: String::new(),
            mounts: Vec::new(),
            resources: ResourceRequirements::default(),
            restart_policy: RestartPolicy::default(),
            placement: Placement::default(),
            health_check: None,
            stop_grace_period: DEFAULT_STOP_GRACE_PERIOD,
            force_update: 0,
            read_only: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            dns: DnsConfig::default(),
            init: false,
            tty: false,
            container_labels: BTreeMap::new(),
            ulimits: Vec::new(),
            groups: Vec::new(),
            log_driver: None,
            registry_auth: None,
            secrets: Vec::new(),
            configs: Vec::new(),
        }
    }
}

/// Drivers that can run images, in order of preference when a task names none.
pub const IMAGE_DRIVERS: [&str; 2] = ["docker", "oci"];
/// The driver for tasks without an image.
pub const PROCESS_DRIVER: &str = "process";

impl TaskTemplate {
    /// Drivers that may run this task, in order of preference: the one it names, else the image
    /// drivers for an image, else the process driver. The agent picks the first it offers; the
    /// scheduler only places the task on a node that offers one of them.
    ///
    /// An image without a driver leaves out the image drivers that cannot honour the template's
    /// container options (`--tty`: docker only), so the scheduler places such a task only where
    /// a driver that can runs. A named driver (or the process driver of a task without an image)
    /// stays the candidate: validation refuses a template it cannot honour, naming the option.
    pub fn driver_candidates(&self) -> Vec<&str> {
        match (&self.driver, &self.image) {
            (Some(d), _) => vec![d.as_str()],
            (None, Some(_)) => {
                IMAGE_DRIVERS.into_iter().filter(|d| self.options_unsupported_by(d).is_empty()).collect()
            }
            (None, None) => vec![PROCESS_DRIVER],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum MountType {
    #[default]
    Bind,
    Volume,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    pub source: String,
    pub target: String,
    pub readonly: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ResourceRequirements {
    /// Guaranteed to the task; the scheduler never overcommits these.
    pub reservations: Resources,
    /// Enforced by the runtime (cgroups); zero means unlimited.
    pub limits: Resources,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(schemars::JsonSchema)]
pub enum RestartCondition {
    None,
    #[serde(alias = "on_failure")]
    OnFailure,
    #[default]
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub delay: Duration,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// Window in which `max_attempts` are counted; 0 = forever.
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: Duration::from_secs(5),
            max_attempts: 0,
            window: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Strategy {
    /// Fewest tasks of this service, then fewest tasks overall.
    #[default]
    Spread,
    /// The most allocated node that still fits.
    Binpack,
    /// Uniformly at random (seeded) among nodes that fit.
    Random,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct Placement {
    pub constraints: Vec<String>,
    pub preferences: Vec<PlacementPreference>,
    /// 0 = unlimited.
    pub max_replicas_per_node: u64,
    pub strategy: Strategy,
    /// Anti-affinity (fleet's `Conflicts=`): never on a node running a task of a service whose
    /// name or `fleet.unit` label matches one of these globs (`*`, `?`), this service included
    /// (`web@*.service` on the instances of `web@.service`: one per node). Either side's
    /// conflicts keep the two apart. Left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Co-location (fleet's `MachineOf=`): only on a node running a task of each of these
    /// services (by name or `fleet.unit` label); the task moves when they move. Left out of the
    /// JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub colocate: Vec<String>,
}

/// The label that keeps the name of the fleet unit a service was made from.
pub const FLEET_UNIT_LABEL: &str = "fleet.unit";

impl ServiceSpec {
    /// The names placement rules (`conflicts`, `colocate`) match: the service's name and, for
    /// a fleet unit, the unit's name.
    pub fn placement_names(&self) -> impl Iterator<Item = &str> + '_ {
        std::iter::once(self.name.as_str()).chain(self.labels.get(FLEET_UNIT_LABEL).map(String::as_str))
    }
}

/// Shell-style glob matching (`*` any run of characters, `?` one character), as fleet's
/// `Conflicts=` uses it. Iterative, so no pattern can make it slow.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Spread tasks evenly over the values of a node label (`node.labels.zone`); several
/// preferences form a hierarchy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct PlacementPreference {
    pub spread: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct HealthCheck {
    /// `["CMD", "prog", "arg"]`, `["CMD-SHELL", "cmd"]` or `["NONE"]`.
    pub test: Vec<String>,
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub interval: Duration,
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub start_period: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            test: Vec::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(schemars::JsonSchema)]
pub enum UpdateOrder {
    #[default]
    #[serde(alias = "stop_first")]
    StopFirst,
    #[serde(alias = "start_first")]
    StartFirst,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct UpdateConfig {
    /// Tasks replaced at a time (at least 1).
    pub parallelism: u64,
    /// Wait between finishing one batch and starting the next.
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub delay: Duration,
    pub failure_action: FailureAction,
    /// How long a new task is watched after it starts; failing within it counts as a failed update.
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub monitor: Duration,
    /// Fraction of updated tasks that may fail before `failure_action` applies (0..=1).
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: Duration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum PublishMode {
    /// Bound on the node that runs the task; two such tasks cannot share a node. The default
    /// when a spec does not say (as before ingress existed).
    #[default]
    Host,
    /// The routing mesh: published on every node and reserved cluster-wide (one service per
    /// port and protocol); the service joins the `ingress` network. Phase 1 allocates and
    /// reserves it; nothing forwards it yet.
    Ingress,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct PortConfig {
    /// Port on the node; 0 = none published (target only).
    pub published: u16,
    pub target: u16,
    pub protocol: Protocol,
    pub mode: PublishMode,
}

/// How a service is reached on its networks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum EndpointMode {
    /// One virtual IP per network, load-balanced over the tasks.
    #[default]
    Vip,
    /// DNS round robin over the task addresses; no virtual IP.
    Dnsrr,
}

impl EndpointMode {
    pub fn is_vip(&self) -> bool {
        *self == EndpointMode::Vip
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct EndpointSpec {
    #[serde(skip_serializing_if = "EndpointMode::is_vip")]
    pub mode: EndpointMode,
    pub ports: Vec<PortConfig>,
}

impl EndpointSpec {
    /// Host ports this endpoint binds on its node (host mode only: ingress ports are the
    /// routing mesh's, reserved cluster-wide, and never restrict where a task goes).
    pub fn host_ports(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        self.ports
            .iter()
            .filter(|p| p.published != 0 && p.mode == PublishMode::Host)
            .map(|p| (p.protocol, p.published))
    }

    /// Ports published through the routing mesh.
    pub fn ingress_ports(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        self.ports
            .iter()
            .filter(|p| p.published != 0 && p.mode == PublishMode::Ingress)
            .map(|p| (p.protocol, p.published))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted
        )
    }
    /// The updater is actively replacing tasks.
    pub fn is_active(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default)]
    pub message: String,
}

impl Service {
    /// A service about to be created: the store fills in version, times and spec_version.
    pub fn new(id: ServiceId, spec: ServiceSpec) -> Service {
        Service {
            id,
            version: 0,
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
            spec,
            spec_version: 0,
            previous_spec: None,
            update_status: None,
            rebalance_requested_at: None,
            endpoint: ServiceEndpoint::default(),
            job: None,
        }
    }

    /// The config that governs the update in progress: rollback_config while rolling back.
    pub fn active_update_config(&self) -> &UpdateConfig {
        match &self.update_status {
            Some(u) if u.state.is_rollback() => &self.spec.rollback_config,
            _ => &self.spec.update_config,
        }
    }
}
