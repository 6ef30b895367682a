//! The Swarm walk-through on real daemons, once per driver (process, oci, docker): a manager and a worker, a
//! service spread over both; drain moves every task off a node and `active` makes it eligible
//! again; a node that is cut off (its daemon killed, its tasks still running) has its tasks
//! running elsewhere within the heartbeat timeout plus a little, and when it comes back its stale
//! tasks are stopped, never duplicated; `service rebalance` then evens the spread out again, and
//! a rolling update to a version that cannot run rolls itself back.

use serde_json::Value;
use std::time::{Duration, Instant};

mod common;
use common::{eventually, eventually_or, remove_services_and_wait, Node};

/// (task id, node id, runtime id) of the running tasks that are meant to run.
fn running(m: &Node, service: &str) -> Vec<(String, String, String)> {
    let v: Value = m.json(&["service", "ps", service, "--format", "json"]);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["desired_state"] == "running" && t["status"]["state"] == "running")
                .map(|t| {
                    let s = |k: &Value| k.as_str().unwrap_or_default().to_string();
                    (s(&t["id"]), s(&t["node_id"]), s(&t["status"]["runtime_id"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The runtime a walk-through runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Runtime {
    Process,
    Oci,
    Docker,
}

impl Runtime {
    /// Whether the task with this runtime id is still running in its runtime.
    fn alive(self, id: &str) -> bool {
        match self {
            Runtime::Process => std::path::Path::new(&format!("/proc/{id}")).exists(),
            Runtime::Oci => std::process::Command::new("runc").args(["state", id]).output().is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"running\"")
            }),
            Runtime::Docker => std::process::Command::new("docker")
                .args(["inspect", "-f", "{{.State.Running}}", id])
                .output()
                .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true"),
        }
    }
}

fn node_id(m: &Node, hostname: &str) -> String {
    let nodes = m.json(&["node", "ls", "--format", "json"]);
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["description"]["hostname"] == hostname))
        .and_then(|n| n["id"].as_str().map(str::to_string))
        .expect("node")
}

#[test]
fn walk_through_with_processes() {
    walk_through(Runtime::Process);
}

#[test]
fn walk_through_with_oci_containers() {
    walk_through(Runtime::Oci);
}

#[test]
fn walk_through_with_docker_containers() {
    walk_through(Runtime::Docker);
}

