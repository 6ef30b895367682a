//! The shim process itself (see the module docs of [`super`]).

use super::log::{LineReader, LogWriter};
use super::{
    exit_path, spec_path, started_path, write_atomic, write_replace, ExitFile, ShimSpec, Started, STAGE_ENV,
};
use crate::LogStream;
use std::io::{BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// How long the shim waits for the output pipes to drain after the task exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Output records queued between the pipe readers and the log writer. The queue is bounded: when
/// the writer falls behind, the readers block, the pipes fill up and the task blocks in `write(2)`
/// (backpressure, like Docker's default blocking log mode). So the shim's memory stays bounded
/// (about `LOG_QUEUE_RECORDS` × [`super::log::MAX_LINE_BYTES`], 1 MiB, plus the pipe buffers)
/// whatever the task writes; nothing is dropped, a task that writes faster than its log can be
/// written is slowed down.
const LOG_QUEUE_RECORDS: usize = 64;

/// First stage: re-execute as the supervisor, print its pid, exit (so the supervisor is orphaned
/// and adopted by init instead of staying the agent's child).
pub(super) fn detach(task_dir: &Path) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("shoal shim: cannot find the shim executable: {e}");
            return 1;
        }
    };
    match Command::new(exe)
        .arg("shim")
        .arg(task_dir)
        .env(STAGE_ENV, super::STAGE_SUPERVISE)
        .stdin(Stdio::null())
        // The launcher's stdout, a pipe from the driver: the supervisor holds it open until it
        // has written `started.json`, so the driver learns it at end of file, without polling.
        .stdout(Stdio::inherit())
        .spawn()
    {
        Ok(child) => {
            println!("{}", child.id());
            0
        }
        Err(e) => {
            eprintln!("shoal shim: cannot start the supervisor: {e}");
            1
        }
    }
}

fn write_started(task_dir: &Path, s: &Started) {
    let data = match serde_json::to_vec(s) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("shoal shim: encoding started.json: {e}");
            return;
        }
    };
    if let Err(e) = write_replace(&started_path(task_dir), &data) {
        eprintln!("shoal shim: writing started.json: {e}");
    }
}

/// Closes the supervisor's stdout (the pipe the driver reads, see [`detach`]): the driver's read
/// ends and it reads `started.json`. Everything the shim starts has stdout of its own.
fn report_started() {
    let closed = std::fs::File::open("/dev/null").and_then(|null| Ok(rustix::stdio::dup2_stdout(null)?));
    if let Err(e) = closed {
        eprintln!("shoal shim: closing the start pipe: {e}");
    }
}

fn fail(task_dir: &Path, kind: &str, error: String) -> i32 {
    eprintln!("shoal shim: {error}");
    write_started(
        task_dir,
        &Started { error: Some(error), error_kind: Some(kind.into()), ..Default::default() },
    );
    1
}

/// Sets the shim's own `oom_score_adj`; the error says why it could not.
fn set_oom_score_adj(value: i32) -> Result<(), String> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string()).map_err(|e| {
        let msg = format!("setting oom_score_adj to {value}: {e}");
        eprintln!("shoal shim: {msg}");
        msg
    })
}

/// Moves the shim (still single-threaded: no reader has started) into the task's network
/// namespace and, for its `resolv.conf`, into a mount namespace of its own where the file is
/// bound over `/etc/resolv.conf`; the task inherits both.
fn enter_namespaces(spec: &ShimSpec) -> Result<(), String> {
    if let Some(netns) = &spec.netns {
        let f = std::fs::File::open(netns).map_err(|e| format!("opening {}: {e}", netns.display()))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("joining the network namespace {}: {e}", netns.display()))?;
    }
    if spec.resolv_conf.is_none() && spec.secret_files.is_empty() {
        return Ok(());
    }
    // A new mount namespace only (the reason `unshare` is deprecated is CLONE_FILES, which this
    // does not use).
    #[allow(deprecated)]
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS)
        .map_err(|e| format!("a mount namespace for the task: {e}"))?;
    use rustix::mount::MountPropagationFlags as P;
    rustix::mount::mount_change("/", P::DOWNSTREAM | P::REC)
        .map_err(|e| format!("making the task's mounts private: {e}"))?;
    if let Some(resolv) = &spec.resolv_conf {
        rustix::mount::mount_bind(resolv, "/etc/resolv.conf")
            .map_err(|e| format!("binding {} over /etc/resolv.conf: {e}", resolv.display()))?;
    }
    mount_secret_files(&spec.secret_files)
}

