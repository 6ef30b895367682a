//! Upgrading Shoal itself: data of format 1 (the checked-in fixture, see
//! `tests/fixtures/format-v1/`) is read by this binary; a rolling upgrade — every daemon
//! restarted one at a time on a new binary, workers and managers, the leader included — keeps
//! every task running (same task id, same process) while the cluster keeps taking writes; and a
//! data directory of a newer format is refused at start with a message that says to upgrade.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{daemon_log, eventually, eventually_or, join_worker, managers, poll, Node, BIN};

/// Stops a daemon as an upgrade would (SIGTERM) and waits for it to exit; its tasks stay.
fn stop(n: &mut Node) {
    let mut child = n.child.take().expect("a running daemon");
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(st.success());
    let exited = poll(Duration::from_secs(30), || child.try_wait().ok().flatten());
    assert!(exited.is_some(), "{} did not stop on SIGTERM:\n{}", n.dir.display(), daemon_log(n));
}

/// The binary a daemon runs.
fn exe_of(n: &Node) -> PathBuf {
    let pid = n.child.as_ref().expect("running").id();
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn format_1_data_is_read_by_this_binary() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).expect("expected.json"))
            .expect("json");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "fixture-node");
    let data = n.dir.join("data");
    copy_dir(&fixture.join("data"), &data);
    chmod(&data, 0o700);
    chmod(&data.join("tls/node.key"), 0o600);
    let node_id = n.node_id();
    n.start("dev");
    // The replicated state: the service, the node, the tokens, the key-value store.
    eventually_or(
        30,
        || n.cli(&["service", "inspect", "fixture-web"]).status.success().then_some(()),
        || format!("the fixture's service:\n{}", daemon_log(&n)),
    );
    assert_eq!(
        n.ok(&["cluster", "join-token", "worker", "-q"]),
        expected["worker_token"].as_str().expect("token")
    );
    assert_eq!(n.ok(&["kv", "get", "fixture/key"]), "fixture/key\nfixture-value");
    let nodes = n.json(&["node", "ls", "--format", "json"]);
    assert!(nodes.as_array().expect("nodes").iter().any(|x| x["id"] == node_id.as_str()), "{nodes:#}");
    // The agent's record of the task was read: the task (whose process is gone) is reported
    // ended by the agent, not "lost" (what a node with no record says), and replaced.
    let task_id = expected["task_ids"][0].as_str().expect("task id");
    let ended = eventually(30, "the fixture's task to be reported", || {
        let tasks = n.json(&["service", "ps", "fixture-web", "--format", "json"]);
        let t = tasks.as_array()?.iter().find(|t| t["id"] == task_id)?.clone();
        (t["status"]["state"] != "running").then_some(t)
    });
    let err = ended["status"]["err"].as_str().unwrap_or_default();
    assert!(!err.contains("no record of this task"), "the task record was not read: {ended:#}");
    eventually(30, "a replacement task", || {
        common::running_pids(&n, "fixture-web")
            .filter(|r| r.len() == 1 && !r.contains_key(task_id))
            .map(|_| ())
    });
}

