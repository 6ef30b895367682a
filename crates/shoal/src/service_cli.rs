//! `shoal service create/update/scale/rollback/ls/ps/inspect` and `shoal node ps`: docker's
//! service verbs and flags over the `/v1` API. The flags build a [`ServiceSpec`]; the API and the
//! brain validate it. Without `-d`, create, update, scale and rollback follow the service's tasks
//! and show their progress until the service converges — on a terminal docker's block, redrawn in
//! place; elsewhere one plain line per slot whenever it changes (`progress.rs`) — or fail with the reason (a task's error, a paused or rolled-back update,
//! the timeout). Like docker, "converged" means the tasks match the spec and then stayed up for the
//! monitor period (`update_config.monitor`, 5 s when 0): a task of the current spec that fails,
//! exits or is rejected meanwhile fails the command ("verify: Detected task failure").

use crate::cli::{print_json, Format, ListOpts};
use anyhow::{bail, Context, Result};
use clap::Args;
use shoal_api::registry_auth::RegistryAuth;
use shoal_api::{Client, ClientError, ClusterInfo, Created, ServiceCreate, ServiceUpdate};
use shoal_types::shell::TrailingBackslash;
use shoal_types::{
    Constraint, FailureAction, HealthCheck, Mount, MountType, Node, PlacementPreference, PortConfig,
    Protocol, PublishMode, RestartCondition, Service, ServiceMode, ServiceSpec, Strategy, Task, TaskId,
    TaskState, Timestamp, UpdateConfig, UpdateOrder, UpdateState, NANO_CPUS_PER_CPU,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Flags

/// Waiting for convergence (create, update, scale, rollback).
#[derive(Args, Clone, Debug)]
pub struct ProgressOpts {
    /// Exit immediately instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Fail when the service has not converged within this time (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags that `create` and `update` share; each one left out keeps the spec's value (update) or
/// the default (create).
#[derive(Args, Clone, Debug, Default)]
pub struct SpecFlags {
    /// Working directory inside the task (absolute).
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// User to run as: name, uid or uid:gid.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Hostname of the task.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Most tasks of this service on one node (0 = unlimited).
    #[arg(long, visible_alias = "replicas-max-per-node")]
    pub max_replicas_per_node: Option<u64>,
    /// Scheduling strategy: spread, binpack or random.
    #[arg(long, value_parser = parse_strategy)]
    pub strategy: Option<Strategy>,
    /// `auto`: move tasks to even out the spread whenever it is off by more than one (a node
    /// joined or came back); `manual`: only on `shoal service rebalance`.
    #[arg(long, value_parser = parse_rebalance)]
    pub rebalance: Option<shoal_types::RebalanceMode>,
    /// When a node drains: `restart` the tasks elsewhere (default), or `migrate` them with their
    /// state (CRIU checkpoint/restore, for stateful services on nodes that can).
    #[arg(long = "on-drain", value_parser = parse_on_drain)]
    pub on_drain: Option<shoal_types::OnDrain>,
    /// CPUs to reserve (decimal, e.g. 0.5).
    #[arg(long, value_parser = parse_cpus)]
    pub reserve_cpu: Option<u64>,
    /// Memory to reserve (e.g. 512m, 1g, or bytes).
    #[arg(long, value_parser = parse_bytes)]
    pub reserve_memory: Option<u64>,
    /// CPU limit (decimal, e.g. 1.5; 0 = unlimited).
    #[arg(long, value_parser = parse_cpus)]
    pub limit_cpu: Option<u64>,
    /// Memory limit (e.g. 512m, 1g, or bytes; 0 = unlimited).
    #[arg(long, value_parser = parse_bytes)]
    pub limit_memory: Option<u64>,
    /// Most processes and threads a task may have at once (0 = no limit of its own).
    #[arg(long, visible_alias = "limit-pids")]
    pub pids_limit: Option<u64>,
    /// Restart when: none, on-failure or any.
    #[arg(long, value_parser = parse_restart_condition)]
    pub restart_condition: Option<RestartCondition>,
    /// Delay between restart attempts (e.g. 5s).
    #[arg(long, value_parser = parse_duration)]
    pub restart_delay: Option<Duration>,
    /// Restarts before giving up (0 = unlimited).
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window in which restart attempts are counted (0 = forever).
    #[arg(long, value_parser = parse_duration)]
    pub restart_window: Option<Duration>,
    /// Tasks updated at a time.
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Delay between update batches.
    #[arg(long, value_parser = parse_duration)]
    pub update_delay: Option<Duration>,
    /// When an update fails: pause, continue or rollback.
    #[arg(long, value_parser = parse_failure_action)]
    pub update_failure_action: Option<FailureAction>,
    /// How long each new task is watched for failure.
    #[arg(long, value_parser = parse_duration)]
    pub update_monitor: Option<Duration>,
    /// Fraction of tasks that may fail during an update (0 to 1).
    #[arg(long, value_parser = parse_ratio)]
    pub update_max_failure_ratio: Option<f64>,
    /// stop-first or start-first.
    #[arg(long, value_parser = parse_order)]
    pub update_order: Option<UpdateOrder>,
    /// Tasks rolled back at a time.
    #[arg(long)]
    pub rollback_parallelism: Option<u64>,
    /// Delay between rollback batches.
    #[arg(long, value_parser = parse_duration)]
    pub rollback_delay: Option<Duration>,
    /// When a rollback fails: pause or continue.
    #[arg(long, value_parser = parse_failure_action)]
    pub rollback_failure_action: Option<FailureAction>,
    /// How long each rolled-back task is watched for failure.
    #[arg(long, value_parser = parse_duration)]
    pub rollback_monitor: Option<Duration>,
    /// Fraction of tasks that may fail during a rollback (0 to 1).
    #[arg(long, value_parser = parse_ratio)]
    pub rollback_max_failure_ratio: Option<f64>,
    /// stop-first or start-first.
    #[arg(long, value_parser = parse_order)]
    pub rollback_order: Option<UpdateOrder>,
    /// Command to check health, run with `sh -c`.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks.
    #[arg(long, value_parser = parse_duration)]
    pub health_interval: Option<Duration>,
    /// Time a health check may take.
    #[arg(long, value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
    /// Consecutive failures that make a task unhealthy.
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Time to start before failed checks count.
    #[arg(long, value_parser = parse_duration)]
    pub health_start_period: Option<Duration>,
    /// Disable the health check.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Time to wait after SIGTERM before killing a task.
    #[arg(long, value_parser = parse_duration)]
    pub stop_grace_period: Option<Duration>,
    /// How the service is reached on its networks: `vip` (a virtual IP per network, default) or
    /// `dnsrr` (DNS round robin over the task addresses, no VIP).
    #[arg(long, value_parser = parse_endpoint_mode)]
    pub endpoint_mode: Option<shoal_types::EndpointMode>,
    /// Mount the task's root filesystem read-only (docker, oci); `--read-only=false` on update.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub read_only: Option<bool>,
    /// Run an init (docker-init/tini) as the task's pid 1, forwarding signals and reaping
    /// processes (docker, oci).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub init: Option<bool>,
    /// Give the task a pseudo-terminal (docker driver only).
    #[arg(long, short = 't', num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tty: Option<bool>,
    /// Add a Linux capability (NET_ADMIN, CAP_SYS_TIME or ALL), repeatable (docker, oci); on
    /// update it also leaves the dropped ones.
    #[arg(long = "cap-add", value_parser = parse_capability)]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (NET_RAW, ... or ALL), repeatable (docker, oci); on update it also
    /// leaves the added ones.
    #[arg(long = "cap-drop", value_parser = parse_capability)]
    pub cap_drop: Vec<String>,
    /// Where task output goes: json-file or local, both Shoal's own log store (shoal service
    /// logs), rotated per --log-opt max-size/max-file. Other drivers are refused.
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver option KEY=VALUE (max-size, max-file), repeatable; with --log-driver.
    #[arg(long = "log-opt", value_parser = parse_key_value)]
    pub log_opts: Vec<(String, String)>,
    /// Docker's flag, for scripts that pass it: Shoal never queries a registry for an image.
    #[arg(long)]
    pub no_resolve_image: bool,
}

#[derive(Args, Clone, Debug)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    pub name: String,
    /// Number of tasks (replicated), or of completions (replicated-job).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Tasks of a replicated job that run at once.
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Service mode.
    #[arg(long, default_value = "replicated",
          value_parser = ["replicated", "global", "replicated-job", "global-job"])]
    pub mode: String,
    /// Task driver; with `process` every positional is the command.
    #[arg(long, value_parser = ["process", "oci", "docker"])]
    pub driver: Option<String>,
    /// Override the image's entrypoint (split like a shell would).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Environment variable KEY=VALUE (or KEY, taken from this shell), repeatable.
    #[arg(long = "env", short = 'e', value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Service label KEY[=VALUE], repeatable.
    #[arg(long = "label", short = 'l', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Placement constraint (node.labels.zone==a), repeatable.
    #[arg(long = "constraint", value_parser = parse_constraint)]
    pub constraints: Vec<String>,
    /// Placement preference spread=node.labels.KEY, repeatable.
    #[arg(long = "placement-pref", value_parser = parse_pref)]
    pub placement_prefs: Vec<PlacementPreference>,
    /// type=bind|volume,source=SRC,target=DST[,readonly], repeatable.
    #[arg(long = "mount", value_parser = parse_mount)]
    pub mounts: Vec<Mount>,
    /// Publish a port: [PUBLISHED:]TARGET[/tcp|udp] (host mode), or
    /// published=P,target=T[,protocol=tcp|udp][,mode=ingress|host].
    #[arg(long = "publish", short = 'p', value_parser = parse_port)]
    pub publish: Vec<PortConfig>,
    /// Join an overlay network: NAME (or ID), or name=NAME[,alias=ALIAS...]; repeatable. The
    /// managers allocate the tasks' addresses and the service's VIP (not plumbed on the nodes
    /// yet: tasks still use the node's network).
    #[arg(long = "network", value_parser = parse_network)]
    pub networks: Vec<shoal_types::NetworkAttachmentConfig>,
    /// Give the tasks a secret: NAME, or source=NAME[,target=PATH][,uid=U][,gid=G][,mode=0400];
    /// repeatable. Tasks find it at /run/secrets/NAME (or TARGET), in memory only.
    #[arg(long = "secret", value_parser = parse_secret_ref)]
    pub secrets: Vec<shoal_types::SecretReference>,
    /// Give the tasks a config, as --secret (default target /NAME; the process driver places
    /// configs under /run/configs only).
    #[arg(long = "config", value_parser = parse_secret_ref)]
    pub configs: Vec<shoal_types::SecretReference>,
    /// Reserve a generic resource NAME=COUNT (e.g. gpu=1), repeatable.
    #[arg(long = "generic-resource", value_parser = parse_generic)]
    pub generic_resources: Vec<(String, u64)>,
    /// Start tasks only once SERVICE has a running task (`:healthy`: a healthy one), repeatable:
    /// SERVICE[:started|healthy] (compose's depends_on).
    #[arg(long = "depends-on", value_parser = parse_dependency)]
    pub depends_on: Vec<shoal_types::Dependency>,
    /// Read environment variables from a file (KEY=VALUE lines, `#` comments; a bare KEY takes
    /// this shell's value), repeatable; -e wins over it.
    #[arg(long = "env-file")]
    pub env_files: Vec<std::path::PathBuf>,
    /// A DNS server for the task, repeatable: its resolv.conf's; for a task on overlay networks,
    /// where Shoal's resolver answers the cluster's names, the server it forwards other names to.
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// A DNS search domain of the task's resolv.conf, repeatable.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// A resolver option of the task's resolv.conf (e.g. ndots:2), repeatable.
    #[arg(long = "dns-option")]
    pub dns_options: Vec<String>,
    /// Container label KEY[=VALUE] (docker: container labels; oci: OCI annotations),
    /// repeatable. Service labels are --label.
    #[arg(long = "container-label", value_parser = parse_label)]
    pub container_labels: Vec<(String, String)>,
    /// Resource limit NAME=SOFT[:HARD] (docker's names: nofile, nproc, core...; -1 unlimited),
    /// repeatable.
    #[arg(long = "ulimit", value_parser = parse_ulimit)]
    pub ulimits: Vec<shoal_types::Ulimit>,
    /// A supplementary group of the task's user (name or gid), repeatable.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Send the registry credentials of the image's registry from the docker CLI's config file
    /// ($DOCKER_CONFIG/config.json or ~/.docker/config.json, after docker login) to the managers,
    /// which seal them; the nodes that run the service's tasks pull with them (docker driver).
    #[arg(long)]
    pub with_registry_auth: bool,
    #[command(flatten)]
    pub spec: SpecFlags,
    #[command(flatten)]
    pub progress: ProgressOpts,
    /// IMAGE [COMMAND] [ARG...]; with `--driver process`: COMMAND [ARG...].
    #[arg(trailing_var_arg = true, required = true, value_name = "IMAGE|COMMAND")]
    pub args: Vec<String>,
}

