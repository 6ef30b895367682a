//! Spec validation: every rule in one place, every error names the field and says what is wrong.
//!
//! Besides the spec's own structure, a spec may not ask for what the drivers that may run its
//! tasks ([`TaskTemplate::driver_candidates`]) cannot do: a hostname or mounts on the process
//! driver, or a published port mapped to a different target port where tasks share the node's
//! network (process, oci). Such a spec is refused when it is created or updated, instead of
//! being accepted and then ignored or failing task after task.

use crate::constraint::Constraint;
use crate::job::{ScheduledJob, Trigger, MAX_JOB_HISTORY, MAX_JOB_PARENTS, MAX_JOB_RETRIES};
use crate::network::{self, Ipv4Net, NetworkAttachmentConfig, NetworkSpec};
use crate::service::RestartPolicy;
use crate::service::{
    EndpointMode, EndpointSpec, MountType, Placement, PublishMode, ResourceRequirements, ServiceMode,
    ServiceSpec, TaskTemplate, UpdateConfig,
};
use std::collections::BTreeSet;
use std::fmt;

/// Smallest memory limit a runtime can enforce meaningfully (Docker's minimum is 6 MB).
pub const MIN_MEMORY_LIMIT: u64 = 4 << 20;
/// Upper bound on replicas, to turn a typo into an error instead of a million tasks.
pub const MAX_REPLICAS: u64 = 100_000;
/// Upper bound on restart_policy.max_attempts (the restart history is kept per task).
pub const MAX_RESTART_ATTEMPTS: u64 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// All the problems of a spec, in the order the fields are declared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError(pub Vec<FieldError>);

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl ValidationError {
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        ValidationError(vec![FieldError { field: field.to_string(), message: message.into() }])
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }
    fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError(self.0))
        }
    }
}

/// Labels of objects: at most 64, keys 1-128 characters, values up to 4 KiB.
pub fn validate_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > 64 {
        return Err(format!("{} labels is above the limit of 64", labels.len()));
    }
    for (k, v) in labels {
        if k.trim().is_empty() || k.len() > 128 {
            return Err(format!("label key {k:?}: 1 to 128 characters, not only spaces"));
        }
        if v.len() > 4096 {
            return Err(format!("label {k:?}: the value is longer than 4096 bytes"));
        }
    }
    Ok(())
}

/// Most environment variables, arguments and mounts a template may have, and the longest value.
pub const MAX_ENV: usize = 1024;
pub const MAX_ARGS: usize = 1024;
pub const MAX_MOUNTS: usize = 64;
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

fn validate_sizes(t: &TaskTemplate, e: &mut Errors) {
    if t.env.len() > MAX_ENV {
        e.push("task_template.env", format!("{} variables is above the limit of {MAX_ENV}", t.env.len()));
    }
    if let Some((k, _)) = t.env.iter().find(|(k, v)| k.len() + v.len() > MAX_VALUE_BYTES) {
        e.push("task_template.env", format!("{k:?} is longer than {MAX_VALUE_BYTES} bytes"));
    }
    let argv = t.command.iter().chain(&t.args);
    if t.command.len() + t.args.len() > MAX_ARGS {
        e.push("task_template.args", format!("more than {MAX_ARGS} command words and arguments"));
    }
    if argv.clone().any(|a| a.len() > MAX_VALUE_BYTES) {
        e.push("task_template.args", format!("an argument is longer than {MAX_VALUE_BYTES} bytes"));
    }
    if t.mounts.len() > MAX_MOUNTS {
        e.push(
            "task_template.mounts",
            format!("{} mounts is above the limit of {MAX_MOUNTS}", t.mounts.len()),
        );
    }
}

/// Service names are DNS labels: 1-63 of `[A-Za-z0-9-_]`, starting and ending alphanumeric.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.len() > 63 {
        return Err(format!("name {name:?} is longer than 63 characters"));
    }
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let ends_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok_chars || !ends_ok {
        return Err(format!(
            "invalid name {name:?}: use letters, digits, '-' and '_', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// Every rule: the spec's structure and what its drivers can honour. Creating and updating a
    /// service check this.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.check(true)
    }

    /// Only the rules about the spec's own structure, without the driver checks of
    /// [`ServiceSpec::validate`]. For a replayed log: a command committed before a driver rule
    /// existed must apply as it did then, on every replica, whatever its version.
    pub fn validate_structure(&self) -> Result<(), ValidationError> {
        self.check(false)
    }

    fn check(&self, drivers: bool) -> Result<(), ValidationError> {
        let mut e = Errors::default();
        if let Err(m) = validate_name(&self.name) {
            e.push("name", m);
        }
        for k in self.labels.keys() {
            if k.trim().is_empty() {
                e.push("labels", "label keys must not be empty");
            }
        }
        validate_mode(&self.mode, &mut e);
        if let ServiceMode::Scheduled(job) = &self.mode {
            validate_scheduled(&self.name, job, &self.task_template, &mut e);
        }
        validate_template(&self.task_template, drivers, &mut e);
        validate_update_config("update_config", &self.update_config, &mut e);
        validate_update_config("rollback_config", &self.rollback_config, &mut e);
        validate_endpoint(&self.endpoint, &mut e);
        validate_attachments(&self.networks, &mut e);
        validate_depends_on(&self.name, &self.depends_on, &mut e);
        if drivers {
            // Size limits, checked when a spec is created or updated (not on replay: a command
            // committed before a limit existed applies as it did).
            if let Err(m) = validate_labels(&self.labels) {
                e.push("labels", m);
            }
            if let Err(m) = validate_labels(&self.task_template.container_labels) {
                e.push("task_template.container_labels", m);
            }
            validate_sizes(&self.task_template, &mut e);
            validate_port_mapping(&self.task_template, &self.endpoint, &mut e);
            let joins = !self.networks.is_empty() || self.endpoint.ingress_ports().next().is_some();
            // A docker task on networks lives in its infra container's network namespace, where
            // Docker publishes no ports of its own.
            let host_ports = self.endpoint.ports.iter().any(|p| p.mode == PublishMode::Host);
            if joins && host_ports && self.task_template.driver.as_deref() == Some("docker") {
                e.push(
                    "endpoint.ports",
                    "the docker driver cannot publish host-mode ports of a task on overlay networks \
                     (its container shares its infra container's network namespace): publish with mode=ingress",
                );
            }
        }
        e.finish()
    }
}

/// Secrets and configs a template uses: well-formed, one file per path, and for the process
/// driver (whose tasks share the node's file system) only under the two directories it mounts
/// in the task's own mount namespace.
fn validate_secret_references(t: &TaskTemplate, drivers: bool, e: &mut Errors) {
    use crate::secret::{SecretKind, MAX_REFERENCES, PROCESS_CONFIGS_DIR, SECRETS_DIR};
    if t.secrets.len() + t.configs.len() > MAX_REFERENCES {
        e.push("task_template.secrets", format!("more than {MAX_REFERENCES} secrets and configs"));
    }
    let process = drivers && t.driver_candidates() == [crate::service::PROCESS_DRIVER];
    let mut paths = BTreeSet::new();
    for (field, kind, refs) in [
        ("task_template.secrets", SecretKind::Secret, &t.secrets),
        ("task_template.configs", SecretKind::Config, &t.configs),
    ] {
        for r in refs {
            if let Err(m) = r.validate(kind) {
                e.push(field, m);
                continue;
            }
            let path = r.path(kind);
            if !paths.insert(path.clone()) {
                e.push(field, format!("two files at {path}"));
            }
            let under = |dir: &str| path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
            if process && !under(SECRETS_DIR) && !under(PROCESS_CONFIGS_DIR) {
                e.push(
                    field,
                    format!(
                        "{kind} {:?} at {path}: the process driver's tasks share the node's file system, so it \
                         places secrets and configs only under {SECRETS_DIR} and {PROCESS_CONFIGS_DIR} (a tmpfs in \
                         the task's own mount namespace): use target={PROCESS_CONFIGS_DIR}/{}",
                        r.source, r.source
                    ),
                );
            }
        }
    }
}

fn validate_mode(mode: &ServiceMode, e: &mut Errors) {
    match *mode {
        ServiceMode::Replicated { replicas } if replicas > MAX_REPLICAS => {
            e.push("mode.replicated.replicas", format!("{replicas} is above the limit of {MAX_REPLICAS}"))
        }
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
            if max_concurrent == 0 {
                e.push("mode.replicated_job.max_concurrent", "must be at least 1");
            }
            if total_completions == 0 {
                e.push("mode.replicated_job.total_completions", "must be at least 1");
            }
            if total_completions > MAX_REPLICAS || max_concurrent > MAX_REPLICAS {
                e.push("mode.replicated_job", format!("above the limit of {MAX_REPLICAS}"));
            }
        }
        _ => {}
    }
}

