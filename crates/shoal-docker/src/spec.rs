//! Docker's service spec (moby's swagger, with the field names the Go client sends) and its
//! translation to and from Shoal's [`shoal_types::ServiceSpec`].
//!
//! These types are Shoal's own rather than bollard's because a translation must see everything
//! it is sent: the Go client writes `Healthcheck` where the swagger (and bollard) say
//! `HealthCheck`, and a field a decoder drops would be a setting silently ignored. Every field
//! Shoal cannot map is captured and, when it says anything (not null, false, 0, "" or empty),
//! refused with its path; unknown fields are collected the same way. All problems of a spec are
//! reported at once.
//!
//! The translation is exact both ways for what the two have in common, so a spec the docker CLI
//! reads back and sends again (`service scale`, `service update --env-add`) changes nothing else.
//! Shoal-only settings (the driver, the placement strategy, rebalance, on-drain) are kept from
//! the service being updated.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_types as st;
use shoal_types::validate::MAX_REPLICAS;
use std::collections::BTreeMap;
use std::time::Duration;

type Extra = BTreeMap<String, Value>;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "TaskTemplate", default, skip_serializing_if = "Option::is_none")]
    pub task_template: Option<TaskSpec>,
    #[serde(rename = "Mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(rename = "UpdateConfig", default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(rename = "RollbackConfig", default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// Deprecated since API 1.44 in favour of `TaskTemplate.Networks`; still accepted.
    #[serde(rename = "Networks", default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkAttachment>>,
    #[serde(rename = "EndpointSpec", default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spec: Option<EndpointSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    #[serde(rename = "ContainerSpec", default, skip_serializing_if = "Option::is_none")]
    pub container_spec: Option<ContainerSpec>,
    #[serde(rename = "Resources", default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(rename = "RestartPolicy", default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(rename = "Placement", default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(rename = "Networks", default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkAttachment>>,
    #[serde(rename = "ForceUpdate", default, skip_serializing_if = "Option::is_none")]
    pub force_update: Option<u64>,
    #[serde(rename = "Runtime", default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(rename = "PluginSpec", default, skip_serializing)]
    pub plugin_spec: Option<Value>,
    #[serde(rename = "NetworkAttachmentSpec", default, skip_serializing)]
    pub network_attachment_spec: Option<Value>,
    #[serde(rename = "LogDriver", default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriverSpec>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    #[serde(rename = "Image", default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(rename = "Command", default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(rename = "Args", default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(rename = "Hostname", default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Dir", default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "Mounts", default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    #[serde(rename = "StopGracePeriod", default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<i64>,
    /// The Go client's name; the swagger's `HealthCheck` is accepted too.
    #[serde(rename = "Healthcheck", alias = "HealthCheck", default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(rename = "Init", default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(rename = "Isolation", default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Groups", default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(rename = "Privileges", default, skip_serializing)]
    pub privileges: Option<Value>,
    #[serde(rename = "TTY", default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(rename = "OpenStdin", default, skip_serializing)]
    pub open_stdin: Option<Value>,
    #[serde(rename = "ReadOnly", default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(rename = "StopSignal", default, skip_serializing)]
    pub stop_signal: Option<Value>,
    #[serde(rename = "Hosts", default, skip_serializing)]
    pub hosts: Option<Value>,
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfigSpec>,
    #[serde(rename = "Secrets", default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretReference>>,
    #[serde(rename = "Configs", default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<ConfigReference>>,
    #[serde(rename = "Sysctls", default, skip_serializing)]
    pub sysctls: Option<Value>,
    #[serde(rename = "CapabilityAdd", default, skip_serializing_if = "Option::is_none")]
    pub capability_add: Option<Vec<String>>,
    #[serde(rename = "CapabilityDrop", default, skip_serializing_if = "Option::is_none")]
    pub capability_drop: Option<Vec<String>>,
    #[serde(rename = "Ulimits", default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<UlimitSpec>>,
    #[serde(rename = "OomScoreAdj", default, skip_serializing)]
    pub oom_score_adj: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A task's secret: which one (Shoal names it by `SecretName`; `SecretID` must be that secret's)