#[derive(Args, Clone, Debug)]
pub struct UpdateArgs {
    /// The service (name or ID).
    pub service: String,
    /// Send new registry credentials (as --with-registry-auth of create); without it the
    /// service keeps the ones it has.
    #[arg(long)]
    pub with_registry_auth: bool,
    /// New image.
    #[arg(long)]
    pub image: Option<String>,
    /// New arguments (the command of a service without an image), split like a shell would.
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    /// New entrypoint (split like a shell would; "" for the image's).
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Number of tasks (replicated), or of completions (replicated-job).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Tasks of a replicated job that run at once.
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Replace the tasks even when nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Add or change an environment variable KEY=VALUE.
    #[arg(long = "env-add", value_parser = parse_env)]
    pub env_add: Vec<(String, String)>,
    /// Remove an environment variable.
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Add or change a service label KEY[=VALUE].
    #[arg(long = "label-add", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Add a placement constraint.
    #[arg(long = "constraint-add", value_parser = parse_constraint)]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint.
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference spread=node.labels.KEY.
    #[arg(long = "placement-pref-add", value_parser = parse_pref)]
    pub placement_pref_add: Vec<PlacementPreference>,
    /// Remove a placement preference spread=node.labels.KEY.
    #[arg(long = "placement-pref-rm", value_parser = parse_pref)]
    pub placement_pref_rm: Vec<PlacementPreference>,
    /// Add a mount (as --mount of create).
    #[arg(long = "mount-add", value_parser = parse_mount)]
    pub mount_add: Vec<Mount>,
    /// Remove the mount at this target path.
    #[arg(long = "mount-rm")]
    pub mount_rm: Vec<String>,
    /// Add a published port (as --publish of create).
    #[arg(long = "publish-add", value_parser = parse_port)]
    pub publish_add: Vec<PortConfig>,
    /// Remove a published port by its target port: TARGET[/tcp|udp].
    #[arg(long = "publish-rm")]
    pub publish_rm: Vec<String>,
    /// Join a network (as --network of create).
    #[arg(long = "network-add", value_parser = parse_network)]
    pub network_add: Vec<shoal_types::NetworkAttachmentConfig>,
    /// Leave a network (name or ID).
    #[arg(long = "network-rm")]
    pub network_rm: Vec<String>,
    /// Add a secret (as --secret of create); rotate with --secret-rm OLD --secret-add NEW.
    #[arg(long = "secret-add", value_parser = parse_secret_ref)]
    pub secret_add: Vec<shoal_types::SecretReference>,
    /// Remove a secret by name.
    #[arg(long = "secret-rm")]
    pub secret_rm: Vec<String>,
    /// Add a config (as --config of create).
    #[arg(long = "config-add", value_parser = parse_secret_ref)]
    pub config_add: Vec<shoal_types::SecretReference>,
    /// Remove a config by name.
    #[arg(long = "config-rm")]
    pub config_rm: Vec<String>,
    /// Add or change a generic resource reservation NAME=COUNT.
    #[arg(long = "generic-resource-add", value_parser = parse_generic)]
    pub generic_resource_add: Vec<(String, u64)>,
    /// Remove a generic resource reservation.
    #[arg(long = "generic-resource-rm")]
    pub generic_resource_rm: Vec<String>,
    /// Add or change a dependency SERVICE[:started|healthy] (as --depends-on of create).
    #[arg(long = "depends-on-add", value_parser = parse_dependency)]
    pub depends_on_add: Vec<shoal_types::Dependency>,
    /// Remove the dependency on SERVICE.
    #[arg(long = "depends-on-rm")]
    pub depends_on_rm: Vec<String>,
    /// Add a DNS server (as --dns of create).
    #[arg(long = "dns-add")]
    pub dns_add: Vec<String>,
    /// Remove a DNS server.
    #[arg(long = "dns-rm")]
    pub dns_rm: Vec<String>,
    /// Add a DNS search domain.
    #[arg(long = "dns-search-add")]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain.
    #[arg(long = "dns-search-rm")]
    pub dns_search_rm: Vec<String>,
    /// Add a resolver option.
    #[arg(long = "dns-option-add")]
    pub dns_option_add: Vec<String>,
    /// Remove a resolver option.
    #[arg(long = "dns-option-rm")]
    pub dns_option_rm: Vec<String>,
    /// Add or change a container label KEY[=VALUE].
    #[arg(long = "container-label-add", value_parser = parse_label)]
    pub container_label_add: Vec<(String, String)>,
    /// Remove a container label.
    #[arg(long = "container-label-rm")]
    pub container_label_rm: Vec<String>,
    /// Add or change a resource limit NAME=SOFT[:HARD].
    #[arg(long = "ulimit-add", value_parser = parse_ulimit)]
    pub ulimit_add: Vec<shoal_types::Ulimit>,
    /// Remove a resource limit by its name.
    #[arg(long = "ulimit-rm")]
    pub ulimit_rm: Vec<String>,
    /// Add a supplementary group.
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Remove a supplementary group.
    #[arg(long = "group-rm")]
    pub group_rm: Vec<String>,
    #[command(flatten)]
    pub spec: SpecFlags,
    #[command(flatten)]
    pub progress: ProgressOpts,
}

#[derive(Args, Clone, Debug)]
pub struct ScaleArgs {
    /// SERVICE=REPLICAS, one or more.
    #[arg(required = true, value_parser = parse_scale)]
    pub scales: Vec<(String, u64)>,
    #[command(flatten)]
    pub progress: ProgressOpts,
}

#[derive(Args, Clone, Debug)]
pub struct PsArgs {
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
    #[command(flatten)]
    pub opts: ListOpts,
}

// ---------------------------------------------------------------------------------------------
// Value parsers (clap): each names the flag's syntax in its error.

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    shoal_types::time::duration::parse(s).map_err(|e| format!("{e} (use e.g. 10s, 1m30s, 500ms)"))
}

/// Docker's memory sizes: bytes, or a number with b, k, m, g or t (binary units; `kb`, `mib`...).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let err =
        || format!("invalid size {s:?}: use bytes or a number with a unit b, k, m, g or t (e.g. 512m, 1g)");
    let lower = s.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return Err(err());
    }
    if !num.contains('.') {
        let n: u64 = num.parse().map_err(|_| err())?;
        return n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"));
    }
    let n: f64 = num.parse().map_err(|_| err())?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes as u64)
}

pub use shoal_types::parse_cpus;

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("invalid failure ratio {s:?}: use a number between 0 and 1 (e.g. 0.2)")),
    }
}

fn parse_endpoint_mode(s: &str) -> Result<shoal_types::EndpointMode, String> {
    match s {
        "vip" => Ok(shoal_types::EndpointMode::Vip),
        "dnsrr" => Ok(shoal_types::EndpointMode::Dnsrr),
        _ => Err(format!("endpoint mode must be vip or dnsrr, not {s:?}")),
    }
}

/// `NAME` (or ID), or docker's long form `name=NAME[,alias=ALIAS...]`.
/// `--secret`/`--config`: NAME, or source=NAME[,target=PATH][,uid=U][,gid=G][,mode=OCTAL] (docker's
/// syntax).
pub fn parse_secret_ref(s: &str) -> Result<shoal_types::SecretReference, String> {
    let mut r = shoal_types::SecretReference::new("");
    if !s.contains('=') {
        r.source = s.trim().to_string();
    } else {
        for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let number = |v: &str| v.parse::<u32>().map_err(|_| format!("{field:?} in {s:?}: not a number"));
            match field.split_once('=') {
                Some(("source" | "src", v)) => r.source = v.to_string(),
                Some(("target", v)) => r.target = v.to_string(),
                Some(("uid", v)) => r.uid = number(v)?,
                Some(("gid", v)) => r.gid = number(v)?,
                Some(("mode", v)) => {
                    r.mode = u32::from_str_radix(v, 8)
                        .map_err(|_| format!("{field:?} in {s:?}: an octal file mode (0400)"))?
                }
                _ => {
                    return Err(format!(
                    "unknown option {field:?} in {s:?} (use source=NAME,target=PATH,uid=U,gid=G,mode=0400)"
                ))
                }
            }
        }
    }
    if r.source.is_empty() {
        return Err(format!("{s:?}: a source name is required"));
    }
    Ok(r)
}

/// `--secret-rm`/`--secret-add` (and the config pair): removals by source name first, then
/// additions, replacing one with the same source.
fn edit_refs(
    kind: &str,
    refs: &mut Vec<shoal_types::SecretReference>,
    rm: &[String],
    add: &[shoal_types::SecretReference],
) -> Result<()> {
    for name in rm {
        let before = refs.len();
        refs.retain(|r| &r.source != name);
        if refs.len() == before {
            bail!("--{kind}-rm {name:?}: the service does not use this {kind}");
        }
    }
    for r in add {
        refs.retain(|x| x.source != r.source);
        refs.push(r.clone());
    }
    Ok(())
}

pub fn parse_network(s: &str) -> Result<shoal_types::NetworkAttachmentConfig, String> {
    let mut a = shoal_types::NetworkAttachmentConfig::default();
    if !s.contains('=') {
        a.target = s.trim().to_string();
    } else {
        for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field.split_once('=') {
                Some(("name" | "target", v)) => a.target = v.to_string(),
                Some(("alias", v)) => a.aliases.push(v.to_string()),
                _ => {
                    return Err(format!(
                        "unknown network option {field:?} in {s:?} (use name=NAME,alias=ALIAS)"
                    ))
                }
            }
        }
    }
    if a.target.is_empty() {
        return Err(format!("network {s:?}: a network name is required"));
    }
    Ok(a)
}

fn parse_on_drain(s: &str) -> Result<shoal_types::OnDrain, String> {
    match s {
        "restart" => Ok(shoal_types::OnDrain::Restart),
        "migrate" => Ok(shoal_types::OnDrain::Migrate),
        _ => Err(format!("on-drain must be restart or migrate, not {s:?}")),
    }
}

fn parse_rebalance(s: &str) -> Result<shoal_types::RebalanceMode, String> {
    match s {
        "auto" => Ok(shoal_types::RebalanceMode::Auto),
        "manual" => Ok(shoal_types::RebalanceMode::Manual),
        _ => Err(format!("rebalance must be auto or manual, not {s:?}")),
    }
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "spread" => Ok(Strategy::Spread),
        "binpack" => Ok(Strategy::Binpack),
        "random" => Ok(Strategy::Random),
        _ => Err(format!("strategy must be spread, binpack or random, not {s:?}")),
    }
}

fn parse_restart_condition(s: &str) -> Result<RestartCondition, String> {
    match s {
        "none" => Ok(RestartCondition::None),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "any" => Ok(RestartCondition::Any),
        _ => Err(format!("restart condition must be none, on-failure or any, not {s:?}")),
    }
}

fn parse_failure_action(s: &str) -> Result<FailureAction, String> {
    match s {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" => Ok(FailureAction::Rollback),
        _ => Err(format!("failure action must be pause, continue or rollback, not {s:?}")),
    }
}

fn parse_order(s: &str) -> Result<UpdateOrder, String> {
    match s {
        "stop-first" => Ok(UpdateOrder::StopFirst),
        "start-first" => Ok(UpdateOrder::StartFirst),
        _ => Err(format!("order must be stop-first or start-first, not {s:?}")),
    }
}

/// `KEY=VALUE`, or `KEY` alone: its value in this shell's environment.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => std::env::var(s)
            .map(|v| (s.to_string(), v))
            .map_err(|_| format!("{s:?} is not set in this environment (use KEY=VALUE)")),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `KEY=VALUE` or `KEY` (an empty value).
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.trim().is_empty() {
        return Err(format!("expected KEY[=VALUE], got {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `KEY=VALUE` (`--log-opt`).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `NET_ADMIN`, `cap_net_admin`, `ALL` → `CAP_NET_ADMIN`, `ALL`.
fn parse_capability(s: &str) -> Result<String, String> {
    shoal_types::container::normalize_capability(s)
}

fn parse_ulimit(s: &str) -> Result<shoal_types::Ulimit, String> {
    shoal_types::container::parse_ulimit(s)
}

/// Docker's `--env-file`: `KEY=VALUE` lines taken as they are (no quotes removed), `#` comments
/// and blank lines skipped, a bare `KEY` takes this shell's value (left out when it has none).
/// Errors name the file and the line.
pub fn parse_env_file(path: &std::path::Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("--env-file {}, line {}", path.display(), i + 1);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            bail!("{}: variable name {key:?} must not be empty or contain whitespace", at());
        }
        match value {
            Some(v) => out.push((key.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(key) {
                    out.push((key.to_string(), v));
                }
            }
        }
    }
    Ok(out)
}

fn parse_constraint(s: &str) -> Result<String, String> {
    s.parse::<Constraint>().map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn parse_pref(s: &str) -> Result<PlacementPreference, String> {
    match s.split_once('=') {
        Some(("spread", label)) if !label.is_empty() => Ok(PlacementPreference { spread: label.to_string() }),
        _ => Err(format!("expected spread=node.labels.KEY, got {s:?}")),
    }
}

/// `SERVICE[:started|healthy]`.
fn parse_dependency(s: &str) -> Result<shoal_types::Dependency, String> {
    use shoal_types::DependencyCondition;
    let (service, condition) = match s.split_once(':') {
        None => (s, DependencyCondition::Started),
        Some((svc, "started")) => (svc, DependencyCondition::Started),
        Some((svc, "healthy")) => (svc, DependencyCondition::Healthy),
        Some(_) => return Err(format!("expected SERVICE[:started|healthy], got {s:?}")),
    };
    if service.is_empty() {
        return Err(format!("expected SERVICE[:started|healthy], got {s:?}"));
    }
    Ok(shoal_types::Dependency { service: service.to_string(), condition })
}

fn parse_generic(s: &str) -> Result<(String, u64), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok((k.to_string(), n)),
            _ => Err(format!("expected NAME=COUNT with a whole number above 0, got {s:?}")),
        },
        _ => Err(format!("expected NAME=COUNT (e.g. gpu=1), got {s:?}")),
    }
}

