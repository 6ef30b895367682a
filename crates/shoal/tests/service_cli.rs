//! The docker-like service CLI against a real `shoal dev` node and the process driver: flags
//! become the spec, create/scale/update/rollback wait for convergence and print progress, a
//! service that cannot be placed or an update that fails makes the command fail with the reason,
//! and bad flag values are refused with clear errors.

mod common;
use common::{eventually, Node};
use serde_json::Value;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Tasks of a service that run and are meant to: (task id, pid).
fn running(n: &Node, service: &str) -> Vec<(String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    common::running_tasks(n, service)
        .unwrap_or_default()
        .iter()
        .map(|t| (s(&t["id"]), s(&t["status"]["runtime_id"])))
        .collect()
}

fn alive(pid: &str) -> bool {
    !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn ready(n: &Node) -> Option<()> {
    let out = n.cli(&["node", "ls", "--format", "json"]);
    let nodes: Value = serde_json::from_slice(&out.stdout).ok()?;
    (nodes.as_array()?.first()?["status"]["state"] == "ready").then_some(())
}

#[test]
fn bad_flag_values_are_refused_with_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = Node::new(tmp.path(), "none"); // never started: clap refuses before connecting
    let cases: &[(&[&str], &str)] = &[
        (&["--limit-memory", "12x"], "invalid size \"12x\""),
        (&["--reserve-cpu", "half"], "invalid CPU count \"half\""),
        (&["--restart-condition", "sometimes"], "restart condition must be none, on-failure or any"),
        (&["--update-max-failure-ratio", "2"], "use a number between 0 and 1"),
        (&["--update-delay", "soon"], "invalid duration \"soon\""),
        (&["--update-order", "whenever"], "order must be stop-first or start-first"),
        (&["--mount", "type=tmpfs,target=/x"], "mount type \"tmpfs\" is not supported"),
        (&["--mount", "type=bind,source=/x"], "target is required"),
        (&["--publish", "70000:80"], "invalid published port \"70000\""),
        (&["--constraint", "node.labels.zone=a"], "expected KEY==VALUE, KEY!=VALUE or KEY in (V1,V2)"),
        (&["--placement-pref", "zone"], "expected spread=node.labels.KEY"),
        (&["--generic-resource", "gpu=0"], "whole number above 0"),
        (&["--mode", "swarm"], "possible values: replicated, global, replicated-job, global-job"),
        (&["--strategy", "pack"], "strategy must be spread, binpack or random"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["service", "create", "--name", "x", "--driver", "process"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["sleep", "1"]);
        let out = n.cli(&args);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr(&out).contains(want), "{flags:?}: {}", stderr(&out));
    }
    let out = n.cli(&["service", "scale", "web"]);
    assert!(stderr(&out).contains("invalid scale \"web\": expected SERVICE=REPLICAS"), "{}", stderr(&out));
    let out = n.cli(&["service", "update", "--env-add", "=x", "web"]);
    assert!(stderr(&out).contains("expected KEY=VALUE"), "{}", stderr(&out));
}

