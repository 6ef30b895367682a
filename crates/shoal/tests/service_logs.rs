//! `shoal service logs` against a real `shoal dev` node and the process driver: a service's lines
//! or one task's (by id or id prefix), prefixed as docker prefixes them
//! (`web.1.abcdefghijkl@node    | line`), and the flags that change the prefix (`--no-task-ids`,
//! `--no-trunc`, `--no-resolve`, `--raw`).

mod common;
use common::{eventually, eventually_or, Node};
use std::collections::BTreeMap;

/// The running tasks of `service`: slot → full task id, once all `n` run.
fn tasks_by_slot(node: &Node, service: &str, n: usize) -> BTreeMap<u64, String> {
    eventually(60, "the service's tasks to run", || {
        let tasks = common::running_tasks(node, service)?;
        let by_slot: BTreeMap<u64, String> =
            tasks.iter().filter_map(|t| Some((t["slot"].as_u64()?, t["id"].as_str()?.to_string()))).collect();
        (by_slot.len() == n).then_some(by_slot)
    })
}

/// `service logs ARGS` once it has at least `lines` lines (each task prints its lines and sleeps,
/// so the output only grows until then).
fn logs_with(n: &Node, args: &[&str], lines: usize) -> String {
    let mut all = vec!["service", "logs"];
    all.extend_from_slice(args);
    let mut last = String::new();
    eventually_or(
        30,
        || {
            last = n.ok(&all);
            (last.lines().count() >= lines).then(|| last.clone())
        },
        || format!("{lines} lines from `service logs {args:?}`"),
    )
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn service_and_task_logs_with_dockers_prefixes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "node1");
    n.start("dev");
    eventually(30, "the node to be ready", || common::ready_nodes(&n).filter(|v| v.len() == 1));
    let node_id = n.node_id();

    // Ten replicas: the one-digit slots are padded to two, as docker pads them.
    let script = "echo alpha; echo beta; sleep 300";
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "10",
        "--driver",
        "process",
        "sh",
        "-c",
        script,
    ]);
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "other",
        "--driver",
        "process",
        "sh",
        "-c",
        "echo gamma; sleep 300",
    ]);
    let web = tasks_by_slot(&n, "web", 10);
    let other = tasks_by_slot(&n, "other", 1);
    let service_id = n.json(&["service", "inspect", "web"])["id"].as_str().expect("service id").to_string();

    // The service: every task's two lines, and nothing of the other service.
    let out = logs_with(&n, &["web"], 20);
    let mut want = Vec::new();
    for (slot, id) in &web {
        let pad = if *slot < 10 { " " } else { "" };
        for line in ["alpha", "beta"] {
            want.push(format!("web.{slot}.{}@node1{pad}    | {line}", &id[..12]));
        }
    }
    want.sort();
    assert_eq!(sorted_lines(&out), want, "{out}");

    // One task, by a prefix of its id: only its lines, and no padding (docker pads a task's
    // prefix to its own slot).
    let (slot, id) = web.iter().nth(2).expect("slot 3");
    let out = logs_with(&n, &[&id[..8]], 2);
    assert_eq!(
        sorted_lines(&out),
        vec![
            format!("web.{slot}.{}@node1    | alpha", &id[..12]),
            format!("web.{slot}.{}@node1    | beta", &id[..12])
        ],
        "{out}"
    );
    // ... and by its full id, of another service.
    let gamma = logs_with(&n, &[&other[&1]], 1);
    assert_eq!(gamma, format!("other.1.{}@node1    | gamma", &other[&1][..12]));

    // --no-task-ids, --no-trunc, --no-resolve, --raw, --tail.
    let out = logs_with(&n, &["--no-task-ids", id], 2);
    assert_eq!(
        sorted_lines(&out),
        vec![format!("web.{slot}@node1    | alpha"), format!("web.{slot}@node1    | beta")]
    );
    let out = logs_with(&n, &["--no-trunc", "--tail", "1", id], 1);
    assert_eq!(out, format!("web.{slot}.{id}@node1    | beta"));
    let out = logs_with(&n, &["--no-resolve", "-n", "1", id], 1);
    assert_eq!(out, format!("{service_id}.{slot}.{}@{node_id}    | beta", &id[..12]));
    let out = logs_with(&n, &["--raw", "--no-resolve", id], 2);
    assert_eq!(sorted_lines(&out), vec!["alpha", "beta"]);
    // The service by a prefix of its id.
    let out = logs_with(&n, &["--no-task-ids", &service_id[..6]], 20);
    assert_eq!(out.lines().filter(|l| l.ends_with("| alpha")).count(), 10, "{out}");
    assert!(out.lines().all(|l| l.starts_with("web.")), "{out}");

    // Neither a service nor a task; --details; a bad --tail.
    let stderr = |args: &[&str]| {
        let mut all = vec!["service", "logs"];
        all.extend_from_slice(args);
        let o = n.cli(&all);
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    assert!(stderr(&["nope"]).contains("no such task or service: nope"));
    assert!(stderr(&["--details", "web"]).contains("--details"));
    assert!(stderr(&["--tail", "some", "web"]).contains("give a number of lines or `all`"));
    let all = logs_with(&n, &["--tail", "all", "web"], 20);
    assert_eq!(all.lines().count(), 20, "{all}");

    n.ok(&["service", "rm", "web", "other"]);
    let tasks_dir = n.dir.join("data/agent/tasks");
    eventually(30, "the agent to clean up", || {
        std::fs::read_dir(&tasks_dir).map_or(true, |mut d| d.next().is_none()).then_some(())
    });
}