/// A scheduled job's settings: a valid schedule in a known time zone, or parents, never both.
fn validate_scheduled(name: &str, job: &ScheduledJob, template: &TaskTemplate, e: &mut Errors) {
    const F: &str = "mode.scheduled";
    match (job.schedule.trim().is_empty(), job.after.is_empty()) {
        (true, true) => e.push(F, "give a schedule (cron or ISO 8601 R/START/PERIOD) or parent jobs (after)"),
        (false, false) => e.push(F, "a job runs on a schedule or after its parents, not both"),
        _ => {}
    }
    if !job.schedule.trim().is_empty() {
        if let Err(err) = crate::schedule::validate_time_zone(&job.time_zone) {
            e.push(format!("{F}.time_zone"), err.to_string());
        } else {
            match crate::schedule::Schedule::parse(&job.schedule) {
                Err(err) => e.push(format!("{F}.schedule"), err.to_string()),
                Ok(s) => {
                    if let Err(err) = s.validate_in(&job.time_zone) {
                        e.push(format!("{F}.schedule"), err.to_string());
                    }
                }
            }
        }
    } else {
        if !job.time_zone.is_empty() {
            e.push(format!("{F}.time_zone"), "only a job with a schedule has a time zone");
        }
        if job.starting_deadline.is_some() {
            e.push(format!("{F}.starting_deadline"), "only a job with a schedule has a starting deadline");
        }
    }
    if job.after.is_empty() && job.trigger != Trigger::default() {
        e.push(format!("{F}.trigger"), "only a job with parents (after) has a trigger");
    }
    if job.after.len() > MAX_JOB_PARENTS {
        e.push(format!("{F}.after"), format!("at most {MAX_JOB_PARENTS} parents"));
    }
    let mut seen = BTreeSet::new();
    for p in &job.after {
        if let Err(m) = validate_name(p) {
            e.push(format!("{F}.after"), m);
        } else if p == name {
            e.push(format!("{F}.after"), format!("job {name:?} cannot run after itself"));
        } else if !seen.insert(p.as_str()) {
            e.push(format!("{F}.after"), format!("parent {p:?} is listed twice"));
        }
    }
    if job.starting_deadline.is_some_and(|d| d.is_zero()) {
        e.push(format!("{F}.starting_deadline"), "must be longer than 0s (leave it out for no deadline)");
    }
    if job.retries > MAX_JOB_RETRIES {
        e.push(format!("{F}.retries"), format!("{} is above the limit of {MAX_JOB_RETRIES}", job.retries));
    }
    if job.history == 0 || job.history > MAX_JOB_HISTORY {
        e.push(format!("{F}.history"), format!("must be within 1-{MAX_JOB_HISTORY}"));
    }
    if template.restart_policy != RestartPolicy::default() {
        e.push(
            "task_template.restart_policy",
            "a scheduled job's runs are retried with retries and retry_delay; leave the restart policy unset",
        );
    }
}

/// What a built-in driver can do with a task, as far as the spec goes. A driver this does not know
/// is left to the node to judge.
struct Honours {
    /// Its own UTS namespace.
    hostname: bool,
    /// Its own mount namespace.
    mounts: bool,
    /// Its own network, with published ports forwarded to target ports; without it a task
    /// listens on the node's ports directly, so a published port must be the target port.
    port_mapping: bool,
}

fn honours(driver: &str) -> Option<Honours> {
    match driver {
        // Runs the command on the host: no namespaces but cgroups.
        "process" => Some(Honours { hostname: false, mounts: false, port_mapping: false }),
        // runc with its own pid, mount, uts, ipc and cgroup namespaces, in the host network.
        "oci" => Some(Honours { hostname: true, mounts: true, port_mapping: false }),
        // dockerd: bridge network with port bindings, hostname, binds and volumes.
        "docker" => Some(Honours { hostname: true, mounts: true, port_mapping: true }),
        _ => None,
    }
}

/// The task's candidate drivers that are known not to be able to do what `can` asks.
fn unable(t: &TaskTemplate, can: fn(&Honours) -> bool) -> Vec<&str> {
    t.driver_candidates().into_iter().filter(|d| honours(d).is_some_and(|h| !can(&h))).collect()
}

