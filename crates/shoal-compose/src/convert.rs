//! Reading the merged compose tree as a [`StackSpec`]. Every key is either read, ignored as an
//! extension (`x-…`), or reported: refused as a Compose key Shoal does not support (with what to
//! do instead where there is something) or as unknown (with the key it resembles).

use crate::merge;
use crate::{parse_env_file, Options, Project};
use serde_norway::Value;
use shoal_types::shell::{shell_split, TrailingBackslash};
use shoal_types::stack::StackSecret;
use shoal_types::{
    Dependency, DependencyCondition, EndpointMode, FailureAction, HealthCheck, Mount, MountType,
    NetworkAttachmentConfig, NetworkDriver, NetworkSpec, PlacementPreference, PortConfig, Protocol,
    PublishMode, RestartCondition, SecretData, SecretKind, SecretReference, ServiceMode, ServiceSpec,
    StackSpec, UpdateConfig, UpdateOrder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where problems and warnings are collected while reading.
struct Cx<'a> {
    opts: &'a Options<'a>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Cx<'_> {
    fn err(&mut self, path: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {message}"));
    }
    fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// `v` in a message: its YAML, on one line.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// A mapping being read: keys asked for are marked, and [`Obj::done`] reports the others.
struct Obj<'v> {
    path: String,
    entries: Vec<(String, &'v Value)>,
    asked: BTreeSet<String>,
}

impl<'v> Obj<'v> {
    /// `v` as a mapping (null is an empty one); anything else is reported.
    fn new(cx: &mut Cx<'_>, path: &str, v: &'v Value) -> Option<Obj<'v>> {
        let entries = match v {
            Value::Mapping(m) => {
                let mut out = Vec::new();
                for (k, val) in m {
                    match k.as_str() {
                        Some(k) => out.push((k.to_string(), val)),
                        None => cx.err(path, format!("keys must be strings, not {}", show(k))),
                    }
                }
                out
            }
            Value::Null => Vec::new(),
            other => {
                cx.err(path, format!("expected a mapping, got {}", show(other)));
                return None;
            }
        };
        Some(Obj { path: path.to_string(), entries, asked: BTreeSet::new() })
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, with its path; a null value counts as absent.
    fn get(&mut self, key: &str) -> Option<(String, &'v Value)> {
        self.asked.insert(key.to_string());
        let v = self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)?;
        (!v.is_null()).then(|| (self.at(key), v))
    }

    /// Reports every key not asked for: extensions (`x-…`, but not Shoal's own `x-shoal…`)
    /// are ignored; `unsupported` Compose keys are refused with their hint; the rest are
    /// unknown, with the supported key they resemble.
    fn done(self, cx: &mut Cx<'_>, unsupported: &[(&str, &str)]) {
        for (k, _) in &self.entries {
            if self.asked.contains(k) || (k.starts_with("x-") && !k.starts_with("x-shoal")) {
                continue;
            }
            let path = self.at(k);
            if let Some((_, hint)) = unsupported.iter().find(|(u, _)| u == k) {
                let hint = if hint.is_empty() { String::new() } else { format!(": {hint}") };
                cx.err(&path, format!("not supported by Shoal{hint}"));
                continue;
            }
            let near = self
                .asked
                .iter()
                .map(|c| (distance(c, k), c))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, c)| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            cx.err(&path, format!("unknown key{near}"));
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- scalars ----

fn string(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            cx.err(path, format!("expected a string, got {}", show(other)));
            None
        }
    }
}

fn uint(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<u64> {
    let got = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if got.is_none() {
        cx.err(path, format!("expected a whole number, got {}", show(v)));
    }
    got
}

fn float(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<f64> {
    let got = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if got.is_none() {
        cx.err(path, format!("expected a number, got {}", show(v)));
    }
    got
}

fn boolean(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<bool> {
    let got = match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    };
    if got.is_none() {
        cx.err(path, format!("expected true or false, got {}", show(v)));
    }
    got
}

/// Compose durations are Go's: `1m30s`, `10s`, `1.5h`, `500ms`, `0`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let err = || format!("invalid duration {s:?} (use e.g. 10s, 1m30s, 500ms)");
    if t.is_empty() {
        return Err(err());
    }
    let mut nanos = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().map_err(|_| err())?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        nanos += n * unit;
        rest = &rest[u_end..];
    }
    if !nanos.is_finite() || nanos >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

fn duration(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<Duration> {
    let got = match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
        other => Err(format!("expected a duration (e.g. 10s, 1m30s), got {}", show(other))),
    };
    got.map_err(|e| cx.err(path, e)).ok()
}

/// Compose's byte values: a number of bytes, or a number with b, k, m or g (`kb`, `mb`, `gb`
/// too), binary multiples as Docker has them.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let err = || format!("invalid size {s:?} (use bytes or a number with b, k, m or g, e.g. 512m, 1.5g)");
    let lower = s.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(err()),
    };
    let n: f64 = num.parse().map_err(|_| err())?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

fn bytes(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<u64> {
    let got = match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("invalid size {n}")),
        Value::String(s) => parse_bytes(s),
        other => Err(format!("expected a size (e.g. 512m), got {}", show(other))),
    };
    got.map_err(|e| cx.err(path, e)).ok()
}

pub(crate) use shoal_types::parse_cpus;

fn cpus(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<u64> {
    let got = match v {
        Value::Number(n) => parse_cpus(&n.to_string()),
        Value::String(s) => parse_cpus(s),
        other => Err(format!("expected a number of CPUs, got {}", show(other))),
    };
    got.map_err(|e| cx.err(path, e)).ok()
}

/// A list of strings (a single string is a list of one).
fn strings(cx: &mut Cx<'_>, path: &str, v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => {
            items.iter().enumerate().filter_map(|(i, x)| string(cx, &format!("{path}[{i}]"), x)).collect()
        }
        other => string(cx, path, other).into_iter().collect(),
    }
}

/// A command: a list, or a string split as a shell would (quotes, backslashes; no expansion).
fn command(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => shell_split(s, TrailingBackslash::Ignore).map_err(|e| cx.err(path, e)).ok(),
        Value::Sequence(_) => Some(strings(cx, path, v)),
        other => {
            cx.err(path, format!("expected a string or a list, got {}", show(other)));
            None
        }
    }
}

/// `{K: V}` or `["K=V", "K"]`: a value of `None` is a key given alone.
fn key_values(cx: &mut Cx<'_>, path: &str, v: &Value) -> Vec<(String, Option<String>)> {
    let Value::Mapping(m) = merge::key_values(v.clone()) else {
        cx.err(path, format!("expected a mapping or a list of KEY=VALUE, got {}", show(v)));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, val) in &m {
        let Some(key) = string(cx, path, k) else { continue };
        let val = match val {
            Value::Null => None,
            other => string(cx, &format!("{path}.{key}"), other),
        };
        out.push((key, val));
    }
    out
}

/// One of `choices` (for enumerations: modes, conditions, …).
fn choice<T: Copy>(cx: &mut Cx<'_>, path: &str, v: &Value, choices: &[(&str, T)]) -> Option<T> {
    let s = string(cx, path, v)?;
    match choices.iter().find(|(name, _)| *name == s) {
        Some((_, t)) => Some(*t),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            cx.err(path, format!("{s:?} is not one of {}", names.join(", ")));
            None
        }
    }
}

