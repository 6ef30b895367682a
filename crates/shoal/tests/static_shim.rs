//! The task shim as it ships: a static executable (issue 19, item 5). Linked against glibc's
//! static archive, it maps no dynamic loader and no shared libc, so one shim costs under 2 MiB
//! of resident memory. `scripts/static-shim.sh` builds it (`scripts/run.sh` for the release
//! binary; `scripts/test.sh` for this build, as `shoal-shim-static` next to `shoal`).

mod common;

use shoal_driver::Driver;
use shoal_driver_process::{ProcessDriver, ProcessDriverConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn static_shim() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_shoal")).with_file_name("shoal-shim-static");
    assert!(
        p.is_file(),
        "{} is missing: scripts/test.sh builds it with scripts/static-shim.sh before the tests",
        p.display()
    );
    p
}

fn program_headers(bin: &Path) -> String {
    let out =
        Command::new("readelf").args(["--program-headers", "--wide"]).arg(bin).output().expect("readelf");
    assert!(out.status.success(), "readelf {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_shipped_shim_needs_no_dynamic_loader() {
    // A static PIE still has a DYNAMIC segment (it relocates itself) but no interpreter.
    let headers = program_headers(&static_shim());
    assert!(!headers.contains("INTERP"), "{headers}");
    // The same check tells the dynamically linked build apart.
    let dynamic = program_headers(Path::new(env!("CARGO_BIN_EXE_shoal-shim")));
    assert!(dynamic.contains("INTERP"), "{dynamic}");
}

/// The resident set of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("VmRSS")
}

/// Runs a task under `shim`; returns the shim's RSS (KiB) and the files it maps, once the task
/// has run, then stops the task.
async fn task_under(shim: PathBuf) -> (u64, String) {
    let d = ProcessDriver::new(ProcessDriverConfig::new(shim));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = common::sh_task("static-shim", dir.path(), "echo started > out; exec sleep 60");
    let h = d.start(&cfg).await.expect("start");
    let started: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("started.json")).expect("started.json"))
            .expect("json");
    let shim = started["shim_pid"].as_i64().expect("shim_pid");
    let task = started["pid"].as_i64().expect("pid");
    // The shim supervises the task: it is the task's parent.
    let stat = std::fs::read_to_string(format!("/proc/{task}/stat")).expect("task stat");
    let ppid: i64 =
        stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)?.parse().ok()).expect("ppid");
    assert_eq!(ppid, shim, "the task's parent is its shim");
    let out = dir.path().join("out");
    let ran = common::poll_async(Duration::from_secs(10), Duration::from_millis(10), async || {
        std::fs::read_to_string(&out).ok().filter(|s| s.trim() == "started")
    })
    .await;
    assert!(ran.is_some(), "the task did not run");
    let (rss, maps) = (rss_kib(shim), std::fs::read_to_string(format!("/proc/{shim}/maps")).expect("maps"));
    d.stop(&h, Duration::from_secs(5)).await.expect("stop");
    let exit = d.wait(&h).await.expect("wait");
    assert_eq!(exit.signal, Some(15), "{exit:?}");
    d.destroy(&h).await.expect("destroy");
    (rss, maps)
}

/// The static shim runs and stops a task as the dynamic one does, maps no shared libc or loader,
/// and is smaller in memory. (The release build's figure, about 1.7 MiB against 2.4, is in
/// BENCHMARKS.md: a debug build's unoptimized code alone takes ~2 MiB.)
#[tokio::test]
async fn a_task_runs_under_the_static_shim_which_maps_no_shared_libc() {
    let (static_rss, static_maps) = task_under(static_shim()).await;
    let (dynamic_rss, dynamic_maps) = task_under(PathBuf::from(env!("CARGO_BIN_EXE_shoal-shim"))).await;
    eprintln!("shim RSS: static {static_rss} KiB, dynamic {dynamic_rss} KiB");
    let shared = |maps: &str| maps.contains("libc.so") || maps.contains("ld-linux");
    assert!(!shared(&static_maps), "{static_maps}");
    assert!(shared(&dynamic_maps), "the check tells the dynamic shim apart: {dynamic_maps}");
    assert!(static_rss < dynamic_rss, "static {static_rss} KiB, dynamic {dynamic_rss} KiB");
}
