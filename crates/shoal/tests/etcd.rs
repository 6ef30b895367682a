//! The real `etcdctl` (Debian's etcd-client 3.4) against a Shoal cluster of three `shoal
//! daemon`s (`cluster init` + joins), each serving the etcd API on its own `--etcd-addr`:
//! writes through followers, reads everywhere, txn, a watch that keeps going across a leader
//! kill, a lease that expires once after the failover, member list and endpoint status naming
//! the managers, and etcd's error texts.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{
    etcdctl, etcdctl_ok as ok, etcdctl_run as run, etcdctl_watch as watch, eventually, eventually_or,
    leader_of, next_lines as lines, Node,
};

fn fails(n: &Node, args: &[&str]) -> String {
    let o = run(n, args);
    assert!(!o.status.success(), "etcdctl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn etcdctl_against_three_managers_across_a_leader_kill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = common::managers(tmp.path(), &["e1", "e2", "e3"]);
    let (_, leader_id) = eventually(20, "a leader", || leader_of(&nodes[0]));
    let li = nodes.iter().position(|n| n.node_id() == leader_id).expect("leader");
    let f: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let (a, b) = (f[0], f[1]);

    // Members are the managers; each endpoint answers its status.
    let members = ok(&nodes[a], &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for n in &nodes {
        assert!(members.contains(&format!(", started, {}, https://{}", n.node_id(), n.addr())), "{members}");
    }
    assert!(members.contains(&format!("http://127.0.0.1:{}", nodes[a].etcd_port)), "{members}");
    let status = ok(&nodes[b], &["endpoint", "status"]);
    assert!(
        status.starts_with(&format!("127.0.0.1:{}, ", nodes[b].etcd_port)) && status.contains(", 3.4.0, ")
    );
    let health = run(&nodes[b], &["endpoint", "health"]);
    assert!(String::from_utf8_lossy(&health.stderr).contains("is healthy: successfully committed proposal"));

    // A watch on one follower from the first revision; writes through the other.
    let (mut w, rx) = watch(&nodes[b], &["--prefix", "cfg/", "--rev", "1"]);
    assert_eq!(ok(&nodes[a], &["put", "cfg/db", "postgres"]), "OK\n");
    assert_eq!(ok(&nodes[b], &["get", "cfg/db"]), "cfg/db\npostgres\n");
    assert_eq!(ok(&nodes[li], &["put", "cfg/cache", "redis"]), "OK\n");
    assert_eq!(ok(&nodes[a], &["get", "--prefix", "cfg/", "--keys-only"]), "cfg/cache\n\ncfg/db\n\n");
    assert_eq!(ok(&nodes[b], &["get", "cfg/db", "--consistency=s", "--print-value-only"]), "postgres\n");
    // A txn: compare-and-swap through a follower.
    let mut txn = etcdctl(&nodes[a], &["txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl txn");
    txn.stdin
        .take()
        .expect("stdin")
        .write_all(b"value(\"cfg/db\") = \"postgres\"\n\nput cfg/db mysql\n\nput cfg/failed yes\n\n")
        .expect("txn input");
    let out = txn.wait_with_output().expect("txn");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SUCCESS\n\nOK\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&nodes[b], &["del", "cfg/cache"]), "1\n");
    assert_eq!(
        lines(&rx, 12, 20),
        [
            "PUT",
            "cfg/db",
            "postgres",
            "PUT",
            "cfg/cache",
            "redis",
            "PUT",
            "cfg/db",
            "mysql",
            "DELETE",
            "cfg/cache",
            ""
        ],
        "the watch sees every change in order"
    );

    // A lease through a follower; the key goes when it expires, after the leader's death too.
    let grant = ok(&nodes[a], &["lease", "grant", "3"]);
    let id = grant.split_whitespace().nth(1).expect("lease id").to_string();
    assert_eq!(grant, format!("lease {id} granted with TTL(3s)\n"));
    assert_eq!(ok(&nodes[a], &["put", "--lease", &id, "cfg/lock", "me"]), "OK\n");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "cfg/lock", "me"]);
    let ka = ok(&nodes[b], &["lease", "keep-alive", "--once", &id]);
    assert_eq!(ka, format!("lease {id} keepalived with TTL(3)\n"));
    nodes[li].kill9();
    eventually_or(
        30,
        || leader_of(&nodes[a]).filter(|(_, l)| *l != leader_id).map(|_| ()),
        || format!("a new leader:\n{}", common::daemon_log(&nodes[a])),
    );
    assert_eq!(
        ok(&nodes[b], &["get", "cfg/db", "--print-value-only"]),
        "mysql\n",
        "acknowledged writes stay"
    );
    assert_eq!(lines(&rx, 3, 30), ["DELETE", "cfg/lock", ""], "the lease expired after the failover");
    let ttl = ok(&nodes[a], &["lease", "timetolive", &id]);
    assert_eq!(ttl, format!("lease {id} already expired\n"));
    assert_eq!(ok(&nodes[a], &["put", "cfg/after", "1"]), "OK\n");
    assert_eq!(lines(&rx, 3, 20), ["PUT", "cfg/after", "1"]);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the lease expired once");
    let _ = w.kill();
    let _ = w.wait();

    // etcd's errors.
    assert!(fails(&nodes[a], &["put", "", "x"]).contains("etcdserver: key is not provided"));
    assert!(fails(&nodes[a], &["lease", "revoke", &id]).contains("etcdserver: requested lease not found"));
    let rev: i64 = {
        let j: serde_json::Value =
            serde_json::from_str(&ok(&nodes[a], &["get", "cfg/after", "-w", "json"])).expect("json");
        j["header"]["revision"].as_i64().expect("revision")
    };
    assert_eq!(ok(&nodes[b], &["compaction", &rev.to_string()]), format!("compacted revision {rev}\n"));
    assert!(fails(&nodes[a], &["get", "cfg/db", "--rev", "2"])
        .contains("etcdserver: mvcc: required revision has been compacted"));
}