// ---- the file ----

/// Service keys of the Compose specification that Shoal does not run, with what to do.
const SERVICE_UNSUPPORTED: &[(&str, &str)] = &[
    ("build", "a build-only key: Shoal runs images and does not build them; build the image, load it on the nodes (or push it) and name it in image:"),
    ("develop", "a build-only key (compose watch)"),
    ("restart", "use deploy.restart_policy (Swarm ignores restart: as well)"),
    ("container_name", "Shoal names tasks SERVICE.SLOT"),
    ("scale", "use deploy.replicas"),
    ("cpus", "use deploy.resources.limits.cpus"),
    ("mem_limit", "use deploy.resources.limits.memory"),
    ("mem_reservation", "use deploy.resources.reservations.memory"),
    ("pids_limit", "use deploy.resources.limits.pids"),
    ("gpus", "reserve generic resources with deploy.resources.reservations.generic_resources"),
    ("links", "services reach each other by name on their networks"),
    ("external_links", "services reach each other by name on their networks"),
    ("network_mode", "tasks join overlay networks (networks:)"),
    ("stop_signal", "tasks get SIGTERM, then SIGKILL after stop_grace_period"),
    ("pull_policy", "nodes do not pull for the docker driver: the image must be on them"),
    ("extends", "merge files with several -c instead"),
    ("profiles", ""), ("platform", ""), ("privileged", ""),
    ("devices", ""), ("domainname", ""),
    ("extra_hosts", ""), ("ipc", ""), ("pid", ""),
    ("security_opt", ""), ("shm_size", ""), ("stdin_open", ""), ("sysctls", ""),
    ("tmpfs", ""), ("userns_mode", ""), ("volumes_from", ""), ("mac_address", ""),
    ("oom_kill_disable", ""), ("oom_score_adj", ""), ("isolation", ""),
    ("runtime", ""), ("storage_opt", ""), ("cgroup", ""), ("cgroup_parent", ""), ("cpu_count", ""),
    ("cpu_percent", ""), ("cpu_period", ""), ("cpu_quota", ""), ("cpu_rt_runtime", ""),
    ("cpu_rt_period", ""), ("cpu_shares", ""), ("cpuset", ""), ("blkio_config", ""),
    ("credential_spec", ""), ("device_cgroup_rules", ""), ("mem_swappiness", ""),
    ("memswap_limit", ""), ("annotations", ""), ("attach", ""), ("label_file", ""), ("models", ""),
    ("post_start", ""), ("pre_stop", ""), ("provider", ""), ("uts", ""), ("use_api_socket", ""),
];

/// A top-level network: the stack's own (`STACK_KEY`), or an existing one used by name.
#[derive(Clone, Debug)]
enum Net {
    Stack(NetworkSpec),
    External(String),
}

/// A top-level secret or config: the stack's own (its data read from `file:`), or an existing one
/// used by its name as it is (`external: true`).
#[derive(Clone, Debug)]
enum FileObj {
    Stack(StackSecret),
    External(String),
}

/// A top-level volume: the stack's own (`STACK_KEY`), or used by its name as it is.
#[derive(Clone, Debug)]
enum Vol {
    Stack,
    Named(String),
}

pub(crate) fn project(root: &Value, opts: &Options<'_>) -> Result<Project, Vec<String>> {
    let mut cx = Cx { opts, errors: Vec::new(), warnings: Vec::new() };
    let Some(mut top) = Obj::new(&mut cx, "", root) else { return Err(cx.errors) };
    if top.get("version").is_some() {
        cx.warn("`version` is obsolete and ignored");
    }
    let name = top.get("name").and_then(|(p, v)| string(&mut cx, &p, v));
    let services = top.get("services");
    let networks = top.get("networks");
    let volumes = top.get("volumes");
    let secrets = file_objects(&mut cx, SecretKind::Secret, top.get("secrets"));
    let configs = file_objects(&mut cx, SecretKind::Config, top.get("configs"));
    top.done(&mut cx, &[("include", "name every file with -c instead"), ("models", "")]);

    let mut nets: Vec<(String, Net)> = Vec::new();
    if let Some((path, v)) = networks {
        if let Some(o) = Obj::new(&mut cx, &path, v) {
            for (key, v) in o.entries.clone() {
                if let Some(n) = network(&mut cx, &o.at(&key), &key, v) {
                    nets.push((key, n));
                }
            }
        }
    }
    if !nets.iter().any(|(k, _)| k == "default") {
        nets.push((
            "default".into(),
            Net::Stack(NetworkSpec { name: "default".into(), ..Default::default() }),
        ));
    }
    let mut vols: Vec<(String, Vol)> = Vec::new();
    if let Some((path, v)) = volumes {
        if let Some(o) = Obj::new(&mut cx, &path, v) {
            for (key, v) in o.entries.clone() {
                if let Some(vol) = volume(&mut cx, &o.at(&key), &key, v) {
                    vols.push((key, vol));
                }
            }
        }
    }

    let mut used = Used::default();
    let mut specs = Vec::new();
    let mut checked = BTreeSet::new();
    match services {
        None => cx.err("services", "a stack needs at least one service"),
        Some((path, v)) => {
            if let Some(o) = Obj::new(&mut cx, &path, v) {
                if o.entries.is_empty() {
                    cx.err("services", "a stack needs at least one service");
                }
                for (key, v) in o.entries.clone() {
                    let r = Refs { nets: &nets, vols: &vols, secrets: &secrets, configs: &configs };
                    if let Some(s) = service(&mut cx, &key, v, &r, &mut used) {
                        if s.task_template
                            .health_check
                            .as_ref()
                            .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"))
                        {
                            checked.insert(s.name.clone());
                        }
                        specs.push(s);
                    }
                }
            }
        }
    }

    // Dependencies: services of the file, a healthy one with a health check, no cycle.
    let names: BTreeSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    for s in &specs {
        for d in &s.depends_on {
            let path = format!("services.{}.depends_on.{}", s.name, d.service);
            if d.service == s.name {
                cx.err(&path, "a service cannot depend on itself");
            } else if !names.contains(&d.service) {
                cx.err(&path, format!("{} is not a service of this file", d.service));
            } else if d.condition == DependencyCondition::Healthy && !checked.contains(&d.service) {
                cx.err(
                    &path,
                    format!(
                        "condition service_healthy, but {} has no healthcheck, so it is never healthy: give it one, or use service_started",
                        d.service
                    ),
                );
            }
        }
    }
    // Every secret and config the file declares is the stack's (as `docker stack deploy` creates
    // them all), unless it is external; an external one's name must not be one of those.
    let mut stack = StackSpec { services: specs, ..Default::default() };
    for (kind, objs, into) in [
        (SecretKind::Secret, &secrets, &mut stack.secrets),
        (SecretKind::Config, &configs, &mut stack.configs),
    ] {
        for (key, obj) in objs {
            match obj {
                FileObj::Stack(x) => into.push(x.clone()),
                FileObj::External(real)
                    if objs.iter().any(|(k, o)| k == real && matches!(o, FileObj::Stack(_))) =>
                {
                    cx.err(&format!("{kind}s.{key}.name"), format!("{real} is also a {kind} of this stack"))
                }
                FileObj::External(_) => {}
            }
        }
    }
    if cx.errors.is_empty() {
        if let Err(cycle) = stack.deploy_order() {
            cx.err("depends_on", format!("a dependency cycle: {cycle}"));
        }
    }

    // The stack's networks and volumes that services use; external names must not be
    // mistaken for them.
    for (key, n) in &nets {
        match n {
            Net::Stack(spec) if used.nets.contains(key) => stack.networks.push(spec.clone()),
            Net::Stack(_) if key != "default" => {
                cx.warn(format!("network {key} is declared but no service uses it: it is not created"))
            }
            Net::External(real) if used.nets.contains(key) && used.stack_net_names(&nets).contains(real) => {
                cx.err(&format!("networks.{key}.name"), format!("{real} is also a network of this stack"))
            }
            _ => {}
        }
    }
    for (key, v) in &vols {
        match v {
            Vol::Stack if used.vols.contains(key) => stack.volumes.push(key.clone()),
            Vol::Named(real) if used.vols.contains(key) && stack_vol_names(&vols, &used).contains(real) => {
                cx.err(&format!("volumes.{key}.name"), format!("{real} is also a volume of this stack"))
            }
            _ => {}
        }
    }
    if cx.errors.is_empty() {
        Ok(Project { stack, name, warnings: cx.warnings })
    } else {
        Err(cx.errors)
    }
}

