//! Docker's container options of `service create` on real runtimes: one `shoal dev` node with
//! dockerd and runc. Each service prints what its task sees (root filesystem writable or not,
//! effective capabilities, file limits, groups, resolv.conf, pid 1) and the test reads it back
//! through `shoal service logs` (for the docker task through a terminal, whose logs are one raw
//! stream); docker's container name and labels through `docker inspect`. Then what is refused:
//! an option the driver cannot honour, a log driver Shoal cannot be, a docker flag Shoal lacks.

use serde_json::Value;
use std::process::Command;

mod common;
use common::{eventually_or, DockerImage, Node};

/// What every task prints, one fact per line, then sleeps.
const PROBE: &str = "busybox touch /probe 2>/dev/null && echo ROOT=rw || echo ROOT=ro; \
    echo CAPS=$(busybox grep CapEff /proc/self/status | busybox cut -f2); \
    echo NOFILE=$(ulimit -n):$(ulimit -Hn); echo GROUPS=$(busybox id -G); \
    echo PID1=$(busybox cat /proc/1/cmdline); \
    busybox sed 's/^/RESOLV /' /etc/resolv.conf; echo PROBED; exec busybox sleep 1000";

/// The service's log once its task printed everything.
fn probed(m: &Node, service: &str) -> String {
    eventually_or(
        90,
        || {
            let out = m.cli(&["service", "logs", service]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // The line itself: the script's text (with "PROBED" in it) is in PID1's command line.
            text.lines().any(|l| l.trim_end().ends_with("| PROBED")).then_some(text)
        },
        || {
            let ps = String::from_utf8_lossy(&m.cli(&["service", "ps", "--no-trunc", service]).stdout)
                .into_owned();
            format!("{service} printed nothing\n{ps}\n{}", common::daemon_log(m))
        },
    )
}

/// The value of `KEY=` in a probe's output.
fn fact<'a>(log: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    log.lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no {key} in:\n{log}"))
}

/// Whether capability `bit` is in the hex mask `caps`.
fn has_cap(caps: &str, bit: u32) -> bool {
    u64::from_str_radix(caps, 16).unwrap_or_else(|_| panic!("CapEff {caps:?}")) & (1 << bit) != 0
}

const CAP_CHOWN: u32 = 0;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_TIME: u32 = 25;

/// The options every container driver is given.
const OPTIONS: &[&str] = &[
    "--read-only",
    "--cap-drop",
    "NET_RAW",
    "--cap-add",
    "sys_time",
    "--ulimit",
    "nofile=1024:2048",
    "--group",
    "50",
    "--group",
    "60",
    "--dns-search",
    "example.org",
    "--dns-option",
    "ndots:3",
    "--init",
    "--container-label",
    "team=fish",
    "--log-driver",
    "json-file",
    "--log-opt",
    "max-size=1m",
];

fn create(m: &Node, name: &str, driver: &str, image: &str, extra: &[&str]) {
    let mut args = vec!["service", "create", "-d", "--name", name, "--driver", driver];
    args.extend_from_slice(OPTIONS);
    args.extend_from_slice(extra);
    args.extend_from_slice(&[image, "sh", "-c", PROBE]);
    m.ok(&args);
}

/// What a container driver's task must see with [`OPTIONS`].
fn assert_container_probe(log: &str, what: &str) {
    assert_eq!(fact(log, "ROOT"), "ro", "{what}: read-only root\n{log}");
    let caps = fact(log, "CAPS");
    assert!(!has_cap(caps, CAP_NET_RAW), "{what}: NET_RAW dropped ({caps})");
    assert!(has_cap(caps, CAP_SYS_TIME), "{what}: SYS_TIME added ({caps})");
    assert!(has_cap(caps, CAP_CHOWN), "{what}: the default set stays ({caps})");
    assert_eq!(fact(log, "NOFILE"), "1024:2048", "{what}: ulimit");
    assert_eq!(fact(log, "GROUPS"), "0 50 60", "{what}: groups");
    assert!(fact(log, "PID1").contains("docker-init"), "{what}: an init is pid 1\n{log}");
    assert!(log.contains("RESOLV search example.org"), "{what}: dns search\n{log}");
    assert!(log.contains("RESOLV options ndots:3"), "{what}: dns option\n{log}");
}

fn task_id(m: &Node, service: &str) -> String {
    let tasks: Value = m.json(&["service", "ps", service, "--format", "json"]);
    tasks.as_array().and_then(|a| a.first()).and_then(|t| t["id"].as_str()).expect("task id").to_string()
}

