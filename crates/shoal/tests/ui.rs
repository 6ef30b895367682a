//! The operator's view against a live cluster of real daemons (a manager and a worker):
//!
//! - the web UI in real headless Chromium, driven over WebDriver (Debian's chromium-driver):
//!   nodes render and a joining worker appears live, a service and its tasks render, the Scale
//!   and Drain buttons change the cluster, a bad Replicas value (empty, too large) is refused
//!   without a request, scaling to 0 asks first (dismissed: nothing changes) and the result
//!   banner outlives the page's refreshes; screenshots are saved as test artifacts;
//! - `/metrics` on the manager and on the worker, parsed by the Prometheus project's own
//!   OpenMetrics parser (a parse error fails the test);
//! - `--log-format json`: every task state change is logged once, with task, service and node.

mod common;
use common::browser::{browser, chromedriver, screenshot, stays, wait_dialog, wait_js};
use common::{eventually, free_port, join_worker, remove_services_and_wait, Node};
use fantoccini::Locator;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The replicas in `service`'s spec, from the CLI.
fn spec_replicas(m: &Node, service: &str) -> u64 {
    let svc = m.json(&["service", "inspect", service, "--format", "json"]);
    let svc = if svc.is_array() { svc[0].clone() } else { svc };
    svc["spec"]["mode"]["replicated"]["replicas"].as_u64().unwrap_or_else(|| panic!("replicas in {svc}"))
}

const ROWS_NODES: &str = "return Array.from(document.querySelectorAll('#nodes-table tbody tr')).map(r => [r.dataset.hostname, r.dataset.state]);";
const RUNNING_TASKS: &str = "return Array.from(document.querySelectorAll('#tasks-table tbody tr')).filter(r => r.dataset.desired === 'running' && r.dataset.state === 'running').length;";