fn walk_through(rt: Runtime) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start("dev");
    w.start("daemon");
    common::join_worker(&m, &w);
    let (mgr, wrk) = (node_id(&m, "mgr"), node_id(&m, "wrk"));
    // The image, where the runtime needs it: each node's own store (oci), the engine (docker).
    let tar = common::busybox_rootfs(tmp.path());
    let image = format!(
        "walk-{}:1",
        tmp.path().file_name().and_then(|f| f.to_str()).unwrap_or("x").to_lowercase().replace('.', "")
    );
    match rt {
        Runtime::Process => {}
        Runtime::Oci => common::import_image(&[&m, &w], &tar, &image),
        Runtime::Docker => {
            let st = std::process::Command::new("docker")
                .arg("import")
                .arg(&tar)
                .arg(&image)
                .output()
                .expect("docker import");
            assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        }
    }
    let mut create: Vec<&str> = vec!["service", "create", "--name", "web", "--replicas", "4"];
    match rt {
        Runtime::Process => create.extend(["--driver", "process", "sleep", "300"]),
        Runtime::Oci => create.extend(["--driver", "oci", &image, "sleep", "300"]),
        Runtime::Docker => create.extend(["--driver", "docker", &image, "sleep", "300"]),
    }
    let alive = |id: &str| rt.alive(id);

    // Spread: 4 replicas, 2 per node.
    m.ok(&create);
    let tasks = eventually(30, "4 running tasks", || Some(running(&m, "web")).filter(|r| r.len() == 4));
    assert_eq!(tasks.iter().filter(|t| t.1 == wrk).count(), 2, "spread evenly: {tasks:?}");

    // Drain the worker: its tasks stop and run on the manager instead.
    m.ok(&["node", "update", "--availability", "drain", "wrk"]);
    let drained = eventually(30, "every task off the drained node", || {
        Some(running(&m, "web")).filter(|r| r.len() == 4 && r.iter().all(|t| t.1 == mgr))
    });
    for t in tasks.iter().filter(|t| t.1 == wrk) {
        eventually(30, "the drained node's processes to stop", || (!alive(&t.2)).then_some(()));
    }
    // Active again: eligible, but nothing moves by itself (no rebalance yet).
    m.ok(&["node", "update", "--availability", "active", "wrk"]);
    m.ok(&["service", "scale", "web=6"]);
    let spread = eventually(30, "new replicas on the worker", || {
        Some(running(&m, "web")).filter(|r| r.len() == 6 && r.iter().filter(|t| t.1 == wrk).count() == 2)
    });
    assert!(drained.iter().all(|d| spread.iter().any(|s| s.0 == d.0)), "the drained-to tasks stayed");

    // Node loss: the worker's daemon dies; its tasks go on running, cut off (like a partition).
    let lost: Vec<_> = spread.iter().filter(|t| t.1 == wrk).cloned().collect();
    w.kill9();
    let t0 = Instant::now();
    let replaced = eventually_or(
        30,
        || Some(running(&m, "web")).filter(|r| r.len() == 6 && r.iter().all(|t| t.1 == mgr)),
        || format!("the lost node's replicas running elsewhere: {:#?}", running(&m, "web")),
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "replaced after {took:?} (heartbeat timeout is 3 s)");
    eprintln!("{rt:?}: node loss -> replicas running elsewhere: {took:?}");

    // The node returns: its stale tasks are stopped, and the service still has exactly 6.
    for t in &lost {
        assert!(alive(&t.2), "the cut-off node's task ran on meanwhile");
    }
    w.start("daemon");
    eventually(30, "the worker ready again", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        nodes
            .as_array()?
            .iter()
            .any(|n| n["id"] == wrk.as_str() && n["status"]["state"] == "ready")
            .then_some(())
    });
    for t in &lost {
        eventually(30, "the returning node to stop its stale task", || (!alive(&t.2)).then_some(()));
    }
    let after = running(&m, "web");
    assert_eq!(after.len(), 6, "{after:?}");
    assert!(after.iter().all(|a| replaced.iter().any(|r| r.0 == a.0)), "no duplicate appeared: {after:?}");

    // Rebalance: half of the tasks move back to the returned node, one at a time.
    let out = m.ok(&["service", "rebalance", "web"]);
    assert!(out.contains("rebalanced"), "{out}");
    // Three moves one after another, each waiting for its task to run and stay up: about 15 s
    // on an idle machine, more with the whole suite on two cores (30 s timed out once there).
    let after = eventually(90, "an even spread", || {
        Some(running(&m, "web")).filter(|r| r.len() == 6 && r.iter().filter(|t| t.1 == wrk).count() == 3)
    });
    assert_eq!(
        after.iter().filter(|a| replaced.iter().any(|r| r.0 == a.0)).count(),
        3,
        "only three tasks moved"
    );

    // A rolling update to a version that cannot run rolls itself back.
    let out = m.cli(&[
        "service",
        "update",
        "--update-failure-action",
        "rollback",
        "--update-parallelism",
        "2",
        "--args",
        "/nonexistent/program",
        "web",
    ]);
    assert!(!out.status.success(), "the update did not converge: {}", String::from_utf8_lossy(&out.stdout));
    eventually_or(
        60,
        || {
            let svc = m.json(&["service", "inspect", "web", "--format", "json"]);
            (svc["update_status"]["state"] == "rollback_completed"
                && running(&m, "web").len() == 6
                && svc["spec"]["task_template"].to_string().contains("300"))
            .then_some(())
        },
        || format!("rolled back: {}", m.ok(&["service", "inspect", "web", "--format", "json"])),
    );
    let after = running(&m, "web");

    // The agents clean up after the removed tasks (containers, overlay mounts, cgroups) before
    // the daemons go away with the test.
    remove_services_and_wait(&m, &["web"], &[&m, &w]);
    for t in &after {
        eventually(30, "the tasks to stop", || (!alive(&t.2)).then_some(()));
    }
    if rt == Runtime::Docker {
        let _ = std::process::Command::new("docker").args(["rmi", &image]).output();
    }
}

#[test]
fn events_stream_object_changes_and_look_back() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "ev");
    n.start("dev");
    // A live stream, filtered to services.
    let mut child = std::process::Command::new(common::BIN)
        .arg("-H")
        .arg(format!("unix://{}", n.dir.join("shoal.sock").display()))
        .args(["events", "--filter", "type=service"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The stream is up once the daemon answers; a service created now must show up on it.
    eventually(20, "the event stream to deliver", || {
        let name = format!(
            "e{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()
        );
        n.ok(&["service", "create", "-d", "--name", &name, "--replicas", "0", "--driver", "process", "true"]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            assert!(line.contains(" service "), "only service events: {line}");
            if line.contains("service create") && line.contains(&format!("name={name}")) {
                return Some(());
            }
        }
        None
    });
    let _ = child.kill();
    let _ = child.wait();
    // Looking back: the kept events since a minute ago, up to now, as JSON.
    let out =
        n.ok(&["events", "--since", "1m", "--until", "0s", "--filter", "type=service", "--format", "json"]);
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert!(events.iter().any(|e| e["type"] == "service" && e["action"] == "create"), "{out}");
    assert!(events.iter().all(|e| e["type"] == "service"));
    let bad = n.cli(&["events", "--filter", "color=blue"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid filter \"color\"") && err.contains("type, event, service"), "{err}");
}
