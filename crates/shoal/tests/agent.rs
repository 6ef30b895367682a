//! The agent with real processes: tasks run under the process driver, survive `kill -9` of their
//! daemon (and of every manager), are re-attached when it comes back, and a task that ended while
//! the agent was away is reported with its real exit code and replaced — never duplicated. A
//! worker joins with the worker token and runs tasks that the managers place on it.

use serde_json::Value;
use std::collections::BTreeMap;

mod common;
use common::{eventually, eventually_or, Node};

/// Task id → (desired state, current state, runtime id) of a service's tasks.
fn tasks(n: &Node, service: &str) -> BTreeMap<String, (String, String, String, Value)> {
    let v = n.json(&["service", "ps", service, "--format", "json"]);
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                (
                    t["desired_state"].as_str().unwrap_or_default().to_string(),
                    t["status"]["state"].as_str().unwrap_or_default().to_string(),
                    t["status"]["runtime_id"].as_str().unwrap_or_default().to_string(),
                    t.clone(),
                ),
            )
        })
        .collect()
}

/// Pids of the service's running tasks, once exactly `n` are running.
fn running_pids(node: &Node, service: &str, n: usize) -> Vec<u32> {
    eventually_or(
        30,
        || {
            let t = tasks(node, service);
            let pids: Vec<u32> = t
                .values()
                .filter(|(d, s, _, _)| d == "running" && s == "running")
                .filter_map(|(_, _, r, _)| r.parse().ok())
                .collect();
            (pids.len() == n && t.values().filter(|(d, ..)| d == "running").count() == n).then_some(pids)
        },
        || format!("{n} running tasks of {service}: {:#?}", tasks(node, service)),
    )
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive; the shim reaps its child, so a dead task leaves no entry.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

fn kill(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(st.success());
}

#[test]
fn tasks_survive_kill_9_of_their_daemon_and_are_recovered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "solo");
    n.start("dev");
    n.ok(&["service", "create", "--name", "p", "--replicas", "2", "--driver", "process", "sleep", "300"]);
    let mut pids = running_pids(&n, "p", 2);
    pids.sort();

    n.kill9();
    for pid in &pids {
        assert!(alive(*pid), "task {pid} died with its daemon");
    }
    // One task ends while nobody watches.
    kill(pids[0], "-TERM");
    eventually(10, "the task to end", || (!alive(pids[0])).then_some(()));

    n.start("dev");
    // The survivor is re-attached (same process), the dead one is reported with its exit code
    // and replaced: two running, never three.
    eventually_or(
        30,
        || {
            let t = tasks(&n, "p");
            let failed = t.values().find(|(_, s, r, _)| s == "failed" && *r == pids[0].to_string())?;
            (failed.3["status"]["exit_code"] == 143).then_some(())
        },
        || format!("the dead task reported with exit code 143: {:#?}", tasks(&n, "p")),
    );
    let now = running_pids(&n, "p", 2);
    assert!(now.contains(&pids[1]), "the surviving task was re-attached, not restarted: {now:?} vs {pids:?}");
    assert!(!now.contains(&pids[0]));
    for pid in &now {
        assert!(alive(*pid));
    }

    // The manager's own tasks' logs, with timestamps and a tail.
    n.ok(&[
        "service",
        "create",
        "--name",
        "count",
        "--driver",
        "process",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; done; sleep 300",
    ]);
    let logs = eventually(30, "the task's logs", || {
        let text = n.ok(&["service", "logs", "--tail", "2", "--timestamps", "count"]);
        text.contains("line 5").then_some(text)
    });
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "--tail 2: {logs}");
    assert!(lines[0].ends_with("line 4") && lines[1].ends_with("line 5"), "{logs}");
    // docker's order: the time, the task, the line.
    assert!(lines[0].starts_with("20") && lines[0].contains(" count.1."), "timestamp and prefix: {logs}");
    n.ok(&["service", "rm", "count"]);

    // A task that cannot run is rejected with the reason, visible in `service ps`.
    n.ok(&["service", "create", "-d", "--name", "bad", "--driver", "process", "/nonexistent/program"]);
    eventually_or(
        30,
        || {
            tasks(&n, "bad").values().find(|(_, s, ..)| s == "rejected").and_then(|t| {
                t.3["status"]["err"].as_str().filter(|e| e.contains("executable not found")).map(|_| ())
            })
        },
        || format!("a rejected task: {:#?}", tasks(&n, "bad")),
    );
    let ps = n.ok(&["service", "ps", "--no-trunc", "bad"]);
    assert!(ps.contains("executable not found: /nonexistent/program"), "{ps}");

    // Removing the service stops its processes.
    n.ok(&["service", "rm", "p", "bad"]);
    eventually(30, "the tasks to stop", || now.iter().all(|p| !alive(*p)).then_some(()));
}

