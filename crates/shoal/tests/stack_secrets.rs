//! Secrets and configs of a compose stack (`shoal stack deploy`) on a real daemon (`cluster init`,
//! in a simulated host of its own, as `stacks.rs`: the stack's overlay network is real): the
//! client reads the files; the deploy creates `STACK_KEY` (or the file's `name:`) with the stack's
//! label before the services; a process task finds them (secret at `/run/secrets/KEY`, config at
//! its target); a re-deploy leaves them alone, refuses changed data (they are immutable) and
//! rotates through a new `name:`; an external secret must exist and is never removed; `stack rm`
//! removes the stack's own after its services. The data is never printed (not by `stack config`,
//! `secret inspect`, the deploy's output, nor the daemon's log).

use serde_json::Value;

mod common;
use common::sim::Underlay;
use common::{eventually_or, Node};

/// Strings found nowhere else: the secret's data, before and after rotation.
const PASSWORD: &str = "Pw-stack-secret-7Rk2qLx9";
const ROTATED: &str = "Pw-stack-rotated-4Nb8Tz1w";
const SHARED: &str = "Pw-stack-shared-2Vd6Hs3e";

/// The compose file: `db_pw` from a file (named `name` in the cluster when given), the external
/// `shared`, and a config at a path the process driver can place it at.
fn compose(name: Option<&str>) -> String {
    let name = name.map(|n| format!("\n    name: {n}")).unwrap_or_default();
    format!(
        r#"
services:
  app:
    x-shoal-driver: process
    command: ["sh", "-c", "sha256sum /run/secrets/db_pw /run/secrets/shared; stat -c 'mode=%a' /run/secrets/shared; cat /run/configs/app.conf; echo done; exec sleep 300"]
    secrets:
      - db_pw
      - source: shared
        mode: 0400
    configs:
      - source: app
        target: /run/configs/app.conf
secrets:
  db_pw:
    file: ./db_pw.txt{name}
  shared:
    external: true
configs:
  app:
    file: ./conf/app.conf
    labels: [tier=app]
"#
    )
}

/// `shoal secret create NAME -` with `data` on standard input.
fn create_from_stdin(n: &Node, name: &str, data: &str) {
    let out = n.cli_stdin(&["secret", "create", name, "-"], data.as_bytes());
    assert!(out.status.success(), "secret create: {}", String::from_utf8_lossy(&out.stderr));
}

/// Logs of `service` once they contain every one of `want`.
fn logs_containing(n: &Node, service: &str, want: &[&str]) -> String {
    let logs = || String::from_utf8_lossy(&n.cli(&["service", "logs", "--raw", service]).stdout).to_string();
    eventually_or(
        60,
        || Some(logs()).filter(|l| want.iter().all(|w| l.contains(w))),
        || format!("{want:?} in the logs of {service}; they say:\n{}", logs()),
    )
}