fn parse_scale(s: &str) -> Result<(String, u64), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => v
            .parse::<u64>()
            .map(|n| (k.to_string(), n))
            .map_err(|_| format!("invalid scale {s:?}: REPLICAS must be a whole number")),
        _ => Err(format!("invalid scale {s:?}: expected SERVICE=REPLICAS")),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{key}={v:?}: expected true or false")),
    }
}

/// `type=bind|volume,source=SRC,target=DST[,readonly]` (docker's `--mount`; also `src`, `dst`,
/// `destination`, `ro`). The type defaults to volume, as in docker.
pub fn parse_mount(s: &str) -> Result<Mount, String> {
    let mut m = Mount { kind: MountType::Volume, ..Default::default() };
    for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => {
                m.kind = match v {
                    "bind" => MountType::Bind,
                    "volume" => MountType::Volume,
                    _ => return Err(format!("mount type {v:?} is not supported (use bind or volume)")),
                }
            }
            "source" | "src" => m.source = v.to_string(),
            "target" | "dst" | "destination" => m.target = v.to_string(),
            "readonly" | "ro" => m.readonly = parse_bool(k, v)?,
            other => {
                return Err(format!(
                    "mount option {other:?} is not supported (use type, source, target, readonly)"
                ))
            }
        }
    }
    if m.target.is_empty() {
        return Err(format!("mount {s:?}: target is required (type=bind,source=/src,target=/dst)"));
    }
    Ok(m)
}

fn parse_port_number(what: &str, v: &str, s: &str) -> Result<u16, String> {
    v.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid {what} port {v:?} in {s:?}: use a number from 1 to 65535"))
}

fn parse_protocol(v: &str, s: &str) -> Result<Protocol, String> {
    match v.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("invalid protocol {v:?} in {s:?}: use tcp or udp")),
    }
}

/// `[PUBLISHED:]TARGET[/tcp|udp]` or `published=P,target=T[,protocol=udp][,mode=ingress|host]`.
///
/// The short form publishes in host mode (the task's node binds the port), unlike docker's
/// default of ingress: until the routing mesh is plumbed on the nodes (networking phase 2) an
/// ingress port is reserved cluster-wide but forwarded nowhere, and `-p 80:80` must keep doing
/// what it did. `mode=ingress` asks for the routing mesh explicitly.
pub fn parse_port(s: &str) -> Result<PortConfig, String> {
    let mut p = PortConfig { mode: PublishMode::Host, ..Default::default() };
    if s.contains('=') {
        for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match k {
                "published" => p.published = parse_port_number("published", v, s)?,
                "target" => p.target = parse_port_number("target", v, s)?,
                "protocol" => p.protocol = parse_protocol(v, s)?,
                "mode" if v == "host" => p.mode = PublishMode::Host,
                "mode" if v == "ingress" => p.mode = PublishMode::Ingress,
                "mode" => return Err(format!("publish mode {v:?}: use ingress or host")),
                _ => {
                    return Err(format!(
                        "unknown publish option {k:?} (use published, target, protocol, mode)"
                    ))
                }
            }
        }
        if p.target == 0 {
            return Err(format!("publish {s:?}: target is required"));
        }
        if p.mode == PublishMode::Ingress && p.published == 0 {
            return Err(format!("publish {s:?}: mode=ingress needs published=PORT"));
        }
        return Ok(p);
    }
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    p.protocol = parse_protocol(proto, s)?;
    match ports.split_once(':') {
        Some((published, target)) => {
            p.published = parse_port_number("published", published, s)?;
            p.target = parse_port_number("target", target, s)?;
        }
        None => p.target = parse_port_number("target", ports, s)?,
    }
    Ok(p)
}

/// Splits a command line like a POSIX shell would (quotes and backslashes; no expansion); a
/// backslash at the very end is an error.
pub fn shell_split(s: &str) -> Result<Vec<String>> {
    shoal_types::shell::shell_split(s, TrailingBackslash::Error).map_err(anyhow::Error::msg)
}

// ---------------------------------------------------------------------------------------------
// Building specs

impl SpecFlags {
    /// Applies the flags that were given to `spec`.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        set(&mut spec.rebalance, &self.rebalance);
        set(&mut spec.on_drain, &self.on_drain);
        let t = &mut spec.task_template;
        set(&mut t.workdir, &self.workdir);
        set(&mut t.user, &self.user);
        set(&mut t.hostname, &self.hostname);
        set(&mut t.placement.max_replicas_per_node, &self.max_replicas_per_node);
        set(&mut t.placement.strategy, &self.strategy);
        set(&mut t.resources.reservations.nano_cpus, &self.reserve_cpu);
        set(&mut t.resources.reservations.memory_bytes, &self.reserve_memory);
        set(&mut t.resources.limits.nano_cpus, &self.limit_cpu);
        set(&mut t.resources.limits.memory_bytes, &self.limit_memory);
        set(&mut t.resources.limits.pids, &self.pids_limit);
        let r = &mut t.restart_policy;
        set(&mut r.condition, &self.restart_condition);
        set(&mut r.delay, &self.restart_delay);
        set(&mut r.max_attempts, &self.restart_max_attempts);
        set(&mut r.window, &self.restart_window);
        set(&mut t.stop_grace_period, &self.stop_grace_period);
        self.apply_health(t)?;
        self.apply_container(t)?;
        set(&mut spec.endpoint.mode, &self.endpoint_mode);
        let u = &mut spec.update_config;
        set_update(
            u,
            self.update_parallelism,
            self.update_delay,
            self.update_failure_action,
            self.update_monitor,
            self.update_max_failure_ratio,
            self.update_order,
        );
        let u = &mut spec.rollback_config;
        set_update(
            u,
            self.rollback_parallelism,
            self.rollback_delay,
            self.rollback_failure_action,
            self.rollback_monitor,
            self.rollback_max_failure_ratio,
            self.rollback_order,
        );
        Ok(())
    }

    /// The container options both verbs share. `--cap-add X` also takes X off the dropped ones
    /// and `--cap-drop X` off the added ones (docker's update); `--log-driver` replaces the
    /// driver and its options.
    fn apply_container(&self, t: &mut shoal_types::TaskTemplate) -> Result<()> {
        set(&mut t.read_only, &self.read_only);
        set(&mut t.init, &self.init);
        set(&mut t.tty, &self.tty);
        for c in &self.cap_add {
            t.cap_drop.retain(|x| x != c);
            if !t.cap_add.contains(c) {
                t.cap_add.push(c.clone());
            }
        }
        for c in &self.cap_drop {
            t.cap_add.retain(|x| x != c);
            if !t.cap_drop.contains(c) {
                t.cap_drop.push(c.clone());
            }
        }
        match (&self.log_driver, self.log_opts.is_empty()) {
            (Some(name), _) => {
                let l = shoal_types::LogDriver {
                    name: name.clone(),
                    options: self.log_opts.iter().cloned().collect(),
                };
                let problems = shoal_types::container::check_log_driver(&l);
                if let Some(p) = problems.first() {
                    bail!("{p}");
                }
                t.log_driver = Some(l);
            }
            (None, false) => bail!("--log-opt needs --log-driver (json-file or local)"),
            (None, true) => {}
        }
        Ok(())
    }

    fn apply_health(&self, t: &mut shoal_types::TaskTemplate) -> Result<()> {
        let timing = self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some();
        if self.no_healthcheck {
            if timing || self.health_cmd.is_some() {
                bail!("--no-healthcheck cannot be combined with --health-* flags");
            }
            t.health_check = Some(HealthCheck { test: vec!["NONE".into()], ..Default::default() });
            return Ok(());
        }
        if !timing && self.health_cmd.is_none() {
            return Ok(());
        }
        let mut h = t
            .health_check
            .clone()
            .filter(|h| h.test.first().map(String::as_str) != Some("NONE"))
            .unwrap_or_default();
        if let Some(cmd) = &self.health_cmd {
            if cmd.trim().is_empty() {
                bail!("--health-cmd must not be empty (use --no-healthcheck to disable the check)");
            }
            h.test = vec!["CMD-SHELL".into(), cmd.clone()];
        }
        if h.test.is_empty() {
            bail!("--health-interval, --health-timeout, --health-retries and --health-start-period need --health-cmd (the service has no health check)");
        }
        set(&mut h.interval, &self.health_interval);
        set(&mut h.timeout, &self.health_timeout);
        set(&mut h.retries, &self.health_retries);
        set(&mut h.start_period, &self.health_start_period);
        t.health_check = Some(h);
        Ok(())
    }
}

fn set<T: Clone>(field: &mut T, v: &Option<T>) {
    if let Some(v) = v {
        *field = v.clone();
    }
}

fn set_update(
    u: &mut UpdateConfig,
    parallelism: Option<u64>,
    delay: Option<Duration>,
    action: Option<FailureAction>,
    monitor: Option<Duration>,
    ratio: Option<f64>,
    order: Option<UpdateOrder>,
) {
    set(&mut u.parallelism, &parallelism);
    set(&mut u.delay, &delay);
    set(&mut u.failure_action, &action);
    set(&mut u.monitor, &monitor);
    set(&mut u.max_failure_ratio, &ratio);
    set(&mut u.order, &order);
}

/// The spec `service create` sends.
pub fn create_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let mut spec = ServiceSpec { name: a.name.clone(), ..Default::default() };
    spec.mode = shoal_types::validate::mode_from_flags(&a.mode, a.replicas, a.max_concurrent)?;
    spec.labels = a.labels.iter().cloned().collect();
    let t = &mut spec.task_template;
    if a.driver.as_deref() == Some("process") {
        if a.entrypoint.is_some() {
            bail!("--entrypoint is for images; with --driver process every positional is the command");
        }
        t.command = a.args.clone();
    } else {
        // Docker's `IMAGE [COMMAND] [ARG...]`: what follows the image replaces its cmd and keeps its
        // entrypoint (`--entrypoint` replaces that).
        let mut it = a.args.iter().cloned();
        t.image = it.next();
        t.args = it.collect();
        if let Some(e) = &a.entrypoint {
            t.command = shell_split(e)?;
        }
    }
    t.driver = a.driver.clone();
    for f in &a.env_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        t.env.extend(parse_env_file(f, &text)?);
    }
    t.env.extend(a.env.iter().cloned());
    t.mounts = a.mounts.clone();
    t.dns = shoal_types::DnsConfig {
        nameservers: a.dns.clone(),
        search: a.dns_search.clone(),
        options: a.dns_options.clone(),
    };
    t.container_labels = a.container_labels.iter().cloned().collect();
    t.ulimits = Vec::new();
    for u in &a.ulimits {
        t.ulimits.retain(|x| x.name != u.name);
        t.ulimits.push(u.clone());
    }
    t.groups = a.groups.clone();
    t.placement.constraints = a.constraints.clone();
    t.placement.preferences = a.placement_prefs.clone();
    t.resources.reservations.generic = a.generic_resources.iter().cloned().collect();
    spec.endpoint.ports = a.publish.clone();
    spec.networks = a.networks.clone();
    spec.task_template.secrets = a.secrets.clone();
    spec.task_template.configs = a.configs.clone();
    spec.depends_on = a.depends_on.clone();
    a.spec.apply(&mut spec)?;
    Ok(spec)
}

fn port_matches(p: &PortConfig, rm: &str) -> Result<bool> {
    let (port, proto) = match rm.split_once('/') {
        Some((port, proto)) => (port, Some(proto)),
        None => (rm, None),
    };
    let target: u16 =
        port.trim().parse().with_context(|| format!("--publish-rm {rm:?}: expected TARGET[/tcp|udp]"))?;
    let proto = proto.map(|x| parse_protocol(x, rm)).transpose().map_err(anyhow::Error::msg)?;
    Ok(p.target == target && proto.is_none_or(|x| x == p.protocol))
}

