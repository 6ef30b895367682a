//! The per-task shim: a tiny supervisor process between the agent and one task.
//!
//! # Why
//!
//! A task must outlive the agent (a `kill -9` of the daemon leaves it running) and its exit status
//! must never be lost. The task therefore is not a child of the agent: it is the child of its own
//! shim, `shoal shim <task_dir>`, which waits for it, records how it ended and copies its output
//! into the log files. The agent finds the shim again after a restart through [`Launched`], which
//! drivers keep in their [`crate::Handle`].
//!
//! # Files in the task directory
//!
//! - `shim.json`: the [`ShimSpec`], written by [`launch`] before the shim starts.
//! - `shim.log`: the shim's own stderr (its diagnostics).
//! - `started.json`: written by the shim once the task runs (`{"shim_pid", "shim_start_time",
//!   "pid"}`, plus `"oom_score_adj_error"` when it could not protect itself from the OOM killer)
//!   or could not be started (`{"error", "error_kind"}`).
//! - `logs/output.log[.N]`: the task's output, see [`log`] for format and rotation.
//! - `exit.json`: `{"code", "signal", "finished_at"}`, written atomically (tmp + fsync + rename)
//!   **before the shim exits**. Everything relies on this invariant: a shim that is gone without
//!   leaving `exit.json` died itself (killed), and the task's status is unknown.
//!
//! # Process tree
//!
//! [`launch`] runs `<shim_exe> shim <task_dir>`. That first process only re-executes itself (with
//! `SHOAL_SHIM_STAGE=supervise`), prints the new process's pid and exits, so the real shim is
//! reparented to init (or the nearest subreaper) and is never a zombie child of the agent. The real
//! shim calls `setsid` (a new session: no terminal signals from the agent's session reach it) and:
//!
//! 1. reads `shim.json`;
//! 2. resets its `oom_score_adj` to 0 (the task inherits it), writes its pid into each
//!    `cgroup_procs` file so the task is born in the task's cgroups, spawns the task (own process
//!    group, `env_clear` + the spec's env, cwd, uid/gid, stdin `/dev/null`, stdout/stderr piped),
//!    then moves itself into the `leave_cgroup_procs` cgroups (so it is not charged against the
//!    task's limits) and sets its own `oom_score_adj` to -1000;
//! 3. writes `started.json`;
//! 4. copies output lines (two reader threads, one writer thread) into the log;
//!    lines longer than [`log::MAX_LINE_BYTES`] are split, and the queue between readers and writer
//!    is bounded (backpressure: a task that writes faster than its log is written blocks on its
//!    pipe), so the shim's memory stays bounded (a few MiB) whatever the task writes;
//! 5. waits for the task, gives the readers up to 2 s to drain (a grandchild may hold the pipes
//!    open forever), writes `exit.json` and exits 0.
//!
//! The shim is single-threaded blocking code apart from the log threads and has no async runtime.
//!
//! # OOM protection
//!
//! The shim lives outside the task's cgroups, so the kernel's OOM killer may pick it when the
//! *node* runs out of memory; a killed shim loses the task's exit status (and the task loses its
//! log pipes). Hence `oom_score_adj = -1000`. Lowering it needs `CAP_SYS_RESOURCE` (or an agent
//! that already runs at -1000, e.g. systemd's `OOMScoreAdjust=-1000`); without it the shim keeps
//! the agent's score, records why in `started.json`, and [`launch`] logs a warning (once per
//! process; later ones at debug level). [`oom_protection_error`] reads it back.

pub mod log;
mod supervisor;

use crate::{DriverError, ExitStatus, LogOptions, LogReceiver};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The environment variable that tells `shoal shim` it is the re-executed supervisor.
pub const STAGE_ENV: &str = "SHOAL_SHIM_STAGE";
const STAGE_SUPERVISE: &str = "supervise";
const STAGE_EXEC: &str = "exec";

