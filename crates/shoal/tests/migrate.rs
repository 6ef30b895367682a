//! Live migration with real runc and CRIU on a cluster of real daemons (a manager and a worker):
//! a counter container moves to the other node and goes on counting from where it was; a failure
//! injected after the checkpoint and a corrupted archive both leave it running (restored on its
//! own node, still counting on); `node update --availability drain --migrate` moves it back.

mod common;
use common::{eventually, join_worker, remove_services_and_wait, Node};
use serde_json::Value;

/// Prints 1, 2, 3... ten times a second: where a restored task resumes shows in its output.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done";

fn running_task(m: &Node) -> Option<Value> {
    let v = m.json(&["service", "ps", "counter", "--format", "json"]);
    v.as_array()?
        .iter()
        .find(|t| t["desired_state"] == "running" && t["status"]["state"] == "running")
        .cloned()
}

fn node_of(m: &Node, t: &Value) -> String {
    let id = t["node_id"].as_str().unwrap_or_default();
    let nodes = m.json(&["node", "ls", "--format", "json"]);
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id))
        .and_then(|n| n["description"]["hostname"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The counter values task `task` printed, in order.
fn counts(m: &Node, task: &str) -> Vec<u64> {
    let out = m.cli(&["service", "logs", "counter"]);
    // Sources name tasks by their short id, as `service ps` does.
    let task = task.get(..12).unwrap_or(task);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(" | "))
        .filter(|(src, _)| src.contains(task))
        .filter_map(|(_, v)| v.trim().parse().ok())
        .collect()
}

/// The newest value the running task printed, once it printed more than `at_least`.
fn counted_past(m: &Node, at_least: u64) -> (String, u64) {
    eventually(30, "the counter to count", || {
        let t = running_task(m)?;
        let id = t["id"].as_str()?.to_string();
        let last = *counts(m, &id).last()?;
        (last > at_least).then_some((id, last))
    })
}

/// After a move (or a failed one), the task now running resumed the count: its first value follows
/// the old task's values (never 1 again) and it goes on.
fn resumed(m: &Node, before: u64) -> (String, u64) {
    let (id, last) = counted_past(m, before + 5);
    let values = counts(m, &id);
    let first = values[0];
    assert!(
        first > before.saturating_sub(50) && first != 1,
        "restored task {id} started at {first}, the old one had reached {before}: {values:?}"
    );
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no repeat: {values:?}");
    (id, last)
}

fn migrate(m: &Node, task: &str, to: &str) -> std::process::Output {
    m.cli(&["task", "migrate", task, "--to", to, "--format", "json"])
}

#[test]
fn a_counter_migrates_survives_failures_and_drains_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start("dev");
    w.start("daemon");
    let tar = common::busybox_rootfs(tmp.path());
    common::import_image(&[&m, &w], &tar, "counter:1");
    // Created before the worker joins, so it starts on the manager.
    m.ok(&["service", "create", "--name", "counter", "--driver", "oci", "counter:1", "sh", "-c", COUNTER]);
    join_worker(&m, &w);
    // Both nodes offer checkpoint/restore (the oci driver with a working CRIU).
    eventually(30, "both nodes able to checkpoint", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        let capable = |n: &Value| {
            n["description"]["drivers"].as_array().is_some_and(|d| {
                d.iter().any(|d| {
                    d["name"] == "oci"
                        && d["capabilities"].as_array().is_some_and(|c| c.iter().any(|c| c == "checkpoint"))
                })
            })
        };
        let a = nodes.as_array()?;
        (a.len() == 2 && a.iter().all(capable)).then_some(())
    });
    let (t0, before) = counted_past(&m, 20);
    assert_eq!(node_of(&m, &running_task(&m).expect("task")), "mgr");

    // 1. Migrate to the worker: same slot, new task there, resumes the count.
    let out = migrate(&m, &t0, "wrk");
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["to_node"], "wrk", "{r}");
    let t1 = running_task(&m).expect("a running task");
    assert_eq!(t1["id"], r["task"]);
    assert_eq!(node_of(&m, &t1), "wrk");
    assert_eq!(t1["slot"], 1);
    let (t1, n1) = resumed(&m, before);
    println!(
        "migrated: downtime {} ms, {} bytes, {} ms in all",
        r["downtime_ms"], r["archive_bytes"], r["total_ms"]
    );
    // The old task's history says where it went.
    let ps = m.json(&["service", "ps", "counter", "--format", "json"]);
    let old = ps
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == t0.as_str()).cloned())
        .expect("old task in history");
    assert_eq!(old["desired_state"], "shutdown");

    // 2. A failure after the checkpoint (injected in the manager): the task is restored where it
    //    was and goes on counting; the command fails and says why.
    m.kill9();
    m.start_env("dev", &[], &[("SHOAL_FAILPOINTS", "migrate-after-checkpoint")]);
    let out = migrate(&m, &t1, "mgr");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    println!("failure after the checkpoint: {}", err.trim());
    assert!(err.contains("migration failed") && err.contains("migrate-after-checkpoint"), "{err}");
    let t2 = eventually(30, "the task running again", || running_task(&m));
    assert_eq!(node_of(&m, &t2), "wrk", "restored on its own node");
    let (t2, n2) = resumed(&m, n1);

    // 3. A corrupted archive: the target refuses it before unpacking; the task comes back home.
    m.kill9();
    m.start_env("dev", &[], &[("SHOAL_FAILPOINTS", "corrupt-checkpoint")]);
    let out = migrate(&m, &t2, "mgr");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    println!("corrupted archive: {}", err.trim());
    assert!(err.contains("failed verification"), "the target refused the archive: {err}");
    let t3 = eventually(30, "the task running again", || running_task(&m));
    assert_eq!(node_of(&m, &t3), "wrk");
    let (_, n3) = resumed(&m, n2);

    // 4. Drain the worker with --migrate: the task moves to the manager with its count.
    m.kill9();
    m.start("dev");
    m.ok(&["node", "update", "--availability", "drain", "--migrate", "wrk"]);
    let t4 =
        eventually(30, "the task on the manager", || running_task(&m).filter(|t| node_of(&m, t) == "mgr"));
    assert_eq!(t4["status"]["message"].as_str().map(|s| s.contains("restored")), Some(true), "{t4}");
    let (t5, n5) = resumed(&m, n3);
    println!("after the drain: task {t5} on mgr at {n5}, resumed past {n3}");

    // 5. A service that asks for it migrates on every drain, --migrate or not. Changing that
    //    setting does not redeploy the service.
    m.ok(&["node", "update", "--availability", "active", "wrk"]);
    m.ok(&["service", "update", "-d", "--on-drain", "migrate", "counter"]);
    assert_eq!(
        running_task(&m).and_then(|t| t["id"].as_str().map(String::from)),
        Some(t5.clone()),
        "no redeploy"
    );
    m.ok(&["node", "update", "--availability", "drain", "mgr"]);
    let t6 =
        eventually(30, "the task on the worker", || running_task(&m).filter(|t| node_of(&m, t) == "wrk"));
    assert!(t6["status"]["message"].as_str().is_some_and(|s| s.contains("restored")), "{t6}");
    let (t7, n7) = resumed(&m, n5);

    // 6. A snapshot to a file (the task goes on), then the slot rewound to it. A tampered file and
    //    one from another cluster are refused before anything changes.
    let file = tmp.path().join("counter.checkpoint");
    let f = file.to_str().expect("utf8");
    m.ok(&["task", "checkpoint", &t7, "--leave-running", "-o", f]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
    let (same, later) = counted_past(&m, n7 + 20);
    assert_eq!(same, t7, "--leave-running keeps the task");
    let bytes = std::fs::read(&file).expect("read");
    let header_end = bytes.iter().position(|b| *b == b'\n').expect("header line");
    let mut tampered = bytes.clone();
    let i = header_end + 1 + (bytes.len() - header_end) / 2;
    tampered[i] ^= 0xff;
    std::fs::write(tmp.path().join("tampered"), &tampered).expect("write");
    let out = m.cli(&["task", "restore", tmp.path().join("tampered").to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed verification"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = String::from_utf8_lossy(&bytes[..header_end]).to_string();
    let cluster = serde_json::from_str::<Value>(&header).expect("header")["cluster_id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut foreign = header.replace(&cluster, "someothercluster").into_bytes();
    foreign.extend_from_slice(&bytes[header_end..]);
    std::fs::write(tmp.path().join("foreign"), &foreign).expect("write");
    let out = m.cli(&["task", "restore", tmp.path().join("foreign").to_str().expect("utf8")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        running_task(&m).and_then(|t| t["id"].as_str().map(String::from)),
        Some(t7.clone()),
        "nothing changed"
    );
    let out = m.ok(&["task", "restore", f, "--node", "wrk", "--format", "json"]);
    let r: Value = serde_json::from_str(&out).expect("json");
    let t8 = r["task"].as_str().expect("task").to_string();
    let (_, _) = counted_past(&m, 0);
    let values = eventually(30, "the restored task counting", || {
        let v = counts(&m, &t8);
        (v.len() > 5).then_some(v)
    });
    assert!(
        values[0] > n7.saturating_sub(50) && values[0] < later,
        "rewound to the snapshot: {values:?}, the old task had reached {later}"
    );

    // The manager counts what it coordinated (it restarted before the drains: 2 moves since).
    let text = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", m.ui_port)).expect("metrics");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", m.ui_port)
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    assert!(text.contains("shoal_migrations_total{result=\"moved\"} 2"), "{text}");
    assert!(text.contains("shoal_migration_downtime_seconds_count 2"), "{text}");

    remove_services_and_wait(&m, &["counter"], &[&m, &w]);
}

/// The process driver migrates too: a plain process (no container) moves with its memory and
/// goes on counting (CRIU restores it with its own pids, which are free again here once the
/// checkpointed original is gone).
#[test]
fn a_process_task_migrates_and_drains_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(tmp.path(), "mgr");
    let mut w = Node::new(tmp.path(), "wrk");
    m.start("dev");
    w.start("daemon");
    m.ok(&["service", "create", "--name", "counter", "--driver", "process", "/bin/sh", "-c", COUNTER]);
    join_worker(&m, &w);
    eventually(30, "both nodes able to checkpoint processes", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        let capable = |n: &Value| {
            n["description"]["drivers"].as_array().is_some_and(|d| {
                d.iter().any(|d| {
                    d["name"] == "process"
                        && d["capabilities"].as_array().is_some_and(|c| c.iter().any(|c| c == "checkpoint"))
                })
            })
        };
        let a = nodes.as_array()?;
        (a.len() == 2 && a.iter().all(capable)).then_some(())
    });
    let (t0, before) = counted_past(&m, 20);
    let out = migrate(&m, &t0, "wrk");
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let t1 = running_task(&m).expect("a running task");
    assert_eq!(node_of(&m, &t1), "wrk");
    let (_, n1) = resumed(&m, before);
    m.ok(&["node", "update", "--availability", "drain", "--migrate", "wrk"]);
    let t2 =
        eventually(30, "the task on the manager", || running_task(&m).filter(|t| node_of(&m, t) == "mgr"));
    assert!(t2["status"]["message"].as_str().is_some_and(|s| s.contains("restored")), "{t2}");
    resumed(&m, n1);
    remove_services_and_wait(&m, &["counter"], &[&m, &w]);
}