/// and the file the task finds it in.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretReference {
    #[serde(rename = "File", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    #[serde(rename = "SecretID", default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    #[serde(rename = "SecretName", default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A task's config, as [`SecretReference`]; `Runtime` (a Windows credential spec) is refused.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReference {
    #[serde(rename = "File", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTarget>,
    #[serde(rename = "Runtime", default, skip_serializing)]
    pub runtime: Option<Value>,
    #[serde(rename = "ConfigID", default, skip_serializing_if = "Option::is_none")]
    pub config_id: Option<String>,
    #[serde(rename = "ConfigName", default, skip_serializing_if = "Option::is_none")]
    pub config_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a task finds a secret or config: a path (relative: under `/run/secrets` for a secret,
/// `/` for a config), its owner (numbers, as strings) and mode.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileTarget {
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "UID", default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(rename = "GID", default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(rename = "Mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsConfigSpec {
    #[serde(rename = "Nameservers", default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Vec<String>>,
    #[serde(rename = "Search", default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Vec<String>>,
    #[serde(rename = "Options", default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct UlimitSpec {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Soft", default)]
    pub soft: i64,
    #[serde(rename = "Hard", default)]
    pub hard: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogDriverSpec {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Options", default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthConfig {
    #[serde(rename = "Test", default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(rename = "Interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(rename = "Timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(rename = "Retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(rename = "StartInterval", default, skip_serializing)]
    pub start_interval: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "Type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(rename = "Source", default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(rename = "Target", default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(rename = "ReadOnly", default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(rename = "Consistency", default, skip_serializing)]
    pub consistency: Option<Value>,
    #[serde(rename = "BindOptions", default, skip_serializing)]
    pub bind_options: Option<Value>,
    #[serde(rename = "VolumeOptions", default, skip_serializing)]
    pub volume_options: Option<Value>,
    #[serde(rename = "TmpfsOptions", default, skip_serializing)]
    pub tmpfs_options: Option<Value>,
    #[serde(rename = "ImageOptions", default, skip_serializing)]
    pub image_options: Option<Value>,
    #[serde(rename = "ClusterOptions", default, skip_serializing)]
    pub cluster_options: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(rename = "Limits", default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limit>,
    #[serde(rename = "Reservations", default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Reservation>,
    #[serde(rename = "SwapBytes", default, skip_serializing)]
    pub swap_bytes: Option<Value>,
    #[serde(rename = "MemorySwappiness", default, skip_serializing)]
    pub memory_swappiness: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(rename = "MemoryBytes", default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(rename = "Pids", default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    #[serde(rename = "NanoCPUs", default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(rename = "MemoryBytes", default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(rename = "GenericResources", default, skip_serializing_if = "Option::is_none")]
    pub generic_resources: Option<Vec<GenericResource>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenericResource {
    #[serde(rename = "DiscreteResourceSpec", default, skip_serializing_if = "Option::is_none")]
    pub discrete: Option<DiscreteResource>,
    #[serde(rename = "NamedResourceSpec", default, skip_serializing)]
    pub named: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscreteResource {
    #[serde(rename = "Kind", default)]
    pub kind: String,
    #[serde(rename = "Value", default)]
    pub value: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    #[serde(rename = "Condition", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(rename = "Delay", default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    #[serde(rename = "MaxAttempts", default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(rename = "Window", default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(rename = "Constraints", default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    #[serde(rename = "Preferences", default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Vec<PlacementPreference>>,
    #[serde(rename = "MaxReplicas", default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u64>,
    #[serde(rename = "Platforms", default, skip_serializing)]
    pub platforms: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementPreference {
    #[serde(rename = "Spread", default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    #[serde(rename = "SpreadDescriptor", default)]
    pub spread_descriptor: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    #[serde(rename = "Target", default)]
    pub target: String,
    #[serde(rename = "Aliases", default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "DriverOpts", default, skip_serializing)]
    pub driver_opts: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mode {
    #[serde(rename = "Replicated", default, skip_serializing_if = "Option::is_none")]
    pub replicated: Option<Replicated>,
    /// `{}` when global (its presence is what counts).
    #[serde(rename = "Global", default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Value>,
    #[serde(rename = "ReplicatedJob", default, skip_serializing_if = "Option::is_none")]
    pub replicated_job: Option<ReplicatedJob>,
    #[serde(rename = "GlobalJob", default, skip_serializing_if = "Option::is_none")]
    pub global_job: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replicated {
    #[serde(rename = "Replicas", default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedJob {
    #[serde(rename = "MaxConcurrent", default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(rename = "TotalCompletions", default, skip_serializing_if = "Option::is_none")]
    pub total_completions: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// 0: all at once.
    #[serde(rename = "Parallelism", default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
    #[serde(rename = "Delay", default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<i64>,
    #[serde(rename = "FailureAction", default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<String>,
    #[serde(rename = "Monitor", default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<i64>,
    #[serde(rename = "MaxFailureRatio", default, skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    #[serde(rename = "Order", default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSpec {
    #[serde(rename = "Mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(rename = "Ports", default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortConfig>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortConfig {
    #[serde(rename = "Name", default, skip_serializing)]
    pub name: Option<Value>,
    #[serde(rename = "Protocol", default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "TargetPort", default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
    #[serde(rename = "PublishedPort", default, skip_serializing_if = "Option::is_none")]
    pub published_port: Option<u32>,
    #[serde(rename = "PublishMode", default, skip_serializing_if = "Option::is_none")]
    pub publish_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Whether a JSON value says nothing: null, false, 0, "", or a list or object of such.
pub fn says_nothing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(says_nothing),
        Value::Object(o) => o.values().all(says_nothing),
    }
}

/// Everything about a spec that cannot be mapped, with its path.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, path: &str, why: impl std::fmt::Display) {
        self.0.push(format!("{path}: {why}"));
    }
    /// A field Shoal has no equivalent for: refused unless it says nothing.
    fn unsupported(&mut self, path: &str, v: &Option<Value>, what: &str) {
        if let Some(v) = v {
            if !says_nothing(v) {
                self.push(path, format!("not supported by Shoal ({what})"));
            }
        }
    }
    fn unknown(&mut self, path: &str, extra: &Extra) {
        for (k, v) in extra {
            if !says_nothing(v) {
                self.push(&format!("{path}.{k}"), "unknown field: Shoal cannot map it");
            }
        }
    }
    fn nanos(&mut self, path: &str, v: Option<i64>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(n) if n < 0 => {
                self.push(path, format!("{n} is negative"));
                default
            }
            Some(n) => Duration::from_nanos(n as u64),
        }
    }
    fn unsigned(&mut self, path: &str, v: Option<i64>) -> u64 {
        match v {
            Some(n) if n < 0 => {
                self.push(path, format!("{n} is negative"));
                0
            }
            Some(n) => n as u64,
            None => 0,
        }
    }
}

fn nanos_of(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn non_zero(v: u64) -> Option<i64> {
    (v != 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The label `docker stack deploy` puts on a stack's services, networks and containers.
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";

/// Docker's spec → Shoal's. `base` is the service being updated: every field Docker can
/// express is set from the request (Docker's default when absent), every other one (Shoal-only
/// settings: the driver, the placement strategy, rebalance, on-drain, dependencies, …) stays as
/// the service has it. `None` when creating. Every problem is reported at once, as one message.
pub fn to_shoal(d: &ServiceSpec, base: Option<&st::ServiceSpec>) -> Result<st::ServiceSpec, String> {
    let mut p = Problems::default();
    p.unknown("Spec", &d.extra);
    let mut s = base.cloned().unwrap_or_default();
    s.name = d.name.clone().unwrap_or_default();
    s.labels = d.labels.clone().unwrap_or_default();
    s.networks.clear();
    s.endpoint = st::EndpointSpec::default();
    let (base_secrets, base_configs) = (s.task_template.secrets.clone(), s.task_template.configs.clone());
    reset_mapped(&mut s.task_template);
    let tt = d.task_template.clone().unwrap_or_default();
    task_template(&mut p, &tt, &mut s.task_template);
    keep_spelling(&mut s.task_template.secrets, &base_secrets, st::SecretKind::Secret);
    keep_spelling(&mut s.task_template.configs, &base_configs, st::SecretKind::Config);
    // `docker stack deploy` labels each container with its stack, which it also puts on the
    // service: that label rides on the service's (Shoal's docker driver puts it on the
    // containers); the other container labels are the template's.
    let container_stack =
        tt.container_spec.as_ref().and_then(|c| c.labels.as_ref()?.get(STACK_NAMESPACE).cloned());
    if let Some(v) = container_stack {
        if Some(v.as_str()) != s.labels.get(STACK_NAMESPACE).map(String::as_str) {
            p.push(
                &format!("TaskTemplate.ContainerSpec.Labels.{STACK_NAMESPACE}"),
                "must equal the service's label of that name (Shoal keeps the stack on the service)",
            );
        }
    }
    // Networks: the task template's, or the deprecated service-level field.
    let nets = match (&tt.networks, &d.networks) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(n)) => n.clone(),
        _ => Vec::new(),
    };
    for (i, n) in nets.iter().enumerate() {
        let path = format!("TaskTemplate.Networks[{i}]");
        p.unknown(&path, &n.extra);
        p.unsupported(&format!("{path}.DriverOpts"), &n.driver_opts, "network driver options");
        s.networks.push(st::NetworkAttachmentConfig {
            target: n.target.clone(),
            aliases: n.aliases.clone().unwrap_or_default(),
        });
    }
    let wire_mode = mode(&mut p, d.mode.as_ref());
    // A scheduled job shows as a replicated job of one task per run (Docker has no schedules);
    // sent back unchanged, it stays the scheduled job it is.
    let keeps_schedule = base.is_some_and(|b| b.mode.scheduled().is_some())
        && wire_mode == st::ServiceMode::ReplicatedJob { max_concurrent: 1, total_completions: 1 };
    if !keeps_schedule {
        s.mode = wire_mode;
    }
    s.update_config = update_config(&mut p, "UpdateConfig", d.update_config.as_ref());
    s.rollback_config = update_config(&mut p, "RollbackConfig", d.rollback_config.as_ref());
    if let Some(ep) = &d.endpoint_spec {
        p.unknown("EndpointSpec", &ep.extra);
        s.endpoint.mode = match ep.mode.as_deref() {
            None | Some("") | Some("vip") => st::EndpointMode::Vip,
            Some("dnsrr") => st::EndpointMode::Dnsrr,
            Some(m) => {
                p.push("EndpointSpec.Mode", format!("{m:?} is not vip or dnsrr"));
                st::EndpointMode::Vip
            }
        };
        for (i, port) in ep.ports.iter().flatten().enumerate() {
            let path = format!("EndpointSpec.Ports[{i}]");
            p.unknown(&path, &port.extra);
            p.unsupported(&format!("{path}.Name"), &port.name, "named ports");
            let protocol = match port.protocol.as_deref() {
                None | Some("") | Some("tcp") => st::Protocol::Tcp,
                Some("udp") => st::Protocol::Udp,
                Some(other) => {
                    p.push(&format!("{path}.Protocol"), format!("{other:?} is not supported (tcp or udp)"));
                    st::Protocol::Tcp
                }
            };
            let mode = match port.publish_mode.as_deref() {
                None | Some("") | Some("ingress") => st::PublishMode::Ingress,
                Some("host") => st::PublishMode::Host,
                Some(other) => {
                    p.push(&format!("{path}.PublishMode"), format!("{other:?} is not ingress or host"));
                    st::PublishMode::Ingress
                }
            };
            let port_num = |p: &mut Problems, field: &str, v: Option<u32>| -> u16 {
                let v = v.unwrap_or(0);
                u16::try_from(v).unwrap_or_else(|_| {
                    p.push(&format!("{path}.{field}"), format!("{v} is not a port number"));
                    0
                })
            };
            let target = port_num(&mut p, "TargetPort", port.target_port);
            let published = port_num(&mut p, "PublishedPort", port.published_port);
            s.endpoint.ports.push(st::PortConfig { published, target, protocol, mode });
        }
    }
    if s.name.is_empty() {
        p.push("Name", "a service name is required (--name)");
    }
    if p.0.is_empty() {
        Ok(s)
    } else {
        Err(p.0.join("; "))
    }
}

/// Docker's defaults for every part of a task template that Docker can express.
fn reset_mapped(t: &mut st::TaskTemplate) {
    let d = st::TaskTemplate::default();
    t.image = d.image;
    t.command = d.command;
    t.args = d.args;
    t.env = d.env;
    t.workdir = d.workdir;
    t.user = d.user;
    t.hostname = d.hostname;
    t.mounts = d.mounts;
    t.resources.limits.nano_cpus = 0;
    t.resources.limits.memory_bytes = 0;
    t.resources.limits.pids = 0;
    t.resources.reservations = st::Resources::default();
    t.restart_policy = d.restart_policy;
    t.placement.constraints = d.placement.constraints;
    t.placement.preferences = d.placement.preferences;
    t.placement.max_replicas_per_node = d.placement.max_replicas_per_node;
    t.health_check = d.health_check;
    t.stop_grace_period = d.stop_grace_period;
    t.force_update = d.force_update;
    t.read_only = d.read_only;
    t.cap_add = d.cap_add;
    t.cap_drop = d.cap_drop;
    t.dns = d.dns;
    t.init = d.init;
    t.tty = d.tty;
    t.container_labels = d.container_labels;
    t.ulimits = d.ulimits;
    t.groups = d.groups;
    t.log_driver = d.log_driver;
    t.secrets = d.secrets;
    t.configs = d.configs;
}

fn task_template(p: &mut Problems, tt: &TaskSpec, t: &mut st::TaskTemplate) {
    p.unknown("TaskTemplate", &tt.extra);
    p.unsupported("TaskTemplate.PluginSpec", &tt.plugin_spec, "plugin services");
    p.unsupported("TaskTemplate.NetworkAttachmentSpec", &tt.network_attachment_spec, "attachment tasks");
    if let Some(l) = tt.log_driver.as_ref().filter(|l| !l.name.is_empty()) {
        p.unknown("TaskTemplate.LogDriver", &l.extra);
        let ld = st::LogDriver { name: l.name.clone(), options: l.options.clone().unwrap_or_default() };
        for m in st::container::check_log_driver(&ld) {
            p.push("TaskTemplate.LogDriver", m);
        }
        t.log_driver = Some(ld);
    }
    match tt.runtime.as_deref() {
        None | Some("") | Some("container") => {}
        Some(r) => p.push("TaskTemplate.Runtime", format!("{r:?} is not supported (only container)")),
    }
    t.force_update = tt.force_update.unwrap_or(0);
    let cs = tt.container_spec.clone().unwrap_or_default();
    container_spec(p, &cs, t);
    if let Some(r) = &tt.resources {
        p.unknown("TaskTemplate.Resources", &r.extra);
        p.unsupported("TaskTemplate.Resources.SwapBytes", &r.swap_bytes, "swap limits");
        p.unsupported("TaskTemplate.Resources.MemorySwappiness", &r.memory_swappiness, "swappiness");
        if let Some(l) = &r.limits {
            p.unknown("TaskTemplate.Resources.Limits", &l.extra);
            t.resources.limits.nano_cpus = p.unsigned("TaskTemplate.Resources.Limits.NanoCPUs", l.nano_cpus);
            t.resources.limits.memory_bytes =
                p.unsigned("TaskTemplate.Resources.Limits.MemoryBytes", l.memory_bytes);
            t.resources.limits.pids = p.unsigned("TaskTemplate.Resources.Limits.Pids", l.pids);
        }
        if let Some(rv) = &r.reservations {
            let path = "TaskTemplate.Resources.Reservations";
            p.unknown(path, &rv.extra);
            t.resources.reservations.nano_cpus = p.unsigned(&format!("{path}.NanoCPUs"), rv.nano_cpus);
            t.resources.reservations.memory_bytes =
                p.unsigned(&format!("{path}.MemoryBytes"), rv.memory_bytes);
            for (i, g) in rv.generic_resources.iter().flatten().enumerate() {
                let gp = format!("{path}.GenericResources[{i}]");
                p.unknown(&gp, &g.extra);
                p.unsupported(
                    &format!("{gp}.NamedResourceSpec"),
                    &g.named,
                    "named generic resources; use counts",
                );
                if let Some(dr) = &g.discrete {
                    let v = p.unsigned(&format!("{gp}.DiscreteResourceSpec.Value"), Some(dr.value));
                    *t.resources.reservations.generic.entry(dr.kind.clone()).or_insert(0) += v;
                }
            }
        }
    }
    if let Some(rp) = &tt.restart_policy {
        let path = "TaskTemplate.RestartPolicy";
        p.unknown(path, &rp.extra);
        let d = st::RestartPolicy::default();
        t.restart_policy = st::RestartPolicy {
            condition: match rp.condition.as_deref() {
                None | Some("") | Some("any") => st::RestartCondition::Any,
                Some("on-failure") => st::RestartCondition::OnFailure,
                Some("none") => st::RestartCondition::None,
                Some(c) => {
                    p.push(&format!("{path}.Condition"), format!("{c:?} is not none, on-failure or any"));
                    st::RestartCondition::Any
                }
            },
            delay: p.nanos(&format!("{path}.Delay"), rp.delay, d.delay),
            max_attempts: p.unsigned(&format!("{path}.MaxAttempts"), rp.max_attempts),
            window: p.nanos(&format!("{path}.Window"), rp.window, d.window),
        };
    }
    if let Some(pl) = &tt.placement {
        let path = "TaskTemplate.Placement";
        p.unknown(path, &pl.extra);
        p.unsupported(
            &format!("{path}.Platforms"),
            &pl.platforms,
            "platform constraints; use node.platform.* constraints",
        );
        t.placement.constraints = pl.constraints.clone().unwrap_or_default();
        t.placement.max_replicas_per_node = pl.max_replicas.unwrap_or(0);
        for (i, pref) in pl.preferences.iter().flatten().enumerate() {
            p.unknown(&format!("{path}.Preferences[{i}]"), &pref.extra);
            match &pref.spread {
                Some(sp) => t
                    .placement
                    .preferences
                    .push(st::PlacementPreference { spread: sp.spread_descriptor.clone() }),
                None => p.push(&format!("{path}.Preferences[{i}]"), "only spread preferences exist"),
            }
        }
    }
}

fn container_spec(p: &mut Problems, cs: &ContainerSpec, t: &mut st::TaskTemplate) {
    let path = "TaskTemplate.ContainerSpec";
    p.unknown(path, &cs.extra);
    let refused = [
        ("Privileges", &cs.privileges, "security options"),
        ("OpenStdin", &cs.open_stdin, "stdin"),
        ("StopSignal", &cs.stop_signal, "stop signals other than SIGTERM"),
        ("Hosts", &cs.hosts, "extra /etc/hosts entries"),
        ("Sysctls", &cs.sysctls, "sysctls"),
        ("OomScoreAdj", &cs.oom_score_adj, "OOM score adjustments"),
    ];
    for (field, v, what) in refused {
        p.unsupported(&format!("{path}.{field}"), v, what);
    }
    for (i, r) in cs.secrets.iter().flatten().enumerate() {
        let rp = format!("{path}.Secrets[{i}]");
        p.unknown(&rp, &r.extra);
        let named = (r.secret_name.as_deref(), r.secret_id.as_deref());
        if let Some(x) = reference(p, &rp, "SecretName", named, r.file.as_ref()) {
            t.secrets.push(x);
        }
    }
    for (i, r) in cs.configs.iter().flatten().enumerate() {
        let rp = format!("{path}.Configs[{i}]");
        p.unknown(&rp, &r.extra);
        if r.runtime.is_some() {
            // Present at all (`{}` is how it says "runtime"): Docker's Windows credential specs.
            p.push(
                &format!("{rp}.Runtime"),
                "not supported by Shoal (runtime configs: Windows credential specs)",
            );
            continue;
        }
        let named = (r.config_name.as_deref(), r.config_id.as_deref());
        if let Some(x) = reference(p, &rp, "ConfigName", named, r.file.as_ref()) {
            t.configs.push(x);
        }
    }
    t.read_only = cs.read_only.unwrap_or(false);
    t.init = cs.init.unwrap_or(false);
    t.tty = cs.tty.unwrap_or(false);
    t.groups = cs.groups.clone().unwrap_or_default();
    // The stack's label rides on the service's (checked in `to_shoal`).
    t.container_labels = cs
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != STACK_NAMESPACE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (field, from, to) in [
        ("CapabilityAdd", &cs.capability_add, &mut t.cap_add),
        ("CapabilityDrop", &cs.capability_drop, &mut t.cap_drop),
    ] {
        for c in from.iter().flatten() {
            match st::container::normalize_capability(c) {
                Ok(c) => to.push(c),
                Err(m) => p.push(&format!("{path}.{field}"), m),
            }
        }
    }
    if let Some(d) = &cs.dns_config {
        p.unknown(&format!("{path}.DNSConfig"), &d.extra);
        t.dns = st::DnsConfig {
            nameservers: d.nameservers.clone().unwrap_or_default(),
            search: d.search.clone().unwrap_or_default(),
            options: d.options.clone().unwrap_or_default(),
        };
    }
    for (i, u) in cs.ulimits.iter().flatten().enumerate() {
        p.unknown(&format!("{path}.Ulimits[{i}]"), &u.extra);
        t.ulimits.push(st::Ulimit { name: u.name.to_ascii_lowercase(), soft: u.soft, hard: u.hard });
    }
    match cs.isolation.as_deref() {
        None | Some("") | Some("default") => {}
        Some(i) => p.push(&format!("{path}.Isolation"), format!("{i:?} is not supported (Linux only)")),
    }
    t.image = cs.image.as_deref().and_then(non_empty);
    t.command = cs.command.clone().unwrap_or_default();
    t.args = cs.args.clone().unwrap_or_default();
    t.hostname = cs.hostname.clone().unwrap_or_default();
    t.workdir = cs.dir.clone().unwrap_or_default();
    t.user = cs.user.clone().unwrap_or_default();
    for e in cs.env.iter().flatten() {
        match e.split_once('=') {
            Some((k, v)) => {
                t.env.insert(k.to_string(), v.to_string());
            }
            None => p.push(&format!("{path}.Env"), format!("{e:?} has no value (KEY=VALUE)")),
        }
    }
    t.stop_grace_period =
        p.nanos(&format!("{path}.StopGracePeriod"), cs.stop_grace_period, st::DEFAULT_STOP_GRACE_PERIOD);
    for (i, m) in cs.mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.Mounts[{i}]");
        p.unknown(&mp, &m.extra);
        let kind = match m.kind.as_deref() {
            None | Some("") | Some("volume") => st::MountType::Volume,
            Some("bind") => st::MountType::Bind,
            Some(other) => {
                p.push(&format!("{mp}.Type"), format!("{other:?} mounts are not supported (bind or volume)"));
                st::MountType::Volume
            }
        };
        // rprivate is what a bind mount gets anyway.
        let bind = m.bind_options.clone().map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                if o.get("Propagation").and_then(Value::as_str) == Some("rprivate") {
                    o.remove("Propagation");
                }
            }
            v
        });
        p.unsupported(&format!("{mp}.BindOptions"), &bind, "bind propagation and recursion options");
        p.unsupported(
            &format!("{mp}.VolumeOptions"),
            &m.volume_options,
            "volume drivers, labels, nocopy, subpaths",
        );
        p.unsupported(&format!("{mp}.TmpfsOptions"), &m.tmpfs_options, "tmpfs mounts");
        p.unsupported(&format!("{mp}.ImageOptions"), &m.image_options, "image mounts");
        p.unsupported(&format!("{mp}.ClusterOptions"), &m.cluster_options, "cluster volumes");
        let consistency = m.consistency.clone().filter(|c| c.as_str() != Some("default"));
        p.unsupported(&format!("{mp}.Consistency"), &consistency, "mount consistency (macOS only)");
        t.mounts.push(st::Mount {
            kind,
            source: m.source.clone().unwrap_or_default(),
            target: m.target.clone().unwrap_or_default(),
            readonly: m.read_only.unwrap_or(false),
        });
    }
    if let Some(h) = &cs.healthcheck {
        let hp = format!("{path}.Healthcheck");
        p.unknown(&hp, &h.extra);
        p.unsupported(&format!("{hp}.StartInterval"), &h.start_interval, "a start interval");
        let test = h.test.clone().unwrap_or_default();
        if test.is_empty() {
            p.push(
                &format!("{hp}.Test"),
                "Shoal cannot inherit the image's health check: give the command (--health-cmd)",
            );
        }
        let d = st::HealthCheck::default();
        let retries = p.unsigned(&format!("{hp}.Retries"), h.retries);
        t.health_check = Some(st::HealthCheck {
            test,
            // 0 means "the default", as in Docker.
            interval: p.nanos(&format!("{hp}.Interval"), h.interval.filter(|n| *n != 0), d.interval),
            timeout: p.nanos(&format!("{hp}.Timeout"), h.timeout.filter(|n| *n != 0), d.timeout),
            retries: if retries == 0 { d.retries } else { u32::try_from(retries).unwrap_or(u32::MAX) },
            start_period: p.nanos(&format!("{hp}.StartPeriod"), h.start_period, d.start_period),
        });
    }
}

/// A secret's or config's reference: named (the id, when given, was checked against the name by
/// [`name_references`]), with a file. A target that is the name itself is the default (empty),
/// as Shoal's own CLI writes it.
fn reference(
    p: &mut Problems,
    path: &str,
    name_field: &str,
    (name, id): (Option<&str>, Option<&str>),
    file: Option<&FileTarget>,
) -> Option<st::SecretReference> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        p.push(&format!("{path}.{name_field}"), "a name is required");
        return None;
    };
    let Some(f) = file else {
        p.push(
            &format!("{path}.File"),
            "required: the file the task finds it in (Shoal has no runtime targets)",
        );
        return None;
    };
    p.unknown(&format!("{path}.File"), &f.extra);
    let mut owner = |field: &str, v: Option<&str>| -> u32 {
        match v.map(str::trim).filter(|v| !v.is_empty()) {
            None => 0,
            Some(v) => v.parse().unwrap_or_else(|_| {
                p.push(
                    &format!("{path}.File.{field}"),
                    format!("{v:?} is not a number (Shoal takes numeric ids)"),
                );
                0
            }),
        }
    };
    let uid = owner("UID", f.uid.as_deref());
    let gid = owner("GID", f.gid.as_deref());
    let target = f.name.clone().filter(|n| n != name).unwrap_or_default();
    Some(st::SecretReference {
        source: name.to_string(),
        id: id.filter(|i| !i.is_empty()).map(st::SecretId::new),
        target,
        uid,
        gid,
        mode: f.mode.unwrap_or(0o444),
    })
}

/// A reference that `base` (the service being updated) has to the same file keeps its spelling
/// of the target (`/run/secrets/pw` and `pw` are one file), so a spec sent back unchanged is
/// the same spec.
fn keep_spelling(refs: &mut [st::SecretReference], base: &[st::SecretReference], kind: st::SecretKind) {
    for r in refs {
        if let Some(b) = base.iter().find(|b| b.source == r.source && b.path(kind) == r.path(kind)) {
            r.target = b.target.clone();
        }
    }
}

/// Docker names a task's secrets and configs by id (`SecretID`, `ConfigID`) and shows their names;
/// Shoal names them by name. For every reference that gives an id, `name_of(kind, id)` (the
/// state) must know it: a reference without a name gets the id's, one with another name is
/// refused, as is an id that names nothing. Every problem at once.
pub fn name_references(
    d: &mut ServiceSpec,
    name_of: impl Fn(st::SecretKind, &str) -> Option<String>,
) -> Result<(), String> {
    let mut p = Problems::default();
    let Some(cs) = d.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) else { return Ok(()) };
    let path = "TaskTemplate.ContainerSpec";
    let secrets = cs.secrets.iter_mut().flatten().map(|r| (&r.secret_id, &mut r.secret_name));
    let configs = cs.configs.iter_mut().flatten().map(|r| (&r.config_id, &mut r.config_name));
    let all = secrets
        .enumerate()
        .map(|(i, r)| (st::SecretKind::Secret, format!("{path}.Secrets[{i}]"), "SecretID", r))
        .chain(
            configs
                .enumerate()
                .map(|(i, r)| (st::SecretKind::Config, format!("{path}.Configs[{i}]"), "ConfigID", r)),
        );
    for (kind, rp, field, (id, name)) in all {
        let Some(id) = id.as_deref().filter(|i| !i.is_empty()) else { continue };
        match (name_of(kind, id), name.as_deref().filter(|n| !n.is_empty())) {
            (None, _) => p.push(&format!("{rp}.{field}"), format!("no {kind} has id {id}")),
            (Some(found), None) => *name = Some(found),
            (Some(found), Some(given)) if found != given => {
                p.push(&format!("{rp}.{field}"), format!("{id} is {kind} {found}, not {given}"))
            }
            _ => {}
        }
    }
    if p.0.is_empty() {
        Ok(())
    } else {
        Err(p.0.join("; "))
    }
}

fn mode(p: &mut Problems, m: Option<&Mode>) -> st::ServiceMode {
    let Some(m) = m else { return st::ServiceMode::Replicated { replicas: 1 } };
    p.unknown("Mode", &m.extra);
    let set =
        [m.replicated.is_some(), m.global.is_some(), m.replicated_job.is_some(), m.global_job.is_some()];
    if set.iter().filter(|b| **b).count() > 1 {
        p.push("Mode", "more than one mode");
    }
    if let Some(r) = &m.replicated {
        return st::ServiceMode::Replicated { replicas: r.replicas.unwrap_or(1) };
    }
    if m.global.is_some() {
        return st::ServiceMode::Global;
    }
    if let Some(j) = &m.replicated_job {
        let max_concurrent = j.max_concurrent.unwrap_or(1);
        return st::ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions: j.total_completions.unwrap_or(max_concurrent),
        };
    }
    if m.global_job.is_some() {
        return st::ServiceMode::GlobalJob;
    }
    st::ServiceMode::Replicated { replicas: 1 }
}