fn running(m: &Node, service: &str) -> Vec<Value> {
    let tasks = m.json(&["service", "ps", service, "--format", "json"]);
    tasks
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["desired_state"] == "running" && t["status"]["state"] == "running")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_chromium_against_a_live_cluster() {
    let root = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(root.path(), "m1");
    let mut w = Node::new(root.path(), "w1");
    m.start("dev");
    eventually(20, "the manager's node", || {
        (m.json(&["node", "ls", "--format", "json"]).as_array()?.len() == 1).then_some(())
    });
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--driver",
        "process",
        "--replicas",
        "2",
        "/bin/sleep",
        "600",
    ]);
    eventually(30, "2 web tasks running", || (running(&m, "web").len() == 2).then_some(()));

    let driver_port = free_port();
    let _cd = chromedriver(driver_port, &root.path().join("chromedriver.log"));
    let c = browser(driver_port, &root.path().join("chrome-profile")).await;

    // Nodes: the manager renders; a worker that joins now appears without a reload.
    c.goto(&format!("{}/#/nodes", m.ui_url())).await.expect("open the UI");
    wait_js(&c, 20, "the manager in the nodes table", ROWS_NODES, |v| {
        v.as_array().is_some_and(|a| a.len() == 1 && a[0][0] == "m1")
    })
    .await;
    w.start("daemon");
    join_worker(&m, &w);
    wait_js(&c, 20, "the worker to appear live", ROWS_NODES, |v| {
        v.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|r| r[1] == "ready"))
    })
    .await;
    screenshot(&c, "ui-nodes.png").await;

    // Services: the list, then the service's page with its tasks.
    c.goto(&format!("{}/#/services", m.ui_url())).await.expect("services");
    let replicas = "const r = document.querySelector('#services-table tr[data-service=\"web\"] .replicas'); return r ? r.textContent : null;";
    wait_js(&c, 20, "web 2/2 in the services list", replicas, |v| v == "2/2").await;
    c.find(Locator::LinkText("web")).await.expect("the service link").click().await.expect("click web");
    wait_js(&c, 20, "web's 2 running tasks", RUNNING_TASKS, |v| v == 2).await;

    // Scale from the UI: type 4, press Scale; the new tasks appear on the page and in the CLI.
    let input = c.find(Locator::Css("#scale-input")).await.expect("scale input");
    input.clear().await.expect("clear");
    input.send_keys("4").await.expect("type 4");
    c.find(Locator::Css("#scale-button")).await.expect("scale button").click().await.expect("click Scale");
    wait_js(&c, 30, "4 running tasks after scaling", RUNNING_TASKS, |v| v == 4).await;
    eventually(10, "4 web tasks in the CLI", || (running(&m, "web").len() == 4).then_some(()));
    let svc = m.json(&["service", "inspect", "web", "--format", "json"]);
    let svc = if svc.is_array() { svc[0].clone() } else { svc };
    assert_eq!(svc["spec"]["mode"]["replicated"]["replicas"], 4, "the spec says 4: {svc}");
    // Both nodes run some: the tasks table names the nodes.
    let nodes_shown = "return Array.from(document.querySelectorAll('#tasks-table tbody tr[data-state=\"running\"] td:nth-child(3)')).map(td => td.textContent.trim());";
    wait_js(&c, 10, "tasks on both nodes", nodes_shown, |v| {
        v.as_array().is_some_and(|a| a.iter().any(|n| n == "m1") && a.iter().any(|n| n == "w1"))
    })
    .await;
    screenshot(&c, "ui-service.png").await;

    // Drain the worker from the Nodes page: its tasks move to the manager.
    c.goto(&format!("{}/#/nodes", m.ui_url())).await.expect("nodes");
    wait_js(&c, 10, "nodes table", ROWS_NODES, |v| v.as_array().is_some_and(|a| a.len() == 2)).await;
    c.find(Locator::Css("#nodes-table tr[data-hostname=\"w1\"] button[data-availability=\"drain\"]"))
        .await
        .expect("drain button")
        .click()
        .await
        .expect("click Drain");
    eventually(30, "every web task on m1 after the drain", || {
        let r = running(&m, "web");
        let m1 = m.json(&["node", "inspect", "m1", "--format", "json"]);
        let m1 = if m1.is_array() { m1[0]["id"].clone() } else { m1["id"].clone() };
        (r.len() == 4 && r.iter().all(|t| t["node_id"] == m1)).then_some(())
    });
    let avail = "const r = document.querySelector('#nodes-table tr[data-hostname=\"w1\"] td:nth-child(4)'); return r ? r.textContent.trim() : null;";
    wait_js(&c, 10, "w1 shown as drain", avail, |v| v == "drain").await;

    // Overview: the manager with its Raft state, the counts, recent events.
    c.goto(&format!("{}/#/overview", m.ui_url())).await.expect("overview");
    let overview = "const t = document.querySelector('#managers-table'); const e = document.querySelectorAll('#recent tbody tr').length; return t ? [t.textContent, e] : null;";
    wait_js(&c, 20, "the managers table and events", overview, |v| {
        v[0].as_str().is_some_and(|t| t.contains("leader") && t.contains("reachable"))
            && v[1].as_u64().unwrap_or(0) > 0
    })
    .await;
    screenshot(&c, "ui-overview.png").await;

    // A refused action shows its reason: scaling to a negative count is refused in the page.
    c.goto(&format!("{}/#/services/web", m.ui_url())).await.expect("service page");
    wait_js(&c, 20, "the service page", RUNNING_TASKS, |v| v == 4).await;
    let input = c.find(Locator::Css("#scale-input")).await.expect("scale input");
    input.clear().await.expect("clear");
    input.send_keys("-1").await.expect("type");
    c.find(Locator::Css("#scale-button")).await.expect("scale button").click().await.expect("click");
    let banner = "const b = document.querySelector('#banner'); return b && !b.hidden ? b.textContent : null;";
    wait_js(&c, 10, "an error banner", banner, |v| v.as_str().is_some_and(|t| t.contains("whole number")))
        .await;
    // The result of an action stays on screen through the page's refreshes (every 2 s) until it is
    // dismissed.
    let says = |want: &'static [&'static str]| {
        move |v: &Value| v.as_str().is_some_and(|t| want.iter().all(|w| t.contains(w)))
    };
    stays(&c, Duration::from_millis(2500), "the error banner", banner, says(&["whole number"])).await;
    c.find(Locator::Css("#banner-close")).await.expect("dismiss button").click().await.expect("dismiss");
    wait_js(&c, 5, "the banner to be dismissed", banner, Value::is_null).await;

    // An empty field is not 0, nor is a number past the limit: an error, no request.
    for (typed, shown) in [("", "an empty field"), ("100001", "100001")] {
        let input = c.find(Locator::Css("#scale-input")).await.expect("scale input");
        input.clear().await.expect("clear");
        if !typed.is_empty() {
            input.send_keys(typed).await.expect("type");
        }
        c.find(Locator::Css("#scale-button")).await.expect("scale button").click().await.expect("click");
        wait_js(&c, 10, "the bad-replicas error banner", banner, |v| {
            v.as_str().is_some_and(|t| t.contains("whole number from 0 to 100000") && t.contains(shown))
        })
        .await;
        assert_eq!(spec_replicas(&m, "web"), 4, "{typed:?} changed nothing");
        c.find(Locator::Css("#banner-close")).await.expect("dismiss button").click().await.expect("dismiss");
        wait_js(&c, 5, "the banner to be dismissed", banner, Value::is_null).await;
    }

    // 0 asks first. Dismissed, nothing changes.
    let input = c.find(Locator::Css("#scale-input")).await.expect("scale input");
    input.clear().await.expect("clear");
    input.send_keys("0").await.expect("type 0");
    c.find(Locator::Css("#scale-button")).await.expect("scale button").click().await.expect("click");
    let question = wait_dialog(&c, 10, "the scale-to-0 confirmation").await;
    assert!(question.contains("web to 0 replicas"), "{question}");
    c.dismiss_alert().await.expect("dismiss the confirmation");
    wait_js(&c, 10, "the cancelled-scale banner", banner, says(&["Not scaled", "keeps 4"])).await;
    assert_eq!(spec_replicas(&m, "web"), 4, "a dismissed confirmation changes nothing");
    wait_js(&c, 10, "4 running tasks still", RUNNING_TASKS, |v| v == 4).await;
    // Accepted: scaled to 0; the result banner outlives the refreshes the change triggers.
    c.find(Locator::Css("#scale-button")).await.expect("scale button").click().await.expect("click");
    let question = wait_dialog(&c, 10, "the scale-to-0 confirmation").await;
    assert!(question.contains("web to 0 replicas"), "{question}");
    c.accept_alert().await.expect("accept the confirmation");
    wait_js(&c, 10, "the scaled-to-0 banner", banner, says(&["web scaled to 0"])).await;
    stays(&c, Duration::from_millis(2500), "the scaled-to-0 banner", banner, says(&["web scaled to 0"]))
        .await;
    eventually(10, "web scaled to 0 in the spec", || (spec_replicas(&m, "web") == 0).then_some(()));
    wait_js(&c, 30, "no running web tasks", RUNNING_TASKS, |v| v == 0).await;
    screenshot(&c, "ui-scaled-to-zero.png").await;

    // Logs: Follow streams a service's lines into the page.
    m.ok(&[
        "service",
        "create",
        "--name",
        "talk",
        "--driver",
        "process",
        "/bin/sh",
        "-c",
        "while true; do echo hello-ui; sleep 0.2; done",
    ]);
    c.goto(&format!("{}/#/services/talk", m.ui_url())).await.expect("talk page");
    wait_js(&c, 20, "talk's task", RUNNING_TASKS, |v| v == 1).await;
    c.find(Locator::Css("#log-follow")).await.expect("follow").click().await.expect("click Follow");
    let logs = "const l = document.querySelector('#logs'); return l ? l.textContent : null;";
    wait_js(&c, 20, "followed log lines", logs, |v| {
        v.as_str().is_some_and(|t| t.matches("hello-ui").count() >= 3)
    })
    .await;
    screenshot(&c, "ui-logs.png").await;

    // 1,000 tasks: a service whose replicas can never be placed (no node has the memory) fills
    // the task list without starting processes. The page renders every row and stays usable.
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "big",
        "--driver",
        "process",
        "--replicas",
        "1000",
        "--reserve-memory",
        "100T",
        "/bin/true",
    ]);
    eventually(30, "1000 pending tasks", || {
        let n = m.json(&["service", "ps", "big", "--format", "json"]).as_array()?.len();
        (n == 1000).then_some(())
    });
    let started = Instant::now();
    c.goto(&format!("{}/#/services/big", m.ui_url())).await.expect("big service page");
    let rows = "return document.querySelectorAll('#tasks-table tbody tr').length;";
    wait_js(&c, 30, "1000 task rows", rows, |v| v == 1000).await;
    let first_render = started.elapsed();
    // Still responsive: a click on another tab renders at once.
    let started = Instant::now();
    c.find(Locator::LinkText("Nodes")).await.expect("nodes tab").click().await.expect("click");
    wait_js(&c, 10, "the nodes tab after 1000 tasks", ROWS_NODES, |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let switch = started.elapsed();
    let reasons = "const r = document.querySelector('#nodes-table'); return r ? r.textContent : null;";
    wait_js(&c, 5, "nodes table text", reasons, |v| v.as_str().is_some_and(|t| t.contains("w1"))).await;
    println!("UI with 1000 tasks: service page rendered in {first_render:?}, tab switch in {switch:?}");
    c.close().await.expect("close the browser");
    remove_services_and_wait(&m, &["web", "big", "talk"], &[&m, &w]);
}

