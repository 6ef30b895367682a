//! The real `etcdctl` against a worker's etcd API (`--etcd-addr` on every node): a worker
//! forwards to the managers over mutual TLS, like etcd's gRPC proxy. One manager (`cluster
//! init`) and one worker (`common::join_worker`).

mod common;
use common::{
    etcdctl_ok as ok, etcdctl_run as run, etcdctl_watch as watch, eventually, next_lines as lines, Node,
};

#[test]
fn etcdctl_against_a_worker_forwards_to_the_managers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::with_etcd(tmp.path(), "em");
    let mut w = Node::with_etcd(tmp.path(), "ew");
    m.start("daemon");
    w.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    common::join_worker(&m, &w);

    // The joined daemon goes on as a worker: its etcd API now forwards to the manager.
    eventually(30, "the worker's etcd API to forward", || {
        common::daemon_log(&w).contains("forwarding to the managers").then_some(())
    });
    assert_eq!(ok(&w, &["put", "cfg/db", "postgres"]), "OK\n");
    assert_eq!(ok(&w, &["get", "cfg/db"]), "cfg/db\npostgres\n");
    assert_eq!(ok(&m, &["get", "cfg/db", "--print-value-only"]), "postgres\n", "written through the worker");

    // A watch on the worker from the first revision sees what went through the manager.
    let (mut watcher, rx) = watch(&w, &["--prefix", "cfg/", "--rev", "1"]);
    assert_eq!(lines(&rx, 3, 20), ["PUT", "cfg/db", "postgres"]);
    assert_eq!(ok(&m, &["put", "cfg/cache", "redis"]), "OK\n");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "cfg/cache", "redis"]);
    assert_eq!(ok(&w, &["del", "cfg/cache"]), "1\n");
    assert_eq!(lines(&rx, 3, 20), ["DELETE", "cfg/cache", ""]);

    // Leases through the worker.
    let grant = ok(&w, &["lease", "grant", "60"]);
    let id = grant.split_whitespace().nth(1).expect("lease id").to_string();
    assert_eq!(grant, format!("lease {id} granted with TTL(60s)\n"));
    assert_eq!(ok(&w, &["put", "--lease", &id, "cfg/lock", "me"]), "OK\n");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "cfg/lock", "me"]);
    let ttl = ok(&w, &["lease", "timetolive", "--keys", &id]);
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")), "{ttl}");
    assert!(ttl.contains("attached keys([cfg/lock])"), "{ttl}");
    assert_eq!(
        ok(&w, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let _ = watcher.kill();
    let _ = watcher.wait();

    // The members are the managers; the worker's endpoint answers its status.
    let members = ok(&w, &["member", "list"]);
    assert_eq!(members.lines().count(), 1, "{members}");
    assert!(members.contains(&format!(", started, {}, https://{}", m.node_id(), m.addr())), "{members}");
    let status = ok(&w, &["endpoint", "status"]);
    assert!(
        status.starts_with(&format!("127.0.0.1:{}, ", w.etcd_port)) && status.contains(", 3.4.0, "),
        "{status}"
    );
    // etcd's errors come back as they are.
    let o = run(&w, &["lease", "revoke", "1234"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("etcdserver: requested lease not found"));

    // Restarted, the daemon runs as a worker from the start, and serves the etcd API the same way.
    w.kill9();
    w.start("daemon");
    eventually(30, "the restarted worker's etcd API", || {
        let o = run(&w, &["get", "cfg/db", "--print-value-only"]);
        (o.status.success() && o.stdout == b"postgres\n").then_some(())
    });
    assert_eq!(ok(&w, &["put", "cfg/after", "restart"]), "OK\n");
    assert_eq!(ok(&m, &["get", "cfg/after", "--print-value-only"]), "restart\n");
    let (mut watcher, rx) = watch(&w, &["cfg/after", "--rev", "1"]);
    assert_eq!(lines(&rx, 3, 20), ["PUT", "cfg/after", "restart"]);
    let _ = watcher.kill();
    let _ = watcher.wait();
}

/// A watch through a worker goes on at another manager when the one it streams from dies:
/// nothing missed, nothing twice.
#[test]
fn a_workers_watch_survives_a_manager_kill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = common::managers(tmp.path(), &["f1", "f2", "f3"]);
    let mut w = Node::with_etcd(tmp.path(), "fw");
    w.start("daemon");
    common::join_worker(&nodes[0], &w);
    eventually(30, "the worker's etcd API to forward", || {
        common::daemon_log(&w).contains("forwarding to the managers").then_some(())
    });
    assert_eq!(ok(&w, &["put", "k/a", "1"]), "OK\n");
    let (mut watcher, rx) = watch(&w, &["--prefix", "k/", "--rev", "1"]);
    assert_eq!(lines(&rx, 3, 20), ["PUT", "k/a", "1"]);
    assert_eq!(ok(&nodes[1], &["put", "k/b", "2"]), "OK\n");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "k/b", "2"]);
    // The worker has learned every manager (it records them in managers.json); it joined
    // through the first one and talks to it first.
    let known = w.dir.join("data/tls/managers.json");
    eventually(30, "the worker to know the three managers", || {
        let list: Vec<String> = serde_json::from_slice(&std::fs::read(&known).ok()?).ok()?;
        (list.len() == 3).then_some(())
    });
    nodes[0].kill9();
    assert_eq!(ok(&nodes[2], &["put", "k/c", "3"]), "OK\n");
    assert_eq!(lines(&rx, 3, 30), ["PUT", "k/c", "3"], "the watch resumed at another manager");
    assert_eq!(ok(&w, &["put", "k/d", "4"]), "OK\n");
    assert_eq!(lines(&rx, 3, 30), ["PUT", "k/d", "4"]);
    assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "nothing twice");
    let _ = watcher.kill();
    let _ = watcher.wait();
}