/// The top-level networks, volumes, secrets and configs services may name.
struct Refs<'a> {
    nets: &'a [(String, Net)],
    vols: &'a [(String, Vol)],
    secrets: &'a [(String, FileObj)],
    configs: &'a [(String, FileObj)],
}

/// Which top-level networks and volumes some service uses.
#[derive(Default)]
struct Used {
    nets: BTreeSet<String>,
    vols: BTreeSet<String>,
}

impl Used {
    fn stack_net_names(&self, nets: &[(String, Net)]) -> BTreeSet<String> {
        nets.iter()
            .filter(|(k, n)| matches!(n, Net::Stack(_)) && self.nets.contains(k))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn stack_vol_names(vols: &[(String, Vol)], used: &Used) -> BTreeSet<String> {
    vols.iter()
        .filter(|(k, v)| matches!(v, Vol::Stack) && used.vols.contains(k))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A network's, secret's or config's `external:`: `Some(Some(name))` when it names an existing
/// object (`true`: the key; the old form `{name: x}`), `Some(None)` when it does not, `None` when
/// the value is malformed (the error is recorded).
fn external(cx: &mut Cx<'_>, o: &mut Obj<'_>, key: &str) -> Option<Option<String>> {
    Some(match o.get("external") {
        Some((p, v @ Value::Mapping(_))) => {
            let mut e = Obj::new(cx, &p, v)?;
            let name = e.get("name").and_then(|(p, v)| string(cx, &p, v));
            e.done(cx, &[]);
            Some(name.unwrap_or_else(|| key.to_string()))
        }
        Some((p, v)) => boolean(cx, &p, v).filter(|e| *e).map(|_| key.to_string()),
        None => None,
    })
}

fn network(cx: &mut Cx<'_>, path: &str, key: &str, v: &Value) -> Option<Net> {
    let mut o = Obj::new(cx, path, v)?;
    let external = external(cx, &mut o, key)?;
    let name = o.get("name").and_then(|(p, v)| string(cx, &p, v));
    let mut spec =
        NetworkSpec { name: key.to_string(), driver: NetworkDriver::Overlay, ..Default::default() };
    if let Some((p, v)) = o.get("driver") {
        if let Some(d) = string(cx, &p, v) {
            if d != "overlay" {
                cx.err(
                    &p,
                    format!("{d:?}: Shoal's networks are overlay networks (the driver of Swarm stacks)"),
                );
            }
        }
    }
    if let Some((p, v)) = o.get("driver_opts") {
        for (k, val) in key_values(cx, &p, v) {
            match (k.as_str(), val) {
                ("com.docker.network.driver.mtu" | "mtu", Some(val)) => match val.trim().parse::<u16>() {
                    Ok(m) => spec.mtu = Some(m),
                    Err(_) => cx.err(&format!("{p}.{k}"), format!("invalid MTU {val:?}")),
                },
                _ => cx.err(
                    &format!("{p}.{k}"),
                    "not supported by Shoal (only the MTU, com.docker.network.driver.mtu)",
                ),
            }
        }
    }
    if let Some((p, v)) = o.get("attachable") {
        spec.attachable = boolean(cx, &p, v).unwrap_or_default();
    }
    for key in ["internal", "enable_ipv6", "enable_ipv4"] {
        if let Some((p, v)) = o.get(key) {
            let on = boolean(cx, &p, v);
            let refused = if key == "enable_ipv4" { on == Some(false) } else { on == Some(true) };
            if refused {
                cx.err(&p, "not supported by Shoal");
            }
        }
    }
    if let Some((p, v)) = o.get("ipam") {
        ipam(cx, &p, v, &mut spec);
    }
    if let Some((p, v)) = o.get("labels") {
        spec.labels = key_values(cx, &p, v).into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    }
    o.done(cx, &[]);
    match (external, name) {
        (Some(real), None) => Some(Net::External(real)),
        (Some(_), Some(real)) => Some(Net::External(real)),
        (None, Some(_)) => {
            cx.err(
                &format!("{path}.name"),
                "a stack's network is named STACK_KEY: name: is only for external networks (external: true)",
            );
            None
        }
        (None, None) => Some(Net::Stack(spec)),
    }
}

fn ipam(cx: &mut Cx<'_>, path: &str, v: &Value, spec: &mut NetworkSpec) {
    let Some(mut o) = Obj::new(cx, path, v) else { return };
    if let Some((p, v)) = o.get("driver") {
        if string(cx, &p, v).is_some_and(|d| d != "default") {
            cx.err(&p, "only the default IPAM driver");
        }
    }
    if let Some((p, v)) = o.get("config") {
        let items: Vec<&Value> = match v {
            Value::Sequence(items) => items.iter().collect(),
            other => vec![other],
        };
        if items.len() > 1 {
            cx.err(&p, "one subnet per network (IPv4)");
        }
        if let Some(item) = items.first() {
            let ip = format!("{p}[0]");
            if let Some(mut c) = Obj::new(cx, &ip, item) {
                spec.subnet = c.get("subnet").and_then(|(p, v)| string(cx, &p, v));
                spec.gateway = c.get("gateway").and_then(|(p, v)| string(cx, &p, v));
                c.done(cx, &[("ip_range", ""), ("aux_addresses", "")]);
            }
        }
    }
    o.done(cx, &[("options", "")]);
}

/// The top-level `secrets:` or `configs:`.
fn file_objects(cx: &mut Cx<'_>, kind: SecretKind, v: Option<(String, &Value)>) -> Vec<(String, FileObj)> {
    let Some((path, v)) = v else { return Vec::new() };
    let Some(o) = Obj::new(cx, &path, v) else { return Vec::new() };
    let mut out = Vec::new();
    for (key, v) in o.entries.clone() {
        if let Some(x) = file_object(cx, kind, &o.at(&key), &key, v) {
            out.push((key, x));
        }
    }
    out
}

/// One secret or config: `file:` (relative to the project directory) with an optional `name:`
/// (the name in the cluster instead of `STACK_KEY`) and `labels:`, or `external: true` (its
/// `name:`, or the key, names an existing one).
fn file_object(cx: &mut Cx<'_>, kind: SecretKind, path: &str, key: &str, v: &Value) -> Option<FileObj> {
    let mut o = Obj::new(cx, path, v)?;
    let external = external(cx, &mut o, key)?;
    let name = o.get("name").and_then(|(p, v)| string(cx, &p, v));
    let file = o.get("file").and_then(|(p, v)| Some((p.clone(), string(cx, &p, v)?)));
    let labels: BTreeMap<String, String> = o
        .get("labels")
        .map(|(p, v)| key_values(cx, &p, v).into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
        .unwrap_or_default();
    o.done(
        cx,
        &[
            ("environment", "the data comes from a file: write it into one and name it in file:"),
            ("content", "write it into a file and name it in file:"),
            ("driver", "secret drivers: the managers keep the data themselves"),
            ("driver_opts", "secret drivers: the managers keep the data themselves"),
            ("template_driver", "templated secrets and configs"),
        ],
    );
    if let Some(real) = external {
        if file.is_some() {
            cx.err(
                &format!("{path}.file"),
                format!("an external {kind} exists already: file: is for the stack's own"),
            );
        }
        if !labels.is_empty() {
            cx.err(&format!("{path}.labels"), format!("an external {kind} keeps its own labels"));
        }
        return Some(FileObj::External(name.unwrap_or(real)));
    }
    // One that cannot be read is still declared (its services are not reported too).
    let data = match file {
        None => {
            cx.err(
                path,
                format!("file: is required (the {kind}'s data), or external: true for an existing {kind}"),
            );
            Vec::new()
        }
        Some((fp, file)) => {
            let full = clean(&cx.opts.base_dir.join(&file));
            match (cx.opts.read_bytes)(&full) {
                Ok(d) if d.is_empty() => {
                    cx.err(&fp, format!("{} is empty: a {kind} needs data", full.display()));
                    d
                }
                Ok(d) => d,
                Err(e) => {
                    cx.err(&fp, format!("cannot read {}: {e}", full.display()));
                    Vec::new()
                }
            }
        }
    };
    Some(FileObj::Stack(StackSecret { key: key.to_string(), name, labels, data: SecretData(data) }))
}

/// A service's `secrets:` or `configs:`: `NAME`, or `{source, target, uid, gid, mode}`; each names
/// a top-level one. The stack's are named by key (the managers name them `STACK_KEY`), external
/// ones by their name.
fn references(
    cx: &mut Cx<'_>,
    kind: SecretKind,
    path: &str,
    v: &Value,
    declared: &[(String, FileObj)],
) -> Vec<SecretReference> {
    let Value::Sequence(items) = v else {
        cx.err(path, format!("expected a list, got {}", show(v)));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let mut r = SecretReference::new("");
        match item {
            Value::Mapping(_) => {
                let Some(mut o) = Obj::new(cx, &ip, item) else { continue };
                r.source = o.get("source").and_then(|(p, v)| string(cx, &p, v)).unwrap_or_default();
                r.target = o.get("target").and_then(|(p, v)| string(cx, &p, v)).unwrap_or_default();
                for (key, field) in [("uid", &mut r.uid), ("gid", &mut r.gid)] {
                    if let Some((p, v)) = o.get(key) {
                        let id = string(cx, &p, v).and_then(|s| s.trim().parse::<u32>().ok());
                        match id {
                            Some(id) => *field = id,
                            None => cx.err(&p, format!("expected a numeric id, got {}", show(v))),
                        }
                    }
                }
                if let Some((p, v)) = o.get("mode") {
                    match file_mode(v) {
                        Some(m) => r.mode = m,
                        None => cx.err(&p, format!("expected a file mode (e.g. 0440), got {}", show(v))),
                    }
                }
                o.done(cx, &[]);
                if r.source.is_empty() {
                    cx.err(&ip, "source is required");
                    continue;
                }
            }
            other => match string(cx, &ip, other) {
                Some(s) => r.source = s,
                None => continue,
            },
        }
        match declared.iter().find(|(k, _)| *k == r.source) {
            None => cx.err(&ip, format!("{kind} {} is not declared in the top-level {kind}s", r.source)),
            Some((_, FileObj::Stack(_))) => out.push(r),
            Some((_, FileObj::External(real))) => {
                // The file's default target is the key, whatever the external one is called.
                if r.target.is_empty() && *real != r.source {
                    r.target = r.source.clone();
                }
                r.source = real.clone();
                out.push(r);
            }
        }
    }
    out
}

/// A file mode: a number as written (`256`, `0o400`), or octal with a leading zero (`0400`, which
/// YAML leaves a string; Docker reads it as octal, as YAML 1.1 does).
fn file_mode(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0o").or_else(|| s.strip_prefix('0').filter(|r| !r.is_empty())) {
                Some(octal) => u32::from_str_radix(octal, 8).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    }
}

fn volume(cx: &mut Cx<'_>, path: &str, key: &str, v: &Value) -> Option<Vol> {
    let mut o = Obj::new(cx, path, v)?;
    let external = match o.get("external") {
        Some((p, v @ Value::Mapping(_))) => {
            let mut e = Obj::new(cx, &p, v)?;
            let name = e.get("name").and_then(|(p, v)| string(cx, &p, v));
            e.done(cx, &[]);
            Some(name.unwrap_or_else(|| key.to_string()))
        }
        Some((p, v)) => boolean(cx, &p, v).filter(|e| *e).map(|_| key.to_string()),
        None => None,
    };
    let name = o.get("name").and_then(|(p, v)| string(cx, &p, v));
    if let Some((p, v)) = o.get("driver") {
        if string(cx, &p, v).is_some_and(|d| d != "local") {
            cx.err(&p, "only the local volume driver");
        }
    }
    o.done(cx, &[("driver_opts", ""), ("labels", "")]);
    Some(match (name, external) {
        (Some(n), _) | (None, Some(n)) => Vol::Named(n),
        (None, None) => Vol::Stack,
    })
}

fn service(cx: &mut Cx<'_>, name: &str, v: &Value, refs: &Refs<'_>, used: &mut Used) -> Option<ServiceSpec> {
    let path = format!("services.{name}");
    if let Err(m) = shoal_types::validate::validate_name(name) {
        cx.err(&path, format!("not a valid service name: {m}"));
    }
    let mut o = Obj::new(cx, &path, v)?;
    let mut spec = ServiceSpec { name: name.to_string(), ..Default::default() };
    let driver = o.get("x-shoal-driver").and_then(|(p, v)| {
        let d = string(cx, &p, v)?;
        if !["process", "oci", "docker"].contains(&d.as_str()) {
            cx.err(&p, format!("{d:?} is not one of process, oci, docker"));
        }
        Some(d)
    });
    let image = o.get("image").and_then(|(p, v)| string(cx, &p, v));
    let cmd = o.get("command").and_then(|(p, v)| command(cx, &p, v));
    let entrypoint = o.get("entrypoint").and_then(|(p, v)| command(cx, &p, v));
    let t = &mut spec.task_template;
    // Without an image the command runs on the process driver (as `service create --driver
    // process`), where every word is the command.
    let process = driver.as_deref() == Some("process") || (driver.is_none() && image.is_none());
    if entrypoint.as_ref().is_some_and(Vec::is_empty) {
        cx.err(&format!("{path}.entrypoint"), "an empty entrypoint (clearing the image's) is not supported");
    }
    if process {
        t.command = entrypoint.unwrap_or_default().into_iter().chain(cmd.unwrap_or_default()).collect();
        if t.command.is_empty() && image.is_none() {
            cx.err(&path, "a service needs an image, or a command (run by the process driver)");
        }
    } else {
        t.command = entrypoint.unwrap_or_default();
        t.args = cmd.unwrap_or_default();
    }
    t.driver = driver;
    t.image = image;
    let env_files = o.get("env_file");
    let environment = o.get("environment");
    t.env = env(cx, env_files, environment);
    if let Some((p, v)) = o.get("healthcheck") {
        t.health_check = healthcheck(cx, &p, v);
    }
    if let Some((p, v)) = o.get("hostname") {
        t.hostname = string(cx, &p, v).unwrap_or_default();
    }
    if let Some((p, v)) = o.get("user") {
        t.user = string(cx, &p, v).unwrap_or_default();
    }
    if let Some((p, v)) = o.get("working_dir") {
        t.workdir = string(cx, &p, v).unwrap_or_default();
    }
    if let Some((p, v)) = o.get("stop_grace_period") {
        if let Some(d) = duration(cx, &p, v) {
            t.stop_grace_period = d;
        }
    }
    if let Some((p, v)) = o.get("volumes") {
        t.mounts = mounts(cx, &p, v, refs, used);
    }
    if let Some((p, v)) = o.get("secrets") {
        t.secrets = references(cx, SecretKind::Secret, &p, v, refs.secrets);
    }
    if let Some((p, v)) = o.get("configs") {
        t.configs = references(cx, SecretKind::Config, &p, v, refs.configs);
    }
    container_options(cx, &mut o, t);
    if o.get("expose").is_some() {
        cx.warn(format!(
            "{path}.expose has no effect: tasks on a network reach each other's ports without it"
        ));
    }
    if let Some((p, v)) = o.get("ports") {
        spec.endpoint.ports = ports(cx, &p, v);
    }
    spec.networks = attachments(cx, &path, o.get("networks"), refs, used);
    if let Some((p, v)) = o.get("depends_on") {
        spec.depends_on = depends_on(cx, &p, v);
    }
    if let Some((p, v)) = o.get("deploy") {
        deploy(cx, &p, v, &mut spec);
    }
    o.done(cx, SERVICE_UNSUPPORTED);
    Some(spec)
}

/// The container options: `read_only`, `init`, `tty`, `cap_add`, `cap_drop`, `dns`,
/// `dns_search`, `dns_opt`, `labels` (the container's; the service's are `deploy.labels`),
/// `ulimits`, `group_add` and `logging`.
fn container_options(cx: &mut Cx<'_>, o: &mut Obj<'_>, t: &mut shoal_types::TaskTemplate) {
    for (key, field) in [("read_only", &mut t.read_only), ("init", &mut t.init), ("tty", &mut t.tty)] {
        if let Some((p, v)) = o.get(key) {
            *field = boolean(cx, &p, v).unwrap_or(false);
        }
    }
    for (key, field) in [("cap_add", &mut t.cap_add), ("cap_drop", &mut t.cap_drop)] {
        if let Some((p, v)) = o.get(key) {
            for (i, c) in strings(cx, &p, v).into_iter().enumerate() {
                match shoal_types::container::normalize_capability(&c) {
                    Ok(c) => field.push(c),
                    Err(e) => cx.err(&format!("{p}[{i}]"), e),
                }
            }
        }
    }
    for (key, field) in [
        ("dns", &mut t.dns.nameservers),
        ("dns_search", &mut t.dns.search),
        ("dns_opt", &mut t.dns.options),
        ("group_add", &mut t.groups),
    ] {
        if let Some((p, v)) = o.get(key) {
            *field = strings(cx, &p, v);
        }
    }
    if let Some((p, v)) = o.get("labels") {
        t.container_labels =
            key_values(cx, &p, v).into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    }
    if let Some((p, v)) = o.get("ulimits") {
        if let Some(mut u) = Obj::new(cx, &p, v) {
            let names: Vec<String> = u.entries.iter().map(|(k, _)| k.clone()).collect();
            for name in names {
                let Some((np, nv)) = u.get(&name) else { continue };
                // `nofile: 1024` or `nofile: {soft: 1024, hard: 2048}`.
                let (soft, hard) = match nv {
                    Value::Mapping(_) => {
                        let Some(mut m) = Obj::new(cx, &np, nv) else { continue };
                        let soft = m.get("soft").and_then(|(p, v)| int(cx, &p, v));
                        let hard = m.get("hard").and_then(|(p, v)| int(cx, &p, v));
                        m.done(cx, &[]);
                        match (soft, hard) {
                            (Some(s), Some(h)) => (s, h),
                            _ => {
                                cx.err(&np, "soft and hard are both required");
                                continue;
                            }
                        }
                    }
                    other => match int(cx, &np, other) {
                        Some(n) => (n, n),
                        None => continue,
                    },
                };
                match shoal_types::container::parse_ulimit(&format!("{name}={soft}:{hard}")) {
                    Ok(l) => t.ulimits.push(l),
                    Err(e) => cx.err(&np, e),
                }
            }
            u.done(cx, &[]);
        }
    }
    if let Some((p, v)) = o.get("logging") {
        if let Some(mut l) = Obj::new(cx, &p, v) {
            let name =
                l.get("driver").and_then(|(p, v)| string(cx, &p, v)).unwrap_or_else(|| "json-file".into());
            let options: BTreeMap<String, String> = l
                .get("options")
                .map(|(p, v)| {
                    key_values(cx, &p, v).into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()
                })
                .unwrap_or_default();
            l.done(cx, &[]);
            let ld = shoal_types::LogDriver { name, options };
            for e in shoal_types::container::check_log_driver(&ld) {
                cx.err(&p, e);
            }
            t.log_driver = Some(ld);
        }
    }
}

/// A whole number, negative allowed (-1: unlimited).
fn int(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<i64> {
    let got = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if got.is_none() {
        cx.err(path, format!("expected a whole number, got {}", show(v)));
    }
    got
}

/// `env_file`s in order, then `environment` over them; an entry without a value takes the
/// client's (and is left out when the client has none).
fn env(
    cx: &mut Cx<'_>,
    files: Option<(String, &Value)>,
    environment: Option<(String, &Value)>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put =
        |cx: &mut Cx<'_>, k: String, v: Option<String>| match v.or_else(|| cx.opts.env.get(&k).cloned()) {
            Some(v) => {
                out.insert(k, v);
            }
            None => {
                out.remove(&k);
            }
        };
    if let Some((p, v)) = files {
        let items: Vec<&Value> = match v {
            Value::Sequence(items) => items.iter().collect(),
            other => vec![other],
        };
        for (i, item) in items.into_iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let (file, required) = match item {
                Value::Mapping(_) => {
                    let Some(mut o) = Obj::new(cx, &ip, item) else { continue };
                    let file = o.get("path").and_then(|(p, v)| string(cx, &p, v));
                    let required = o.get("required").and_then(|(p, v)| boolean(cx, &p, v)).unwrap_or(true);
                    o.done(cx, &[("format", "")]);
                    let Some(file) = file else {
                        cx.err(&ip, "path is required");
                        continue;
                    };
                    (file, required)
                }
                other => match string(cx, &ip, other) {
                    Some(f) => (f, true),
                    None => continue,
                },
            };
            let full = cx.opts.base_dir.join(&file);
            match (cx.opts.read_file)(&full) {
                Ok(text) => match parse_env_file(&text) {
                    Ok(vars) => {
                        for (k, v) in vars {
                            put(cx, k, v);
                        }
                    }
                    Err(e) => cx.err(&ip, format!("{}: {e}", full.display())),
                },
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => cx.err(&ip, format!("cannot read {}: {e}", full.display())),
            }
        }
    }
    if let Some((p, v)) = environment {
        for (k, v) in key_values(cx, &p, v) {
            put(cx, k, v);
        }
    }
    out
}

fn healthcheck(cx: &mut Cx<'_>, path: &str, v: &Value) -> Option<HealthCheck> {
    let mut o = Obj::new(cx, path, v)?;
    let mut h = HealthCheck::default();
    if let Some((p, v)) = o.get("test") {
        h.test = match v {
            Value::String(s) => vec!["CMD-SHELL".into(), s.clone()],
            other => strings(cx, &p, other),
        };
        if !matches!(h.test.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
            cx.err(&p, "a list starts with CMD, CMD-SHELL or NONE (or give a string, run by a shell)");
        }
    }
    if let Some((p, v)) = o.get("disable") {
        if boolean(cx, &p, v) == Some(true) {
            h.test = vec!["NONE".into()];
        }
    }
    if let Some((p, v)) = o.get("interval") {
        h.interval = duration(cx, &p, v).unwrap_or(h.interval);
    }
    if let Some((p, v)) = o.get("timeout") {
        h.timeout = duration(cx, &p, v).unwrap_or(h.timeout);
    }
    if let Some((p, v)) = o.get("start_period") {
        h.start_period = duration(cx, &p, v).unwrap_or(h.start_period);
    }
    if let Some((p, v)) = o.get("retries") {
        h.retries = uint(cx, &p, v).and_then(|r| u32::try_from(r).ok()).unwrap_or(h.retries);
    }
    o.done(cx, &[("start_interval", "")]);
    if h.test.is_empty() {
        cx.err(path, "test is required (or disable: true)");
        return None;
    }
    Some(h)
}

fn port_number(cx: &mut Cx<'_>, path: &str, s: &str) -> Option<u16> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Some(p),
        _ => {
            cx.err(path, format!("invalid port {s:?}"));
            None
        }
    }
}

/// `8080` or `8080-8081`.
fn port_range(cx: &mut Cx<'_>, path: &str, s: &str) -> Option<Vec<u16>> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(cx, path, a)?, port_number(cx, path, b)?);
            if a > b {
                cx.err(path, format!("invalid port range {s:?}"));
                return None;
            }
            Some((a..=b).collect())
        }
        None => Some(vec![port_number(cx, path, s)?]),
    }
}

