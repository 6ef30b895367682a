//! The process driver against the real kernel: real processes, real cgroups (run as root).

mod common;

use shoal_driver::shim;
use shoal_driver::{
    Driver, DriverError, ExitStatus, Handle, Limits, LogLine, LogOptions, Recovered, TaskConfig,
};
use shoal_driver_process::{ProcessDriver, ProcessDriverConfig};
use std::path::Path;
use std::time::{Duration, Instant};

/// The shim as shipped: `shoal-shim` (the daemon's choice when it lies next to `shoal`).
fn shim_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal-shim"))
}

fn driver() -> ProcessDriver {
    ProcessDriver::new(ProcessDriverConfig::new(shim_exe()))
}

fn task(dir: &Path, script: &str) -> TaskConfig {
    common::sh_task("test", dir, script)
}

async fn wait(d: &ProcessDriver, h: &Handle) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(60), d.wait(h))
        .await
        .expect("the task ends in time")
        .expect("wait")
}

async fn all_logs(d: &ProcessDriver, h: &Handle, opts: LogOptions) -> Vec<LogLine> {
    let mut rx = d.logs(h, &opts).await.expect("logs");
    let mut out = Vec::new();
    while let Some(l) =
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("log stream ends")
    {
        out.push(l.expect("log line"));
    }
    out
}

/// Polls `f` until it holds or the deadline passes.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat[stat.rfind(')').expect(")") + 2..].chars().next(), Some('Z' | 'X')),
        Err(_) => false,
    }
}

fn launched(h: &Handle) -> shim::Launched {
    serde_json::from_value(h.state["launched"].clone()).expect("launched")
}

#[tokio::test]
async fn runs_and_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let info = d.fingerprint().await.expect("fingerprint");
    assert_eq!(info.name, "process");
    assert!(info.capabilities.contains(&"limits".to_string()), "{info:?}");
    let mut cfg =
        task(dir.path(), "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; echo $GREETING");
    cfg.env.insert("GREETING".into(), "hello".into());
    let h = d.start(&cfg).await.expect("start");
    assert_eq!(h.runtime_id, launched(&h).child_pid.to_string());
    let s = wait(&d, &h).await;
    assert!(s.success(), "{s:?}");
    let lines = all_logs(&d, &h, LogOptions::default()).await;
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == shoal_driver::LogStream::Stdout)
        .map(|l| l.line.as_str())
        .collect();
    assert_eq!(stdout, vec!["line 1", "line 2", "line 3", "line 4", "line 5", "hello"]);
    assert!(lines.iter().any(|l| l.stream == shoal_driver::LogStream::Stderr && l.line == "oops"));
    assert!(lines.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let tail = all_logs(&d, &h, LogOptions { tail: Some(2), ..Default::default() }).await;
    // The last two records (stdout and stderr are separate pipes: their relative order varies).
    assert_eq!(tail, lines[lines.len() - 2..].to_vec());
    // follow on an exited task ends by itself.
    let followed = all_logs(&d, &h, LogOptions { follow: true, ..Default::default() }).await;
    assert_eq!(followed.len(), lines.len());
    d.destroy(&h).await.expect("destroy");
    d.destroy(&h).await.expect("destroy is idempotent");
}