#[test]
fn container_options_reach_the_task_on_every_driver() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Before the node: its containers and itself go after the daemon.
    let docker_image = DockerImage::import(&tmp.path().join("img"), "shoal-container-options");
    let mut m = Node::new(tmp.path(), "node");
    m.start("dev");
    let tar = common::busybox_rootfs(&tmp.path().join("oci-img"));
    common::import_image(&[&m], &tar, "opts-busybox:1");

    // Docker, through a terminal, with its own DNS server.
    create(&m, "dopts", "docker", &docker_image.0, &["-t", "--dns", "192.0.2.53"]);
    // runc.
    create(&m, "oopts", "oci", "opts-busybox:1", &["--dns", "192.0.2.54"]);
    // A plain process: limits, groups and resolver settings through its shim.
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "popts",
        "--driver",
        "process",
        "--ulimit",
        "nofile=512:1024",
        "--group",
        "50",
        "--dns-search",
        "example.net",
        "--log-driver",
        "local",
        "--log-opt",
        "max-file=2",
        "sh",
        "-c",
        "echo NOFILE=$(ulimit -n):$(ulimit -Hn); echo GROUPS=$(id -G); \
         sed 's/^/RESOLV /' /etc/resolv.conf; echo PROBED; exec sleep 1000",
    ]);

    let log = probed(&m, "dopts");
    assert_container_probe(&log, "docker");
    assert!(log.contains("RESOLV nameserver 192.0.2.53"), "docker: dns server\n{log}");
    // Swarm's container name and labels, and the options as Docker has them.
    let id = task_id(&m, "dopts");
    let inspect = Command::new("sh")
        .arg("-c")
        .arg(format!("docker inspect $(docker ps -aq --filter label=com.docker.swarm.task.id={id})"))
        .output()
        .expect("docker inspect");
    let info: Value = serde_json::from_slice(&inspect.stdout).expect("docker inspect json");
    let c = &info[0];
    assert_eq!(c["Name"], format!("/dopts.1.{id}"));
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["com.docker.swarm.service.name"], "dopts");
    assert_eq!(labels["com.docker.swarm.task.name"], format!("dopts.1.{id}"));
    assert_eq!(labels["com.docker.swarm.node.id"], m.node_id().as_str());
    assert_eq!(labels["team"], "fish");
    assert_eq!(labels["shoal.task.id"], id.as_str(), "Shoal's own label, which finds it again");
    assert_eq!(c["Config"]["Tty"], true);
    assert_eq!(c["HostConfig"]["LogConfig"]["Config"]["max-size"], "1m");
    // The service's spec carries them.
    let spec: Value = m.json(&["service", "inspect", "dopts", "--format", "json"]);
    let spec = if spec.is_array() { spec[0].clone() } else { spec };
    let t = &spec["spec"]["task_template"];
    assert_eq!(
        (t["read_only"].clone(), t["tty"].clone(), t["init"].clone()),
        (true.into(), true.into(), true.into())
    );

    let log = probed(&m, "oopts");
    assert_container_probe(&log, "oci");
    assert!(log.contains("RESOLV nameserver 192.0.2.54"), "oci: dns server\n{log}");
    let oid = task_id(&m, "oopts");
    let config = walk(&m.dir.join("data"), "config.json")
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&oid))
        .expect("the oci task's config.json");
    let config: Value = serde_json::from_slice(&std::fs::read(config).expect("read")).expect("json");
    assert_eq!(config["annotations"]["team"], "fish", "container labels are OCI annotations");

    let log = probed(&m, "popts");
    assert_eq!(fact(&log, "NOFILE"), "512:1024", "process: ulimit\n{log}");
    assert_eq!(fact(&log, "GROUPS"), "0 50", "process: groups\n{log}");
    assert!(log.contains("RESOLV search example.net"), "process: dns search\n{log}");

    // Refused, and says why.
    let refused = |args: &[&str], want: &str| {
        let out = m.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: want {want:?}, got {err}");
        assert!(!err.contains("tip:"), "no clap tip suggesting another flag: {err}");
    };
    refused(
        &["service", "create", "--name", "x1", "--driver", "process", "--read-only", "sleep", "9"],
        "the process driver cannot mount the root filesystem read-only",
    );
    refused(
        &["service", "create", "--name", "x2", "--driver", "oci", "-t", "opts-busybox:1"],
        "the oci driver cannot give the task a terminal",
    );
    refused(
        &["service", "create", "--name", "x3", "--log-driver", "syslog", "opts-busybox:1"],
        "not supported: Shoal keeps task logs itself; see shoal service logs",
    );
    refused(
        &["service", "create", "--name", "x4", "--stop-signal", "SIGINT", "opts-busybox:1"],
        "unsupported flag --stop-signal: ",
    );
    refused(&["service", "update", "--sysctl-add", "a=1", "dopts"], "unsupported flag --sysctl-add: ");
    let out = m.cli(&["service", "ls", "--format", "json"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"x1\""), "nothing refused was created");

    common::remove_services_and_wait(&m, &["dopts", "oopts", "popts"], &[&m]);
    assert!(docker_image.containers("").is_empty(), "no container left");
}

/// Every file named `name` under `dir`.
fn walk(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && !p.ends_with("rootfs") && !p.ends_with("layers") => stack.push(p),
                Ok(t) if t.is_file() && p.file_name().is_some_and(|n| n == name) => out.push(p),
                _ => {}
            }
        }
    }
    out
}