fn protocol(cx: &mut Cx<'_>, path: &str, s: &str) -> Option<Protocol> {
    match s {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => {
            cx.err(path, format!("protocol {s:?} is not supported (tcp or udp)"));
            None
        }
    }
}

const NO_RANDOM_PORT: &str = "publishes the port on a port of Swarm's choosing, which Shoal does not do: give PUBLISHED:TARGET (or published: in the long form)";

/// Ports publish through the routing mesh unless the long form says `mode: host`, as in Swarm.
fn ports(cx: &mut Cx<'_>, path: &str, v: &Value) -> Vec<PortConfig> {
    let Value::Sequence(items) = v else {
        cx.err(path, format!("expected a list, got {}", show(v)));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        match item {
            Value::Mapping(_) => {
                let Some(mut o) = Obj::new(cx, &ip, item) else { continue };
                let target = o
                    .get("target")
                    .and_then(|(p, v)| string(cx, &p, v))
                    .and_then(|s| port_number(cx, &ip, &s));
                let published = o.get("published").and_then(|(p, v)| {
                    let s = string(cx, &p, v)?;
                    if s.contains('-') {
                        cx.err(&p, "a range of published ports needs the short form (8000-8001:80-81)");
                        return None;
                    }
                    port_number(cx, &p, &s)
                });
                let proto = o
                    .get("protocol")
                    .and_then(|(p, v)| string(cx, &p, v).and_then(|s| protocol(cx, &p, &s)))
                    .unwrap_or_default();
                let mode = o
                    .get("mode")
                    .and_then(|(p, v)| {
                        choice(cx, &p, v, &[("ingress", PublishMode::Ingress), ("host", PublishMode::Host)])
                    })
                    .unwrap_or(PublishMode::Ingress);
                o.done(cx, &[("host_ip", ""), ("name", ""), ("app_protocol", "")]);
                match (target, published) {
                    (None, _) => cx.err(&ip, "target is required"),
                    (Some(_), None) => cx.err(&ip, NO_RANDOM_PORT),
                    (Some(target), Some(published)) => {
                        out.push(PortConfig { published, target, protocol: proto, mode })
                    }
                }
            }
            other => {
                let Some(s) = string(cx, &ip, other) else { continue };
                let (spec, proto) = match s.rsplit_once('/') {
                    Some((spec, proto)) => (spec, protocol(cx, &ip, proto)),
                    None => (s.as_str(), Some(Protocol::Tcp)),
                };
                let Some(proto) = proto else { continue };
                let parts: Vec<&str> = spec.split(':').collect();
                let (published, target) = match parts.as_slice() {
                    [_] => {
                        cx.err(&ip, format!("{s:?} {NO_RANDOM_PORT}"));
                        continue;
                    }
                    [p, t] => (*p, *t),
                    _ => {
                        cx.err(&ip, format!("{s:?}: a host address to publish on is not supported by Shoal"));
                        continue;
                    }
                };
                let (Some(published), Some(target)) =
                    (port_range(cx, &ip, published), port_range(cx, &ip, target))
                else {
                    continue;
                };
                if published.len() != target.len() {
                    cx.err(&ip, format!("{s:?}: the published and target ranges differ in length"));
                    continue;
                }
                for (p, t) in published.into_iter().zip(target) {
                    out.push(PortConfig {
                        published: p,
                        target: t,
                        protocol: proto,
                        mode: PublishMode::Ingress,
                    });
                }
            }
        }
    }
    out
}