#[tokio::test]
async fn follow_streams_until_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    // The task waits for a file we create after the reader started following.
    let gate = dir.path().join("gate");
    let script = format!("echo before; while [ ! -e {} ]; do sleep 0.01; done; echo after", gate.display());
    let h = d.start(&task(dir.path(), &script)).await.expect("start");
    let mut rx = d.logs(&h, &LogOptions { follow: true, ..Default::default() }).await.expect("logs");
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("first line");
    assert_eq!(first.expect("open").expect("line").line, "before");
    std::fs::write(&gate, b"").expect("gate");
    let second = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("second line");
    assert_eq!(second.expect("open").expect("line").line, "after");
    let end = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("stream ends");
    assert!(end.is_none());
    assert!(wait(&d, &h).await.success());
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn nonzero_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let h = d.start(&task(dir.path(), "exit 3")).await.expect("start");
    let s = wait(&d, &h).await;
    assert_eq!((s.code, s.signal, s.oom_killed), (3, None, false));
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn stop_kills_after_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let h = d.start(&task(dir.path(), "trap '' TERM; echo ready; sleep 1000")).await.expect("start");
    // Make sure the trap is installed before signalling.
    eventually("the task is ready", || {
        std::fs::read_to_string(dir.path().join("logs/output.log")).unwrap_or_default().contains("ready")
    })
    .await;
    let started = Instant::now();
    d.stop(&h, Duration::from_millis(500)).await.expect("stop");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let s = wait(&d, &h).await;
    assert_eq!((s.code, s.signal), (137, Some(9)), "{s:?}");
    assert!(!s.oom_killed);
    assert!(!shim::is_running(&launched(&h)));
    d.stop(&h, Duration::from_secs(1)).await.expect("stop of an exited task is fine");
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn stop_with_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let mut cfg = task(dir.path(), "");
    cfg.command = vec!["sleep".into(), "1000".into()];
    let h = d.start(&cfg).await.expect("start");
    let started = Instant::now();
    d.stop(&h, Duration::from_secs(30)).await.expect("stop");
    assert!(started.elapsed() < Duration::from_secs(20), "SIGTERM should have been enough");
    let s = wait(&d, &h).await;
    assert_eq!((s.code, s.signal), (143, Some(15)), "{s:?}");
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn missing_binary_is_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let mut cfg = task(dir.path(), "");
    cfg.command = vec!["/no/such/binary".into()];
    match d.prepare(&cfg).await {
        Err(DriverError::Invalid(m)) => assert_eq!(m, "executable not found: /no/such/binary"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    match d.start(&cfg).await {
        Err(DriverError::Invalid(m)) => assert!(m.contains("executable not found"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn shim_reports_spawn_errors() {
    // Straight through the shim, bypassing the driver's checks: the shim itself reports ENOENT.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = shim::ShimSpec {
        argv: vec!["/no/such/binary".into()],
        cwd: "/".into(),
        log_max_files: 1,
        ..Default::default()
    };
    match shim::launch(shim_exe(), dir.path(), &spec).await {
        Err(DriverError::Invalid(m)) => assert_eq!(m, "executable not found: /no/such/binary"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let mut cfg = task(dir.path(), "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}");
    cfg.limits = Limits { memory_bytes: Some(16 << 20), ..Default::default() };
    let h = d.start(&cfg).await.expect("start");
    let s = wait(&d, &h).await;
    assert!(s.oom_killed, "{s:?}");
    assert_eq!(s.code, 137, "{s:?}");
    assert_eq!(s.message, "out of memory (OOM killed)");
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn limits_and_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let mut cfg = task(dir.path(), "echo ready; sleep 1000");
    cfg.limits = Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(20) };
    let h = d.start(&cfg).await.expect("start");
    let stats = d.stats(&h).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, Some(64 << 20));
    assert!(stats.pids >= 1, "{stats:?}");
    // The task runs in its cgroup; the shim does not.
    let cg = h.state["cgroups"]["memory"].as_str().expect("memory cgroup").to_string();
    let procs = std::fs::read_to_string(Path::new(&cg).join("cgroup.procs")).expect("procs");
    let l = launched(&h);
    assert!(procs.lines().any(|p| p == l.child_pid.to_string()), "{procs}");
    assert!(!procs.lines().any(|p| p == l.shim_pid.to_string()), "{procs}");
    let limit = std::fs::read_to_string(Path::new(&cg).join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(Path::new(&cg).join("memory.max")))
        .expect("limit");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let r =
        d.exec(&h, &["sh".into(), "-c".into(), "echo $PWD; exit 4".into()], Duration::from_secs(10)).await;
    let r = r.expect("exec");
    assert_eq!(r.exit_code, 4);
    assert_eq!(r.output.trim(), dir.path().display().to_string());
    let slow = d.exec(&h, &["sleep".into(), "100".into()], Duration::from_millis(200)).await.expect("exec");
    assert_eq!(slow.exit_code, 124);
    d.stop(&h, Duration::from_secs(5)).await.expect("stop");
    d.destroy(&h).await.expect("destroy");
    assert!(!Path::new(&cg).exists(), "the cgroup is removed");
}

#[tokio::test]
async fn recovers_a_running_task_with_a_new_driver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = dir.path().join("gate");
    let h = {
        let d = driver();
        let script = format!("while [ ! -e {} ]; do sleep 0.01; done; exit 7", gate.display());
        d.start(&task(dir.path(), &script)).await.expect("start")
    };
    // The handle is all that survives: persisted and read back, as the agent does.
    let h: Handle = serde_json::from_str(&serde_json::to_string(&h).expect("encode")).expect("decode");
    let d2 = driver();
    assert_eq!(d2.recover(&h).await.expect("recover"), Recovered::Running);
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { driver().wait(&h).await })
    };
    std::fs::write(&gate, b"").expect("gate");
    let s = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("in time")
        .expect("join")
        .expect("wait");
    assert_eq!(s.code, 7);
    d2.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn exit_while_nobody_watches_is_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = driver().start(&task(dir.path(), "exit 5")).await.expect("start");
    let l = launched(&h);
    // Nobody waits: the shim records the exit on its own.
    eventually("the shim exits", || !shim::is_running(&l)).await;
    match driver().recover(&h).await.expect("recover") {
        Recovered::Exited(s) => assert_eq!((s.code, s.oom_killed), (5, false)),
        other => panic!("expected Exited, got {other:?}"),
    }
    driver().destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn dead_shim_is_reported_not_hung() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver();
    let h = d.start(&task(dir.path(), "sleep 1000")).await.expect("start");
    let l = launched(&h);
    let killed = std::process::Command::new("kill").args(["-KILL", &l.shim_pid.to_string()]).status();
    assert!(killed.expect("kill").success(), "kill the shim");
    let s = wait(&d, &h).await;
    assert_eq!(s.code, -1);
    assert_eq!(s.message, shim::SUPERVISOR_DIED);
    match d.recover(&h).await.expect("recover") {
        Recovered::Exited(s) => assert_eq!(s.message, shim::SUPERVISOR_DIED),
        other => panic!("expected Exited, got {other:?}"),
    }
    // recover killed what the dead shim left in the cgroup.
    eventually("the orphaned task is gone", || !alive(l.child_pid)).await;
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn shim_survives_its_launcher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = dir.path().join("gate");
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done; exit 0", gate.display());
    let cfg = task(dir.path(), &script);
    // Launch from a runtime that is then dropped entirely (its threads and reactor die).
    let h = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let h = std::thread::spawn(move || rt.block_on(driver().start(&cfg)))
            .join()
            .expect("thread")
            .expect("start");
        h
    };
    let l = launched(&h);
    assert!(shim::is_running(&l));
    // The shim is not our child: it was handed to init (or a subreaper).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", l.shim_pid)).expect("stat");
    let ppid: u32 =
        stat[stat.rfind(')').expect(")") + 2..].split(' ').nth(1).expect("ppid").parse().expect("num");
    assert_ne!(ppid, std::process::id());
    // It has its own session.
    let sid: i32 =
        stat[stat.rfind(')').expect(")") + 2..].split(' ').nth(3).expect("sid").parse().expect("num");
    assert_eq!(sid, l.shim_pid);
    std::fs::write(&gate, b"").expect("gate");
    let d = driver();
    assert!(wait(&d, &h).await.success());
    d.destroy(&h).await.expect("destroy");
}

