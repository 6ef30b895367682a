//! [`OciDriver`]: tasks as runc containers, each the child of its own shim.
//!
//! Per task (all under the agent's `task_dir`):
//! - `upper/`, `work/`: the overlayfs upper and work dirs; `rootfs/`: the overlay mount whose
//!   lowerdirs are the image's unpacked layers in the store (shared, read-only).
//! - `bundle/config.json`: the runtime spec (built from oci-spec's defaults).
//! - the shim's files (`shim.json`, `exit.json`, `logs/`...), see [`shoal_driver::shim`].
//!
//! The shim runs `runc run --keep --bundle <task_dir>/bundle shoal-<task_id>` in the foreground
//! (no terminal, stdio passed through), so runc's exit status is the container's and the output
//! lands in the shim's logs exactly as for the process driver. `--keep` leaves the stopped
//! container and its cgroup in place until [`Driver::destroy`], so the OOM counter can be read
//! after the exit. The cgroup path is absolute, `/shoal/<task_id>` (v1: under every controller
//! hierarchy; v2: `/sys/fs/cgroup/shoal/<task_id>`). The limits (memory, cpu, pids) go into the
//! spec's `linux.resources`; a task without a pids limit has none of its own, but `/shoal` is
//! the process driver's parent too, whose `pids.max` caps all tasks together below the node's
//! pid space (see `shoal_driver_process::cgroup`).
//!
//! Containers share the host network; they get their own pid, mount, uts, ipc and cgroup
//! namespaces. runc's state lives in its default root (`/run/runc`).
//!
//! Checkpoint/restore (CRIU through `runc --criu`): [`OciDriver::checkpoint_with`] dumps the
//! container and its upper dir into a checkpoint directory ([`crate::checkpoint`]); a dump that
//! stops the task leaves `checkpointed.json` in the task dir so [`Driver::wait`] reports
//! [`ExitStatus::checkpointed`] instead of runc's 137. [`Driver::restore`] builds the rootfs and
//! bundle as `start` does (the upper dir from the saved changes) and runs `runc restore` in the
//! foreground under a new shim, like `runc run`; the restored processes keep the pipes they had
//! (runc maps them through `descriptors.json`), so their output lands in the new task's log.
//! `runc restore` has no `--keep`: the container and its cgroup go when it exits.

use crate::checkpoint::{self, Manifest};
use crate::store::{ImageStore, ResolvedImage, StoreError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_driver::criu::CriuInfo;
use shoal_driver::shim::{self, Launched, ShimSpec};
use shoal_driver::{
    capability, CheckpointOptions, CheckpointReport, ContainerOptions, Driver, DriverError, ExecResult,
    ExitStatus, Handle, LogOptions, LogReceiver, Recovered, Stats, TaskConfig, MIN_MEMORY_LIMIT,
};
use shoal_types::{DriverInfo, MountType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DRIVER_NAME: &str = "oci";
const EXEC_OUTPUT_CAP: usize = 64 << 10;

/// How to build an [`OciDriver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciDriverConfig {
    /// The node's data dir; the image store is `<root>/images`.
    pub root: PathBuf,
    /// The `shoal` binary (run as `<shim_exe> shim <task_dir>`).
    pub shim_exe: PathBuf,
    /// The runc binary; a bare name is looked up on `PATH`.
    pub runc: PathBuf,
    /// The criu binary runc uses for checkpoint/restore; a bare name is looked up on `PATH`.
    pub criu: PathBuf,
}

impl OciDriverConfig {
    pub fn new(root: impl Into<PathBuf>, shim_exe: impl Into<PathBuf>) -> Self {
        OciDriverConfig {
            root: root.into(),
            shim_exe: shim_exe.into(),
            runc: PathBuf::from("runc"),
            criu: PathBuf::from("criu"),
        }
    }
}

/// The oci driver.
#[derive(Clone, Debug)]
pub struct OciDriver {
    cfg: OciDriverConfig,
    /// The last successful CRIU probe (a failed one is not kept: it is retried).
    criu: std::sync::Arc<std::sync::Mutex<Option<CriuInfo>>>,
}

/// What [`Handle::state`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HandleState {
    container_id: String,
    task_dir: PathBuf,
    rootfs: PathBuf,
    /// Absolute cgroup path (`/shoal/<task_id>`).
    cgroup: String,
    launched: Launched,
}

/// What [`OciDriver::setup_bundle`] made.
struct Bundle {
    container_id: String,
    rootfs: PathBuf,
    bundle: PathBuf,
    cgroup: String,
}

/// `<task_dir>/checkpointed.json`: a checkpoint that stops the task is (being) taken, so its end
/// is not a crash. Written before the dump, removed when the dump fails.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct CheckpointMarker {
    /// `dumping` or `done`.
    state: String,
    dir: PathBuf,
    /// Saving the checkpoint failed after CRIU had stopped the task.
    error: Option<String>,
}

fn marker_path(task_dir: &Path) -> PathBuf {
    task_dir.join("checkpointed.json")
}

fn write_marker(task_dir: &Path, m: &CheckpointMarker) -> Result<(), DriverError> {
    let data = serde_json::to_vec(m).map_err(|e| DriverError::runtime("encoding checkpointed.json", e))?;
    let tmp = task_dir.join("checkpointed.json.tmp");
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, marker_path(task_dir)))
        .map_err(|e| DriverError::runtime("writing checkpointed.json", e))
}

fn read_marker(task_dir: &Path) -> Option<CheckpointMarker> {
    serde_json::from_slice(&std::fs::read(marker_path(task_dir)).ok()?).ok()
}

/// How a task that a checkpoint stopped ended, once the checkpoint is done (`None`: it was not
/// stopped by one). Waits for a dump in progress (the shim sees runc exit before the dump returns).
async fn checkpoint_outcome(task_dir: &Path) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = read_marker(task_dir)?;
        if m.state == "done" {
            return Some(match m.error {
                None => ExitStatus::checkpointed(),
                Some(e) => ExitStatus {
                    code: 1,
                    signal: None,
                    oom_killed: false,
                    message: format!("{}, but saving the checkpoint failed: {e}", shoal_driver::CHECKPOINTED),
                },
            });
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of(h: &Handle) -> Result<HandleState, DriverError> {
    serde_json::from_value(h.state.clone()).map_err(|e| DriverError::runtime("invalid oci handle", e))
}

fn store_err(e: StoreError) -> DriverError {
    match e {
        StoreError::NotFound(n) => {
            DriverError::Invalid(format!("image not found: {n}; load it with `shoal image load` or pull it"))
        }
        StoreError::Unpack { .. } | StoreError::DigestMismatch { .. } | StoreError::InvalidArchive(_) => {
            DriverError::Invalid(e.to_string())
        }
        e => DriverError::Runtime(e.to_string()),
    }
}

/// Finds `name` on `PATH` when it is not a path already.
fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The OOM-kill count of the container's cgroup, if readable.
fn oom_kills(cgroup: &str) -> Option<u64> {
    let rel = cgroup.trim_start_matches('/');
    let (path, key) = if cgroup_v2() {
        (PathBuf::from("/sys/fs/cgroup").join(rel).join("memory.events"), "oom_kill")
    } else {
        (PathBuf::from("/sys/fs/cgroup/memory").join(rel).join("memory.oom_control"), "oom_kill")
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next().and_then(|v| v.parse().ok())).flatten()
    })
}

