//! The process driver: runs a task's command directly on the host, under a per-task shim
//! ([`shoal_driver::shim`]) and in per-task cgroups that enforce its limits (see [`cgroup`]).
//!
//! - No image, no mounts, no isolation other than cgroups and an optional uid/gid.
//! - The command is resolved when preparing: an absolute path, a path relative to the working
//!   directory, or a name searched in the task's `PATH` (default
//!   [`DEFAULT_PATH`]). The task's environment is exactly `TaskConfig::env`, plus `PATH` when it
//!   has none.
//! - The working directory defaults to the task directory.
//! - `exec` runs the command with the task's environment, working directory and user, but as a
//!   child of the agent and **outside the task's cgroups** (joining them would need code between
//!   fork and exec, i.e. `unsafe`): it does not count against the task's limits. It is killed
//!   (its whole process group) after the timeout; its output is capped at 4 KiB.

pub mod cgroup;
mod exec_tty;

use async_trait::async_trait;
use cgroup::{Layout, TaskCgroups};
use serde::{Deserialize, Serialize};
use shoal_driver::shim::{self, Launched, ShimSpec};
use shoal_driver::{
    capability, CheckpointOptions, CheckpointReport, ContainerOptions, Driver, DriverError, ExecResult,
    ExitStatus, Handle, LogOptions, LogReceiver, Recovered, Stats, TaskConfig, MIN_MEMORY_LIMIT,
};
use shoal_types::DriverInfo;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const DRIVER_NAME: &str = "process";

/// `PATH` for tasks that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The message of a task the kernel's OOM killer ended.
pub const OOM_MESSAGE: &str = "out of memory (OOM killed)";

/// Output kept from `exec`.
const EXEC_OUTPUT_CAP: usize = 4096;

/// How long `stop`/`destroy` wait for the shim to record the exit after the task was killed.
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which cgroups to use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// Detect v1 or v2 from `/proc/self/mountinfo`.
    #[default]
    Auto,
    /// No cgroups: no limits, no OOM detection, stop kills the process group only.
    Disabled,
    Layout(Layout),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessDriverConfig {
    /// The `shoal` binary (runs `shoal shim TASK_DIR`).
    pub shim_exe: PathBuf,
    pub cgroups: CgroupMode,
    /// The parent cgroup of all of Shoal's task cgroups.
    pub cgroup_parent: String,
    /// Rotate a task's log at this size (0: never).
    pub log_max_bytes: u64,
    /// Log files kept per task, the current one included.
    pub log_max_files: u32,
}

impl ProcessDriverConfig {
    pub fn new(shim_exe: impl Into<PathBuf>) -> Self {
        Self {
            shim_exe: shim_exe.into(),
            cgroups: CgroupMode::Auto,
            cgroup_parent: "shoal".into(),
            log_max_bytes: 10 << 20,
            log_max_files: 3,
        }
    }
}

pub struct ProcessDriver {
    cfg: ProcessDriverConfig,
    layout: Option<Layout>,
    /// `criu` once `criu check` passed (checked at the first fingerprint or checkpoint).
    criu: std::sync::Mutex<Option<PathBuf>>,
    /// The parent cgroup's pids cap is in place (see [`cgroup`]'s docs).
    parent_pids_capped: AtomicBool,
    /// Failing to cap it was logged as a warning already.
    parent_pids_warned: AtomicBool,
}

/// Marks a task stopped by a checkpoint: its exit is reported as [`ExitStatus::checkpointed`].
const CHECKPOINTED: &str = "checkpointed.json";

/// What a process checkpoint needs besides CRIU's images: the task's output pipes, which the
/// restore hands to the new shim.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProcessCheckpoint {
    stdout: String,
    stderr: String,
    tcp_established: bool,
    /// The checkpointed processes' pids: CRIU restores them with the same pids, so they must be
    /// free where the task is restored.
    #[serde(default)]
    pids: Vec<i32>,
}

/// The first of `pids` that is still in use on this node: a process, or the process group or
/// session of one (a zombie still holds its group's id until it is reaped).
fn pid_in_use(pids: &[i32]) -> Option<i32> {
    if let Some(p) = pids.iter().find(|p| Path::new(&format!("/proc/{p}")).exists()) {
        return Some(*p);
    }
    let entries = std::fs::read_dir("/proc").ok()?;
    for e in entries.flatten() {
        let Some(stat) = e
            .file_name()
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| std::fs::read_to_string(format!("/proc/{n}/stat")).ok())
        else {
            continue;
        };
        // After the command: state ppid pgrp session ...
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for f in fields.iter().skip(2).take(2) {
            if let Ok(id) = f.parse::<i32>() {
                if pids.contains(&id) {
                    return Some(id);
                }
            }
        }
    }
    None
}