#[tokio::test]
async fn log_rotation_keeps_at_most_n_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = ProcessDriver::new(ProcessDriverConfig {
        log_max_bytes: 1000,
        log_max_files: 3,
        ..ProcessDriverConfig::new(shim_exe())
    });
    let h = d
        .start(&task(dir.path(), "i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done"))
        .await
        .expect("start");
    assert!(wait(&d, &h).await.success());
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
        .expect("logs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec!["output.log", "output.log.1", "output.log.2"]);
    let lines = all_logs(&d, &h, LogOptions::default()).await;
    assert_eq!(lines.last().map(|l| l.line.as_str()), Some("line 499"));
    // The kept lines are the newest ones, contiguous.
    let first: usize = lines[0].line.trim_start_matches("line ").parse().expect("number");
    assert_eq!(lines.len(), 500 - first);
    d.destroy(&h).await.expect("destroy");
}

/// The counter values a task printed so far, once `enough` holds for them.
async fn counted(d: &ProcessDriver, h: &Handle, enough: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let values: Vec<u64> = all_logs(d, h, LogOptions::default())
            .await
            .iter()
            .filter_map(|l| l.line.trim().parse().ok())
            .collect();
        if enough(&values) {
            return values;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the counter: {values:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CRIU (scripts/install-criu.sh): a counter is checkpointed under one task and restored under
/// another (as on another node); it continues where it was, its output reaches the new task's
/// log, its exit status reaches `wait`, and the checkpointed task reports how it ended.
#[tokio::test]
async fn checkpoint_and_restore_a_counter() {
    let d = driver();
    let info = d.fingerprint().await.expect("fingerprint");
    if !info.capabilities.contains(&"checkpoint".to_string()) {
        assert!(
            std::env::var("SHOAL_REQUIRE_RUNTIMES").is_err(),
            "criu is required (scripts/install-criu.sh): {info:?}"
        );
        eprintln!("skipping: no working criu");
        return;
    }
    let (a, b, ck) =
        (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"), tempfile::tempdir().expect("c"));
    let cfg = task(a.path(), "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done");
    let h = d.start(&cfg).await.expect("start");
    counted(&d, &h, |v| v.last().is_some_and(|n| *n > 10)).await;
    d.checkpoint(&h, ck.path(), &shoal_driver::CheckpointOptions::default()).await.expect("checkpoint");
    let s = wait(&d, &h).await;
    assert!(s.is_checkpointed(), "{s:?}");
    let last = *counted(&d, &h, |v| !v.is_empty()).await.last().expect("values");
    let mut cfg2 = task(b.path(), "");
    cfg2.command = cfg.command.clone();
    let h2 = d.restore(&cfg2, ck.path()).await.expect("restore");
    let after = counted(&d, &h2, |v| v.len() > 5).await;
    assert_eq!(after[0], last + 1, "continues where it was: {after:?}");
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    d.stop(&h2, Duration::from_secs(2)).await.expect("stop");
    let s2 = wait(&d, &h2).await;
    assert_eq!(s2.code, 143, "the restored task's own exit status: {s2:?}");
    d.destroy(&h2).await.expect("destroy");
    d.destroy(&h).await.expect("destroy the checkpointed task");
}

/// Runs a short task through the driver with `shim` as its supervisor; asserts it ran and logged.
async fn runs_under(shim: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = ProcessDriver::new(ProcessDriverConfig::new(shim));
    let h = d.start(&task(dir.path(), "echo ran")).await.expect("start");
    assert!(wait(&d, &h).await.success());
    let lines = all_logs(&d, &h, LogOptions::default()).await;
    assert_eq!(lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), vec!["ran"]);
    d.destroy(&h).await.expect("destroy");
}

/// A copied `shoal` without `shoal-shim` beside it supervises its tasks itself (`shoal shim`).
#[tokio::test]
async fn the_shoal_binary_is_a_shim_too() {
    runs_under(Path::new(env!("CARGO_BIN_EXE_shoal"))).await;
}

/// A shim that lets go of the driver's pipe before it has started the task (as shims before the
/// pipe did) is still waited for: the driver then polls for `started.json`.
#[tokio::test]
async fn a_shim_that_closes_the_pipe_early_is_still_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = dir.path().join("old-shim");
    // Prints the supervisor's pid and exits at once, the supervisor's stdout elsewhere, so the
    // driver sees end of file 300 ms before the supervisor (the same pid, after `exec`) even runs.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n( sleep 0.3; exec env SHOAL_SHIM_STAGE=supervise \"{}\" shim \"$2\" ) >/dev/null &\necho $!\n",
            env!("CARGO_BIN_EXE_shoal-shim")
        ),
    )
    .expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = ProcessDriver::new(ProcessDriverConfig::new(&wrapper));
    let h = d.start(&task(dir.path(), "echo late")).await.expect("start");
    assert!(wait(&d, &h).await.success());
    let lines = all_logs(&d, &h, LogOptions::default()).await;
    assert_eq!(lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), vec!["late"]);
    d.destroy(&h).await.expect("destroy");
}

#[test]
fn the_shim_binary_refuses_other_arguments() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-shim")).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: shoal-shim shim TASK_DIR"));
}
