//! Role changes with real daemons: a worker is promoted (it restarts as a manager and joins the
//! Raft membership), demoted again (it leaves the membership and restarts as a worker) — its task
//! keeps running throughout — and finally leaves the cluster, which stops its tasks.

use serde_json::Value;

mod common;
use common::{alive, eventually, eventually_or, Node};

fn voters(n: &Node) -> Option<usize> {
    n.raft().and_then(|r| r["voters"].as_object().map(|v| v.len()))
}

fn task_pid(m: &Node, service: &str) -> Option<u32> {
    common::running_tasks(m, service)?.first()?["status"]["runtime_id"].as_str()?.parse().ok()
}

#[test]
fn a_worker_is_promoted_demoted_and_leaves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start("dev");
    w.start("daemon");
    common::join_worker(&m, &w);
    m.ok(&[
        "service",
        "create",
        "--name",
        "t",
        "--driver",
        "process",
        "--constraint",
        "node.hostname==wrk",
        "sleep",
        "300",
    ]);
    let pid = eventually(30, "the task on the worker", || task_pid(&m, "t"));

    // Promote: the worker restarts as a manager and becomes a voter.
    let out = m.ok(&["node", "promote", "wrk"]);
    assert!(out.contains("promoted"), "{out}");
    eventually_or(
        60,
        || (voters(&m) == Some(2) && voters(&w) == Some(2)).then_some(()),
        || {
            let log = std::fs::read_to_string(w.dir.join("daemon.log")).unwrap_or_default();
            format!("two voters after the promotion; worker log:\n{log}")
        },
    );
    assert!(alive(pid), "the task survived the promotion");
    let nodes = w.json(&["node", "ls", "--format", "json"]);
    let wrk =
        nodes.as_array().and_then(|a| a.iter().find(|n| n["description"]["hostname"] == "wrk").cloned());
    assert_eq!(wrk.map(|n| n["spec"]["role"].clone()), Some(Value::from("manager")));
    assert_eq!(task_pid(&w, "t"), Some(pid), "the same process, re-attached by the new manager's agent");

    // Demote (through the leader, with docker's `node update --role`): out of the membership,
    // back to a worker.
    let out = m.ok(&["node", "update", "--role", "worker", "wrk"]);
    assert!(out.contains("demoted"), "{out}");
    eventually_or(
        60,
        || {
            let out = w.cli(&["service", "ls"]);
            (voters(&m) == Some(1) && String::from_utf8_lossy(&out.stderr).contains("this node is a worker"))
                .then_some(())
        },
        || {
            let log = std::fs::read_to_string(w.dir.join("daemon.log")).unwrap_or_default();
            format!("one voter and a worker after the demotion; its log:\n{log}")
        },
    );
    assert!(alive(pid), "the task survived the demotion");
    // The last manager can be neither demoted nor leave without --force.
    let out = m.cli(&["node", "demote", "mgr"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot demote the last manager"));
    let out = m.cli(&["cluster", "leave"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("this is the last manager"));
    eventually(30, "the task reported running from the worker again", || {
        (task_pid(&m, "t") == Some(pid)).then_some(())
    });

    // Leave: the worker's tasks stop and its daemon exits; the managers see it down.
    let out = w.cli(&["cluster", "leave"]);
    let log = || std::fs::read_to_string(w.dir.join("daemon.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "cluster leave: {}\nthe worker's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("left the cluster"), "{out}");
    assert!(!alive(pid), "leaving stopped the task");
    eventually(30, "the worker daemon to exit", || {
        w.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).map(|_| ())
    });
    assert!(!w.dir.join("data/tls/node.crt").exists(), "the node forgot the cluster");
    eventually(30, "the node to be down", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        nodes
            .as_array()?
            .iter()
            .any(|n| n["description"]["hostname"] == "wrk" && n["status"]["state"] == "down")
            .then_some(())
    });
    m.ok(&["node", "rm", "wrk"]);
    m.ok(&["service", "rm", "t"]);
}