/// Waits (at most 5 s, polling) until none of `pids` is in use; the error says which one stays.
async fn wait_pids_free(pids: &[i32]) -> Result<(), DriverError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Some(p) = pid_in_use(pids) {
        if std::time::Instant::now() >= deadline {
            return Err(DriverError::Runtime(format!(
                "pid {p} is in use on this node (a process, or the group of a process not yet reaped): \
                 CRIU restores a process task with its own pids"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `pid` and all its descendants, from `/proc/<pid>/task/*/children`.
fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    out
}

/// The driver-private part of a [`Handle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub launched: Launched,
    pub task_dir: PathBuf,
    pub cgroups: Option<TaskCgroups>,
    pub memory_limit: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The task runs in namespaces of its own (overlay networks): exec joins them.
    #[serde(default)]
    pub own_namespaces: bool,
}

/// A task's command and context, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Resolved {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    uid: Option<u32>,
    gid: Option<u32>,
    /// Supplementary gids (`--group`).
    groups: Vec<u32>,
    /// The task's own `resolv.conf` (DNS options).
    resolv_conf: Option<PathBuf>,
}

impl ProcessDriver {
    pub fn new(cfg: ProcessDriverConfig) -> Self {
        let layout = match &cfg.cgroups {
            CgroupMode::Auto => {
                let l = cgroup::detect();
                if l.is_none() {
                    tracing::warn!("no cgroup hierarchy found: process tasks run without limits");
                }
                l
            }
            CgroupMode::Disabled => None,
            CgroupMode::Layout(l) => Some(l.clone()),
        };
        Self {
            cfg,
            layout,
            criu: std::sync::Mutex::new(None),
            parent_pids_capped: AtomicBool::new(false),
            parent_pids_warned: AtomicBool::new(false),
        }
    }

    /// Caps the pids of all of Shoal's tasks together, so that no task can take the node's last
    /// pids (see [`cgroup`]'s docs); until it succeeds once, tried again at every start.
    fn cap_parent_pids(&self) {
        let Some(layout) = &self.layout else { return };
        if self.parent_pids_capped.load(Ordering::Relaxed) {
            return;
        }
        let capped = cgroup::node_pid_space()
            .ok_or_else(|| std::io::Error::other("cannot read kernel.pid_max"))
            .and_then(|space| {
                let limit =
                    layout.cap_parent_pids(&self.cfg.cgroup_parent, cgroup::parent_pids_cap(space))?;
                Ok((space, limit))
            });
        match capped {
            Ok((space, limit)) => {
                self.parent_pids_capped.store(true, Ordering::Relaxed);
                tracing::info!(
                    parent = %self.cfg.cgroup_parent, limit, node_pids = space,
                    "the pids of all tasks together are capped"
                );
            }
            Err(e) if !self.parent_pids_warned.swap(true, Ordering::Relaxed) => tracing::warn!(
                parent = %self.cfg.cgroup_parent, error = %e,
                "cannot cap the pids of all tasks together: a task without a pids limit may exhaust the node's pids"
            ),
            Err(e) => tracing::debug!(error = %e, "cannot cap the pids of all tasks together"),
        }
    }

    /// `criu` from `PATH` when `criu check` passes on this node.
    async fn criu(&self) -> Option<PathBuf> {
        if let Some(p) = self.criu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Some(p);
        }
        let path = std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let criu = resolve_program("criu", &path, Path::new("/"))?;
        let info = shoal_driver::criu::probe(&criu).await?;
        tracing::info!(criu = %info.version, "process driver: criu check passes: checkpoint/restore available");
        *self.criu.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(criu.clone());
        Some(criu)
    }

    async fn criu_or_unsupported(&self) -> Result<PathBuf, DriverError> {
        self.criu().await.ok_or_else(|| DriverError::Unsupported {
            driver: DRIVER_NAME.into(),
            what: "checkpoint/restore: no working criu on this node (scripts/install-criu.sh)".into(),
        })
    }

    /// Starts the shim for `cfg`: it runs the task, or, with `restore`, CRIU restoring it.
    async fn launch_task(
        &self,
        cfg: &TaskConfig,
        r: Resolved,
        restore: Option<(Vec<String>, PathBuf)>,
    ) -> Result<Handle, DriverError> {
        let (cgroups, shims) = match &self.layout {
            Some(layout) => {
                let cg = layout.task(&self.cfg.cgroup_parent, &cgroup::sanitize(&cfg.task_id));
                cg.create(&cfg.limits).map_err(|e| DriverError::runtime("creating the task's cgroup", e))?;
                self.cap_parent_pids();
                let shims = layout.task(&self.cfg.cgroup_parent, "shims");
                if let Err(e) = shims.create(&Default::default()) {
                    tracing::warn!(error = %e, "cannot create the shims cgroup; shims stay in the task's cgroup");
                }
                (Some(cg), Some(shims))
            }
            None => {
                if cfg.limits != Default::default() {
                    tracing::warn!(task = %cfg.task_id, "no cgroups on this node: limits are not enforced");
                }
                (None, None)
            }
        };
        let (log_max_bytes, log_max_files) =
            cfg.options.log_rotation(self.cfg.log_max_bytes, self.cfg.log_max_files);
        let mut spec = ShimSpec {
            argv: r.argv.clone(),
            env: r.env.clone(),
            cwd: r.cwd.clone(),
            uid: r.uid,
            gid: r.gid,
            cgroup_procs: cgroups.as_ref().map(TaskCgroups::procs_files).unwrap_or_default(),
            leave_cgroup_procs: shims.as_ref().map(TaskCgroups::procs_files).unwrap_or_default(),
            log_max_bytes,
            log_max_files,
            restored_pidfile: None,
            netns: cfg.netns.clone(),
            resolv_conf: r.resolv_conf.clone().or_else(|| cfg.resolv_conf.clone()),
            secret_files: cfg.secret_files.clone(),
            rlimits: cfg
                .options
                .ulimits
                .iter()
                .map(|u| shim::ShimRlimit {
                    name: u.name.clone(),
                    soft: shoal_types::Ulimit::kernel_value(u.soft),
                    hard: shoal_types::Ulimit::kernel_value(u.hard),
                })
                .collect(),
            groups: r.groups.clone(),
        };
        if let Some((argv, pidfile)) = restore {
            // CRIU runs as root; the restored task gets its own credentials back from the images.
            spec.argv = argv;
            spec.env = BTreeMap::from([(
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            )]);
            spec.cwd = PathBuf::from("/");
            spec.uid = None;
            spec.gid = None;
            spec.rlimits.clear();
            spec.groups.clear();
            spec.restored_pidfile = Some(pidfile);
        }
        let launched = match shim::launch(&self.cfg.shim_exe, &cfg.task_dir, &spec).await {
            Ok(l) => l,
            Err(e) => {
                if let Some(cg) = &cgroups {
                    if let Err(re) = cg.remove().await {
                        tracing::warn!(error = %re, "removing the cgroup of a task that did not start");
                    }
                }
                return Err(e);
            }
        };
        let state = State {
            launched,
            task_dir: cfg.task_dir.clone(),
            cgroups,
            memory_limit: cfg.limits.memory_bytes,
            env: r.env,
            cwd: r.cwd,
            uid: r.uid,
            gid: r.gid,
            own_namespaces: cfg.netns.is_some(),
        };
        tracing::info!(task = %cfg.task_id, pid = launched.child_pid, shim = launched.shim_pid, "process task started");
        Ok(Handle {
            task_id: cfg.task_id.clone(),
            driver: DRIVER_NAME.into(),
            runtime_id: launched.child_pid.to_string(),
            state: serde_json::to_value(&state)
                .map_err(|e| DriverError::runtime("encoding the handle", e))?,
        })
    }

    /// The detected cgroup layout, if any.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Why cgroups cannot be used, or `None` when they can.
    fn cgroups_unusable(&self) -> Option<String> {
        let Some(layout) = &self.layout else { return Some("no cgroup hierarchy found".into()) };
        for d in layout.parent_dirs(&self.cfg.cgroup_parent) {
            if let Err(e) = std::fs::create_dir_all(&d) {
                return Some(format!("cannot create {}: {e}", d.display()));
            }
            if let Err(e) = rustix::fs::access(&d, rustix::fs::Access::WRITE_OK) {
                return Some(format!("{} is not writable: {e}", d.display()));
            }
        }
        if let Layout::V1 { controllers } = layout {
            for c in ["memory", "cpu", "pids"] {
                if !controllers.contains_key(c) {
                    return Some(format!("the {c} controller is not mounted"));
                }
            }
        }
        None
    }

    fn resolve(&self, cfg: &TaskConfig) -> Result<Resolved, DriverError> {
        if cfg.image.as_deref().is_some_and(|i| !i.is_empty()) {
            return Err(DriverError::Invalid("the process driver does not run images".into()));
        }
        if !cfg.mounts.is_empty() {
            return Err(DriverError::Invalid("the process driver does not support mounts".into()));
        }
        let o = &cfg.options;
        // A process on the node has no root filesystem, capability set or container of its own.
        ContainerOptions::refuse(
            DRIVER_NAME,
            &[
                (o.read_only, "--read-only (a root filesystem of the task's own)"),
                (
                    !o.cap_add.is_empty() || !o.cap_drop.is_empty(),
                    "--cap-add/--cap-drop (a capability set of the task's own)",
                ),
                (o.init, "--init (an init process in a container)"),
                (o.tty, "--tty (a terminal)"),
                (!o.labels.is_empty(), "--container-label (a container to label)"),
            ],
        )?;
        if let Some(l) = &o.log_driver {
            if let Some(problem) = shoal_types::container::check_log_driver(l).into_iter().next() {
                return Err(DriverError::Invalid(problem));
            }
        }
        if let Some(m) = cfg.limits.memory_bytes {
            if m < MIN_MEMORY_LIMIT {
                return Err(DriverError::Invalid(format!(
                    "memory limit {m} bytes is below the minimum of {MIN_MEMORY_LIMIT} bytes"
                )));
            }
        }
        if cfg.limits.nano_cpus == Some(0) || cfg.limits.pids == Some(0) {
            return Err(DriverError::Invalid("cpu and pids limits must be positive".into()));
        }
        let cwd = if cfg.workdir.is_empty() { cfg.task_dir.clone() } else { PathBuf::from(&cfg.workdir) };
        if !cwd.is_dir() {
            return Err(DriverError::Invalid(format!("working directory {} does not exist", cwd.display())));
        }
        let mut env = cfg.env.clone();
        env.entry("PATH".into()).or_insert_with(|| DEFAULT_PATH.into());
        let mut argv: Vec<String> = cfg.command.iter().chain(cfg.args.iter()).cloned().collect();
        let Some(program) = argv.first_mut() else {
            return Err(DriverError::Invalid("the process driver needs a command".into()));
        };
        let path_var = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
        let resolved = resolve_program(program, path_var, &cwd)
            .ok_or_else(|| DriverError::Invalid(format!("executable not found: {program}")))?;
        *program = resolved.to_string_lossy().into_owned();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let (uid, gid) = parse_user(&cfg.user, &passwd, &group).map_err(DriverError::Invalid)?;
        let groups = shoal_driver::resolve_groups(&o.groups, &group, "the node's /etc/group")?;
        let resolv_conf = shoal_driver::write_resolv_conf(cfg)?;
        Ok(Resolved { argv, env, cwd, uid, gid, groups, resolv_conf })
    }

    fn state(handle: &Handle) -> Result<State, DriverError> {
        if handle.driver != DRIVER_NAME {
            return Err(DriverError::NotFound(format!("{} is a {} task", handle.task_id, handle.driver)));
        }
        serde_json::from_value(handle.state.clone())
            .map_err(|e| DriverError::NotFound(format!("{}: unreadable handle state: {e}", handle.task_id)))
    }

    /// The OOM flag and message, from the cgroup.
    fn annotate(state: &State, mut status: ExitStatus) -> ExitStatus {
        if state.task_dir.join(CHECKPOINTED).exists() {
            return ExitStatus::checkpointed();
        }
        if let Some(cg) = &state.cgroups {
            let oom = match cg.oom_kills() {
                Some(n) => n > 0,
                // Old v1 kernels without the counter: the limit was hit and the task got SIGKILL.
                None => status.signal == Some(9) && cg.memory_failcnt().is_some_and(|f| f > 0),
            };
            if oom && (status.signal == Some(9) || status.code != 0) {
                status.oom_killed = true;
                status.message = OOM_MESSAGE.into();
            }
        }
        status
    }

    async fn kill_everything(state: &State) {
        if let Some(p) = rustix::process::Pid::from_raw(state.launched.child_pid) {
            if shim::is_running(&state.launched) && shim::read_exit(&state.task_dir).is_none() {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
            }
        }
        if let Some(cg) = &state.cgroups {
            cg.kill_all().await;
        }
    }

    async fn wait_shim(state: &State) -> Result<ExitStatus, DriverError> {
        tokio::time::timeout(SHIM_EXIT_TIMEOUT, shim::wait(&state.task_dir, &state.launched)).await.map_err(
            |_| DriverError::Runtime("the task's shim did not exit after the task was killed".into()),
        )?
    }
}

/// The command that runs `cmd` in the task of `state` (for `exec` and `exec_stream`): with the
/// task's environment, working directory and user; a task on overlay networks has its own network
/// and mount namespaces (its resolver's resolv.conf), which the command joins through `nsenter`
/// (the program at `nsenter`), as `docker exec` does. `new` makes the command for the program
/// started (the resolved `cmd[0]`, or `nsenter`).
fn exec_command(
    state: &State,
    cmd: &[String],
    nsenter: &std::ffi::OsStr,
    new: impl Fn(&std::ffi::OsStr) -> tokio::process::Command,
) -> Result<tokio::process::Command, DriverError> {
    let Some(program) = cmd.first() else {
        return Err(DriverError::Invalid("exec needs a command".into()));
    };
    let path_var = state.env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
    let resolved = resolve_program(program, path_var, &state.cwd)
        .ok_or_else(|| DriverError::Invalid(format!("executable not found: {program}")))?;
    let mut c = if state.own_namespaces {
        let mut c = new(nsenter);
        c.arg(format!("--target={}", state.launched.child_pid)).args(["--net", "--mount"]);
        if let Some(g) = state.gid {
            c.arg(format!("--setgid={g}"));
        }
        if let Some(u) = state.uid {
            c.arg(format!("--setuid={u}"));
        }
        c.arg("--").arg(resolved);
        c
    } else {
        let mut c = new(resolved.as_os_str());
        if let Some(g) = state.gid {
            c.gid(g);
        }
        if let Some(u) = state.uid {
            c.uid(u);
        }
        c
    };
    c.args(&cmd[1..]).env_clear().envs(&state.env).current_dir(&state.cwd);
    Ok(c)
}

/// Finds `program`: absolute, relative to `cwd` when it contains a slash, or searched in `path`.
fn resolve_program(program: &str, path: &str, cwd: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = cwd.join(program);
        return executable(&p).then_some(p);
    }
    path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(program)).find(|p| executable(p))
}