/// "the process driver cannot {what}", said for how the driver came to be chosen.
fn cannot(t: &TaskTemplate, driver: &str, what: &str) -> String {
    match (&t.driver, &t.image) {
        (Some(_), _) => format!("the {driver} driver cannot {what}"),
        (None, None) => format!("tasks without an image run on the {driver} driver, which cannot {what}"),
        (None, Some(_)) => {
            format!("without a driver the task may run on the {driver} driver, which cannot {what}")
        }
    }
}

/// Hostname and mounts: only the process driver cannot, and it runs no image.
fn validate_drivers_support_template(t: &TaskTemplate, e: &mut Errors) {
    let alt = if t.driver.is_some() {
        "use the oci or docker driver"
    } else {
        "give an image, for the oci or docker driver"
    };
    if !t.hostname.is_empty() {
        if let Some(d) = unable(t, |h| h.hostname).first() {
            e.push("task_template.hostname", format!("{} ({alt})", cannot(t, d, "set a hostname")));
        }
    }
    if !t.mounts.is_empty() {
        if let Some(d) = unable(t, |h| h.mounts).first() {
            e.push("task_template.mounts", format!("{} ({alt})", cannot(t, d, "mount anything")));
        }
    }
}

/// Container options the task's drivers cannot honour (`crate::container::DRIVER_OPTIONS`).
fn validate_driver_options(t: &TaskTemplate, e: &mut Errors) {
    let candidates = t.driver_candidates();
    for o in crate::container::DRIVER_OPTIONS.iter().filter(|o| (o.used)(t)) {
        let unable = |d: &&&str| t.options_unsupported_by(d).iter().any(|u| u.field == o.field);
        let Some(d) = candidates.iter().find(unable) else { continue };
        let can = o.drivers.join(" or ");
        let alt = if t.image.is_some() {
            format!("use the {can} driver")
        } else {
            format!("give an image, for the {can} driver")
        };
        e.push(format!("task_template.{}", o.field), format!("{} ({alt})", cannot(t, d, o.what)));
    }
    if candidates.is_empty() {
        e.push("task_template", "no driver can honour all of this template's container options");
    }
}

