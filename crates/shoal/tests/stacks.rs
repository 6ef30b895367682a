//! `shoal stack` end to end: two managers on two simulated hosts (each daemon in its own network
//! namespace, as in `networking.rs`, so the stack's overlay network is real VXLAN between them),
//! every stack command sent to the follower (forwarded to the leader).
//!
//! A compose file with two process-driver services on an overlay network, where `web` depends on
//! `db` being healthy: web's tasks wait, pending and explained, until db's health check passes;
//! then a re-deploy with a changed variable updates web only; `stack ls/services/ps` report the
//! stack; a deploy without a service keeps it unless `--prune`; `stack rm` removes services and
//! networks. Compose keys Shoal cannot honour are refused before anything is sent.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::sim::Underlay;
use common::{eventually, eventually_or, Node, BIN};

/// The stack: db (pinned to h1) has a health check that passes once `marker` exists; web (two
/// replicas) depends on db being healthy and carries `${VERSION:-1}` in its environment.
fn compose(marker: &Path) -> String {
    format!(
        r#"
x-process: &process
  x-shoal-driver: process
services:
  db:
    <<: *process
    command: ["sh", "-c", "exec sleep 600"]
    healthcheck:
      test: ["CMD-SHELL", "test -f {marker}"]
      interval: 500ms
      start_period: 5m
    networks: [back]
    deploy:
      placement:
        constraints: ["node.hostname==h1"]
  web:
    <<: *process
    command: sh -c 'exec sleep 600'
    environment:
      VERSION: ${{VERSION:-1}}
    depends_on:
      db:
        condition: service_healthy
    networks:
      back:
        aliases: [www]
    deploy:
      replicas: 2
      labels: [tier=web]
      update_config: {{parallelism: 2, monitor: 1s}}
networks:
  back: {{}}
"#,
        marker = marker.display()
    )
}

/// `shoal ARGS` against `n` with extra environment variables (for interpolation).
fn cli_env(n: &Node, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-H")
        .arg(format!("unix://{}", n.dir.join("shoal.sock").display()))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("cli")
}

