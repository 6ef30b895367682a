//! Machines that form their cluster from configuration files alone: `shoal cluster prepare`
//! makes the CA and tokens beforehand; one daemon's file says `init = true`, the others' have a
//! `[join]` section with a token from a file or the environment. The daemons are started with
//! `--config` and nothing else, joiners before the first manager (they keep asking).

mod common;

use common::{eventually, Node, BIN};
use std::path::Path;
use std::process::{Command, Stdio};

/// The common part of a node's file: everything `Node::start` would pass as flags.
fn base(n: &Node, name: &str) -> String {
    format!(
        "data_dir = \"{d}/data\"\napi_socket = \"{d}/shoal.sock\"\nlisten_addr = \"{addr}\"\n\
         ui_addr = \"127.0.0.1:{ui}\"\netcd_addr = \"off\"\nhostname = \"{name}\"\n",
        d = n.dir.display(),
        addr = n.addr(),
        ui = n.ui_port,
    )
}

/// `shoal daemon --config FILE`, and nothing else.
fn start_from(n: &mut Node, file: &Path, env: &[(&str, &str)]) {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(n.dir.join("daemon.log")).expect("log");
    let child = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(file)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    n.child = Some(child);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

#[test]
fn three_daemons_form_a_cluster_from_configuration_files_alone() {
    let root = tempfile::tempdir().expect("tmp");
    let prep = root.path().join("prepared");
    let out = Command::new(BIN).args(["cluster", "prepare", "--out"]).arg(&prep).output().expect("prepare");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let worker_token = std::fs::read_to_string(prep.join("worker.token")).expect("token");

    let (mut m1, mut m2, mut w1) =
        (Node::new(root.path(), "m1"), Node::new(root.path(), "m2"), Node::new(root.path(), "w1"));
    let f1 = root.path().join("m1.toml");
    write(
        &f1,
        &format!(
            "{}init = true\nprepared = \"{}\"\ndata_path_port = 4790\n[labels]\nzone = \"a\"\n",
            base(&m1, "m1"),
            prep.display()
        ),
    );
    let f2 = root.path().join("m2.toml");
    write(
        &f2,
        &format!(
            "{}[labels]\nzone = \"b\"\n[join]\nmanagers = [\"{}\"]\ntoken_file = \"{}\"\n",
            base(&m2, "m2"),
            m1.addr(),
            prep.join("manager.token").display()
        ),
    );
    let fw = root.path().join("w1.toml");
    write(
        &fw,
        &format!(
            "{}[join]\nmanagers = [\"{}\", \"{}\"]\ntoken_env = \"SHOAL_TEST_JOIN_TOKEN\"\n",
            base(&w1, "w1"),
            m2.addr(),
            m1.addr()
        ),
    );

    // The joiners boot first: there is no cluster to join yet.
    start_from(&mut w1, &fw, &[("SHOAL_TEST_JOIN_TOKEN", worker_token.trim())]);
    start_from(&mut m2, &f2, &[]);
    start_from(&mut m1, &f1, &[]);

    let nodes = eventually(60, "three ready nodes", || {
        let out = m1.cli(&["node", "ls", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let list = v.as_array()?.clone();
        (list.len() == 3 && list.iter().all(|n| n["status"]["state"] == "ready")).then_some(list)
    });
    let role = |host: &str| {
        nodes.iter().find(|n| n["description"]["hostname"] == host).map(|n| n["spec"]["role"].clone())
    };
    assert_eq!(role("m1"), Some("manager".into()));
    assert_eq!(role("m2"), Some("manager".into()));
    assert_eq!(role("w1"), Some("worker".into()));
    let labels = |host: &str| {
        nodes
            .iter()
            .find(|n| n["description"]["hostname"] == host)
            .map(|n| n["description"]["engine_labels"].clone())
    };
    assert_eq!(labels("m2"), Some(serde_json::json!({"zone": "b"})), "labels from the file");
    let raft = eventually(30, "two voters", || {
        m2.raft().filter(|r| r["voters"].as_object().map(|v| v.len()) == Some(2))
    });
    assert!(raft["leader"].is_string());
    let info = m2.json(&["cluster", "inspect", "--format", "json"]);
    assert_eq!(info["data_path_port"], 4790, "init's data_path_port from the file");
    // The prepared tokens are the cluster's.
    let token = m1.ok(&["cluster", "join-token", "worker", "-q"]);
    assert_eq!(token, worker_token.trim());

    // Writes through the joined manager; tasks land on every node.
    m2.ok(&[
        "service",
        "create",
        "--name",
        "cfg",
        "--driver",
        "process",
        "--replicas",
        "3",
        "-d",
        "sleep",
        "1000",
    ]);
    eventually(60, "three running tasks", || common::running_tasks(&m1, "cfg").filter(|t| t.len() == 3));
    let info = m2.ok(&["info"]);
    assert!(info.contains("Nodes:          3 (2 managers, 1 workers; 3 ready, 0 down)"), "{info}");

    // A restart with the same file: the node is in the cluster, nothing is joined again.
    m2.kill9();
    start_from(&mut m2, &f2, &[]);
    eventually(30, "m2 back as a voter", || {
        m2.raft().filter(|r| r["voters"].as_object().map(|v| v.len()) == Some(2) && r["leader"].is_string())
    });
    let after = m1.json(&["node", "ls", "--format", "json"]);
    assert_eq!(after.as_array().map(|a| a.len()), Some(3), "no second m2");

    // Logs to a file carry no colour codes.
    for n in [&m1, &m2, &w1] {
        let log = std::fs::read_to_string(n.dir.join("daemon.log")).expect("log");
        assert!(!log.contains('\u{1b}'), "colour codes in {}", n.dir.display());
    }
    common::remove_services_and_wait(&m1, &["cfg"], &[&m1, &m2, &w1]);
}

#[test]
fn flags_override_the_file_and_print_config_redacts_tokens() {
    let root = tempfile::tempdir().expect("tmp");
    let n = Node::new(root.path(), "n");
    let f = root.path().join("n.toml");
    let token = "SHOAL-1-0000000000000000000000000000000000000000000000000000000000000000-abcdefghijklmnopqrstuvwxyz234567";
    write(
        &f,
        &format!(
            "{}log_level = \"debug\"\n[labels]\nzone = \"a\"\nrack = \"1\"\n[join]\nmanagers = [\"127.0.0.1:1\"]\ntoken = \"{token}\"\n",
            base(&n, "n")
        ),
    );
    let out = Command::new(BIN)
        .args(["daemon", "--config"])
        .arg(&f)
        .args(["--print-config", "--hostname", "flagged", "--label", "zone=z", "--log-level", "warn"])
        .args(["--heartbeat-interval", "100ms"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let eff: toml::Table = toml::from_str(&printed).expect("toml");
    assert_eq!(eff["heartbeat_interval"].as_str(), Some("100ms"));
    assert_eq!(eff["election_timeout"].as_str(), Some("350ms"), "the default");
    assert_eq!(eff["hostname"].as_str(), Some("flagged"), "a flag wins over the file");
    assert_eq!(eff["log_level"].as_str(), Some("warn"));
    assert_eq!(eff["listen_addr"].as_str(), Some(n.addr().as_str()), "the file fills the rest");
    assert_eq!(eff["labels"]["zone"].as_str(), Some("z"));
    assert_eq!(eff["labels"]["rack"].as_str(), Some("1"));
    assert!(!printed.contains("abcdefghij"), "the token is not shown: {printed}");
    assert!(printed.contains("<redacted>"));
    // SHOAL_CONFIG names the file too.
    let out =
        Command::new(BIN).args(["daemon", "--print-config"]).env("SHOAL_CONFIG", &f).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostname = \"n\""));
}

#[test]
fn a_bad_file_fails_the_start_naming_the_line_and_the_field_and_creates_nothing() {
    let root = tempfile::tempdir().expect("tmp");
    let n = Node::new(root.path(), "n");
    let cases = [
        ("listen_adr = \"127.0.0.1:4242\"\n", "listen_adr", "line 7"),
        ("cert_ttl = \"forever\"\n", "cert_ttl", "line 7"),
        ("[resources]\ngpu = -1\n", "gpu", "line 8"),
        (
            "init = true\n[join]\nmanagers = [\"127.0.0.1:1\"]\ntoken_env = \"X\"\n",
            "either forms a cluster or joins one",
            "",
        ),
        ("[join]\nmanagers = [\"127.0.0.1:1\"]\ntoken = \"SHOAL-1-bad\"\n", "join token is not valid", ""),
    ];
    for (i, (extra, field, line)) in cases.iter().enumerate() {
        let f = root.path().join(format!("bad{i}.toml"));
        write(&f, &format!("{}{extra}", base(&n, "n")));
        let out = Command::new(BIN).args(["daemon", "--config"]).arg(&f).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} started");
        assert!(err.contains(field) && err.contains(line), "case {i}: {err}");
        assert!(
            err.contains(&f.display().to_string()) || !line.is_empty() || err.contains("join"),
            "case {i}: {err}"
        );
        assert!(!n.dir.join("data").exists(), "case {i}: nothing written");
    }
    let missing =
        Command::new(BIN).args(["daemon", "--config", "/nonexistent/shoal.toml"]).output().expect("run");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/shoal.toml"));
}

#[test]
fn raft_timings_that_invite_spurious_elections_are_refused_before_anything_is_written() {
    let root = tempfile::tempdir().expect("tmp");
    let n = Node::new(root.path(), "n");
    let f = root.path().join("n.toml");
    write(&f, &format!("{}heartbeat_interval = \"100ms\"\nelection_timeout = \"300ms\"\n", base(&n, "n")));
    let out = Command::new(BIN).args(["daemon", "--config"]).arg(&f).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an election timeout of 3 heartbeats");
    assert!(
        err.contains("--election-timeout (300ms) must be at least 4 heartbeat intervals (400ms)"),
        "{err}"
    );
    assert!(!n.dir.join("data").exists(), "nothing written");
}
