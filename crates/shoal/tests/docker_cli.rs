//! The real docker CLI (`DOCKER_HOST=unix://…/docker.sock`) against real `shoal` daemons: version
//! negotiation, `info`, nodes, services with the CLI's attached progress, tasks, logs, overlay
//! networks, secrets and configs (and services using them), stacks, and the error paths (unknown
//! service, a version race, a worker's socket, what Shoal cannot map, what it does not implement).
//!
//! Services run on the docker driver of the machine's dockerd, from a busybox image each test
//! imports (no registry is reachable). Without the docker CLI, dockerd or a static busybox the
//! tests are skipped, unless `SHOAL_REQUIRE_RUNTIMES=1`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

mod common;
use common::{eventually, join_worker, Node};

fn required() -> bool {
    std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1")
}

/// Whether this machine has what the test needs (the docker CLI; with `engine`, a running
/// dockerd and a static busybox too).
fn available(test: &str, engine: bool) -> bool {
    let cli = Command::new("docker").arg("--version").output().is_ok_and(|o| o.status.success());
    let daemon = || Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    let why = if !cli {
        "no docker CLI"
    } else if engine && !daemon() {
        "no docker engine"
    } else if engine && !Path::new("/bin/busybox").exists() {
        "no static busybox at /bin/busybox"
    } else {
        return true;
    };
    assert!(!required(), "SHOAL_REQUIRE_RUNTIMES=1 but {why}");
    eprintln!("skipping {test}: {why}");
    false
}

/// The docker CLI pointed at a Shoal socket, with a configuration directory of its own.
struct Docker {
    sock: PathBuf,
    config: PathBuf,
    /// The daemon's log, shown when a command fails.
    log: PathBuf,
}

impl Docker {
    /// The CLI for `n`'s socket at `sock`.
    fn new(n: &Node, sock: PathBuf, root: &Path, mode: &str) -> Docker {
        let config = root.join("docker-config");
        std::fs::create_dir_all(&config).expect("docker config dir");
        Docker { sock, config, log: n.dir.join(format!("{mode}.log")) }
    }

    /// The last lines of the daemon's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("docker")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Stdout of a command that must succeed, `input` on its standard input.
    fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let mut child = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("docker");
        assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}{}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "docker {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// One HTTP/1.0 request on a unix socket: status, headers, body.
fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String, String) {
    // Status 0: no daemon answered (none listening, or the connection dropped).
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return (0, String::new(), String::new());
    };
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut resp = String::new();
    if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut resp).is_err() {
        return (0, String::new(), String::new());
    }
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

/// A busybox image in the machine's dockerd; it and its containers go when the test ends (also
/// when it fails: declared before the nodes, it drops after them).
struct Image(String);

impl Image {
    fn import(root: &Path, test: &str) -> Image {
        let name = format!("shoal-dockercli-{test}-{}:1", std::process::id());
        common::docker_import(&root.join("image"), &name);
        Image(name)
    }

