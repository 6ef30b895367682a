//! Secrets and configs on real daemons: two managers (`cluster init` + join) and a worker, every
//! write sent to the manager that is not the leader. A secret reaches only the worker that runs
//! its task, as a read-only file in memory (process driver: a tmpfs at /run/secrets in the task's
//! own mount namespace; oci: a bind from the task's tmpfs into the container); it is never in
//! `inspect`, `ls`, events, the daemons' logs or a file under the worker's directory; a secret in
//! use cannot be removed; rotation is `--secret-rm/--secret-add` with a rolling update; the
//! tmpfs goes with the task; a secret acknowledged just before the leader is killed survives it.
//!
//! The managers' data directories are searched for secrets in `encryption_at_rest.rs` (their
//! stores are sealed).

use serde_json::Value;
use std::path::Path;

mod common;
use common::{
    eventually_or, files_containing, leader_and_follower, sha256_hex, two_managers_and_a_worker, Node,
};

/// Strings found nowhere else: the secret's data, before and after rotation.
const PASSWORD: &str = "Pw-shoal-secret-9xQ4vK2m";
const ROTATED: &str = "Pw-shoal-rotated-3Hs8Lw1c";

/// `shoal KIND create NAME -` with `data` on standard input; the id.
fn create_from_stdin(n: &Node, kind: &str, name: &str, data: &str) -> String {
    let out = n.cli_stdin(&[kind, "create", name, "-"], data.as_bytes());
    assert!(out.status.success(), "{kind} create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Logs of `service` once they contain `want`.
fn logs_containing(n: &Node, service: &str, want: &str, secs: u64) -> String {
    let logs = || String::from_utf8_lossy(&n.cli(&["service", "logs", "--raw", service]).stdout).to_string();
    common::poll(std::time::Duration::from_secs(secs), || Some(logs()).filter(|l| l.contains(want)))
        .unwrap_or_else(|| panic!("{want:?} in the logs of {service}; they say:\n{}", logs()))
}

/// Mounts of the tasks' secret tmpfs under `dir` (the worker's directory).
fn secret_mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.display().to_string();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir) && m.ends_with("/secrets"))
        .map(str::to_string)
        .collect()
}

const SCRIPT: &str = "sha256sum /run/secrets/db-pw; stat -c 'mode=%a uid=%u' /run/secrets/db-pw; \
                      cat /run/configs/app.conf; (echo x > /run/secrets/db-pw) 2>/dev/null || echo read-only; \
                      echo done; sleep 300";