#[test]
fn a_rolling_upgrade_keeps_every_task_running_and_the_cluster_writable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // "The new release": a copy of the binary elsewhere.
    let new_bin = tmp.path().join("next/shoal");
    std::fs::create_dir_all(new_bin.parent().expect("dir")).expect("mkdir");
    std::fs::copy(BIN, &new_bin).expect("copy the binary");
    let mut nodes = managers(tmp.path(), &["m1", "m2", "m3"]);
    let mut w = Node::new(tmp.path(), "w1");
    w.start("daemon");
    join_worker(&nodes[0], &w);
    nodes[0]
        .ok(&["service", "create", "--name", "p", "--mode", "global", "--driver", "process", "sleep", "600"]);
    nodes[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "r",
        "--replicas",
        "0",
        "--driver",
        "process",
        "sleep",
        "600",
    ]);
    let before = eventually(60, "a task of p on each of the 4 nodes", || {
        common::running_pids(&nodes[0], "p").filter(|r| r.len() == 4)
    });
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect();

    // The worker first, then the followers, the leader last (chosen as the upgrade goes: a
    // restart can move the leadership; if it moved to an upgraded manager, that one is
    // restarted once more so that a leader is always among the restarted).
    let leader_now = |nodes: &[Node]| {
        eventually(30, "a leader", || {
            let (_, l) = (0..3).find_map(|i| common::leader_of(&nodes[i]))?;
            ids.iter().position(|i| *i == l)
        })
    };
    let mut upgraded: Vec<usize> = Vec::new();
    let mut leader_restarted = false;
    for step in 0.. {
        let which = if step == 0 {
            None
        } else {
            let leader = leader_now(&nodes);
            let left: Vec<usize> = (0..3).filter(|i| !upgraded.contains(i)).collect();
            let next = match left.iter().find(|&&i| i != leader) {
                Some(&follower) => follower,
                None if !left.is_empty() || !leader_restarted => leader,
                None => break,
            };
            leader_restarted |= next == leader;
            upgraded.push(next);
            Some(next)
        };
        let n = match which {
            Some(i) => &mut nodes[i],
            None => &mut w,
        };
        stop(n);
        if let Some(down) = which {
            // A majority is up: writes through a follower go on (after an election if the
            // leader is the one down).
            let live: Vec<usize> = (0..3).filter(|&i| i != down).collect();
            let replicas = (step + 1).to_string();
            eventually_or(
                30,
                || {
                    live.iter()
                        .find(|&&i| common::is_follower(&nodes[i]) == Some(true))
                        .filter(|&&i| {
                            nodes[i]
                                .cli(&["service", "scale", "-d", &format!("r={replicas}")])
                                .status
                                .success()
                        })
                        .map(|_| ())
                },
                || format!("a write through a follower while {} is down", ids[down]),
            );
            let svc = nodes[live[0]].json(&["service", "inspect", "r", "--format", "json"]);
            assert_eq!(svc["spec"]["mode"]["replicated"]["replicas"], step as u64 + 1, "{svc:#}");
        }
        let n = match which {
            Some(i) => &mut nodes[i],
            None => &mut w,
        };
        n.start_bin(&new_bin, "daemon", &[]);
        assert_eq!(exe_of(n), new_bin, "the daemon runs the new binary");
        // Every task is still the same task with the same process (re-attached, not restarted).
        let any = which.map_or(0, |i| (i + 1) % 3);
        eventually_or(
            60,
            || (common::running_pids(&nodes[any], "p").as_ref() == Some(&before)).then_some(()),
            || {
                format!(
                    "the same 4 tasks running after restarting step {step}: {:#?} vs {before:#?}",
                    common::running_pids(&nodes[any], "p")
                )
            },
        );
        for (_, pid) in before.values() {
            assert!(common::alive(*pid), "task process {pid} kept running");
        }
    }
    assert!(leader_restarted, "the leader was among the restarted");
    // Every daemon runs the new binary, the cluster has a leader and takes writes.
    for n in nodes.iter().chain([&w]) {
        assert_eq!(exe_of(n), new_bin);
    }
    nodes[0].ok(&["service", "scale", "-d", "r=0"]);
    for n in &nodes {
        eventually(30, "every manager to serve the last write", || {
            let svc = n.json(&["service", "inspect", "r", "--format", "json"]);
            (svc["spec"]["mode"]["replicated"]["replicas"] == 0).then_some(())
        });
    }
    assert_eq!(common::running_pids(&nodes[0], "p").as_ref(), Some(&before));
}

/// Runs the daemon on `data` and expects it to refuse to start: returns its stderr.
fn refused_start(dir: &Path, data: &Path) -> String {
    let port = common::free_port();
    let log = dir.join("refused.log");
    let mut child = Command::new(BIN)
        .args(["daemon", "--data-dir"])
        .arg(data)
        .arg("--api-socket")
        .arg(dir.join("refused.sock"))
        .args(["--listen-addr", &format!("127.0.0.1:{port}"), "--ui-addr", "off", "--etcd-addr", "off"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let status = poll(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the daemon did not stop:\n{stderr}"));
    assert!(!status.success(), "refused with a non-zero status: {status:?}\n{stderr}");
    stderr
}

#[test]
fn data_of_a_newer_format_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "n1");
    n.start("dev");
    n.ok(&["service", "create", "--name", "p", "--driver", "process", "sleep", "600"]);
    stop(&mut n);
    let data = n.dir.join("data");
    let known = 1;

    // A task record of a newer format.
    let copy = tmp.path().join("records");
    copy_dir(&data, &copy);
    chmod(&copy, 0o700);
    let rec =
        std::fs::read_dir(copy.join("agent/tasks")).expect("tasks").flatten().next().expect("a task record");
    let path = rec.path().join("task.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(v["format"], known, "records carry their format");
    v["format"] = (known + 1).into();
    std::fs::write(&path, serde_json::to_vec(&v).expect("json")).expect("write");
    let stderr = refused_start(tmp.path(), &copy);
    let want = format!(
        "task record {} was written by a newer Shoal (format {}, this binary knows up to {known}): upgrade this binary",
        path.display(),
        known + 1
    );
    assert!(stderr.contains(&want), "{stderr}");

    // A Raft snapshot file of a newer format.
    let copy = tmp.path().join("snapshot");
    copy_dir(&data, &copy);
    chmod(&copy, 0o700);
    let file_format = shoal_raft::formats::SNAPSHOT_FILE;
    std::fs::write(copy.join("raft/raft.snapshot"), format!("SHOAL-SNAPSHOT-{}\n", file_format + 1))
        .expect("write");
    let stderr = refused_start(tmp.path(), &copy);
    let want = format!(
        "the snapshot file was written by a newer Shoal (format {}, this binary knows up to {file_format}): upgrade this binary",
        file_format + 1
    );
    assert!(stderr.contains(&want), "{stderr}");

    // The original still starts, with its task re-attached.
    n.start("dev");
    eventually(30, "the task running again", || {
        common::running_pids(&n, "p").filter(|r| r.len() == 1).map(|_| ())
    });
}