#[test]
fn a_worker_joins_runs_tasks_and_keeps_them_while_every_manager_is_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start("dev");
    w.start("daemon");
    let out = common::join_worker(&m, &w);
    assert!(out.contains("as a worker"), "{out}");
    let worker_id = eventually(30, "the worker to register", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        nodes
            .as_array()?
            .iter()
            .find(|n| n["spec"]["role"] == "worker" && n["status"]["state"] == "ready")
            .map(|n| {
                assert_eq!(n["description"]["hostname"], "wrk");
                assert!(
                    n["description"]["drivers"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["name"] == "process")),
                    "the worker offers the process driver: {n}"
                );
                n["id"].as_str().unwrap_or_default().to_string()
            })
    });
    // A worker's socket sends management commands to a manager.
    let out = w.cli(&["service", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("this node is a worker"));

    m.ok(&[
        "service",
        "create",
        "--name",
        "wp",
        "--replicas",
        "2",
        "--driver",
        "process",
        "--constraint",
        "node.role==worker",
        "sleep",
        "300",
    ]);
    let mut pids = running_pids(&m, "wp", 2);
    pids.sort();
    for t in tasks(&m, "wp").values() {
        assert_eq!(t.3["node_id"], worker_id.as_str());
    }

    // Logs come from the node that runs the task, through a manager.
    m.ok(&[
        "service",
        "create",
        "--name",
        "talk",
        "--driver",
        "process",
        "--constraint",
        "node.role==worker",
        "sh",
        "-c",
        "echo hello from the worker; sleep 300",
    ]);
    let logs = eventually(30, "the worker's task logs", || {
        let out = m.cli(&["service", "logs", "talk"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("hello from the worker").then_some(text)
    });
    assert!(logs.contains("@wrk"), "lines are prefixed with their task and node: {logs}");
    m.ok(&["service", "rm", "talk"]);

    // Every daemon dies: the tasks keep running.
    w.kill9();
    m.kill9();
    for pid in &pids {
        assert!(alive(*pid), "task {pid} died with the cluster");
    }
    // The worker comes back first and waits for a manager; then the manager.
    w.start("daemon");
    m.start("dev");
    let mut now = running_pids(&m, "wp", 2);
    now.sort();
    assert_eq!(now, pids, "the same processes, re-attached");
    eventually(30, "the worker ready again", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        nodes
            .as_array()?
            .iter()
            .any(|n| n["id"] == worker_id.as_str() && n["status"]["state"] == "ready")
            .then_some(())
    });
    // The worker still follows its assignments after the restart.
    m.ok(&["service", "rm", "wp"]);
    eventually(30, "the tasks to stop", || pids.iter().all(|p| !alive(*p)).then_some(()));
}

/// `runc list` of the containers Shoal started: id → status.
fn runc_containers() -> BTreeMap<String, String> {
    let out =
        std::process::Command::new("runc").args(["list", "--format", "json"]).output().expect("runc list");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((c["id"].as_str()?.to_string(), c["status"].as_str()?.to_string())))
                .filter(|(id, _)| id.starts_with("shoal-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn oci_tasks_run_from_the_image_store_and_survive_their_daemon() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "oci");
    n.start("dev");
    let tar = common::busybox_rootfs(tmp.path());
    let data = n.dir.join("data");
    let out = std::process::Command::new(common::BIN)
        .args(["image", "--data-dir"])
        .arg(&data)
        .arg("import")
        .arg(&tar)
        .arg("agent-test:1")
        .output()
        .expect("image import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A missing image is rejected with a clear reason.
    n.ok(&["service", "create", "-d", "--name", "nope", "--driver", "oci", "no-such-image:1", "sleep", "1"]);
    n.ok(&[
        "service",
        "create",
        "--name",
        "o",
        "--replicas",
        "2",
        "--driver",
        "oci",
        "agent-test:1",
        "sleep",
        "300",
    ]);
    let ids = eventually_or(
        30,
        || {
            let t = tasks(&n, "o");
            let ids: Vec<String> = t
                .values()
                .filter(|(d, s, ..)| d == "running" && s == "running")
                .map(|(_, _, r, _)| r.clone())
                .collect();
            (ids.len() == 2).then_some(ids)
        },
        || format!("2 running oci tasks: {:#?}", tasks(&n, "o")),
    );
    let running = runc_containers();
    for id in &ids {
        assert_eq!(running.get(id).map(String::as_str), Some("running"), "{id} in {running:?}");
    }
    eventually_or(
        30,
        || {
            tasks(&n, "nope").values().find(|(_, s, ..)| s == "rejected").and_then(|t| {
                t.3["status"]["err"].as_str().filter(|e| e.contains("image not found")).map(|_| ())
            })
        },
        || format!("a rejected task: {:#?}", tasks(&n, "nope")),
    );

    n.kill9();
    let running = runc_containers();
    for id in &ids {
        assert_eq!(running.get(id).map(String::as_str), Some("running"), "{id} died with its daemon");
    }
    n.start("dev");
    let again = eventually(30, "the containers re-attached", || {
        let t = tasks(&n, "o");
        let mut r: Vec<String> = t
            .values()
            .filter(|(d, s, ..)| d == "running" && s == "running")
            .map(|(_, _, r, _)| r.clone())
            .collect();
        r.sort();
        (r.len() == 2 && t.len() == 2).then_some(r)
    });
    let mut before = ids.clone();
    before.sort();
    assert_eq!(again, before, "the same containers, not new ones");

    n.ok(&["service", "rm", "o", "nope"]);
    eventually(30, "the containers to be deleted", || {
        let left = runc_containers();
        ids.iter().all(|id| !left.contains_key(id)).then_some(())
    });
    // ... and everything else of them (overlay mounts, task directories) before the daemon goes.
    let dir = n.dir.join("data/agent/tasks");
    eventually(30, "the agent to clean up", || {
        std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()).then_some(())
    });
}

#[test]
fn a_worker_renews_its_certificate_through_a_manager() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start_with("dev", &["--cert-ttl", "8s"]);
    w.start("daemon");
    common::join_worker(&m, &w);
    let cert = w.dir.join("data/tls/node.crt");
    let first = std::fs::read_to_string(&cert).expect("the worker's certificate");
    let joined = std::time::Instant::now();
    // Renewed at 50-80% of its 8 s life, by a manager (a worker holds no CA key).
    eventually(30, "the worker's certificate to be renewed", || {
        std::fs::read_to_string(&cert).ok().filter(|c| *c != first).map(|_| ())
    });
    // Past the first certificate's end, the worker still talks to the managers: a task placed on
    // it runs and its status comes back.
    eventually(30, "the first certificate to expire", || {
        (joined.elapsed() > std::time::Duration::from_secs(9)).then_some(())
    });
    m.ok(&[
        "service",
        "create",
        "--name",
        "late",
        "--driver",
        "process",
        "--constraint",
        "node.role==worker",
        "sleep",
        "300",
    ]);
    let pids = running_pids(&m, "late", 1);
    m.ok(&["service", "rm", "late"]);
    eventually(30, "the task to stop", || pids.iter().all(|p| !alive(*p)).then_some(()));
}

#[test]
fn health_checks_gate_tasks_and_replace_unhealthy_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "hc");
    n.start("dev");
    let flag = tmp.path().join("healthy");
    std::fs::write(&flag, b"").expect("flag");
    let probe = format!("test -e {}", flag.display());
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "hc",
        "--driver",
        "process",
        "--health-cmd",
        &probe,
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "--restart-delay",
        "100ms",
        "sleep",
        "300",
    ]);
    let first = eventually(30, "a healthy task", || {
        let t = tasks(&n, "hc");
        t.values()
            .find(|(_, s, ..)| s == "running")
            .filter(|t| t.3["status"]["health"] == "healthy")
            .map(|t| t.2.clone())
    });
    let ps = n.ok(&["service", "ps", "hc"]);
    assert!(ps.contains("running (healthy)"), "{ps}");
    // The check starts failing: the task is failed as unhealthy and replaced.
    std::fs::remove_file(&flag).expect("rm flag");
    eventually_or(
        30,
        || {
            tasks(&n, "hc").values().find(|(_, s, r, _)| s == "failed" && *r == first).and_then(|t| {
                t.3["status"]["err"].as_str().filter(|e| e.starts_with("unhealthy")).map(|_| ())
            })
        },
        || format!("the unhealthy task failed: {:#?}", tasks(&n, "hc")),
    );
    std::fs::write(&flag, b"").expect("flag");
    eventually(30, "a healthy replacement", || {
        let t = tasks(&n, "hc");
        t.values()
            .any(|(_, s, r, t)| s == "running" && *r != first && t["status"]["health"] == "healthy")
            .then_some(())
    });
    n.ok(&["service", "rm", "hc"]);
}
