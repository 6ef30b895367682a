//! Chronos's REST API with the real `chronos-python` client (PyPI 1.2.1, installed by
//! `scripts/install-deps.sh`) against a `shoal daemon` started with `--chronos-addr`: the
//! client creates a scheduled job and a dependent one from Chronos job definitions, lists them,
//! runs the parent (the child follows), reads the graph, gets Chronos's error shape for what
//! Shoal refuses, and deletes both. The same API answers on the web UI's address, where a request
//! from a web page (`Origin`) is refused.

use serde_json::Value;
use std::process::Command;

mod common;
use common::{eventually, free_port, Node};

/// Runs a Python script that uses `chronos-python`; returns its stdout (the script prints JSON).
fn python(script: &str, addr: &str, out: &std::path::Path) -> String {
    let o = Command::new("python3")
        .args(["-c", script, addr, &out.display().to_string()])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "chronos-python script failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

const CREATE_AND_RUN: &str = r#"
import json, sys, time, chronos
addr, out = sys.argv[1], sys.argv[2]
c = chronos.connect([addr])
c.add({"name": "etl_extract", "command": "echo extract >> %s/extract.log" % out, "owner": "ops@example.com",
       "disabled": False, "schedule": "R/2030-01-01T03:00:00Z/P1D", "scheduleTimeZone": "Europe/Berlin",
       "epsilon": "PT30M", "retries": 1, "cpus": 0.05, "mem": 32, "async": False})
c.add({"name": "etl_report", "command": "echo report >> %s/report.log" % out, "owner": "ops@example.com",
       "disabled": False, "parents": ["etl_extract"]})
jobs = {j["name"]: j for j in c.list()}
errors = []
try:
    c.add({"name": "bad job", "command": "true", "owner": "x", "disabled": False, "parents": ["nope"]})
except chronos.ChronosAPIError as e:
    errors.append(str(e))
try:
    c.add({"name": "x", "command": "true", "owner": "x", "disabled": False, "schedule": "R/2030-01-01T00:00:00Z/PT1H", "async": True})
except chronos.ChronosAPIError as e:
    errors.append(str(e))
try:
    c.delete("etl_extract")
except chronos.ChronosAPIError as e:
    errors.append(str(e))
c.run("etl_extract")
print(json.dumps({"jobs": jobs, "errors": errors, "search": [j["name"] for j in c.search(name="report")]}))
"#;

const GRAPH_AND_DELETE: &str = r#"
import json, sys, chronos
c = chronos.connect([sys.argv[1]])
graph = c.scheduler_graph()
c.delete("etl_report")
c.delete("etl_extract")
print(json.dumps({"graph": graph, "left": c.list()}))
"#;

#[test]
fn chronos_python_creates_runs_lists_and_deletes_jobs() {
    let root = tempfile::tempdir().expect("tmp");
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let mut m = Node::new(root.path(), "m1");
    let chronos_port = free_port();
    let chronos_addr = format!("127.0.0.1:{chronos_port}");
    m.start_with("daemon", &["--chronos-addr", &chronos_addr]);
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));

    let v: Value = serde_json::from_str(&python(CREATE_AND_RUN, &chronos_addr, &out)).expect("json");
    let extract = &v["jobs"]["etl_extract"];
    assert_eq!(extract["schedule"], "R/2030-01-01T03:00:00Z/P1D");
    assert_eq!(extract["scheduleTimeZone"], "Europe/Berlin");
    assert_eq!(extract["epsilon"], "PT1800S");
    assert_eq!(
        (extract["retries"].as_u64(), extract["cpus"].as_f64(), extract["mem"].as_f64()),
        (Some(1), Some(0.05), Some(32.0))
    );
    assert_eq!(extract["owner"], "ops@example.com");
    assert_eq!(v["jobs"]["etl_report"]["parents"], serde_json::json!(["etl_extract"]));
    let errors: Vec<String> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    // chronos-python retries on error and reports the last server's message.
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("No remaining Chronos servers")), "{errors:?}");
    assert_eq!(v["search"], serde_json::json!(["etl_report"]));
    // The run by hand, then its child.
    eventually(30, "the extract and the report ran", || {
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
        (read("extract.log") == "extract\n" && read("report.log") == "report\n").then_some(())
    });
    // The same jobs, through Shoal's own CLI.
    // The file is written before the task's exit is reported: wait for the run's record.
    let h = eventually(30, "the report's run recorded as succeeded", || {
        let h = m.ok(&["job", "history", "etl_report"]);
        h.contains("succeeded").then_some(h)
    });
    assert!(h.contains("parents"), "{h}");
    let ls = m.ok(&["job", "ls"]);
    assert!(ls.contains("etl_extract") && ls.contains("R/2030-01-01T03:00:00Z/P1D"), "{ls}");

    // The error shape and what was refused, checked directly (chronos-python hides the body).
    let curl = |args: &[&str]| {
        let o = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"name":"y","command":"true","schedule":"R/2030-01-01T00:00:00Z/PT1H","uris":["http://x/a.tgz"]}"#,
        &format!("http://{chronos_addr}/v1/scheduler/iso8601"),
    ]);
    assert!(r.ends_with("\n400") && r.contains("\"message\"") && r.contains("uris/fetch"), "{r}");
    let r = curl(&["-X", "DELETE", &format!("http://{chronos_addr}/v1/scheduler/job/etl_extract")]);
    assert!(r.ends_with("\n409") && r.contains("etl_report"), "{r}");
    // Chronos 2.x paths too, and on the web UI's address.
    let r = curl(&[&format!("http://{chronos_addr}/scheduler/job/etl_report")]);
    assert!(r.ends_with("\n200") && r.contains("\"parents\":[\"etl_extract\"]"), "{r}");
    let ui = format!("http://127.0.0.1:{}", m.ui_port);
    let r = curl(&[&format!("{ui}/v1/scheduler/graph/dot")]);
    assert!(r.ends_with("\n200") && r.contains("\"etl_extract\" -> \"etl_report\""), "{r}");
    // A web page cannot create or run jobs (no Origin, JSON only), on either address.
    for base in [format!("http://{chronos_addr}"), ui.clone()] {
        let r = curl(&[
            "-X",
            "PUT",
            "-H",
            "Origin: http://evil.example",
            &format!("{base}/v1/scheduler/job/etl_extract"),
        ]);
        assert!(r.ends_with("\n403"), "{base}: {r}");
        let r = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "--data",
            r#"{"name":"z","command":"true","schedule":"R/2030-01-01T00:00:00Z/PT1H"}"#,
            &format!("{base}/v1/scheduler/iso8601"),
        ]);
        assert!(r.ends_with("\n400") && r.contains("JSON"), "{base}: {r}");
    }

    let v: Value = serde_json::from_str(&python(GRAPH_AND_DELETE, &chronos_addr, &out)).expect("json");
    let graph = v["graph"].as_str().expect("csv");
    assert!(
        graph.contains("node,etl_extract,success,idle") && graph.contains("link,etl_extract,etl_report"),
        "{graph}"
    );
    assert_eq!(v["left"], serde_json::json!([]));
}