fn update_config(p: &mut Problems, path: &str, u: Option<&UpdateConfig>) -> st::UpdateConfig {
    let d = st::UpdateConfig::default();
    let Some(u) = u else { return d };
    p.unknown(path, &u.extra);
    st::UpdateConfig {
        // Docker's 0 is "all at once": no service has more tasks than MAX_REPLICAS.
        parallelism: match u.parallelism {
            None => d.parallelism,
            Some(0) => MAX_REPLICAS,
            Some(n) => n,
        },
        delay: p.nanos(&format!("{path}.Delay"), u.delay, d.delay),
        failure_action: match u.failure_action.as_deref() {
            None | Some("") | Some("pause") => st::FailureAction::Pause,
            Some("continue") => st::FailureAction::Continue,
            Some("rollback") => st::FailureAction::Rollback,
            Some(a) => {
                p.push(&format!("{path}.FailureAction"), format!("{a:?} is not pause, continue or rollback"));
                d.failure_action
            }
        },
        monitor: p.nanos(&format!("{path}.Monitor"), u.monitor, d.monitor),
        max_failure_ratio: u.max_failure_ratio.unwrap_or(d.max_failure_ratio),
        order: match u.order.as_deref() {
            None | Some("") | Some("stop-first") => st::UpdateOrder::StopFirst,
            Some("start-first") => st::UpdateOrder::StartFirst,
            Some(o) => {
                p.push(&format!("{path}.Order"), format!("{o:?} is not stop-first or start-first"));
                d.order
            }
        },
    }
}