fn attachments(
    cx: &mut Cx<'_>,
    path: &str,
    v: Option<(String, &Value)>,
    refs: &Refs<'_>,
    used: &mut Used,
) -> Vec<NetworkAttachmentConfig> {
    let mut wanted: Vec<(String, String, Vec<String>)> = Vec::new(); // (path, key, aliases)
    match v {
        None => wanted.push((format!("{path}.networks"), "default".into(), Vec::new())),
        Some((p, v)) => {
            let Value::Mapping(m) = merge::network_list(v.clone()) else {
                cx.err(&p, format!("expected a list or a mapping, got {}", show(v)));
                return Vec::new();
            };
            for (k, val) in &m {
                let Some(key) = string(cx, &p, k) else { continue };
                let np = format!("{p}.{key}");
                let mut aliases = Vec::new();
                if let Some(mut o) = Obj::new(cx, &np, val) {
                    if let Some((ap, av)) = o.get("aliases") {
                        aliases = strings(cx, &ap, av);
                    }
                    o.done(
                        cx,
                        &[
                            ("ipv4_address", "addresses are allocated by the managers"),
                            ("ipv6_address", ""),
                            ("link_local_ips", ""),
                            ("mac_address", ""),
                            ("priority", ""),
                            ("gw_priority", ""),
                            ("driver_opts", ""),
                            ("interface_name", ""),
                        ],
                    );
                }
                wanted.push((np, key, aliases));
            }
        }
    }
    let mut out = Vec::new();
    for (p, key, aliases) in wanted {
        match refs.nets.iter().find(|(k, _)| *k == key) {
            None => cx.err(&p, format!("network {key} is not declared in the top-level networks")),
            Some((_, n)) => {
                used.nets.insert(key.clone());
                let target = match n {
                    Net::Stack(_) => key,
                    Net::External(real) => real.clone(),
                };
                out.push(NetworkAttachmentConfig { target, aliases });
            }
        }
    }
    out
}

