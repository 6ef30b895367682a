//! The contract between Shoal's agent and its task runtimes.
//!
//! The agent owns policy: one generic task state machine (preparing → starting → running →
//! complete/failed, shutdown on request), restarts, reporting. A [`Driver`] owns primitives only:
//! prepare a task's image and mounts, start it, find it again after a restart, wait for it, stop
//! it with a grace period, destroy what it left, and read its logs and stats. Drivers report what
//! they can do ([`shoal_types::DriverInfo`]) and the scheduler places tasks only on nodes that offer
//! their driver.
//!
//! Everything a driver needs to find a task again after the agent restarts lives in its
//! [`Handle`], which the agent persists next to the task.

pub mod criu;
pub mod exec_stream;
pub mod secrets;
pub mod shim;

use async_trait::async_trait;
pub use exec_stream::{ExecInput, ExecOutput, ExecSession, ExecStreamOptions, WindowSize};
use serde::{Deserialize, Serialize};
use shoal_types::{DnsConfig, DriverInfo, LogDriver, Mount, PortConfig, Ulimit};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Capability names a driver may report in [`DriverInfo::capabilities`].
pub mod capability {
    /// Memory, CPU and pids limits are enforced.
    pub const LIMITS: &str = "limits";
    /// `exec` runs a command in the task's context (health checks).
    pub const EXEC: &str = "exec";
    /// Runs images.
    pub const IMAGES: &str = "images";
    /// CRIU checkpoint/restore works on this node.
    pub const CHECKPOINT: &str = "checkpoint";
    /// Host-mode published ports.
    pub const HOST_PORTS: &str = "host-ports";
}

/// What a driver needs to run one task; the agent derives it from the assigned task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskConfig {
    pub task_id: String,
    pub service_id: String,
    /// A readable runtime name, `<service>.<slot or node>.<task id>`.
    pub name: String,
    pub image: Option<String>,
    /// The command; for images, empty means the image's entrypoint/cmd.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Empty: the driver's default.
    pub workdir: String,
    /// `uid[:gid]` or a user name; empty: the driver's default (root, or the image's user).
    pub user: String,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
    /// Host-mode published ports.
    pub ports: Vec<PortConfig>,
    pub labels: BTreeMap<String, String>,
    /// A directory private to this task (created by the agent, removed after `destroy`): drivers
    /// keep their per-task state and logs here.
    pub task_dir: PathBuf,
    /// Where named volumes live on this node (`<volumes_dir>/<name>`).
    pub volumes_dir: PathBuf,
    /// The task's network namespace (`/run/netns/...`) when it joins overlay networks; None: the
    /// node's network, as before networks existed.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// With `netns`: the `resolv.conf` the task must see (it names the node's resolver).
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// The service's name (docker names its containers `<service>.<slot>.<task id>` after it, as
    /// Swarm does); empty when the agent does not know it.
    #[serde(default)]
    pub service_name: String,
    /// The stack the service belongs to (its `com.docker.stack.namespace` label), if any.
    #[serde(default)]
    pub stack_namespace: Option<String>,
    /// The node the task runs on.
    #[serde(default)]
    pub node_id: String,
    /// Container options (`shoal_types::container`). A driver that cannot honour one it is given
    /// refuses the task ([`DriverError::Invalid`]); none is ever ignored.
    #[serde(default)]
    pub options: ContainerOptions,
    /// Credentials for pulling `image` (`--with-registry-auth`), handed over by the managers with
    /// the assignment. Never serialized (so never in a record on disk); Debug redacts them.
    #[serde(skip)]
    pub registry_auth: Option<RegistryAuth>,
    /// The task's secrets and configs: files in its tmpfs ([`secrets::materialize`]), to be
    /// bound read-only at their targets. A driver that cannot refuses the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<secrets::SecretFile>,
}

/// Registry credentials in plain text, as Docker's `X-Registry-Auth` carries them. Debug
/// redacts the password; nothing may log it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegistryAuth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// The registry (`docker.io`'s is `https://index.docker.io/v1/`).
    #[serde(default)]
    pub serveraddress: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("serveraddress", &self.serveraddress)
            .finish()
    }
}

/// The task template's container options, as the drivers get them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    pub read_only: bool,
    /// `CAP_…` names or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub dns: DnsConfig,
    pub init: bool,
    pub tty: bool,
    /// Container labels (docker) or OCI annotations (oci).
    pub labels: BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    /// Supplementary groups: names (resolved in the image's or node's `/etc/group`) or gids.
    pub groups: Vec<String>,
    pub log_driver: Option<LogDriver>,
}