/// Applies `service update`'s flags to a copy of the current spec.
pub fn update_spec(mut spec: ServiceSpec, a: &UpdateArgs) -> Result<ServiceSpec> {
    if a.replicas.is_some() || a.max_concurrent.is_some() {
        spec.mode = match spec.mode {
            ServiceMode::Replicated { replicas } => {
                if a.max_concurrent.is_some() {
                    bail!("--max-concurrent is only for replicated-job services");
                }
                ServiceMode::Replicated { replicas: a.replicas.unwrap_or(replicas) }
            }
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => ServiceMode::ReplicatedJob {
                max_concurrent: a.max_concurrent.unwrap_or(max_concurrent),
                total_completions: a.replicas.unwrap_or(total_completions),
            },
            ref m => bail!("--replicas and --max-concurrent are not for {} services", m.name()),
        };
    }
    for (k, v) in &a.label_add {
        spec.labels.insert(k.clone(), v.clone());
    }
    for k in &a.label_rm {
        if spec.labels.remove(k).is_none() {
            bail!("--label-rm {k:?}: the service has no such label");
        }
    }
    let t = &mut spec.task_template;
    if let Some(img) = &a.image {
        t.image = Some(img.clone());
    }
    if let Some(args) = &a.args {
        let argv = shell_split(args)?;
        if t.image.is_some() {
            t.args = argv;
        } else {
            t.command = argv;
            t.args.clear();
        }
    }
    if let Some(e) = &a.entrypoint {
        if t.image.is_none() {
            bail!("--entrypoint is for services with an image (use --args to change the command)");
        }
        t.command = shell_split(e)?;
    }
    for k in &a.env_rm {
        let key = k.split_once('=').map_or(k.as_str(), |(k, _)| k);
        t.env.remove(key);
    }
    for (k, v) in &a.env_add {
        t.env.insert(k.clone(), v.clone());
    }
    for c in &a.constraint_rm {
        let before = t.placement.constraints.len();
        t.placement.constraints.retain(|x| x != c);
        if t.placement.constraints.len() == before {
            bail!("--constraint-rm {c:?}: the service has no such constraint");
        }
    }
    for c in &a.constraint_add {
        if !t.placement.constraints.contains(c) {
            t.placement.constraints.push(c.clone());
        }
    }
    for p in &a.placement_pref_rm {
        t.placement.preferences.retain(|x| x != p);
    }
    for p in &a.placement_pref_add {
        if !t.placement.preferences.contains(p) {
            t.placement.preferences.push(p.clone());
        }
    }
    for target in &a.mount_rm {
        t.mounts.retain(|m| &m.target != target);
    }
    for m in &a.mount_add {
        t.mounts.retain(|x| x.target != m.target);
        t.mounts.push(m.clone());
    }
    for k in &a.generic_resource_rm {
        t.resources.reservations.generic.remove(k);
    }
    for (k, v) in &a.generic_resource_add {
        t.resources.reservations.generic.insert(k.clone(), *v);
    }
    // Docker's -rm then -add, per list.
    let edit = |list: &mut Vec<String>, rm: &[String], add: &[String]| {
        list.retain(|x| !rm.contains(x));
        for a in add {
            if !list.contains(a) {
                list.push(a.clone());
            }
        }
    };
    edit(&mut t.dns.nameservers, &a.dns_rm, &a.dns_add);
    edit(&mut t.dns.search, &a.dns_search_rm, &a.dns_search_add);
    edit(&mut t.dns.options, &a.dns_option_rm, &a.dns_option_add);
    edit(&mut t.groups, &a.group_rm, &a.group_add);
    for k in &a.container_label_rm {
        t.container_labels.remove(k);
    }
    for (k, v) in &a.container_label_add {
        t.container_labels.insert(k.clone(), v.clone());
    }
    t.ulimits.retain(|u| !a.ulimit_rm.contains(&u.name));
    for u in &a.ulimit_add {
        t.ulimits.retain(|x| x.name != u.name);
        t.ulimits.push(u.clone());
    }
    if a.force {
        t.force_update = t.force_update.saturating_add(1);
    }
    let ports = &mut spec.endpoint.ports;
    for rm in &a.publish_rm {
        let mut keep = Vec::new();
        for p in ports.drain(..) {
            if !port_matches(&p, rm)? {
                keep.push(p);
            }
        }
        *ports = keep;
    }
    for p in &a.publish_add {
        ports.retain(|x| !(x.target == p.target && x.protocol == p.protocol));
        ports.push(p.clone());
    }
    // Network names are resolved to ids by `update` first (the spec holds ids).
    for rm in &a.network_rm {
        let before = spec.networks.len();
        spec.networks.retain(|n| &n.target != rm);
        if spec.networks.len() == before {
            bail!("--network-rm {rm:?}: the service is not attached to this network");
        }
    }
    for add in &a.network_add {
        match spec.networks.iter_mut().find(|n| n.target == add.target) {
            Some(n) if !add.aliases.is_empty() => n.aliases = add.aliases.clone(),
            Some(_) => {}
            None => spec.networks.push(add.clone()),
        }
    }
    edit_refs("secret", &mut spec.task_template.secrets, &a.secret_rm, &a.secret_add)?;
    edit_refs("config", &mut spec.task_template.configs, &a.config_rm, &a.config_add)?;
    for rm in &a.depends_on_rm {
        let before = spec.depends_on.len();
        spec.depends_on.retain(|d| &d.service != rm);
        if spec.depends_on.len() == before {
            bail!("--depends-on-rm {rm:?}: the service does not depend on it");
        }
    }
    for add in &a.depends_on_add {
        spec.depends_on.retain(|d| d.service != add.service);
        spec.depends_on.push(add.clone());
    }
    a.spec.apply(&mut spec)?;
    Ok(spec)
}

// ---------------------------------------------------------------------------------------------
// Commands

fn is_version_conflict(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { code, message, .. } if code == "conflict" && message.contains("changed concurrently"))
}

/// The credentials for `image`'s registry from the docker CLI's config file
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
pub fn docker_registry_auth(image: Option<&str>) -> Result<RegistryAuth> {
    let Some(image) = image else { bail!("--with-registry-auth: the service has no image to pull") };
    let dir = match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(
            std::env::var_os("HOME").context("--with-registry-auth: HOME is not set")?,
        )
        .join(".docker"),
    };
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "--with-registry-auth: cannot read the docker CLI's credentials {} (run docker login)",
            path.display()
        )
    })?;
    shoal_api::registry_auth::from_docker_config(&text, &path.display().to_string(), image)
        .map_err(|e| anyhow::anyhow!("--with-registry-auth: {e}"))
}

pub async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    let spec = create_spec(&a)?;
    let created: Created = if a.with_registry_auth {
        let auth = docker_registry_auth(spec.task_template.image.as_deref())?;
        c.post("/v1/services", &ServiceCreate { spec, registry_auth: Some(auth) }).await?
    } else {
        c.post("/v1/services", &spec).await?
    };
    for w in &created.warnings {
        eprintln!("warning: {w}");
    }
    println!("{}", created.id);
    if a.progress.detach {
        return Ok(());
    }
    wait(c, &created.id, &a.progress, Expect::Tasks).await
}

