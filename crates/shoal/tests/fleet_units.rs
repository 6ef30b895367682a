//! fleet units end to end on three real daemons (two managers and a worker): a template unit
//! `web@.service` with `Conflicts=web@*.service` is submitted once and four instances started
//! through the follower manager: three run, one per node, and the fourth waits with the conflict
//! explained until a node frees up; a `MachineOf=` unit runs next to its target; journal and
//! status show the unit's output and state; stop keeps the file, destroy forgets it; malformed
//! and unsupported unit files are refused naming the line.

use serde_json::Value;
use std::collections::BTreeSet;

mod common;
use common::{eventually, two_managers_and_a_worker, Node};

const WEB: &str = "[Unit]
Description=web server %i
# A comment, and a continued line below.
[Service]
ExecStart=/bin/sh -c 'echo web %i up; \\
  exec sleep 600'
Restart=always
[Install]
WantedBy=multi-user.target
[X-Fleet]
Conflicts=web@*.service
";

const SIDECAR: &str = "[Service]
ExecStart=/bin/sh -c 'echo sidecar up; exec sleep 600'
[X-Fleet]
MachineOf=web@3.service
";

/// The launched units' tasks: unit → (node, state, err) of its live task.
fn units(n: &Node) -> Vec<Value> {
    n.json(&["unit", "list-units", "--format", "json"]).as_array().cloned().unwrap_or_default()
}

fn task_of<'a>(units: &'a [Value], name: &str) -> Option<&'a Value> {
    units
        .iter()
        .find(|u| u["name"] == name)?
        .get("tasks")?
        .as_array()?
        .iter()
        .find(|t| t["desired"] == "running")
}

fn running_on(units: &[Value], name: &str) -> Option<String> {
    let t = task_of(units, name)?;
    (t["state"] == "running").then(|| t["node"].as_str().unwrap_or_default().to_string())
}

