//! When `service create/update` may say "converged" (issue 12), against a real `shoal dev` node
//! and the process driver: the tasks must stay up for the monitor period, a task that fails
//! meanwhile fails the command with its exit reason, a failing update is reported with the task's
//! reason; `service ps` lists each slot's running task before its history, also when the task
//! moved to another node; and `service ps | head -1` ends quietly.

mod common;
use common::{eventually, Node, BIN};
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn ready(n: &Node) -> Option<()> {
    let out = n.cli(&["node", "ls", "--format", "json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    nodes.as_array()?.iter().all(|n| n["status"]["state"] == "ready").then_some(())
}

/// Removes every service when the test ends, passed or failed, and waits (at most 30 s, never
/// panicking) until the agents have stopped their tasks, so no process outlives the test.
struct Cleanup<'a>(Vec<&'a Node>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let Some(manager) = self.0.first() else { return };
        let out = manager.cli(&["service", "ls", "-q"]);
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        if !ids.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(ids.iter().map(String::as_str));
            manager.cli(&args);
        }
        // No panic here (this may run while a failed test unwinds): give up after the deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &self.0 {
            let dir = n.dir.join("data/agent/tasks");
            common::poll(deadline.saturating_duration_since(Instant::now()), || {
                std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()).then_some(())
            });
        }
    }
}

fn dev_node(root: &std::path::Path, name: &str) -> Node {
    let mut n = Node::new(root, name);
    n.start("dev");
    eventually(30, "the node to be ready", || ready(&n));
    n
}

/// What a CLI run printed, and how long it took.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the CLI against `n`; fails the test if it has not exited within `secs`.
fn run_within(n: &Node, args: &[&str], secs: u64) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("-H")
        .arg(format!("unix://{}", n.dir.join("shoal.sock").display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the cli");
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = eventually_or_kill(&mut child, secs, args);
    Run {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: started.elapsed(),
    }
}

fn eventually_or_kill(child: &mut std::process::Child, secs: u64, args: &[&str]) -> ExitStatus {
    match common::poll(Duration::from_secs(secs), || child.try_wait().expect("wait for the cli")) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal {args:?} did not exit within {secs}s");
        }
    }
}

#[test]
fn create_fails_when_a_task_exits_while_it_is_verified() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path(), "crash");
    let _cleanup = Cleanup(vec![&n]);
    // Runs for 2 s, then exits 3: within the default monitor period (5 s).
    let r = run_within(
        &n,
        &["service", "create", "--name", "crash", "--driver", "process", "sh", "-c", "sleep 2; exit 3"],
        60,
    );
    assert!(!r.status.success(), "reported converged:\n{}", r.stdout);
    assert!(r.stdout.contains("1/1: running"), "{}", r.stdout);
    assert!(r.stdout.contains("verify: Detected task failure"), "{}", r.stdout);
    assert!(!r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    assert!(r.stderr.contains("service crash: task "), "{}", r.stderr);
    assert!(r.stderr.contains(": exited with code 3"), "{}", r.stderr);
}

#[test]
fn a_healthy_service_converges_after_the_monitor_period() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path(), "calm");
    let _cleanup = Cleanup(vec![&n]);
    let r =
        run_within(&n, &["service", "create", "--name", "calm", "--driver", "process", "sleep", "1000"], 60);
    assert!(r.status.success(), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("verify: Waiting 5 seconds to verify that tasks are stable..."),
        "{}",
        r.stdout
    );
    assert!(r.stdout.trim_end().ends_with("verify: Service converged"), "{}", r.stdout);
    assert!(r.took >= Duration::from_secs(5), "returned after {:?}, before the monitor period", r.took);
    // -d still returns at once, without verifying.
    let r = run_within(
        &n,
        &["service", "create", "-d", "--name", "calm2", "--driver", "process", "sleep", "1000"],
        60,
    );
    assert!(r.status.success(), "{}", r.stderr);
    assert!(!r.stdout.contains("verify:"), "{}", r.stdout);
}

#[test]
fn a_failing_update_is_reported_with_the_task_failure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path(), "upd");
    let _cleanup = Cleanup(vec![&n]);
    n.ok(&["service", "create", "--name", "upd", "--driver", "process", "sleep", "1000"]);
    // Default update settings: monitor 5 s, failure action pause.
    let r = run_within(&n, &["service", "update", "--args", "sh -c 'sleep 2; exit 3'", "upd"], 60);
    assert!(!r.status.success(), "reported converged:\n{}", r.stdout);
    assert!(r.stdout.contains("verify: Detected task failure"), "{}", r.stdout);
    assert!(!r.stdout.contains("verify: Service converged"), "{}", r.stdout);
    assert!(r.stderr.contains("service upd: "), "{}", r.stderr);
    assert!(r.stderr.contains(": exited with code 3"), "{}", r.stderr);
}

