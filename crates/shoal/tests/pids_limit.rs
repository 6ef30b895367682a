//! Pids limits with the real process driver, real shim and real cgroups (run as root; issue 12):
//! a task's own limit holds against a fork loop, and all tasks together are capped below the
//! node's pid space.

use shoal_driver::{Driver, Handle, Limits, TaskConfig};
use shoal_driver_process::cgroup::{self, Layout};
use shoal_driver_process::{ProcessDriver, ProcessDriverConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn driver() -> ProcessDriver {
    ProcessDriver::new(ProcessDriverConfig::new(env!("CARGO_BIN_EXE_shoal-shim")))
}

fn task(dir: &Path, script: &str, pids: Option<u64>) -> TaskConfig {
    TaskConfig { limits: Limits { pids, ..Default::default() }, ..common::sh_task("pids", dir, script) }
}

/// Whether cgroups with a pids controller are usable here; where the runtimes are required (CI,
/// `SHOAL_REQUIRE_RUNTIMES=1`) their absence fails the test.
fn pids_controller(d: &ProcessDriver) -> bool {
    let ok = match d.layout() {
        Some(Layout::V1 { controllers }) => controllers.contains_key("pids"),
        Some(Layout::V2 { mount }) => {
            std::fs::read_to_string(mount.join("cgroup.controllers")).is_ok_and(|c| c.contains("pids"))
        }
        None => false,
    };
    if !ok {
        assert!(
            std::env::var("SHOAL_REQUIRE_RUNTIMES").map_or(true, |v| v != "1"),
            "SHOAL_REQUIRE_RUNTIMES=1 but there is no cgroup pids controller here"
        );
        eprintln!("skipping: no cgroup pids controller here");
    }
    ok
}

fn pids_dir(h: &Handle) -> PathBuf {
    PathBuf::from(h.state["cgroups"]["pids"].as_str().expect("the task has a pids cgroup"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

/// `max N` of `pids.events`: how often a fork failed on the limit.
fn max_events(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("pids.events"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("max ")?.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_task_cannot_fork_past_its_pids_limit() {
    let d = driver();
    if !pids_controller(&d) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // 200 background sleeps; a shell may give up at the first failed fork (dash does) or go on.
    let script = "for i in $(seq 200); do sleep 1000 & done; echo all-forked; wait";
    let h = d.start(&task(dir.path(), script, Some(50))).await.expect("start");
    let cg = pids_dir(&h);
    assert_eq!(read(&cg.join("pids.max")), "50");
    // Until the kernel refused a fork (then the loop is as far as it gets).
    let mut most = 0;
    let refused = common::poll_async(Duration::from_secs(30), Duration::from_millis(20), async || {
        most = most.max(read(&cg.join("pids.current")).parse::<u64>().expect("pids.current"));
        (max_events(&cg) > 0).then_some(())
    })
    .await;
    assert!(refused.is_some(), "no fork was refused; {most} pids at most");
    let current: u64 = read(&cg.join("pids.current")).parse().expect("pids.current");
    let procs = read(&cg.join("cgroup.procs")).lines().count() as u64;
    eprintln!("pids.current {current}, {procs} processes in the cgroup, at most {most} seen");
    assert!(current <= 50 && procs <= 50 && most <= 50, "{current} / {procs} / {most}");
    // It really filled up to the limit (the shell and its sleeps; the shell may have exited since).
    assert!(procs >= 45, "only {procs} processes");
    d.stop(&h, Duration::from_secs(1)).await.expect("stop");
    d.destroy(&h).await.expect("destroy");
    assert!(!cg.exists(), "the cgroup is removed");
}

#[tokio::test]
async fn all_tasks_together_are_capped_below_the_nodes_pid_space() {
    let d = driver();
    if !pids_controller(&d) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // No pids limit of its own: unlimited, like Docker's default.
    let h = d.start(&task(dir.path(), "sleep 1000", None)).await.expect("start");
    let cg = pids_dir(&h);
    assert_eq!(read(&cg.join("pids.max")), "max");
    let parent = cg.parent().expect("parent");
    let space = cgroup::node_pid_space().expect("pid space");
    let cap: u64 = read(&parent.join("pids.max"))
        .parse()
        .unwrap_or_else(|_| panic!("{}/pids.max is not capped", parent.display()));
    eprintln!("node pid space {space}, all tasks capped at {cap}");
    assert!(cap < space, "the cap {cap} leaves the system part of the node's {space} pids");
    d.stop(&h, Duration::from_secs(1)).await.expect("stop");
    d.destroy(&h).await.expect("destroy");
}

mod common;

/// The pids cgroup directory of a process (v1 `pids` hierarchy, or the unified one).
fn pids_cgroup_of(pid: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = text.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()));
    match v1 {
        Some(p) => Some(PathBuf::from("/sys/fs/cgroup/pids").join(p.trim_start_matches('/'))),
        None => {
            let p = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            Some(PathBuf::from("/sys/fs/cgroup").join(p.trim_start_matches('/')))
        }
    }
}

/// `service create --pids-limit` through a real node: the spec's limit reaches the task's cgroup.
#[test]
fn the_services_pids_limit_reaches_the_tasks_cgroup() {
    if !pids_controller(&driver()) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = common::Node::new(tmp.path(), "solo");
    n.start("dev");
    // A subshell forks until refused; the task itself then stays (sleeping).
    let script = "(for i in $(seq 200); do sleep 1000 & done); sleep 1000";
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "pl",
        "--driver",
        "process",
        "--pids-limit",
        "50",
        "sh",
        "-c",
        script,
    ]);
    let s = n.json(&["service", "inspect", "pl", "--format", "json"]);
    assert_eq!(s["spec"]["task_template"]["resources"]["limits"]["pids"], 50, "{s}");
    let pretty = n.ok(&["service", "inspect", "--pretty", "pl"]);
    assert!(pretty.contains("Pids:\t\t50"), "{pretty}");
    let cg = common::eventually(30, "the task running in its cgroup", || {
        let ps = n.json(&["service", "ps", "pl", "--format", "json"]);
        let t = ps.as_array()?.iter().find(|t| t["status"]["state"] == "running")?.clone();
        pids_cgroup_of(t["status"]["runtime_id"].as_str()?)
    });
    assert_eq!(read(&cg.join("pids.max")), "50");
    common::eventually(30, "a fork refused at the limit", || (max_events(&cg) > 0).then_some(()));
    let current: u64 = read(&cg.join("pids.current")).parse().expect("pids.current");
    assert!((45..=50).contains(&current), "pids.current {current}");
    n.ok(&["service", "rm", "pl"]);
    common::eventually(30, "the task's cgroup removed", || (!cg.exists()).then_some(()));
}
