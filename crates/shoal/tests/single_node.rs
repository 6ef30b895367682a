//! A real `shoal` daemon on a temporary data directory and socket, driven through the real CLI:
//! the single-node cluster comes up, takes writes, explains unplaceable tasks, refuses bad input
//! with clear errors, and keeps every acknowledged write across `kill -9`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

mod common;
use common::{eventually, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_shoal");

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(mode: &str, dir: &Path) -> Daemon {
    let log = std::fs::File::create(dir.join(format!("{mode}.log"))).expect("log file");
    let child = Command::new(BIN)
        .args([mode, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--api-socket")
        .arg(socket(dir))
        .args(["--hostname", "test-host", "--label", "disk=ssd"])
        .args(["--listen-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--ui-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn shoal");
    Daemon { child }
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("shoal.sock")
}

fn shoal(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-H")
        .arg(format!("unix://{}", socket(dir).display()))
        .args(args)
        .output()
        .expect("run shoal cli")
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = shoal(dir, args);
    assert!(out.status.success(), "shoal {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("shoal {args:?}: not JSON ({e}): {:?}", out.stdout))
}

fn leader_ready(dir: &Path) -> bool {
    let out = shoal(dir, &["node", "ls", "--format", "json"]);
    if !out.status.success() {
        return false;
    }
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    nodes.as_array().is_some_and(|a| {
        a.len() == 1 && a[0]["status"]["state"] == "ready" && a[0]["manager_status"]["leader"] == true
    })
}

#[test]
fn single_node_cluster_takes_writes_explains_and_survives_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut daemon = start("dev", dir);
    eventually(20, "the node to register as ready leader", || leader_ready(dir).then_some(()));

    let cluster = json(dir, &["cluster", "inspect", "--format", "json"]);
    assert_eq!(cluster["raft"]["state"], "leader");
    assert_eq!(cluster["raft"]["voters"].as_object().map(|v| v.len()), Some(1));

    let nodes = json(dir, &["node", "ls", "--format", "json"]);
    let node = &nodes[0];
    assert_eq!(node["description"]["hostname"], "test-host");
    assert_eq!(node["description"]["engine_labels"]["disk"], "ssd");
    assert_eq!(node["spec"]["role"], "manager");
    assert!(node["description"]["resources"]["memory_bytes"].as_u64().unwrap_or(0) > 0);

    // Node updates: labels and availability, with clear errors for nonsense.
    let id = node["id"].as_str().expect("node id").to_string();
    let out = shoal(dir, &["node", "update", "--label-add", "zone=a", "--availability", "pause", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let n = json(dir, &["node", "inspect", &id]);
    assert_eq!(
        (n["spec"]["labels"]["zone"].as_str(), n["spec"]["availability"].as_str()),
        (Some("a"), Some("pause"))
    );
    let out = shoal(dir, &["node", "update", "--label-rm", "nope", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node has no label \"nope\""));
    let out = shoal(dir, &["node", "update", "--availability", "active", &id]);
    assert!(out.status.success());

    // A service runs (the agent's process driver); one that cannot be placed is explained.
    let out = shoal(
        dir,
        &["service", "create", "--name", "web", "--replicas", "2", "--driver", "process", "sleep", "100"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(20, "two running tasks", || {
        let tasks = json(dir, &["service", "ps", "web", "--format", "json"]);
        let running = tasks.as_array()?.iter().filter(|t| t["status"]["state"] == "running").count();
        (running == 2).then_some(())
    });
    let out = shoal(
        dir,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "nowhere",
            "--replicas",
            "2",
            "--constraint",
            "node.labels.zone==b",
            "--driver",
            "process",
            "sleep",
            "100",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let explained = eventually(10, "scheduler explanations", || {
        let tasks = json(dir, &["service", "ps", "nowhere", "--format", "json"]);
        let errs: Vec<String> = tasks
            .as_array()?
            .iter()
            .filter_map(|t| t["status"]["err"].as_str().map(str::to_string))
            .collect();
        (errs.len() == 2).then_some(errs)
    });
    assert!(
        explained
            .iter()
            .all(|e| e == "no suitable node (constraint node.labels.zone==b not satisfied on 1 node)"),
        "{explained:?}"
    );
    let out = shoal(dir, &["service", "rm", "nowhere"]);
    assert!(out.status.success());

    // Bad input: clear errors, nothing written.
    let dup = shoal(dir, &["service", "create", "--name", "web", "--driver", "process", "true"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("a service named \"web\" already exists"));
    let bad = shoal(dir, &["service", "create", "--name=-bad", "--driver", "process", "true"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let global = shoal(
        dir,
        &[
            "service",
            "create",
            "--name",
            "g",
            "--mode",
            "global",
            "--replicas",
            "3",
            "--driver",
            "process",
            "true",
        ],
    );
    assert!(
        String::from_utf8_lossy(&global.stderr).contains("replicas can only be used with replicated mode")
    );
    let missing = shoal(dir, &["service", "inspect", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("service nope not found"));
    assert_eq!(json(dir, &["service", "ls", "--format", "json"]).as_array().map(Vec::len), Some(1));

    // PKI: the node has a CA-signed certificate and a private key only root can read; join
    // tokens pin the CA digest, rotate on request, and never reach the logs.
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(dir.join("data/tls/node.key")).expect("node.key").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let ca_pem = std::fs::read_to_string(dir.join("data/tls/ca.crt")).expect("ca.crt");
    assert!(ca_pem.contains("BEGIN CERTIFICATE"));
    let token_of = |args: &[&str]| {
        let out = shoal(dir, args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let worker = token_of(&["cluster", "join-token", "worker", "-q"]);
    let manager = token_of(&["cluster", "join-token", "manager", "-q"]);
    assert!(worker.starts_with("SHOAL-1-") && worker.len() > 8 + 64 + 20, "{worker}");
    assert_ne!(worker, manager);
    assert_eq!(worker.split('-').nth(2), manager.split('-').nth(2), "both pin the same CA digest");
    let rotated = token_of(&["cluster", "join-token", "worker", "--rotate", "-q"]);
    assert_ne!(rotated, worker);
    assert_eq!(token_of(&["cluster", "join-token", "worker", "-q"]), rotated);
    let bad_role = shoal(dir, &["cluster", "join-token", "admin"]);
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("role must be worker or manager"));
    let cluster_json =
        String::from_utf8_lossy(&shoal(dir, &["cluster", "inspect", "--format", "json"]).stdout).to_string();
    let log = std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default();
    for secret in [&worker, &manager, &rotated] {
        let s = secret.rsplit('-').next().unwrap_or("");
        assert!(!log.contains(s) && !cluster_json.contains(s), "a token secret leaked");
    }
    assert!(!cluster_json.contains("PRIVATE KEY"), "the CA key leaked into the API");

    // kill -9, then a plain daemon on the same data dir: every acknowledged write is there.
    daemon.child.kill().expect("kill -9");
    daemon.child.wait().expect("reap");
    let _ = std::fs::remove_file(socket(dir));
    let _daemon = start("daemon", dir);
    eventually(20, "the restarted node to lead again", || leader_ready(dir).then_some(()));
    let services = json(dir, &["service", "ls", "--format", "json"]);
    assert_eq!(services[0]["spec"]["name"], "web");
    let n = json(dir, &["node", "inspect", &id]);
    assert_eq!(n["spec"]["labels"]["zone"], "a", "node spec survived");
    let tasks = json(dir, &["service", "ps", "web", "--format", "json"]);
    assert_eq!(tasks.as_array().map(Vec::len), Some(2), "no duplicate tasks after restart");
    // Its processes survived the kill and are re-attached; removing the service stops them.
    let pids: Vec<String> = eventually(20, "the tasks re-attached", || {
        let tasks = json(dir, &["service", "ps", "web", "--format", "json"]);
        let pids: Vec<String> = tasks
            .as_array()?
            .iter()
            .filter(|t| t["status"]["state"] == "running")
            .filter_map(|t| t["status"]["runtime_id"].as_str().map(str::to_string))
            .collect();
        (pids.len() == 2).then_some(pids)
    });
    let out = shoal(dir, &["service", "rm", "web"]);
    assert!(out.status.success());
    eventually(20, "the processes to stop", || {
        pids.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).then_some(())
    });
}