/// In the task's mount namespace: a tmpfs over `/run/secrets` and `/run/configs` (those the
/// files use; the directory is created on the node once, empty), and each file bound read-only
/// onto an empty file there.
fn mount_secret_files(files: &[crate::secrets::SecretFile]) -> Result<(), String> {
    use rustix::mount::MountFlags as F;
    for dir in [shoal_types::secret::SECRETS_DIR, shoal_types::secret::PROCESS_CONFIGS_DIR] {
        let under = |t: &str| t.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
        if !files.iter().any(|f| under(&f.target)) {
            continue;
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            F::NOSUID | F::NODEV | F::NOEXEC,
            Some(c"mode=0755,size=64k"),
        )
        .map_err(|e| format!("a tmpfs at {dir} for the task: {e}"))?;
    }
    for f in files {
        let target = Path::new(&f.target);
        let in_tmpfs = [shoal_types::secret::SECRETS_DIR, shoal_types::secret::PROCESS_CONFIGS_DIR]
            .iter()
            .any(|d| f.target.strip_prefix(d).is_some_and(|r| r.starts_with('/')));
        if !in_tmpfs {
            return Err(format!(
                "{}: the process driver places files only under /run/secrets and /run/configs",
                f.target
            ));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::File::create(target).map_err(|e| format!("creating {}: {e}", f.target))?;
        rustix::mount::mount_bind(&f.source, target).map_err(|e| format!("binding {}: {e}", f.target))?;
        rustix::mount::mount_remount(target, F::BIND | F::RDONLY | F::NOSUID | F::NODEV | F::NOEXEC, "")
            .map_err(|e| format!("making {} read-only: {e}", f.target))?;
    }
    Ok(())
}

/// Second stage: supervise the task.
pub(super) fn supervise(task_dir: &Path) -> i32 {
    if let Err(e) = rustix::process::setsid() {
        eprintln!("shoal shim: setsid: {e}");
    }
    let spec: ShimSpec = match std::fs::read(spec_path(task_dir))
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return fail(task_dir, "other", format!("reading shim.json: {e}")),
    };
    let me = std::process::id();
    let Some(my_start) = super::start_time(me as i32) else {
        return fail(task_dir, "other", "cannot read the shim's own start time".into());
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return fail(task_dir, "other", "the command is empty".into());
    };
    let mut writer =
        match LogWriter::open(&super::log::log_dir(task_dir), spec.log_max_bytes, spec.log_max_files) {
            Ok(w) => w,
            Err(e) => return fail(task_dir, "other", format!("opening the log: {e}")),
        };

    // The task inherits oom_score_adj: give it the default, not the agent's. (Raising it needs no
    // privilege; should it fail anyway, the task keeps the agent's value, which is no worse.)
    let _ = set_oom_score_adj(0);
    for procs in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(procs, me.to_string()) {
            return fail(task_dir, "other", format!("joining the task's cgroup {}: {e}", procs.display()));
        }
    }
    if let Err(e) = enter_namespaces(&spec) {
        return fail(task_dir, "other", e);
    }
    let exec_stage = spec.needs_exec_stage();
    let mut cmd = if exec_stage {
        match std::env::current_exe() {
            Ok(exe) => {
                let mut c = Command::new(exe);
                c.arg("shim").arg(task_dir).env_clear().env(STAGE_ENV, super::STAGE_EXEC);
                c
            }
            Err(e) => return fail(task_dir, "other", format!("cannot find the shim executable: {e}")),
        }
    } else {
        let mut c = Command::new(program);
        c.args(args).env_clear().envs(&spec.env);
        c
    };
    cmd.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if !spec.cwd.as_os_str().is_empty() {
        cmd.current_dir(&spec.cwd);
    }
    if !exec_stage {
        if let Some(gid) = spec.gid {
            cmd.gid(gid);
        }
        if let Some(uid) = spec.uid {
            cmd.uid(uid);
        }
    }
    let spawned = cmd.spawn();
    // Out of the task's cgroups whatever happened, so the shim is not charged against its limits.
    for procs in &spec.leave_cgroup_procs {
        if let Err(e) = std::fs::write(procs, me.to_string()) {
            eprintln!("shoal shim: leaving the task's cgroup for {}: {e}", procs.display());
        }
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => "not_found",
                std::io::ErrorKind::PermissionDenied => "permission_denied",
                _ => "other",
            };
            return fail(task_dir, kind, format!("{program}: {e}"));
        }
    };
    // Lowering it needs CAP_SYS_RESOURCE (unless the agent already ran at -1000). Without it the
    // shim is as likely an OOM victim as anything else; recorded in started.json, so the agent
    // can say so (see `super::launch`).
    let oom_score_adj_error = set_oom_score_adj(-1000).err();
    // In restore mode the task is the one CRIU restores, known once CRIU is done.
    let restored = if let Some(pidfile) = &spec.restored_pidfile {
        // CRIU logs to its own file; what it prints and what the restored task writes meanwhile
        // waits in the pipes (the readers start below).
        let status = loop {
            match child.wait() {
                Ok(s) => break Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return fail(task_dir, "other", format!("criu restore failed ({s})")),
            Err(e) => return fail(task_dir, "other", format!("waiting for criu restore: {e}")),
        }
        let pid = std::fs::read_to_string(pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok());
        match pid.and_then(rustix::process::Pid::from_raw) {
            Some(p) => Some(p),
            None => {
                return fail(task_dir, "other", format!("criu restore wrote no pid to {}", pidfile.display()))
            }
        }
    } else {
        None
    };
    write_started(
        task_dir,
        &Started {
            shim_pid: Some(me as i32),
            shim_start_time: Some(my_start),
            pid: Some(restored.map_or(child.id() as i32, |p| p.as_raw_nonzero().get())),
            oom_score_adj_error,
            ..Default::default()
        },
    );
    report_started();

    // Output: one reader thread per pipe, one writer thread (which also stamps the time, so the
    // file is in time order), a bounded queue between them (see `LOG_QUEUE_RECORDS`).
    let (tx, rx) = mpsc::sync_channel::<(LogStream, Vec<u8>)>(LOG_QUEUE_RECORDS);
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, LogStream::Stdout, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, LogStream::Stderr, tx.clone());
    }
    drop(tx);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut broken = false;
        for (stream, line) in rx {
            if broken {
                continue;
            }
            if let Err(e) = writer.write(SystemTime::now(), stream, &line) {
                eprintln!("shoal shim: writing the log: {e}; dropping further output");
                broken = true;
            }
        }
        let _ = done_tx.send(());
    });

    // (code, signal) of the task.
    let status: Option<(i32, Option<i32>)> = match restored {
        Some(pid) => loop {
            match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
                Ok(Some((_, s))) => {
                    let signal = s.terminating_signal();
                    break Some((s.exit_status().or(signal.map(|n| 128 + n)).unwrap_or(-1), signal));
                }
                Ok(None) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("shoal shim: waiting for the restored task: {e}");
                    break None;
                }
            }
        },
        None => loop {
            match child.wait() {
                Ok(s) => {
                    break Some((s.code().or_else(|| s.signal().map(|n| 128 + n)).unwrap_or(-1), s.signal()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("shoal shim: waiting for the task: {e}");
                    break None;
                }
            }
        },
    };
    if done_rx.recv_timeout(DRAIN_TIMEOUT).is_err() {
        eprintln!(
            "shoal shim: the task's output pipes are still open (held by another process); not waiting"
        );
    }
    let exit = match status {
        Some((code, signal)) => ExitFile {
            code,
            signal,
            finished_at: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        },
        None => ExitFile {
            code: -1,
            signal: None,
            finished_at: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        },
    };
    match serde_json::to_vec(&exit) {
        Ok(data) => {
            if let Err(e) = write_atomic(&exit_path(task_dir), &data) {
                eprintln!("shoal shim: writing exit.json: {e}");
                return 1;
            }
        }
        Err(e) => {
            eprintln!("shoal shim: encoding exit.json: {e}");
            return 1;
        }
    }
    0
}