    /// The machine's containers of this image (all of them, running or not).
    fn containers(&self) -> Vec<String> {
        Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("ancestor={}", self.0)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // Every container of the image (a daemon killed mid-start may still be creating one),
        // then every tag of its repository (the test tags a second one).
        common::poll(std::time::Duration::from_secs(20), || {
            let left = self.containers();
            for c in &left {
                let _ = Command::new("docker").args(["rm", "-f", c]).output();
            }
            left.is_empty().then_some(())
        });
        let repo = self.0.split(':').next().unwrap_or(&self.0);
        let tags = Command::new("docker")
            .args(["images", repo, "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for tag in tags.lines().chain([self.0.as_str()]) {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        }
    }
}

/// A task that stops at once on SIGTERM (a shell as PID 1 would ignore it) and says something.
const TICKER: &str = "trap 'exit 0' TERM; echo started; while :; do echo tick; sleep 1; done";

/// Lines without trailing blanks, sorted (an empty last column leaves none).
fn sorted_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(|l| l.trim_end().to_string()).collect();
    v.sort();
    v
}

#[test]
fn version_info_nodes_networks_and_lists() {
    if !available("version_info_nodes_networks_and_lists", false) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "dk1");
    n.start("dev");
    // `shoal dev` serves the Docker API next to its own socket by default, root only.
    let sock = n.dir.join("docker.sock");
    eventually(20, "the docker socket", || sock.exists().then_some(()));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).expect("meta").permissions());
    assert_eq!(mode & 0o777, 0o600);
    let d = Docker::new(&n, sock.clone(), tmp.path(), "dev");
    eventually(30, "the node ready", || {
        (d.ok(&["node", "ls", "--format", "{{.Status}}"]) == "Ready").then_some(())
    });

    // Versions: negotiated through /_ping (the client speaks the lower of its newest and the
    // server's 1.50: 1.50 for CLI 28, 1.41 for Debian's 20.10), served under any prefix from 1.24.
    let v = d.ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Client.APIVersion}} {{.Client.DefaultAPIVersion}}",
    ]);
    let v: Vec<&str> = v.split_whitespace().collect();
    let minor = |s: &str| s.strip_prefix("1.").and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    assert_eq!(v[..2], ["1.50", "1.24"], "{v:?}");
    assert_eq!(minor(v[2]), minor(v[3]).min(50), "{v:?}");
    for v in ["1.24", "1.41"] {
        let out = d.run_env(
            &["version", "--format", "{{.Client.APIVersion}} {{.Server.Os}}"],
            &[("DOCKER_API_VERSION", v)],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{v} linux"));
    }
    let (status, head, body) = http(&sock, "GET", "/_ping", "");
    assert_eq!((status, body.as_str()), (200, "OK"));
    assert!(head.contains("api-version: 1.50") && head.contains("swarm: active/manager"), "{head}");
    let (status, _, body) = http(&sock, "GET", "/v1.12/info", "");
    assert_eq!(status, 400);
    assert!(body.contains("client version 1.12 is too old. Minimum supported API version is 1.24"), "{body}");
    let (status, _, body) = http(&sock, "GET", "/v1.51/info", "");
    assert_eq!(status, 400);
    assert!(body.contains("Maximum supported API version is 1.50"), "{body}");

    // Info: this node's view of the swarm.
    let id = n.node_id();
    assert_eq!(
        d.ok(&[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}} {{.Swarm.Managers}} {{.Swarm.Nodes}} {{.Name}}"
        ]),
        format!("active true {id} 1 1 dk1")
    );
    let cluster_id = d.ok(&["info", "--format", "{{.Swarm.Cluster.ID}}"]);
    assert_eq!(cluster_id.len(), 25, "{cluster_id}");

    // Nodes: ls (the CLI marks itself through info's NodeID), inspect, update, the last manager.
    assert_eq!(
        d.ok(&[
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}} {{.Self}}"
        ]),
        "dk1 Ready Active Leader true"
    );
    assert_eq!(d.ok(&["node", "ls", "-q", "--filter", "role=worker"]), "");
    assert_eq!(
        d.ok(&["node", "inspect", "self", "--format", "{{.ID}} {{.Spec.Role}} {{.Status.State}}"]),
        format!("{id} manager ready")
    );
    d.ok(&[
        "node",
        "update",
        "--label-add",
        "zone=a",
        "--label-add",
        "rack=7",
        "--availability",
        "pause",
        "dk1",
    ]);
    assert_eq!(
        d.ok(&[
            "node",
            "inspect",
            "dk1",
            "--format",
            "{{.Spec.Availability}} {{index .Spec.Labels \"zone\"}}"
        ]),
        "pause a"
    );
    // Shoal's own view agrees: the translation reached the node's spec.
    let shoal_view = n.json(&["node", "inspect", "dk1", "--format", "json"]);
    assert_eq!(shoal_view["spec"]["availability"], "pause");
    assert_eq!(shoal_view["spec"]["labels"]["rack"], "7");
    assert_eq!(d.ok(&["node", "ls", "-q", "--filter", "node.label=zone=a"]), id);
    d.ok(&["node", "update", "--label-rm", "zone", "--availability", "active", "dk1"]);
    assert_eq!(
        d.ok(&["node", "inspect", "dk1", "--format", "{{.Spec.Availability}} {{len .Spec.Labels}}"]),
        "active 1"
    );
    assert!(d.fails(&["node", "demote", "dk1"]).contains("cannot demote the last manager"));
    assert!(d.fails(&["node", "rm", "dk1"]).contains("is ready"));
    assert!(d.fails(&["node", "inspect", "nope"]).contains("nope"));

    // Networks: ingress from `cluster init`, overlay networks created, inspected, removed.
    let nets = d.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"]);
    assert!(nets.lines().any(|l| l == "ingress overlay swarm"), "{nets}");
    let created = d.ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.77.3.0/24",
        "--attachable",
        "--opt",
        "mtu=1400",
        "--label",
        "team=a",
        "front",
    ]);
    assert_eq!(created.len(), 25, "{created}");
    assert_eq!(
        d.ok(&[
            "network",
            "inspect",
            "front",
            "--format",
            "{{.Driver}} {{.Scope}} {{(index .IPAM.Config 0).Subnet}} {{.Attachable}} {{index .Options \"com.docker.network.driver.mtu\"}} {{index .Labels \"team\"}}"
        ]),
        "overlay swarm 10.77.3.0/24 true 1400 a"
    );
    assert_eq!(
        n.json(&["network", "inspect", "front", "--format", "json"])[0]["status"]["subnet"],
        "10.77.3.0/24"
    );
    assert_eq!(d.ok(&["network", "ls", "--filter", "name=fro", "--format", "{{.Name}}"]), "front");
    let e = d.fails(&["network", "create", "plain"]);
    assert!(e.contains("Driver: \"bridge\" is not supported: Shoal's networks are overlay networks"), "{e}");
    let e = d.fails(&["network", "create", "-d", "overlay", "--internal", "--ipv6", "odd"]);
    assert!(e.contains("Internal: not supported") && e.contains("EnableIPv6: not supported"), "{e}");
    let e = d.fails(&["network", "create", "-d", "overlay", "--subnet", "10.77.3.0/25", "overlapping"]);
    assert!(e.contains("overlaps network front"), "{e}");
    assert_eq!(d.ok(&["network", "rm", "front"]), "front");
    assert!(!d.ok(&["network", "ls", "--format", "{{.Name}}"]).contains("front"));

    // No secrets or configs yet: empty lists.
    assert_eq!(d.ok(&["secret", "ls", "-q"]), "");
    assert_eq!(d.ok(&["config", "ls", "-q"]), "");

    // Outside the subset: 501, naming what is missing.
    let e = d.fails(&["ps"]);
    assert!(e.contains("Shoal does not implement GET /containers/json"), "{e}");
    let (status, _, body) = http(&sock, "POST", "/v1.50/swarm/init", "{}");
    assert_eq!(status, 501);
    assert!(body.starts_with("{\"message\":\"Shoal does not implement POST /swarm/init"), "{body}");
}