/// How long [`launch`] waits for the shim to report that the task started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The message of a task whose shim died without recording the exit status.
pub const SUPERVISOR_DIED: &str = "the task's supervisor died; exit status unknown";

/// What the shim runs; written to `<task_dir>/shim.json` by [`launch`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShimSpec {
    /// `argv[0]` is the program: an absolute path (the driver resolves it).
    pub argv: Vec<String>,
    /// The task's full environment (nothing is inherited).
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `cgroup.procs` files the task must be born in (v2: one, v1: one per controller).
    pub cgroup_procs: Vec<PathBuf>,
    /// `cgroup.procs` files the shim moves itself into once the task runs.
    pub leave_cgroup_procs: Vec<PathBuf>,
    /// Rotate `output.log` at this size; 0: never.
    pub log_max_bytes: u64,
    /// Log files kept in all, `output.log` included (at least 1).
    pub log_max_files: u32,
    /// Restore mode: `argv` is a `criu restore --restore-detached --restore-sibling` that writes
    /// the restored task's pid here. The shim waits for CRIU, then supervises that pid (its own
    /// child, as CRIU restored it as CRIU's sibling) as it supervises a task it spawned.
    pub restored_pidfile: Option<PathBuf>,
    /// The network namespace the task is born in (None: the shim's own).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Bind-mounted over `/etc/resolv.conf` in a mount namespace of the task's own.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// Secrets and configs bound read-only at their targets, which lie under `/run/secrets` or
    /// `/run/configs`: in the task's own mount namespace each of those gets a fresh tmpfs (the
    /// node's directories are never written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<crate::secrets::SecretFile>,
    /// Resource limits of the task, set just before its program is executed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<ShimRlimit>,
    /// Supplementary groups of the task (set with `gid` and `uid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
}

/// One resource limit for [`ShimSpec::rlimits`]: docker's name (`nofile`), `u64::MAX` unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRlimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

impl ShimSpec {
    /// Whether the task needs the exec stage (limits or groups std's `Command` cannot set without
    /// `unsafe`): the shim then spawns itself as `STAGE_EXEC`, which sets them and executes the
    /// task's program in its own place (same pid, process group, pipes, cgroups, namespaces).
    fn needs_exec_stage(&self) -> bool {
        self.restored_pidfile.is_none() && (!self.rlimits.is_empty() || !self.groups.is_empty())
    }
}

/// A running shim, as the driver persists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    pub shim_pid: i32,
    /// Field 22 of `/proc/<shim_pid>/stat`: tells the shim from a later process with its pid.
    pub shim_start_time: u64,
    /// The task's pid; also its process group id.
    pub child_pid: i32,
}

/// What the shim writes into `started.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Started {
    shim_pid: Option<i32>,
    shim_start_time: Option<u64>,
    pid: Option<i32>,
    error: Option<String>,
    /// `not_found`, `permission_denied` or `other`.
    error_kind: Option<String>,
    /// Why the shim could not set its own `oom_score_adj` to -1000 (usually: the agent lacks
    /// `CAP_SYS_RESOURCE`); `None` when it is protected.
    oom_score_adj_error: Option<String>,
}

/// What the shim writes into `exit.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct ExitFile {
    code: i32,
    signal: Option<i32>,
    finished_at: String,
}

fn spec_path(task_dir: &Path) -> PathBuf {
    task_dir.join("shim.json")
}
fn started_path(task_dir: &Path) -> PathBuf {
    task_dir.join("started.json")
}
pub(crate) fn exit_path(task_dir: &Path) -> PathBuf {
    task_dir.join("exit.json")
}
fn shim_log_path(task_dir: &Path) -> PathBuf {
    task_dir.join("shim.log")
}