/// The container options' own rules (whatever the driver).
fn validate_container_options(t: &TaskTemplate, e: &mut Errors) {
    for (field, caps) in [("task_template.cap_add", &t.cap_add), ("task_template.cap_drop", &t.cap_drop)] {
        for c in caps.iter() {
            match crate::container::normalize_capability(c) {
                Ok(n) if &n == c => {}
                Ok(n) => e.push(field, format!("{c:?} must be written {n:?}")),
                Err(m) => e.push(field, m),
            }
        }
    }
    if let Some(c) = t.cap_add.iter().find(|c| t.cap_drop.contains(c) && c.as_str() != "ALL") {
        e.push("task_template.cap_add", format!("{c} is both added and dropped"));
    }
    for ns in &t.dns.nameservers {
        if ns.parse::<core::net::IpAddr>().is_err() {
            e.push("task_template.dns.nameservers", format!("{ns:?} is not an IP address"));
        }
    }
    for d in &t.dns.search {
        if d.is_empty() || d.chars().any(|c| c.is_whitespace() || c == '/') {
            e.push("task_template.dns.search", format!("{d:?} is not a domain"));
        }
    }
    for o in &t.dns.options {
        if o.is_empty() || o.chars().any(char::is_whitespace) {
            e.push("task_template.dns.options", format!("{o:?} is not a resolver option (e.g. ndots:2)"));
        }
    }
    for k in t.container_labels.keys() {
        if k.trim().is_empty() {
            e.push("task_template.container_labels", "label keys must not be empty");
        } else if k.starts_with("shoal.") || k.starts_with("com.docker.swarm.") {
            e.push(
                "task_template.container_labels",
                format!("{k:?}: the shoal.* and com.docker.swarm.* labels are Shoal's own (it sets them on every container)"),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for u in &t.ulimits {
        if let Err(m) = crate::container::check_ulimit(u) {
            e.push("task_template.ulimits", m);
        } else if !seen.insert(u.name.as_str()) {
            e.push("task_template.ulimits", format!("{} is given twice", u.name));
        }
    }
    for g in &t.groups {
        if g.is_empty() || g.chars().any(|c| c.is_whitespace() || c == ':') {
            e.push("task_template.groups", format!("{g:?} is not a group name or gid"));
        }
    }
    if let Some(l) = &t.log_driver {
        for m in crate::container::check_log_driver(l) {
            e.push("task_template.log_driver", m);
        }
    }
}

fn validate_port_mapping(t: &TaskTemplate, ep: &EndpointSpec, e: &mut Errors) {
    let drivers = unable(t, |h| h.port_mapping);
    let Some(d) = drivers.first() else { return };
    for (i, p) in ep.ports.iter().enumerate() {
        // The routing mesh forwards an ingress port to any target port of the task's own
        // network namespace.
        if p.published == 0 || p.published == p.target || p.mode == crate::PublishMode::Ingress {
            continue;
        }
        let what = format!(
            "publish port {} as target port {}: its tasks listen on the node's own ports",
            p.published, p.target
        );
        let alt = match (&t.driver, &t.image) {
            (None, Some(_)) => format!("pick --driver docker, or publish {0}:{0}", p.target),
            (Some(_), Some(_)) => format!("publish {0}:{0}, or use the docker driver", p.target),
            (_, None) => format!("publish {0}:{0}", p.target),
        };
        e.push(format!("endpoint.ports[{i}].published"), format!("{} ({alt})", cannot(t, d, &what)));
    }
}

fn validate_template(t: &TaskTemplate, drivers: bool, e: &mut Errors) {
    if let Some(d) = &t.driver {
        if d.is_empty() || !d.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            e.push("task_template.driver", format!("invalid driver name {d:?}"));
        }
        if d == "process" && t.image.is_some() {
            e.push("task_template.image", "the process driver runs a command, not an image");
        }
    }
    if let Some(img) = &t.image {
        if img.trim().is_empty() || img.chars().any(char::is_whitespace) {
            e.push("task_template.image", format!("invalid image reference {img:?}"));
        }
    } else if t.command.is_empty() {
        e.push("task_template.command", "a command is required when no image is given");
    }
    if let Some(a) = &t.registry_auth {
        if t.image.is_none() {
            e.push("task_template.registry_auth", "registry credentials need an image to pull");
        }
        let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        if a.0.is_empty() || a.0.len() > crate::service::MAX_SEALED_AUTH || !a.0.bytes().all(base64) {
            e.push(
                "task_template.registry_auth",
                "not sealed credentials (base64 text made by the managers)",
            );
        }
    }
    for k in t.env.keys() {
        if k.is_empty() || k.contains('=') {
            e.push("task_template.env", format!("invalid variable name {k:?}"));
        }
    }
    if !t.workdir.is_empty() && !t.workdir.starts_with('/') {
        e.push("task_template.workdir", format!("{:?} must be an absolute path", t.workdir));
    }
    validate_secret_references(t, drivers, e);
    if drivers {
        validate_drivers_support_template(t, e);
        validate_driver_options(t, e);
    }
    validate_container_options(t, e);
    let mut targets = BTreeSet::new();
    for (i, m) in t.mounts.iter().enumerate() {
        let f = format!("task_template.mounts[{i}]");
        if !m.target.starts_with('/') {
            e.push(&f, format!("target {:?} must be an absolute path", m.target));
        } else if m.target.split('/').any(|c| c == "..") {
            e.push(&f, format!("target {:?} must not contain '..'", m.target));
        }
        if !targets.insert(m.target.as_str()) {
            e.push(&f, format!("duplicate mount target {:?}", m.target));
        }
        match m.kind {
            MountType::Bind if !m.source.starts_with('/') => {
                e.push(&f, format!("bind source {:?} must be an absolute path", m.source))
            }
            MountType::Volume
                if m.source.is_empty()
                    || m.source.contains('/')
                    || m.source.starts_with('.')
                    || validate_name(&m.source).is_err() =>
            {
                e.push(&f, format!("volume name {:?} is invalid", m.source))
            }
            _ => {}
        }
    }
    if t.restart_policy.max_attempts > MAX_RESTART_ATTEMPTS {
        e.push(
            "task_template.restart_policy.max_attempts",
            format!("{} is above the limit of {MAX_RESTART_ATTEMPTS}", t.restart_policy.max_attempts),
        );
    }
    validate_resources(&t.resources, e);
    validate_placement(&t.placement, e);
    if let Some(h) = &t.health_check {
        match h.test.first().map(String::as_str) {
            Some("NONE") => {}
            Some("CMD") | Some("CMD-SHELL") if h.test.len() >= 2 => {}
            _ => e.push(
                "task_template.health_check.test",
                "expected [\"CMD\", prog, args...], [\"CMD-SHELL\", command] or [\"NONE\"]",
            ),
        }
        if h.interval.is_zero() {
            e.push("task_template.health_check.interval", "must be greater than 0");
        }
        if h.timeout.is_zero() {
            e.push("task_template.health_check.timeout", "must be greater than 0");
        }
    }
}

fn validate_resources(r: &ResourceRequirements, e: &mut Errors) {
    let (res, lim) = (&r.reservations, &r.limits);
    if lim.nano_cpus != 0 && res.nano_cpus > lim.nano_cpus {
        e.push(
            "task_template.resources",
            format!("cpu reservation {} is above the limit {}", res.nano_cpus, lim.nano_cpus),
        );
    }
    if lim.memory_bytes != 0 && res.memory_bytes > lim.memory_bytes {
        e.push(
            "task_template.resources",
            format!("memory reservation {} is above the limit {}", res.memory_bytes, lim.memory_bytes),
        );
    }
    if lim.memory_bytes != 0 && lim.memory_bytes < MIN_MEMORY_LIMIT {
        e.push(
            "task_template.resources.limits.memory_bytes",
            format!("{} is below the minimum of {MIN_MEMORY_LIMIT} bytes (4 MiB)", lim.memory_bytes),
        );
    }
    if res.pids != 0 {
        e.push("task_template.resources.reservations.pids", "pids are a limit, not a reservation");
    }
    for (k, v) in &res.generic {
        if k.is_empty() || *v == 0 {
            e.push("task_template.resources.reservations.generic", format!("invalid entry {k:?}={v}"));
        }
    }
}

fn validate_placement(p: &Placement, e: &mut Errors) {
    for c in &p.constraints {
        if let Err(err) = c.parse::<Constraint>() {
            e.push("task_template.placement.constraints", err.to_string());
        }
    }
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 255
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-*?:\\".contains(&b))
    };
    for (field, list) in [("conflicts", &p.conflicts), ("colocate", &p.colocate)] {
        for v in list.iter().filter(|v| !name_ok(v)) {
            e.push(
                format!("task_template.placement.{field}"),
                format!(
                    "{v:?}: a service or unit name (letters, digits, @ . _ - : \\; * and ? in conflicts)"
                ),
            );
        }
    }
    for v in p.colocate.iter().filter(|v| v.contains(['*', '?'])) {
        e.push("task_template.placement.colocate", format!("{v:?}: name one service or unit, no globs"));
    }
    for (i, pref) in p.preferences.iter().enumerate() {
        let s = pref.spread.as_str();
        let ok = ["node.labels.", "engine.labels."]
            .iter()
            .any(|pfx| s.len() > pfx.len() && s.to_ascii_lowercase().starts_with(pfx));
        if !ok {
            e.push(
                format!("task_template.placement.preferences[{i}]"),
                format!("spread {s:?} must name node.labels.KEY or engine.labels.KEY"),
            );
        }
    }
}

fn validate_update_config(field: &str, u: &UpdateConfig, e: &mut Errors) {
    if u.parallelism == 0 {
        e.push(format!("{field}.parallelism"), "must be at least 1");
    }
    if !(0.0..=1.0).contains(&u.max_failure_ratio) {
        e.push(format!("{field}.max_failure_ratio"), "must be between 0 and 1");
    }
}

fn validate_endpoint(ep: &EndpointSpec, e: &mut Errors) {
    let mut published = BTreeSet::new();
    for (i, p) in ep.ports.iter().enumerate() {
        if p.target == 0 {
            e.push(format!("endpoint.ports[{i}].target"), "must be between 1 and 65535");
        }
        if p.mode == PublishMode::Ingress && p.published == 0 {
            e.push(format!("endpoint.ports[{i}].published"), "the ingress mode needs a published port");
        }
        if p.mode == PublishMode::Ingress && ep.mode == EndpointMode::Dnsrr {
            e.push(
                format!("endpoint.ports[{i}].mode"),
                "ingress ports need a virtual IP: use mode=host with --endpoint-mode dnsrr",
            );
        }
        if p.published != 0 && !published.insert((p.protocol, p.published)) {
            e.push(
                format!("endpoint.ports[{i}].published"),
                format!("duplicate published port {}/{:?}", p.published, p.protocol).to_lowercase(),
            );
        }
    }
}

fn validate_attachments(nets: &[NetworkAttachmentConfig], e: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, n) in nets.iter().enumerate() {
        let f = format!("networks[{i}]");
        if n.target.trim().is_empty() {
            e.push(format!("{f}.target"), "a network name or id is required");
        } else if !seen.insert(n.target.as_str()) {
            e.push(format!("{f}.target"), format!("network {:?} is listed twice", n.target));
        }
        for a in &n.aliases {
            if let Err(m) = validate_name(a) {
                e.push(format!("{f}.aliases"), m.replacen("name", "alias", 1));
            }
        }
    }
}

