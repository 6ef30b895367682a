//! Scheduled jobs in the web UI, in real headless Chromium driven over WebDriver, against a real
//! `shoal daemon` after `cluster init`; the jobs are created through `shoal job create`:
//!
//! - the Jobs view lists a pipeline (extract on an ISO 8601 schedule far in the future, t1 after
//!   extract, load after t1): schedule or "after …", the next run, never ran, no counts;
//! - its dependency graph is SVG: three nodes in three columns (longest path from the roots), two
//!   arrowed edges, every node grey;
//! - "Run now" on extract starts a run from the page; the page then shows extract's run
//!   succeeded, and the children's (started by their parents) after it, counts and node colours
//!   following (load, which takes a while, seen running in blue first); a job's runs open from
//!   the table and from the graph;
//! - a run's message holding HTML stays text; a failed run turns its node red;
//! - the page made no request outside what the UI may call (the listener refused none), wrote
//!   only its one Run now, and raised no script error or CSP violation; the UI listener refuses
//!   suspending a job, and a run without the UI's header.

mod common;
use common::browser::{browser, chromedriver, screenshot, wait_js, RECORD_REQUESTS_JS};
use common::{eventually, free_port, Node};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

/// The jobs table: one object per row.
const ROWS: &str = r#"
const t = (r, sel) => { const e = r.querySelector(sel); return e ? e.textContent.trim() : null; };
return Array.from(document.querySelectorAll('#jobs-table tbody tr')).map((r) => ({
  name: r.dataset.job, state: r.dataset.state, selected: r.classList.contains('selected'),
  link: t(r, '.job-name a'), schedule: t(r, '.job-schedule'), next: t(r, '.job-next'),
  latest: t(r, '.job-latest'), last: t(r, '.job-last'), last_state: r.querySelector('.job-last').dataset.state,
  ok: t(r, '.job-ok'), failed: t(r, '.job-failed'), skipped: t(r, '.job-skipped'),
  suspended: !!r.querySelector('.job-suspended'), button: t(r, 'button.job-run'),
}));"#;

/// The graph: its SVG elements as the page drew them (null while there is none).
const GRAPH: &str = r#"
const s = document.querySelector('#jobs-graph svg');
if (!s) return null;
return {
  ns: s.namespaceURI, rects: s.querySelectorAll('rect').length,
  arrow: !!s.querySelector('defs marker#jobs-arrow path'),
  nodes: Array.from(s.querySelectorAll('g.job-node')).map((g) => {
    const b = g.getBoundingClientRect();
    return { name: g.dataset.job, label: g.querySelector('.job-label').textContent, cls: g.getAttribute('class'),
      fill: getComputedStyle(g.querySelector('rect.job-box')).fill, x: b.x, y: b.y };
  }),
  edges: Array.from(s.querySelectorAll('path.job-edge')).map((e) => [e.dataset.from, e.dataset.to, e.getAttribute('marker-end')]),
};"#;

/// The runs table: `{job, rows: [{number, cause, state, attempts, exit, started, duration, message}]}`.
const RUNS: &str = r#"
const t = document.querySelector('#runs-table');
if (!t) return null;
const c = (r, sel) => r.querySelector(sel).textContent.trim();
return { job: t.dataset.job, rows: Array.from(t.querySelectorAll('tbody tr')).map((r) => ({
  number: c(r, '.run-number'), cause: c(r, '.run-cause'), state: c(r, '.run-state'), attempts: c(r, '.run-attempts'),
  exit: c(r, '.run-exit'), started: c(r, '.run-started'), duration: c(r, '.run-duration'), message: c(r, '.run-message'),
})) };"#;

const BANNER: &str =
    "const b = document.querySelector('#banner'); return b && !b.hidden ? b.textContent : null;";

/// The fills of the node colours in style.css, as computed.
const GREY: &str = "rgb(238, 241, 245)";
const GREEN: &str = "rgb(218, 251, 225)";
const RED: &str = "rgb(255, 235, 233)";
const BLUE: &str = "rgb(221, 244, 255)";

fn row<'a>(rows: &'a Value, name: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["name"] == name)
}

fn node<'a>(graph: &'a Value, name: &str) -> Option<&'a Value> {
    graph["nodes"].as_array()?.iter().find(|n| n["name"] == name)
}

/// Whether `name`'s node in the graph has state class `st-<state>` and the fill that goes with it.
fn coloured(graph: &Value, name: &str, state: &str, fill: &str) -> bool {
    node(graph, name).is_some_and(|n| {
        n["cls"].as_str().is_some_and(|c| c.split(' ').any(|c| c == format!("st-{state}")))
            && n["fill"] == fill
    })
}