/// `/etc/<name>` of the rootfs, never following symlinks out of it ("" when it is not there).
fn read_etc(rootfs: &Path, name: &str) -> String {
    let etc = rootfs.join("etc");
    let file = etc.join(name);
    let is_plain =
        |p: &Path| std::fs::symlink_metadata(p).map(|m| !m.file_type().is_symlink()).unwrap_or(false);
    if is_plain(&etc) && is_plain(&file) {
        std::fs::read_to_string(file).unwrap_or_default()
    } else {
        String::new()
    }
}

/// Where `--init` looks for the node's init (a static binary: it runs inside the container).
pub const INIT_BINARIES: &[&str] = &["docker-init", "tini-static", "tini"];
/// Where the init is mounted in the container (as Docker does).
pub const INIT_TARGET: &str = "/sbin/docker-init";

/// The node's init for `--init`: the first of [`INIT_BINARIES`] on `PATH` (Debian's docker.io
/// ships `/usr/bin/docker-init`, a static tini).
fn init_binary() -> Result<PathBuf, DriverError> {
    INIT_BINARIES.iter().find_map(|b| which(Path::new(b))).ok_or_else(|| {
        DriverError::Invalid(format!(
            "--init needs an init on the node ({} on PATH; Debian's docker.io or tini packages ship one)",
            INIT_BINARIES.join(", ")
        ))
    })
}