/// Parses `uid[:gid]` or `name[:group]` against `/etc/passwd` and `/etc/group` contents. A user
/// without a group gets its passwd group (0 when the uid is not in passwd, like Docker).
fn parse_user(spec: &str, passwd: &str, group: &str) -> Result<(Option<u32>, Option<u32>), String> {
    if spec.is_empty() {
        return Ok((None, None));
    }
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    };
    let users = entries(passwd);
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = users
                .iter()
                .find(|e| e.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
                .and_then(|e| e.get(3)?.parse().ok());
            (uid, gid.unwrap_or(0))
        }
        Err(_) => {
            let e = users
                .iter()
                .find(|e| e.first().map(String::as_str) == Some(user))
                .ok_or_else(|| format!("user {user} not found in /etc/passwd"))?;
            let uid = e
                .get(2)
                .and_then(|u| u.parse().ok())
                .ok_or_else(|| format!("bad passwd entry for {user}"))?;
            let gid = e
                .get(3)
                .and_then(|g| g.parse().ok())
                .ok_or_else(|| format!("bad passwd entry for {user}"))?;
            (uid, gid)
        }
    };
    let gid = match grp {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group)
                .iter()
                .find(|e| e.first().map(String::as_str) == Some(g))
                .and_then(|e| e.get(2)?.parse().ok())
                .ok_or_else(|| format!("group {g} not found in /etc/group"))?,
        },
    };
    Ok((Some(uid), Some(gid)))
}