impl ContainerOptions {
    /// The template's options.
    pub fn of(t: &shoal_types::TaskTemplate) -> Self {
        ContainerOptions {
            read_only: t.read_only,
            cap_add: t.cap_add.clone(),
            cap_drop: t.cap_drop.clone(),
            dns: t.dns.clone(),
            init: t.init,
            tty: t.tty,
            labels: t.container_labels.clone(),
            ulimits: t.ulimits.clone(),
            groups: t.groups.clone(),
            log_driver: t.log_driver.clone(),
        }
    }

    /// Refuses what a driver cannot do: `unable` lists (option, "why") pairs that are in use.
    pub fn refuse(driver: &str, unable: &[(bool, &str)]) -> Result<(), DriverError> {
        let used: Vec<&str> = unable.iter().filter(|(on, _)| *on).map(|(_, what)| *what).collect();
        if used.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Invalid(format!("the {driver} driver cannot honour {}", used.join(", "))))
        }
    }

    /// Log rotation (`max-size`, `max-file`) of the task's log driver, else the defaults given.
    pub fn log_rotation(&self, max_bytes: u64, max_files: u32) -> (u64, u32) {
        match &self.log_driver {
            None => (max_bytes, max_files),
            Some(l) => (l.max_size().unwrap_or(max_bytes), l.max_file().unwrap_or(max_files)),
        }
    }
}

/// The `resolv.conf` a task with DNS options must see, or `None` without any (the driver's
/// default file then). `base` is what it would see otherwise: the agent's file naming Shoal's
/// resolver on overlay networks (`on_networks`), else the node's `/etc/resolv.conf`. Each part the
/// options give replaces the base's; on networks the nameserver stays Shoal's resolver (which
/// forwards the names the cluster does not own to the task's own servers: the agent gives them to
/// it), and the base's options are kept before the task's (the resolver reads the last of a kind).
pub fn resolv_conf_text(
    dns: &DnsConfig,
    base: &str,
    on_networks: bool,
) -> Result<Option<String>, DriverError> {
    // On networks the servers are the resolver's business, not the file's.
    let own_servers = !on_networks && !dns.nameservers.is_empty();
    if !own_servers && dns.search.is_empty() && dns.options.is_empty() {
        return Ok(None);
    }
    let of = |kind: &str| -> Vec<String> {
        base.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(kind)).then(|| w.map(str::to_string).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    };
    let nameservers = if own_servers { dns.nameservers.clone() } else { of("nameserver") };
    let search = if dns.search.is_empty() { of("search") } else { dns.search.clone() };
    let options = match (dns.options.is_empty(), on_networks) {
        (true, _) => of("options"),
        (false, true) => of("options").into_iter().chain(dns.options.iter().cloned()).collect(),
        (false, false) => dns.options.clone(),
    };
    let mut text = String::new();
    for n in nameservers {
        text.push_str(&format!("nameserver {n}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    Ok(Some(text))
}

/// Writes the task's own `resolv.conf` into its directory when its DNS options ask for one
/// ([`resolv_conf_text`]) and returns its path; `None`: the task sees `cfg.resolv_conf` (on
/// networks) or the node's file, as without options.
pub fn write_resolv_conf(cfg: &TaskConfig) -> Result<Option<PathBuf>, DriverError> {
    if cfg.options.dns.is_empty() {
        return Ok(None);
    }
    let base_path = cfg.resolv_conf.clone().unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"));
    let base = std::fs::read_to_string(&base_path).unwrap_or_default();
    let Some(text) = resolv_conf_text(&cfg.options.dns, &base, cfg.netns.is_some())? else { return Ok(None) };
    std::fs::create_dir_all(&cfg.task_dir)
        .map_err(|e| DriverError::runtime(&format!("creating {}", cfg.task_dir.display()), e))?;
    let path = cfg.task_dir.join("resolv.conf");
    std::fs::write(&path, text)
        .map_err(|e| DriverError::runtime(&format!("writing {}", path.display()), e))?;
    Ok(Some(path))
}

/// Resolves supplementary groups (names or gids) against an `/etc/group` text; a name that is
/// not there is an error naming `where_` (the image's or the node's file).
pub fn resolve_groups(groups: &[String], etc_group: &str, where_: &str) -> Result<Vec<u32>, DriverError> {
    groups
        .iter()
        .map(|g| {
            if let Ok(gid) = g.parse::<u32>() {
                return Ok(gid);
            }
            etc_group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| DriverError::Invalid(format!("group {g:?} not found in {where_}")))
        })
        .collect()
}

/// Runtime limits; `None` = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU quota in billionths of a CPU (1e9 = one CPU).
    pub nano_cpus: Option<u64>,
    pub pids: Option<u64>,
}

/// The smallest memory limit a task may ask for (Docker uses the same floor).
pub const MIN_MEMORY_LIMIT: u64 = 6 << 20;

/// How a driver finds a task again: persisted by the agent, opaque to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub task_id: String,
    pub driver: String,
    /// The runtime's own id (container id, pid...), shown as the task's runtime id.
    pub runtime_id: String,
    /// Driver-private state.
    pub state: serde_json::Value,
}