/// Every metric sample, as `[name, labels, value]`, from the Prometheus project's parser.
fn parse_openmetrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/install-deps.sh installs it)");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("parser output");
    assert!(!v.is_empty(), "no samples in:\n{text}");
    v
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    // Chunked or not, axum sends a full body for a String: strip chunk framing if any.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        return out;
    }
    body.to_string()
}

fn value(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .reduce(|a, b| a + b)
}

#[test]
fn metrics_parse_and_task_states_are_logged_once() {
    let root = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(root.path(), "m1");
    let mut w = Node::new(root.path(), "w1");
    m.start_with("dev", &["--log-format", "json"]);
    w.start_with("daemon", &["--log-format", "json"]);
    join_worker(&m, &w);
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "mx",
        "--driver",
        "process",
        "--replicas",
        "4",
        "/bin/sleep",
        "600",
    ]);
    eventually(30, "4 mx tasks running", || (running(&m, "mx").len() == 4).then_some(()));
    // One that can never be placed, for the scheduler's reasons.
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "huge",
        "--driver",
        "process",
        "--reserve-memory",
        "100T",
        "/bin/true",
    ]);

    let on_worker =
        running(&m, "mx").iter().filter(|t| t["node_id"] != running(&m, "mx")[0]["node_id"]).count();
    let samples = eventually(20, "manager metrics with the cluster's state", || {
        let s = parse_openmetrics(&scrape(m.ui_port));
        (value(&s, "shoal_tasks", &[("state", "running"), ("driver", "process")]) == Some(4.0)
            && value(&s, "shoal_scheduler_unplaceable_tasks", &[("reason", "insufficient memory")])
                == Some(1.0))
        .then_some(s)
    });
    assert_eq!(value(&samples, "shoal_nodes", &[("state", "ready")]), Some(2.0));
    assert_eq!(value(&samples, "shoal_raft_is_leader", &[]), Some(1.0));
    assert_eq!(value(&samples, "shoal_services", &[]), Some(2.0));
    let commit = value(&samples, "shoal_raft_commit_index", &[]).expect("commit index");
    let applied = value(&samples, "shoal_raft_applied_index", &[]).expect("applied index");
    assert!(
        commit > 0.0
            && applied > 0.0
            && applied <= value(&samples, "shoal_raft_last_log_index", &[]).unwrap_or(0.0)
    );
    assert!(value(&samples, "shoal_raft_term", &[]).unwrap_or(0.0) >= 1.0);
    assert!(value(&samples, "shoal_raft_leader_changes_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(value(&samples, "shoal_raft_apply_seconds_count", &[]).unwrap_or(0.0) > 0.0);
    assert!(value(&samples, "shoal_scheduler_placements_total", &[]).unwrap_or(0.0) >= 4.0);
    assert!(value(&samples, "shoal_scheduler_plan_seconds_count", &[]).unwrap_or(0.0) > 0.0);
    assert!(value(&samples, "shoal_dispatcher_heartbeats_total", &[]).unwrap_or(0.0) > 0.0);
    let creates = value(
        &samples,
        "shoal_api_request_seconds_count",
        &[("route", "/v1/services"), ("method", "POST"), ("status", "201")],
    );
    assert_eq!(creates, Some(2.0), "two service creates recorded by route");
    assert!(
        value(&samples, "shoal_agent_task_start_seconds_count", &[("driver", "process")]).unwrap_or(0.0)
            >= 1.0
    );

    // The worker's own agent metrics, on its own listener.
    let ws = eventually(10, "worker metrics", || {
        let s = parse_openmetrics(&scrape(w.ui_port));
        (value(&s, "shoal_agent_tasks_running", &[("driver", "process")]) == Some(on_worker as f64))
            .then_some(s)
    });
    assert!(
        value(&ws, "shoal_agent_task_start_seconds_count", &[("driver", "process")]).unwrap_or(0.0)
            >= on_worker as f64
    );
    assert_eq!(value(&ws, "shoal_raft_is_leader", &[]), Some(0.0), "a worker has no Raft");

    // Logs: each task state change once, with task, service and node ids, across both daemons.
    let mx = m.json(&["service", "inspect", "mx", "--format", "json"]);
    let mx_id = if mx.is_array() { mx[0]["id"].clone() } else { mx["id"].clone() };
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for log in [m.dir.join("dev.log"), w.dir.join("daemon.log")] {
        for line in std::fs::read_to_string(&log).expect("log").lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            let f = &v["fields"];
            if f["message"] != "task state" || f["service"] != mx_id {
                continue;
            }
            let (task, state) = (f["task"].as_str().unwrap_or(""), f["state"].as_str().unwrap_or(""));
            assert!(!task.is_empty(), "a task id: {line}");
            if state != "pending" {
                assert!(f["node"].as_str().is_some_and(|n| !n.is_empty()), "a node id: {line}");
            }
            *seen.entry((task.to_string(), state.to_string())).or_default() += 1;
        }
    }
    for t in running(&m, "mx") {
        let id = t["id"].as_str().expect("id").to_string();
        for state in ["assigned", "accepted", "preparing", "starting", "running"] {
            assert_eq!(
                seen.get(&(id.clone(), state.to_string())),
                Some(&1),
                "task {id} {state} logged once: {seen:?}"
            );
        }
    }
}