fn mounts(cx: &mut Cx<'_>, path: &str, v: &Value, refs: &Refs<'_>, used: &mut Used) -> Vec<Mount> {
    let Value::Sequence(items) = v else {
        cx.err(path, format!("expected a list, got {}", show(v)));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let (kind, source, target, readonly) = match item {
            Value::Mapping(_) => {
                let Some(mut o) = Obj::new(cx, &ip, item) else { continue };
                let kind = o
                    .get("type")
                    .and_then(|(p, v)| {
                        choice(
                            cx,
                            &p,
                            v,
                            &[
                                ("bind", Some(MountType::Bind)),
                                ("volume", Some(MountType::Volume)),
                                ("tmpfs", None),
                                ("npipe", None),
                                ("cluster", None),
                                ("image", None),
                            ],
                        )
                    })
                    .unwrap_or(Some(MountType::Volume));
                let source = o.get("source").and_then(|(p, v)| string(cx, &p, v));
                let target = o.get("target").and_then(|(p, v)| string(cx, &p, v));
                let readonly = o.get("read_only").and_then(|(p, v)| boolean(cx, &p, v)).unwrap_or(false);
                o.done(
                    cx,
                    &[("bind", ""), ("volume", ""), ("tmpfs", ""), ("image", ""), ("consistency", "")],
                );
                let Some(kind) = kind else {
                    cx.err(&format!("{ip}.type"), "only bind and volume mounts");
                    continue;
                };
                let (Some(source), Some(target)) = (source, target) else {
                    cx.err(&ip, "source and target are required (anonymous volumes are not supported)");
                    continue;
                };
                (Some(kind), source, target, readonly)
            }
            other => {
                let Some(s) = string(cx, &ip, other) else { continue };
                let parts: Vec<&str> = s.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [src, dst] => (*src, *dst, None),
                    [src, dst, mode] => (*src, *dst, Some(*mode)),
                    [_] => {
                        cx.err(
                            &ip,
                            format!("{s:?}: anonymous volumes are not supported (name a volume: NAME:{s})"),
                        );
                        continue;
                    }
                    _ => {
                        cx.err(&ip, format!("{s:?}: expected SOURCE:TARGET[:ro|rw]"));
                        continue;
                    }
                };
                let readonly = match mode {
                    None | Some("rw") => false,
                    Some("ro") => true,
                    Some(m) => {
                        cx.err(&ip, format!("volume option {m:?} is not supported by Shoal (ro or rw)"));
                        continue;
                    }
                };
                (None, source.to_string(), target.to_string(), readonly)
            }
        };
        // The short form's kind comes from the source: a path is a bind mount.
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        let kind = kind.unwrap_or(if is_path { MountType::Bind } else { MountType::Volume });
        let source = match kind {
            MountType::Bind => {
                if source.starts_with('~') {
                    cx.err(&ip, format!("{source:?}: write the home directory's path out"));
                    continue;
                }
                clean(&cx.opts.base_dir.join(&source)).display().to_string()
            }
            MountType::Volume => match refs.vols.iter().find(|(k, _)| *k == source) {
                None => {
                    cx.err(&ip, format!("volume {source} is not declared in the top-level volumes"));
                    continue;
                }
                Some((key, vol)) => {
                    used.vols.insert(key.clone());
                    match vol {
                        Vol::Stack => source,
                        Vol::Named(real) => real.clone(),
                    }
                }
            },
        };
        out.push(Mount { kind, source, target, readonly });
    }
    out
}