/// Each dependency names a service (a valid name, not this one), once. Whether it exists and
/// whether the dependencies form a cycle are the managers' to judge (they know the services).
fn validate_depends_on(name: &str, deps: &[crate::service::Dependency], e: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, d) in deps.iter().enumerate() {
        let f = format!("depends_on[{i}].service");
        if let Err(m) = validate_name(&d.service) {
            e.push(f, m);
        } else if d.service == name {
            e.push(f, format!("service {name} cannot depend on itself"));
        } else if !seen.insert(d.service.as_str()) {
            e.push(f, format!("{} is listed twice", d.service));
        }
    }
}

impl NetworkSpec {
    /// Every rule of a network's spec: name, IPv4 subnet with a prefix from /8 to /29 and no
    /// host bits, a gateway inside it, MTU, labels. Overlaps and names already taken are the
    /// state's to judge.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut e = Errors::default();
        if let Err(m) = validate_name(&self.name) {
            e.push("name", m);
        }
        let subnet = self.subnet.as_deref().map(|s| {
            Ipv4Net::parse(s).and_then(|n| {
                if (network::MIN_PREFIX..=network::MAX_PREFIX).contains(&n.prefix()) {
                    Ok(n)
                } else {
                    Err(format!(
                        "{s:?}: the prefix must be from /{} to /{}",
                        network::MIN_PREFIX,
                        network::MAX_PREFIX
                    ))
                }
            })
        });
        if let Some(Err(m)) = &subnet {
            e.push("subnet", m.clone());
        }
        if let Some(g) = &self.gateway {
            match (network::parse_ipv4(g), &subnet) {
                (Err(m), _) => e.push("gateway", m),
                (Ok(_), None) => e.push("gateway", "a gateway needs a subnet"),
                (Ok(a), Some(Ok(n))) if !n.is_host(a) => {
                    e.push("gateway", format!("{g} is not a host address of {n}"))
                }
                _ => {}
            }
        }
        if let Some(mtu) = self.mtu {
            if mtu < network::MIN_MTU {
                e.push("mtu", format!("{mtu} is below the minimum of {}", network::MIN_MTU));
            }
        }
        for k in self.labels.keys() {
            if k.trim().is_empty() {
                e.push("labels", "label keys must not be empty");
            }
        }
        e.finish()
    }
}

