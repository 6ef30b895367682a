//! The cluster's key-value store through `shoal kv` on real daemons: three managers from
//! `shoal daemon` + `cluster init` + joins; writes through followers, linearizable reads
//! elsewhere; a watch on a follower sees every change in order across a leader kill; a lease
//! expires once, after the failover too; acknowledged writes survive the leader's death; reads
//! at compacted revisions fail with etcd's error.

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::{eventually, eventually_or, leader_of, next_lines as lines, Node};

/// `shoal kv watch ARGS` on `n`, its stdout lines sent to the receiver as they come.
fn watch(n: &Node, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("-H")
        .arg(format!("unix://{}", n.dir.join("shoal.sock").display()))
        .args(["kv", "watch"])
        .args(args);
    common::spawn_lines(cmd)
}

#[test]
fn kv_through_every_manager_across_a_leader_kill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = common::managers(tmp.path(), &["k1", "k2", "k3"]);
    let (_, leader_id) = eventually(20, "a leader", || leader_of(&nodes[0]));
    let li = nodes.iter().position(|n| n.node_id() == leader_id).expect("the leader is one of them");
    let followers: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let (f1, f2) = (followers[0], followers[1]);

    // A watch on a follower, from the store's first revision (so it cannot miss a write).
    let (mut w, rx) = watch(&nodes[f2], &["--prefix", "app/", "--rev", "1"]);
    // Writes through a follower; a linearizable read on the other sees them at once.
    assert_eq!(nodes[f1].ok(&["kv", "put", "app/a", "1"]), "OK");
    assert_eq!(nodes[f2].ok(&["kv", "get", "app/a"]), "app/a\n1");
    assert_eq!(nodes[li].ok(&["kv", "put", "app/b", "2"]), "OK");
    assert_eq!(nodes[f2].ok(&["kv", "get", "--prefix", "app/", "--keys-only"]), "app/a\napp/b");
    let json = nodes[f1].json(&["kv", "get", "app/a", "--format", "json"]);
    assert_eq!(json["kvs"][0]["version"], 1);
    let first_rev = json["kvs"][0]["mod_revision"].as_i64().expect("revision");
    assert_eq!(nodes[f1].ok(&["kv", "put", "app/a", "3", "--prev-kv"]), "OK\napp/a\n1");
    assert_eq!(nodes[f2].ok(&["kv", "get", "app/a", "--rev", &first_rev.to_string()]), "app/a\n1");
    assert_eq!(nodes[f1].ok(&["kv", "del", "app/b"]), "1");
    assert_eq!(nodes[f1].ok(&["kv", "del", "app/b"]), "0");
    assert_eq!(
        lines(&rx, 9, 20),
        ["PUT", "app/a", "1", "PUT", "app/b", "2", "PUT", "app/a", "3"],
        "the watch sees every change in order"
    );
    assert_eq!(lines(&rx, 3, 20), ["DELETE", "app/b", ""]);

    // A lease: its key goes once it expires, with one DELETE.
    let out = nodes[f1].ok(&["kv", "lease", "grant", "3"]);
    let id = out.split_whitespace().nth(1).expect("lease id").to_string();
    assert!(out.ends_with("granted with TTL(3s)"), "{out}");
    assert_eq!(nodes[f1].ok(&["kv", "put", "app/leased", "x", "--lease", &id]), "OK");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "app/leased", "x"]);
    let ttl = nodes[f2].ok(&["kv", "lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("granted with TTL(3s)") && ttl.ends_with("attached keys([app/leased])"), "{ttl}");
    assert_eq!(nodes[f2].ok(&["kv", "lease", "ls"]), format!("found 1 leases\n{id}"));

    // The leader dies: acknowledged writes stay, the watch goes on, and the lease still expires
    // (the new leader gives it a full TTL, then revokes it).
    nodes[li].kill9();
    eventually_or(
        30,
        || leader_of(&nodes[f1]).filter(|(_, l)| *l != leader_id).map(|_| ()),
        || format!("a new leader:\n{}", common::daemon_log(&nodes[f1])),
    );
    assert_eq!(nodes[f2].ok(&["kv", "get", "app/a"]), "app/a\n3");
    assert_eq!(lines(&rx, 3, 30), ["DELETE", "app/leased", ""], "the lease expired after the failover");
    assert_eq!(nodes[f1].ok(&["kv", "get", "app/leased"]), "");
    let out = nodes[f1].cli(&["kv", "lease", "timetolive", &id]);
    assert!(!out.status.success(), "the lease is gone");
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: requested lease not found"));
    assert_eq!(nodes[f2].ok(&["kv", "put", "app/c", "4"]), "OK");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "app/c", "4"]);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "nothing more: the lease expired once");
    let _ = w.kill();
    let _ = w.wait();

    // Compaction: older revisions are gone, with etcd's error.
    let rev = nodes[f1].json(&["kv", "get", "app/c", "--format", "json"])["revision"].as_i64().expect("rev");
    nodes[f1].ok(&["kv", "compaction", &rev.to_string()]);
    let out = nodes[f2].cli(&["kv", "get", "app/a", "--rev", &first_rev.to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nodes[f2].cli(&["kv", "put", "", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: key is not provided"));
    // The old leader comes back as a follower and has everything.
    nodes[li].start("daemon");
    eventually(30, "the old leader caught up", || {
        (nodes[li].cli(&["kv", "get", "app/c", "--consistency", "s"]).stdout == b"app/c\n4\n").then_some(())
    });
}
