//! Shoal's CLI as a Swarm user types it, against a real daemon: `--format` Go templates (plain,
//! `table …`, `{{json .}}`, inspect over the object), `--filter` on `service ls|ps`, `node ls|ps`
//! and `events` (with unknown keys refused), ERROR cells cut unless `--no-trunc`, events that
//! name their objects, and `join-token` printing this manager's real address.

mod common;
use common::{eventually, Node};

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn stderr_of(n: &Node, args: &[&str]) -> String {
    let out = n.cli(args);
    assert!(!out.status.success(), "shoal {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn formats_filters_and_names_like_docker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "cli1");
    n.start("dev");
    eventually(30, "the node to be ready", || {
        (n.ok(&["node", "ls", "--format", "{{.Status}}"]) == "Ready").then_some(())
    });
    let id = n.node_id();

    // Two services with labels, one that never starts (a long error).
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--label",
        "tier=front",
        "--replicas",
        "2",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    n.ok(&[
        "service", "create", "-d", "--name", "webdb", "--label", "tier=db", "--driver", "process", "sleep",
        "300",
    ]);
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "broken",
        "--restart-condition",
        "none",
        "--driver",
        "process",
        "/no/such/program-with-a-rather-long-name",
    ]);
    eventually(30, "web and webdb to run", || {
        let out = n.ok(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
        (lines(&out) == ["broken 0/1", "web 2/2", "webdb 1/1"]).then_some(())
    });

    // Templates: `table` adds the titles and aligns like docker's tabwriter; json is the row.
    let out = n.ok(&["service", "ls", "--format", "table {{.Name}}\\t{{.Mode}}"]);
    assert_eq!(lines(&out)[0], "NAME      MODE", "{out}");
    assert_eq!(lines(&out)[2], "web       replicated", "{out}");
    let out = n.ok(&["service", "ls", "--filter", "name=web", "--format", "{{json .}}"]);
    let rows: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("json row")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0]["Name"], "web");
    assert_eq!(rows[0]["Replicas"], "2/2");
    let out = n.ok(&["service", "inspect", "--format", "{{.spec.name}} {{.spec.labels.tier}}", "webdb"]);
    assert_eq!(out, "webdb db");
    let err = stderr_of(&n, &["service", "ls", "--format", "{{.Name"]);
    assert!(err.contains("template parsing error"), "{err}");

    // Filters: a key's values are alternatives, keys all apply, unknown keys are refused.
    assert_eq!(n.ok(&["service", "ls", "--filter", "label=tier=db", "--format", "{{.Name}}"]), "webdb");
    assert_eq!(
        n.ok(&["service", "ls", "--filter", "label=tier", "--filter", "name=webd", "--format", "{{.Name}}"]),
        "webdb"
    );
    let out = n.ok(&[
        "service",
        "ls",
        "--filter",
        "name=broken",
        "--filter",
        "name=webdb",
        "--format",
        "{{.Name}}",
    ]);
    assert_eq!(lines(&out), ["broken", "webdb"]);
    let err = stderr_of(&n, &["service", "ls", "--filter", "colour=red"]);
    assert!(err.contains("invalid filter \"colour\"") && err.contains("id, name, label, mode"), "{err}");

    let out = n.ok(&[
        "service",
        "ps",
        "web",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Name}} {{.Node}}",
    ]);
    assert_eq!(lines(&out), ["web.1 cli1", "web.2 cli1"]);
    assert_eq!(n.ok(&["service", "ps", "web", "--filter", "name=web.2", "--format", "{{.Name}}"]), "web.2");
    let err = stderr_of(&n, &["service", "ps", "web", "--filter", "desired-state=sleeping"]);
    assert!(err.contains("invalid desired-state filter"), "{err}");
    let out = n.ok(&["node", "ps", "--filter", "name=webdb", "--format", "{{.Name}}|{{.DesiredState}}"]);
    assert_eq!(out, "webdb.1|running");

    assert_eq!(
        n.ok(&["node", "ls", "--format", "{{.Hostname}} {{.Self}} {{.ManagerStatus}}"]),
        "cli1 true Leader"
    );
    assert_eq!(n.ok(&["node", "ls", "-q", "--filter", "role=manager"]), id);
    assert_eq!(n.ok(&["node", "ls", "-q", "--filter", "role=worker"]), "");
    assert_eq!(n.ok(&["node", "inspect", "--format", "{{.description.hostname}}", "cli1"]), "cli1");

    // ERROR: docker's cell, quoted and cut at 30 characters unless --no-trunc.
    let full = eventually(30, "the broken task's error", || {
        let e = n.ok(&["service", "ps", "broken", "--no-trunc", "--format", "{{.Error}}"]);
        (e.len() > 32).then_some(e)
    });
    assert!(full.starts_with('"') && full.contains("program-with-a-rather-long-name"), "{full}");
    let cut = n.ok(&["service", "ps", "broken", "--format", "{{.Error}}"]);
    assert_eq!(cut.trim_matches('"').chars().count(), 30, "{cut}");
    assert!(cut.ends_with("…\""), "{cut}");
    let table = n.ok(&["service", "ps", "broken"]);
    assert!(table.contains(&cut) && !table.contains(&full), "{table}");

    // Events name their objects and filter like docker's.
    let out = n.ok(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "service=web",
        "--filter",
        "type=task",
    ]);
    assert!(out.lines().count() >= 2, "{out}");
    assert!(out.lines().all(|l| l.contains(" task ") && l.contains("service=web,")), "{out}");
    assert!(out.contains("(name=web.1, service=web, node=cli1"), "{out}");
    let out = n.ok(&[
        "events",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "type=service",
        "--filter",
        "event=create",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(lines(&out), ["service create web", "service create webdb", "service create broken"]);
    let err = stderr_of(&n, &["events", "--filter", "type=container"]);
    assert!(err.contains("invalid type filter"), "{err}");

    // join-token: the command to run, with this manager's real address.
    let out = n.ok(&["cluster", "join-token", "worker"]);
    assert!(out.contains("shoal cluster join --token "), "{out}");
    assert!(out.trim_end().ends_with(&n.addr()), "{out}");
}
