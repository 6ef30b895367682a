//! The per-task shim's own resources whatever the task does (issue 12), with the real `shoal shim`
//! and the real process driver (run as root):
//! - its memory stays bounded while a task writes output as fast as it can, with or without
//!   newlines (a bounded queue with backpressure between the pipe readers and the log writer, and
//!   long lines split), and the logs are readable afterwards;
//! - when it cannot protect itself from the OOM killer (no `CAP_SYS_RESOURCE`), it says so.

mod common;

use shoal_driver::shim;
use shoal_driver::shim::log::MAX_LINE_BYTES;
use shoal_driver::{Driver, Handle, Limits, LogOptions, LogStream, TaskConfig};
use shoal_driver_process::{ProcessDriver, ProcessDriverConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most resident memory the shim may use while a task floods its output. The shim (a debug
/// build) starts at a few MiB; the unbounded queue of old grew past
/// 200 MiB within a second.
const MAX_SHIM_RSS_KIB: u64 = 64 * 1024;

fn shim_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal-shim"))
}

fn task(dir: &Path, script: &str) -> TaskConfig {
    TaskConfig {
        // As in the reproduction; the shim is outside this limit either way.
        limits: Limits { memory_bytes: Some(64 << 20), ..Default::default() },
        ..common::sh_task("shimmem", dir, script)
    }
}

fn launched(h: &Handle) -> shim::Launched {
    serde_json::from_value(h.state["launched"].clone()).expect("launched")
}

/// `VmRSS` of `pid` in KiB; `None` once it is gone (or a zombie, which has no `VmRSS` line).
fn vm_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes in the task's log files, rotated ones included.
fn log_bytes(task_dir: &Path) -> u64 {
    std::fs::read_dir(task_dir.join("logs"))
        .expect("logs dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Runs `script` through the process driver and samples the shim's RSS until the shim exits.
/// Returns the handle, the exit code and the highest RSS seen (KiB).
async fn run_and_sample(d: &ProcessDriver, dir: &Path, script: &str) -> (Handle, i32, u64) {
    let h = d.start(&task(dir, script)).await.expect("start");
    let l = launched(&h);
    let (mut max_rss, mut samples) = (0, 0);
    // Sampled every 20 ms until the shim exits.
    let ended = common::poll_async(Duration::from_secs(120), Duration::from_millis(20), async || {
        if !shim::is_running(&l) {
            return Some(());
        }
        if let Some(rss) = vm_rss_kib(l.shim_pid) {
            max_rss = max_rss.max(rss);
            samples += 1;
            assert!(
                rss < MAX_SHIM_RSS_KIB,
                "the shim grew to {rss} KiB (at most {MAX_SHIM_RSS_KIB} allowed) while the task runs {script}"
            );
        }
        None
    })
    .await;
    assert!(ended.is_some(), "the task did not end in time: {script}");
    assert!(samples > 20, "the shim was sampled only {samples} times");
    let s =
        tokio::time::timeout(Duration::from_secs(30), d.wait(&h)).await.expect("wait in time").expect("wait");
    (h, s.code, max_rss)
}

async fn tail(d: &ProcessDriver, h: &Handle, n: usize) -> Vec<shoal_driver::LogLine> {
    let mut rx = d.logs(h, &LogOptions { tail: Some(n), ..Default::default() }).await.expect("logs");
    let mut out = Vec::new();
    while let Some(l) =
        tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("log stream ends")
    {
        out.push(l.expect("log line"));
    }
    out
}

#[tokio::test]
async fn shim_memory_stays_bounded_under_an_output_flood() {
    let d = ProcessDriver::new(ProcessDriverConfig::new(shim_exe()));
    let line = "0123456789abcdef".repeat(10);

    // Lines as fast as `yes` writes them, for a few seconds (the reproduction).
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, code, max_rss) = run_and_sample(&d, dir.path(), &format!("timeout 4 yes {line}")).await;
    assert_eq!(code, 124, "`timeout` ended the flood");
    let written = log_bytes(dir.path());
    eprintln!("yes flood: shim max VmRSS {max_rss} KiB, {written} bytes of log kept");
    assert!(written > 1 << 20, "the task really flooded its log: {written} bytes");
    let last = tail(&d, &h, 5).await;
    assert_eq!(last.len(), 5, "the newest records are readable");
    assert!(last.iter().all(|l| l.stream == LogStream::Stdout && l.line == line), "{last:?}");
    d.destroy(&h).await.expect("destroy");

    // No newline at all: split into records of at most MAX_LINE_BYTES, memory bounded all the same.
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, code, max_rss) =
        run_and_sample(&d, dir.path(), "timeout 5 head -c 300000000 /dev/zero; echo; echo done").await;
    assert!(code == 0, "exit code {code}");
    let written = log_bytes(dir.path());
    eprintln!("no-newline flood: shim max VmRSS {max_rss} KiB, {written} bytes of log kept");
    assert!(written > 1 << 20, "the task really flooded its log: {written} bytes");
    let last = tail(&d, &h, 4).await;
    assert_eq!(last.last().map(|l| l.line.as_str()), Some("done"), "the last line made it");
    let chunks = &last[..last.len() - 1];
    assert!(
        chunks.iter().all(|l| l.line.len() <= MAX_LINE_BYTES && l.line.bytes().all(|b| b == 0)),
        "long output is split into records of at most {MAX_LINE_BYTES} bytes"
    );
    assert!(chunks.iter().any(|l| l.line.len() == MAX_LINE_BYTES), "full-size chunks");
    d.destroy(&h).await.expect("destroy");
}

/// Whether this process has `CAP_SYS_RESOURCE` (bit 24) in its effective set.
fn have_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff");
    let bits = u64::from_str_radix(eff.trim(), 16).expect("hex");
    bits & (1 << 24) != 0
}