#[test]
fn services_through_the_docker_cli() {
    if !available("services_through_the_docker_cli", true) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = Image::import(tmp.path(), "svc");
    let img = image.0.as_str();
    let mut n = Node::new(tmp.path(), "dk2");
    n.start("dev");
    let d = Docker::new(&n, n.dir.join("docker.sock"), tmp.path(), "dev");
    eventually(30, "the node ready with its docker driver", || {
        let nodes = n.json(&["node", "ls", "--format", "json"]);
        let node = nodes.as_array()?.first()?.clone();
        let docker = node["description"]["drivers"].as_array()?.iter().any(|x| x["name"] == "docker");
        (node["status"]["state"] == "ready" && docker).then_some(())
    });

    // Create without -d: the CLI polls until every task runs and stays up for the monitor period.
    let started = Instant::now();
    let out = d.run(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--stop-grace-period",
        "5s",
        "--env",
        "A=1",
        "--limit-memory",
        "64m",
        img,
        "sh",
        "-c",
        TICKER,
    ]);
    let created_in = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("overall progress: 2 out of 2 tasks") && stdout.contains("converged"),
        "{stdout}"
    );
    eprintln!("measured: docker service create (2 replicas, attached) converged in {created_in:?}");
    assert_eq!(
        d.ok(&["service", "ls", "--format", "{{.Name}} {{.Mode}} {{.Replicas}} {{.Image}}"]),
        format!("web replicated 2/2 {img}")
    );
    // The tasks run on the docker driver of this machine's dockerd.
    assert_eq!(image.containers().len(), 2);
    let ps = d.ok(&[
        "service",
        "ps",
        "web",
        "--format",
        "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
    ]);
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.starts_with(&format!("web.{} dk2 Running Running", i + 1)), "{ps}");
    }
    assert_eq!(
        d.ok(&[
            "service",
            "inspect",
            "web",
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}} {{.Spec.TaskTemplate.ContainerSpec.Image}} {{json .Spec.TaskTemplate.ContainerSpec.Env}} {{.Spec.TaskTemplate.ContainerSpec.StopGracePeriod}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}}"
        ]),
        format!("2 {img} [\"A=1\"] 5s 67108864")
    );
    let shoal_spec = n.json(&["service", "inspect", "web", "--format", "json"]);
    assert_eq!(shoal_spec["spec"]["task_template"]["resources"]["limits"]["memory_bytes"], 67108864);

    // Tasks: docker's filters, and a task inspected by id.
    let running = d.ok(&["service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", "web"]);
    let ids: Vec<&str> = running.lines().collect();
    assert_eq!(ids.len(), 2, "{running}");
    assert_eq!(d.ok(&["service", "ps", "-q", "--filter", "desired-state=shutdown", "web"]), "");
    assert_eq!(d.ok(&["service", "ps", "-q", "--filter", "name=web.2", "web"]).lines().count(), 1);
    assert_eq!(
        d.ok(&[
            "inspect",
            "--type",
            "task",
            ids[0],
            "--format",
            "{{.Status.State}} {{.DesiredState}} {{.Spec.ContainerSpec.Image}}"
        ]),
        format!("running running {img}")
    );
    assert_eq!(d.ok(&["node", "ps", "-q", "dk2"]).lines().count(), 2);

    // Logs: docker's multiplexed frames, with the task attributes the CLI turns into context.
    let logs = eventually(30, "two ticks of each task", || {
        let out = d.ok(&["service", "logs", "web"]);
        let ticks = |slot: &str| out.lines().filter(|l| l.starts_with(slot) && l.ends_with("| tick")).count();
        (ticks("web.1.") >= 2 && ticks("web.2.") >= 2).then_some(out)
    });
    assert!(
        logs.lines().any(|l| l.starts_with("web.1.") && l.contains("@dk2") && l.ends_with("| started")),
        "{logs}"
    );
    let raw = d.ok(&["service", "logs", "--raw", "--timestamps", "--tail", "1", "web"]);
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert_eq!(raw_lines.len(), 2, "one line per task: {raw}");
    for l in raw_lines {
        let (ts, line) = l.split_once(' ').expect("timestamp");
        assert!(ts.len() == 30 && ts.ends_with('Z') && line == "tick", "{raw}");
    }
    let task_logs = d.ok(&["service", "logs", "--tail", "1", ids[0]]);
    assert_eq!(task_logs.lines().count(), 1, "{task_logs}");

    // Scale, attached: converges at 3.
    let out = d.ok(&["service", "scale", "web=3"]);
    assert!(out.contains("web scaled to 3") && out.contains("converged"), "{out}");
    assert_eq!(d.ok(&["service", "ls", "--format", "{{.Replicas}}"]), "3/3");

    // Update, attached: env, image and update settings; the tasks are replaced.
    let v2 = format!("{}:2", img.trim_end_matches(":1"));
    let tagged = Command::new("docker").args(["tag", img, &v2]).output().expect("docker tag");
    assert!(tagged.status.success());
    let started = Instant::now();
    let out = d.ok(&[
        "service",
        "update",
        "--image",
        &v2,
        "--env-add",
        "COLOR=blue",
        "--update-parallelism",
        "2",
        "--update-delay",
        "1s",
        "--update-order",
        "start-first",
        "web",
    ]);
    eprintln!(
        "measured: docker service update (3 replicas, parallelism 2, attached) took {:?}",
        started.elapsed()
    );
    assert!(out.contains("converged"), "{out}");
    assert_eq!(
        d.ok(&[
            "service",
            "inspect",
            "web",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{json .Spec.TaskTemplate.ContainerSpec.Env}} {{.Spec.UpdateConfig.Parallelism}} {{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.Delay}} {{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}"
        ]),
        format!("{v2} [\"A=1\",\"COLOR=blue\"] 2 start-first 1s {img}")
    );
    eventually(30, "the update completed", || {
        (d.ok(&["service", "inspect", "web", "--format", "{{.UpdateStatus.State}}"]) == "completed")
            .then_some(())
    });
    let running = d.ok(&["service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", "web"]);
    for id in running.lines() {
        let env = d.ok(&["inspect", "--type", "task", id, "--format", "{{json .Spec.ContainerSpec.Env}}"]);
        assert_eq!(env, "[\"A=1\",\"COLOR=blue\"]");
        // And in the container itself.
        let c = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker inspect --format '{{{{json .Config.Env}}}}' $(docker ps -aq --filter label=com.docker.swarm.task.id={id})"
            ))
            .output()
            .expect("docker inspect");
        assert!(
            String::from_utf8_lossy(&c.stdout).contains("COLOR=blue"),
            "{}",
            String::from_utf8_lossy(&c.stdout)
        );
    }

    // A version race: an update based on an old version is refused, as in Docker.
    let spec = format!(
        r#"{{"Name":"web","TaskTemplate":{{"ContainerSpec":{{"Image":"{img}"}}}},"Mode":{{"Replicated":{{"Replicas":1}}}}}}"#
    );
    let (status, _, body) = http(&d.sock, "POST", "/v1.50/services/web/update?version=1", &spec);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("was changed concurrently") && body.contains("expected 1"), "{body}");

    // Rollback, attached: back to the previous spec.
    let out = d.ok(&["service", "rollback", "web"]);
    assert!(out.contains("rollback") && out.contains("converged"), "{out}");
    assert_eq!(
        d.ok(&[
            "service",
            "inspect",
            "web",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{json .Spec.TaskTemplate.ContainerSpec.Env}}"
        ]),
        format!("{img} [\"A=1\"]")
    );

    // Detached create returns at once with the id.
    let id = d.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "quick",
        "--mode",
        "replicated-job",
        img,
        "sh",
        "-c",
        "exit 0",
    ]);
    assert_eq!(id.len(), 25, "{id}");
    assert!(d
        .ok(&["service", "ls", "--filter", "mode=replicated-job", "--format", "{{.Name}}"])
        .contains("quick"));
    // A job, attached: the CLI's job progress (slots from 0, job iterations) completes.
    let out = d.ok(&[
        "service",
        "create",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "3",
        "--max-concurrent",
        "2",
        img,
        "sh",
        "-c",
        "exit 0",
    ]);
    assert!(out.contains("job complete"), "{out}");
    // The CLI's "complete" comes from the tasks' states; the last task's desired state follows
    // a moment later (the orchestrator's pass), and the listing counts desired states.
    eventually(10, "the job listed as done", || {
        let replicas = d.ok(&["service", "ls", "--filter", "name=batch", "--format", "{{.Replicas}}"]);
        (replicas == "0/0 (3/3 completed)").then_some(())
    });

    // Errors: an unknown service (404), what cannot be mapped (400, naming the field).
    assert!(d.fails(&["service", "inspect", "nope"]).contains("no such service: nope"));
    assert!(d.fails(&["service", "rm", "nope"]).contains("service nope not found"));
    assert!(d.fails(&["service", "ps", "nope"]).contains("no such service: nope"));
    assert!(d.fails(&["service", "scale", "nope=2"]).contains("service nope not found"));
    let e = d.fails(&[
        "service",
        "create",
        "-d",
        "--name",
        "bad",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--log-driver",
        "syslog",
        img,
        "true",
    ]);
    assert!(
        e.contains("TaskTemplate.ContainerSpec.Sysctls: not supported by Shoal")
            && e.contains(
                "TaskTemplate.LogDriver: log driver \"syslog\": not supported: Shoal keeps task logs itself"
            ),
        "{e}"
    );
    let e = d.fails(&[
        "service",
        "create",
        "-d",
        "--name",
        "bad",
        "--mount",
        "type=tmpfs,target=/t",
        img,
        "true",
    ]);
    assert!(e.contains("\"tmpfs\" mounts are not supported"), "{e}");
    assert!(d.ok(&["service", "ls", "--format", "{{.Name}}"]).lines().all(|l| l != "bad"));

    // Remove: the services go, and so do their containers.
    // By the short ids `ls` shows, as Docker resolves them (a unique id prefix).
    let short = d.ok(&["service", "ls", "-q", "--filter", "name=web"]);
    assert_eq!(short.len(), 12, "{short}");
    assert_eq!(d.ok(&["service", "inspect", &short, "--format", "{{.Spec.Name}}"]), "web");
    let task =
        d.ok(&["service", "ps", "-q", "--filter", "desired-state=running", "--filter", "name=web.1", "web"]);
    assert_eq!(d.ok(&["inspect", "--type", "task", &task, "--format", "{{.Slot}}"]), "1");
    let quick = d.ok(&["service", "ls", "-q", "--filter", "name=quick"]);
    assert_eq!(d.ok(&["service", "rm", &short, &quick, "batch"]), format!("{short}\n{quick}\nbatch"));
    assert_eq!(d.ok(&["service", "ls", "-q"]), "");
    eventually(60, "the containers removed", || image.containers().is_empty().then_some(()));
}