/// The process's capabilities: runc's default set (Docker's), or every capability with
/// `--cap-add ALL`; then `--cap-drop` (`ALL`: none), then the capabilities added by name.
pub fn capabilities(add: &[String], drop: &[String]) -> Vec<String> {
    let all = |v: &[String]| v.iter().any(|c| c == "ALL");
    let mut caps: Vec<String> = if all(add) {
        shoal_types::container::CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if all(drop) {
        caps.clear();
    } else {
        caps.retain(|c| !drop.contains(c));
    }
    for c in add.iter().filter(|c| c.as_str() != "ALL") {
        if !caps.contains(c) {
            caps.push(c.clone());
        }
    }
    caps
}

/// Resolves `user` (`uid[:gid]`, `name[:group]`) against the rootfs's `/etc/passwd` and
/// `/etc/group`, never following symlinks out of it.
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), DriverError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let read = |name: &str| read_etc(rootfs, name);
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let passwd = read("passwd");
            let f = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[0] == u)
                .ok_or_else(|| {
                    DriverError::Invalid(format!("user {u:?} not found in the image's /etc/passwd"))
                })?;
            let uid = f[2].parse().map_err(|_| DriverError::Invalid(format!("bad uid for user {u:?}")))?;
            (uid, f[3].parse().ok())
        }
    };
    let gid = match g {
        None => primary_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read("group");
                group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        DriverError::Invalid(format!("group {g:?} not found in the image's /etc/group"))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The process arguments: the task's command (+ args), else the image's entrypoint + (the task's
/// args, else the image's cmd).
pub fn process_args(cfg: &TaskConfig, img: &ResolvedImage) -> Vec<String> {
    if !cfg.command.is_empty() {
        return cfg.command.iter().chain(&cfg.args).cloned().collect();
    }
    let tail = if cfg.args.is_empty() { &img.cmd } else { &cfg.args };
    img.entrypoint.iter().chain(tail).cloned().collect()
}

/// The environment: the image's, overridden by the task's.
pub fn process_env(cfg: &TaskConfig, img: &ResolvedImage) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in &img.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        env.insert(k.to_string(), v.to_string());
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for (k, v) in &cfg.env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// What [`build_spec`] needs from the node besides the task and its image.
#[derive(Clone, Debug, Default)]
pub struct SpecExtras {
    /// Supplementary gids (resolved from the image's `/etc/group`).
    pub groups: Vec<u32>,
    /// The node's init binary, for `--init`.
    pub init: Option<PathBuf>,
    /// The task's own `resolv.conf` (DNS options).
    pub resolv_conf: Option<PathBuf>,
}

/// Builds the bundle's `config.json` (validated by parsing it back as an oci-spec `Spec`).
fn build_spec(
    cfg: &TaskConfig,
    img: &ResolvedImage,
    rootfs: &Path,
    uid: u32,
    gid: u32,
    cgroup: &str,
    extras: &SpecExtras,
) -> Result<serde_json::Value, DriverError> {
    use serde_json::json;
    let o = &cfg.options;
    ContainerOptions::refuse(
        DRIVER_NAME,
        &[(o.tty, "--tty (a terminal for the task; use the docker driver)")],
    )?;
    if let Some(l) = &o.log_driver {
        if let Some(problem) = shoal_types::container::check_log_driver(l).into_iter().next() {
            return Err(DriverError::Invalid(problem));
        }
    }
    let mut v = serde_json::to_value(oci_spec::runtime::Spec::default())
        .map_err(|e| DriverError::runtime("building the runtime spec", e))?;
    let mut args = process_args(cfg, img);
    if args.is_empty() {
        return Err(DriverError::Invalid(format!(
            "no command: the task has none and the image {} has no entrypoint or cmd",
            img.name
        )));
    }
    if o.init {
        if extras.init.is_none() {
            return Err(init_binary()
                .err()
                .unwrap_or_else(|| DriverError::Invalid("--init: no init".into())));
        }
        args = [INIT_TARGET.to_string(), "--".to_string()].into_iter().chain(args).collect();
    }
    let cwd = if !cfg.workdir.is_empty() {
        cfg.workdir.clone()
    } else if !img.workdir.is_empty() {
        img.workdir.clone()
    } else {
        "/".into()
    };
    if !cwd.starts_with('/') {
        return Err(DriverError::Invalid(format!("workdir must be absolute: {cwd}")));
    }
    let hostname =
        if cfg.hostname.is_empty() { cfg.task_id.chars().take(12).collect() } else { cfg.hostname.clone() };
    let caps = capabilities(&o.cap_add, &o.cap_drop);
    let mut user = json!({"uid": uid, "gid": gid});
    if !extras.groups.is_empty() {
        user["additionalGids"] = json!(extras.groups);
    }
    v["process"] = json!({
        "terminal": false,
        "user": user,
        "args": args,
        "env": process_env(cfg, img),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": true,
    });
    // Without ulimits: none, the container inherits the node's (the shim's).
    if let Some(p) = v["process"].as_object_mut() {
        p.remove("rlimits");
    }
    if !o.ulimits.is_empty() {
        let rlimits: Vec<serde_json::Value> = o
            .ulimits
            .iter()
            .map(|u| {
                json!({
                    "type": u.rlimit_name(),
                    "soft": shoal_types::Ulimit::kernel_value(u.soft),
                    "hard": shoal_types::Ulimit::kernel_value(u.hard),
                })
            })
            .collect();
        v["process"]["rlimits"] = json!(rlimits);
    }
    if !o.labels.is_empty() {
        v["annotations"] = json!(o.labels);
    }
    v["root"] = json!({"path": rootfs, "readonly": o.read_only});
    v["hostname"] = json!(hostname);

    let mut mounts = v["mounts"].as_array().cloned().unwrap_or_default();
    // runc's own cgroup mount is fine; host files for a host-network container, the node's
    // resolver for a container on overlay networks:
    let resolv = extras
        .resolv_conf
        .clone()
        .or_else(|| cfg.resolv_conf.clone())
        .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"));
    for (dest, source) in [("/etc/resolv.conf", resolv.as_path()), ("/etc/hosts", Path::new("/etc/hosts"))] {
        if source.is_file() {
            mounts.push(
                json!({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate", "ro"]}),
            );
        }
    }
    if let (true, Some(init)) = (o.init, &extras.init) {
        mounts.push(json!({"destination": INIT_TARGET, "type": "bind", "source": init, "options": ["rbind", "rprivate", "ro"]}));
    }
    for m in &cfg.mounts {
        let source = match m.kind {
            MountType::Bind => PathBuf::from(&m.source),
            MountType::Volume => cfg.volumes_dir.join(&m.source),
        };
        mounts.push(json!({
            "destination": m.target,
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate", if m.readonly { "ro" } else { "rw" }],
        }));
    }
    // Secrets and configs: single files from the task's tmpfs, read-only.
    for f in &cfg.secret_files {
        mounts.push(json!({
            "destination": f.target,
            "type": "bind",
            "source": f.source,
            "options": ["bind", "rprivate", "ro", "nosuid", "nodev", "noexec"],
        }));
    }
    v["mounts"] = json!(mounts);

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(mem) = cfg.limits.memory_bytes {
        resources["memory"] = json!({"limit": mem, "swap": mem});
    }
    if let Some(nano) = cfg.limits.nano_cpus {
        let period: u64 = 100_000;
        let quota = (nano.saturating_mul(period) / 1_000_000_000).max(1000);
        resources["cpu"] = json!({"quota": quota, "period": period});
    }
    if let Some(pids) = cfg.limits.pids {
        resources["pids"] = json!({"limit": pids});
    }
    let linux = &mut v["linux"];
    linux["resources"] = resources;
    linux["cgroupsPath"] = json!(cgroup);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    // On overlay networks runc joins the namespace the agent prepared; otherwise the container
    // shares the node's network.
    if let Some(netns) = &cfg.netns {
        namespaces.push(json!({"type": "network", "path": netns}));
    }
    linux["namespaces"] = json!(namespaces);
    serde_json::from_value::<oci_spec::runtime::Spec>(v.clone())
        .map_err(|e| DriverError::runtime("the generated runtime spec is invalid", e))?;
    Ok(v)
}

fn volume_name_ok(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

impl OciDriver {
    pub fn new(cfg: OciDriverConfig) -> Self {
        OciDriver { cfg, criu: Default::default() }
    }

    /// The node's image store (`<root>/images`).
    pub fn store(&self) -> Result<ImageStore, DriverError> {
        ImageStore::open(self.cfg.root.join("images"))
            .map_err(|e| DriverError::runtime("opening the image store", e))
    }

    fn runc_path(&self) -> Result<PathBuf, DriverError> {
        which(&self.cfg.runc)
            .ok_or_else(|| DriverError::Runtime(format!("runc not found: {}", self.cfg.runc.display())))
    }

    async fn runc(&self, args: &[&str]) -> Result<std::process::Output, DriverError> {
        let runc = self.runc_path()?;
        tokio::process::Command::new(&runc)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| DriverError::runtime(&format!("running {}", runc.display()), e))
    }

    async fn resolve_image(&self, cfg: &TaskConfig) -> Result<ResolvedImage, DriverError> {
        let name = cfg
            .image
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| DriverError::Invalid("the oci driver needs an image".into()))?;
        let store = self.store()?;
        tokio::task::spawn_blocking(move || store.resolve(&name))
            .await
            .map_err(|e| DriverError::runtime("resolving the image", e))?
            .map_err(store_err)
    }

    fn check_mounts(cfg: &TaskConfig) -> Result<(), DriverError> {
        for m in &cfg.mounts {
            if !m.target.starts_with('/') {
                return Err(DriverError::Invalid(format!("mount target must be absolute: {}", m.target)));
            }
            match m.kind {
                MountType::Bind => {
                    let src = Path::new(&m.source);
                    if !src.is_absolute() || !src.exists() {
                        return Err(DriverError::Invalid(format!(
                            "bind mount source does not exist: {}",
                            m.source
                        )));
                    }
                }
                MountType::Volume => {
                    if !volume_name_ok(&m.source) {
                        return Err(DriverError::Invalid(format!("invalid volume name: {:?}", m.source)));
                    }
                    std::fs::create_dir_all(cfg.volumes_dir.join(&m.source))
                        .map_err(|e| DriverError::runtime(&format!("creating volume {}", m.source), e))?;
                }
            }
        }
        Ok(())
    }

    /// Stops polling when the shim is gone or the deadline passes; true when gone.
    /// `runc run` returns only when the container exits, so the shim reports the task started as
    /// soon as runc runs; the task is running once runc says so (or has already exited). A
    /// container that never came up is an error, with what runc said.
    async fn wait_started(
        &self,
        container_id: &str,
        l: &Launched,
        task_dir: &Path,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        // runc writes its pid file once the container exists, a moment before it starts it; until
        // then a look at the file (not a `runc state`, an exec of the runtime: ~5 ms) is enough.
        let pid_file = runc_pid_file(task_dir);
        loop {
            if !pid_file.exists() && shim::is_running(l) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let out = self.runc(&["state", container_id]).await?;
            if out.status.success() {
                let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                if matches!(state["status"].as_str(), Some("running" | "stopped" | "paused")) {
                    return Ok(());
                }
            } else if !shim::is_running(l) {
                // Gone already: a container that ran and exited is still known to runc (`--keep`).
                if self.runc(&["state", container_id]).await?.status.success() {
                    return Ok(());
                }
                let said = log_tail(task_dir, 3);
                return Err(
                    if said.contains("executable file not found")
                        || said.contains("no such file or directory")
                    {
                        DriverError::Invalid(format!("the container could not start: {said}"))
                    } else {
                        DriverError::Runtime(format!("the container could not start: {said}"))
                    },
                );
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Runtime(format!("{container_id} did not start within 60s")));
            }
            // Created, not started yet: that takes runc well under a millisecond.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Creates the task's overlay rootfs and bundle (`config.json`). With `rootfs_diff` (a restore),
    /// the upper dir starts afresh from that layer tarball instead of being reused.
    async fn setup_bundle(
        &self,
        cfg: &TaskConfig,
        rootfs_diff: Option<&Path>,
    ) -> Result<Bundle, DriverError> {
        let img = self.resolve_image(cfg).await?;
        let task_dir = cfg.task_dir.clone();
        let (upper, work, rootfs, bundle) =
            (task_dir.join("upper"), task_dir.join("work"), task_dir.join("rootfs"), task_dir.join("bundle"));
        if let Some(diff) = rootfs_diff {
            if is_mounted(&rootfs) {
                rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH)
                    .map_err(|e| DriverError::runtime(&format!("unmounting {}", rootfs.display()), e))?;
            }
            for d in [&upper, &work] {
                match std::fs::remove_dir_all(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(DriverError::runtime(&format!("removing {}", d.display()), e)),
                }
            }
            std::fs::create_dir_all(&upper)
                .map_err(|e| DriverError::runtime(&format!("creating {}", upper.display()), e))?;
            let (diff, up) = (diff.to_path_buf(), upper.clone());
            let r = tokio::task::spawn_blocking(move || checkpoint::apply_rootfs_diff(&diff, &up))
                .await
                .map_err(|e| DriverError::runtime("restoring the rootfs changes", e))?
                .map_err(|e| DriverError::Invalid(format!("restoring the rootfs changes: {e}")))?;
            tracing::debug!(task = %cfg.task_id, entries = r.entries, bytes = r.bytes, "rootfs changes restored");
        }
        for d in [&upper, &work, &rootfs, &bundle] {
            std::fs::create_dir_all(d)
                .map_err(|e| DriverError::runtime(&format!("creating {}", d.display()), e))?;
        }
        if !is_mounted(&rootfs) {
            let lowers: Vec<String> = img.layer_dirs.iter().rev().map(|p| p.display().to_string()).collect();
            let all: Vec<String> = lowers
                .iter()
                .cloned()
                .chain([upper.display().to_string(), work.display().to_string()])
                .collect();
            if all.iter().any(|p| p.contains(',') || p.contains(':')) {
                return Err(DriverError::Runtime("overlay paths may not contain ',' or ':'".into()));
            }
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lowers.join(":"),
                all[all.len() - 2],
                all[all.len() - 1]
            );
            let data =
                std::ffi::CString::new(data).map_err(|e| DriverError::runtime("overlay options", e))?;
            rustix::mount::mount(
                "overlay",
                &rootfs,
                "overlay",
                rustix::mount::MountFlags::empty(),
                data.as_c_str(),
            )
            .map_err(|e| {
                DriverError::runtime(&format!("mounting the overlay rootfs at {}", rootfs.display()), e)
            })?;
        }
        let user = if cfg.user.is_empty() { img.user.clone() } else { cfg.user.clone() };
        let (uid, gid) = resolve_user(&rootfs, &user)?;
        let cgroup = format!("/shoal/{}", cfg.task_id);
        let o = &cfg.options;
        let extras = SpecExtras {
            groups: shoal_driver::resolve_groups(
                &o.groups,
                &read_etc(&rootfs, "group"),
                "the image's /etc/group",
            )?,
            init: if o.init { Some(init_binary()?) } else { None },
            resolv_conf: shoal_driver::write_resolv_conf(cfg)?,
        };
        let spec = build_spec(cfg, &img, &rootfs, uid, gid, &cgroup, &extras)?;
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| DriverError::runtime("encoding config.json", e))?;
        std::fs::write(bundle.join("config.json"), json)
            .map_err(|e| DriverError::runtime("writing config.json", e))?;
        Ok(Bundle { container_id: format!("shoal-{}", cfg.task_id), rootfs, bundle, cgroup })
    }

    /// Runs `argv` (`runc run` or `runc restore`, in the foreground) under a new shim and returns
    /// the handle once the container runs; cleans up when it does not come up.
    async fn launch_container(
        &self,
        cfg: &TaskConfig,
        b: Bundle,
        argv: Vec<String>,
        restore_log: Option<&Path>,
    ) -> Result<Handle, DriverError> {
        let task_dir = cfg.task_dir.clone();
        let shim_spec = ShimSpec {
            argv,
            env: BTreeMap::from([(
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            )]),
            cwd: b.bundle.clone(),
            log_max_bytes: cfg.options.log_rotation(10 << 20, 3).0,
            log_max_files: cfg.options.log_rotation(10 << 20, 3).1,
            ..ShimSpec::default()
        };
        let container_id = b.container_id;
        let launched = shim::launch(&self.cfg.shim_exe, &task_dir, &shim_spec).await?;
        let started = match restore_log {
            None => self.wait_started(&container_id, &launched, &task_dir).await,
            Some(log) => Self::wait_restored(&launched, &task_dir, log).await,
        };
        let st = HandleState {
            container_id: container_id.clone(),
            task_dir,
            rootfs: b.rootfs,
            cgroup: b.cgroup,
            launched,
        };
        let handle = Handle {
            task_id: cfg.task_id.clone(),
            driver: DRIVER_NAME.into(),
            runtime_id: container_id.clone(),
            state: serde_json::to_value(&st).map_err(|e| DriverError::runtime("encoding the handle", e))?,
        };
        if let Err(e) = started {
            // The agent keeps no handle for a task that failed to start: leave nothing behind
            // (container state, overlay mount, cgroup).
            if let Err(d) = self.destroy(&handle).await {
                tracing::warn!(task = %cfg.task_id, error = %d, "cleaning up after a failed start");
            }
            return Err(e);
        }
        let what = if restore_log.is_some() { "oci task restored" } else { "oci task started" };
        tracing::info!(task = %cfg.task_id, container = %container_id, "{what}");
        Ok(handle)
    }

    /// Waits until CRIU reports the restore done (`runc restore` runs in the foreground and, unlike
    /// `runc run --keep`, removes the container once it exits, so `runc state` cannot tell).
    async fn wait_restored(l: &Launched, task_dir: &Path, log: &Path) -> Result<(), DriverError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Restore finished successfully") {
                return Ok(());
            }
            if !shim::is_running(l) {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if text.contains("Restore finished successfully") {
                    return Ok(());
                }
                return Err(DriverError::Runtime(format!(
                    "the restore failed: {}; criu: {}",
                    log_tail(task_dir, 3),
                    shoal_driver::criu::log_tail(log)
                )));
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Runtime("the restore did not finish within 120s".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn criu_path(&self) -> Result<PathBuf, DriverError> {
        which(&self.cfg.criu).ok_or_else(|| DriverError::Unsupported {
            driver: DRIVER_NAME.into(),
            what: format!("checkpoint/restore: criu not found ({})", self.cfg.criu.display()),
        })
    }

    /// CRIU's version and features when `criu check` passes (probes again each time).
    pub async fn criu_info(&self) -> Option<CriuInfo> {
        let info = shoal_driver::criu::probe(&self.criu_path().ok()?).await;
        if let Ok(mut c) = self.criu.lock() {
            c.clone_from(&info);
        }
        info
    }

    /// The criu binary and what it can do, probed once (and by every `fingerprint`).
    async fn criu_ready(&self) -> Result<(PathBuf, CriuInfo), DriverError> {
        let criu = self.criu_path()?;
        let cached = self.criu.lock().ok().and_then(|c| c.clone());
        let info = match cached {
            Some(i) => Some(i),
            None => self.criu_info().await,
        };
        match info {
            Some(i) => Ok((criu, i)),
            None => Err(DriverError::Unsupported {
                driver: DRIVER_NAME.into(),
                what: format!(
                    "checkpoint/restore: `{} check` fails on this node (scripts/install-criu.sh)",
                    criu.display()
                ),
            }),
        }
    }

    /// `runc --criu CRIU ARGS...`; an error carries what runc and CRIU's `log` said.
    async fn runc_criu(&self, criu: &Path, args: &[String], log: &Path) -> Result<(), DriverError> {
        let mut all: Vec<&str> = vec!["--criu"];
        let criu_s = criu.display().to_string();
        all.push(&criu_s);
        all.extend(args.iter().map(String::as_str));
        let out = self.runc(&all).await?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim();
        Err(DriverError::Runtime(format!(
            "runc {}: {said}; criu: {}",
            args.first().map(String::as_str).unwrap_or(""),
            shoal_driver::criu::log_tail(log)
        )))
    }

    /// Checkpoints the task into `dir` (which must be empty or missing; see [`checkpoint`] for
    /// its layout). Pre-dumps, if any, run first while the task keeps running; then the final
    /// dump, after which the task is stopped (unless `leave_running`: then it is paused around
    /// the dump and the filesystem copy, so both match, and resumed).
    pub async fn checkpoint_with(
        &self,
        handle: &Handle,
        dir: &Path,
        opts: &CheckpointOptions,
    ) -> Result<CheckpointReport, DriverError> {
        let t0 = Instant::now();
        let st = state_of(handle)?;
        // runc resolves relative paths against its own working directory.
        let dir = &std::path::absolute(dir).map_err(|e| DriverError::runtime("checkpoint dir", e))?;
        if !shim::is_running(&st.launched) {
            return Err(DriverError::Runtime(format!("{} is not running", st.container_id)));
        }
        let (criu, info) = self.criu_ready().await?;
        match std::fs::read_dir(dir) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(DriverError::Invalid(format!("{} is not empty", dir.display())));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
                .map_err(|e| DriverError::runtime(&format!("creating {}", dir.display()), e))?,
            Err(e) => return Err(DriverError::runtime(&format!("reading {}", dir.display()), e)),
        }
        let work = fresh_dir(&st.task_dir.join("criu-work").join("dump"))?;
        let pre_dumps = if opts.pre_dumps > 0 && !info.mem_dirty_track {
            tracing::warn!(
                task = %handle.task_id,
                "this kernel does not track dirty memory (CONFIG_MEM_SOFT_DIRTY): no pre-dumps"
            );
            0
        } else {
            opts.pre_dumps
        };
        let common = |args: &mut Vec<String>| {
            args.push("--file-locks".into());
            if opts.tcp_established {
                args.push("--tcp-established".into());
            }
        };
        let mut manifest = Manifest {
            format: 1,
            task_id: handle.task_id.clone(),
            container_id: st.container_id.clone(),
            criu_version: info.version.clone(),
            tcp_established: opts.tcp_established,
            leave_running: opts.leave_running,
            ..Manifest::default()
        };
        for i in 1..=pre_dumps {
            let name = format!("pre-{i}");
            let w = fresh_dir(&work.join(&name))?;
            let mut args: Vec<String> = vec!["checkpoint".into(), "--pre-dump".into()];
            args.extend(["--image-path".into(), dir.join(&name).display().to_string()]);
            args.extend(["--work-path".into(), w.display().to_string()]);
            if let Some(p) = manifest.pre_dumps.last() {
                args.extend(["--parent-path".into(), format!("../{p}")]);
            }
            common(&mut args);
            args.push(st.container_id.clone());
            self.runc_criu(&criu, &args, &w.join("dump.log")).await?;
            manifest.pre_dumps.push(name);
        }

        let w = fresh_dir(&work.join("final"))?;
        let mut args: Vec<String> = vec!["checkpoint".into()];
        args.extend(["--image-path".into(), dir.join(checkpoint::IMAGES_DIR).display().to_string()]);
        args.extend(["--work-path".into(), w.display().to_string()]);
        if let Some(p) = manifest.pre_dumps.last() {
            args.extend(["--parent-path".into(), format!("../{p}")]);
        }
        if opts.leave_running {
            args.push("--leave-running".into());
        }
        common(&mut args);
        args.push(st.container_id.clone());
        let marker = CheckpointMarker { state: "dumping".into(), dir: dir.to_path_buf(), error: None };
        let frozen_at = Instant::now();
        if opts.leave_running {
            let out = self.runc(&["pause", &st.container_id]).await?;
            if !out.status.success() {
                return Err(DriverError::Runtime(format!(
                    "runc pause {}: {}",
                    st.container_id,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        } else {
            write_marker(&st.task_dir, &marker)?;
        }
        let dumped = self.runc_criu(&criu, &args, &w.join("dump.log")).await;
        let mut freeze = frozen_at.elapsed();
        if let Err(e) = dumped {
            if opts.leave_running {
                self.resume(&st.container_id).await;
            } else {
                let _ = std::fs::remove_file(marker_path(&st.task_dir));
            }
            return Err(e);
        }
        let (upper, out) = (st.task_dir.join("upper"), dir.join(checkpoint::ROOTFS_DIFF));
        let diff = tokio::task::spawn_blocking(move || checkpoint::write_rootfs_diff(&upper, &out))
            .await
            .map_err(|e| DriverError::runtime("saving the rootfs changes", e))
            .and_then(|r| r.map_err(|e| DriverError::runtime("saving the rootfs changes", e)));
        if opts.leave_running {
            self.resume(&st.container_id).await;
            freeze = frozen_at.elapsed();
        }
        manifest.created_at = humantime_now();
        let saved = diff.and_then(|_| manifest.write(dir).map_err(|e| DriverError::Runtime(e.to_string())));
        if !opts.leave_running {
            let error = saved.as_ref().err().map(|e| e.to_string());
            write_marker(&st.task_dir, &CheckpointMarker { state: "done".into(), error, ..marker })?;
        }
        saved?;
        let report = CheckpointReport { pre_dumps, freeze, total: t0.elapsed() };
        tracing::info!(
            task = %handle.task_id,
            dir = %dir.display(),
            pre_dumps,
            freeze_ms = report.freeze.as_millis() as u64,
            total_ms = report.total.as_millis() as u64,
            "oci task checkpointed"
        );
        Ok(report)
    }

    async fn resume(&self, container_id: &str) {
        match self.runc(&["resume", container_id]).await {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(
                container = container_id,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "runc resume failed after a checkpoint"
            ),
            Err(e) => {
                tracing::warn!(container = container_id, error = %e, "runc resume failed after a checkpoint")
            }
        }
    }

    async fn wait_gone(l: &Launched, deadline: Instant) -> bool {
        loop {
            if !shim::is_running(l) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn finish_status(st: &HandleState, mut s: ExitStatus) -> ExitStatus {
        if oom_kills(&st.cgroup).unwrap_or(0) > 0 {
            s.oom_killed = true;
            if s.message.is_empty() {
                s.message = "killed by the OOM killer (memory limit reached)".into();
            }
        }
        s
    }

    async fn kill(&self, id: &str, all: bool, signal: &str) -> Result<(), DriverError> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        let out = self.runc(&args).await?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not running")
            || err.contains("does not exist")
            || err.contains("process already finished")
        {
            return Ok(());
        }
        Err(DriverError::Runtime(format!("runc kill {id} {signal}: {}", err.trim())))
    }
}

#[async_trait]
impl Driver for OciDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    async fn fingerprint(&self) -> Option<DriverInfo> {
        let out = self.runc(&["--version"]).await.ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("runc version "))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let mut capabilities =
            vec![capability::IMAGES.into(), capability::LIMITS.into(), capability::EXEC.into()];
        // DriverInfo has no place for the CRIU version: it is logged.
        match self.criu_info().await {
            Some(criu) => {
                tracing::info!(
                    criu = %criu.version,
                    pre_dumps = criu.mem_dirty_track,
                    "criu check passes: checkpoint/restore available"
                );
                capabilities.push(capability::CHECKPOINT.into());
            }
            None => tracing::info!(criu = %self.cfg.criu.display(), "no working criu: no checkpoint/restore"),
        }
        Some(DriverInfo { name: DRIVER_NAME.into(), version, capabilities })
    }

    async fn prepare(&self, cfg: &TaskConfig) -> Result<(), DriverError> {
        if let Some(mem) = cfg.limits.memory_bytes {
            if mem < MIN_MEMORY_LIMIT {
                return Err(DriverError::Invalid(format!(
                    "memory limit {mem} bytes is below the minimum of {MIN_MEMORY_LIMIT} bytes"
                )));
            }
        }
        Self::check_mounts(cfg)?;
        let img = self.resolve_image(cfg).await?;
        let argv = process_args(cfg, &img);
        if let Some(program) = argv.first() {
            if !program_in_image(program, cfg, &img) {
                return Err(DriverError::Invalid(format!(
                    "executable not found in image {}: {program}",
                    img.name
                )));
            }
        }
        Ok(())
    }

    async fn start(&self, cfg: &TaskConfig) -> Result<Handle, DriverError> {
        self.prepare(cfg).await?;
        let b = self.setup_bundle(cfg, None).await?;
        // A leftover from an interrupted start: only where runc has state for the container (each
        // runc call is an exec of the runtime, a few milliseconds of every start).
        if runc_knows(&b.container_id) {
            let _ = self.runc(&["delete", "--force", &b.container_id]).await;
        }
        let runc = self.runc_path()?;
        let pid_file = runc_pid_file(&cfg.task_dir);
        match std::fs::remove_file(&pid_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DriverError::runtime("removing a stale runc.pid", e)),
        }
        let argv = vec![
            runc.display().to_string(),
            "run".into(),
            "--keep".into(),
            "--pid-file".into(),
            pid_file.display().to_string(),
            "--bundle".into(),
            b.bundle.display().to_string(),
            b.container_id.clone(),
        ];
        self.launch_container(cfg, b, argv, None).await
    }

    async fn recover(&self, handle: &Handle) -> Result<Recovered, DriverError> {
        let st = state_of(handle)?;
        if shim::is_running(&st.launched) {
            return Ok(Recovered::Running);
        }
        if let Some(s) = shim::read_exit(&st.task_dir) {
            if let Some(c) = checkpoint_outcome(&st.task_dir).await {
                return Ok(Recovered::Exited(c));
            }
            return Ok(Recovered::Exited(Self::finish_status(&st, s)));
        }
        // The shim is gone without a record: ask runc.
        let out = self.runc(&["state", &st.container_id]).await?;
        if !out.status.success() {
            return Err(DriverError::NotFound(st.container_id));
        }
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if state["status"] == "running" {
            // Orphaned container with no supervisor: nobody collects its output or status.
            let _ = self.kill(&st.container_id, true, "KILL").await;
        }
        Ok(Recovered::Exited(shim::supervisor_died()))
    }

    async fn wait(&self, handle: &Handle) -> Result<ExitStatus, DriverError> {
        let st = state_of(handle)?;
        let s = shim::wait(&st.task_dir, &st.launched).await?;
        if let Some(c) = checkpoint_outcome(&st.task_dir).await {
            return Ok(c);
        }
        Ok(Self::finish_status(&st, s))
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), DriverError> {
        let st = state_of(handle)?;
        if !shim::is_running(&st.launched) {
            return Ok(());
        }
        self.kill(&st.container_id, false, "TERM").await?;
        if Self::wait_gone(&st.launched, Instant::now() + grace).await {
            return Ok(());
        }
        self.kill(&st.container_id, true, "KILL").await?;
        if Self::wait_gone(&st.launched, Instant::now() + Duration::from_secs(30)).await {
            Ok(())
        } else {
            Err(DriverError::Runtime(format!("{} did not exit after SIGKILL", st.container_id)))
        }
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), DriverError> {
        let st = state_of(handle)?;
        if shim::is_running(&st.launched) {
            self.stop(handle, Duration::ZERO).await?;
        }
        let out = self.runc(&["delete", "--force", &st.container_id]).await?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("does not exist") && !err.contains("not exist") {
                return Err(DriverError::Runtime(format!("runc delete {}: {}", st.container_id, err.trim())));
            }
            // A container whose init failed leaves an empty state dir behind; rmdir only
            // removes it when empty.
            let _ = std::fs::remove_dir(runc_state_dir(&st.container_id));
        }
        if is_mounted(&st.rootfs) {
            rustix::mount::unmount(&st.rootfs, rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| DriverError::runtime(&format!("unmounting {}", st.rootfs.display()), e))?;
        }
        for d in ["upper", "work", "rootfs"] {
            let p = st.task_dir.join(d);
            match std::fs::remove_dir_all(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(DriverError::runtime(&format!("removing {}", p.display()), e)),
            }
        }
        Ok(())
    }

    async fn checkpoint(
        &self,
        handle: &Handle,
        dir: &Path,
        opts: &CheckpointOptions,
    ) -> Result<CheckpointReport, DriverError> {
        self.checkpoint_with(handle, dir, opts).await
    }

    async fn restore(&self, cfg: &TaskConfig, dir: &Path) -> Result<Handle, DriverError> {
        let dir = &std::path::absolute(dir).map_err(|e| DriverError::runtime("checkpoint dir", e))?;
        let images = dir.join(checkpoint::IMAGES_DIR);
        let diff = dir.join(checkpoint::ROOTFS_DIFF);
        if !images.is_dir() || !diff.is_file() {
            return Err(DriverError::Invalid(format!("{} holds no checkpoint", dir.display())));
        }
        let manifest = Manifest::read(dir).map_err(|e| DriverError::Invalid(e.to_string()))?;
        let (criu, _) = self.criu_ready().await?;
        self.prepare(cfg).await?;
        match std::fs::remove_file(marker_path(&cfg.task_dir)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DriverError::runtime("removing a stale checkpointed.json", e)),
        }
        let b = self.setup_bundle(cfg, Some(&diff)).await?;
        let _ = self.runc(&["delete", "--force", &b.container_id]).await;
        let work = fresh_dir(&cfg.task_dir.join("criu-work").join("restore"))?;
        let runc = self.runc_path()?;
        let mut argv: Vec<String> =
            vec![runc.display().to_string(), "--criu".into(), criu.display().to_string()];
        argv.extend(["restore".into(), "--image-path".into(), images.display().to_string()]);
        argv.extend(["--work-path".into(), work.display().to_string()]);
        argv.extend(["--bundle".into(), b.bundle.display().to_string(), "--file-locks".into()]);
        if manifest.tcp_established {
            argv.push("--tcp-established".into());
        }
        argv.push(b.container_id.clone());
        self.launch_container(cfg, b, argv, Some(&work.join("restore.log"))).await
    }

    async fn logs(&self, handle: &Handle, opts: &LogOptions) -> Result<LogReceiver, DriverError> {
        let st = state_of(handle)?;
        shim::logs(&st.task_dir, opts).await
    }

    async fn stats(&self, handle: &Handle) -> Result<Stats, DriverError> {
        let st = state_of(handle)?;
        let out = self.runc(&["events", "--stats", &st.container_id]).await?;
        if !out.status.success() {
            return Err(DriverError::NotFound(st.container_id));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| DriverError::runtime("parsing runc events", e))?;
        let d = &v["data"];
        let limit = d["memory"]["usage"]["limit"].as_u64().filter(|l| *l < (1 << 62));
        Ok(Stats {
            cpu_usage_ns: d["cpu"]["usage"]["total"].as_u64().unwrap_or(0),
            memory_bytes: d["memory"]["usage"]["usage"].as_u64().unwrap_or(0),
            memory_limit_bytes: limit,
            pids: d["pids"]["current"].as_u64().unwrap_or(0),
        })
    }

    async fn exec_stream(
        &self,
        handle: &Handle,
        cmd: &[String],
        opts: &shoal_driver::ExecStreamOptions,
    ) -> Result<shoal_driver::ExecSession, DriverError> {
        let st = state_of(handle)?;
        crate::exec_tty::exec_stream(&self.runc_path()?, &st.container_id, &st.task_dir, cmd, opts)
    }

    async fn exec(
        &self,
        handle: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, DriverError> {
        let st = state_of(handle)?;
        if cmd.is_empty() {
            return Err(DriverError::Invalid("exec: empty command".into()));
        }
        let runc = self.runc_path()?;
        let child = tokio::process::Command::new(&runc)
            .arg("exec")
            .arg(&st.container_id)
            .args(cmd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DriverError::runtime("runc exec", e))?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| DriverError::runtime("runc exec", e))?,
            Err(_) => {
                return Ok(ExecResult { exit_code: -1, output: format!("exec timed out after {timeout:?}") });
            }
        };
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        if output.len() > EXEC_OUTPUT_CAP {
            let mut cut = EXEC_OUTPUT_CAP;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
        }
        use std::os::unix::process::ExitStatusExt;
        let exit_code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        Ok(ExecResult { exit_code, output })
    }
}