fn names(n: &Node, kind: &str) -> Vec<String> {
    let list = n.json(&[kind, "ls", "--format", "json"]);
    let mut v: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["spec"]["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

#[test]
fn a_stacks_secrets_and_configs_are_created_used_kept_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("stsec", 1);
    let mut n = ul.node(tmp.path(), "h1", 1);
    n.start("daemon");
    n.ok(&["cluster", "init"]);
    eventually_or(
        30,
        || {
            let nodes = n.json(&["node", "ls", "--format", "json"]);
            (nodes.as_array()?.first()?["status"]["state"] == "ready").then_some(())
        },
        || "the node ready".into(),
    );
    let dir = tmp.path().join("project");
    std::fs::create_dir_all(dir.join("conf")).expect("dirs");
    std::fs::write(dir.join("db_pw.txt"), PASSWORD).expect("secret file");
    std::fs::write(dir.join("conf/app.conf"), "listen=8080\n").expect("config file");
    let file = dir.join("stack.yml");
    std::fs::write(&file, compose(None)).expect("compose file");
    let file_arg = file.to_str().expect("path");

    // `stack config` shows the stack without the secret's data (the config's is shown).
    let config = n.ok(&["stack", "config", "-c", file_arg]);
    assert!(!config.contains(PASSWORD) && !config.contains("UHctc3RhY2st"), "{config}");
    let shown: Value = serde_json::from_str(&config).expect("json");
    assert_eq!(shown["secrets"][0]["key"], "db_pw");
    assert!(shown["secrets"][0].get("data").is_none(), "{shown}");
    assert_eq!(shown["configs"][0]["data"], "bGlzdGVuPTgwODAK");

    // An external secret must exist: refused before anything changes.
    let out = n.cli(&["stack", "deploy", "-c", file_arg, "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("secret shared not found"), "{err}");
    assert!(names(&n, "secret").is_empty() && names(&n, "config").is_empty());
    assert!(n.ok(&["service", "ls", "-q"]).is_empty());
    create_from_stdin(&n, "shared", SHARED);

    // Networks, then secrets and configs, then the services.
    let out = n.ok(&["stack", "deploy", "-c", file_arg, "app"]);
    assert_eq!(
        lines(&out),
        [
            "Creating network app_default",
            "Creating secret app_db_pw",
            "Creating config app_app",
            "Creating service app_app"
        ],
        "{out}"
    );
    assert_eq!(names(&n, "secret"), ["app_db_pw", "shared"]);
    let s = n.json(&["secret", "inspect", "app_db_pw"]);
    assert_eq!(s[0]["spec"]["labels"]["com.docker.stack.namespace"], "app", "{s}");
    assert!(s[0]["spec"].get("data").is_none(), "{s}");
    let c = n.json(&["config", "inspect", "app_app"]);
    assert_eq!(c[0]["spec"]["labels"]["tier"], "app");
    assert_eq!(c[0]["spec"]["data"], "bGlzdGVuPTgwODAK");
    let svc = n.json(&["service", "inspect", "app_app"]);
    let refs = &svc["spec"]["task_template"]["secrets"];
    assert_eq!((refs[0]["source"].as_str(), refs[0]["target"].as_str()), (Some("app_db_pw"), Some("db_pw")));
    assert_eq!(refs[1]["source"], "shared");

    // The task reads them: the stack's secret at the file's key, the external one with its mode.
    let logs = logs_containing(
        &n,
        "app_app",
        &[&common::sha256_hex(PASSWORD), &common::sha256_hex(SHARED), "listen=8080", "done"],
    );
    assert!(logs.contains("mode=400"), "{logs}");

    // Deployed again: nothing changes.
    let out = n.ok(&["stack", "deploy", "-c", file_arg, "app"]);
    assert!(
        out.contains("Secret app_db_pw is unchanged")
            && out.contains("Config app_app is unchanged")
            && out.contains("Service app_app is unchanged"),
        "{out}"
    );
    // Changed data is refused (secrets are immutable), before anything changes.
    std::fs::write(dir.join("db_pw.txt"), ROTATED).expect("secret file");
    let out = n.cli(&["stack", "deploy", "-c", file_arg, "app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("secret app_db_pw cannot change (its data)"), "{err}");
    assert!(!err.contains(ROTATED) && !err.contains(PASSWORD), "{err}");
    // Rotation: the same key under a new name; the service is updated to it.
    std::fs::write(&file, compose(Some("db_pw_v2"))).expect("compose file");
    let out = n.ok(&["stack", "deploy", "-c", file_arg, "app"]);
    assert!(out.contains("Creating secret db_pw_v2") && out.contains("Updating service app_app"), "{out}");
    logs_containing(&n, "app_app", &[&common::sha256_hex(ROTATED)]);
    assert_eq!(names(&n, "secret"), ["app_db_pw", "db_pw_v2", "shared"]);

    // `stack rm`: the services, then the stack's secrets and configs (the old one too: it carries
    // the stack's label), then its network; the external secret stays.
    let out = n.ok(&["stack", "rm", "app"]);
    assert_eq!(
        lines(&out),
        [
            "Removing service app_app",
            "Removing secret app_db_pw",
            "Removing secret db_pw_v2",
            "Removing config app_app",
            "Removing network app_default"
        ],
        "{out}"
    );
    assert_eq!(names(&n, "secret"), ["shared"]);
    assert!(names(&n, "config").is_empty());

    // The data never reached the daemon's log.
    let log = std::fs::read_to_string(n.dir.join("daemon.log")).unwrap_or_default();
    for s in [PASSWORD, ROTATED, SHARED] {
        assert!(!log.contains(s), "the daemon's log holds a secret");
    }
}