fn ok_env(n: &Node, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = cli_env(n, env, args);
    assert!(out.status.success(), "shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tasks_of(n: &Node, stack: &str) -> Vec<Value> {
    n.json(&["stack", "ps", stack, "--format", "json"]).as_array().cloned().unwrap_or_default()
}

fn service_id(n: &Node, name: &str) -> String {
    n.json(&["service", "inspect", name])["id"].as_str().expect("id").to_string()
}

fn timestamp(v: &Value) -> shoal_types::Timestamp {
    serde_json::from_value(v.clone()).expect("timestamp")
}

/// Two managers on two hosts, ready; the second is a follower.
fn two_managers(ul: &Underlay, root: &Path) -> Vec<Node> {
    let hosts = common::sim::start_hosts(ul, root, 2);
    hosts[0].ok(&["cluster", "init"]);
    let token = hosts[0].ok(&["cluster", "join-token", "manager", "-q"]);
    hosts[1].ok(&["cluster", "join", "--token", &token, &hosts[0].addr()]);
    for n in &hosts {
        eventually(40, "two voters, two ready nodes", || {
            let voters = n.raft()?["voters"].as_object()?.len();
            let nodes = n.json(&["node", "ls", "--format", "json"]);
            let ready = nodes.as_array()?.iter().filter(|x| x["status"]["state"] == "ready").count();
            (voters == 2 && ready == 2).then_some(())
        });
    }
    assert_eq!(hosts[1].raft().expect("raft")["state"], "follower");
    hosts
}

#[test]
fn a_compose_stack_with_a_healthy_dependency_deploys_updates_and_goes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("stk", 2);
    let hosts = two_managers(&ul, tmp.path());
    let f = &hosts[1]; // the follower takes every command
    let marker = tmp.path().join("db-ready");
    let file = tmp.path().join("stack.yml");
    std::fs::write(&file, compose(&marker)).expect("write");
    let file_arg = file.to_str().expect("path");

    // Refused before anything is sent: a build-only key, named.
    let bad = tmp.path().join("bad.yml");
    std::fs::write(&bad, "services:\n  web:\n    build: .\n    image: web\n").expect("write");
    let out = f.cli(&["stack", "deploy", "-c", bad.to_str().expect("path"), "app"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services.web.build: not supported by Shoal: a build-only key"), "{err}");

    let out = ok_env(f, &[], &["stack", "deploy", "-c", file_arg, "app"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["Creating network app_back", "Creating service app_db", "Creating service app_web"],
        "networks first, then services in dependency order"
    );

    // db runs (health starting: the marker is missing); web's tasks wait for it, pending with
    // the reason, and none is placed.
    let waiting = eventually(60, "db running and web waiting for it", || {
        let tasks = tasks_of(f, "app");
        let db_id = service_id(f, "app_db");
        let web_id = service_id(f, "app_web");
        let db_running = tasks.iter().any(|t| {
            t["service_id"] == db_id.as_str()
                && t["status"]["state"] == "running"
                && t["status"]["health"] == "starting"
        });
        let web: Vec<&Value> = tasks.iter().filter(|t| t["service_id"] == web_id.as_str()).collect();
        let all_wait = web.len() == 2
            && web.iter().all(|t| {
                t["status"]["state"] == "pending"
                    && t["node_id"].is_null()
                    && t["status"]["err"] == "waiting for app_db to be healthy"
            });
        (db_running && all_wait).then_some(web.len())
    });
    assert_eq!(waiting, 2);
    // ... and stays so while db is not healthy (sampled for a few failing health checks);
    // `stack ps` says why.
    let still_waiting = |f: &Node| {
        tasks_of(f, "app").iter().filter(|t| t["service_id"] != service_id(f, "app_db").as_str()).all(|t| {
            t["status"]["state"] == "pending" && t["status"]["err"] == "waiting for app_db to be healthy"
        })
    };
    common::poll(std::time::Duration::from_millis(1500), || {
        assert!(still_waiting(f), "web started before db was healthy: {:?}", tasks_of(f, "app"));
        None::<()>
    });
    // docker's ERROR cell: quoted, and whole with --no-trunc.
    let table = f.ok(&["stack", "ps", "--no-trunc", "app"]);
    assert!(table.contains("\"waiting for app_db to be healthy\""), "{table}");

    // The health check passes: db turns healthy, then web's tasks start.
    let ready_at = shoal_types::Timestamp::from_system_time(std::time::SystemTime::now());
    std::fs::write(&marker, "ok").expect("marker");
    let web_id = service_id(f, "app_web");
    let db_id = service_id(f, "app_db");
    let tasks = eventually_or(
        60,
        || {
            let tasks = tasks_of(f, "app");
            let healthy =
                tasks.iter().any(|t| t["service_id"] == db_id.as_str() && t["status"]["health"] == "healthy");
            let running = tasks
                .iter()
                .filter(|t| t["service_id"] == web_id.as_str() && t["status"]["state"] == "running")
                .count();
            (healthy && running == 2).then_some(tasks)
        },
        || format!("web did not start after db turned healthy:\n{}", f.ok(&["stack", "ps", "app"])),
    );
    for t in tasks.iter().filter(|t| t["service_id"] == web_id.as_str()) {
        assert!(timestamp(&t["status"]["timestamp"]) >= ready_at, "web ran before db was healthy: {t}");
        assert_eq!(t["spec"]["env"]["VERSION"], "1");
        // On the stack's overlay network, with an address.
        assert!(t["networks"][0]["addrs"][0].as_str().is_some_and(|a| a.contains('/')), "{t}");
    }

    // What the stack commands say.
    let stacks = f.json(&["stack", "ls", "--format", "json"]);
    assert_eq!(stacks, serde_json::json!([{"name": "app", "services": 2, "networks": 1}]));
    assert!(f
        .ok(&["stack", "ls"])
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["app", "2", "1"]));
    let services = f.json(&["stack", "services", "app", "--format", "json"]);
    let names: Vec<&str> =
        services.as_array().expect("list").iter().filter_map(|s| s["spec"]["name"].as_str()).collect();
    assert_eq!(names, ["app_db", "app_web"]);
    for s in services.as_array().expect("list") {
        assert_eq!(s["spec"]["labels"]["com.docker.stack.namespace"], "app");
    }
    let web = &services[1]["spec"];
    assert_eq!(web["labels"]["tier"], "web");
    assert_eq!(web["depends_on"], serde_json::json!([{"service": "app_db", "condition": "healthy"}]));
    assert_eq!(web["networks"][0]["aliases"], serde_json::json!(["www"]));
    let table = f.ok(&["stack", "services", "app"]);
    assert!(
        table.lines().any(|l| l.contains("app_web") && l.contains("replicated") && l.contains("2/2")),
        "{table}"
    );
    let nets = f.json(&["network", "inspect", "app_back"]);
    assert_eq!(nets[0]["spec"]["labels"]["com.docker.stack.namespace"], "app");
    assert_eq!(f.ok(&["stack", "ps", "app", "-q"]).lines().count(), 3);
    let pretty = f.ok(&["service", "inspect", "--pretty", "app_web"]);
    assert!(pretty.contains("Depends On:\tapp_db (healthy)"), "{pretty}");

    // Re-deploy with VERSION=2: web is updated (a rolling update), db and the network are not.
    let before = f.json(&["service", "inspect", "app_web"])["spec_version"].clone();
    let out = ok_env(f, &[("VERSION", "2")], &["stack", "deploy", "-c", file_arg, "app"]);
    assert!(out.contains("Network app_back is unchanged"), "{out}");
    assert!(out.contains("Service app_db is unchanged"), "{out}");
    assert!(out.contains(&format!("Updating service app_web (id: {web_id})")), "{out}");
    eventually_or(
        90,
        || {
            let svc = f.json(&["service", "inspect", "app_web"]);
            let done = svc["update_status"]["state"] == "completed";
            let running: Vec<Value> = tasks_of(f, "app")
                .into_iter()
                .filter(|t| {
                    t["service_id"] == web_id.as_str()
                        && t["status"]["state"] == "running"
                        && t["desired_state"] == "running"
                })
                .collect();
            let updated = running.len() == 2 && running.iter().all(|t| t["spec"]["env"]["VERSION"] == "2");
            (done && updated && svc["spec_version"] != before).then_some(())
        },
        || format!("the update did not complete:\n{}", f.ok(&["stack", "ps", "app"])),
    );
    // The same files again: nothing changes.
    let out = ok_env(f, &[("VERSION", "2")], &["stack", "deploy", "-c", file_arg, "app", "--format", "json"]);
    let report: Value = serde_json::from_str(&out).expect("json");
    assert!(
        report["changes"].as_array().expect("changes").iter().all(|c| c["change"] == "unchanged"),
        "{report}"
    );

    // A file without web: kept unless --prune.
    let only_db = tmp.path().join("db-only.yml");
    let text = compose(&marker);
    let cut = text.find("  web:").expect("web");
    let net = text.find("networks:\n  back").expect("networks");
    std::fs::write(&only_db, format!("{}{}", &text[..cut], &text[net..])).expect("write");
    let only_db_arg = only_db.to_str().expect("path");
    ok_env(f, &[], &["stack", "deploy", "-c", only_db_arg, "app"]);
    assert_eq!(f.json(&["stack", "services", "app", "--format", "json"]).as_array().map(Vec::len), Some(2));
    let out = ok_env(f, &[], &["stack", "deploy", "--prune", "-c", only_db_arg, "app"]);
    assert!(out.contains("Removing service app_web"), "{out}");
    assert_eq!(f.json(&["stack", "services", "app", "--format", "json"]).as_array().map(Vec::len), Some(1));

    // stack rm: services, then the network once their tasks stopped.
    let out = f.ok(&["stack", "rm", "app"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["Removing service app_db", "Removing network app_back"]);
    assert_eq!(f.json(&["stack", "ls", "--format", "json"]), serde_json::json!([]));
    assert!(f.json(&["service", "ls", "--format", "json"]).as_array().is_some_and(Vec::is_empty));
    let nets = f.json(&["network", "ls", "--format", "json"]);
    assert!(!nets.as_array().expect("list").iter().any(|n| n["spec"]["name"] == "app_back"), "{nets}");
    let out = f.cli(&["stack", "ps", "app"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing found in stack app"));
    for h in &hosts {
        let dir = h.dir.join("data/agent/tasks");
        eventually(30, "the agents to clean up", || {
            std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()).then_some(())
        });
    }
}

/// `--depends-on` on `service create`: an unknown service and a healthy condition on a service
/// without a health check are refused by the managers; a satisfied dependency starts at once.
#[test]
fn service_create_depends_on_is_checked_by_the_managers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "n1");
    n.start("dev");
    eventually(20, "the dev node to lead", || n.raft().filter(|r| r["state"] == "leader").map(|_| ()));
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec!["service", "create", "-d", "--name", name, "--driver", "process"];
        args.extend_from_slice(extra);
        args.extend(["sleep", "300"]);
        n.cli(&args)
    };
    let out = create("web", &["--depends-on", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("depends_on: service nope not found"));
    assert!(create("db", &[]).status.success());
    let out = create("web", &["--depends-on", "db:healthy"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("depends_on: db has no health check"), "{out:?}");
    assert!(create("web", &["--depends-on", "db"]).status.success());
    eventually(30, "web running", || common::running_tasks(&n, "web").filter(|t| t.len() == 1).map(|_| ()));
    // A cycle is refused.
    let out = n.cli(&["service", "update", "-d", "--depends-on-add", "web", "db"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("depends_on: a dependency cycle: db → web → db"),
        "{out:?}"
    );
    common::remove_services_and_wait(&n, &["web", "db"], &[&n]);
}