/// `path` without `.` and `..` components (lexically; nothing is resolved on disk).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn depends_on(cx: &mut Cx<'_>, path: &str, v: &Value) -> Vec<Dependency> {
    let Value::Mapping(m) = merge::depends_on(v.clone()) else {
        cx.err(path, format!("expected a list or a mapping, got {}", show(v)));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, val) in &m {
        let Some(service) = string(cx, path, k) else { continue };
        let dp = format!("{path}.{service}");
        let Some(mut o) = Obj::new(cx, &dp, val) else { continue };
        let condition = o
            .get("condition")
            .and_then(|(p, v)| {
                let s = string(cx, &p, v)?;
                match s.as_str() {
                    "service_started" => Some(DependencyCondition::Started),
                    "service_healthy" => Some(DependencyCondition::Healthy),
                    "service_completed_successfully" => {
                        cx.err(&p, "service_completed_successfully is not supported by Shoal (service_started or service_healthy)");
                        None
                    }
                    other => {
                        cx.err(&p, format!("{other:?} is not one of service_started, service_healthy"));
                        None
                    }
                }
            })
            .unwrap_or_default();
        if let Some((p, v)) = o.get("restart") {
            if boolean(cx, &p, v) == Some(true) {
                cx.err(&p, "restarting dependents when a dependency is updated is not supported by Shoal");
            }
        }
        if let Some((p, v)) = o.get("required") {
            if boolean(cx, &p, v) == Some(false) {
                cx.err(&p, "optional dependencies are not supported by Shoal");
            }
        }
        o.done(cx, &[]);
        out.push(Dependency { service, condition });
    }
    out
}

