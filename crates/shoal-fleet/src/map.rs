//! A parsed unit mapped to a Shoal service: [`to_service`]. The table of what maps to what is
//! in the crate's documentation; this module is its implementation.

use crate::error::FleetError;
use crate::exec::{
    docker_housekeeping, docker_verb, normalize_image, parse_bytes, parse_exec, DockerRun, ExecCommand,
};
use crate::unit::{Entry, UnitFile, UnitName};
use serde::{Deserialize, Serialize};
use shoal_types::container::LOG_DRIVERS;
use shoal_types::{
    parse_cpus, Constraint, LogDriver, RestartCondition, ServiceMode, ServiceSpec, TaskTemplate, Ulimit,
    DEFAULT_STOP_GRACE_PERIOD,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// A unit mapped to a Shoal service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mapped {
    pub spec: ServiceSpec,
    /// The unit's `[X-Fleet]` placement, whole, as it is also expressed in
    /// `spec.task_template.placement`: metadata as constraints (`==`, or `in (…)` for a key with
    /// several values), `Conflicts=` as `conflicts`, `MachineOf=` as `colocate`, `MachineID=` as
    /// a `node.id` constraint.
    pub placement: FleetPlacement,
    /// Settings of the unit that the service does not honour, one sentence each, naming the
    /// directive and its line.
    pub warnings: Vec<String>,
}

/// fleet's scheduling options (`[X-Fleet]`, deprecated `X-Condition…` spellings included), with
/// fleet's specifiers expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetPlacement {
    /// `MachineID=`: the machine (fleet: its `/etc/machine-id`) the unit must run on.
    pub machine_id: Option<String>,
    /// `MachineMetadata=`: key → the values allowed for it (any of them); every key must match.
    pub metadata: BTreeMap<String, Vec<String>>,
    /// `MachineOf=`: units whose machine this one must run on.
    pub machine_of: Vec<String>,
    /// `Conflicts=`: globs of unit names that may not share a machine with this one.
    pub conflicts: Vec<String>,
    /// `Global=true`: one task on every eligible machine.
    pub global: bool,
}

/// The label that keeps the unit's name (`web@1.service`): the way back from a service.
pub const LABEL_UNIT: &str = "fleet.unit";
/// The label that keeps `[Unit] Description=`.
pub const LABEL_DESCRIPTION: &str = "fleet.description";

/// The Shoal service name of a unit: the name without `.service`, `@` and every other character
/// a service name cannot have (`.`, `:`, `\xNN` escapes decoded first) written `-`, without
/// leading or trailing `-`/`_`. `web@1.service` → `web-1`, `api.v2.service` → `api-v2`. Several
/// units can give the same name (`web@1` and `web-1`); the [`LABEL_UNIT`] label tells them apart.
pub fn service_name(unit: &UnitName) -> Result<String, FleetError> {
    let mut out = String::new();
    let mut rest = unit.stem();
    while let Some(c) = rest.chars().next() {
        let hex =
            rest.strip_prefix("\\x").and_then(|h| h.get(..2)).and_then(|h| u8::from_str_radix(h, 16).ok());
        let (c, len) = match hex {
            Some(b) => (char::from(b), 4),
            None => (c, c.len_utf8()),
        };
        out.push(if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' });
        rest = &rest[len..];
    }
    let name = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let err = |message: String| FleetError::Name { name: unit.full.clone(), message };
    if name.is_empty() {
        return Err(err("has no letters or digits to make a service name of".into()));
    }
    if name.len() > 63 {
        return Err(err(format!(
            "the service name {name:?} would be longer than 63 characters: rename the unit"
        )));
    }
    Ok(name.to_string())
}

/// Parses a systemd time span: `5` (seconds), `5s`, `1min 30s`, `2h`, `500ms`, `1.5s`.
pub fn parse_timespan(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid time span {s:?} (e.g. 5, 5s, 1min 30s, 500ms)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..end];
        rest = rest[end..].trim_start();
        let end = rest.find(|c: char| !(c.is_alphabetic())).unwrap_or(rest.len());
        let unit = &rest[..end];
        rest = rest[end..].trim_start();
        let nanos: u128 = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000_000,
            "us" | "usec" | "µs" => 1_000,
            "ms" | "msec" => 1_000_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            "w" | "week" | "weeks" => 604_800_000_000_000,
            "M" | "month" | "months" => 2_629_800_000_000_000,
            "y" | "year" | "years" => 31_557_600_000_000_000,
            _ => return Err(err()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(err());
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err())? };
        let mut part = 0u128;
        let mut scale = 1u128;
        for d in frac.bytes().take(9) {
            part = part * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = total.saturating_add(int.saturating_mul(nanos)).saturating_add(part * nanos / scale);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// The systemd directives this mapping reads, per section; every other one is reported.
#[rustfmt::skip]
const UNIT_KEYS: &[&str] = &[
    "Description", "After", "Before", "Requires", "Wants", "BindsTo", "PartOf", "Requisite",
    "StartLimitBurst", "StartLimitIntervalSec", "StartLimitInterval",
];
#[rustfmt::skip]
const SERVICE_KEYS: &[&str] = &[
    "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload", "ExecCondition",
    "Type", "Restart", "RestartSec", "TimeoutStopSec", "TimeoutSec", "Environment", "EnvironmentFile",
    "StartLimitBurst", "StartLimitIntervalSec", "StartLimitInterval",
];
/// Settings of the process systemd starts: for a `docker run` unit that is the docker client,
/// not the container.
const PROCESS_KEYS: &[(&str, &str)] = &[
    ("User", "--user"),
    ("Group", "--user USER:GROUP"),
    ("SupplementaryGroups", "--group-add"),
    ("WorkingDirectory", "--workdir"),
    ("MemoryLimit", "--memory"),
    ("MemoryMax", "--memory"),
    ("CPUQuota", "--cpus"),
    ("TasksMax", "--pids-limit"),
];
const HOOKS: &[&str] =
    &["ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload", "ExecStop", "ExecStopPost"];
#[rustfmt::skip]
const FLEET_KEYS: &[&str] = &[
    "MachineID", "MachineOf", "MachineMetadata", "Conflicts", "Global", "Replaces", "X-ConditionMachineID",
    "X-ConditionMachineOf", "X-ConditionMachineMetadata", "X-Conflicts", "X-ConditionMachineBootID",
];
/// Dependencies every node satisfies for Shoal's tasks: not worth a warning.
const BOILERPLATE_DEPS: &[&str] = &["network.target", "network-online.target"];
const DOCKER_DEPS: &[&str] = &["docker.service", "docker.socket"];

/// `LimitNOFILE=` → the `nofile` ulimit.
fn ulimit_name(key: &str) -> Option<String> {
    let name = key.strip_prefix("Limit")?.to_ascii_lowercase();
    shoal_types::container::ULIMIT_NAMES.contains(&name.as_str()).then_some(name)
}

struct Cx<'a> {
    unit: &'a UnitName,
    /// With the line each is about (0: the whole unit).
    warnings: Vec<(usize, String)>,
    problems: Vec<(usize, String)>,
}

