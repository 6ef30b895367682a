//! Scheduled jobs on real daemons: a pipeline (extract → two transforms → load, one transform
//! failing every first attempt and retried) runs on its schedule on three `shoal daemon` managers,
//! created and driven through followers, while the leader is killed with SIGKILL and later
//! restarted. Every run's task appends a line to its job's file, so the files count what really
//! ran: no run lost, none doubled, none started before its parents ended, each parent round
//! consumed once. Then the operator's paths: `job ls|history|graph|suspend|resume|run|rm` and the
//! errors for cycles, unknown parents, bad schedules and removing a parent.

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;
use common::{eventually, leader_of, Node};

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

/// The runs a manager reports for a job (`job inspect --format json`).
fn runs(n: &Node, job: &str) -> Vec<Value> {
    let out = n.cli(&["job", "inspect", job, "--format", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0]["job"]["runs"].as_array().cloned().unwrap_or_default()
}

fn succeeded(runs: &[Value]) -> Vec<&Value> {
    runs.iter().filter(|r| r["state"] == "succeeded").collect()
}

fn ts(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.as_str()?).ok()
}

/// The index of a running manager other than `leader`.
fn follower(nodes: &[Node], leader: &str) -> usize {
    nodes.iter().position(|n| n.child.is_some() && n.node_id() != leader).expect("a follower")
}