#[test]
fn docker_like_service_verbs_against_a_real_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "cli");
    n.start("dev");
    eventually(30, "the node to be ready", || ready(&n));

    // Every flag lands in the spec (those the process driver cannot honour — hostname, mounts,
    // a port mapped to another — are refused at create time: tests/refused_flags.rs).
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "full",
        "--replicas",
        "1",
        "--env",
        "A=1",
        "-e",
        "B=two words",
        "--label",
        "tier=front",
        "--workdir",
        "/tmp",
        "--constraint",
        "node.role==manager",
        "--placement-pref",
        "spread=node.labels.zone",
        "--max-replicas-per-node",
        "2",
        "--strategy",
        "binpack",
        "--reserve-cpu",
        "0.01",
        "--reserve-memory",
        "8m",
        "--limit-cpu",
        "0.5",
        "--limit-memory",
        "1g",
        "--restart-condition",
        "on-failure",
        "--restart-delay",
        "2s",
        "--restart-max-attempts",
        "3",
        "--restart-window",
        "1m",
        "--update-parallelism",
        "2",
        "--update-delay",
        "1s",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "2s",
        "--update-max-failure-ratio",
        "0.5",
        "--update-order",
        "start-first",
        "--rollback-parallelism",
        "3",
        "--rollback-failure-action",
        "continue",
        "--rollback-order",
        "stop-first",
        "--health-cmd",
        "true",
        "--health-interval",
        "10s",
        "--health-retries",
        "2",
        "--stop-grace-period",
        "3s",
        "--publish",
        "8080:8080/udp",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    let s = n.json(&["service", "inspect", "full", "--format", "json"]);
    let spec = &s["spec"];
    let t = &spec["task_template"];
    assert_eq!(spec["labels"]["tier"], "front");
    assert_eq!(spec["mode"]["replicated"]["replicas"], 1);
    assert_eq!(t["command"], serde_json::json!(["sleep", "300"]));
    assert_eq!((t["env"]["A"].as_str(), t["env"]["B"].as_str()), (Some("1"), Some("two words")));
    assert_eq!(t["workdir"].as_str(), Some("/tmp"));
    assert_eq!(t["resources"]["reservations"]["nano_cpus"], 10_000_000);
    assert_eq!(t["resources"]["reservations"]["memory_bytes"], 8 << 20);
    assert_eq!(t["resources"]["limits"]["nano_cpus"], 500_000_000);
    assert_eq!(t["resources"]["limits"]["memory_bytes"], 1u64 << 30);
    let rp = &t["restart_policy"];
    assert_eq!(
        (rp["condition"].as_str(), rp["delay"].as_str(), rp["max_attempts"].as_u64(), rp["window"].as_str()),
        (Some("on-failure"), Some("2s"), Some(3), Some("1m"))
    );
    let p = &t["placement"];
    assert_eq!(p["constraints"], serde_json::json!(["node.role==manager"]));
    assert_eq!(p["preferences"][0]["spread"], "node.labels.zone");
    assert_eq!((p["max_replicas_per_node"].as_u64(), p["strategy"].as_str()), (Some(2), Some("binpack")));
    let u = &spec["update_config"];
    assert_eq!(
        (u["parallelism"].as_u64(), u["delay"].as_str(), u["failure_action"].as_str(), u["monitor"].as_str()),
        (Some(2), Some("1s"), Some("rollback"), Some("2s"))
    );
    assert_eq!((u["max_failure_ratio"].as_f64(), u["order"].as_str()), (Some(0.5), Some("start-first")));
    let r = &spec["rollback_config"];
    assert_eq!(
        (r["parallelism"].as_u64(), r["failure_action"].as_str(), r["order"].as_str()),
        (Some(3), Some("continue"), Some("stop-first"))
    );
    assert_eq!(t["health_check"]["test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(
        (t["health_check"]["interval"].as_str(), t["health_check"]["retries"].as_u64()),
        (Some("10s"), Some(2))
    );
    assert_eq!(t["stop_grace_period"], "3s");
    assert_eq!(
        spec["endpoint"]["ports"][0],
        serde_json::json!({"published": 8080, "target": 8080, "protocol": "udp", "mode": "host"})
    );
    let pretty = n.ok(&["service", "inspect", "--pretty", "full"]);
    for want in [
        "Name:\t\tfull",
        "Service Mode:\treplicated",
        "Memory:\t1GiB",
        "CPU:\t\t0.5",
        "Condition:\ton-failure",
        "PublishedPort = 8080",
        "Env:\t\tA=1 B=two words",
    ] {
        assert!(pretty.contains(want), "{want:?} in:\n{pretty}");
    }
    n.ok(&["service", "rm", "full"]);

    // The API's validation reaches the user as it is.
    let out = n.cli(&[
        "service",
        "create",
        "--name",
        "tiny",
        "--limit-memory",
        "1k",
        "--driver",
        "process",
        "true",
    ]);
    assert!(stderr(&out).contains("limits.memory_bytes: 1024 is below the minimum"), "{}", stderr(&out));
    let out = n.cli(&[
        "service",
        "create",
        "--name",
        "big",
        "--reserve-memory",
        "128m",
        "--limit-memory",
        "64m",
        "--driver",
        "process",
        "true",
    ]);
    assert!(
        stderr(&out).contains("memory reservation 134217728 is above the limit 67108864"),
        "{}",
        stderr(&out)
    );
    let out =
        n.cli(&["service", "create", "--name", "h", "--health-retries", "2", "--driver", "process", "true"]);
    assert!(stderr(&out).contains("need --health-cmd"), "{}", stderr(&out));

    // Without -d, a service that cannot be placed fails with the scheduler's explanation.
    let out = n.cli(&[
        "service",
        "create",
        "--name",
        "nowhere",
        "--constraint",
        "node.labels.zone==nowhere",
        "--timeout",
        "5s",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let why = stderr(&out);
    assert!(why.contains("service nowhere did not converge within 5s"), "{why}");
    assert!(
        why.contains("no suitable node (constraint node.labels.zone==nowhere not satisfied on 1 node)"),
        "{why}"
    );
    assert!(stdout(&out).contains("1/1: pending"), "{}", stdout(&out));
    n.ok(&["service", "rm", "nowhere"]);

    // Without -d, create prints per-slot progress and returns once every task runs.
    let out = n.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--update-monitor",
        "1s",
        "--rollback-monitor",
        "1s",
        "--update-failure-action",
        "pause",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    for want in [
        "1/2: running",
        "2/2: running",
        "overall progress: 2 out of 2 tasks running",
        "verify: Service converged",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    assert_eq!(running(&n, "web").len(), 2, "converged means running");

    // scale waits too: 3 tasks, then 1.
    let out = n.ok(&["service", "scale", "web=3"]);
    assert!(out.contains("web scaled to 3") && out.contains("verify: Service converged"), "{out}");
    assert_eq!(running(&n, "web").len(), 3);
    let ls = n.ok(&["service", "ls"]);
    let row = ls.lines().find(|l| l.contains(" web ")).unwrap_or_default().to_string();
    assert!(row.contains("replicated") && row.contains("3/3") && row.contains("sleep 300"), "{ls}");
    assert_eq!(n.ok(&["service", "ls", "-q"]).lines().count(), 1);
    // node ps: the node the socket belongs to, by default.
    let node_ps = n.ok(&["node", "ps"]);
    assert_eq!(
        node_ps.lines().filter(|l| l.contains("web.") && l.contains("running")).count(),
        3,
        "{node_ps}"
    );
    assert!(node_ps.starts_with("ID") && node_ps.contains("DESIRED STATE"), "{node_ps}");
    let node_id =
        n.json(&["node", "ls", "--format", "json"])[0]["id"].as_str().unwrap_or_default().to_string();
    let on_node = n.json(&["node", "ps", &node_id, "--format", "json"]);
    assert!(on_node.as_array().is_some_and(|a| a.len() >= 3), "{on_node}");
    let before = running(&n, "web");
    let out = n.ok(&["service", "scale", "web=1"]);
    assert!(out.contains("verify: Service converged"), "{out}");
    let after = running(&n, "web");
    assert_eq!(after.len(), 1);
    for (_, pid) in before.iter().filter(|b| !after.contains(b)) {
        assert!(!alive(pid), "scaled-down task {pid} still runs");
    }

    // update --env-add replaces the task (a new spec version) and rollback goes back.
    let v1 = n.json(&["service", "inspect", "web"])["spec_version"].as_u64().unwrap_or(0);
    let out = n.ok(&["service", "update", "--env-add", "COLOR=blue", "web"]);
    assert!(out.contains("verify: Service converged"), "{out}");
    let s = n.json(&["service", "inspect", "web"]);
    assert_eq!(s["spec"]["task_template"]["env"]["COLOR"], "blue");
    assert_eq!(s["spec_version"].as_u64(), Some(v1 + 1));
    assert_eq!(s["update_status"]["state"], "completed");
    let updated = running(&n, "web");
    assert_eq!(updated.len(), 1);
    assert_ne!(updated[0].0, after[0].0, "a new task");
    assert!(!alive(&after[0].1), "the old process stopped");
    let ps = n.ok(&["service", "ps", "web"]);
    assert!(ps.contains(" \\_ web.1"), "the slot's history:\n{ps}");
    let out = n.ok(&["service", "rollback", "web"]);
    assert!(out.contains("verify: Service converged"), "{out}");
    let s = n.json(&["service", "inspect", "web"]);
    assert!(s["spec"]["task_template"]["env"].get("COLOR").is_none(), "{s}");
    assert_eq!(s["spec_version"].as_u64(), Some(v1 + 2));
    assert_eq!(s["update_status"]["state"], "rollback_completed");
    let rolled = running(&n, "web");
    assert_eq!(rolled.len(), 1);
    assert_ne!(rolled[0].0, updated[0].0);

    // An update whose tasks cannot run pauses (--update-failure-action pause): the command fails
    // with the reason; rollback recovers.
    let out = n.cli(&["service", "update", "--args", "/nonexistent/program", "--timeout", "30s", "web"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("service web: update paused"), "{}", stderr(&out));
    assert!(stdout(&out).contains("executable not found: /nonexistent/program"), "{}", stdout(&out));
    let out = n.ok(&["service", "rollback", "web"]);
    assert!(out.contains("verify: Service converged"), "{out}");
    let s = n.json(&["service", "inspect", "web"]);
    assert_eq!(s["spec"]["task_template"]["command"], serde_json::json!(["sleep", "300"]));
    // --force redeploys an unchanged spec.
    let out = n.ok(&["service", "update", "--force", "-q", "web"]);
    assert_eq!(out, "web");
    let s = n.json(&["service", "inspect", "web"]);
    assert_eq!(s["spec"]["task_template"]["force_update"], 1);
    assert_eq!(s["update_status"]["state"], "completed");

    // Removing the service stops its processes.
    let pids: Vec<String> = running(&n, "web").into_iter().map(|(_, p)| p).collect();
    assert_eq!(pids.len(), 1);
    n.ok(&["service", "rm", "web"]);
    eventually(30, "the processes to stop", || pids.iter().all(|p| !alive(p)).then_some(()));
    assert_eq!(n.ok(&["service", "ls", "-q"]), "");
}
