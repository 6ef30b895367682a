//! Backup and restore with real daemons: a backup taken through a follower brings the cluster
//! back after every manager and its data are lost — same CA (the worker's certificate stays
//! valid and it reconnects to a fresh manager on the old leader's address), services, specs,
//! key-value store, and the worker's task re-attached, not restarted. A damaged, truncated or
//! newer backup is refused and leaves the fresh daemon untouched.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

mod common;
use common::{daemon_log, eventually, eventually_or, join_worker, managers, Node};

fn fails(n: &Node, args: &[&str]) -> String {
    let out = n.cli(args);
    assert!(!out.status.success(), "shoal {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_backup_brings_the_cluster_back_after_every_manager_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = managers(tmp.path(), &["m1", "m2", "m3"]);
    let mut w = Node::new(tmp.path(), "w1");
    w.start("daemon");
    join_worker(&nodes[0], &w);
    let worker_id = w.node_id();
    nodes[0].ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--driver",
        "process",
        "--constraint",
        "node.role==worker",
        "--env",
        "GREETING=hello",
        "sleep",
        "600",
    ]);
    let before = eventually(60, "web running on the worker", || {
        common::running_pids(&nodes[0], "web").filter(|r| r.len() == 1)
    });
    let (_, (task_node, task_pid)) = before.iter().next().expect("one task");
    let task_pid = *task_pid;
    assert_eq!(task_node, &worker_id);
    assert_eq!(nodes[0].ok(&["kv", "put", "backup/key", "v1"]), "OK");
    let spec_before = nodes[0].json(&["service", "inspect", "web", "--format", "json"])["spec"].clone();
    let old_managers: Vec<String> = nodes.iter().map(Node::node_id).collect();
    let worker_token = nodes[0].ok(&["cluster", "join-token", "worker", "-q"]);

    // The backup, through a follower.
    let leader = eventually(30, "a leader", || {
        let (_, l) = common::leader_of(&nodes[0])?;
        old_managers.iter().position(|i| *i == l)
    });
    let follower = (leader + 1) % 3;
    let file = tmp.path().join("cluster.backup");
    let t0 = Instant::now();
    let out = nodes[follower].ok(&["cluster", "backup", "-o", file.to_str().expect("path")]);
    let backup_time = t0.elapsed();
    assert!(out.contains("written to"), "{out}");
    let meta = std::fs::metadata(&file).expect("backup file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the backup holds the CA key");
    let bytes = std::fs::read(&file).expect("read");
    assert!(bytes.starts_with(b"SHOAL-BACKUP 1\n"));

    // Every manager is lost with its data; the worker and its task stay.
    for n in nodes.iter_mut() {
        n.kill9();
        std::fs::remove_dir_all(n.dir.join("data")).expect("remove the data");
    }
    // A fresh daemon on the old leader's address (the worker remembers it).
    let r = &mut nodes[leader];
    r.start("daemon");
    let fresh_id = r.node_id();
    assert!(!old_managers.contains(&fresh_id));

    // Damaged, truncated and newer backups are refused; the daemon stays out of any cluster.
    let bad = tmp.path().join("bad.backup");
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    std::fs::write(&bad, &flipped).expect("write");
    let e = fails(r, &["cluster", "init", "--restore", bad.to_str().expect("path")]);
    assert!(e.contains("corrupt") && e.contains("checksum"), "{e}");
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).expect("write");
    let e = fails(r, &["cluster", "init", "--restore", bad.to_str().expect("path")]);
    assert!(e.contains("truncated or corrupt"), "{e}");
    let mut newer = b"SHOAL-BACKUP 2\n".to_vec();
    newer.extend_from_slice(&bytes[b"SHOAL-BACKUP 1\n".len()..]);
    std::fs::write(&bad, &newer).expect("write");
    let e = fails(r, &["cluster", "init", "--restore", bad.to_str().expect("path")]);
    assert!(
        e.contains("written by a newer Shoal (format 2, this binary knows up to 1): upgrade this binary"),
        "{e}"
    );
    let e = fails(r, &["cluster", "inspect"]);
    assert!(e.contains("not in a cluster yet"), "nothing was half-restored: {e}");

    // The restore.
    let t0 = Instant::now();
    let out = r.ok(&["cluster", "init", "--restore", file.to_str().expect("path")]);
    let restore_time = t0.elapsed();
    assert!(out.contains("restored"), "{out}");
    eprintln!(
        "backup: {} bytes in {:.2}s; restore: {:.2}s",
        bytes.len(),
        backup_time.as_secs_f64(),
        restore_time.as_secs_f64()
    );

    // The state is back: the service and its spec, the key-value store, the tokens.
    let spec = r.json(&["service", "inspect", "web", "--format", "json"])["spec"].clone();
    assert_eq!(spec, spec_before);
    assert_eq!(r.ok(&["kv", "get", "backup/key"]), "backup/key\nv1");
    assert_eq!(r.ok(&["cluster", "join-token", "worker", "-q"]), worker_token);
    // The worker reconnects (its certificate is of the same CA) and its task is re-attached:
    // same task, same process.
    eventually_or(
        60,
        || (common::running_pids(r, "web").as_ref() == Some(&before)).then_some(()),
        || format!("web re-attached: {:?} vs {before:?}\n{}", common::running_pids(r, "web"), daemon_log(&w)),
    );
    assert!(common::alive(task_pid), "the task's process was never restarted");
    let nodes_now = eventually(60, "the worker and the new manager ready", || {
        let v = r.json(&["node", "ls", "--format", "json"]);
        let ready =
            |id: &str| v.as_array()?.iter().find(|n| n["id"] == id).map(|n| n["status"]["state"] == "ready");
        (ready(&worker_id)? && ready(&fresh_id)?).then_some(v)
    });
    // The old managers are gone, not phantom managers.
    for old in &old_managers {
        assert!(
            !nodes_now.as_array().expect("nodes").iter().any(|n| n["id"] == old.as_str()),
            "{nodes_now:#}"
        );
    }
    // New writes work, and a second restore on a daemon in a cluster is refused.
    assert_eq!(r.ok(&["kv", "put", "backup/key", "v2"]), "OK");
    r.ok(&["service", "scale", "-d", "web=2"]);
    eventually(60, "two web tasks", || common::running_pids(r, "web").filter(|t| t.len() == 2).map(|_| ()));
    let e = fails(r, &["cluster", "init", "--restore", file.to_str().expect("path")]);
    assert!(e.contains("already part of a cluster"), "{e}");
    assert_eq!(r.ok(&["kv", "get", "backup/key"]), "backup/key\nv2");
}