/// Shoal's spec → Docker's, as `service inspect` shows it and the CLI sends it back.
pub fn from_shoal(s: &st::ServiceSpec) -> ServiceSpec {
    let t = &s.task_template;
    let mut env: Vec<String> = t.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    let cs = ContainerSpec {
        image: t.image.clone(),
        command: (!t.command.is_empty()).then(|| t.command.clone()),
        args: (!t.args.is_empty()).then(|| t.args.clone()),
        hostname: non_empty(&t.hostname),
        env: (!env.is_empty()).then_some(env),
        dir: non_empty(&t.workdir),
        user: non_empty(&t.user),
        mounts: (!t.mounts.is_empty()).then(|| {
            t.mounts
                .iter()
                .map(|m| Mount {
                    kind: Some(match m.kind {
                        st::MountType::Bind => "bind".into(),
                        st::MountType::Volume => "volume".into(),
                    }),
                    source: Some(m.source.clone()),
                    target: Some(m.target.clone()),
                    read_only: m.readonly.then_some(true),
                    ..Default::default()
                })
                .collect()
        }),
        stop_grace_period: Some(nanos_of(t.stop_grace_period)),
        healthcheck: t.health_check.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(nanos_of(h.interval)),
            timeout: Some(nanos_of(h.timeout)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(nanos_of(h.start_period)),
            ..Default::default()
        }),
        isolation: Some("default".into()),
        read_only: t.read_only.then_some(true),
        init: Some(t.init),
        tty: t.tty.then_some(true),
        groups: (!t.groups.is_empty()).then(|| t.groups.clone()),
        labels: (!t.container_labels.is_empty()).then(|| t.container_labels.clone()),
        capability_add: (!t.cap_add.is_empty()).then(|| t.cap_add.clone()),
        capability_drop: (!t.cap_drop.is_empty()).then(|| t.cap_drop.clone()),
        dns_config: Some(DnsConfigSpec {
            nameservers: (!t.dns.nameservers.is_empty()).then(|| t.dns.nameservers.clone()),
            search: (!t.dns.search.is_empty()).then(|| t.dns.search.clone()),
            options: (!t.dns.options.is_empty()).then(|| t.dns.options.clone()),
            extra: Extra::new(),
        }),
        secrets: (!t.secrets.is_empty()).then(|| {
            t.secrets
                .iter()
                .map(|r| SecretReference {
                    file: Some(wire_file(r)),
                    secret_id: r.id.as_ref().map(ToString::to_string),
                    secret_name: Some(r.source.clone()),
                    extra: Extra::new(),
                })
                .collect()
        }),
        configs: (!t.configs.is_empty()).then(|| {
            t.configs
                .iter()
                .map(|r| ConfigReference {
                    file: Some(wire_file(r)),
                    config_id: r.id.as_ref().map(ToString::to_string),
                    config_name: Some(r.source.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        ulimits: (!t.ulimits.is_empty()).then(|| {
            t.ulimits
                .iter()
                .map(|u| UlimitSpec { name: u.name.clone(), soft: u.soft, hard: u.hard, extra: Extra::new() })
                .collect()
        }),
        ..Default::default()
    };
    let r = &t.resources;
    let generic: Vec<GenericResource> = r
        .reservations
        .generic
        .iter()
        .map(|(k, v)| GenericResource {
            discrete: Some(DiscreteResource {
                kind: k.clone(),
                value: i64::try_from(*v).unwrap_or(i64::MAX),
            }),
            ..Default::default()
        })
        .collect();
    let resources = Resources {
        limits: Some(Limit {
            nano_cpus: non_zero(r.limits.nano_cpus),
            memory_bytes: non_zero(r.limits.memory_bytes),
            pids: non_zero(r.limits.pids),
            ..Default::default()
        }),
        reservations: Some(Reservation {
            nano_cpus: non_zero(r.reservations.nano_cpus),
            memory_bytes: non_zero(r.reservations.memory_bytes),
            generic_resources: (!generic.is_empty()).then_some(generic),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rp = &t.restart_policy;
    let restart = RestartPolicy {
        condition: Some(
            match rp.condition {
                st::RestartCondition::Any => "any",
                st::RestartCondition::OnFailure => "on-failure",
                st::RestartCondition::None => "none",
            }
            .into(),
        ),
        delay: Some(nanos_of(rp.delay)),
        max_attempts: Some(i64::try_from(rp.max_attempts).unwrap_or(i64::MAX)),
        window: Some(nanos_of(rp.window)),
        ..Default::default()
    };
    let pl = &t.placement;
    let placement = Placement {
        constraints: (!pl.constraints.is_empty()).then(|| pl.constraints.clone()),
        preferences: (!pl.preferences.is_empty()).then(|| {
            pl.preferences
                .iter()
                .map(|x| PlacementPreference {
                    spread: Some(Spread { spread_descriptor: x.spread.clone() }),
                    ..Default::default()
                })
                .collect()
        }),
        max_replicas: (pl.max_replicas_per_node != 0).then_some(pl.max_replicas_per_node),
        ..Default::default()
    };
    let networks: Vec<NetworkAttachment> = s
        .networks
        .iter()
        .map(|n| NetworkAttachment {
            target: n.target.clone(),
            aliases: (!n.aliases.is_empty()).then(|| n.aliases.clone()),
            ..Default::default()
        })
        .collect();
    let task = TaskSpec {
        container_spec: Some(cs),
        resources: Some(resources),
        restart_policy: Some(restart),
        placement: Some(placement),
        networks: (!networks.is_empty()).then_some(networks),
        force_update: Some(t.force_update),
        runtime: Some("container".into()),
        log_driver: t.log_driver.as_ref().map(|l| LogDriverSpec {
            name: l.name.clone(),
            options: (!l.options.is_empty()).then(|| l.options.clone()),
            extra: Extra::new(),
        }),
        ..Default::default()
    };
    let mode = match &s.mode {
        st::ServiceMode::Replicated { replicas } => {
            Mode { replicated: Some(Replicated { replicas: Some(*replicas) }), ..Default::default() }
        }
        st::ServiceMode::Global => {
            Mode { global: Some(Value::Object(Default::default())), ..Default::default() }
        }
        st::ServiceMode::ReplicatedJob { max_concurrent, total_completions } => Mode {
            replicated_job: Some(ReplicatedJob {
                max_concurrent: Some(*max_concurrent),
                total_completions: Some(*total_completions),
            }),
            ..Default::default()
        },
        // Docker has no schedules: one task per run (see `to_shoal`).
        st::ServiceMode::Scheduled(_) => Mode {
            replicated_job: Some(ReplicatedJob { max_concurrent: Some(1), total_completions: Some(1) }),
            ..Default::default()
        },
        st::ServiceMode::GlobalJob => {
            Mode { global_job: Some(Value::Object(Default::default())), ..Default::default() }
        }
    };
    ServiceSpec {
        name: Some(s.name.clone()),
        labels: (!s.labels.is_empty()).then(|| s.labels.clone()),
        task_template: Some(task),
        mode: Some(mode),
        update_config: Some(wire_update_config(&s.update_config)),
        rollback_config: Some(wire_update_config(&s.rollback_config)),
        networks: None,
        endpoint_spec: Some(wire_endpoint(&s.endpoint)),
        extra: Extra::new(),
    }
}

/// Docker's file target of a reference: the target as given (the name by default), owner ids as
/// strings.
fn wire_file(r: &st::SecretReference) -> FileTarget {
    FileTarget {
        name: Some(if r.target.is_empty() { r.source.clone() } else { r.target.clone() }),
        uid: Some(r.uid.to_string()),
        gid: Some(r.gid.to_string()),
        mode: Some(r.mode),
        extra: Extra::new(),
    }
}

fn wire_update_config(u: &st::UpdateConfig) -> UpdateConfig {
    UpdateConfig {
        parallelism: Some(if u.parallelism >= MAX_REPLICAS { 0 } else { u.parallelism }),
        delay: Some(nanos_of(u.delay)),
        failure_action: Some(
            match u.failure_action {
                st::FailureAction::Pause => "pause",
                st::FailureAction::Continue => "continue",
                st::FailureAction::Rollback => "rollback",
            }
            .into(),
        ),
        monitor: Some(nanos_of(u.monitor)),
        max_failure_ratio: Some(u.max_failure_ratio),
        order: Some(
            match u.order {
                st::UpdateOrder::StopFirst => "stop-first",
                st::UpdateOrder::StartFirst => "start-first",
            }
            .into(),
        ),
        extra: Extra::new(),
    }
}

pub fn wire_port(p: &st::PortConfig) -> PortConfig {
    PortConfig {
        protocol: Some(
            match p.protocol {
                st::Protocol::Tcp => "tcp",
                st::Protocol::Udp => "udp",
            }
            .into(),
        ),
        target_port: Some(u32::from(p.target)),
        published_port: Some(u32::from(p.published)),
        publish_mode: Some(
            match p.mode {
                st::PublishMode::Ingress => "ingress",
                st::PublishMode::Host => "host",
            }
            .into(),
        ),
        ..Default::default()
    }
}

pub fn wire_endpoint(e: &st::EndpointSpec) -> EndpointSpec {
    EndpointSpec {
        mode: Some(
            match e.mode {
                st::EndpointMode::Vip => "vip",
                st::EndpointMode::Dnsrr => "dnsrr",
            }
            .into(),
        ),
        ports: (!e.ports.is_empty()).then(|| e.ports.iter().map(wire_port).collect()),
        extra: Extra::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(j: &str) -> ServiceSpec {
        serde_json::from_str(j).expect("spec")
    }

    /// What the docker CLI 28 sends for `docker service create --name web busybox sleep 1000`.
    const CREATE: &str = r#"{"Name":"web","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest",
        "Args":["sleep","1000"],"Init":false,"DNSConfig":{}},"Resources":{"Limits":{},"Reservations":{}},
        "Placement":{},"ForceUpdate":0},"Mode":{"Replicated":{}},"EndpointSpec":{"Mode":"vip"}}"#;

    #[test]
    fn the_clis_create_maps_to_docker_defaults() {
        let s = to_shoal(&parse(CREATE), None).expect("maps");
        assert_eq!(s.name, "web");
        assert_eq!(s.task_template.image.as_deref(), Some("busybox:latest"));
        assert_eq!(s.task_template.driver, None, "docker where the node has it, else oci");
        assert_eq!(s.task_template.args, ["sleep", "1000"]);
        assert_eq!(s.mode, st::ServiceMode::Replicated { replicas: 1 });
        assert_eq!(s.update_config, st::UpdateConfig::default());
        assert_eq!(s.task_template.restart_policy, st::RestartPolicy::default());
        assert_eq!(s.task_template.stop_grace_period, st::DEFAULT_STOP_GRACE_PERIOD);
        s.validate().expect("valid");
    }

    #[test]
    fn a_stacks_container_label_rides_on_the_service_label() {
        let with = |service: &str, container: &str| {
            parse(&format!(
                r#"{{"Name":"app_web","Labels":{service},"TaskTemplate":{{"ContainerSpec":{{"Image":"busybox:latest",
                "Labels":{container}}}}},"Mode":{{"Replicated":{{}}}}}}"#
            ))
        };
        // What `docker stack deploy` sends: the namespace on the service and on its containers.
        let ns = r#"{"com.docker.stack.namespace":"app"}"#;
        let s = to_shoal(&with(ns, ns), None).expect("a stack's service maps");
        assert_eq!(s.labels.get(STACK_NAMESPACE).map(String::as_str), Some("app"));
        assert!(s.task_template.container_labels.is_empty(), "the namespace is the service's");
        // Other container labels are the template's; a namespace the service does not carry is
        // refused.
        let s = to_shoal(&with(ns, r#"{"com.docker.stack.namespace":"app","x":"1"}"#), None).expect("other");
        assert_eq!(s.task_template.container_labels, BTreeMap::from([("x".to_string(), "1".to_string())]));
        let e = to_shoal(&with("{}", ns), None).expect_err("not on the service");
        assert!(e.contains("must equal the service's label"), "{e}");
    }

    #[test]
    fn every_flag_the_cli_sends_carries_over() {
        let d = parse(
            r#"{"Name":"web2","Labels":{"l":"1"},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest",
            "Command":["/bin/sh"],"Args":["-c","x"],"Env":["A=1","B=x=y"],"Dir":"/tmp","User":"nobody",
            "Hostname":"h","Init":false,"Mounts":[{"Type":"bind","Source":"/tmp","Target":"/data","ReadOnly":true},
            {"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{}}],"StopGracePeriod":3000000000,
            "Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":2000000000},"DNSConfig":{}},
            "Resources":{"Limits":{"MemoryBytes":67108864,"Pids":50},"Reservations":{"NanoCPUs":500000000,
            "GenericResources":[{"DiscreteResourceSpec":{"Kind":"gpu","Value":1}}]}},
            "RestartPolicy":{"Condition":"on-failure","Delay":1000000000,"MaxAttempts":3},
            "Placement":{"Constraints":["node.role==worker"],"Preferences":[{"Spread":{"SpreadDescriptor":"node.labels.zone"}}],"MaxReplicas":2},
            "Networks":[{"Target":"front","Aliases":["w"]}],"ForceUpdate":2},
            "Mode":{"Replicated":{"Replicas":3}},
            "UpdateConfig":{"Parallelism":0,"Delay":3000000000,"FailureAction":"rollback","Monitor":1000000000,"MaxFailureRatio":0.5,"Order":"start-first"},
            "EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"}]}}"#,
        );
        let s = to_shoal(&d, None).expect("maps");
        let t = &s.task_template;
        assert_eq!(t.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(t.mounts.len(), 2);
        assert!(t.mounts[0].readonly && t.mounts[0].kind == st::MountType::Bind);
        assert_eq!(
            t.health_check.as_ref().map(|h| (h.interval, h.timeout)),
            Some((Duration::from_secs(2), Duration::from_secs(30)))
        );
        assert_eq!(t.resources.limits.pids, 50);
        assert_eq!(t.resources.reservations.generic.get("gpu"), Some(&1));
        assert_eq!(t.restart_policy.condition, st::RestartCondition::OnFailure);
        assert_eq!(t.placement.max_replicas_per_node, 2);
        assert_eq!(s.networks[0].target, "front");
        assert_eq!(s.update_config.parallelism, MAX_REPLICAS, "0 is all at once");
        assert_eq!(s.endpoint.ports[0].mode, st::PublishMode::Ingress);
        // And back: what the CLI reads and sends again is the same spec.
        let again = to_shoal(&from_shoal(&s), Some(&s)).expect("round trip");
        assert_eq!(again, s);
        let wire = serde_json::to_value(from_shoal(&s)).expect("json");
        assert_eq!(wire["UpdateConfig"]["Parallelism"], 0);
        assert_eq!(wire["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"][0], "CMD-SHELL");
    }

    /// What the docker CLI 28 sends for `docker service create --read-only --cap-add NET_ADMIN
    /// --cap-drop NET_RAW --dns 1.1.1.1 --dns-search example.org --dns-option ndots:2 --init -t
    /// --container-label team=fish --ulimit nofile=1024:2048 --group audio --log-driver json-file
    /// --log-opt max-size=1m busybox`.
    const CONTAINER_OPTIONS: &str = r#"{"Name":"opts","TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest",
        "Labels":{"team":"fish"},"Init":true,"TTY":true,"ReadOnly":true,"Groups":["audio"],
        "DNSConfig":{"Nameservers":["1.1.1.1"],"Search":["example.org"],"Options":["ndots:2"]},
        "CapabilityAdd":["CAP_NET_ADMIN"],"CapabilityDrop":["CAP_NET_RAW"],
        "Ulimits":[{"Name":"nofile","Hard":2048,"Soft":1024}]},
        "LogDriver":{"Name":"json-file","Options":{"max-size":"1m"}},"ForceUpdate":0},
        "Mode":{"Replicated":{}}}"#;

    #[test]
    fn container_options_map_both_ways() {
        let s = to_shoal(&parse(CONTAINER_OPTIONS), None).expect("maps");
        let t = &s.task_template;
        assert!(t.read_only && t.init && t.tty);
        assert_eq!(t.cap_add, ["CAP_NET_ADMIN"]);
        assert_eq!(t.cap_drop, ["CAP_NET_RAW"]);
        assert_eq!(t.dns.nameservers, ["1.1.1.1"]);
        assert_eq!(t.dns.search, ["example.org"]);
        assert_eq!(t.dns.options, ["ndots:2"]);
        assert_eq!(t.container_labels.get("team").map(String::as_str), Some("fish"));
        assert_eq!(t.ulimits, [st::Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 }]);
        assert_eq!(t.groups, ["audio"]);
        assert_eq!(t.log_driver.as_ref().and_then(|l| l.max_size()), Some(1 << 20));
        s.validate().expect("valid: docker can do all of it");
        assert_eq!(t.driver_candidates(), ["docker"], "only docker gives a task a terminal");
        // Back, as `docker service inspect` shows it, and again: the same spec.
        let wire = serde_json::to_value(from_shoal(&s)).expect("json");
        let cs = &wire["TaskTemplate"]["ContainerSpec"];
        assert_eq!(cs["ReadOnly"], true);
        assert_eq!(cs["TTY"], true);
        assert_eq!(cs["CapabilityAdd"][0], "CAP_NET_ADMIN");
        assert_eq!(cs["DNSConfig"]["Nameservers"][0], "1.1.1.1");
        assert_eq!(cs["Ulimits"][0]["Soft"], 1024);
        assert_eq!(cs["Labels"]["team"], "fish");
        assert_eq!(wire["TaskTemplate"]["LogDriver"]["Options"]["max-size"], "1m");
        let again = to_shoal(&from_shoal(&s), Some(&s)).expect("round trip");
        assert_eq!(again, s);
        // Leaving them out of an update clears them (Docker can express them all).
        let plain = to_shoal(&parse(CREATE), Some(&s)).expect("maps");
        assert!(!plain.task_template.uses_container_options());
    }

    /// What the docker CLI 28 sends for `docker service create --secret pw --secret
    /// source=tls,target=/etc/tls.key,uid=100,gid=101,mode=0400 --config src=app,target=/etc/app.conf
    /// busybox` (after looking the ids up by name).
    const WITH_SECRETS: &str = r#"{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest",
        "Secrets":[{"File":{"Name":"pw","UID":"0","GID":"0","Mode":292},"SecretID":"id-pw","SecretName":"pw"},
        {"File":{"Name":"/etc/tls.key","UID":"100","GID":"101","Mode":256},"SecretID":"id-tls","SecretName":"tls"}],
        "Configs":[{"File":{"Name":"/etc/app.conf","UID":"0","GID":"0","Mode":292},"ConfigID":"id-app","ConfigName":"app"}]}},
        "Mode":{"Replicated":{}}}"#;

    #[test]
    fn secrets_and_configs_map_both_ways() {
        let s = to_shoal(&parse(WITH_SECRETS), None).expect("maps");
        let t = &s.task_template;
        let pw = &t.secrets[0];
        assert_eq!(
            (pw.source.as_str(), pw.target.as_str(), pw.mode),
            ("pw", "", 0o444),
            "the default target"
        );
        assert_eq!(pw.id.as_ref().map(|i| i.as_str()), Some("id-pw"));
        assert_eq!(pw.path(st::SecretKind::Secret), "/run/secrets/pw");
        let tls = &t.secrets[1];
        assert_eq!((tls.target.as_str(), tls.uid, tls.gid, tls.mode), ("/etc/tls.key", 100, 101, 0o400));
        assert_eq!(t.configs[0].path(st::SecretKind::Config), "/etc/app.conf");
        s.validate().expect("valid");
        // Back as `docker service inspect` shows it: ids are Shoal's, the default target the name.
        let wire = serde_json::to_value(from_shoal(&s)).expect("json");
        let cs = &wire["TaskTemplate"]["ContainerSpec"];
        assert_eq!(cs["Secrets"][0]["File"]["Name"], "pw");
        assert_eq!(cs["Secrets"][0]["SecretID"], "id-pw");
        assert_eq!(cs["Secrets"][1]["File"]["UID"], "100");
        assert_eq!(cs["Secrets"][1]["File"]["Mode"], 256);
        assert_eq!(cs["Configs"][0]["ConfigName"], "app");
        assert_eq!(cs["Configs"][0]["File"]["Name"], "/etc/app.conf");
        let again = to_shoal(&from_shoal(&s), Some(&s)).expect("round trip");
        assert_eq!(again, s);
        // A target spelled another way for the same file (Shoal's `target=/run/secrets/pw`) is kept
        // as the service has it; a spec without them clears them (Docker can express them).
        let mut spelled = s.clone();
        spelled.task_template.secrets[0].target = "/run/secrets/pw".into();
        assert_eq!(to_shoal(&parse(WITH_SECRETS), Some(&spelled)).expect("maps"), spelled);
        let plain = to_shoal(&parse(CREATE), Some(&s)).expect("maps");
        assert!(plain.task_template.secrets.is_empty() && plain.task_template.configs.is_empty());
    }

    #[test]
    fn references_are_checked_against_the_state_and_refused_by_path() {
        let known = |kind: st::SecretKind, id: &str| match (kind, id) {
            (st::SecretKind::Secret, "id-pw") => Some("pw".to_string()),
            (st::SecretKind::Config, "id-app") => Some("app".to_string()),
            _ => None,
        };
        // An id without a name gets its name; the CLI's references pass as they are.
        let mut d = parse(WITH_SECRETS);
        d.task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
            .and_then(|c| c.secrets.as_mut())
            .expect("secrets")[1] = SecretReference {
            secret_id: Some("id-pw".into()),
            file: Some(FileTarget::default()),
            ..Default::default()
        };
        name_references(&mut d, known).expect("known ids");
        let s = to_shoal(&d, None).expect("maps");
        assert_eq!(s.task_template.secrets[1].source, "pw");
        // Ids that name nothing, or another name than the one given.
        let mut d = parse(WITH_SECRETS);
        let e = name_references(
            &mut d,
            |kind, id| if id == "id-pw" { known(kind, id) } else { Some("other".into()) },
        )
        .expect_err("refused");
        assert!(e.contains("Secrets[1].SecretID: id-tls is secret other, not tls"), "{e}");
        assert!(e.contains("Configs[0].ConfigID: id-app is config other, not app"), "{e}");
        let e = name_references(&mut parse(WITH_SECRETS), |_, _| None).expect_err("unknown");
        assert!(e.contains("TaskTemplate.ContainerSpec.Secrets[0].SecretID: no secret has id id-pw"), "{e}");
        // What Shoal cannot do, by path: runtime configs, references without a file or a name,
        // owners that are not numbers.
        let d = parse(
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox",
            "Configs":[{"Runtime":{},"ConfigName":"cred"},{"ConfigName":"c"}],
            "Secrets":[{"File":{"Name":"x","UID":"www"},"SecretName":"s"},{"File":{"Name":"y"}}]}}}"#,
        );
        let e = to_shoal(&d, None).expect_err("refused");
        for want in [
            "TaskTemplate.ContainerSpec.Configs[0].Runtime: not supported by Shoal",
            "TaskTemplate.ContainerSpec.Configs[1].File: required",
            "TaskTemplate.ContainerSpec.Secrets[0].File.UID: \"www\" is not a number",
            "TaskTemplate.ContainerSpec.Secrets[1].SecretName: a name is required",
        ] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
    }

    #[test]
    fn shoal_only_settings_survive_a_docker_update() {
        let mut base = to_shoal(&parse(CREATE), None).expect("maps");
        base.task_template.driver = Some("oci".into());
        base.rebalance = st::RebalanceMode::Auto;
        base.on_drain = st::OnDrain::Migrate;
        base.task_template.placement.strategy = st::Strategy::Binpack;
        let again = to_shoal(&from_shoal(&base), Some(&base)).expect("round trip");
        assert_eq!(again, base);
        // What Docker can express comes from the request alone: a setting it leaves out is
        // gone, not kept from the service.
        let mut rich = base.clone();
        rich.task_template.env.insert("A".into(), "1".into());
        rich.task_template.health_check =
            Some(st::HealthCheck { test: vec!["NONE".into()], ..Default::default() });
        rich.task_template.resources.limits.memory_bytes = 64 << 20;
        rich.endpoint.ports.push(st::PortConfig { published: 80, target: 80, ..Default::default() });
        let plain = to_shoal(&parse(CREATE), Some(&rich)).expect("maps");
        assert_eq!(plain, base);
    }

    #[test]
    fn what_cannot_be_mapped_is_refused_with_its_path() {
        let d = parse(
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox","Sysctls":{"a":"1"},
            "Secrets":[{"SecretName":"s"}],"Privileges":{"NoNewPrivileges":true},"CapabilityAdd":["CAP_FLY"],"Frobnicate":1,
            "Mounts":[{"Type":"tmpfs","Target":"/t"}],"Env":["NOVALUE"]},"LogDriver":{"Name":"syslog"},
            "Placement":{"Platforms":[{"OS":"linux"}]}},
            "EndpointSpec":{"Ports":[{"Protocol":"sctp","TargetPort":1}]}}"#,
        );
        let e = to_shoal(&d, None).expect_err("refused");
        for want in [
            "TaskTemplate.ContainerSpec.Sysctls: not supported",
            "TaskTemplate.ContainerSpec.Secrets[0].File: required",
            "TaskTemplate.ContainerSpec.Privileges: not supported",
            "TaskTemplate.ContainerSpec.CapabilityAdd: unknown capability \"CAP_FLY\"",
            "TaskTemplate.ContainerSpec.Frobnicate: unknown field",
            "TaskTemplate.ContainerSpec.Mounts[0].Type: \"tmpfs\" mounts are not supported",
            "TaskTemplate.ContainerSpec.Env: \"NOVALUE\" has no value",
            "TaskTemplate.LogDriver: log driver \"syslog\": not supported: Shoal keeps task logs itself",
            "TaskTemplate.Placement.Platforms: not supported",
            "EndpointSpec.Ports[0].Protocol: \"sctp\" is not supported",
        ] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
        // Fields that say nothing are not refused.
        let quiet = parse(
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"busybox","TTY":false,"Secrets":[],
            "DNSConfig":{"Nameservers":[]},"Privileges":{"NoNewPrivileges":false},"Isolation":"default"}}}"#,
        );
        to_shoal(&quiet, None).expect("nothing said, nothing refused");
    }
}