/// Builds a mode from docker-style flags, rejecting combinations that make no sense.
pub fn mode_from_flags(
    mode: &str,
    replicas: Option<u64>,
    max_concurrent: Option<u64>,
) -> Result<ServiceMode, ValidationError> {
    match mode {
        "replicated" => {
            if max_concurrent.is_some() {
                return Err(ValidationError::single("mode", "max-concurrent is only for replicated-job"));
            }
            Ok(ServiceMode::Replicated { replicas: replicas.unwrap_or(1) })
        }
        "global" | "global-job" => {
            if replicas.is_some() {
                return Err(ValidationError::single(
                    "mode",
                    format!("replicas can only be used with replicated mode, not {mode}"),
                ));
            }
            if max_concurrent.is_some() {
                return Err(ValidationError::single("mode", "max-concurrent is only for replicated-job"));
            }
            Ok(if mode == "global" { ServiceMode::Global } else { ServiceMode::GlobalJob })
        }
        "replicated-job" => {
            let mc = max_concurrent.unwrap_or(1);
            Ok(ServiceMode::ReplicatedJob { max_concurrent: mc, total_completions: replicas.unwrap_or(mc) })
        }
        other => Err(ValidationError::single(
            "mode",
            format!("unknown mode {other:?} (replicated, global, replicated-job, global-job)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Mount, PlacementPreference, PortConfig, Protocol};

    fn valid() -> ServiceSpec {
        let mut s = ServiceSpec { name: "web".into(), ..Default::default() };
        s.task_template.command = vec!["/bin/sleep".into(), "1000".into()];
        s
    }

    fn first_error(s: &ServiceSpec) -> String {
        match s.validate() {
            Ok(()) => "ok".into(),
            Err(e) => e.0[0].field.clone() + ": " + &e.0[0].message,
        }
    }

    #[test]
    fn valid_spec_passes() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn sealed_registry_credentials_need_an_image_and_base64() {
        let mut s = valid();
        s.task_template.image = Some("localhost:5000/web:1".into());
        s.task_template.registry_auth = Some(crate::SealedAuth("AbC+/0==".into()));
        assert_eq!(s.validate(), Ok(()));
        let json = serde_json::to_string(&s.task_template).expect("json");
        let back: crate::TaskTemplate = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, s.task_template);
        s.task_template.registry_auth = Some(crate::SealedAuth("not base64!".into()));
        assert!(
            first_error(&s).starts_with("task_template.registry_auth: not sealed"),
            "{}",
            first_error(&s)
        );
        s.task_template.registry_auth =
            Some(crate::SealedAuth("A".repeat(crate::service::MAX_SEALED_AUTH + 1)));
        assert!(first_error(&s).starts_with("task_template.registry_auth: not sealed"));
        s.task_template.image = None;
        s.task_template.registry_auth = Some(crate::SealedAuth("AbC=".into()));
        assert!(
            first_error(&s).starts_with("task_template.registry_auth: registry credentials need an image")
        );
        // Left out of the JSON while unset, so older versions read the template unchanged.
        assert!(!serde_json::to_string(&valid().task_template).expect("json").contains("registry_auth"));
    }

    #[test]
    fn bad_specs_table() {
        type Edit = fn(&mut ServiceSpec);
        let cases: Vec<(&str, Edit, &str)> = vec![
            ("empty name", |s| s.name.clear(), "name: name is required"),
            ("bad name", |s| s.name = "-web".into(), "name: invalid name"),
            ("long name", |s| s.name = "a".repeat(64), "name: name \"aaaa"),
            (
                "no command",
                |s| s.task_template.command.clear(),
                "task_template.command: a command is required",
            ),
            (
                "reservation above limit",
                |s| {
                    s.task_template.resources.reservations.memory_bytes = 64 << 20;
                    s.task_template.resources.limits.memory_bytes = 32 << 20;
                },
                "task_template.resources: memory reservation",
            ),
            (
                "limit below minimum",
                |s| s.task_template.resources.limits.memory_bytes = 1024,
                "task_template.resources.limits.memory_bytes: 1024 is below",
            ),
            (
                "pids reservation",
                |s| s.task_template.resources.reservations.pids = 10,
                "task_template.resources.reservations.pids: pids are a limit, not a reservation",
            ),
            (
                "malformed constraint",
                |s| s.task_template.placement.constraints = vec!["node.labels.zone=a".into()],
                "task_template.placement.constraints: constraint \"node.labels.zone=a\": expected",
            ),
            (
                "bad preference",
                |s| {
                    s.task_template.placement.preferences =
                        vec![PlacementPreference { spread: "zone".into() }]
                },
                "task_template.placement.preferences[0]",
            ),
            (
                "zero parallelism",
                |s| s.update_config.parallelism = 0,
                "update_config.parallelism: must be at least 1",
            ),
            ("bad ratio", |s| s.rollback_config.max_failure_ratio = 1.5, "rollback_config.max_failure_ratio"),
            (
                "duplicate published port",
                |s| {
                    let p = PortConfig { published: 80, target: 80, ..Default::default() };
                    s.endpoint.ports = vec![p.clone(), p];
                },
                "endpoint.ports[1].published: duplicate published port 80/tcp",
            ),
            (
                "relative bind",
                |s| {
                    s.task_template.image = Some("busybox".into());
                    s.task_template.mounts =
                        vec![Mount { source: "data".into(), target: "/data".into(), ..Default::default() }]
                },
                "task_template.mounts[0]: bind source",
            ),
            (
                "volume with slash",
                |s| {
                    s.task_template.image = Some("busybox".into());
                    s.task_template.mounts = vec![Mount {
                        kind: MountType::Volume,
                        source: "../x".into(),
                        target: "/data".into(),
                        readonly: false,
                    }]
                },
                "task_template.mounts[0]: volume name",
            ),
            (
                "job zero concurrency",
                |s| s.mode = ServiceMode::ReplicatedJob { max_concurrent: 0, total_completions: 1 },
                "mode.replicated_job.max_concurrent",
            ),
            (
                "too many replicas",
                |s| s.mode = ServiceMode::Replicated { replicas: MAX_REPLICAS + 1 },
                "mode.replicated.replicas",
            ),
            (
                "process with image",
                |s| {
                    s.task_template.driver = Some("process".into());
                    s.task_template.image = Some("busybox".into());
                },
                "task_template.image: the process driver",
            ),
        ];
        for (name, edit, want) in cases {
            let mut s = valid();
            edit(&mut s);
            let got = first_error(&s);
            assert!(got.starts_with(want), "{name}: got {got:?}, want prefix {want:?}");
        }
    }

    fn image(driver: Option<&str>) -> ServiceSpec {
        let mut s = valid();
        s.task_template.command.clear();
        s.task_template.image = Some("busybox".into());
        s.task_template.driver = driver.map(str::to_string);
        s
    }

    #[test]
    fn container_options_go_to_drivers_that_honour_them() {
        // An image without a driver: the image drivers that can (a terminal: docker only).
        let mut s = image(None);
        s.task_template.read_only = true;
        assert_eq!(s.task_template.driver_candidates(), ["docker", "oci"]);
        s.task_template.tty = true;
        assert_eq!(s.task_template.driver_candidates(), ["docker"]);
        assert_eq!(errors(&s), Vec::<String>::new());
        // A named driver that cannot is refused, naming the option and the driver.
        let mut s = image(Some("oci"));
        s.task_template.tty = true;
        assert_eq!(
            errors(&s),
            ["task_template.tty: the oci driver cannot give the task a terminal (use the docker driver)"]
        );
        let mut s = valid();
        s.task_template.read_only = true;
        s.task_template.cap_drop = vec!["CAP_NET_RAW".into()];
        s.task_template.container_labels.insert("a".into(), "b".into());
        assert_eq!(
            errors(&s),
            [
                "task_template.read_only: tasks without an image run on the process driver, which cannot mount the root filesystem read-only (give an image, for the docker or oci driver)",
                "task_template.cap_drop: tasks without an image run on the process driver, which cannot drop capabilities (give an image, for the docker or oci driver)",
                "task_template.container_labels: tasks without an image run on the process driver, which cannot label a container (its tasks run no container) (give an image, for the docker or oci driver)",
            ]
        );
        assert!(s.validate_structure().is_ok(), "driver rules only on create and update");
        // What every driver can do: ulimits, groups, DNS, log rotation.
        let mut s = valid();
        s.task_template.ulimits = vec![crate::Ulimit { name: "nofile".into(), soft: 10, hard: 20 }];
        s.task_template.groups = vec!["audio".into()];
        s.task_template.dns.search = vec!["example.org".into()];
        s.task_template.log_driver = Some(crate::LogDriver { name: "local".into(), ..Default::default() });
        assert_eq!(errors(&s), Vec::<String>::new());
        assert_eq!(s.task_template.driver_candidates(), ["process"]);
    }

    #[test]
    fn container_options_have_rules_of_their_own() {
        let mut s = image(None);
        let t = &mut s.task_template;
        t.cap_add = vec!["net_admin".into(), "CAP_FLY".into(), "CAP_KILL".into()];
        t.cap_drop = vec!["CAP_KILL".into()];
        t.dns = crate::DnsConfig {
            nameservers: vec!["dns.example".into()],
            search: vec!["a b".into()],
            options: vec!["".into()],
        };
        t.container_labels.insert("shoal.task.id".into(), "x".into());
        t.ulimits = vec![
            crate::Ulimit { name: "nofile".into(), soft: 2, hard: 1 },
            crate::Ulimit { name: "nproc".into(), soft: 1, hard: 1 },
            crate::Ulimit { name: "nproc".into(), soft: 1, hard: 1 },
        ];
        t.groups = vec!["a:b".into()];
        t.log_driver = Some(crate::LogDriver { name: "syslog".into(), ..Default::default() });
        let got = errors(&s);
        for want in [
            "task_template.cap_add: \"net_admin\" must be written \"CAP_NET_ADMIN\"",
            "task_template.cap_add: unknown capability \"CAP_FLY\"",
            "task_template.cap_add: CAP_KILL is both added and dropped",
            "task_template.dns.nameservers: \"dns.example\" is not an IP address",
            "task_template.dns.search: \"a b\" is not a domain",
            "task_template.dns.options: \"\" is not a resolver option",
            "task_template.container_labels: \"shoal.task.id\": the shoal.* and com.docker.swarm.* labels are Shoal's own",
            "task_template.ulimits: nofile: the soft limit 2 is above the hard limit 1",
            "task_template.ulimits: nproc is given twice",
            "task_template.groups: \"a:b\" is not a group name or gid",
            "task_template.log_driver: log driver \"syslog\": not supported: Shoal keeps task logs itself",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "missing {want:?} in {got:#?}");
        }
        // Servers of the task's own, also on networks (Shoal's resolver forwards to them there),
        // IPv4 or IPv6.
        let mut s = image(None);
        s.task_template.dns.nameservers = vec!["1.1.1.1".into(), "2001:db8::53".into()];
        assert_eq!(errors(&s), Vec::<String>::new());
        s.networks = vec![NetworkAttachmentConfig { target: "front".into(), aliases: vec![] }];
        assert_eq!(errors(&s), Vec::<String>::new());
        // Unused options stay out of the JSON, so older versions read the template unchanged.
        let json = serde_json::to_value(image(None).task_template).expect("json");
        for k in [
            "read_only",
            "cap_add",
            "dns",
            "init",
            "tty",
            "container_labels",
            "ulimits",
            "groups",
            "log_driver",
        ] {
            assert!(json.get(k).is_none(), "{k} in {json}");
        }
    }

    fn port(published: u16, target: u16) -> PortConfig {
        PortConfig { published, target, ..Default::default() }
    }

    fn bind() -> Mount {
        Mount { source: "/tmp".into(), target: "/x".into(), ..Default::default() }
    }

    fn errors(s: &ServiceSpec) -> Vec<String> {
        match s.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect(),
        }
    }

    #[test]
    fn secret_references_are_checked_and_the_process_driver_keeps_them_in_its_directories() {
        use crate::secret::SecretReference;
        let mut s = valid();
        s.task_template.secrets = vec![SecretReference::new("pw")];
        s.task_template.configs =
            vec![SecretReference { target: "/run/configs/app".into(), ..SecretReference::new("app") }];
        assert_eq!(errors(&s), Vec::<String>::new());
        s.task_template.configs[0].target = String::new();
        let got = errors(&s);
        assert!(got.len() == 1 && got[0].contains("use target=/run/configs/app"), "{got:?}");
        s.task_template.configs[0].target = "/run/secrets/pw".into();
        let got = errors(&s);
        assert!(got.iter().any(|e| e.contains("two files at /run/secrets/pw")), "{got:?}");
        // Images may take configs anywhere.
        s.task_template.image = Some("busybox".into());
        s.task_template.configs[0].target = "/etc/app.conf".into();
        assert_eq!(errors(&s), Vec::<String>::new());
        s.task_template.secrets[0].target = "../etc/shadow".into();
        assert_eq!(errors(&s).len(), 1);
    }

    #[test]
    fn process_driver_refuses_hostname_and_mounts() {
        let mut s = valid();
        s.task_template.driver = Some("process".into());
        s.task_template.hostname = "x".into();
        assert_eq!(
            errors(&s),
            ["task_template.hostname: the process driver cannot set a hostname (use the oci or docker driver)"]
        );
        s.task_template.hostname.clear();
        s.task_template.mounts = vec![bind()];
        assert_eq!(
            errors(&s),
            ["task_template.mounts: the process driver cannot mount anything (use the oci or docker driver)"]
        );
        // No driver and no image is the process driver too.
        s.task_template.driver = None;
        s.task_template.hostname = "x".into();
        let got = errors(&s);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("task_template.hostname: tasks without an image run on the process driver")
        );
        assert!(got[1].starts_with("task_template.mounts: tasks without an image run on the process driver"));
    }

    #[test]
    fn container_drivers_take_hostname_and_mounts() {
        for driver in [None, Some("oci"), Some("docker")] {
            let mut s = image(driver);
            s.task_template.hostname = "x".into();
            s.task_template.mounts = vec![bind()];
            assert_eq!(s.validate(), Ok(()), "{driver:?}");
        }
        // A driver Shoal does not know is the node's to judge.
        let mut s = valid();
        s.task_template.driver = Some("firecracker".into());
        s.task_template.hostname = "x".into();
        s.task_template.mounts = vec![bind()];
        s.endpoint.ports = vec![port(8080, 80)];
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn host_network_drivers_refuse_port_mapping() {
        let mut s = valid();
        s.task_template.driver = Some("process".into());
        s.endpoint.ports = vec![port(80, 80), port(8080, 80), port(0, 9090)];
        assert_eq!(
            errors(&s),
            ["endpoint.ports[1].published: the process driver cannot publish port 8080 as target port 80: \
              its tasks listen on the node's own ports (publish 80:80)"]
        );
        let mut s = image(Some("oci"));
        s.endpoint.ports = vec![port(8080, 80)];
        assert_eq!(
            errors(&s),
            ["endpoint.ports[0].published: the oci driver cannot publish port 8080 as target port 80: \
              its tasks listen on the node's own ports (publish 80:80, or use the docker driver)"]
        );
        // Without a driver an image may land on oci: refused, naming the way out.
        let mut s = image(None);
        s.endpoint.ports = vec![port(8080, 80)];
        assert_eq!(
            errors(&s),
            ["endpoint.ports[0].published: without a driver the task may run on the oci driver, which cannot \
              publish port 8080 as target port 80: its tasks listen on the node's own ports \
              (pick --driver docker, or publish 80:80)"]
        );
        // Docker maps; and the same port on both sides is honest everywhere.
        let mut s = image(Some("docker"));
        s.endpoint.ports = vec![port(8080, 80)];
        assert_eq!(s.validate(), Ok(()));
        for driver in [None, Some("oci"), Some("docker")] {
            let mut s = image(driver);
            s.endpoint.ports = vec![port(80, 80), port(0, 81)];
            assert_eq!(s.validate(), Ok(()), "{driver:?}");
        }
    }

    #[test]
    fn structure_alone_skips_the_driver_checks() {
        let mut s = valid();
        s.task_template.hostname = "x".into();
        s.task_template.mounts = vec![bind()];
        s.endpoint.ports = vec![port(8080, 80)];
        assert_eq!(s.validate().map_err(|e| e.0.len()), Err(3));
        assert_eq!(s.validate_structure(), Ok(()));
        s.name.clear();
        assert!(s.validate_structure().is_err());
    }

    #[test]
    fn udp_and_tcp_may_share_a_number() {
        let mut s = valid();
        s.endpoint.ports = vec![
            PortConfig { published: 53, target: 53, protocol: Protocol::Tcp, ..Default::default() },
            PortConfig { published: 53, target: 53, protocol: Protocol::Udp, ..Default::default() },
        ];
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn all_errors_are_reported() {
        let mut s = valid();
        s.name.clear();
        s.update_config.parallelism = 0;
        let e = s.validate().expect_err("invalid");
        assert_eq!(e.0.len(), 2);
        assert!(e.to_string().contains("; "));
    }

    #[test]
    fn network_specs_table() {
        let ok = NetworkSpec { name: "net1".into(), ..Default::default() };
        assert_eq!(ok.validate(), Ok(()));
        type Edit = fn(&mut NetworkSpec);
        let cases: Vec<(Edit, &str)> = vec![
            (|n| n.name = "-x".into(), "name: invalid name"),
            (|n| n.subnet = Some("10.0.1.0".into()), "subnet: \"10.0.1.0\" is not an IPv4 CIDR"),
            (|n| n.subnet = Some("10.0.1.7/24".into()), "subnet: \"10.0.1.7/24\" has host bits set"),
            (
                |n| n.subnet = Some("10.0.0.0/30".into()),
                "subnet: \"10.0.0.0/30\": the prefix must be from /8 to /29",
            ),
            (|n| n.subnet = Some("10.0.0.0/7".into()), "subnet: \"10.0.0.0/7\": the prefix must be from /8"),
            (|n| n.subnet = Some("fd00::/64".into()), "subnet: \"fd00::/64\" is not an IPv4 CIDR"),
            (|n| n.gateway = Some("10.0.1.1".into()), "gateway: a gateway needs a subnet"),
            (
                |n| {
                    n.subnet = Some("10.0.1.0/24".into());
                    n.gateway = Some("10.0.2.1".into());
                },
                "gateway: 10.0.2.1 is not a host address of 10.0.1.0/24",
            ),
            (
                |n| {
                    n.subnet = Some("10.0.1.0/24".into());
                    n.gateway = Some("10.0.1.255".into());
                },
                "gateway: 10.0.1.255 is not a host address",
            ),
            (|n| n.mtu = Some(60), "mtu: 60 is below the minimum of 68"),
        ];
        for (edit, want) in cases {
            let mut n = ok.clone();
            edit(&mut n);
            let got = n.validate().map_err(|e| e.to_string());
            assert!(got.as_ref().is_err_and(|e| e.starts_with(want)), "got {got:?}, want {want:?}");
        }
        let mut n = ok;
        n.subnet = Some("10.0.0.0/8".into());
        n.gateway = Some("10.0.0.1".into());
        n.mtu = Some(1400);
        assert_eq!(n.validate(), Ok(()));
    }

    #[test]
    fn network_attachments_and_ingress_ports() {
        let mut s = valid();
        s.networks = vec![
            NetworkAttachmentConfig { target: "net1".into(), aliases: vec!["db".into()] },
            NetworkAttachmentConfig { target: "net1".into(), aliases: vec![] },
            NetworkAttachmentConfig { target: " ".into(), aliases: vec!["-bad".into()] },
        ];
        assert_eq!(
            errors(&s),
            [
                "networks[1].target: network \"net1\" is listed twice",
                "networks[2].target: a network name or id is required",
                "networks[2].aliases: invalid alias \"-bad\": use letters, digits, '-' and '_', starting and ending with a letter or digit",
            ]
        );
        let mut s = valid();
        s.endpoint.ports =
            vec![PortConfig { published: 0, target: 80, mode: PublishMode::Ingress, ..Default::default() }];
        assert_eq!(errors(&s), ["endpoint.ports[0].published: the ingress mode needs a published port"]);
        s.endpoint.ports[0].published = 80;
        assert_eq!(s.validate(), Ok(()));
        s.endpoint.mode = EndpointMode::Dnsrr;
        assert_eq!(
            errors(&s),
            ["endpoint.ports[0].mode: ingress ports need a virtual IP: use mode=host with --endpoint-mode dnsrr"]
        );
        // The routing mesh forwards an ingress port to another target port on every driver's
        // tasks (they get a network namespace of their own); a host-mode one cannot.
        let mut s = valid();
        s.endpoint.ports = vec![PortConfig {
            published: 8080,
            target: 80,
            mode: PublishMode::Ingress,
            ..Default::default()
        }];
        assert_eq!(s.validate(), Ok(()));
        s.endpoint.ports[0].mode = PublishMode::Host;
        assert!(first_error(&s)
            .starts_with("endpoint.ports[0].published: tasks without an image run on the process driver"));
        // The docker driver joins overlays (through an infra container), but cannot publish
        // host-mode ports from there: refused at create time, not per task.
        let mut s = valid();
        s.task_template.driver = Some("docker".into());
        s.task_template.image = Some("busybox".into());
        s.networks = vec![NetworkAttachmentConfig { target: "net1".into(), aliases: vec![] }];
        assert_eq!(s.validate(), Ok(()));
        s.endpoint.ports = vec![PortConfig { published: 8080, target: 80, ..Default::default() }];
        assert!(
            first_error(&s).starts_with("endpoint.ports: the docker driver cannot publish host-mode ports"),
            "{}",
            first_error(&s)
        );
        s.endpoint.ports[0].mode = PublishMode::Ingress;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn depends_on_names_other_services_once() {
        use crate::service::{Dependency, DependencyCondition};
        let dep = |s: &str| Dependency { service: s.into(), condition: DependencyCondition::Started };
        let mut s = valid();
        s.depends_on = vec![dep("db"), dep("web"), dep("db"), dep("-x")];
        assert_eq!(
            errors(&s),
            [
                "depends_on[1].service: service web cannot depend on itself",
                "depends_on[2].service: db is listed twice",
                "depends_on[3].service: invalid name \"-x\": use letters, digits, '-' and '_', starting and ending with a letter or digit",
            ]
        );
        s.depends_on =
            vec![dep("db"), Dependency { service: "cache".into(), condition: DependencyCondition::Healthy }];
        assert_eq!(s.validate(), Ok(()));
        // Old JSON (no field) reads back, and a spec without dependencies writes none.
        let json = serde_json::to_string(&valid()).expect("json");
        assert!(!json.contains("depends_on"), "{json}");
        let back: ServiceSpec =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("back");
        assert_eq!(back.depends_on, s.depends_on);
        let compose: crate::service::Dependency =
            serde_json::from_str(r#"{"service":"db","condition":"service_healthy"}"#).expect("alias");
        assert_eq!(compose.condition, DependencyCondition::Healthy);
    }

    #[test]
    fn mode_flags() {
        assert_eq!(mode_from_flags("replicated", Some(3), None), Ok(ServiceMode::Replicated { replicas: 3 }));
        let e = mode_from_flags("global", Some(3), None).expect_err("replicas on global");
        assert!(e.to_string().contains("replicas can only be used with replicated mode"));
        assert_eq!(
            mode_from_flags("replicated-job", Some(10), Some(2)),
            Ok(ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 10 })
        );
        assert!(mode_from_flags("swarm", None, None).is_err());
    }
}