/// An empty directory at `p` (whatever was there is removed).
fn fresh_dir(p: &Path) -> Result<PathBuf, DriverError> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DriverError::runtime(&format!("removing {}", p.display()), e)),
    }
    std::fs::create_dir_all(p).map_err(|e| DriverError::runtime(&format!("creating {}", p.display()), e))?;
    Ok(p.to_path_buf())
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Whether `program` exists in the image's layers: an absolute path as is, a bare name through
/// the `PATH` of the task (else the image's, else the usual one). Symlinks count (busybox applets
/// are symlinks); the layers are looked at top first, without following links out of them.
fn program_in_image(program: &str, cfg: &TaskConfig, img: &ResolvedImage) -> bool {
    let path_env = cfg
        .env
        .get("PATH")
        .cloned()
        .or_else(|| img.env.iter().find_map(|e| e.strip_prefix("PATH=").map(str::to_string)))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.to_string()]
    } else {
        path_env
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .collect()
    };
    candidates.iter().any(|c| {
        let rel = c.trim_start_matches('/');
        // A relative program path is resolved against the working directory at run time: let runc judge it.
        !c.starts_with('/')
            || img.layer_dirs.iter().rev().any(|layer| std::fs::symlink_metadata(layer.join(rel)).is_ok())
    })
}