/// How a task ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code; 128 + signal number when killed by a signal (the shell convention).
    pub code: i32,
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Anything the runtime said about it; empty when nothing.
    pub message: String,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none() && !self.oom_killed
    }

    /// How a task that a checkpoint stopped ended: code 0 with [`CHECKPOINTED`] as the message.
    pub fn checkpointed() -> Self {
        ExitStatus { code: 0, signal: None, oom_killed: false, message: CHECKPOINTED.into() }
    }

    pub fn is_checkpointed(&self) -> bool {
        self.message == CHECKPOINTED
    }
}

/// The message of [`ExitStatus::checkpointed`].
pub const CHECKPOINTED: &str = "stopped by a checkpoint";

/// How [`Driver::checkpoint`] works.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointOptions {
    /// Keep the task running (a snapshot); by default the checkpoint stops it.
    pub leave_running: bool,
    /// Memory pre-dumps before the final dump, which then only copies what changed (a shorter
    /// freeze). Needs the kernel's dirty-memory tracking; skipped with a warning without it.
    pub pre_dumps: u32,
    /// Also checkpoint established TCP connections; by default a task holding one is refused.
    pub tcp_established: bool,
}

/// What [`Driver::checkpoint`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// Pre-dumps done (fewer than asked when the node cannot do them).
    pub pre_dumps: u32,
    /// How long the task was frozen for the final dump (with `leave_running`: until it was resumed,
    /// the filesystem copy included). Without it the task stays down until restored.
    pub freeze: Duration,
    /// Everything, pre-dumps and filesystem changes included.
    pub total: Duration,
}

/// What [`Driver::recover`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    Running,
    /// It ended while nobody was watching.
    Exited(ExitStatus),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(schemars::JsonSchema)]
pub enum LogStream {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the task exits or the receiver is dropped.
    pub follow: bool,
    /// Only the last N lines (before following).
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<SystemTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub timestamp: SystemTime,
    /// The line without its trailing newline (lossy UTF-8).
    pub line: String,
}

pub type LogReceiver = tokio::sync::mpsc::Receiver<Result<LogLine, DriverError>>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Total CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    /// Combined stdout and stderr, capped.
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The task can never run here as specified (missing image or binary, bad mount source,
    /// limits below the minimum...): the agent marks it **rejected** with this message.
    #[error("{0}")]
    Invalid(String),
    /// The driver does not offer this operation.
    #[error("not supported by the {driver} driver: {what}")]
    Unsupported { driver: String, what: String },
    /// The runtime no longer knows the task.
    #[error("task not found in the runtime: {0}")]
    NotFound(String),
    /// The runtime failed; the task is marked **failed** with this message.
    #[error("{0}")]
    Runtime(String),
}

impl DriverError {
    pub fn runtime(context: &str, e: impl std::fmt::Display) -> Self {
        DriverError::Runtime(format!("{context}: {e}"))
    }
}

impl From<std::io::Error> for DriverError {
    fn from(e: std::io::Error) -> Self {
        DriverError::Runtime(e.to_string())
    }
}