/// Reads lines (at most [`super::log::MAX_LINE_BYTES`] each, longer ones are split) and queues
/// them; blocks while the queue is full.
fn spawn_reader(
    pipe: impl Read + Send + 'static,
    stream: LogStream,
    tx: mpsc::SyncSender<(LogStream, Vec<u8>)>,
) {
    std::thread::spawn(move || {
        let mut r = LineReader::new(BufReader::with_capacity(64 * 1024, pipe));
        let mut buf = Vec::new();
        loop {
            match r.next_line(&mut buf) {
                Ok(true) => {
                    if tx.send((stream, std::mem::take(&mut buf))).is_err() {
                        return;
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    eprintln!("shoal shim: reading the task's {stream:?}: {e}");
                    return;
                }
            }
        }
    });
}

/// The exec stage (see `ShimSpec::needs_exec_stage`): a single-threaded child of the supervisor
/// that sets the task's resource limits, supplementary groups, gid and uid on itself, then
/// executes the task's program in its place. Returns only on failure (126: a limit or id could not
/// be set, 127: the program could not be executed), with the reason on stderr (the task's log).
pub(super) fn exec_task(task_dir: &Path) -> i32 {
    let spec: ShimSpec = match std::fs::read(spec_path(task_dir))
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shoal shim: reading shim.json: {e}");
            return 126;
        }
    };
    let Some((program, args)) = spec.argv.split_first() else {
        eprintln!("shoal shim: the command is empty");
        return 126;
    };
    for l in &spec.rlimits {
        let Some(resource) = rlimit_resource(&l.name) else {
            eprintln!("shoal shim: unknown resource limit {:?}", l.name);
            return 126;
        };
        let value = |v: u64| (v != u64::MAX).then_some(v);
        let limit = rustix::process::Rlimit { current: value(l.soft), maximum: value(l.hard) };
        if let Err(e) = rustix::process::setrlimit(resource, limit) {
            eprintln!("shoal shim: setting the {} limit to {}:{}: {e}", l.name, l.soft, l.hard);
            return 126;
        }
    }
    // The single thread of this process: the thread's ids are the process's.
    if !spec.groups.is_empty() || spec.uid.is_some() {
        let groups: Vec<rustix::process::Gid> =
            spec.groups.iter().map(|g| rustix::process::Gid::from_raw(*g)).collect();
        if let Err(e) = rustix::thread::set_thread_groups(&groups) {
            eprintln!("shoal shim: setting the supplementary groups {:?}: {e}", spec.groups);
            return 126;
        }
    }
    if let Some(gid) = spec.gid {
        if let Err(e) = rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(gid)) {
            eprintln!("shoal shim: setting gid {gid}: {e}");
            return 126;
        }
    }
    if let Some(uid) = spec.uid {
        if let Err(e) = rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid)) {
            eprintln!("shoal shim: setting uid {uid}: {e}");
            return 126;
        }
    }
    let e = Command::new(program).args(args).env_clear().envs(&spec.env).exec();
    eprintln!("shoal shim: executing {program}: {e}");
    127
}

/// Docker's ulimit name → the kernel's resource.
fn rlimit_resource(name: &str) -> Option<rustix::process::Resource> {
    use rustix::process::Resource as R;
    Some(match name {
        "as" => R::As,
        "core" => R::Core,
        "cpu" => R::Cpu,
        "data" => R::Data,
        "fsize" => R::Fsize,
        "locks" => R::Locks,
        "memlock" => R::Memlock,
        "msgqueue" => R::Msgqueue,
        "nice" => R::Nice,
        "nofile" => R::Nofile,
        "nproc" => R::Nproc,
        "rss" => R::Rss,
        "rtprio" => R::Rtprio,
        "rttime" => R::Rttime,
        "sigpending" => R::Sigpending,
        "stack" => R::Stack,
        _ => return None,
    })
}