#[test]
fn a_cluster_through_the_docker_cli_and_a_workers_socket() {
    if !available("a_cluster_through_the_docker_cli_and_a_workers_socket", true) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = Image::import(tmp.path(), "cluster");
    let img = image.0.as_str();
    let mut m = Node::new(tmp.path(), "dm1");
    let mut w = Node::new(tmp.path(), "dw1");
    let m_sock = m.dir.join("docker.sock");
    let w_sock = w.dir.join("docker.sock");
    m.start_with("daemon", &["--docker-socket", &m_sock.display().to_string()]);
    w.start_with("daemon", &["--docker-socket", &w_sock.display().to_string()]);
    let dm = Docker::new(&m, m_sock.clone(), tmp.path(), "daemon");
    let dw = Docker::new(&w, w_sock.clone(), tmp.path(), "daemon");
    // Before `cluster init` the node is in no swarm.
    eventually(20, "the docker socket", || m_sock.exists().then_some(()));
    assert_eq!(dm.ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]), "inactive");
    assert!(dm.fails(&["node", "ls"]).contains("This node is not a swarm manager. Use `shoal cluster init`"));
    m.ok(&["cluster", "init"]);
    join_worker(&m, &w);
    let wid = w.node_id();

    // The worker's socket: a swarm node without control; swarm requests answer 503 like Docker's.
    // (A node that joined as a worker may restart as one meanwhile, so each answer is awaited.)
    let stderr_of = |args: &[&str]| String::from_utf8_lossy(&dw.run(args).stderr).into_owned();
    let worker_view = || {
        let out = dw.run(&[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually(30, "the worker's info", || (worker_view() == format!("active false {wid}")).then_some(()));
    const REFUSED: &str =
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state.";
    eventually(30, "the worker refusing node ls", || {
        stderr_of(&["node", "ls"]).contains(REFUSED).then_some(())
    });
    eventually(30, "the worker refusing a service", || {
        stderr_of(&["service", "create", "-d", "--name", "x", img]).contains(REFUSED).then_some(())
    });
    let (status, head, _) = eventually(30, "a 503 from the worker", || {
        let r = http(&w_sock, "GET", "/v1.50/services", "");
        (r.0 == 503).then_some(r)
    });
    assert_eq!(status, 503);
    assert!(head.contains("api-version: 1.50"), "{head}");

    // The manager's socket: both nodes, a global service on both, the worker's tasks.
    eventually(30, "both nodes ready", || {
        let out = dm.ok(&["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
        (sorted_lines(&out) == ["dm1 Ready Leader", "dw1 Ready"]).then_some(())
    });
    let out = dm.ok(&["service", "create", "--name", "g", "--mode", "global", img, "sh", "-c", TICKER]);
    assert!(out.contains("converged"), "{out}");
    assert_eq!(dm.ok(&["service", "ls", "--format", "{{.Name}} {{.Mode}} {{.Replicas}}"]), "g global 2/2");
    assert_eq!(
        dm.ok(&["node", "ps", "dw1", "--format", "{{.Name}} {{.Node}} {{.DesiredState}}"]),
        format!("g.{wid} dw1 Running")
    );
    let on_worker = dm.ok(&["service", "ps", "g", "-q", "--filter", &format!("node={wid}")]);
    assert_eq!(on_worker.lines().count(), 1, "{on_worker}");
    let logs = eventually(30, "the worker's task logs", || {
        let out = dm.ok(&["service", "logs", "g"]);
        out.lines().any(|l| l.contains("@dw1") && l.ends_with("| tick")).then_some(out)
    });
    assert!(logs.lines().any(|l| l.contains("@dm1")), "{logs}");

    // Promote and demote through the CLI: the worker becomes a manager and back (its daemon
    // restarts each time, and serves the Docker API in its new role).
    assert!(dm.ok(&["node", "promote", "dw1"]).contains("promoted to a manager"));
    eventually(90, "dw1 a reachable manager", || {
        let out = dm.ok(&["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"]);
        out.lines().any(|l| l == "dw1 Reachable").then_some(())
    });
    eventually(60, "dw1's socket a manager's", || {
        let out = dw.run(&["info", "--format", "{{.Swarm.ControlAvailable}} {{.Swarm.Managers}}"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "true 2").then_some(())
    });
    assert!(dm.ok(&["node", "demote", "dw1"]).contains("demoted in the swarm"));
    eventually(90, "dw1 a worker again", || {
        let out = dm.ok(&["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"]);
        sorted_lines(&out).contains(&"dw1".to_string()).then_some(())
    });
    eventually(60, "dw1's socket a worker's", || {
        let out = dw.run(&[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}}",
        ]);
        (String::from_utf8_lossy(&out.stdout).trim() == format!("active false {wid}")).then_some(())
    });

    // A node that is down can be removed.
    assert_eq!(dm.ok(&["service", "rm", "g"]), "g");
    eventually(60, "the containers removed", || image.containers().is_empty().then_some(()));
    w.kill9();
    eventually(30, "dw1 down", || {
        let out = dm.ok(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
        out.lines().any(|l| l == "dw1 Down").then_some(())
    });
    dm.ok(&["node", "rm", "dw1"]);
    assert_eq!(dm.ok(&["node", "ls", "--format", "{{.Hostname}}"]), "dm1");
}

/// `docker stack deploy` of a compose file as Swarm takes it (two services, an overlay network
/// of the file's and the stack's default one, a secret and a config from files): Shoal names and
/// labels it as Swarm does, so the docker CLI's `stack ls/services/ps` and `shoal stack ls` both
/// see it; a re-deploy changes what changed (the CLI's update of an unchanged secret is
/// accepted); `docker stack rm` removes services, secrets, configs and networks.
#[test]
fn a_stack_through_docker_stack_deploy() {
    if !available("a_stack_through_docker_stack_deploy", true) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = Image::import(tmp.path(), "stack");
    // In a simulated host of its own: overlays and the node's nftables table are per network
    // namespace, and other tests build theirs in the machine's own.
    let ul = common::sim::Underlay::new("dstack", 1);
    let mut n = ul.node(tmp.path(), "dk1", 1);
    n.start("dev");
    let sock = n.dir.join("docker.sock");
    eventually(20, "the docker socket", || sock.exists().then_some(()));
    let d = Docker::new(&n, sock, tmp.path(), "dev");
    eventually(30, "the node ready", || {
        (d.ok(&["node", "ls", "--format", "{{.Status}}"]) == "Ready").then_some(())
    });
    let compose = |ticks: &str| {
        format!(
            "services:\n  web:\n    image: {img}\n    command: [\"sh\", \"-c\", \"{TICKER}\"]\n    environment:\n      TICKS: \"{ticks}\"\n    secrets: [pw]\n    configs: [{{source: conf, target: /etc/app.conf}}]\n    deploy:\n      replicas: 2\n  worker:\n    image: {img}\n    command: [\"sh\", \"-c\", \"{TICKER}\"]\n    networks: [back]\nnetworks:\n  back:\n    driver: overlay\nsecrets:\n  pw:\n    file: ./pw.txt\nconfigs:\n  conf:\n    file: ./app.conf\n",
            img = img.0
        )
    };
    let file = tmp.path().join("stack.yml");
    std::fs::write(&file, compose("1")).expect("compose file");
    std::fs::write(tmp.path().join("pw.txt"), "Pw-docker-stack-8Gw2Rn6y").expect("secret file");
    std::fs::write(tmp.path().join("app.conf"), "listen=8080\n").expect("config file");
    let file_s = file.display().to_string();
    let out = d.ok(&["stack", "deploy", "--detach=true", "-c", &file_s, "app"]);
    assert!(out.contains("Creating service app_web") && out.contains("Creating network app_back"), "{out}");
    assert!(out.contains("Creating secret app_pw") && out.contains("Creating config app_conf"), "{out}");
    let stack_label = "label=com.docker.stack.namespace=app";
    assert_eq!(d.ok(&["secret", "ls", "--filter", stack_label, "--format", "{{.Name}}"]), "app_pw");
    assert_eq!(
        d.ok(&[
            "service",
            "inspect",
            "app_web",
            "--format",
            "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}}:{{.File.Name}}{{end}} \
             {{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}:{{.File.Name}}{{end}}"
        ]),
        "app_pw:pw app_conf:/etc/app.conf"
    );
    assert_eq!(d.ok(&["stack", "ls", "--format", "{{.Name}} {{.Services}}"]), "app 2");
    eventually(60, "both services running", || {
        let s = d.ok(&["stack", "services", "app", "--format", "{{.Name}} {{.Replicas}}"]);
        (sorted_lines(&s) == ["app_web 2/2", "app_worker 1/1"]).then_some(())
    });
    let ps = d.ok(&["stack", "ps", "app", "--filter", "desired-state=running", "--format", "{{.Name}}"]);
    assert_eq!(sorted_lines(&ps), ["app_web.1", "app_web.2", "app_worker.1"]);
    // Shoal's own CLI sees the same stack, with its two networks.
    let shoal = n.ok(&["stack", "ls"]);
    assert!(shoal.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["app", "2", "2"]), "{shoal}");
    // A re-deploy with a change updates that service.
    std::fs::write(&file, compose("2")).expect("compose file");
    d.ok(&["stack", "deploy", "--detach=true", "-c", &file_s, "app"]);
    eventually(60, "web updated", || {
        let env = d.ok(&[
            "service",
            "inspect",
            "app_web",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        ]);
        env.contains("TICKS=2").then_some(())
    });
    let out = d.ok(&["stack", "rm", "app"]);
    assert!(out.contains("Removing service app_web") && out.contains("Removing network app_back"), "{out}");
    assert!(out.contains("Removing secret app_pw") && out.contains("Removing config app_conf"), "{out}");
    eventually(60, "the stack gone", || {
        let nets = d.ok(&["network", "ls", "--format", "{{.Name}}"]);
        (d.ok(&["stack", "ls", "--format", "{{.Name}}"]).is_empty() && !nets.contains("app_")).then_some(())
    });
    assert_eq!(d.ok(&["secret", "ls", "-q"]), "");
    assert_eq!(d.ok(&["config", "ls", "-q"]), "");
}

/// The SHA-256 of `s` in hex, as `sha256sum` prints it.
fn sha(s: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// `docker secret|config create/ls/inspect/rm` and services that use them, on the docker driver:
/// a secret's data is never shown (a config's is), the task reads both where Docker puts them,
/// one in use cannot be removed, `--secret-rm/--secret-add` rotates it, and what Shoal cannot
/// map (runtime configs, an id that names nothing, a label update) is refused by path.
#[test]
fn secrets_and_configs_through_the_docker_cli() {
    if !available("secrets_and_configs_through_the_docker_cli", true) {
        return;
    }
    // Strings found nowhere else: the secrets' data.
    const PASSWORD: &str = "Pw-docker-secret-5Jm3Qa8z";
    const ROTATED: &str = "Pw-docker-rotated-9Kc1Xe4t";
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = Image::import(tmp.path(), "sec");
    let img = image.0.as_str();
    let mut n = Node::new(tmp.path(), "dk3");
    n.start("dev");
    let d = Docker::new(&n, n.dir.join("docker.sock"), tmp.path(), "dev");
    eventually(30, "the node ready with its docker driver", || {
        let nodes = n.json(&["node", "ls", "--format", "json"]);
        let node = nodes.as_array()?.first()?.clone();
        let docker = node["description"]["drivers"].as_array()?.iter().any(|x| x["name"] == "docker");
        (node["status"]["state"] == "ready" && docker).then_some(())
    });

    // Created from a file and from standard input.
    let pw_file = tmp.path().join("pw.txt");
    std::fs::write(&pw_file, PASSWORD).expect("secret file");
    let id = d.ok(&["secret", "create", "db_pw", &pw_file.display().to_string()]);
    assert_eq!(id.len(), 25, "{id}");
    let tok = d.ok_stdin(&["secret", "create", "--label", "team=a", "tok", "-"], "x");
    let conf = tmp.path().join("app.conf");
    std::fs::write(&conf, "listen=8080\n").expect("config file");
    d.ok(&["config", "create", "app.conf", &conf.display().to_string()]);
    let e = d.fails(&["secret", "create", "db_pw", &pw_file.display().to_string()]);
    assert!(e.contains("already exists"), "{e}");

    // Listed with Docker's filters; inspected without the data (a config's is shown).
    assert_eq!(sorted_lines(&d.ok(&["secret", "ls", "--format", "{{.Name}}"])), ["db_pw", "tok"]);
    assert_eq!(d.ok(&["secret", "ls", "--filter", "name=db", "--format", "{{.Name}}"]), "db_pw");
    assert_eq!(d.ok(&["secret", "ls", "-q", "--filter", "label=team=a"]), tok);
    assert_eq!(d.ok(&["secret", "ls", "-q", "--filter", &format!("id={}", &id[..6])]), id);
    let shown = d.ok(&["secret", "inspect", "db_pw"]);
    let v: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(v[0]["ID"], id.as_str());
    assert_eq!(v[0]["Spec"]["Name"], "db_pw");
    assert!(v[0]["Spec"].get("Data").is_none() && !shown.contains("UHctZG9ja2Vy"), "{shown}");
    assert_eq!(d.ok(&["secret", "inspect", &id[..8], "--format", "{{.Spec.Name}}"]), "db_pw");
    assert_eq!(
        d.ok(&["config", "inspect", "app.conf", "--format", "{{printf \"%s\" .Spec.Data}}"]),
        "listen=8080"
    );
    assert!(d.ok(&["config", "inspect", "--pretty", "app.conf"]).contains("listen=8080"));
    // Shoal's own CLI sees the same objects.
    let listed = n.ok(&["secret", "ls"]);
    assert!(listed.contains("db_pw") && listed.contains("tok"), "{listed}");
    assert!(d.fails(&["secret", "inspect", "nope"]).contains("nope"));

    // A service reads them on the docker driver: the secret at /run/secrets/NAME, the others at
    // their targets with their modes.
    const SCRIPT: &str = "trap 'exit 0' TERM; busybox sha256sum /run/secrets/db_pw; \
                          busybox stat -c 'mode=%a' /etc/tok; cat /etc/c.conf; echo done; \
                          while :; do sleep 1; done";
    d.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "s",
        "--secret",
        "db_pw",
        "--secret",
        "source=tok,target=/etc/tok,mode=0400",
        "--config",
        "src=app.conf,target=/etc/c.conf",
        img,
        "sh",
        "-c",
        SCRIPT,
    ]);
    let logs = || d.ok(&["service", "logs", "--raw", "s"]);
    eventually(60, "the task reading its secret and config", || {
        let l = logs();
        (l.contains(&sha(PASSWORD)) && l.contains("mode=400") && l.contains("listen=8080")).then_some(())
    });
    let refs = d.ok(&[
        "service",
        "inspect",
        "s",
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}}:{{.SecretID}}:{{.File.Name}} {{end}}\
         {{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}:{{.File.Name}}{{end}}",
    ]);
    // (The CLI sends them in the order of a Go map's iteration.)
    let mut refs: Vec<&str> = refs.split_whitespace().collect();
    refs.sort();
    assert_eq!(
        refs,
        ["app.conf:/etc/c.conf".to_string(), format!("db_pw:{id}:db_pw"), format!("tok:{tok}:/etc/tok")]
    );
    // What the CLI reads back and sends again changes nothing: a scale keeps them.
    let before = n.json(&["service", "inspect", "s"]);
    d.ok(&["service", "scale", "-d", "s=2"]);
    let after = n.json(&["service", "inspect", "s"]);
    let secrets = after["spec"]["task_template"]["secrets"].as_array().cloned().unwrap_or_default();
    let tok_ref = secrets.iter().find(|r| r["source"] == "tok").expect("tok");
    assert_eq!(
        (&tok_ref["target"], &tok_ref["mode"]),
        (&serde_json::json!("/etc/tok"), &serde_json::json!(0o400))
    );
    assert_eq!(after["spec_version"], before["spec_version"], "a scale replaces no task");

    // In use: not removed (409, naming the service).
    let e = d.fails(&["secret", "rm", "db_pw"]);
    assert!(e.contains("in use by service(s) s"), "{e}");
    // Rotation: another secret at the same path, a rolling update.
    d.ok_stdin(&["secret", "create", "db_pw2", "-"], ROTATED);
    d.ok(&[
        "service",
        "update",
        "-d",
        "--secret-rm",
        "db_pw",
        "--secret-add",
        "source=db_pw2,target=db_pw",
        "s",
    ]);
    eventually(60, "the tasks reading the rotated secret", || logs().contains(&sha(ROTATED)).then_some(()));
    eventually(30, "the old secret removable", || {
        d.run(&["secret", "rm", "db_pw"]).status.success().then_some(())
    });

    // Secrets are immutable: an update that changes nothing is accepted (the CLI sends one when
    // it re-deploys a stack), a label change is refused; so are what Shoal cannot map.
    let version = d.ok(&["secret", "inspect", "tok", "--format", "{{.Version.Index}}"]);
    let path = format!("/v1.50/secrets/{tok}/update?version={version}");
    let (status, _, body) = http(&d.sock, "POST", &path, r#"{"Name":"tok","Labels":{"team":"a"}}"#);
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http(&d.sock, "POST", &path, r#"{"Name":"tok","Labels":{"team":"b"}}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("secret tok cannot change (its labels)"), "{body}");
    let (status, _, body) = http(&d.sock, "POST", "/v1.50/secrets/nope/update", r#"{"Name":"nope"}"#);
    assert_eq!(status, 404, "{body}");
    let create = |refs: &str| {
        format!(r#"{{"Name":"bad","TaskTemplate":{{"ContainerSpec":{{"Image":"{img}",{refs}}}}}}}"#)
    };
    let (status, _, body) = http(
        &d.sock,
        "POST",
        "/v1.50/services/create",
        &create(r#""Secrets":[{"SecretID":"zzz","SecretName":"tok","File":{"Name":"t"}}]"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TaskTemplate.ContainerSpec.Secrets[0].SecretID: no secret has id zzz"), "{body}");
    let (status, _, body) = http(
        &d.sock,
        "POST",
        "/v1.50/services/create",
        &create(r#""Configs":[{"ConfigName":"app.conf","Runtime":{}}]"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TaskTemplate.ContainerSpec.Configs[0].Runtime: not supported by Shoal"), "{body}");
    let e = d.fails(&["service", "create", "-d", "--name", "bad", "--secret", "nope", img, "true"]);
    assert!(e.contains("secret not found: nope"), "{e}");
    let e =
        d.fails(&["secret", "create", "--template-driver", "golang", "tmpl", &pw_file.display().to_string()]);
    assert!(e.contains("Spec.Templating: not supported by Shoal"), "{e}");

    // Removed once no service uses them.
    assert_eq!(d.ok(&["service", "rm", "s"]), "s");
    assert_eq!(d.ok(&["secret", "rm", "db_pw2", "tok"]), "db_pw2\ntok");
    assert_eq!(d.ok(&["config", "rm", "app.conf"]), "app.conf");
    assert_eq!(d.ok(&["secret", "ls", "-q"]), "");
    assert_eq!(d.ok(&["config", "ls", "-q"]), "");
    eventually(60, "the containers removed", || image.containers().is_empty().then_some(()));
    // The data never reached the daemon's log.
    let log = std::fs::read_to_string(n.dir.join("dev.log")).unwrap_or_default();
    assert!(!log.contains(PASSWORD) && !log.contains(ROTATED), "the daemon's log holds a secret");
}