fn deploy(cx: &mut Cx<'_>, path: &str, v: &Value, spec: &mut ServiceSpec) {
    let Some(mut o) = Obj::new(cx, path, v) else { return };
    let mode = o
        .get("mode")
        .and_then(|(p, v)| {
            choice(cx, &p, v, &[("replicated", 0), ("global", 1), ("replicated-job", 2), ("global-job", 3)])
        })
        .unwrap_or(0);
    let replicas = o.get("replicas").and_then(|(p, v)| uint(cx, &p, v));
    spec.mode = match (mode, replicas) {
        (0, r) => ServiceMode::Replicated { replicas: r.unwrap_or(1) },
        (2, r) => {
            ServiceMode::ReplicatedJob { max_concurrent: r.unwrap_or(1), total_completions: r.unwrap_or(1) }
        }
        (m, r) => {
            if r.is_some() {
                cx.err(&format!("{path}.replicas"), "replicas is only for the replicated modes");
            }
            if m == 1 {
                ServiceMode::Global
            } else {
                ServiceMode::GlobalJob
            }
        }
    };
    if let Some((p, v)) = o.get("endpoint_mode") {
        if let Some(m) = choice(cx, &p, v, &[("vip", EndpointMode::Vip), ("dnsrr", EndpointMode::Dnsrr)]) {
            spec.endpoint.mode = m;
        }
    }
    if let Some((p, v)) = o.get("labels") {
        spec.labels = key_values(cx, &p, v).into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    }
    let t = &mut spec.task_template;
    if let Some((p, v)) = o.get("resources") {
        if let Some(mut r) = Obj::new(cx, &p, v) {
            if let Some((lp, lv)) = r.get("limits") {
                if let Some(mut l) = Obj::new(cx, &lp, lv) {
                    let lim = &mut t.resources.limits;
                    lim.nano_cpus = l.get("cpus").and_then(|(p, v)| cpus(cx, &p, v)).unwrap_or_default();
                    lim.memory_bytes =
                        l.get("memory").and_then(|(p, v)| bytes(cx, &p, v)).unwrap_or_default();
                    lim.pids = l.get("pids").and_then(|(p, v)| uint(cx, &p, v)).unwrap_or_default();
                    l.done(cx, &[]);
                }
            }
            if let Some((rp, rv)) = r.get("reservations") {
                if let Some(mut res) = Obj::new(cx, &rp, rv) {
                    let want = &mut t.resources.reservations;
                    want.nano_cpus = res.get("cpus").and_then(|(p, v)| cpus(cx, &p, v)).unwrap_or_default();
                    want.memory_bytes =
                        res.get("memory").and_then(|(p, v)| bytes(cx, &p, v)).unwrap_or_default();
                    if let Some((gp, gv)) = res.get("generic_resources") {
                        want.generic = generic_resources(cx, &gp, gv);
                    }
                    res.done(cx, &[("devices", "reserve generic resources (generic_resources) instead")]);
                }
            }
            r.done(cx, &[]);
        }
    }
    if let Some((p, v)) = o.get("placement") {
        if let Some(mut pl) = Obj::new(cx, &p, v) {
            if let Some((cp, cv)) = pl.get("constraints") {
                t.placement.constraints = strings(cx, &cp, cv);
            }
            if let Some((pp, pv)) = pl.get("preferences") {
                let items: Vec<&Value> = match pv {
                    Value::Sequence(items) => items.iter().collect(),
                    other => vec![other],
                };
                for (i, item) in items.into_iter().enumerate() {
                    let ip = format!("{pp}[{i}]");
                    if let Some(mut x) = Obj::new(cx, &ip, item) {
                        match x.get("spread").and_then(|(p, v)| string(cx, &p, v)) {
                            Some(spread) => t.placement.preferences.push(PlacementPreference { spread }),
                            None => cx.err(&ip, "spread is required"),
                        }
                        x.done(cx, &[]);
                    }
                }
            }
            if let Some((mp, mv)) = pl.get("max_replicas_per_node") {
                t.placement.max_replicas_per_node = uint(cx, &mp, mv).unwrap_or_default();
            }
            pl.done(cx, &[]);
        }
    }
    if let Some((p, v)) = o.get("restart_policy") {
        if let Some(mut r) = Obj::new(cx, &p, v) {
            let rp = &mut t.restart_policy;
            if let Some((cp, cv)) = r.get("condition") {
                let conditions = [
                    ("none", RestartCondition::None),
                    ("on-failure", RestartCondition::OnFailure),
                    ("any", RestartCondition::Any),
                ];
                rp.condition = choice(cx, &cp, cv, &conditions).unwrap_or(rp.condition);
            }
            if let Some((dp, dv)) = r.get("delay") {
                rp.delay = duration(cx, &dp, dv).unwrap_or(rp.delay);
            }
            if let Some((mp, mv)) = r.get("max_attempts") {
                rp.max_attempts = uint(cx, &mp, mv).unwrap_or(rp.max_attempts);
            }
            if let Some((wp, wv)) = r.get("window") {
                rp.window = duration(cx, &wp, wv).unwrap_or(rp.window);
            }
            r.done(cx, &[]);
        }
    }
    if let Some((p, v)) = o.get("update_config") {
        update_config(cx, &p, v, &mut spec.update_config);
    }
    if let Some((p, v)) = o.get("rollback_config") {
        update_config(cx, &p, v, &mut spec.rollback_config);
    }
    o.done(cx, &[]);
}

fn generic_resources(cx: &mut Cx<'_>, path: &str, v: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Value::Sequence(items) = v else {
        cx.err(path, format!("expected a list, got {}", show(v)));
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let Some(mut o) = Obj::new(cx, &ip, item) else { continue };
        if let Some((dp, dv)) = o.get("discrete_resource_spec") {
            if let Some(mut d) = Obj::new(cx, &dp, dv) {
                let kind = d.get("kind").and_then(|(p, v)| string(cx, &p, v));
                let value = d.get("value").and_then(|(p, v)| uint(cx, &p, v));
                d.done(cx, &[]);
                match (kind, value) {
                    (Some(k), Some(n)) => {
                        out.insert(k, n);
                    }
                    _ => cx.err(&dp, "kind and value are required"),
                }
            }
        }
        o.done(cx, &[("named_resource_spec", "reserve a count with discrete_resource_spec")]);
    }
    out
}

fn update_config(cx: &mut Cx<'_>, path: &str, v: &Value, u: &mut UpdateConfig) {
    let Some(mut o) = Obj::new(cx, path, v) else { return };
    if let Some((p, v)) = o.get("parallelism") {
        // Swarm's 0 is "all at once".
        u.parallelism = match uint(cx, &p, v) {
            Some(0) => shoal_types::validate::MAX_REPLICAS,
            Some(n) => n,
            None => u.parallelism,
        };
    }
    if let Some((p, v)) = o.get("delay") {
        u.delay = duration(cx, &p, v).unwrap_or(u.delay);
    }
    if let Some((p, v)) = o.get("failure_action") {
        let actions = [
            ("pause", FailureAction::Pause),
            ("continue", FailureAction::Continue),
            ("rollback", FailureAction::Rollback),
        ];
        u.failure_action = choice(cx, &p, v, &actions).unwrap_or(u.failure_action);
    }
    if let Some((p, v)) = o.get("monitor") {
        u.monitor = duration(cx, &p, v).unwrap_or(u.monitor);
    }
    if let Some((p, v)) = o.get("max_failure_ratio") {
        u.max_failure_ratio = float(cx, &p, v).unwrap_or(u.max_failure_ratio);
    }
    if let Some((p, v)) = o.get("order") {
        let orders = [("stop-first", UpdateOrder::StopFirst), ("start-first", UpdateOrder::StartFirst)];
        u.order = choice(cx, &p, v, &orders).unwrap_or(u.order);
    }
    o.done(cx, &[]);
}