impl Cx<'_> {
    fn warn(&mut self, line: usize, m: String) {
        self.warnings.push((line, m));
    }
    fn refuse(&mut self, section: &str, e: &Entry, m: impl std::fmt::Display) {
        self.problems.push((e.line, format!("line {}: {section}.{}: {m}", e.line, e.key)));
    }
    /// Warnings and refusals in the order of the lines they are about.
    fn sorted(list: Vec<(usize, String)>) -> Vec<String> {
        let mut list = list;
        list.sort_by_key(|(line, _)| *line);
        list.into_iter().map(|(_, m)| m).collect()
    }
    /// The value with systemd's specifiers expanded; `None` (refused) where one cannot be.
    fn expand(&mut self, section: &str, e: &Entry) -> Option<String> {
        match self.unit.expand(&e.value) {
            Ok(v) => Some(v),
            Err(m) => {
                self.refuse(section, e, m);
                None
            }
        }
    }
}

fn last<'a>(unit: &'a UnitFile, section: &'a str, key: &str) -> Option<&'a Entry> {
    unit.entries(section).filter(|e| e.key == key).last()
}

/// Maps a parsed unit named `name` (`web@1.service`) to a Shoal service. Every setting is either
/// honoured, reported in [`Mapped::warnings`], or refused ([`FleetError::Refused`], listing all
/// the refusals with their lines); the result passes `ServiceSpec::validate`.
pub fn to_service(unit: &UnitFile, name: &str) -> Result<Mapped, FleetError> {
    let uname = UnitName::parse(name)?;
    if uname.is_template() {
        return Err(FleetError::Name {
            name: name.into(),
            message: format!(
                "is a template: fleet runs its instances; map an instance such as {}@1.service",
                uname.prefix
            ),
        });
    }
    let mut cx = Cx { unit: &uname, warnings: Vec::new(), problems: Vec::new() };
    let mut spec = ServiceSpec { name: service_name(&uname)?, ..Default::default() };
    spec.labels.insert(LABEL_UNIT.into(), name.into());

    // Directives nobody reads are reported, in file order.
    for s in &unit.sections {
        for e in &s.entries {
            let known = match s.name.as_str() {
                "Install" => true,
                "Unit" => UNIT_KEYS.contains(&e.key.as_str()),
                "Service" => {
                    SERVICE_KEYS.contains(&e.key.as_str())
                        || PROCESS_KEYS.iter().any(|(k, _)| *k == e.key)
                        || ulimit_name(&e.key).is_some()
                }
                "X-Fleet" => {
                    if !FLEET_KEYS.contains(&e.key.as_str()) {
                        cx.refuse("X-Fleet", e, "unknown fleet option (fleet refuses it too)");
                    }
                    true
                }
                _ => false,
            };
            if !known {
                cx.warn(
                    e.line,
                    format!("unsupported directive {}.{} (line {}) ignored", s.name, e.key, e.line),
                );
            }
        }
    }

    // Environment=: the started process's environment (for docker run, the client's).
    let mut env = BTreeMap::new();
    let mut env_lines: BTreeMap<String, usize> = BTreeMap::new();
    for e in unit.list("Service", "Environment") {
        let Some(v) = cx.expand("Service", e) else { continue };
        match crate::exec::split_words(&v) {
            Ok(words) => {
                for w in words {
                    match w.split_once('=') {
                        Some((k, v)) if valid_env_name(k) => {
                            env.insert(k.to_string(), v.to_string());
                            env_lines.insert(k.to_string(), e.line);
                        }
                        _ => cx.refuse("Service", e, format!("expected NAME=VALUE assignments, found {w:?}")),
                    }
                }
            }
            Err(m) => cx.refuse("Service", e, m),
        }
    }

    // ExecStart=: the one command.
    let starts = unit.list("Service", "ExecStart");
    let oneshot = last(unit, "Service", "Type").is_some_and(|t| t.value == "oneshot");
    let mut exec: Option<(&Entry, ExecCommand)> = None;
    match starts.as_slice() {
        [] => cx.problems.push((0, "[Service] has no ExecStart=: there is no command to run".into())),
        [e] => {
            if let Some(v) = cx.expand("Service", e) {
                match parse_exec(&v, &env) {
                    Ok(c) => exec = Some((e, c)),
                    Err(m) => cx.refuse("Service", e, m),
                }
            }
        }
        [_, second, ..] => {
            let why = if oneshot {
                "several ExecStart= lines, run one after the other: a Shoal task runs one command (join them in a script)"
            } else {
                "several ExecStart= lines (systemd allows that only with Type=oneshot)"
            };
            cx.refuse("Service", second, why);
        }
    }

    let mut docker: Option<DockerRun> = None;
    let t = &mut spec.task_template;
    if let Some((e, c)) = &exec {
        let p = &c.prefix;
        if p.ignore_failure {
            cx.warn(e.line, format!(
                "Service.ExecStart (line {}): the '-' prefix (exit status ignored) is not honoured: a non-zero exit is a failure",
                e.line
            ));
        }
        if let Some(a0) = &c.argv0 {
            cx.warn(e.line, format!(
                "Service.ExecStart (line {}): the '@' prefix is not honoured: the process's argv[0] is its program, not {a0:?}",
                e.line
            ));
        }
        match docker_verb(&c.argv) {
            Some(("run", args)) => match DockerRun::parse(args, &env) {
                Ok(run) => docker = Some(run),
                Err(m) => cx.refuse("Service", e, format!("docker run: {m}")),
            },
            verb => {
                if let Some((v, _)) = verb {
                    cx.warn(e.line, format!(
                        "Service.ExecStart (line {}) runs docker {v}, not docker run: mapped to the process driver (docker must be on the node)",
                        e.line
                    ));
                }
                t.driver = Some(shoal_types::service::PROCESS_DRIVER.into());
                t.command = c.argv.clone();
            }
        }
        if (p.full_privileges || p.elevated) && docker.is_none() && last(unit, "Service", "User").is_some() {
            let which = if p.full_privileges {
                "'+' (full privileges): User= is not applied"
            } else {
                "'!' (raised privileges) is not honoured: the command runs as User= with its usual privileges"
            };
            cx.warn(e.line, format!("Service.ExecStart (line {}): the prefix {which}", e.line));
        }
    }
    let privileged = exec.as_ref().is_some_and(|(_, c)| c.prefix.full_privileges);

    if let (Some(run), Some((e, c))) = (&docker, &exec) {
        map_docker(&mut cx, &mut spec, run, e);
        // The docker client's environment only feeds the command line.
        let unused =
            env_lines.iter().filter(|(k, _)| !c.env_used.contains(k) && !run.client_env_used.contains(k));
        for (k, &l) in unused {
            cx.warn(l, format!(
                "Service.Environment (line {l}): {k} is the docker client's environment, not the container's: ignored (pass it with docker run -e)"
            ));
        }
        for e in unit.list("Service", "EnvironmentFile") {
            cx.warn(
                e.line,
                format!(
                    "Service.EnvironmentFile (line {}) sets the docker client's environment: ignored",
                    e.line
                ),
            );
        }
        for s in unit.sections.iter().filter(|s| s.name == "Service") {
            for e in &s.entries {
                let hint = PROCESS_KEYS.iter().find(|(k, _)| *k == e.key).map(|(_, h)| *h);
                let hint = hint.or_else(|| ulimit_name(&e.key).map(|_| "--ulimit"));
                if let Some(h) = hint {
                    cx.warn(e.line, format!(
                        "Service.{} (line {}) applies to the docker client, not the container: ignored (use docker run {h})",
                        e.key, e.line
                    ));
                }
            }
        }
    } else {
        for e in unit.list("Service", "EnvironmentFile") {
            cx.refuse(
                "Service",
                e,
                "the file is read on the node when the unit starts and cannot be read when importing: \
                 copy its variables into Environment= lines",
            );
        }
        if exec.is_some() {
            spec.task_template.env = env.clone();
            map_process(&mut cx, unit, &mut spec.task_template, privileged);
        }
    }

    let docker_stop = map_hooks(&mut cx, unit, &env, docker.as_ref(), &mut spec.task_template);
    let placement = map_fleet(&mut cx, unit, &mut spec);
    map_type_and_restart(&mut cx, unit, &mut spec, docker.as_ref(), placement.global, docker_stop);
    map_unit_section(&mut cx, unit, &mut spec, docker.is_some());

    if !cx.problems.is_empty() {
        return Err(FleetError::Refused { unit: name.into(), problems: Cx::sorted(cx.problems) });
    }
    spec.validate().map_err(|source| FleetError::Invalid { unit: name.into(), source })?;
    Ok(Mapped { spec, placement, warnings: Cx::sorted(cx.warnings) })
}