#[test]
fn a_pipeline_runs_on_schedule_across_a_leader_kill() {
    let root = tempfile::tempdir().expect("tmp");
    let mut nodes = common::managers(root.path(), &["m1", "m2", "m3"]);
    let d = root.path().join("out");
    std::fs::create_dir_all(&d).expect("out dir");
    let leader = eventually(30, "a leader", || leader_of(&nodes[0]).map(|(_, l)| l));
    let f = &nodes[follower(&nodes, &leader)];

    // Every 6 s from the next whole second (Chronos's ISO 8601 form).
    let start = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() + 2;
    let start_text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(start)).to_string();
    let schedule = format!("R/{start_text}/PT6S");
    let append = |name: &str| format!("echo {name} >> {}/{name}.log", d.display());
    let common = ["--driver", "process", "--history", "100"];
    let create = |n: &Node, args: &[&str], script: &str| {
        let mut a = vec!["job", "create"];
        a.extend_from_slice(args);
        a.extend_from_slice(&common);
        a.extend_from_slice(&["sh", "-c", script]);
        n.ok(&a);
    };
    create(f, &["--name", "extract", "--schedule", &schedule], &append("extract"));
    // t1 fails on its odd-numbered executions: every run needs its one retry.
    let t1 = format!("{}; n=$(wc -l < {dir}/t1.log); [ $((n % 2)) -eq 0 ]", append("t1"), dir = d.display());
    create(f, &["--name", "t1", "--after", "extract", "--retries", "2"], &t1);
    create(f, &["--name", "t2", "--after", "extract"], &append("t2"));
    create(f, &["--name", "load", "--after", "t1,t2"], &append("load"));

    // Two whole rounds, then the leader goes.
    eventually(60, "two loads before the kill", || (succeeded(&runs(f, "load")).len() >= 2).then_some(()));
    let killed = nodes.iter().position(|n| n.node_id() == leader).expect("leader is one of ours");
    nodes[killed].kill9();
    let fi = follower(&nodes, &leader);
    let f = &nodes[fi];
    let loads_at_kill = succeeded(&runs(f, "load")).len();
    eventually(60, "two more loads under the new leader", || {
        (succeeded(&runs(f, "load")).len() >= loads_at_kill + 2).then_some(())
    });
    // The old leader comes back as a follower and catches up.
    nodes[killed].start("daemon");
    let f = &nodes[fi];
    eventually(60, "one more load with all three back", || {
        (succeeded(&runs(f, "load")).len() >= loads_at_kill + 3).then_some(())
    });
    // Quiesce: no more scheduled runs, let the last round finish.
    f.ok(&["job", "suspend", "extract"]);
    eventually(60, "every run finished", || {
        let active = ["extract", "t1", "t2", "load"]
            .iter()
            .any(|j| runs(f, j).iter().any(|r| r["state"] == "running"));
        let t2 = runs(f, "t2").len();
        let load = runs(f, "load").iter().filter(|r| r["state"] != "skipped").count();
        (!active && t2 == load).then_some(())
    });

    // What ran is what was recorded: a run's attempts are its executions.
    for job in ["extract", "t1", "t2", "load"] {
        let rs = runs(f, job);
        let attempts: u64 = rs.iter().map(|r| r["attempts"].as_u64().unwrap_or(0)).sum();
        let ok = succeeded(&rs).len();
        let ran = lines(&d.join(format!("{job}.log")));
        assert!(ok >= 5, "{job}: only {ok} successful runs: {rs:#?}");
        assert!(
            ran as u64 <= attempts && ran >= ok,
            "{job}: {ran} executions for {ok} successful runs and {attempts} attempts: {rs:#?}"
        );
        assert!(rs.iter().all(|r| r["state"] != "failed"), "{job}: a run failed: {rs:#?}");
    }
    // Every t1 run took its retry.
    assert!(succeeded(&runs(f, "t1")).iter().all(|r| r["attempts"] == 2), "{:#?}", runs(f, "t1"));
    // No occurrence lost: every 6 s occurrence from the first to the last handled ran or was
    // recorded as skipped.
    let ex = f.json(&["job", "inspect", "extract", "--format", "json"]);
    let last = ts(&ex[0]["job"]["last_scheduled_at"]).expect("last occurrence");
    let occurrences =
        last.duration_since(UNIX_EPOCH + Duration::from_secs(start)).expect("after start").as_secs() / 6 + 1;
    let accounted: u64 = runs(f, "extract")
        .iter()
        .filter(|r| r["cause"] == "schedule")
        .map(|r| r["skipped"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(accounted, occurrences, "{:#?}", runs(f, "extract"));
    // Children after their parents, each parent round once.
    for (child, parents) in [("t1", vec!["extract"]), ("t2", vec!["extract"]), ("load", vec!["t1", "t2"])] {
        let mut last_seen = std::collections::BTreeMap::new();
        for r in succeeded(&runs(f, child)) {
            let started = ts(&r["started_at"]).expect("started");
            for p in &parents {
                let n = r["parents"][p].as_u64().unwrap_or_else(|| panic!("{child} run without {p}: {r}"));
                let pr = runs(f, p).into_iter().find(|x| x["number"] == n).expect("parent run kept");
                assert_eq!(pr["state"], "succeeded", "{child} followed a failed {p} run");
                assert!(
                    ts(&pr["finished_at"]).expect("ended") <= started,
                    "{child} before {p} run {n} ended"
                );
                assert!(
                    last_seen.insert(*p, n).is_none_or(|prev| prev < n),
                    "{child} ran twice for {p} run {n}"
                );
            }
        }
    }

    // The operator's views, from a follower.
    let ls = f.ok(&["job", "ls"]);
    for want in ["extract", "t1", "t2", "load", "suspended", "after t1,t2"] {
        assert!(ls.contains(want), "job ls lacks {want}:\n{ls}");
    }
    let dot = f.ok(&["job", "graph"]);
    for edge in ["\"extract\" -> \"t1\"", "\"extract\" -> \"t2\"", "\"t1\" -> \"load\"", "\"t2\" -> \"load\""]
    {
        assert!(dot.contains(edge), "graph lacks {edge}:\n{dot}");
    }
    let history = f.ok(&["job", "history", "t1"]);
    assert!(
        history.contains("RUN") && history.contains("parents") && history.contains("succeeded"),
        "{history}"
    );
    // A run by hand starts the chain once more, while extract stays suspended.
    let before = succeeded(&runs(f, "load")).len();
    f.ok(&["job", "run", "extract"]);
    eventually(30, "the manual round reaches load", || {
        (succeeded(&runs(f, "load")).len() == before + 1).then_some(())
    });
    assert!(runs(f, "extract").iter().any(|r| r["cause"] == "manual" && r["state"] == "succeeded"));

    // Bad input: each a clear error, nothing created.
    let err = |args: &[&str]| {
        let out = f.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = err(&["job", "create", "--name", "x", "--after", "nope", "--driver", "process", "true"]);
    assert!(e.contains("unknown parent job \"nope\""), "{e}");
    let e = err(&["job", "create", "--name", "x", "--schedule", "0 0 31 2 *", "--driver", "process", "true"]);
    assert!(e.contains("never fires"), "{e}");
    let e = err(&[
        "job",
        "create",
        "--name",
        "x",
        "--schedule",
        "@daily",
        "--time-zone",
        "Europe/Nowhere",
        "--driver",
        "process",
        "true",
    ]);
    assert!(e.contains("Europe/Nowhere"), "{e}");
    let e = err(&["job", "rm", "t1"]);
    assert!(e.contains("cannot remove job \"t1\"") && e.contains("load"), "{e}");
    let e = err(&["job", "run", "nope"]);
    assert!(e.contains("not found"), "{e}");
    assert!(f.json(&["job", "ls", "--format", "json"]).as_array().is_some_and(|a| a.len() == 4));

    // Removing the graph from the leaves up works.
    for j in ["load", "t1", "t2", "extract"] {
        f.ok(&["job", "rm", j]);
    }
    assert_eq!(f.json(&["job", "ls", "--format", "json"]), serde_json::json!([]));
}