/// Starts `sleep` under the shim `shim_exe`, returns what the shim recorded about its OOM
/// protection and its `oom_score_adj`.
async fn oom_protection(shim_exe: &Path, dir: &Path) -> (Option<String>, String) {
    let d = ProcessDriver::new(ProcessDriverConfig::new(shim_exe));
    let h = d.start(&task(dir, "sleep 1000")).await.expect("start");
    let l = launched(&h);
    let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", l.shim_pid)).expect("oom_score_adj");
    let task_adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", l.child_pid))
        .expect("task's oom_score_adj");
    assert_eq!(task_adj.trim(), "0", "the task keeps the default score");
    let error = shim::oom_protection_error(dir);
    d.stop(&h, Duration::from_secs(5)).await.expect("stop");
    d.destroy(&h).await.expect("destroy");
    (error, adj.trim().to_string())
}

#[tokio::test]
async fn shim_reports_missing_oom_protection() {
    // As this test runs: protected exactly when it may lower its score.
    let dir = tempfile::tempdir().expect("tempdir");
    let (error, adj) = oom_protection(shim_exe(), dir.path()).await;
    if have_cap_sys_resource() {
        assert_eq!((error, adj.as_str()), (None, "-1000"));
    } else {
        assert!(error.as_deref().is_some_and(|e| e.contains("oom_score_adj")), "{error:?}");
        assert_ne!(adj, "-1000");
    }

    // Without CAP_SYS_RESOURCE whatever this test has: a shim started through setpriv.
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().map(PathBuf::from).find(|p| p.exists());
    let Some(setpriv) = setpriv else {
        eprintln!(
            "setpriv not installed: the unprivileged case is covered only when this test lacks the cap"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = dir.path().join("shim-without-cap");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --bounding-set=-sys_resource --inh-caps=-sys_resource -- {} \"$@\"\n",
            setpriv.display(),
            shim_exe().display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let task_dir = dir.path().join("task");
    std::fs::create_dir(&task_dir).expect("mkdir");
    let (error, adj) = oom_protection(&wrapper, &task_dir).await;
    assert!(error.as_deref().is_some_and(|e| e.contains("oom_score_adj to -1000")), "{error:?}");
    assert_ne!(adj, "-1000");
}