#[test]
fn template_instances_with_conflicts_run_one_per_node() {
    let root = tempfile::tempdir().expect("tmp");
    let (m1, m2, _w1) = two_managers_and_a_worker(root.path(), &[]);
    let files = root.path().join("units");
    std::fs::create_dir_all(&files).expect("dir");
    let web = files.join("web@.service");
    std::fs::write(&web, WEB).expect("unit file");
    let f = &m2; // a follower

    let out = f.ok(&["unit", "submit", web.to_str().expect("path")]);
    assert_eq!(out, "Unit web@.service inactive");
    let out = f.cli(&["unit", "start", "web@.service"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a template: start an instance"), "{out:?}");
    for i in 1..=4 {
        f.ok(&["unit", "start", &format!("web@{i}.service")]);
    }
    let placed = eventually(60, "three instances on three nodes, one waiting", || {
        let u = units(f);
        let nodes: Vec<String> =
            (1..=4).filter_map(|i| running_on(&u, &format!("web@{i}.service"))).collect();
        let waiting: Vec<String> = (1..=4)
            .filter_map(|i| task_of(&u, &format!("web@{i}.service")))
            .filter(|t| t["state"] == "pending")
            .map(|t| t["err"].as_str().unwrap_or_default().to_string())
            .collect();
        (nodes.len() == 3 && waiting.len() == 1).then_some((nodes, waiting))
    });
    let (nodes, waiting) = placed;
    assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), 3, "one per node: {nodes:?}");
    assert!(waiting[0].contains("conflicts with web-"), "{waiting:?}");
    let idle = (1..=4)
        .map(|i| format!("web@{i}.service"))
        .find(|n| running_on(&units(f), n).is_none())
        .expect("one waits");
    let status = f.ok(&["unit", "status", &idle]);
    assert!(status.contains("pending") && status.contains("conflicts with"), "{status}");

    // Output, through the unit's name (%i expanded per instance).
    let journal = eventually(30, "web@1's output", || {
        let j = f.ok(&["unit", "journal", "web@1.service"]);
        j.contains("web 1 up").then_some(j)
    });
    assert!(!journal.contains("web 2 up"), "{journal}");

    // MachineOf: next to web@3, wherever that is.
    let sidecar = files.join("sidecar.service");
    std::fs::write(&sidecar, SIDECAR).expect("unit file");
    f.ok(&["unit", "start", sidecar.to_str().expect("path")]);
    eventually(60, "the sidecar next to web@3", || {
        let u = units(f);
        let (s, w) = (running_on(&u, "sidecar.service")?, running_on(&u, "web@3.service")?);
        (s == w).then_some(())
    });

    // Stopping a running instance frees its node for the waiting one.
    let stopped = (1..=4)
        .map(|i| format!("web@{i}.service"))
        .find(|n| *n != idle && *n != "web@3.service")
        .expect("a running one");
    assert_eq!(f.ok(&["unit", "stop", &stopped]), format!("Unit {stopped} loaded"));
    eventually(60, "the waiting instance runs", || running_on(&units(f), &idle).map(|_| ()));
    let files_listed = m1.json(&["unit", "list-unit-files", "--format", "json"]);
    let state_of = |name: &str| {
        files_listed.as_array().and_then(|a| a.iter().find(|u| u["name"] == name)).map(|u| u["state"].clone())
    };
    assert_eq!(state_of("web@.service"), Some("inactive".into()));
    assert_eq!(state_of(&idle), Some("launched".into()));
    assert_eq!(state_of(&stopped), None, "an instance without a file of its own is gone once stopped");
    let table = m1.ok(&["unit", "list-unit-files"]);
    assert!(table.contains("DSTATE") && table.contains("web@.service"), "{table}");

    // Destroy forgets the template's file; its running instances go on until stopped.
    assert_eq!(f.ok(&["unit", "destroy", "web@.service"]), "Destroyed web@.service");
    let out = f.cli(&["unit", "start", &stopped]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{out:?}");
    assert!(running_on(&units(f), &idle).is_some());

    // Bad unit files: refused naming the line; nothing stored.
    let bad = files.join("bad.service");
    std::fs::write(&bad, "[Service]\nExecStart=/bin/true\nthis is not a directive\n").expect("file");
    let out = f.cli(&["unit", "submit", bad.to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"), "{out:?}");
    let timer = files.join("nightly.timer");
    std::fs::write(&timer, "[Timer]\nOnCalendar=daily\n").expect("file");
    let out = f.cli(&["unit", "submit", timer.to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("shoal job create"), "{out:?}");
    let replaces = files.join("r.service");
    std::fs::write(&replaces, "[Service]\nExecStart=/bin/true\n[X-Fleet]\nReplaces=web@1.service\n")
        .expect("file");
    let out = f.cli(&["unit", "submit", replaces.to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Replaces"), "{out:?}");
    let names: Vec<String> = f
        .json(&["unit", "list-unit-files", "--format", "json"])
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    assert!(!names.iter().any(|n| n == "bad.service" || n == "r.service"), "{names:?}");

    for u in ["sidecar.service", "web@1.service", "web@2.service", "web@3.service", "web@4.service"] {
        let _ = f.cli(&["unit", "destroy", u]);
    }
    eventually(60, "every unit gone", || units(f).is_empty().then_some(()));
}

/// A classic fleet unit around `docker run` (with the kill/rm/pull/stop boilerplate) runs on the
/// docker driver with its image, name-free container, environment and command, and its output
/// reaches `unit journal`; the boilerplate is dropped silently, an unknown option is refused.
#[test]
fn a_docker_run_unit_runs_on_the_docker_driver() {
    let root = tempfile::tempdir().expect("tmp");
    let image = common::DockerImage::import(&root.path().join("img"), "fleetunit");
    let mut m = Node::new(root.path(), "m1");
    m.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    let unit = format!(
        "[Unit]\nDescription=hello from docker\n[Service]\nExecStartPre=-/usr/bin/docker kill hello\n\
         ExecStartPre=-/usr/bin/docker rm hello\nExecStart=/usr/bin/docker run --rm --name hello -e GREETING=hi {img} \
         sh -c 'echo $GREETING from docker; exec sleep 600'\nExecStop=/usr/bin/docker stop hello\nRestart=always\n",
        img = image.0
    );
    let file = root.path().join("hello.service");
    std::fs::write(&file, unit).expect("unit file");
    let out = m.cli(&["unit", "start", file.to_str().expect("path")]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "no warnings for the boilerplate: {out:?}");
    let svc = m.json(&["service", "inspect", "hello"]);
    assert_eq!(svc["spec"]["task_template"]["driver"], "docker");
    assert_eq!(svc["spec"]["task_template"]["env"]["GREETING"], "hi");
    assert_eq!(svc["spec"]["labels"]["fleet.unit"], "hello.service");
    eventually(60, "the container's output", || {
        let j = m.ok(&["unit", "journal", "hello.service"]);
        j.contains("hi from docker").then_some(())
    });
    assert_eq!(image.containers("hello.").len(), 1, "one container, Swarm-named");
    m.ok(&["unit", "destroy", "hello.service"]);
    eventually(60, "the container gone", || image.containers("hello.").is_empty().then_some(()));

    let bad = root.path().join("priv.service");
    std::fs::write(&bad, format!("[Service]\nExecStart=/usr/bin/docker run --privileged {} true\n", image.0))
        .expect("unit file");
    let out = m.cli(&["unit", "submit", bad.to_str().expect("path")]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--privileged"),
        "{out:?}"
    );
}