#[async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    async fn fingerprint(&self) -> Option<DriverInfo> {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy().into_owned();
        let version = match &self.layout {
            Some(l) => format!("{release} (cgroup v{})", l.version()),
            None => format!("{release} (no cgroups)"),
        };
        if !self.cfg.shim_exe.is_file() {
            tracing::warn!(shim = %self.cfg.shim_exe.display(), "the shim executable is missing");
            return None;
        }
        let mut capabilities = match self.cgroups_unusable() {
            None => {
                self.cap_parent_pids();
                vec![capability::LIMITS.to_string(), capability::EXEC.to_string()]
            }
            Some(why) => {
                tracing::warn!(reason = %why, "process driver: cgroups unusable; no limits or exec offered");
                Vec::new()
            }
        };
        if self.criu().await.is_some() {
            capabilities.push(capability::CHECKPOINT.to_string());
        }
        Some(DriverInfo { name: DRIVER_NAME.into(), version, capabilities })
    }

    async fn prepare(&self, cfg: &TaskConfig) -> Result<(), DriverError> {
        self.resolve(cfg).map(|_| ())
    }

    async fn start(&self, cfg: &TaskConfig) -> Result<Handle, DriverError> {
        let r = self.resolve(cfg)?;
        self.launch_task(cfg, r, None).await
    }

    async fn recover(&self, handle: &Handle) -> Result<Recovered, DriverError> {
        let state = Self::state(handle)?;
        if let Some(s) = shim::read_exit(&state.task_dir) {
            return Ok(Recovered::Exited(Self::annotate(&state, s)));
        }
        if shim::is_running(&state.launched) {
            return Ok(Recovered::Running);
        }
        // The shim may have written exit.json between the two looks.
        if let Some(s) = shim::read_exit(&state.task_dir) {
            return Ok(Recovered::Exited(Self::annotate(&state, s)));
        }
        tracing::warn!(task = %handle.task_id, "the task's shim is gone without an exit status");
        if let Some(cg) = &state.cgroups {
            cg.kill_all().await;
        }
        Ok(Recovered::Exited(shim::supervisor_died()))
    }

    async fn wait(&self, handle: &Handle) -> Result<ExitStatus, DriverError> {
        let state = Self::state(handle)?;
        let status = shim::wait(&state.task_dir, &state.launched).await?;
        Ok(Self::annotate(&state, status))
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), DriverError> {
        let state = Self::state(handle)?;
        if shim::read_exit(&state.task_dir).is_some() || !shim::is_running(&state.launched) {
            // Already exited; make sure nothing it spawned lingers.
            if let Some(cg) = &state.cgroups {
                cg.kill_all().await;
            }
            return Ok(());
        }
        if let Some(p) = rustix::process::Pid::from_raw(state.launched.child_pid) {
            if let Err(e) = rustix::process::kill_process_group(p, rustix::process::Signal::TERM) {
                tracing::debug!(task = %handle.task_id, error = %e, "SIGTERM to the task's process group");
            }
        }
        if tokio::time::timeout(grace, shim::wait(&state.task_dir, &state.launched)).await.is_ok() {
            if let Some(cg) = &state.cgroups {
                cg.kill_all().await;
            }
            return Ok(());
        }
        tracing::info!(task = %handle.task_id, ?grace, "the task did not stop within its grace period: SIGKILL");
        Self::kill_everything(&state).await;
        Self::wait_shim(&state).await.map(|_| ())
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), DriverError> {
        let state = Self::state(handle)?;
        if shim::is_running(&state.launched) {
            Self::kill_everything(&state).await;
            Self::wait_shim(&state).await?;
        }
        if let Some(cg) = &state.cgroups {
            cg.remove().await.map_err(|e| DriverError::runtime("removing the task's cgroup", e))?;
        }
        Ok(())
    }

    async fn logs(&self, handle: &Handle, opts: &LogOptions) -> Result<LogReceiver, DriverError> {
        let state = Self::state(handle)?;
        shim::logs(&state.task_dir, opts).await
    }

    async fn stats(&self, handle: &Handle) -> Result<Stats, DriverError> {
        let state = Self::state(handle)?;
        let mut s = match &state.cgroups {
            Some(cg) => cg.stats(),
            None => Stats::default(),
        };
        s.memory_limit_bytes = state.memory_limit;
        Ok(s)
    }

    async fn exec(
        &self,
        handle: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, DriverError> {
        let state = Self::state(handle)?;
        let mut c = exec_command(&state, cmd, "nsenter".as_ref(), |p| tokio::process::Command::new(p))?;
        let program = &cmd[0];
        c.process_group(0)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().map_err(|e| DriverError::runtime(&format!("exec {program}"), e))?;
        let pgid = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
        let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(DriverError::Runtime("exec: missing output pipes".into()));
        };
        let run = async {
            let (o, e) = tokio::join!(read_capped(&mut out), read_capped(&mut err));
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((o, e, status))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok((o, e, status))) => {
                use std::os::unix::process::ExitStatusExt;
                let mut output = o;
                output.extend_from_slice(&e);
                output.truncate(EXEC_OUTPUT_CAP);
                let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1);
                Ok(ExecResult { exit_code: code, output: String::from_utf8_lossy(&output).into_owned() })
            }
            Ok(Err(e)) => Err(DriverError::runtime(&format!("exec {program}"), e)),
            Err(_) => {
                if let Some(p) = pgid {
                    let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                }
                Ok(ExecResult { exit_code: 124, output: format!("exec timed out after {timeout:?}") })
            }
        }
    }

    async fn exec_stream(
        &self,
        handle: &Handle,
        cmd: &[String],
        opts: &shoal_driver::ExecStreamOptions,
    ) -> Result<shoal_driver::ExecSession, DriverError> {
        exec_tty::exec_stream(handle, cmd, opts)
    }

    async fn checkpoint(
        &self,
        handle: &Handle,
        dir: &Path,
        opts: &CheckpointOptions,
    ) -> Result<CheckpointReport, DriverError> {
        let started = std::time::Instant::now();
        let state = Self::state(handle)?;
        let criu = self.criu_or_unsupported().await?;
        if !shim::is_running(&state.launched) || shim::read_exit(&state.task_dir).is_some() {
            return Err(DriverError::Invalid(format!("task {} is not running", handle.task_id)));
        }
        let pid = state.launched.child_pid;
        // The output pipes the task writes to, so a restore can hand it its new shim's.
        let pipe = |fd: u32| -> Result<String, DriverError> {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map_err(|e| DriverError::runtime(&format!("reading the task's fd {fd}"), e))?;
            let link = link.to_string_lossy().into_owned();
            if !link.starts_with("pipe:[") {
                return Err(DriverError::Invalid(format!(
                    "the task's fd {fd} is {link}, not its output pipe"
                )));
            }
            Ok(link)
        };
        let meta = ProcessCheckpoint {
            stdout: pipe(1)?,
            stderr: pipe(2)?,
            tcp_established: opts.tcp_established,
            pids: process_tree(pid),
        };
        let images = dir.join("criu");
        std::fs::create_dir_all(&images)
            .map_err(|e| DriverError::runtime("creating the checkpoint directory", e))?;
        let marker = state.task_dir.join(CHECKPOINTED);
        if !opts.leave_running {
            // Before the dump stops the task, so whoever waits for it sees why it ended.
            shim::write_atomic(&marker, b"{}").map_err(|e| DriverError::runtime("marking the task", e))?;
        }
        if opts.pre_dumps > 0 {
            tracing::warn!(task = %handle.task_id, "process driver: pre-dumps are not supported; one final dump");
        }
        let log = dir.join("dump.log");
        let mut cmd = tokio::process::Command::new(&criu);
        cmd.arg("dump")
            .args(["-t", &pid.to_string(), "--shell-job", "--file-locks", "-v2"])
            .arg("-D")
            .arg(&images)
            .arg("--log-file")
            .arg(&log)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if opts.leave_running {
            cmd.arg("--leave-running");
        }
        if opts.tcp_established {
            cmd.arg("--tcp-established");
        }
        let out = cmd.output().await.map_err(|e| DriverError::runtime("running criu dump", e));
        let failed = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!("criu dump failed ({}): {}", o.status, shoal_driver::criu::log_tail(&log))),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            let _ = std::fs::remove_file(&marker);
            return Err(DriverError::Runtime(why));
        }
        let json =
            serde_json::to_vec(&meta).map_err(|e| DriverError::runtime("encoding the checkpoint", e))?;
        shim::write_atomic(&dir.join("process.json"), &json)
            .map_err(|e| DriverError::runtime("writing process.json", e))?;
        let took = started.elapsed();
        Ok(CheckpointReport { pre_dumps: 0, freeze: took, total: took })
    }

    async fn restore(&self, cfg: &TaskConfig, dir: &Path) -> Result<Handle, DriverError> {
        let criu = self.criu_or_unsupported().await?;
        let meta: ProcessCheckpoint = std::fs::read(dir.join("process.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                DriverError::Invalid(format!("{} is not a checkpoint of a process task", dir.display()))
            })?;
        let r = self.resolve(cfg)?;
        // The checkpointed processes come back with their pids: wait (briefly) for them to be
        // free, e.g. while the stopped originals are reaped on this node.
        wait_pids_free(&meta.pids).await?;
        let pidfile = dir.join("restored.pid");
        let log = dir.join("restore.log");
        let _ = std::fs::remove_file(&pidfile);
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut argv = vec![
            path(&criu),
            "restore".into(),
            "-D".into(),
            path(&dir.join("criu")),
            "--shell-job".into(),
            "--restore-detached".into(),
            "--restore-sibling".into(),
            "--file-locks".into(),
            "--manage-cgroups=ignore".into(),
            "--pidfile".into(),
            path(&pidfile),
            "--log-file".into(),
            path(&log),
            "-v2".into(),
            "--inherit-fd".into(),
            format!("fd[1]:{}", meta.stdout),
            "--inherit-fd".into(),
            format!("fd[2]:{}", meta.stderr),
        ];
        if meta.tcp_established {
            argv.push("--tcp-established".into());
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match self.launch_task(cfg, r.clone(), Some((argv.clone(), pidfile.clone()))).await {
                Ok(h) => return Ok(h),
                Err(e) => format!("{e}: {}", shoal_driver::criu::log_tail(&log)),
            };
            // A pid of the tree still taken, typically a process the dump stopped that is not
            // reaped yet (the recorded pids are from just before the dump): wait for it, retry.
            let taken = err
                .split("Can't fork for ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<i32>().ok());
            let Some(pid) = taken.filter(|_| attempts < 4) else { return Err(DriverError::Runtime(err)) };
            wait_pids_free(&[pid]).await?;
        }
    }
}