#[test]
fn secrets_reach_only_their_tasks_in_memory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut m1, mut m2, w1) = two_managers_and_a_worker(tmp.path(), &[]);

    // Created through the follower: from standard input and from a file. The leader is killed
    // right after acknowledging the first; it comes back with the secret in its log.
    let (id, m1_led) = {
        let (leader, f) = leader_and_follower(&m1, &m2);
        (create_from_stdin(f, "secret", "db-pw", PASSWORD), std::ptr::eq(leader, &m1))
    };
    let old_leader = if m1_led { &mut m1 } else { &mut m2 };
    old_leader.kill9();
    old_leader.start("daemon");
    let (leader, f) = leader_and_follower(&m1, &m2);
    for n in [leader, f] {
        let shown = n.ok(&["secret", "inspect", "--format", "json", "db-pw"]);
        assert!(shown.contains(&id), "the secret survived the leader's crash: {shown}");
    }
    let conf = tmp.path().join("app.conf");
    std::fs::write(&conf, "listen=8080\n").expect("conf");
    f.ok(&["config", "create", "--label", "tier=web", "app.conf", &conf.display().to_string()]);
    let err =
        String::from_utf8_lossy(&f.cli(&["secret", "create", "db-pw", "/etc/hostname"]).stderr).to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = String::from_utf8_lossy(&f.cli(&["secret", "create", "bad/name", "/etc/hostname"]).stderr)
        .to_string();
    assert!(err.contains("invalid secret name"), "{err}");

    // Never shown: not by ls, not by inspect (a config's data is, as in Docker).
    let listed = leader.ok(&["secret", "ls", "--format", "json"]);
    assert!(listed.contains("db-pw") && !listed.contains(PASSWORD) && !listed.contains("data"), "{listed}");
    let shown: Value = serde_json::from_str(&f.ok(&["secret", "inspect", &id[..8]])).expect("json");
    assert_eq!(shown[0]["spec"]["name"], "db-pw", "{shown}");
    assert!(shown[0]["spec"].get("data").is_none(), "{shown}");
    let config: Value = serde_json::from_str(&f.ok(&["config", "inspect", "app.conf"])).expect("json");
    assert_eq!(config[0]["spec"]["data"], "bGlzdGVuPTgwODAK", "{config}");
    assert_eq!(config[0]["spec"]["labels"]["tier"], "web");
    assert!(f.ok(&["secret", "ls"]).contains("db-pw"));

    // A service naming a secret that does not exist is refused; the process driver takes
    // configs only under /run/configs.
    let out = f.cli(&[
        "service", "create", "-d", "--name", "x", "--driver", "process", "--secret", "nope", "sleep", "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret \"nope\" not found"), "{out:?}");
    let out = f.cli(&[
        "service", "create", "-d", "--name", "x", "--driver", "process", "--config", "app.conf", "sleep", "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/run/configs"), "{out:?}");

    // A process task on the worker finds both, read-only, with the modes asked for.
    f.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "app",
        "--driver",
        "process",
        "--constraint",
        "node.hostname==w1",
        "--secret",
        "source=db-pw,mode=0400,uid=0",
        "--config",
        "source=app.conf,target=/run/configs/app.conf",
        "sh",
        "-c",
        SCRIPT,
    ]);
    let logs = logs_containing(f, "app", "done", 60);
    assert!(logs.contains(&sha256_hex(PASSWORD)), "the task read the secret:\n{logs}");
    assert!(logs.contains("mode=400 uid=0"), "{logs}");
    assert!(logs.contains("listen=8080"), "{logs}");
    assert!(logs.contains("read-only"), "{logs}");
    assert_eq!(secret_mounts_under(&w1.dir).len(), 1, "one tmpfs for the one task");
    // The node's own /run/secrets stays an empty directory: the files exist only in the task's
    // mount namespace.
    assert!(!Path::new("/run/secrets/db-pw").exists());

    // In use: not removable.
    let out = f.cli(&["secret", "rm", "db-pw"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("in use by service(s) app"), "{err}");

    // Rotation: a new secret at the same path, by a rolling update; the old one can then go.
    create_from_stdin(f, "secret", "db-pw-2", ROTATED);
    f.ok(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        "db-pw",
        "--secret-add",
        "source=db-pw-2,target=db-pw",
        "app",
    ]);
    logs_containing(f, "app", &sha256_hex(ROTATED), 60);
    eventually_or(
        30,
        || f.cli(&["secret", "rm", "db-pw"]).status.success().then_some(()),
        || "db-pw removable once no task uses it".into(),
    );
    let listed = f.ok(&["secret", "ls", "--format", "{{.Name}}"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["db-pw-2"], "{listed}");

    // Nowhere on the worker's disk, in no daemon's log, in no event.
    for needle in [PASSWORD, ROTATED] {
        assert_eq!(
            files_containing(&w1.dir, needle.as_bytes()),
            Vec::<String>::new(),
            "{needle} on w1's disk"
        );
        for n in [&m1, &m2] {
            let log = std::fs::read_to_string(n.dir.join("daemon.log")).unwrap_or_default();
            assert!(!log.contains(needle), "{needle} in a manager's log");
        }
    }
    let events = f.ok(&["events", "--since", "10m", "--until", "0s", "--format", "json"]);
    assert!(events.contains("db-pw") && !events.contains(PASSWORD) && !events.contains(ROTATED), "{events}");
    let svc = f.ok(&["service", "inspect", "app"]);
    assert!(!svc.contains(PASSWORD) && !svc.contains(ROTATED), "{svc}");

    // The tmpfs goes with the tasks.
    f.ok(&["service", "rm", "app"]);
    eventually_or(
        60,
        || secret_mounts_under(&w1.dir).is_empty().then_some(()),
        || format!("tmpfs left: {:?}", secret_mounts_under(&w1.dir)),
    );
    f.ok(&["secret", "rm", "db-pw-2"]);
    f.ok(&["config", "rm", "app.conf"]);
}

#[test]
fn oci_tasks_get_secrets_as_read_only_binds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(tmp.path(), "m");
    m.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    let tar = common::busybox_rootfs(&tmp.path().join("img"));
    common::import_image(&[&m], &tar, "secrets-busybox:1");
    create_from_stdin(&m, "secret", "token", PASSWORD);
    create_from_stdin(&m, "config", "nginx.conf", "worker_processes 2;\n");
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "c",
        "--driver",
        "oci",
        "--secret",
        "source=token,target=/etc/app/token,uid=1000,gid=1000,mode=0440",
        "--config",
        "source=nginx.conf,target=/etc/nginx.conf",
        "secrets-busybox:1",
        "sh",
        "-c",
        "sha256sum /etc/app/token; stat -c 'mode=%a uid=%u gid=%g' /etc/app/token; cat /etc/nginx.conf; \
         (echo x > /etc/app/token) 2>/dev/null || echo read-only; echo done; sleep 300",
    ]);
    let logs = logs_containing(&m, "c", "done", 60);
    assert!(logs.contains(&sha256_hex(PASSWORD)), "{logs}");
    assert!(logs.contains("mode=440 uid=1000 gid=1000"), "{logs}");
    assert!(logs.contains("worker_processes 2;"), "{logs}");
    assert!(logs.contains("read-only"), "{logs}");
    // The bundle's config.json names the tmpfs file, never the data.
    let data = m.dir.join("data");
    let bundles: Vec<String> = files_containing(&data, PASSWORD.as_bytes())
        .into_iter()
        .filter(|f| !f.ends_with("raft.redb") && !f.contains("snapshot"))
        .collect();
    assert_eq!(bundles, Vec::<String>::new(), "the data only in the managers' store");
    m.ok(&["service", "rm", "c"]);
    eventually_or(
        60,
        || secret_mounts_under(&m.dir).is_empty().then_some(()),
        || format!("tmpfs left: {:?}", secret_mounts_under(&m.dir)),
    );
}