/// The last `n` lines the task (here: runc) wrote, without their timestamps.
fn log_tail(task_dir: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(task_dir.join("logs/output.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let tail: Vec<&str> = lines[start..].iter().map(|l| l.splitn(3, ' ').nth(2).unwrap_or(l)).collect();
    if tail.is_empty() {
        "no output".into()
    } else {
        tail.join(" / ")
    }
}

/// runc's state directory of a container (its default root, see the module docs).
fn runc_state_dir(container_id: &str) -> PathBuf {
    Path::new(RUNC_ROOT).join(container_id)
}

/// Whether runc may know `container_id` (its state directory exists, or cannot be checked).
fn runc_knows(container_id: &str) -> bool {
    !matches!(std::fs::symlink_metadata(runc_state_dir(container_id)), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Where `runc run --pid-file` writes the container's pid (see `wait_started`).
fn runc_pid_file(task_dir: &Path) -> PathBuf {
    task_dir.join("runc.pid")
}

/// runc's default root, where it keeps each container's state.
const RUNC_ROOT: &str = "/run/runc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_env_merge() {
        let img = ResolvedImage {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["c1".into()],
            env: vec!["A=1".into(), "B=2".into()],
            ..ResolvedImage::default()
        };
        let mut cfg = TaskConfig::default();
        assert_eq!(process_args(&cfg, &img), vec!["/ep", "c1"]);
        cfg.args = vec!["x".into()];
        assert_eq!(process_args(&cfg, &img), vec!["/ep", "x"]);
        cfg.command = vec!["/bin/sh".into()];
        assert_eq!(process_args(&cfg, &img), vec!["/bin/sh", "x"]);
        cfg.env.insert("B".into(), "3".into());
        let env = process_env(&cfg, &img);
        assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=3".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
    }

    #[test]
    fn limits_go_into_the_runtime_spec() {
        let img = ResolvedImage { cmd: vec!["/bin/true".into()], ..ResolvedImage::default() };
        let mut cfg = TaskConfig { task_id: "t".into(), ..TaskConfig::default() };
        cfg.limits = shoal_driver::Limits {
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            pids: Some(50),
        };
        let v = build_spec(&cfg, &img, Path::new("/rootfs"), 0, 0, "/shoal/t", &SpecExtras::default())
            .expect("spec");
        let r = &v["linux"]["resources"];
        assert_eq!(r["pids"]["limit"], 50);
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["cgroupsPath"], "/shoal/t");
        // No limit given: none set (runc leaves pids.max at "max", under Shoal's capped parent).
        cfg.limits = shoal_driver::Limits::default();
        let v = build_spec(&cfg, &img, Path::new("/rootfs"), 0, 0, "/shoal/t", &SpecExtras::default())
            .expect("spec");
        assert!(v["linux"]["resources"].get("pids").is_none(), "{}", v["linux"]["resources"]);
    }

    #[test]
    fn container_options_go_into_the_runtime_spec() {
        let img = ResolvedImage { cmd: vec!["/bin/true".into()], ..ResolvedImage::default() };
        let mut cfg = TaskConfig { task_id: "t".into(), ..TaskConfig::default() };
        let o = &mut cfg.options;
        o.read_only = true;
        o.cap_drop = vec!["CAP_NET_RAW".into()];
        o.cap_add = vec!["CAP_NET_ADMIN".into()];
        o.init = true;
        o.labels.insert("team".into(), "fish".into());
        o.ulimits = vec![shoal_types::Ulimit { name: "nofile".into(), soft: 1024, hard: -1 }];
        let extras = SpecExtras {
            groups: vec![50, 60],
            init: Some("/usr/bin/docker-init".into()),
            resolv_conf: Some("/task/resolv.conf".into()),
        };
        let v = build_spec(&cfg, &img, Path::new("/rootfs"), 0, 0, "/shoal/t", &extras).expect("spec");
        assert_eq!(v["root"]["readonly"], true);
        let caps = v["process"]["capabilities"]["effective"].as_array().expect("caps");
        assert!(caps.iter().any(|c| c == "CAP_NET_ADMIN") && !caps.iter().any(|c| c == "CAP_NET_RAW"));
        assert!(caps.iter().any(|c| c == "CAP_CHOWN"), "the rest of the default set stays");
        assert_eq!(v["process"]["args"], serde_json::json!([INIT_TARGET, "--", "/bin/true"]));
        assert_eq!(v["annotations"]["team"], "fish");
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(v["process"]["rlimits"][0]["soft"], 1024);
        assert_eq!(v["process"]["rlimits"][0]["hard"], u64::MAX);
        assert_eq!(v["process"]["user"]["additionalGids"], serde_json::json!([50, 60]));
        let mounts = v["mounts"].as_array().expect("mounts");
        let at = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).map(|m| m["source"].clone());
        assert_eq!(at(INIT_TARGET), Some(serde_json::json!("/usr/bin/docker-init")));
        // /etc/resolv.conf is mounted only when the source exists: not in this test.
        assert!(at("/etc/resolv.conf").is_none_or(|s| s == "/task/resolv.conf"));
        // All capabilities, less what is dropped; none, plus what is added.
        assert!(capabilities(&["ALL".into()], &["CAP_SYS_ADMIN".into()]).len() > DEFAULT_CAPS.len());
        assert_eq!(capabilities(&["CAP_KILL".into()], &["ALL".into()]), vec!["CAP_KILL".to_string()]);
        // A terminal is refused, never ignored.
        cfg.options.tty = true;
        let e = build_spec(&cfg, &img, Path::new("/rootfs"), 0, 0, "/shoal/t", &extras).expect_err("tty");
        assert!(matches!(&e, DriverError::Invalid(m) if m.contains("--tty")), "{e}");
    }

    #[test]
    fn users_resolve_from_the_rootfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        assert_eq!(resolve_user(dir.path(), "").expect("root"), (0, 0));
        assert_eq!(resolve_user(dir.path(), "1000:1000").expect("num"), (1000, 1000));
        assert_eq!(resolve_user(dir.path(), "nobody").expect("name"), (65534, 65533));
        assert_eq!(resolve_user(dir.path(), "nobody:staff").expect("group"), (65534, 50));
        assert!(matches!(resolve_user(dir.path(), "ghost"), Err(DriverError::Invalid(_))));
    }
}