/// `service ps` rows as (NAME, DESIRED STATE, CURRENT STATE), cut at the header's columns.
fn ps_rows(text: &str) -> Vec<(String, String, String)> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let at = |title: &str| header.find(title).unwrap_or_else(|| panic!("no {title} column in:\n{text}"));
    let (name, image, desired, current, error) =
        (at("NAME"), at("IMAGE"), at("DESIRED STATE"), at("CURRENT STATE"), at("ERROR"));
    let cut = |l: &str, a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or_default().trim().to_string();
    lines.map(|l| (cut(l, name, image), cut(l, desired, current), cut(l, current, error))).collect()
}

/// Each slot's first row is its running task; the rows under it (`\_ NAME`) are stopped history.
/// Returns how many history rows there are.
fn assert_current_first(ps: &str, service: &str, slots: u64) -> usize {
    let rows = ps_rows(ps);
    let mut history = 0;
    for slot in 1..=slots {
        let name = format!("{service}.{slot}");
        let mine: Vec<&(String, String, String)> =
            rows.iter().filter(|r| r.0 == name || r.0 == format!("\\_ {name}")).collect();
        let Some((first, rest)) = mine.split_first() else { panic!("no row for {name}:\n{ps}") };
        assert_eq!(first.0, name, "the slot's first row is not its head:\n{ps}");
        assert_eq!(first.1, "running", "{name}: its first row is not the current task:\n{ps}");
        assert!(first.2.starts_with("running"), "{name}: its first row is not the running task:\n{ps}");
        for r in rest {
            assert_eq!(r.0, format!("\\_ {name}"), "{ps}");
            assert_eq!(r.1, "shutdown", "{name}: history below the current task:\n{ps}");
        }
        history += rest.len();
    }
    history
}

/// (task id, node id) of the tasks that run and are meant to.
fn running_on(n: &Node, service: &str) -> Vec<(String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    common::running_tasks(n, service)
        .unwrap_or_default()
        .iter()
        .map(|t| (s(&t["id"]), s(&t["node_id"])))
        .collect()
}

#[test]
fn ps_lists_the_running_task_before_its_history_after_a_drain_and_an_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start("dev");
    w.start("daemon");
    common::join_worker(&m, &w);
    let _cleanup = Cleanup(vec![&m, &w]);
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--driver",
        "process",
        "sleep",
        "1000",
    ]);
    let placed = eventually(60, "a task on each node", || {
        let r = running_on(&m, "web");
        (r.len() == 2 && r[0].1 != r[1].1).then_some(r)
    });
    // Drain the node whose id sorts first: its task moves to a node whose id sorts after it, so
    // ordering a slot's rows by node before time would put the stopped task on top.
    let low = placed.iter().map(|(_, node)| node.clone()).min().unwrap_or_default();
    let high = placed.iter().map(|(_, node)| node.clone()).max().unwrap_or_default();
    m.ok(&["node", "update", "--availability", "drain", &low]);
    eventually(60, "both tasks on the other node, the moved one stopped", || {
        let r = running_on(&m, "web");
        let stopped = m.json(&["service", "ps", "web", "--format", "json"]).as_array().is_some_and(|a| {
            a.iter().any(|t| t["node_id"] == low.as_str() && t["status"]["state"] == "shutdown")
        });
        (r.len() == 2 && r.iter().all(|(_, node)| *node == high) && stopped).then_some(())
    });
    let ps = m.ok(&["service", "ps", "web"]);
    assert_eq!(assert_current_first(&ps, "web", 2), 1, "{ps}");

    // A forced update replaces both tasks: each slot's new task first, its history below.
    m.ok(&["service", "update", "--force", "-q", "web"]);
    let ps = m.ok(&["service", "ps", "web"]);
    assert_eq!(assert_current_first(&ps, "web", 2), 3, "{ps}");
}

#[test]
fn ps_into_head_ends_quietly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path(), "head");
    let _cleanup = Cleanup(vec![&n]);
    // Many tasks that cannot be placed (no processes): far more output than a pipe holds, so the
    // CLI is still writing when `head` has gone.
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "many",
        "--replicas",
        "1500",
        "--constraint",
        "node.labels.nowhere==x",
        "--driver",
        "process",
        "sleep",
        "1",
    ]);
    eventually(60, "1500 tasks", || {
        (n.ok(&["service", "ps", "-q", "many"]).lines().count() == 1500).then_some(())
    });
    let sock = format!("unix://{}", n.dir.join("shoal.sock").display());
    let out = Command::new("sh")
        .args([
            "-c",
            r#"{ "$0" -H "$1" service ps many; echo "shoal exited $?" >&2; } | head -1"#,
            BIN,
            &sock,
        ])
        .output()
        .expect("sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("ID") && stdout.lines().count() == 1, "{stdout}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert!(
        stderr.contains("shoal exited 141") || stderr.contains("shoal exited 0"),
        "the CLI's status is SIGPIPE's (141) or success: {stderr}"
    );
}