fn valid_env_name(k: &str) -> bool {
    k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn map_docker(cx: &mut Cx<'_>, spec: &mut ServiceSpec, run: &DockerRun, e: &Entry) {
    if !run.unsupported.is_empty() {
        cx.refuse(
            "Service",
            e,
            format!("docker run options Shoal cannot honour: {}", run.unsupported.join(", ")),
        );
    }
    let t = &mut spec.task_template;
    // Shoal's docker driver gives a container a network of its own; the oci driver runs tasks
    // in the node's network, which is what --net=host asked for.
    t.driver = Some(if run.host_network && !run.tty { "oci" } else { "docker" }.into());
    if run.host_network && run.tty {
        cx.warn(e.line, format!(
            "Service.ExecStart (line {}): --net=host with --tty: only the docker driver gives a terminal, and it gives the container a network of its own (publish its ports with -p)",
            e.line
        ));
    }
    t.image = Some(run.image.clone());
    t.command = run.entrypoint.iter().cloned().collect();
    t.args = run.args.clone();
    t.env = run.env.clone();
    t.workdir = run.workdir.clone();
    t.user = run.user.clone();
    t.hostname = run.hostname.clone();
    t.mounts = run.mounts.clone();
    t.read_only = run.read_only;
    t.cap_add = run.cap_add.clone();
    t.cap_drop = run.cap_drop.clone();
    t.init = run.init;
    t.tty = run.tty;
    t.container_labels = run.labels.clone();
    t.dns = run.dns.clone();
    t.ulimits = run.ulimits.clone();
    t.groups = run.groups.clone();
    t.resources.limits = run.limits.clone();
    if let Some(d) = run.stop_timeout {
        t.stop_grace_period = d;
    }
    match &run.log_driver {
        Some(d) if LOG_DRIVERS.contains(&d.as_str()) => {
            t.log_driver = Some(LogDriver { name: d.clone(), options: run.log_opts.clone() })
        }
        Some(d) => cx.warn(e.line, format!(
            "Service.ExecStart (line {}): docker run --log-driver={d} is not honoured: Shoal keeps task logs itself (see shoal service logs)",
            e.line
        )),
        None => {}
    }
    if run.host_network && !run.ports.is_empty() {
        cx.warn(
            e.line,
            format!(
            "Service.ExecStart (line {}): the -p options are ignored, as docker ignores them with --net=host",
            e.line
        ),
        );
    } else {
        spec.endpoint.ports = run.ports.clone();
    }
}

/// User=, Group=, WorkingDirectory=, resource limits: settings of the process itself.
fn map_process(cx: &mut Cx<'_>, unit: &UnitFile, t: &mut TaskTemplate, privileged: bool) {
    let mut user = String::new();
    let mut group = None;
    for s in unit.sections.iter().filter(|s| s.name == "Service") {
        for e in &s.entries {
            let key = e.key.as_str();
            if !PROCESS_KEYS.iter().any(|(k, _)| *k == key) && ulimit_name(key).is_none() {
                continue;
            }
            // systemd expands specifiers in these, not in the resource settings.
            let v = if matches!(key, "User" | "Group" | "SupplementaryGroups" | "WorkingDirectory") {
                match cx.expand("Service", e) {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                e.value.clone()
            };
            match key {
                "User" => user = v,
                "Group" => group = Some(v).filter(|g| !g.is_empty()),
                "SupplementaryGroups" if v.is_empty() => t.groups.clear(),
                "SupplementaryGroups" => t.groups.extend(v.split_whitespace().map(str::to_string)),
                "WorkingDirectory" => {
                    let dir = v.strip_prefix('-').unwrap_or(&v);
                    if dir.starts_with('~') {
                        cx.refuse("Service", e, "the user's home directory cannot be resolved when importing: give an absolute path");
                    } else {
                        t.workdir = dir.to_string();
                    }
                }
                "MemoryLimit" | "MemoryMax" => match v.as_str() {
                    "" | "infinity" => t.resources.limits.memory_bytes = 0,
                    v if v.ends_with('%') => cx.refuse(
                        "Service",
                        e,
                        "a share of the node's memory cannot be mapped: give bytes (e.g. 512M)",
                    ),
                    v => match parse_bytes(v) {
                        Ok(b) => t.resources.limits.memory_bytes = b,
                        Err(m) => cx.refuse("Service", e, m),
                    },
                },
                "CPUQuota" => match v.strip_suffix('%').map(parse_cpus) {
                    _ if v.is_empty() => t.resources.limits.nano_cpus = 0,
                    Some(Ok(n)) => t.resources.limits.nano_cpus = n / 100,
                    _ => cx.refuse(
                        "Service",
                        e,
                        format!("expected a percentage of one CPU (e.g. 50%), found {v:?}"),
                    ),
                },
                "TasksMax" => match v.as_str() {
                    "" | "infinity" => t.resources.limits.pids = 0,
                    v => match v.parse::<u64>() {
                        Ok(n) => t.resources.limits.pids = n,
                        Err(_) => cx.refuse(
                            "Service",
                            e,
                            format!("expected a number of tasks or infinity, found {v:?}"),
                        ),
                    },
                },
                _ => {
                    let Some(name) = ulimit_name(key) else { continue };
                    let limit = |s: &str| match s {
                        "infinity" => Ok(-1),
                        s => parse_bytes(s).ok().and_then(|n| i64::try_from(n).ok()).ok_or(()),
                    };
                    let (soft, hard) = v.split_once(':').unwrap_or((&v, &v));
                    match (limit(soft), limit(hard)) {
                        (Ok(soft), Ok(hard)) => {
                            t.ulimits.retain(|u| u.name != name);
                            t.ulimits.push(Ulimit { name, soft, hard });
                        }
                        _ => cx.refuse(
                            "Service",
                            e,
                            format!("expected SOFT[:HARD] numbers or infinity, found {v:?}"),
                        ),
                    }
                }
            }
        }
    }
    if privileged {
        return;
    }
    t.user = match (user.as_str(), group) {
        (u, None) => u.to_string(),
        ("", Some(g)) => format!("0:{g}"),
        (u, Some(g)) => format!("{u}:{g}"),
    };
}

/// ExecStartPre=, ExecStop=…: Shoal has no hooks. A `docker run` unit's housekeeping around its
/// container (kill, rm, pull, stop) is what Shoal does itself and is dropped quietly; every other
/// command is reported.
fn map_hooks(
    cx: &mut Cx<'_>,
    unit: &UnitFile,
    env: &BTreeMap<String, String>,
    docker: Option<&DockerRun>,
    t: &mut TaskTemplate,
) -> bool {
    let mut docker_stop = false;
    for key in HOOKS {
        for e in unit.list("Service", key) {
            let expanded = cx.unit.expand(&e.value).ok();
            let cmd = expanded.as_deref().and_then(|v| parse_exec(v, env).ok());
            let housekeeping = cmd.as_ref().and_then(|c| docker_housekeeping(&c.argv));
            let ours = match (docker, &housekeeping) {
                (Some(run), Some(h)) if h.verb == "pull" => {
                    h.targets.iter().all(|i| normalize_image(i) == normalize_image(&run.image))
                }
                (Some(run), Some(h)) => h.targets.iter().all(|n| Some(n) == run.name.as_ref()),
                _ => false,
            };
            if ours {
                if let (Some(run), Some(h)) = (docker, housekeeping.filter(|h| h.verb == "stop")) {
                    // docker stop's grace: -t, else the container's --stop-timeout, else 10 s.
                    t.stop_grace_period =
                        h.stop_timeout.or(run.stop_timeout).unwrap_or(DEFAULT_STOP_GRACE_PERIOD);
                    docker_stop = true;
                }
                continue;
            }
            cx.warn(
                e.line,
                format!(
                    "Service.{key}={} (line {}) not run: Shoal has no start or stop hooks",
                    expanded.as_deref().unwrap_or(&e.value),
                    e.line
                ),
            );
        }
    }
    docker_stop
}

/// Type=, Restart=, RestartSec=, TimeoutStopSec=, StartLimit*: the mode and the restart policy.
fn map_type_and_restart(
    cx: &mut Cx<'_>,
    unit: &UnitFile,
    spec: &mut ServiceSpec,
    docker: Option<&DockerRun>,
    global: bool,
    docker_stop: bool,
) {
    let mut job = false;
    if let Some(e) = last(unit, "Service", "Type") {
        match e.value.as_str() {
            "simple" | "exec" | "idle" => {}
            "oneshot" => job = true,
            "forking" if docker.is_some() => cx.warn(e.line, format!(
                "Service.Type=forking (line {}): the container runs attached under Shoal (docker run -d is ignored)",
                e.line
            )),
            "forking" => cx.refuse(
                "Service",
                e,
                "Shoal supervises the command's own process: run it in the foreground (Type=simple)",
            ),
            "notify" | "dbus" => cx.warn(e.line, format!(
                "Service.Type={} (line {}): readiness notification is not supported: the task counts as running once started",
                e.value, e.line
            )),
            v => cx.refuse("Service", e, format!("unknown service type {v:?}")),
        }
    }
    spec.mode = match (global, job) {
        (false, false) => ServiceMode::Replicated { replicas: 1 },
        (false, true) => ServiceMode::ReplicatedJob { max_concurrent: 1, total_completions: 1 },
        (true, false) => ServiceMode::Global,
        (true, true) => ServiceMode::GlobalJob,
    };

    let rp = &mut spec.task_template.restart_policy;
    // systemd's default is Restart=no.
    rp.condition = RestartCondition::None;
    if let Some(e) = last(unit, "Service", "Restart") {
        rp.condition = match e.value.as_str() {
            "no" => RestartCondition::None,
            "always" if job => {
                cx.refuse(
                    "Service",
                    e,
                    "Restart=always is not allowed with Type=oneshot (systemd refuses it too)",
                );
                RestartCondition::None
            }
            "always" => RestartCondition::Any,
            "on-failure" => RestartCondition::OnFailure,
            "on-abnormal" | "on-abort" => {
                cx.warn(e.line, format!(
                    "Service.Restart={} (line {}) mapped to on-failure: Shoal also restarts after a non-zero exit status",
                    e.value, e.line
                ));
                RestartCondition::OnFailure
            }
            "on-watchdog" => {
                cx.warn(
                    e.line,
                    format!(
                        "Service.Restart=on-watchdog (line {}) mapped to no: Shoal has no watchdog",
                        e.line
                    ),
                );
                RestartCondition::None
            }
            "on-success" => {
                cx.refuse(
                    "Service",
                    e,
                    "restarting only after a clean exit has no Shoal equivalent (no, on-failure, always)",
                );
                RestartCondition::None
            }
            v => {
                cx.refuse("Service", e, format!("unknown restart setting {v:?}"));
                RestartCondition::None
            }
        };
    }
    if let Some((condition, attempts)) = docker.and_then(|d| d.restart) {
        let rank = |c: RestartCondition| match c {
            RestartCondition::None => 0,
            RestartCondition::OnFailure => 1,
            RestartCondition::Any => 2,
        };
        // The docker daemon restarts the container whatever systemd does: the more restarting
        // of the two is what ran.
        if rank(condition) > rank(rp.condition) {
            rp.condition = condition;
            rp.max_attempts = attempts;
        }
    }
    if let Some(e) = last(unit, "Service", "RestartSec") {
        match parse_timespan(&e.value) {
            Ok(d) => rp.delay = d,
            Err(m) => cx.refuse("Service", e, m),
        }
    }
    let burst = ["Unit", "Service"]
        .iter()
        .filter_map(|s| last(unit, s, "StartLimitBurst").map(|e| (*s, e)))
        .max_by_key(|(_, e)| e.line);
    let interval = ["Unit", "Service"]
        .iter()
        .flat_map(|s| ["StartLimitIntervalSec", "StartLimitInterval"].map(|k| (*s, k)))
        .filter_map(|(s, k)| last(unit, s, k).map(|e| (s, e)))
        .max_by_key(|(_, e)| e.line);
    if burst.is_some() || interval.is_some() {
        // systemd's defaults for the half not given: 5 starts in 10 s.
        let mut attempts = 5;
        let mut window = Duration::from_secs(10);
        if let Some((s, e)) = burst {
            match e.value.parse() {
                Ok(n) => attempts = n,
                Err(_) => cx.refuse(s, e, format!("expected a number, found {:?}", e.value)),
            }
        }
        if let Some((s, e)) = interval {
            match parse_timespan(&e.value) {
                Ok(d) => window = d,
                Err(m) => cx.refuse(s, e, m),
            }
        }
        // An interval of 0 turns the limit off.
        let rp = &mut spec.task_template.restart_policy;
        (rp.max_attempts, rp.window) =
            if window.is_zero() { (0, Duration::ZERO) } else { (attempts, window) };
    }
    let stop = last(unit, "Service", "TimeoutStopSec").or_else(|| last(unit, "Service", "TimeoutSec"));
    if let Some(e) = stop {
        if e.key == "TimeoutSec" {
            cx.warn(e.line, format!(
                "Service.TimeoutSec (line {}): only its stop timeout is honoured (Shoal has no start timeout)",
                e.line
            ));
        }
        match parse_timespan(&e.value) {
            _ if e.value == "infinity" || e.value.trim() == "0" => cx.refuse(
                "Service",
                e,
                "Shoal always kills a task after its stop grace period: give a time span",
            ),
            Ok(d) => {
                let t = &mut spec.task_template;
                // With ExecStop=docker stop, the container gets what docker stop gives it, within
                // the timeout; otherwise systemd's timeout is the grace period.
                t.stop_grace_period = if docker_stop { d.min(t.stop_grace_period) } else { d };
            }
            Err(m) => cx.refuse("Service", e, m),
        }
    }
}

/// [Unit]: the description, and dependencies Shoal does not honour.
fn map_unit_section(cx: &mut Cx<'_>, unit: &UnitFile, spec: &mut ServiceSpec, container: bool) {
    if let Some(e) = last(unit, "Unit", "Description") {
        spec.labels.insert(LABEL_DESCRIPTION.into(), cx.unit.expand_fleet(&e.value));
    }
    for e in unit.entries("Unit") {
        if !matches!(
            e.key.as_str(),
            "After" | "Before" | "Requires" | "Wants" | "BindsTo" | "PartOf" | "Requisite"
        ) {
            continue;
        }
        let value = cx.unit.expand_fleet(&e.value);
        let others: Vec<&str> = value
            .split_whitespace()
            .filter(|u| !(BOILERPLATE_DEPS.contains(u) || (container && DOCKER_DEPS.contains(u))))
            .collect();
        if !others.is_empty() {
            cx.warn(
                e.line,
                format!(
                    "Unit.{}={} (line {}) not honoured: Shoal does not order or bind services to each other",
                    e.key,
                    others.join(" "),
                    e.line
                ),
            );
        }
    }
}

/// Splits an `[X-Fleet]` value into words: whitespace separates, `"…"` and `'…'` group (fleet's
/// `MachineMetadata="a=b" "c=d"`); backslashes stay as written (unit names escape with them).
fn fleet_words(s: &str) -> Result<Vec<String>, String> {
    crate::exec::split_words_with(s, false)
}

/// `[X-Fleet]`: the placement, the constraints it makes, and fleet's rules on combining options.
fn map_fleet(cx: &mut Cx<'_>, unit: &UnitFile, spec: &mut ServiceSpec) -> FleetPlacement {
    let mut p = FleetPlacement::default();
    let mut lines: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in unit.entries("X-Fleet").filter(|e| FLEET_KEYS.contains(&e.key.as_str())) {
        let key = e.key.strip_prefix("X-Condition").or_else(|| e.key.strip_prefix("X-")).unwrap_or(&e.key);
        let words = match fleet_words(&cx.unit.expand_fleet(&e.value)) {
            Ok(w) => w,
            Err(m) => {
                cx.refuse("X-Fleet", e, m);
                continue;
            }
        };
        if words.is_empty() {
            continue;
        }
        lines.entry(key).or_insert(e);
        match key {
            "MachineID" => match (words.as_slice(), &p.machine_id) {
                ([id], None) => p.machine_id = Some(id.clone()),
                ([id], Some(old)) if id == old => {}
                ([_], Some(old)) => {
                    cx.refuse("X-Fleet", e, format!("a second machine ID (the first is {old})"))
                }
                _ => cx.refuse("X-Fleet", e, "expected one machine ID"),
            },
            "MachineOf" => p.machine_of.extend(words),
            "Conflicts" => p.conflicts.extend(words),
            "MachineMetadata" => {
                for w in words {
                    match w.split_once('=') {
                        Some((k, v)) if !k.is_empty() && !v.is_empty() && !v.contains('=') => {
                            let values = p.metadata.entry(k.to_string()).or_default();
                            if !values.iter().any(|x| x == v) {
                                values.push(v.to_string());
                            }
                        }
                        _ => cx.refuse("X-Fleet", e, format!("expected KEY=VALUE pairs, found {w:?}")),
                    }
                }
            }
            "Global" => match words.last().map(|w| w.to_ascii_lowercase()).as_deref() {
                Some("true" | "yes" | "1" | "on" | "t") => p.global = true,
                Some("false" | "no" | "0" | "off" | "f") => p.global = false,
                _ => cx.refuse("X-Fleet", e, format!("expected true or false, found {:?}", e.value)),
            },
            "Replaces" => cx.refuse(
                "X-Fleet",
                e,
                "not supported: Shoal does not move another service's task away to make room",
            ),
            "MachineBootID" => cx.refuse("X-Fleet", e, "boot IDs change at every boot: use MachineID="),
            _ => {}
        }
    }
    // fleet's rules (api/units.go).
    let rules: [(&str, bool, &str, bool); 4] = [
        ("MachineID", p.machine_id.is_some(), "MachineOf", !p.machine_of.is_empty()),
        ("MachineID", p.machine_id.is_some(), "Conflicts", !p.conflicts.is_empty()),
        ("MachineID", p.machine_id.is_some(), "Global", p.global),
        ("Global", p.global, "MachineOf", !p.machine_of.is_empty()),
    ];
    for (a, has_a, b, has_b) in rules {
        if let (true, true, Some(e)) = (has_a, has_b, lines.get(b)) {
            cx.refuse("X-Fleet", e, format!("{b} cannot be used with {a} (fleet refuses it too)"));
        }
    }

    let constraints = &mut spec.task_template.placement.constraints;
    if let (Some(id), Some(e)) = (&p.machine_id, lines.get("MachineID")) {
        let c = format!("node.id=={id}");
        match c.parse::<Constraint>() {
            Err(m) => cx.refuse("X-Fleet", e, m),
            Ok(_) => {
                cx.warn(e.line, format!(
                    "X-Fleet.{} (line {}): placed with the constraint {c}: fleet's machine IDs are /etc/machine-id values, Shoal's node IDs its own; give the Shoal node's ID",
                    e.key, e.line
                ));
                constraints.push(c);
            }
        }
    }
    for (k, values) in &p.metadata {
        let c = match values.as_slice() {
            [v] => format!("node.labels.{k}=={v}"),
            many => format!("node.labels.{k} in ({})", many.join(",")),
        };
        match c.parse::<Constraint>() {
            Ok(_) => constraints.push(c),
            Err(m) => {
                if let Some(e) = lines.get("MachineMetadata") {
                    cx.refuse("X-Fleet", e, m);
                }
            }
        }
    }
    // Conflicts and MachineOf become the scheduler's own rules, matched against the other
    // services' names and `fleet.unit` labels.
    let placement = &mut spec.task_template.placement;
    placement.conflicts = p.conflicts.clone();
    placement.colocate = p.machine_of.clone();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(name: &str, text: &str) -> Result<Mapped, FleetError> {
        to_service(&UnitFile::parse(text).expect("parse"), name)
    }

    fn refused(name: &str, text: &str) -> Vec<String> {
        match map(name, text) {
            Err(FleetError::Refused { problems, .. }) => problems,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn service_names() {
        let n = |s: &str| service_name(&UnitName::parse(s).expect("unit")).map_err(|e| e.to_string());
        assert_eq!(n("web.service").as_deref(), Ok("web"));
        assert_eq!(n("web@1.service").as_deref(), Ok("web-1"));
        assert_eq!(n("api.v2@blue:1.service").as_deref(), Ok("api-v2-blue-1"));
        assert_eq!(n("my_app\\x2dx.service").as_deref(), Ok("my_app-x"));
        assert_eq!(n("-x-.service").as_deref(), Ok("x"));
        assert!(n("-.service").expect_err("empty").contains("no letters or digits"));
        let long = format!("{}.service", "a".repeat(64));
        assert!(n(&long).expect_err("long").contains("longer than 63 characters"));
    }

    #[test]
    fn time_spans() {
        let d = |s: &str| parse_timespan(s);
        assert_eq!(d("5"), Ok(Duration::from_secs(5)));
        assert_eq!(d("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(d("1min 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1min30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("1 week"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "soon", "5 parsecs", "1..5s", "infinity"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_templates() {
        let e = map("web@.service", "[Service]\nExecStart=/bin/true\n").expect_err("template");
        assert!(e
            .to_string()
            .contains("is a template: fleet runs its instances; map an instance such as web@1.service"));
        let e = map("backup.timer", "[Timer]\nOnCalendar=daily\n").expect_err("timer");
        assert!(e.to_string().contains("use shoal job create --schedule"));
    }

    #[test]
    fn refusals_name_their_lines() {
        assert_eq!(
            refused("a.service", "[Unit]\nDescription=x\n"),
            ["[Service] has no ExecStart=: there is no command to run"]
        );
        assert_eq!(
            refused("a.service", "[Service]\nType=forking\nExecStart=/usr/sbin/daemon\n"),
            ["line 2: Service.Type: Shoal supervises the command's own process: run it in the foreground (Type=simple)"]
        );
        assert_eq!(
            refused("a.service", "[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n"),
            ["line 3: Service.ExecStart: several ExecStart= lines (systemd allows that only with Type=oneshot)"]
        );
        let p = refused("a.service", "[Service]\nType=oneshot\nExecStart=/bin/a\nExecStart=/bin/b\n");
        assert!(
            p[0].starts_with("line 4: Service.ExecStart: several ExecStart= lines, run one after the other")
        );
        // An empty ExecStart= forgets the earlier ones.
        assert!(map("a.service", "[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n").is_ok());
        assert_eq!(
            refused("a.service", "[Service]\nExecStart=/bin/echo %H\n"),
            ["line 2: Service.ExecStart: specifier %H depends on the node that runs the unit and cannot be expanded when importing"]
        );
        let p = refused(
            "a.service",
            "[Service]\nEnvironmentFile=-/etc/environment\nExecStart=/bin/echo ${COREOS_PUBLIC_IPV4}\n",
        );
        assert!(p[0].starts_with("line 2: Service.EnvironmentFile: the file is read on the node"), "{p:?}");
        assert!(p[1].starts_with("line 3: Service.ExecStart: refers to ${COREOS_PUBLIC_IPV4}"), "{p:?}");
        assert_eq!(
            refused("a.service", "[Service]\nEnvironment=1A=x\nExecStart=/bin/true\n"),
            ["line 2: Service.Environment: expected NAME=VALUE assignments, found \"1A=x\""]
        );
        assert_eq!(
            refused(
                "a.service",
                "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=region\nFoo=bar\n"
            ),
            [
                "line 4: X-Fleet.MachineMetadata: expected KEY=VALUE pairs, found \"region\"",
                "line 5: X-Fleet.Foo: unknown fleet option (fleet refuses it too)",
            ]
        );
        assert_eq!(
            refused("a.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineOf=b.service\nMachineID=abc\n"),
            [
                "line 4: X-Fleet.Global: Global cannot be used with MachineID (fleet refuses it too)",
                "line 5: X-Fleet.MachineOf: MachineOf cannot be used with MachineID (fleet refuses it too)",
                "line 5: X-Fleet.MachineOf: MachineOf cannot be used with Global (fleet refuses it too)",
            ]
        );
        assert_eq!(
            refused("a.service", "[Service]\nExecStart=/bin/true\nMemoryMax=10%\nLimitNOFILE=lots\n"),
            [
                "line 3: Service.MemoryMax: a share of the node's memory cannot be mapped: give bytes (e.g. 512M)",
                "line 4: Service.LimitNOFILE: expected SOFT[:HARD] numbers or infinity, found \"lots\"",
            ]
        );
    }

    #[test]
    fn validation_errors_become_fleet_errors() {
        let e =
            map("a.service", "[Service]\nExecStart=/bin/true\nWorkingDirectory=srv\n").expect_err("relative");
        assert_eq!(
            e.to_string(),
            "a.service: the mapped service is invalid: task_template.workdir: \"srv\" must be an absolute path"
        );
    }

    #[test]
    fn modes_privileges_and_placement() {
        let m = map(
            "a@x.service",
            "[Service]\nType=oneshot\nUser=app\nExecStart=+/bin/fix-perms %i\n[X-Fleet]\nGlobal=yes\n\
             MachineMetadata=zone=a zone=b\nMachineMetadata=disk=ssd\nConflicts=a@*.service b*\nMachineOf=\n",
        )
        .expect("map");
        assert_eq!(m.spec.mode, ServiceMode::GlobalJob);
        assert_eq!(m.spec.task_template.command, ["/bin/fix-perms", "x"]);
        assert_eq!(m.spec.task_template.user, "", "'+' runs the command with full privileges");
        let placement = &m.spec.task_template.placement;
        assert_eq!(placement.constraints, ["node.labels.disk==ssd", "node.labels.zone in (a,b)"]);
        assert_eq!(placement.conflicts, ["a@*.service", "b*"]);
        assert!(placement.colocate.is_empty());
        assert_eq!(
            m.warnings,
            ["Service.ExecStart (line 4): the prefix '+' (full privileges): User= is not applied"]
        );
        // Group= without User= is root's with that group.
        let m = map("a.service", "[Service]\nGroup=staff\nExecStart=/bin/true\n").expect("map");
        assert_eq!(m.spec.task_template.user, "0:staff");
    }
}