/// A task runtime: primitives, not policy. All methods are cancel-safe and idempotent where it
/// makes sense (`stop` and `destroy` of an exited or unknown task succeed).
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// `process`, `oci` or `docker`.
    fn name(&self) -> &'static str;

    /// What the runtime is on this node, or `None` when it is not usable here.
    async fn fingerprint(&self) -> Option<DriverInfo>;

    /// Gets everything ready (image present and unpacked, mount sources valid). May take long.
    async fn prepare(&self, cfg: &TaskConfig) -> Result<(), DriverError>;

    /// Starts the prepared task and returns its handle once it runs. The task must outlive the
    /// agent process.
    async fn start(&self, cfg: &TaskConfig) -> Result<Handle, DriverError>;

    /// Finds a task again after the agent restarted.
    async fn recover(&self, handle: &Handle) -> Result<Recovered, DriverError>;

    /// Resolves when the task has exited, with how it ended.
    async fn wait(&self, handle: &Handle) -> Result<ExitStatus, DriverError>;

    /// Asks the task to stop (SIGTERM or the image's stop signal), kills it after `grace`, and
    /// returns once it is gone.
    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), DriverError>;

    /// Removes everything the task left in the runtime (container, cgroup, rootfs). Logs in
    /// `task_dir` go when the agent removes the directory.
    async fn destroy(&self, handle: &Handle) -> Result<(), DriverError>;

    async fn logs(&self, handle: &Handle, opts: &LogOptions) -> Result<LogReceiver, DriverError>;

    async fn stats(&self, handle: &Handle) -> Result<Stats, DriverError>;

    /// Runs a command in the task's context (for health checks), killed after `timeout`.
    async fn exec(
        &self,
        handle: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, DriverError>;

    /// Runs a command in the task's context with its stdin, output and exit code streamed while
    /// it runs, on a pseudo-terminal with `opts.tty` (`shoal task exec -i/-t`); see
    /// [`exec_stream`] for the session's contract (dropping its output kills the command).
    async fn exec_stream(
        &self,
        _handle: &Handle,
        _cmd: &[String],
        _opts: &ExecStreamOptions,
    ) -> Result<ExecSession, DriverError> {
        Err(DriverError::Unsupported { driver: self.name().into(), what: "interactive exec (-i/-t)".into() })
    }

    /// Makes the network namespace `/run/netns/<name>` for a task that joins overlay networks,
    /// before the agent plumbs its interfaces into it (`shoal_net::Net::attach` adds the namespace
    /// only when it is missing). For runtimes that cannot join a namespace by path (Docker): they
    /// create one of their own (an infra container) and name it here. The default does nothing:
    /// the agent adds a plain namespace and [`TaskConfig::netns`] names it.
    async fn network_namespace(&self, _cfg: &TaskConfig, _name: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// Removes what [`Driver::network_namespace`] made for task `task_id` (called when the task
    /// is removed, before the agent deletes the namespace, also for a task that never started).
    /// Idempotent.
    async fn remove_network_namespace(&self, _task_id: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// Checkpoints the running task into `dir` (CRIU): its processes and its filesystem changes.
    /// Unless `opts.leave_running`, the task is stopped by it ([`Driver::wait`] then reports
    /// [`ExitStatus::checkpointed`]).
    async fn checkpoint(
        &self,
        _handle: &Handle,
        _dir: &std::path::Path,
        _opts: &CheckpointOptions,
    ) -> Result<CheckpointReport, DriverError> {
        Err(DriverError::Unsupported { driver: self.name().into(), what: "checkpoint".into() })
    }

    /// Starts `cfg` from a checkpoint in `dir` (made by [`Driver::checkpoint`], maybe on another
    /// node with the same image) and returns its handle once it runs, as [`Driver::start`] does.
    async fn restore(&self, _cfg: &TaskConfig, _dir: &std::path::Path) -> Result<Handle, DriverError> {
        Err(DriverError::Unsupported { driver: self.name().into(), what: "restore".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_networks_the_nameserver_stays_shoals_resolver() {
        let base = "nameserver 10.0.1.250\noptions ndots:0\n";
        let dns = DnsConfig {
            nameservers: vec!["192.0.2.53".into()],
            search: vec!["example.org".into()],
            options: vec!["ndots:2".into()],
        };
        let text = resolv_conf_text(&dns, base, true).expect("text");
        assert_eq!(
            text.as_deref(),
            Some("nameserver 10.0.1.250\nsearch example.org\noptions ndots:0 ndots:2\n")
        );
        // Servers alone change nothing there: the resolver forwards to them.
        let only = DnsConfig { nameservers: vec!["192.0.2.53".into()], ..Default::default() };
        assert_eq!(resolv_conf_text(&only, base, true).expect("text"), None);
        // Off networks they are the file's.
        let text = resolv_conf_text(&only, "nameserver 192.0.2.1\nsearch lan\n", false).expect("text");
        assert_eq!(text.as_deref(), Some("nameserver 192.0.2.53\nsearch lan\n"));
    }
}