pub async fn update(c: &Client, a: UpdateArgs) -> Result<()> {
    let a = crate::network_cli::resolve_network_flags(c, a).await?;
    // The read-modify-write is checked against the service's version; the orchestrator records
    // update progress on the service too, so a conflict is retried on a fresh read.
    let mut attempts = 0;
    let (before, after) = loop {
        let svc: Service = c.get(&format!("/v1/services/{}", enc(&a.service))).await?;
        let spec = update_spec(svc.spec.clone(), &a)?;
        let registry_auth = match a.with_registry_auth {
            true => Some(docker_registry_auth(spec.task_template.image.as_deref())?),
            false => None,
        };
        let u = ServiceUpdate { version: Some(svc.version), spec, registry_auth };
        match c.post::<_, Service>(&format!("/v1/services/{}/update", svc.id), &u).await {
            Ok(after) => break (svc, after),
            Err(e) if is_version_conflict(&e) && attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    };
    println!("{}", after.spec.name);
    if a.progress.detach {
        return Ok(());
    }
    let expect = if after.spec_version != before.spec_version { Expect::Update } else { Expect::Tasks };
    wait(c, after.id.as_str(), &a.progress, expect).await
}

pub async fn scale(c: &Client, a: ScaleArgs) -> Result<()> {
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for (name, n) in &a.scales {
        match scale_one(c, name, *n).await {
            Ok(id) => {
                println!("{name} scaled to {n}");
                scaled.push((name.clone(), id));
            }
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
    }
    if !a.progress.detach {
        for (name, id) in scaled {
            if !a.progress.quiet {
                println!("{name}: waiting for the tasks to converge");
            }
            if let Err(e) = wait(c, &id, &a.progress, Expect::Tasks).await {
                errors.push(format!("{name}: {e:#}"));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

async fn scale_one(c: &Client, name: &str, n: u64) -> Result<String> {
    let mut attempts = 0;
    loop {
        let svc: Service = c.get(&format!("/v1/services/{}", enc(name))).await?;
        let mut spec = svc.spec.clone();
        spec.mode = match spec.mode {
            ServiceMode::Replicated { .. } => ServiceMode::Replicated { replicas: n },
            ServiceMode::ReplicatedJob { max_concurrent, .. } => {
                ServiceMode::ReplicatedJob { max_concurrent, total_completions: n }
            }
            ref m => {
                bail!("scale can only be used with replicated or replicated-job services, not {}", m.name())
            }
        };
        let u = ServiceUpdate { version: Some(svc.version), spec, registry_auth: None };
        match c.post::<_, Service>(&format!("/v1/services/{}/update", svc.id), &u).await {
            Ok(s) => return Ok(s.id.to_string()),
            Err(e) if is_version_conflict(&e) && attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn rollback(c: &Client, service: &str, progress: &ProgressOpts) -> Result<()> {
    let before: Service = c.get(&format!("/v1/services/{}", enc(service))).await?;
    let after: Service =
        c.post(&format!("/v1/services/{}/rollback", before.id), &serde_json::json!({})).await?;
    println!("{}", after.spec.name);
    if progress.detach {
        return Ok(());
    }
    let expect = if after.spec_version != before.spec_version { Expect::Rollback } else { Expect::Tasks };
    wait(c, after.id.as_str(), progress, expect).await
}

/// `service rebalance`: asks the managers to even out the spread; unless `-d`, waits until they
/// say it is done.
pub async fn rebalance(c: &Client, service: &str, progress: &ProgressOpts) -> Result<()> {
    let before: Service = c.get(&format!("/v1/services/{}", enc(service))).await?;
    let after: Service =
        c.post(&format!("/v1/services/{}/rebalance", before.id), &serde_json::json!({})).await?;
    println!("{}", after.spec.name);
    if progress.detach {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + progress.timeout;
    loop {
        let s: Service = c.get(&format!("/v1/services/{}", after.id)).await?;
        if s.rebalance_requested_at.is_none() {
            if !progress.quiet {
                println!("verify: Service rebalanced");
            }
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "service {} was not rebalanced within {}s (moves wait until every task is up and no update runs)",
                s.spec.name,
                progress.timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Names and IDs (of services, networks) are `[A-Za-z0-9-_.]`; anything else is escaped for the
/// URL path.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Progress

/// What convergence means for the command that waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The tasks match the spec (create, scale, an update that changed no task).
    Tasks,
    /// A rolling update must also complete (and not pause or roll back).
    Update,
    /// A rollback must complete.
    Rollback,
}

/// One look at a service: a progress line per slot (keyed, so only changes are printed), and
/// whether it has converged or cannot.
#[derive(Debug, Default)]
pub struct Assessment {
    pub lines: Vec<(String, String)>,
    /// The same slots (or nodes) for the terminal's block, a row also for each one with no task
    /// yet (`progress::Row`).
    pub rows: Vec<crate::progress::Row>,
    pub overall: String,
    pub converged: bool,
    /// The tasks match the spec (every slot or node has a task of the current spec up, nothing
    /// left to stop), whatever the update status says: the verification window may start.
    pub tasks_ready: bool,
    /// How many slots (or nodes, or completions) the spec asks for.
    pub expected: u64,
    /// The update paused or rolled back: waiting longer will not help.
    pub failed: Option<String>,
    /// Why it has not converged yet (for the timeout message).
    pub pending: Vec<String>,
}

/// `running`, `pending: no suitable node (...)`, `running (previous version)`.
fn task_text(t: &Task, spec_version: u64) -> String {
    let mut s = t.status.state.to_string();
    if t.spec_version < spec_version {
        s.push_str(" (previous version)");
    }
    if t.status.state == TaskState::Running {
        match t.status.health {
            Some(shoal_types::Health::Starting) => s.push_str(" (health: starting)"),
            Some(shoal_types::Health::Unhealthy) => s.push_str(" (unhealthy)"),
            _ => {}
        }
    }
    if !t.status.err.is_empty() {
        s.push_str(": ");
        s.push_str(&t.status.err);
    } else if t.status.state.is_terminal() && !t.status.message.is_empty() {
        s.push_str(": ");
        s.push_str(&t.status.message);
    }
    s
}

/// A slot's (or node's) row of the terminal's block: its newest task, if any.
fn progress_row(label: String, t: Option<&Task>, spec_version: u64, job: bool) -> crate::progress::Row {
    crate::progress::Row {
        label,
        state: t.map(|t| t.status.state),
        text: t.map(|t| task_text(t, spec_version)).unwrap_or_default(),
        job,
    }
}

fn newest<'a>(tasks: impl Iterator<Item = &'a Task>) -> Option<&'a Task> {
    tasks.max_by_key(|t| (t.created_at, t.version))
}

/// Nodes a global service should run on: schedulable, matching its constraints, with a driver.
fn eligible_nodes<'a>(svc: &Service, nodes: &'a [Node]) -> Vec<&'a Node> {
    let constraints =
        Constraint::parse_all(&svc.spec.task_template.placement.constraints).unwrap_or_default();
    let drivers = svc.spec.task_template.driver_candidates();
    nodes
        .iter()
        .filter(|n| n.is_schedulable())
        .filter(|n| constraints.iter().all(|c| c.matches(n)))
        .filter(|n| drivers.iter().any(|d| n.description.driver(d).is_some()))
        .collect()
}

/// Compares a service's tasks with its spec (a pure function of what the API returned).
pub fn assess(svc: &Service, tasks: &[Task], nodes: &[Node], expect: Expect) -> Assessment {
    let mut a = Assessment::default();
    let v = svc.spec_version;
    let mine: Vec<&Task> = tasks.iter().filter(|t| t.service_id == svc.id).collect();
    let current_up = |t: &&Task| t.spec_version == v && t.desired_state == TaskState::Running && t.is_up();
    let current_done = |t: &&Task| t.spec_version == v && t.status.state == TaskState::Complete;
    let mut update_done = true;
    if expect != Expect::Tasks {
        if let Some(us) = &svc.update_status {
            let msg = if us.message.is_empty() { String::new() } else { format!(": {}", us.message) };
            match (expect, us.state) {
                (_, UpdateState::Paused) => a.failed = Some(format!("update paused{msg}")),
                (_, UpdateState::RollbackPaused) => a.failed = Some(format!("rollback paused{msg}")),
                (Expect::Update, UpdateState::RollbackStarted | UpdateState::RollbackCompleted) => {
                    a.failed = Some(format!("update rolled back{msg}"))
                }
                (_, UpdateState::Updating | UpdateState::RollbackStarted) => {
                    update_done = false;
                    a.pending.push(format!(
                        "{} in progress",
                        if expect == Expect::Rollback { "rollback" } else { "update" }
                    ));
                }
                _ => {}
            }
        }
    }
    let (done, total) = match svc.spec.mode {
        ServiceMode::Replicated { replicas } => {
            let mut ok = 0;
            for slot in 1..=replicas {
                let in_slot = || mine.iter().copied().filter(move |t| t.slot == Some(slot));
                let up = in_slot().any(|t| current_up(&t));
                ok += u64::from(up);
                let line = newest(in_slot()).map(|t| format!("{slot}/{replicas}: {}", task_text(t, v)));
                a.rows.push(progress_row(format!("{slot}/{replicas}"), newest(in_slot()), v, false));
                if !up {
                    a.pending.push(line.clone().unwrap_or_else(|| format!("{slot}/{replicas}: no task yet")));
                }
                if let Some(line) = line {
                    a.lines.push((format!("slot {slot}"), line));
                }
            }
            (ok, replicas)
        }
        ServiceMode::ReplicatedJob { total_completions, .. } => {
            let done = mine.iter().filter(|t| current_done(t)).count() as u64;
            let slots: BTreeSet<u64> =
                mine.iter().filter(|t| t.spec_version == v).filter_map(|t| t.slot).collect();
            for slot in slots {
                if let Some(t) =
                    newest(mine.iter().copied().filter(|t| t.slot == Some(slot) && t.spec_version == v))
                {
                    let line = format!("{slot}/{total_completions}: {}", task_text(t, v));
                    a.rows.push(progress_row(format!("{slot}/{total_completions}"), Some(t), v, true));
                    if t.status.state != TaskState::Complete {
                        a.pending.push(line.clone());
                    }
                    a.lines.push((format!("slot {slot}"), line));
                }
            }
            (done.min(total_completions), total_completions)
        }
        // Runs start on their schedule: nothing to wait for when the job is created.
        ServiceMode::Scheduled(_) => (0, 0),
        ServiceMode::Global | ServiceMode::GlobalJob => {
            let job = svc.spec.mode.is_job();
            let eligible = eligible_nodes(svc, nodes);
            let mut ok = 0;
            for n in &eligible {
                let on_node = || mine.iter().copied().filter(|t| t.node_id.as_ref() == Some(&n.id));
                let good =
                    if job { on_node().any(|t| current_done(&t)) } else { on_node().any(|t| current_up(&t)) };
                ok += u64::from(good);
                let name =
                    if n.description.hostname.is_empty() { n.id.short() } else { &n.description.hostname };
                let line = newest(on_node()).map(|t| format!("{name}: {}", task_text(t, v)));
                a.rows.push(progress_row(name.to_string(), newest(on_node()), v, job));
                if !good {
                    a.pending.push(line.clone().unwrap_or_else(|| format!("{name}: no task yet")));
                }
                if let Some(line) = line {
                    a.lines.push((format!("node {}", n.id), line));
                }
            }
            (ok, eligible.len() as u64)
        }
    };
    // Tasks told to stop (scaled down, replaced), or in slots above the replica count that the
    // orchestrator has yet to stop, that have not stopped yet (the reaper ends unplaced ones).
    let surplus = |t: &Task| match svc.spec.mode {
        ServiceMode::Replicated { replicas } => t.slot.is_some_and(|s| s > replicas),
        _ => false,
    };
    // A task on a node that is known to be down cannot report that it stopped until the node
    // returns, and then it is stopped: it does not hold convergence up.
    let node_up = |t: &Task| {
        let node = t.node_id.as_ref().and_then(|id| nodes.iter().find(|n| &n.id == id));
        node.is_none_or(|n| n.status.state == shoal_types::NodeState::Ready)
    };
    let stopping = mine
        .iter()
        .filter(|t| {
            !t.status.state.is_terminal()
                && (t.desired_state > TaskState::Running || surplus(t))
                && node_up(t)
        })
        .count();
    if stopping > 0 {
        a.pending.push(format!("{stopping} task(s) stopping"));
    }
    let verb = match expect {
        _ if svc.spec.mode.is_job() => "completed",
        Expect::Tasks => "running",
        Expect::Update => "updated",
        Expect::Rollback => "rolled back",
    };
    a.overall = format!("overall progress: {done} out of {total} tasks {verb}");
    a.tasks_ready = done >= total && stopping == 0;
    a.expected = total;
    a.converged = a.failed.is_none() && update_done && a.tasks_ready;
    a
}

/// The monitor period when the spec's is 0 (docker's default).
pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

/// How long the tasks must stay up before the command calls the service converged: the monitor
/// period of the update config in force (the rollback config's for a rollback), 5 s when it is 0.
pub fn monitor_period(svc: &Service, expect: Expect) -> Duration {
    let cfg = if expect == Expect::Rollback { &svc.spec.rollback_config } else { &svc.spec.update_config };
    if cfg.monitor.is_zero() {
        DEFAULT_MONITOR
    } else {
        cfg.monitor
    }
}

/// A task that stopped when it should not have: it failed, was rejected or lost its node, or
/// exited at all (a service's task; a job's may complete). The updater's rule.
fn is_failure(t: &Task, svc: &Service) -> bool {
    match t.status.state {
        TaskState::Failed | TaskState::Rejected | TaskState::Orphaned => true,
        TaskState::Complete => !svc.spec.mode.is_job(),
        _ => false,
    }
}

/// The service's tasks of its current spec that failed ([`is_failure`]), newest first.
fn failed_tasks<'a>(svc: &Service, tasks: &'a [Task]) -> Vec<&'a Task> {
    let mut out: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.service_id == svc.id && t.spec_version == svc.spec_version && is_failure(t, svc))
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse((t.status.timestamp, t.created_at)));
    out
}

/// Why a task stopped, from its status: `exited with code 3`, the driver's or agent's error
/// (`executable not found: ...`), else its state and message.
pub fn failure_reason(t: &Task) -> String {
    let s = &t.status;
    if !s.err.is_empty() {
        // The agent says "task exited with code 3"; the line already names the task.
        return s.err.strip_prefix("task ").unwrap_or(&s.err).to_string();
    }
    match s.exit_code {
        Some(code) => format!("exited with code {code}"),
        None if s.message.is_empty() => s.state.to_string(),
        None => format!("{}: {}", s.state, s.message),
    }
}

/// `task 1a2b3c4d5e6f: exited with code 3`.
fn failure_text(t: &Task) -> String {
    format!("task {}: {}", t.id.short(), failure_reason(t))
}

/// The task an update's failure is about: the one its message names, else the newest failed task
/// of the current spec.
fn culprit<'a>(svc: &Service, tasks: &'a [Task]) -> Option<&'a Task> {
    let named = svc
        .update_status
        .as_ref()
        .and_then(|us| tasks.iter().find(|t| t.service_id == svc.id && us.message.contains(t.id.as_str())));
    named.or_else(|| failed_tasks(svc, tasks).into_iter().next())
}

/// `5 seconds`, rounded up.
fn seconds(d: Duration) -> String {
    let n = d.as_millis().div_ceil(1000).max(1);
    format!("{n} second{}", if n == 1 { "" } else { "s" })
}

/// Follows the service until it converges, prints per-slot progress, fails on a paused or
/// rolled-back update, on a task that fails once the tasks matched the spec, or at the timeout.
///
/// Once the tasks match the spec, they must stay up for the monitor period ([`monitor_period`];
/// docker's "Waiting N seconds to verify that tasks are stable"); the timeout is extended to let
/// that window finish. Jobs and services with nothing to run are not watched.
pub async fn wait(c: &Client, id: &str, opts: &ProgressOpts, expect: Expect) -> Result<()> {
    let deadline = Instant::now() + opts.timeout;
    // docker's block, redrawn in place, on a terminal; plain lines elsewhere.
    let mut progress = crate::progress::Printer::stdout(opts.quiet);
    // The failed tasks of the current spec when the tasks first matched it; any other task of it
    // that fails from then on fails the command.
    let mut known_failures: Option<BTreeSet<TaskId>> = None;
    // When the tasks last came to match the spec: the start of the verification window.
    let mut stable_since: Option<Instant> = None;
    // A task failed during an update: the managers' verdict (pause, rollback) is awaited briefly
    // so that the error can name it.
    let mut detected: Option<(String, Instant)> = None;
    loop {
        let svc: Service = c.get(&format!("/v1/services/{id}")).await?;
        let tasks: Vec<Task> = c.get(&format!("/v1/tasks?service={id}")).await?;
        // Nodes for every mode: a global service's eligible nodes, and which nodes are down (a
        // task there cannot report that it stopped, and must not hold convergence up).
        let nodes: Vec<Node> = c.get("/v1/nodes?stale=true").await?;
        let a = assess(&svc, &tasks, &nodes, expect);
        let name = &svc.spec.name;
        progress.show(&a);
        if let Some(why) = &a.failed {
            let task = culprit(&svc, &tasks);
            if task.is_some() && detected.is_none() {
                progress.verify("Detected task failure");
            }
            let task = task.map(|t| format!("; {}", failure_text(t))).unwrap_or_default();
            bail!("service {name}: {why}{task}");
        }
        let watch = !svc.spec.mode.is_job() && a.expected > 0;
        let monitor = if watch { monitor_period(&svc, expect) } else { Duration::ZERO };
        if watch && a.tasks_ready && known_failures.is_none() {
            known_failures = Some(failed_tasks(&svc, &tasks).iter().map(|t| t.id.clone()).collect());
        }
        let updating = svc.update_status.as_ref().is_some_and(|u| u.state.is_active());
        if let (Some(known), None) = (&known_failures, &detected) {
            if let Some(t) = failed_tasks(&svc, &tasks).into_iter().find(|t| !known.contains(&t.id)) {
                progress.verify("Detected task failure");
                if expect == Expect::Tasks || !updating {
                    bail!("service {name}: {}", failure_text(t));
                }
                detected = Some((failure_text(t), Instant::now() + Duration::from_secs(3)));
            }
        }
        if let Some((text, until)) = &detected {
            if !updating || Instant::now() >= *until {
                bail!("service {name}: {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if a.tasks_ready {
            let since = *stable_since.get_or_insert_with(|| {
                if watch {
                    progress
                        .verify(&format!("Waiting {} to verify that tasks are stable...", seconds(monitor)));
                }
                Instant::now()
            });
            if a.converged && since.elapsed() >= monitor {
                progress.verify("Service converged");
                return Ok(());
            }
            if watch {
                // The block counts down (plain lines said it once).
                let left = monitor.saturating_sub(since.elapsed());
                progress.countdown(&format!("Waiting {} to verify that tasks are stable...", seconds(left)));
            }
        } else {
            // Docker starts the wait again when a task goes away (a node left, a task moved).
            stable_since = None;
            progress.unverified();
        }
        let give_up = stable_since.map_or(deadline, |s| deadline.max(s + monitor));
        if Instant::now() >= give_up {
            let why =
                if a.pending.is_empty() { "still converging".to_string() } else { a.pending.join("; ") };
            bail!("service {name} did not converge within {}: {why}", fmt_duration(opts.timeout));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Listing and inspecting

pub(crate) fn replicas_text(s: &Service, tasks: &[Task], nodes: &[Node]) -> String {
    let mine = || tasks.iter().filter(|t| t.service_id == s.id);
    let running = mine()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .count();
    let completed =
        mine().filter(|t| t.spec_version == s.spec_version && t.status.state == TaskState::Complete).count();
    match s.spec.mode {
        ServiceMode::Replicated { replicas } => format!("{running}/{replicas}"),
        ServiceMode::Global => format!("{running}/{}", eligible_nodes(s, nodes).len()),
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
            format!("{running}/{max_concurrent} ({completed}/{total_completions} completed)")
        }
        ServiceMode::GlobalJob => {
            let n = eligible_nodes(s, nodes).len();
            format!("{running}/{n} ({completed}/{n} completed)")
        }
        ServiceMode::Scheduled(_) => {
            let st = s.job.clone().unwrap_or_default();
            format!("{running} running ({} ok, {} failed)", st.success_count, st.error_count)
        }
    }
}

pub(crate) fn ports_text(s: &Service) -> String {
    s.spec
        .endpoint
        .ports
        .iter()
        .map(|p| {
            let proto = if p.protocol == Protocol::Udp { "udp" } else { "tcp" };
            if p.published == 0 {
                format!("{}/{proto}", p.target)
            } else {
                format!("*:{}->{}/{proto}", p.published, p.target)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn image_text(t: &shoal_types::TaskTemplate) -> String {
    t.image.clone().unwrap_or_else(|| t.command.join(" "))
}

fn stale_q(stale: bool) -> &'static str {
    if stale {
        "?stale=true"
    } else {
        ""
    }
}

/// `service ls --filter` keys (docker's).
const SERVICE_FILTERS: &[&str] = &["id", "name", "label", "mode"];

pub async fn ls(c: &Client, o: &ListOpts) -> Result<()> {
    let services: Vec<Service> = c.get(&format!("/v1/services{}", stale_q(o.stale))).await?;
    let Some(mut services) = filtered_services(o, services)? else { return Ok(()) };
    if o.format == Format::Json {
        return print_json(&services);
    }
    let tasks: Vec<Task> = c.get(&format!("/v1/tasks{}", stale_q(o.stale))).await?;
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    print_services(c, &services, &tasks, &o.format).await
}

/// `service ls` (and `stack services`) filtered as `o` says: the services, or only their ids.
pub(crate) fn filtered_services(o: &ListOpts, mut services: Vec<Service>) -> Result<Option<Vec<Service>>> {
    let f = crate::filter::Filters::parse(&o.filter, SERVICE_FILTERS)?;
    services.retain(|s| {
        f.prefix("id", &[s.id.as_str()])
            && f.prefix("name", &[s.spec.name.as_str()])
            && f.labels("label", &s.spec.labels)
            && f.exact("mode", &[s.spec.mode.name()])
    });
    if o.quiet {
        services.iter().for_each(|s| println!("{}", s.id));
        return Ok(None);
    }
    Ok(Some(services))
}

/// The table of `service ls` (and `stack services`): `services` in this order, their replicas
/// counted from `tasks` (and, for global ones, the nodes); or a `--format` template over docker's
/// fields (`.ID .Name .Mode .Replicas .Image .Ports`).
pub(crate) async fn print_services(
    c: &Client,
    services: &[Service],
    tasks: &[Task],
    format: &Format,
) -> Result<()> {
    let nodes: Vec<Node> = if services.iter().any(|s| s.spec.mode.is_global()) {
        c.get("/v1/nodes?stale=true").await?
    } else {
        Vec::new()
    };
    let rows = services
        .iter()
        .map(|s| {
            vec![
                s.id.short().to_string(),
                s.spec.name.clone(),
                s.spec.mode.name().to_string(),
                replicas_text(s, tasks, &nodes),
                image_text(&s.spec.task_template),
                ports_text(s),
            ]
        })
        .collect();
    let columns = [
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Mode", "MODE"),
        ("Replicas", "REPLICAS"),
        ("Image", "IMAGE"),
        ("Ports", "PORTS"),
    ];
    crate::format::print_listing(format, &columns, rows, || print_json(&services))
}

/// How long ago, roughly, as `docker ps` says it.
pub(crate) fn ago(t: shoal_types::Timestamp) -> String {
    let now = shoal_types::Timestamp::from_system_time(std::time::SystemTime::now());
    let d = now.since(t).as_secs();
    match d {
        0..=1 => "1 second ago".to_string(),
        2..=59 => format!("{d} seconds ago"),
        60..=119 => "about a minute ago".to_string(),
        120..=3599 => format!("{} minutes ago", d / 60),
        3600..=7199 => "about an hour ago".to_string(),
        7200..=172_799 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

type PsKey =
    (String, Option<u64>, Option<shoal_types::NodeId>, bool, std::cmp::Reverse<(Timestamp, u64)>, TaskId);

/// Where a task goes in `service ps` and `node ps`: by service and slot (a global service's slot
/// is its node), then the slot's current task (desired running or complete) first, then newest
/// first — wherever each ran, so a task that moved (drain, rebalance, update) never sorts under
/// its own history.
fn ps_key(t: &Task, service: String) -> PsKey {
    let node_slot = if t.slot.is_some() { None } else { t.node_id.clone() };
    let current = matches!(t.desired_state, TaskState::Running | TaskState::Complete);
    (service, t.slot, node_slot, !current, std::cmp::Reverse((t.created_at, t.version)), t.id.clone())
}

/// docker's `service ps` ERROR cell: quoted, cut to 30 characters with an ellipsis unless
/// `--no-trunc`.
fn error_cell(err: &str, no_trunc: bool) -> String {
    const MAX: usize = 30;
    if err.is_empty() {
        return String::new();
    }
    if no_trunc || err.chars().count() <= MAX {
        return format!("{err:?}");
    }
    let cut: String = err.chars().take(MAX - 1).collect();
    format!("{:?}", format!("{cut}…"))
}

/// A task's name in `ps`: `service.slot`, or `service.node` for a global service's.
fn task_name(t: &Task, service: &str) -> String {
    match t.slot {
        Some(s) => format!("{service}.{s}"),
        None => format!("{service}.{}", t.node_id.as_ref().map_or("", |n| n.short())),
    }
}

/// Rows of `service ps` and `node ps`: the current task of each slot first, its history below it
/// newest first as ` \_ NAME` (docker's layout); or a `--format` template over docker's fields
/// (`.ID .Name .Image .Node .DesiredState .CurrentState .Error .Ports`, and `.Addresses`).
fn task_table(mut tasks: Vec<Task>, services: &[Service], nodes: &[Node], a: &PsArgs) -> Result<()> {
    let svc_name = |t: &Task| {
        services
            .iter()
            .find(|s| s.id == t.service_id)
            .map_or_else(|| t.service_id.short().to_string(), |s| s.spec.name.clone())
    };
    let host = |id: &Option<shoal_types::NodeId>| {
        id.as_ref()
            .map(|id| {
                nodes.iter().find(|n| &n.id == id).map_or(id.to_string(), |n| n.description.hostname.clone())
            })
            .unwrap_or_default()
    };
    tasks.sort_by_cached_key(|t| ps_key(t, svc_name(t)));
    // Tasks on overlay networks: their addresses in a last column (absent otherwise, as in docker).
    let with_addrs = tasks.iter().any(|t| t.networks.iter().any(|n| !n.addrs.is_empty()));
    let mut rows = Vec::new();
    let mut last_key = None;
    for t in &tasks {
        // Global tasks are one slot per node; replicated ones one per slot wherever they ran.
        let key = (t.service_id.clone(), t.slot, if t.slot.is_some() { None } else { t.node_id.clone() });
        let history = last_key.as_ref() == Some(&key);
        let name = task_name(t, &svc_name(t));
        let name = if history { format!(" \\_ {name}") } else { name };
        last_key = Some(key);
        let id = if a.no_trunc { t.id.to_string() } else { t.id.short().to_string() };
        let addrs: Vec<&str> = t
            .networks
            .iter()
            .flat_map(|n| n.addrs.iter().map(|a| a.split('/').next().unwrap_or(a)))
            .collect();
        rows.push(vec![
            id,
            name,
            image_text(&t.spec),
            host(&t.node_id),
            t.desired_state.to_string(),
            match t.status.health {
                // Like `docker ps`: "running (healthy) 3 seconds ago".
                Some(h) if t.status.state == shoal_types::TaskState::Running => {
                    let h = match h {
                        shoal_types::Health::Starting => "health: starting",
                        shoal_types::Health::Healthy => "healthy",
                        shoal_types::Health::Unhealthy => "unhealthy",
                    };
                    format!("{} ({h}) {}", t.status.state, ago(t.status.timestamp))
                }
                _ => format!("{} {}", t.status.state, ago(t.status.timestamp)),
            },
            error_cell(&t.status.err, a.no_trunc),
            String::new(),
            addrs.join(","),
        ]);
    }
    let columns = [
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Image", "IMAGE"),
        ("Node", "NODE"),
        ("DesiredState", "DESIRED STATE"),
        ("CurrentState", "CURRENT STATE"),
        ("Error", "ERROR"),
        // Tasks publish no ports of their own (`-p` is the service's); docker's column is kept
        // for templates.
        ("Ports", ""),
        ("Addresses", if with_addrs { "ADDRESSES" } else { "" }),
    ];
    crate::format::print_listing(&a.opts.format, &columns, rows, || print_json(&tasks))
}

/// `service ps`/`node ps`/`stack ps --filter` keys (docker's).
const TASK_FILTERS: &[&str] = &["id", "name", "node", "desired-state", "label"];
const DESIRED_STATES: &[&str] = &["running", "shutdown", "accepted", "complete", "remove"];

/// The tasks `--filter` lets through: `id` and `name` (`web.1`) by prefix, `node` by id or
/// hostname, `desired-state`, `label` on the service's labels.
fn filter_tasks(a: &PsArgs, tasks: &mut Vec<Task>, services: &[Service], nodes: &[Node]) -> Result<()> {
    let f = crate::filter::Filters::parse(&a.opts.filter, TASK_FILTERS)?;
    if let Some(bad) = f.values("desired-state").iter().find(|v| !DESIRED_STATES.contains(&v.as_str())) {
        bail!("invalid desired-state filter {bad:?}: use {}", DESIRED_STATES.join(", "));
    }
    let no_labels = BTreeMap::new();
    tasks.retain(|t| {
        let svc = services.iter().find(|s| s.id == t.service_id);
        let name = task_name(t, svc.map_or(t.service_id.short(), |s| s.spec.name.as_str()));
        let node = t.node_id.as_ref().and_then(|id| nodes.iter().find(|n| &n.id == id));
        let node_names = [
            t.node_id.as_ref().map_or("", |n| n.as_str()),
            node.map_or("", |n| n.description.hostname.as_str()),
        ];
        f.prefix("id", &[t.id.as_str()])
            && f.prefix("name", &[name.as_str()])
            && f.any("node", |v| !v.is_empty() && node_names.contains(&v))
            && f.exact("desired-state", &[t.desired_state.as_str()])
            && f.labels("label", svc.map_or(&no_labels, |s| &s.spec.labels))
    });
    Ok(())
}

/// Prints `service ps`/`node ps`/`stack ps` as `a` says. `services` and `nodes` name the tasks
/// (and resolve filters); without them ids stand in.
pub(crate) fn print_tasks(
    mut tasks: Vec<Task>,
    services: &[Service],
    nodes: &[Node],
    a: &PsArgs,
) -> Result<()> {
    filter_tasks(a, &mut tasks, services, nodes)?;
    if a.opts.quiet {
        for t in &tasks {
            println!("{}", if a.no_trunc { t.id.as_str() } else { t.id.short() });
        }
        return Ok(());
    }
    if a.opts.format == Format::Json {
        return print_json(&tasks);
    }
    task_table(tasks, services, nodes, a)
}

pub async fn ps(c: &Client, services: &[String], a: &PsArgs) -> Result<()> {
    if services.is_empty() {
        bail!("name at least one service");
    }
    let stale = if a.opts.stale { "&stale=true" } else { "" };
    let mut svcs = Vec::new();
    let mut tasks = Vec::new();
    for s in services {
        let svc: Service = c.get(&format!("/v1/services/{}{}", enc(s), stale_q(a.opts.stale))).await?;
        let t: Vec<Task> = c.get(&format!("/v1/tasks?service={}{stale}", svc.id)).await?;
        tasks.extend(t);
        svcs.push(svc);
    }
    let nodes: Vec<Node> = c.get("/v1/nodes?stale=true").await?;
    print_tasks(tasks, &svcs, &nodes, a)
}

/// `node ps [NODE...]`: the tasks on nodes; by default the node whose API the CLI talks to.
pub async fn node_ps(c: &Client, nodes: &[String], a: &PsArgs) -> Result<()> {
    let stale = if a.opts.stale { "&stale=true" } else { "" };
    let targets = if nodes.is_empty() {
        let info: ClusterInfo = c.get("/v1/cluster?stale=true").await?;
        vec![info.raft.node_id]
    } else {
        nodes.to_vec()
    };
    let all_nodes: Vec<Node> = c.get(&format!("/v1/nodes{}", stale_q(a.opts.stale))).await?;
    let mut tasks = Vec::new();
    for n in &targets {
        let t: Vec<Task> = c.get(&format!("/v1/tasks?node={}{stale}", enc(n))).await?;
        tasks.extend(t);
    }
    let services: Vec<Service> = c.get("/v1/services?stale=true").await?;
    print_tasks(tasks, &services, &all_nodes, a)
}

pub async fn inspect(
    c: &Client,
    services: &[String],
    pretty: bool,
    format: Format,
    quiet: bool,
) -> Result<()> {
    if services.is_empty() {
        bail!("name at least one service");
    }
    let mut svcs = Vec::new();
    for s in services {
        let svc: Service = c.get(&format!("/v1/services/{}", enc(s))).await?;
        svcs.push(svc);
    }
    if quiet {
        svcs.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    if matches!(format, Format::Template(_)) {
        return crate::format::print_inspect(&format, &svcs).map(|_| ());
    }
    if pretty || format == Format::Table {
        for (i, s) in svcs.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", pretty_service(s));
        }
        return Ok(());
    }
    // One service: the object (as before); several: an array.
    match svcs.as_slice() {
        [one] => print_json(one),
        many => print_json(&many),
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut s = String::new();
    let secs = d.as_secs();
    let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        s.push_str(&format!("{h}h"));
    }
    if m > 0 {
        s.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        s.push_str(&format!("{sec}s"));
    }
    let ms = d.subsec_millis();
    if ms > 0 {
        s.push_str(&format!("{ms}ms"));
    }
    if s.is_empty() {
        s = format!("{}ns", d.subsec_nanos());
    }
    s
}

fn fmt_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, n) in UNITS {
        if b >= n {
            let v = b as f64 / n as f64;
            return if b.checked_rem(n) == Some(0) { format!("{}{u}", b / n) } else { format!("{v:.2}{u}") };
        }
    }
    format!("{b}B")
}

fn fmt_cpus(n: u64) -> String {
    let whole = n / NANO_CPUS_PER_CPU;
    let frac = n % NANO_CPUS_PER_CPU;
    if frac == 0 {
        return whole.to_string();
    }
    format!("{whole}.{}", format!("{frac:09}").trim_end_matches('0'))
}

fn lower<T: std::fmt::Debug>(v: T) -> String {
    let s = format!("{v:?}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A readable summary, like `docker service inspect --pretty`.
pub fn pretty_service(s: &Service) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let spec = &s.spec;
    let t = &spec.task_template;
    let _ = writeln!(o, "ID:\t\t{}", s.id);
    let _ = writeln!(o, "Name:\t\t{}", spec.name);
    let _ = writeln!(o, "Version:\t{} (spec version {})", s.version, s.spec_version);
    if !spec.labels.is_empty() {
        let _ = writeln!(o, "Labels:");
        for (k, v) in &spec.labels {
            let _ = writeln!(o, " {k}={v}");
        }
    }
    let _ = writeln!(o, "Service Mode:\t{}", spec.mode.name());
    match spec.mode {
        ServiceMode::Replicated { replicas } => {
            let _ = writeln!(o, " Replicas:\t{replicas}");
        }
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
            let _ = writeln!(o, " Max Concurrent:\t{max_concurrent}");
            let _ = writeln!(o, " Total Completions:\t{total_completions}");
        }
        ServiceMode::Scheduled(ref j) => {
            if !j.schedule.is_empty() {
                let _ = writeln!(o, " Schedule:\t{}", j.schedule);
            }
            if !j.after.is_empty() {
                let _ = writeln!(o, " After:\t\t{}", j.after.join(", "));
            }
        }
        _ => {}
    }
    if let Some(u) = &s.update_status {
        let _ = writeln!(o, "UpdateStatus:");
        let _ = writeln!(o, " State:\t\t{}", lower(u.state).replace('-', "_"));
        let _ = writeln!(o, " Started:\t{}", ago(u.started_at));
        if let Some(c) = u.completed_at {
            let _ = writeln!(o, " Completed:\t{}", ago(c));
        }
        let _ = writeln!(o, " Message:\t{}", u.message);
    }
    let p = &t.placement;
    let _ = writeln!(o, "Placement:");
    let _ = writeln!(o, " Strategy:\t{}", lower(p.strategy));
    if !p.constraints.is_empty() {
        let _ = writeln!(o, " Constraints:\t[{}]", p.constraints.join(", "));
    }
    for pref in &p.preferences {
        let _ = writeln!(o, " Preferences:\tspread={}", pref.spread);
    }
    if p.max_replicas_per_node > 0 {
        let _ = writeln!(o, " Max Replicas Per Node:\t{}", p.max_replicas_per_node);
    }
    for (title, u) in [("UpdateConfig", &spec.update_config), ("RollbackConfig", &spec.rollback_config)] {
        let _ = writeln!(o, "{title}:");
        let _ = writeln!(o, " Parallelism:\t{}", u.parallelism);
        if !u.delay.is_zero() {
            let _ = writeln!(o, " Delay:\t\t{}", fmt_duration(u.delay));
        }
        let _ = writeln!(o, " On failure:\t{}", lower(u.failure_action));
        let _ = writeln!(o, " Monitoring Period: {}", fmt_duration(u.monitor));
        let _ = writeln!(o, " Max failure ratio: {}", u.max_failure_ratio);
        let _ = writeln!(o, " Update order:      {}", lower(u.order));
    }
    let _ = writeln!(o, "TaskSpec:");
    let _ = writeln!(o, " Driver:\t{}", t.driver.as_deref().unwrap_or("(node's choice)"));
    if let Some(img) = &t.image {
        let _ = writeln!(o, " Image:\t\t{img}");
    }
    if !t.command.is_empty() {
        let _ = writeln!(o, " Command:\t{}", t.command.join(" "));
    }
    if !t.args.is_empty() {
        let _ = writeln!(o, " Args:\t\t{}", t.args.join(" "));
    }
    if !t.env.is_empty() {
        let env: Vec<String> = t.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, " Env:\t\t{}", env.join(" "));
    }
    for (label, v) in [("Dir", &t.workdir), ("User", &t.user), ("Hostname", &t.hostname)] {
        if !v.is_empty() {
            let _ = writeln!(o, " {label}:\t\t{v}");
        }
    }
    if t.force_update > 0 {
        let _ = writeln!(o, " Force update:\t{}", t.force_update);
    }
    if !t.mounts.is_empty() {
        let _ = writeln!(o, "Mounts:");
        for m in &t.mounts {
            let _ = writeln!(o, " Target:\t{}", m.target);
            let _ = writeln!(o, "  Source:\t{}", m.source);
            let _ = writeln!(o, "  ReadOnly:\t{}", m.readonly);
            let _ = writeln!(o, "  Type:\t\t{}", lower(m.kind));
        }
    }
    let r = &t.resources;
    if !r.reservations.is_zero() || !r.limits.is_zero() {
        let _ = writeln!(o, "Resources:");
        for (title, x) in [("Reservations", &r.reservations), ("Limits", &r.limits)] {
            if x.is_zero() {
                continue;
            }
            let _ = writeln!(o, " {title}:");
            if x.nano_cpus > 0 {
                let _ = writeln!(o, "  CPU:\t\t{}", fmt_cpus(x.nano_cpus));
            }
            if x.memory_bytes > 0 {
                let _ = writeln!(o, "  Memory:\t{}", fmt_bytes(x.memory_bytes));
            }
            if x.pids > 0 {
                let _ = writeln!(o, "  Pids:\t\t{}", x.pids);
            }
            for (k, v) in &x.generic {
                let _ = writeln!(o, "  {k}:\t\t{v}");
            }
        }
    }
    let rp = &t.restart_policy;
    let _ = writeln!(o, "Restart Policy:");
    let _ = writeln!(o, " Condition:\t{}", lower(rp.condition));
    let _ = writeln!(o, " Delay:\t\t{}", fmt_duration(rp.delay));
    let attempts = if rp.max_attempts == 0 { "unlimited".to_string() } else { rp.max_attempts.to_string() };
    let _ = writeln!(o, " Max Attempts:\t{attempts}");
    if !rp.window.is_zero() {
        let _ = writeln!(o, " Window:\t{}", fmt_duration(rp.window));
    }
    if let Some(h) = &t.health_check {
        let _ = writeln!(o, "Healthcheck:");
        let _ = writeln!(o, " Test:\t\t{}", h.test.join(" "));
        if h.test.first().map(String::as_str) != Some("NONE") {
            let _ = writeln!(o, " Interval:\t{}", fmt_duration(h.interval));
            let _ = writeln!(o, " Timeout:\t{}", fmt_duration(h.timeout));
            let _ = writeln!(o, " Retries:\t{}", h.retries);
            let _ = writeln!(o, " Start Period:\t{}", fmt_duration(h.start_period));
        }
    }
    let _ = writeln!(o, "Stop Grace Period: {}", fmt_duration(t.stop_grace_period));
    if !spec.depends_on.is_empty() {
        let deps: Vec<String> =
            spec.depends_on.iter().map(|d| format!("{} ({})", d.service, d.condition.as_str())).collect();
        let _ = writeln!(o, "Depends On:\t{}", deps.join(", "));
    }
    if !spec.endpoint.ports.is_empty() {
        let _ = writeln!(o, "Ports:");
        for p in &spec.endpoint.ports {
            let _ = writeln!(o, " PublishedPort = {}", p.published);
            let _ = writeln!(o, "  Protocol = {}", lower(p.protocol));
            let _ = writeln!(o, "  TargetPort = {}", p.target);
            let _ = writeln!(o, "  PublishMode = {}", lower(p.mode));
        }
    }
    if !spec.networks.is_empty() || !s.endpoint.vips.is_empty() {
        let _ = writeln!(o, "Endpoint Mode:\t{}", lower(spec.endpoint.mode));
        let targets: Vec<&str> = spec.networks.iter().map(|n| n.target.as_str()).collect();
        let _ = writeln!(o, "Networks:\t{}", targets.join(" "));
        for v in &s.endpoint.vips {
            let _ = writeln!(o, " VirtualIP:\t{} on {}", v.addr, v.network_id);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12x").is_err_and(|e| e.contains("invalid size \"12x\"")));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-1m").is_err());
        assert!(parse_bytes("99999999999t").is_err());
    }

    #[test]
    fn cpus_are_exact_decimals() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_cpus("1.000000001"), Ok(1_000_000_001));
        assert!(parse_cpus("1.0000000001").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("half").is_err_and(|e| e.contains("invalid CPU count")));
        assert_eq!(fmt_cpus(1_500_000_000), "1.5");
    }

    #[test]
    fn ports_and_mounts() {
        let p = parse_port("8080:80/udp").expect("port");
        assert_eq!((p.published, p.target, p.protocol), (8080, 80, Protocol::Udp));
        let p = parse_port("80").expect("port");
        assert_eq!((p.published, p.target, p.protocol), (0, 80, Protocol::Tcp));
        let p = parse_port("published=53,target=5353,protocol=udp").expect("long");
        assert_eq!((p.published, p.target, p.protocol), (53, 5353, Protocol::Udp));
        assert!(parse_port("80/sctp").is_err());
        assert!(parse_port("0:80").is_err());
        assert!(parse_port("mode=ingress,target=80").is_err());
        let m = parse_mount("type=bind,source=/srv,target=/data,readonly").expect("mount");
        assert_eq!(
            m,
            Mount { kind: MountType::Bind, source: "/srv".into(), target: "/data".into(), readonly: true }
        );
        let m = parse_mount("src=vol,dst=/v").expect("mount");
        assert_eq!((m.kind, m.readonly), (MountType::Volume, false));
        assert!(parse_mount("type=tmpfs,target=/t").is_err());
        assert!(parse_mount("type=bind,source=/x").is_err());
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split(r#"sh -c "echo 'hi there'" a\ b"#).expect("split"),
            vec!["sh", "-c", "echo 'hi there'", "a b"]
        );
        assert_eq!(shell_split("").expect("split"), Vec::<String>::new());
        assert_eq!(shell_split("''").expect("split"), vec![""]);
        assert!(shell_split("'open").is_err());
    }

    fn svc(replicas: u64) -> Service {
        let mut spec = ServiceSpec { name: "web".into(), ..Default::default() };
        spec.mode = ServiceMode::Replicated { replicas };
        let mut s = Service::new(shoal_types::ServiceId::new("s1"), spec);
        s.spec_version = 1;
        s
    }

    fn task(id: &str, slot: u64, state: TaskState, err: &str) -> Task {
        Task {
            id: shoal_types::TaskId::new(id),
            version: 1,
            created_at: shoal_types::Timestamp(slot),
            updated_at: shoal_types::Timestamp(slot),
            service_id: shoal_types::ServiceId::new("s1"),
            slot: Some(slot),
            node_id: None,
            spec: Default::default(),
            endpoint: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: shoal_types::TaskStatus { state, err: err.into(), ..Default::default() },
            restart_history: Vec::new(),
            restore: None,
            networks: Vec::new(),
        }
    }

    #[test]
    fn progress_per_slot() {
        let s = svc(2);
        let tasks =
            vec![task("a", 1, TaskState::Running, ""), task("b", 2, TaskState::Pending, "no suitable node")];
        let a = assess(&s, &tasks, &[], Expect::Tasks);
        assert!(!a.converged);
        assert_eq!(a.lines[0].1, "1/2: running");
        assert_eq!(a.lines[1].1, "2/2: pending: no suitable node");
        assert_eq!(a.overall, "overall progress: 1 out of 2 tasks running");
        assert_eq!(a.pending, vec!["2/2: pending: no suitable node".to_string()]);
        let tasks = vec![task("a", 1, TaskState::Running, ""), task("b", 2, TaskState::Running, "")];
        assert!(assess(&s, &tasks, &[], Expect::Tasks).converged);
        // Scaled down: converged once the extra task has stopped.
        let s1 = svc(1);
        // Not yet told to stop by the orchestrator: still not converged.
        assert!(!assess(&s1, &tasks, &[], Expect::Tasks).converged);
        let mut extra = tasks[1].clone();
        extra.desired_state = TaskState::Shutdown;
        extra.node_id = Some(shoal_types::NodeId::new("n1"));
        extra.status.state = TaskState::Running;
        assert!(!assess(&s1, &[tasks[0].clone(), extra.clone()], &[], Expect::Tasks).converged);
        extra.status.state = TaskState::Shutdown;
        assert!(assess(&s1, &[tasks[0].clone(), extra], &[], Expect::Tasks).converged);
    }

    #[test]
    fn update_status_decides() {
        let mut s = svc(1);
        let tasks = vec![task("a", 1, TaskState::Running, "")];
        let status = |state, message: &str| shoal_types::UpdateStatus {
            state,
            started_at: shoal_types::Timestamp(0),
            completed_at: None,
            message: message.into(),
        };
        s.update_status = Some(status(UpdateState::Updating, "update in progress"));
        assert!(!assess(&s, &tasks, &[], Expect::Update).converged);
        assert!(assess(&s, &tasks, &[], Expect::Tasks).converged);
        s.update_status = Some(status(UpdateState::Completed, "update completed"));
        assert!(assess(&s, &tasks, &[], Expect::Update).converged);
        s.update_status = Some(status(UpdateState::Paused, "update paused due to failure"));
        assert_eq!(
            assess(&s, &tasks, &[], Expect::Update).failed.as_deref(),
            Some("update paused: update paused due to failure")
        );
        s.update_status = Some(status(UpdateState::RollbackStarted, "update rolled back due to failure"));
        assert!(assess(&s, &tasks, &[], Expect::Update).failed.is_some());
        assert!(!assess(&s, &tasks, &[], Expect::Rollback).converged);
        s.update_status = Some(status(UpdateState::RollbackCompleted, "rollback completed"));
        assert!(assess(&s, &tasks, &[], Expect::Rollback).converged);
    }

    #[test]
    fn ps_lists_the_current_task_of_a_slot_before_its_history() {
        let on = |id: &str, node: &str, created: u64, desired: TaskState, state: TaskState| {
            let mut t = task(id, 1, state, "");
            t.node_id = Some(shoal_types::NodeId::new(node));
            t.created_at = shoal_types::Timestamp(created);
            t.desired_state = desired;
            t
        };
        // Drained off node "a": the running task is on "b", which sorts after "a".
        let mut tasks = vec![
            on("old", "a", 1, TaskState::Shutdown, TaskState::Shutdown),
            on("older", "a", 0, TaskState::Shutdown, TaskState::Failed),
            on("new", "b", 2, TaskState::Running, TaskState::Running),
        ];
        let mut slot2 = on("two", "a", 0, TaskState::Running, TaskState::Running);
        slot2.slot = Some(2);
        tasks.push(slot2);
        tasks.sort_by_cached_key(|t| ps_key(t, "web".into()));
        let order: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(order, ["new", "old", "older", "two"]);
    }

    #[test]
    fn failures_name_their_reason() {
        let mut t = task("t1", 1, TaskState::Failed, "task exited with code 3");
        t.status.exit_code = Some(3);
        assert_eq!(failure_reason(&t), "exited with code 3");
        assert_eq!(failure_text(&t), "task t1: exited with code 3");
        let mut t = task("t2", 1, TaskState::Complete, "");
        t.status.exit_code = Some(0);
        assert_eq!(failure_reason(&t), "exited with code 0");
        let t = task("t3", 1, TaskState::Rejected, "executable not found: /x");
        assert_eq!(failure_reason(&t), "executable not found: /x");
        let s = svc(1);
        let tasks = vec![
            task("ok", 1, TaskState::Running, ""),
            task("done", 1, TaskState::Complete, ""),
            task("bad", 1, TaskState::Failed, "boom"),
        ];
        let failed: Vec<&str> = failed_tasks(&s, &tasks).iter().map(|t| t.id.as_str()).collect();
        assert_eq!(failed.len(), 2, "a service's task that exits at all failed: {failed:?}");
        // The verification window: the spec's monitor period, 5 s when it is 0.
        let mut s = svc(1);
        assert_eq!(monitor_period(&s, Expect::Tasks), Duration::from_secs(5));
        s.spec.update_config.monitor = Duration::ZERO;
        assert_eq!(monitor_period(&s, Expect::Update), DEFAULT_MONITOR);
        s.spec.update_config.monitor = Duration::from_secs(2);
        assert_eq!(monitor_period(&s, Expect::Update), Duration::from_secs(2));
        assert_eq!(seconds(Duration::from_millis(1500)), "2 seconds");
        assert_eq!(seconds(Duration::from_secs(1)), "1 second");
    }

    #[test]
    fn update_flags_edit_the_spec() {
        let mut spec = ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.command = vec!["sleep".into(), "300".into()];
        spec.task_template.env.insert("A".into(), "1".into());
        spec.task_template.placement.constraints = vec!["node.role==manager".into()];
        spec.networks = vec![parse_network("net1").expect("net")];
        let a = UpdateArgs {
            service: "web".into(),
            with_registry_auth: false,
            image: None,
            args: Some("sleep 400".into()),
            entrypoint: None,
            replicas: Some(3),
            max_concurrent: None,
            force: true,
            env_add: vec![("B".into(), "2".into())],
            env_rm: vec!["A".into()],
            label_add: vec![("tier".into(), "web".into())],
            label_rm: vec![],
            constraint_add: vec!["node.labels.zone==a".into()],
            constraint_rm: vec!["node.role==manager".into()],
            placement_pref_add: vec![],
            placement_pref_rm: vec![],
            mount_add: vec![],
            mount_rm: vec![],
            publish_add: vec![parse_port("8080:80").expect("port")],
            publish_rm: vec![],
            network_add: vec![parse_network("name=net2,alias=db").expect("net")],
            network_rm: vec!["net1".into()],
            secret_add: vec![parse_secret_ref("source=db-pw,target=pw,mode=0400").expect("secret")],
            secret_rm: vec![],
            config_add: vec![],
            config_rm: vec![],
            generic_resource_add: vec![],
            generic_resource_rm: vec![],
            depends_on_add: vec![parse_dependency("db:healthy").expect("dep")],
            depends_on_rm: vec![],
            dns_add: vec![],
            dns_rm: vec![],
            dns_search_add: vec![],
            dns_search_rm: vec![],
            dns_option_add: vec![],
            dns_option_rm: vec![],
            container_label_add: vec![],
            container_label_rm: vec![],
            ulimit_add: vec![],
            ulimit_rm: vec![],
            group_add: vec![],
            group_rm: vec![],
            spec: SpecFlags {
                limit_memory: Some(64 << 20),
                pids_limit: Some(100),
                endpoint_mode: Some(shoal_types::EndpointMode::Dnsrr),
                ..Default::default()
            },
            progress: ProgressOpts { detach: true, quiet: false, timeout: Duration::from_secs(1) },
        };
        let out = update_spec(spec, &a).expect("update");
        let t = &out.task_template;
        assert_eq!(t.command, vec!["sleep", "400"]);
        assert_eq!(t.env.get("B").map(String::as_str), Some("2"));
        assert!(!t.env.contains_key("A"));
        assert_eq!(t.placement.constraints, vec!["node.labels.zone==a"]);
        assert_eq!(t.force_update, 1);
        assert_eq!(t.resources.limits.memory_bytes, 64 << 20);
        assert_eq!(t.resources.limits.pids, 100);
        assert_eq!(out.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(out.labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(out.endpoint.ports.len(), 1);
        assert_eq!(out.endpoint.mode, shoal_types::EndpointMode::Dnsrr);
        let nets: Vec<(&str, &[String])> =
            out.networks.iter().map(|n| (n.target.as_str(), n.aliases.as_slice())).collect();
        assert_eq!(nets, [("net2", &["db".to_string()][..])]);
        assert_eq!(out.depends_on, [parse_dependency("db:healthy").expect("dep")]);
        let pw = &out.task_template.secrets[0];
        assert_eq!((pw.source.as_str(), pw.target.as_str(), pw.mode), ("db-pw", "pw", 0o400));
        let err = update_spec(out.clone(), &update_args("--secret-rm nope web")).expect_err("unused");
        assert!(err.to_string().contains("does not use this secret"), "{err}");
        let rotated = update_spec(
            out.clone(),
            &update_args("--secret-rm db-pw --secret-add source=db-pw-2,target=pw web"),
        )
        .expect("rotation");
        let s = &rotated.task_template.secrets;
        assert_eq!((s.len(), s[0].source.as_str(), s[0].target.as_str()), (1, "db-pw-2", "pw"));
        assert!(parse_secret_ref("source=x,mode=999").is_err());
        assert!(parse_secret_ref("target=/x").is_err());
        assert_eq!(out.depends_on[0].condition, shoal_types::DependencyCondition::Healthy);
        assert!(parse_dependency("db:ready").is_err());
        assert_eq!(parse_dependency("db").expect("dep").condition, shoal_types::DependencyCondition::Started);
        let mut again = a.clone();
        again.network_add.clear();
        again.constraint_rm.clear();
        let e = update_spec(out, &again).expect_err("not attached");
        assert!(e.to_string().contains("--network-rm \"net1\": the service is not attached"), "{e}");
    }

    /// `shoal service create ARGS...` / `update ARGS...` as clap parses them.
    fn create_args(args: &str) -> std::result::Result<CreateArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct C {
            #[command(flatten)]
            a: CreateArgs,
        }
        <C as clap::Parser>::try_parse_from(std::iter::once("create").chain(args.split_whitespace()))
            .map(|c| c.a)
    }

    fn update_args(args: &str) -> UpdateArgs {
        #[derive(clap::Parser)]
        struct U {
            #[command(flatten)]
            a: UpdateArgs,
        }
        <U as clap::Parser>::try_parse_from(std::iter::once("update").chain(args.split_whitespace()))
            .unwrap_or_else(|e| panic!("{args}: {e}"))
            .a
    }

    #[test]
    fn container_option_flags_build_the_template() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("app.env");
        std::fs::write(&file, "# comment\n\nA=1\nQUOTED=\"kept\"\n  B=x=y\nPATH\nSHOAL_SURELY_UNSET_VAR\n")
            .expect("env file");
        let a = create_args(&format!(
            "--name web --env-file {} -e A=2 --read-only --init -t --cap-add net_admin --cap-drop CAP_NET_RAW \
             --dns 1.1.1.1 --dns-search example.org --dns-option ndots:2 --container-label team=fish \
             --ulimit nofile=1024:2048 --group audio --group 50 --log-driver json-file --log-opt max-size=1m \
             --replicas-max-per-node 2 --limit-pids 30 busybox",
            file.display()
        ))
        .expect("flags");
        let spec = create_spec(&a).expect("spec");
        let t = &spec.task_template;
        assert_eq!(t.env.get("A").map(String::as_str), Some("2"), "-e wins over --env-file");
        assert_eq!(t.env.get("QUOTED").map(String::as_str), Some("\"kept\""), "docker keeps quotes");
        assert_eq!(t.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(t.env.get("PATH"), std::env::var("PATH").ok().as_ref(), "a bare KEY is this shell's");
        assert!(!t.env.contains_key("SHOAL_SURELY_UNSET_VAR"));
        assert!(t.read_only && t.init && t.tty);
        assert_eq!(t.cap_add, ["CAP_NET_ADMIN"]);
        assert_eq!(t.cap_drop, ["CAP_NET_RAW"]);
        assert_eq!(t.dns.nameservers, ["1.1.1.1"]);
        assert_eq!(t.dns.search, ["example.org"]);
        assert_eq!(t.dns.options, ["ndots:2"]);
        assert_eq!(t.container_labels.get("team").map(String::as_str), Some("fish"));
        assert_eq!(t.ulimits, [shoal_types::Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 }]);
        assert_eq!(t.groups, ["audio", "50"]);
        assert_eq!(t.log_driver.as_ref().and_then(|l| l.max_size()), Some(1 << 20));
        assert_eq!(t.placement.max_replicas_per_node, 2);
        assert_eq!(t.resources.limits.pids, 30);
        spec.validate().expect("valid");
        assert_eq!(t.driver_candidates(), ["docker"], "a terminal: docker only");

        // Update: -add/-rm per list; --cap-add takes a capability off the dropped ones.
        let a = update_args(
            "web --read-only=false --cap-add NET_RAW --dns-rm 1.1.1.1 --dns-add 9.9.9.9 --group-rm audio \
             --group-add video --container-label-rm team --container-label-add tier=web --ulimit-rm nofile \
             --ulimit-add nproc=64 --dns-option-rm ndots:2 --dns-search-add example.com",
        );
        let out = update_spec(spec, &a).expect("update");
        let t = &out.task_template;
        assert!(!t.read_only && t.init, "only what is given changes");
        assert_eq!(
            (t.cap_add.as_slice(), t.cap_drop.as_slice()),
            (&["CAP_NET_ADMIN".to_string(), "CAP_NET_RAW".to_string()][..], &[][..])
        );
        assert_eq!(t.dns.nameservers, ["9.9.9.9"]);
        assert_eq!(t.dns.search, ["example.org", "example.com"]);
        assert!(t.dns.options.is_empty());
        assert_eq!(t.groups, ["50", "video"]);
        assert_eq!(t.container_labels.keys().collect::<Vec<_>>(), ["tier"]);
        assert_eq!(t.ulimits, [shoal_types::Ulimit { name: "nproc".into(), soft: 64, hard: 64 }]);

        // What is refused, and says why.
        let e = create_spec(&create_args("--name x --log-driver syslog busybox").expect("flags"))
            .expect_err("syslog");
        assert!(
            e.to_string().contains("not supported: Shoal keeps task logs itself; see shoal service logs"),
            "{e}"
        );
        let e = create_spec(
            &create_args("--name x --log-driver json-file --log-opt compress=true busybox").expect("flags"),
        )
        .expect_err("compress");
        assert!(e.to_string().contains("\"compress\""), "{e}");
        let e = create_spec(&create_args("--name x --log-opt max-size=1m busybox").expect("flags"))
            .expect_err("no driver");
        assert!(e.to_string().contains("--log-opt needs --log-driver"), "{e}");
        assert!(create_args("--name x --cap-add FLY busybox")
            .is_err_and(|e| e.to_string().contains("unknown capability")));
        assert!(create_args("--name x --ulimit nofile=2:1 busybox")
            .is_err_and(|e| e.to_string().contains("above the hard")));
        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, "OK=1\nBAD KEY=2\n").expect("env file");
        let e = create_spec(
            &create_args(&format!("--name x --env-file {} busybox", bad.display())).expect("flags"),
        )
        .expect_err("bad line");
        assert!(e.to_string().contains(&format!("--env-file {}, line 2", bad.display())), "{e}");
        let spec = create_spec(&create_args("--name x --driver process --read-only sleep 1").expect("flags"))
            .expect("spec");
        let e = spec.validate().expect_err("process + read-only");
        assert!(
            e.to_string().contains(
                "task_template.read_only: the process driver cannot mount the root filesystem read-only"
            ),
            "{e}"
        );
    }

    #[test]
    fn publish_modes_and_networks() {
        // The short form is host mode (no routing mesh on the nodes yet); the long form says.
        assert_eq!(parse_port("80:80").expect("short").mode, PublishMode::Host);
        let p = parse_port("published=8080,target=80,mode=ingress").expect("ingress");
        assert_eq!((p.published, p.target, p.mode), (8080, 80, PublishMode::Ingress));
        assert_eq!(parse_port("published=8080,target=80,mode=host").expect("host").mode, PublishMode::Host);
        assert!(
            parse_port("published=1,target=1,mode=mesh").is_err_and(|e| e.contains("use ingress or host"))
        );
        let n = parse_network("name=front,alias=web,alias=www").expect("long");
        assert_eq!((n.target.as_str(), n.aliases.len()), ("front", 2));
        assert_eq!(parse_network("front").expect("short").target, "front");
        assert!(parse_network("name=").is_err());
        assert!(parse_network("nam=front").is_err_and(|e| e.contains("unknown network option")));
    }
}