/// Writes `data` to `path` atomically (tmp file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = tmp_beside(path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes `data` to `path` atomically (tmp file, rename) without waiting for the disk: for the
/// files of a task's start (`shim.json`, `started.json`), which only matter while the task runs,
/// and no task survives the machine losing power. (Two fsyncs were a large part of a start.)
pub fn write_replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_beside(path);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// `<path>.tmp`: where [`write_atomic`] and [`write_replace`] write before renaming.
fn tmp_beside(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// The task directory of a `<exe> shim TASK_DIR` command line (how the drivers start the shim,
/// whichever binary it is), or `None` for any other.
pub fn task_dir_from_args(args: &[std::ffi::OsString]) -> Option<&Path> {
    match args {
        [_, verb, task_dir] if verb == "shim" && !task_dir.as_encoded_bytes().starts_with(b"-") => {
            Some(Path::new(task_dir))
        }
        _ => None,
    }
}

/// Entry point of `shoal shim TASK_DIR`; returns the shim's exit code.
pub fn run(task_dir: &Path) -> i32 {
    if std::env::var(STAGE_ENV).as_deref() == Ok(STAGE_SUPERVISE) {
        supervisor::supervise(task_dir)
    } else if std::env::var(STAGE_ENV).as_deref() == Ok(STAGE_EXEC) {
        supervisor::exec_task(task_dir)
    } else {
        supervisor::detach(task_dir)
    }
}

/// `(state, start time)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses the state (field 3) and start time (field 22) of a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3; field 22 is 19 further.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live process (not a zombie).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    match proc_stat(pid) {
        Some((state, start)) if state != 'Z' && state != 'X' => Some(start),
        _ => None,
    }
}

/// Whether the shim still runs (its pid is alive, not a zombie, and is still the same process).
pub fn is_running(l: &Launched) -> bool {
    start_time(l.shim_pid) == Some(l.shim_start_time)
}

/// How the task ended, if the shim recorded it.
pub fn read_exit(task_dir: &Path) -> Option<ExitStatus> {
    let data = std::fs::read(exit_path(task_dir)).ok()?;
    let e: ExitFile = match serde_json::from_slice(&data) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(task_dir = %task_dir.display(), error = %err, "unreadable exit.json");
            return None;
        }
    };
    let message = match e.signal {
        Some(s) => format!("terminated by signal {s}"),
        None => String::new(),
    };
    Some(ExitStatus { code: e.code, signal: e.signal, oom_killed: false, message })
}

/// The status reported when the shim is gone without having written `exit.json`.
pub fn supervisor_died() -> ExitStatus {
    ExitStatus { code: -1, signal: None, oom_killed: false, message: SUPERVISOR_DIED.into() }
}

fn shim_log_tail(task_dir: &Path) -> String {
    let text = std::fs::read_to_string(shim_log_path(task_dir)).unwrap_or_default();
    let text = text.trim();
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].to_string()
}