/// Reads everything, keeping the first [`EXEC_OUTPUT_CAP`] bytes.
async fn read_capped(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = EXEC_OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn users() {
        assert_eq!(parse_user("", PASSWD, GROUP), Ok((None, None)));
        assert_eq!(parse_user("nobody", PASSWD, GROUP), Ok((Some(65534), Some(65534))));
        assert_eq!(parse_user("1000", PASSWD, GROUP), Ok((Some(1000), Some(0))));
        assert_eq!(parse_user("65534", PASSWD, GROUP), Ok((Some(65534), Some(65534))));
        assert_eq!(parse_user("1000:50", PASSWD, GROUP), Ok((Some(1000), Some(50))));
        assert_eq!(parse_user("nobody:staff", PASSWD, GROUP), Ok((Some(65534), Some(50))));
        assert!(parse_user("ghost", PASSWD, GROUP).is_err());
        assert!(parse_user("root:ghosts", PASSWD, GROUP).is_err());
    }

    #[test]
    fn programs() {
        let cwd = Path::new("/");
        assert_eq!(resolve_program("sh", DEFAULT_PATH, cwd).map(|p| p.is_absolute()), Some(true));
        assert_eq!(resolve_program("/bin/sh", "", cwd), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_program("bin/sh", "", cwd), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_program("no-such-program-xyz", DEFAULT_PATH, cwd), None);
        // Not executable.
        assert_eq!(resolve_program("/etc/passwd", "", cwd), None);
        assert_eq!(resolve_program("sh", "", cwd), None);
    }

    #[tokio::test]
    async fn validation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = ProcessDriver::new(ProcessDriverConfig {
            cgroups: CgroupMode::Disabled,
            ..ProcessDriverConfig::new("/nonexistent")
        });
        let base =
            TaskConfig { command: vec!["sh".into()], task_dir: dir.path().into(), ..Default::default() };
        d.prepare(&base).await.expect("valid");
        let invalid = |c: TaskConfig| {
            let d = &d;
            async move {
                match d.prepare(&c).await {
                    Err(DriverError::Invalid(m)) => m,
                    other => panic!("expected Invalid, got {other:?}"),
                }
            }
        };
        assert_eq!(
            invalid(TaskConfig { command: vec![], ..base.clone() }).await,
            "the process driver needs a command"
        );
        assert_eq!(
            invalid(TaskConfig { command: vec!["nope-xyz".into()], ..base.clone() }).await,
            "executable not found: nope-xyz"
        );
        let mut m = base.clone();
        m.mounts.push(Default::default());
        assert_eq!(invalid(m).await, "the process driver does not support mounts");
        let mut l = base.clone();
        l.limits.memory_bytes = Some(1 << 20);
        assert!(invalid(l).await.contains("below the minimum"));
        assert!(invalid(TaskConfig { workdir: "/no/such/dir".into(), ..base.clone() })
            .await
            .contains("does not exist"));
        assert!(invalid(TaskConfig { user: "ghost-user-xyz".into(), ..base.clone() })
            .await
            .contains("not found"));
    }
}