/// A job's runs, oldest first, as the CLI reads them.
fn cli_runs(m: &Node, job: &str) -> Vec<Value> {
    let v = m.json(&["job", "inspect", job, "--format", "json"]);
    v[0]["job"]["runs"].as_array().cloned().unwrap_or_default()
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
}

/// `POST path` on the UI listener (loopback: this process runs as the daemon's user), with the
/// UI's header or without; the status code.
fn ui_post(m: &Node, path: &str, ui_header: bool) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", m.ui_port)).expect("the UI listener");
    let header = if ui_header { "X-Shoal-UI: 1\r\n" } else { "" };
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{header}Content-Length: 0\r\nConnection: close\r\n\r\n",
        m.ui_port
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("an HTTP answer: {resp}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_chromium_listed_drawn_and_run_from_the_page() {
    let root = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(root.path(), "m1");
    m.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    let schedule = "R/2030-01-01T00:00:00Z/P1D";
    eventually(20, "the cluster to take writes", || {
        let out = m.cli(&[
            "job",
            "create",
            "--name",
            "extract",
            "--schedule",
            schedule,
            "--driver",
            "process",
            "sh",
            "-c",
            "echo extracted",
        ]);
        out.status.success().then_some(())
    });
    m.ok(&[
        "job", "create", "--name", "t1", "--after", "extract", "--driver", "process", "sh", "-c", "echo t1",
    ]);
    // load takes a while: long enough to be seen running.
    m.ok(&["job", "create", "--name", "load", "--after", "t1", "--driver", "process", "sleep", "3"]);

    let driver_port = free_port();
    let _cd = chromedriver(driver_port, &root.path().join("chromedriver.log"));
    let c = browser(driver_port, &root.path().join("chrome-profile")).await;

    // The Jobs tab, from the navigation bar.
    c.goto(&format!("{}/#/overview", m.ui_url())).await.expect("open the UI");
    c.find(Locator::LinkText("Jobs")).await.expect("the Jobs tab").click().await.expect("click Jobs");
    wait_js(&c, 20, "three jobs in the table", ROWS, |v| v.as_array().is_some_and(|a| a.len() == 3)).await;
    // From here on: every request the page makes, script errors and CSP violations. The view is
    // built again (away and back) under watch.
    let record = [
        RECORD_REQUESTS_JS,
        "window.__errors = [];
         window.addEventListener('error', (e) => window.__errors.push('error: ' + e.message));
         window.addEventListener('unhandledrejection', (e) => window.__errors.push('rejection: ' + e.reason));
         document.addEventListener('securitypolicyviolation', (e) =>
           window.__errors.push('CSP: ' + e.violatedDirective + ' ' + e.blockedURI));
         const error0 = console.error;
         console.error = function () { window.__errors.push('console: ' + Array.from(arguments).join(' ')); return error0.apply(this, arguments); };
         location.hash = '#/overview';",
    ]
    .concat();
    c.execute(&record, vec![]).await.expect("record the page's requests and errors");
    wait_js(&c, 10, "the overview", "return !!document.querySelector('#overview');", |v| v == true).await;
    c.execute("location.hash = '#/jobs';", vec![]).await.expect("back to the jobs");

    // The table: each job's schedule or parents, the next run (only extract has one), never ran.
    let rows = wait_js(&c, 20, "the jobs listed", ROWS, |v| {
        row(v, "t1").is_some_and(|r| r["schedule"] == "after extract")
            && row(v, "load").is_some_and(|r| r["schedule"] == "after t1")
    })
    .await;
    let names: Vec<&str> = rows.as_array().expect("rows").iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["extract", "load", "t1"], "sorted by name: {rows}");
    let extract = row(&rows, "extract").expect("extract");
    assert_eq!(extract["schedule"], schedule, "{extract}");
    assert!(extract["next"].as_str().is_some_and(|t| t.contains("2030") && t.contains(" in ")), "{extract}");
    assert_eq!(row(&rows, "t1").expect("t1")["next"], "when its parents finish");
    for r in rows.as_array().expect("rows") {
        assert_eq!(r["link"], r["name"], "{r}");
        assert_eq!(r["latest"], "never ran", "{r}");
        assert_eq!(r["last"], "none yet", "{r}");
        assert_eq!((&r["ok"], &r["failed"], &r["skipped"]), (&json!("0"), &json!("0"), &json!("0")), "{r}");
        assert_eq!(r["suspended"], false, "{r}");
        assert_eq!(r["button"], "Run now", "{r}");
    }

    // The graph: SVG, a rounded rect per job, left to right by dependency depth, an arrowed edge
    // per parent, every node grey (never ran).
    let graph = wait_js(&c, 10, "the dependency graph", GRAPH, |v| {
        v["nodes"].as_array().is_some_and(|n| n.len() == 3)
    })
    .await;
    assert_eq!(graph["ns"], "http://www.w3.org/2000/svg");
    assert_eq!(graph["rects"], 3, "{graph}");
    assert_eq!(graph["arrow"], true, "an arrowhead marker: {graph}");
    assert_eq!(
        graph["edges"],
        json!([["extract", "t1", "url(#jobs-arrow)"], ["t1", "load", "url(#jobs-arrow)"]]),
        "{graph}"
    );
    let x = |n: &str| node(&graph, n).and_then(|n| n["x"].as_f64()).unwrap_or_else(|| panic!("{n} drawn"));
    assert!(x("extract") < x("t1") && x("t1") < x("load"), "one column per depth: {graph}");
    for n in ["extract", "t1", "load"] {
        assert_eq!(node(&graph, n).expect("node")["label"], n);
        assert!(coloured(&graph, n, "fresh", GREY), "{n} grey: {graph}");
    }
    screenshot(&c, "ui-jobs.png").await;

    // Run now, from the page: extract runs, then its children, each started by its parents.
    click(&c, "#jobs-table tr[data-job=\"extract\"] button.job-run").await;
    wait_js(&c, 10, "the run-started banner", BANNER, |v| {
        v.as_str().is_some_and(|t| t.contains("extract: a run starts now"))
    })
    .await;
    let rows = wait_js(&c, 60, "extract's run succeeded", ROWS, |v| {
        row(v, "extract").is_some_and(|r| r["latest"] == "succeeded" && r["ok"] == "1")
    })
    .await;
    let extract = row(&rows, "extract").expect("extract");
    assert_eq!(extract["last_state"], "succeeded", "{extract}");
    assert!(
        extract["last"].as_str().is_some_and(|t| t.starts_with("succeeded") && t.ends_with("ago")),
        "{extract}"
    );
    // load running: blue in the graph, running in the table.
    wait_js(&c, 30, "load running, blue", GRAPH, |v| coloured(v, "load", "running", BLUE)).await;
    let rows = c.execute(ROWS, vec![]).await.expect("rows");
    assert_eq!(row(&rows, "load").expect("load")["latest"], "running", "{rows}");
    let rows = wait_js(&c, 60, "the children's runs succeeded", ROWS, |v| {
        ["t1", "load"].iter().all(|n| row(v, n).is_some_and(|r| r["latest"] == "succeeded" && r["ok"] == "1"))
    })
    .await;
    for r in rows.as_array().expect("rows") {
        assert_eq!((&r["failed"], &r["skipped"]), (&json!("0"), &json!("0")), "{r}");
        assert_eq!(r["button"], "Run now", "{r}");
    }
    let graph = wait_js(&c, 10, "every node green", GRAPH, |v| {
        ["extract", "t1", "load"].iter().all(|n| coloured(v, n, "succeeded", GREEN))
    })
    .await;
    assert_eq!(graph["rects"], 3, "{graph}");
    // As the CLI reads them: one run each, extract's by hand, the others by their parents.
    for (job, cause) in [("extract", "manual"), ("t1", "parents"), ("load", "parents")] {
        let runs = cli_runs(&m, job);
        assert_eq!(runs.len(), 1, "{job}: {runs:?}");
        assert_eq!((&runs[0]["state"], &runs[0]["cause"]), (&json!("succeeded"), &json!(cause)), "{job}");
    }

    // A job's runs: extract's from the table's link.
    click(&c, "#jobs-table tr[data-job=\"extract\"] .job-name a").await;
    let runs = wait_js(&c, 10, "extract's runs", RUNS, |v| v["job"] == "extract").await;
    let r = &runs["rows"];
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(
        (&r[0]["number"], &r[0]["cause"], &r[0]["state"], &r[0]["attempts"], &r[0]["exit"]),
        (&json!("1"), &json!("manual"), &json!("succeeded"), &json!("1"), &json!("0")),
        "{runs}"
    );
    assert!(r[0]["duration"].as_str().is_some_and(|d| !d.is_empty()), "a duration: {runs}");
    assert!(r[0]["started"].as_str().is_some_and(|d| d.ends_with("ago")), "{runs}");
    assert_eq!(r[0]["message"], "succeeded");
    let hash = c.execute("return location.hash;", vec![]).await.expect("hash");
    assert_eq!(hash, "#/jobs/extract");
    let rows = c.execute(ROWS, vec![]).await.expect("rows");
    assert_eq!(row(&rows, "extract").expect("extract")["selected"], true, "{rows}");
    // load's from its node in the graph: started by t1's run 1.
    click(&c, "#jobs-graph svg g.job-node[data-job=\"load\"]").await;
    let runs = wait_js(&c, 10, "load's runs, from the graph", RUNS, |v| v["job"] == "load").await;
    let r = &runs["rows"][0];
    assert_eq!((&r["cause"], &r["state"]), (&json!("parents"), &json!("succeeded")), "{runs}");
    assert!(r["message"].as_str().is_some_and(|t| t.contains("after t1 #1")), "{runs}");
    let graph = c.execute(GRAPH, vec![]).await.expect("graph");
    assert!(
        node(&graph, "load").and_then(|n| n["cls"].as_str()).is_some_and(|c| c.contains("selected")),
        "{graph}"
    );
    screenshot(&c, "ui-jobs-runs.png").await;

    // A run that fails, with HTML in what it says: the message stays text, the node turns red.
    let hostile = "/nonexistent/<img src=x onerror=window.__jobXss=1>";
    m.ok(&["job", "create", "--name", "broken", "--schedule", "0 3 1 1 *", "--driver", "process", hostile]);
    m.ok(&["job", "run", "broken"]);
    c.execute("location.hash = '#/jobs/broken';", vec![]).await.expect("broken's runs");
    let runs = wait_js(&c, 60, "broken's failed run", RUNS, |v| {
        v["job"] == "broken" && v["rows"][0]["state"] == "failed"
    })
    .await;
    let message = runs["rows"][0]["message"].as_str().unwrap_or("");
    assert!(message.starts_with("failed") && message.contains("<img src=x"), "{runs}");
    let graph =
        wait_js(&c, 10, "broken red in the graph", GRAPH, |v| coloured(v, "broken", "failed", RED)).await;
    assert_eq!((&graph["rects"], graph["edges"].as_array().map(Vec::len)), (&json!(4), Some(2)), "{graph}");
    let rows = c.execute(ROWS, vec![]).await.expect("rows");
    let broken = row(&rows, "broken").expect("broken listed");
    assert_eq!((&broken["schedule"], &broken["failed"]), (&json!("0 3 1 1 *"), &json!("1")), "{broken}");
    let html =
        "return [typeof window.__jobXss, document.querySelectorAll('#jobs img, #jobs script').length];";
    assert_eq!(c.execute(html, vec![]).await.expect("html"), json!(["undefined", 0]));
    screenshot(&c, "ui-jobs-failed.png").await;

    // What the UI listener keeps to the CLI: suspending a job; and no write without the UI's
    // header (a cross-site form cannot send one).
    assert_eq!(ui_post(&m, "/v1/jobs/extract/suspend", true), 403);
    assert_eq!(ui_post(&m, "/v1/jobs/extract/resume", true), 403);
    assert_eq!(ui_post(&m, "/v1/jobs/extract/run", false), 403);
    assert_eq!(cli_runs(&m, "extract").len(), 1, "the refused run started nothing");

    // The page's requests: reads of what it shows and its one Run now, none refused; no script
    // error, no CSP violation.
    let seen = c
        .execute(
            "return [window.__requests, window.__errors,
               performance.getEntriesByType('resource').map((e) => [e.name, e.responseStatus])];",
            vec![],
        )
        .await
        .expect("the page's requests");
    let reads = [
        "/v1/cluster",
        "/v1/cluster/health",
        "/v1/nodes",
        "/v1/services",
        "/v1/tasks",
        "/v1/events",
        "/v1/jobs",
        "/v1/jobs/graph",
    ];
    let requests = seen[0].as_array().expect("recorded requests");
    for r in requests {
        let (method, url) = (r[0].as_str().unwrap_or(""), r[1].as_str().unwrap_or(""));
        let path = url.split('?').next().unwrap_or("");
        assert!(
            (method == "GET" && reads.contains(&path)) || (method == "POST" && url == "/v1/jobs/extract/run"),
            "the page sent {method} {url}"
        );
    }
    let runs_sent = requests.iter().filter(|r| r[0] == "POST").count();
    assert_eq!(runs_sent, 1, "one Run now: {requests:?}");
    for want in ["/v1/jobs?stale=true", "/v1/jobs/graph?stale=true"] {
        assert!(requests.iter().any(|r| r[0] == "GET" && r[1] == want), "{want}: {requests:?}");
    }
    assert_eq!(seen[1], json!([]), "script errors or CSP violations");
    for r in seen[2].as_array().expect("resource timings") {
        let url = r[0].as_str().unwrap_or("");
        if !url.ends_with("/favicon.ico") {
            assert_ne!(r[1], 403, "the UI listener refused {url}");
        }
    }
    c.close().await.expect("close the browser");
}