/// Starts the shim for `spec` in `task_dir` and returns once the task runs (or could not start:
/// [`DriverError::Invalid`] for a missing or non-executable program).
pub async fn launch(shim_exe: &Path, task_dir: &Path, spec: &ShimSpec) -> Result<Launched, DriverError> {
    let Some(program) = spec.argv.first() else {
        return Err(DriverError::Invalid("the command is empty".into()));
    };
    let program = program.clone();
    tokio::fs::create_dir_all(log::log_dir(task_dir)).await?;
    for stale in [started_path(task_dir), exit_path(task_dir)] {
        match tokio::fs::remove_file(&stale).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DriverError::runtime("removing a stale shim file", e)),
        }
    }
    let json = serde_json::to_vec_pretty(spec).map_err(|e| DriverError::runtime("encoding shim.json", e))?;
    write_replace(&spec_path(task_dir), &json).map_err(|e| DriverError::runtime("writing shim.json", e))?;
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(shim_log_path(task_dir))
        .map_err(|e| DriverError::runtime("opening shim.log", e))?;

    let mut child = tokio::process::Command::new(shim_exe)
        .arg("shim")
        .arg(task_dir)
        .env_remove(STAGE_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(shim_log)
        .spawn()
        .map_err(|e| DriverError::runtime(&format!("starting the shim {}", shim_exe.display()), e))?;
    // The launcher prints the supervisor's pid and exits; the supervisor keeps the pipe open until
    // it has written `started.json` (or exits): end of file says there is something to read.
    let deadline = Instant::now() + START_TIMEOUT;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        match tokio::time::timeout_at(deadline.into(), stdout.read_to_string(&mut out)).await {
            Ok(read) => {
                read.map_err(|e| DriverError::runtime("reading from the shim", e))?;
            }
            // Judged below: the pid may be there, started.json not yet.
            Err(_elapsed) => {}
        }
    }
    let status = child.wait().await.map_err(|e| DriverError::runtime("waiting for the shim launcher", e))?;
    let shim_pid: i32 = match out.trim().parse() {
        Ok(p) if status.success() => p,
        _ => {
            return Err(DriverError::Runtime(format!(
                "the shim did not start ({status}): {}",
                shim_log_tail(task_dir)
            )))
        }
    };
    // Normally there at the first look. A shim that let go of the pipe early (one of an older
    // version) is waited for as before: polled until it writes the file, exits, or time is up.
    let started = loop {
        if let Some(s) = read_started(task_dir) {
            break s;
        }
        if start_time(shim_pid).is_none() {
            // Gone (or a zombie): one last look, the file may have landed just before it exited.
            match read_started(task_dir) {
                Some(s) => break s,
                None => {
                    return Err(DriverError::Runtime(format!(
                        "the shim exited before starting the task: {}",
                        shim_log_tail(task_dir)
                    )))
                }
            }
        }
        if Instant::now() > deadline {
            return Err(DriverError::Runtime(format!(
                "the shim did not start the task within {START_TIMEOUT:?}: {}",
                shim_log_tail(task_dir)
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if let Some(error) = started.error {
        return Err(match started.error_kind.as_deref() {
            Some("not_found") => DriverError::Invalid(format!("executable not found: {program}")),
            Some("permission_denied") => {
                DriverError::Invalid(format!("permission denied executing {program}: {error}"))
            }
            _ => DriverError::Runtime(format!("starting {program}: {error}")),
        });
    }
    if let Some(error) = &started.oom_score_adj_error {
        warn_unprotected(task_dir, error);
    }
    match (started.shim_pid, started.shim_start_time, started.pid) {
        (Some(shim_pid), Some(shim_start_time), Some(child_pid)) => {
            Ok(Launched { shim_pid, shim_start_time, child_pid })
        }
        _ => Err(DriverError::Runtime("the shim wrote an incomplete started.json".into())),
    }
}

/// Logs that a shim is not protected from the OOM killer: a warning the first time in this
/// process (it is a property of how the agent runs, so it would repeat for every task), then at
/// debug level.
fn warn_unprotected(task_dir: &Path, error: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        tracing::debug!(task_dir = %task_dir.display(), error, "shim not protected from the OOM killer");
    } else {
        tracing::warn!(
            task_dir = %task_dir.display(),
            error,
            "task shims cannot protect themselves from the OOM killer (oom_score_adj -1000 needs \
             CAP_SYS_RESOURCE): if this node runs out of memory the kernel may kill a shim, and that \
             task's exit status is lost; grant the daemon CAP_SYS_RESOURCE"
        );
    }
}

/// Why the task's shim could not protect itself from the OOM killer (see the module docs); `None`
/// when it did, or when it has not reported yet.
pub fn oom_protection_error(task_dir: &Path) -> Option<String> {
    read_started(task_dir)?.oom_score_adj_error
}

fn read_started(task_dir: &Path) -> Option<Started> {
    let data = std::fs::read(started_path(task_dir)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Resolves once the shim has exited (event-driven through a pidfd; polls `/proc` only when
/// pidfds are unavailable).
pub async fn wait_shim_exit(l: &Launched) {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    let Some(pid) = Pid::from_raw(l.shim_pid) else {
        return;
    };
    match pidfd_open(pid, PidfdFlags::NONBLOCK) {
        Ok(fd) => {
            // Checked after opening the pidfd, so the pidfd refers to the shim and not a later
            // process that reused its pid.
            if !is_running(l) {
                return;
            }
            // `with_interest` is deprecated because a borrowed fd could be closed while registered;
            // here the AsyncFd owns the OwnedFd, so the fd lives exactly as long as the
            // registration (the sound case), and no unsafe `register` is needed.
            #[allow(deprecated)]
            let registered = AsyncFd::with_interest(fd, Interest::READABLE);
            match registered {
                Ok(afd) => {
                    if let Ok(guard) = afd.readable().await {
                        drop(guard);
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "pidfd not pollable; polling /proc"),
            }
        }
        Err(e) => tracing::debug!(error = %e, "pidfd_open failed; polling /proc"),
    }
    while is_running(l) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves when the task has exited, with how it ended (as the shim recorded it). A shim that is
/// gone without having recorded it yields [`supervisor_died`].
///
/// Returns only once the shim itself is gone too (it exits right after writing `exit.json`), so
/// afterwards nothing of the task remains but its cgroups and files.
pub async fn wait(task_dir: &Path, l: &Launched) -> Result<ExitStatus, DriverError> {
    wait_shim_exit(l).await;
    Ok(read_exit(task_dir).unwrap_or_else(supervisor_died))
}

/// Streams the task's log records (see [`LogOptions`]). With `follow`, the stream ends once the
/// task exited and everything was read, or when the receiver is dropped.
pub async fn logs(task_dir: &Path, opts: &LogOptions) -> Result<LogReceiver, DriverError> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let dir = task_dir.to_path_buf();
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || log::stream(&dir, &opts, &tx));
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_shim_command_line_names_a_task_dir() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(task_dir_from_args(&args(&["shoal", "shim", "/t/1"])), Some(Path::new("/t/1")));
        assert_eq!(task_dir_from_args(&args(&["shoal", "shim", "--help"])), None);
        assert_eq!(task_dir_from_args(&args(&["shoal", "shim"])), None);
        assert_eq!(task_dir_from_args(&args(&["shoal", "service", "ls"])), None);
        assert_eq!(task_dir_from_args(&args(&["shoal", "shim", "/t/1", "x"])), None);
    }

    #[test]
    fn parses_proc_stat() {
        let line =
            "1234 (we ird) (name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert!(start_time(std::process::id() as i32).is_some());
    }

    #[test]
    fn exit_file_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_exit(dir.path()), None);
        write_atomic(&exit_path(dir.path()), br#"{"code":137,"signal":9,"finished_at":"x"}"#).expect("write");
        let s = read_exit(dir.path()).expect("exit");
        assert_eq!((s.code, s.signal), (137, Some(9)));
        assert!(!dir.path().join("exit.json.tmp").exists());
    }

    #[test]
    fn oom_protection_error_is_read_from_started_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(oom_protection_error(dir.path()), None);
        write_atomic(&started_path(dir.path()), br#"{"shim_pid":1,"shim_start_time":2,"pid":3}"#)
            .expect("write");
        assert_eq!(oom_protection_error(dir.path()), None);
        let started = Started {
            shim_pid: Some(1),
            shim_start_time: Some(2),
            pid: Some(3),
            oom_score_adj_error: Some("setting oom_score_adj to -1000: Permission denied".into()),
            ..Default::default()
        };
        write_atomic(&started_path(dir.path()), &serde_json::to_vec(&started).expect("json")).expect("write");
        assert_eq!(oom_protection_error(dir.path()).as_deref(), started.oom_score_adj_error.as_deref());
    }

    #[tokio::test]
    async fn wait_on_a_dead_shim_does_not_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Launched { shim_pid: i32::MAX - 1, shim_start_time: 1, child_pid: i32::MAX - 1 };
        assert!(!is_running(&l));
        assert_eq!(wait(dir.path(), &l).await.expect("wait"), supervisor_died());
    }
}
