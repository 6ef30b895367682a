//! The real docker CLI against a follower of a real cluster: three `shoal daemon`s on simulated
//! hosts, all managers, each serving the Docker API on a socket of its own. Through a follower's
//! socket, `docker stack deploy` of a compose file (two services, one `depends_on` the other —
//! the docker CLI drops it, Swarm has no order — and an overlay network) converges; the leader is
//! killed and the stack updated through the same socket (the follower now leads, or forwards to
//! the manager that does); the old leader comes back as a follower; `docker stack rm` removes the
//! services and the network, and every node its containers.
//!
//! (A worker's socket refusing swarm requests is `docker_cli.rs`'s
//! `a_cluster_through_the_docker_cli_and_a_workers_socket`.)
//!
//! Tasks run on the docker driver of the machine's dockerd, from a busybox image the test imports.
//! Without the docker CLI, dockerd or a static busybox the test is skipped, unless
//! `SHOAL_REQUIRE_RUNTIMES=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::sim::Underlay;
use common::{eventually, eventually_or, leader_of, DockerImage, Node};

/// Whether the docker CLI, dockerd and a static busybox are here; skips (or fails, with
/// `SHOAL_REQUIRE_RUNTIMES=1`) when not.
fn available(test: &str) -> bool {
    let ok = |args: &[&str]| Command::new("docker").args(args).output().is_ok_and(|o| o.status.success());
    let why = if !ok(&["--version"]) {
        "no docker CLI"
    } else if !ok(&["info"]) {
        "no docker engine"
    } else if !Path::new("/bin/busybox").exists() {
        "no static busybox at /bin/busybox"
    } else {
        return true;
    };
    assert!(
        !std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1"),
        "SHOAL_REQUIRE_RUNTIMES=1 but {why}"
    );
    eprintln!("skipping {test}: {why}");
    false
}

/// The docker CLI pointed at one daemon's Docker socket (`DOCKER_HOST`), with a configuration
/// directory of its own.
struct Docker {
    sock: PathBuf,
    config: PathBuf,
    /// The daemon's log, shown when a command fails.
    log: PathBuf,
}

impl Docker {
    fn new(n: &Node, root: &Path) -> Docker {
        let config = root.join("docker-config");
        std::fs::create_dir_all(&config).expect("docker config dir");
        Docker { sock: docker_sock(n), config, log: n.dir.join("daemon.log") }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .args(args)
            .output()
            .expect("docker")
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}{}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stdout of a command, or None when it failed (for polling across a leader change).
    fn try_ok(&self, args: &[&str]) -> Option<String> {
        let out = self.run(args);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

fn docker_sock(n: &Node) -> PathBuf {
    n.dir.join("docker.sock")
}

/// Lines without trailing blanks, sorted.
fn sorted_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> =
        out.lines().map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect();
    v.sort();
    v
}

/// A task that stops at once on SIGTERM and says something now and then.
const TICKER: &str = "trap 'exit 0' TERM; echo started; while :; do echo tick; sleep 1; done";

/// The stack: `web` (`replicas`) depends on `db`; both on the overlay network `back`.
fn compose(image: &str, replicas: u32) -> String {
    format!(
        "services:
  web:
    image: {image}
    command: [\"sh\", \"-c\", \"{TICKER}\"]
    depends_on: [db]
    networks: [back]
    deploy:
      replicas: {replicas}
  db:
    image: {image}
    command: [\"sh\", \"-c\", \"{TICKER}\"]
    networks: [back]
networks:
  back:
    driver: overlay
"
    )
}

/// `docker stack services app` as `NAME REPLICAS` lines, sorted; None when the CLI failed.
fn stack_services(d: &Docker) -> Option<Vec<String>> {
    d.try_ok(&["stack", "services", "app", "--format", "{{.Name}} {{.Replicas}}"]).map(|s| sorted_lines(&s))
}

/// The running tasks of `service` by `docker service ps`: (name, node) pairs, sorted.
fn running_tasks(d: &Docker, service: &str) -> Option<Vec<(String, String)>> {
    let out = d.try_ok(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Name}} {{.Node}} {{.CurrentState}}",
    ])?;
    let mut tasks: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [name, node, "Running", ..] => tasks.push((name.to_string(), node.to_string())),
            _ => return None,
        }
    }
    tasks.sort();
    Some(tasks)
}

#[test]
fn a_stack_through_a_followers_docker_socket_survives_the_leader() {
    if !available("a_stack_through_a_followers_docker_socket_survives_the_leader") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = DockerImage::import(&tmp.path().join("img"), "shoal-dockercli-cluster");
    // Each daemon in a simulated host of its own: overlays and nftables are per network namespace.
    let ul = Underlay::new("dclu", 3);
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let mut n = ul.node(tmp.path(), &format!("m{i}"), i);
            let sock = docker_sock(&n).display().to_string();
            n.start_with("daemon", &["--docker-socket", &sock]);
            n
        })
        .collect();
    nodes[0].ok(&["cluster", "init"]);
    let token = nodes[0].ok(&["cluster", "join-token", "manager", "-q"]);
    for n in &nodes[1..] {
        n.ok(&["cluster", "join", "--token", &token, &nodes[0].addr()]);
    }
    eventually_or(
        90,
        || {
            let ready = common::ready_nodes(&nodes[0])?;
            let voters = nodes[0].raft()?["voters"].as_object()?.len();
            (ready == ["m1", "m2", "m3"] && voters == 3).then_some(())
        },
        || format!("three ready managers:\n{}", common::daemon_log(&nodes[0])),
    );
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect();
    let leader = eventually(30, "a leader all managers agree on", || {
        let views: Vec<String> = nodes.iter().map(|n| leader_of(n).map(|(_, l)| l)).collect::<Option<_>>()?;
        (views.iter().all(|l| *l == views[0])).then(|| ids.iter().position(|id| *id == views[0])).flatten()
    });
    // The follower the docker CLI talks to: the next manager after the leader.
    let follower = (leader + 1) % 3;
    let d = Docker::new(&nodes[follower], tmp.path());
    eventually(30, "the follower's docker socket", || d.sock.exists().then_some(()));
    eventually(60, "three managers through the follower's socket", || {
        let out = d.try_ok(&["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"])?;
        let lines = sorted_lines(&out);
        (lines.len() == 3
            && lines.iter().all(|l| l.contains(" Ready "))
            && lines.iter().filter(|l| l.ends_with("Leader")).count() == 1)
            .then_some(())
    });

    // Deploy through the follower.
    let file = tmp.path().join("compose.yml");
    std::fs::write(&file, compose(&image.0, 2)).expect("compose file");
    let file_s = file.display().to_string();
    let out = d.ok(&["stack", "deploy", "--detach=true", "-c", &file_s, "app"]);
    for want in ["Creating network app_back", "Creating service app_web", "Creating service app_db"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    eventually_or(
        120,
        || (stack_services(&d)? == ["app_db 1/1", "app_web 2/2"]).then_some(()),
        || format!("the stack running: {:?}", stack_services(&d)),
    );
    let web =
        eventually(30, "web's two tasks running", || running_tasks(&d, "app_web").filter(|t| t.len() == 2));
    assert_eq!(web.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["app_web.1", "app_web.2"]);
    let nets = d.ok(&[
        "network",
        "ls",
        "--filter",
        "label=com.docker.stack.namespace=app",
        "--format",
        "{{.Name}} {{.Driver}}",
    ]);
    assert_eq!(sorted_lines(&nets), ["app_back overlay"], "{nets}");

    // The leader dies; the survivors elect another, and the same socket updates the stack.
    let dead = format!("m{}", leader + 1);
    nodes[leader].kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    eventually_or(
        60,
        || {
            let views: Vec<String> =
                survivors.iter().map(|i| leader_of(&nodes[*i]).map(|(_, l)| l)).collect::<Option<_>>()?;
            (views.iter().all(|l| *l == views[0] && *l != ids[leader])).then_some(())
        },
        || format!("a new leader:\n{}", common::daemon_log(&nodes[follower])),
    );
    std::fs::write(&file, compose(&image.0, 3)).expect("compose file");
    let out = eventually(60, "the re-deploy through the follower", || {
        d.try_ok(&["stack", "deploy", "--detach=true", "-c", &file_s, "app"])
    });
    assert!(out.contains("Updating service app_web") && out.contains("Updating service app_db"), "{out}");
    // Once the managers see the old leader down, every task runs on the survivors.
    eventually(90, "the old leader down", || {
        let out = d.try_ok(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])?;
        out.lines().any(|l| *l == format!("{dead} Down")).then_some(())
    });
    eventually_or(
        120,
        || {
            let web = running_tasks(&d, "app_web")?;
            let db = running_tasks(&d, "app_db")?;
            (stack_services(&d)? == ["app_db 1/1", "app_web 3/3"]
                && web.len() == 3
                && db.len() == 1
                && web.iter().chain(&db).all(|(_, node)| *node != dead))
            .then_some(())
        },
        || {
            format!(
                "web scaled to 3 on the survivors: {:?} {:?} {:?}\n{}",
                stack_services(&d),
                running_tasks(&d, "app_web"),
                running_tasks(&d, "app_db"),
                common::daemon_log(&nodes[follower])
            )
        },
    );

    // Removed through the same socket while the old leader is still down: services, then the
    // network (its tasks there cannot report that they stopped; as in Swarm they do not hold the
    // network, the returning node cleans up).
    let out = d.ok(&["stack", "rm", "app"]);
    for want in ["Removing service app_web", "Removing service app_db", "Removing network app_back"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    eventually(60, "the stack gone", || {
        let services = d.try_ok(&["service", "ls", "--format", "{{.Name}}"])?;
        let nets = d.try_ok(&["network", "ls", "--format", "{{.Name}}"])?;
        let stacks = d.try_ok(&["stack", "ls", "--format", "{{.Name}}"])?;
        (services.is_empty() && stacks.is_empty() && !nets.lines().any(|n| n.starts_with("app_")))
            .then_some(())
    });
    // The old leader comes back, a follower now; its agent stops the tasks of the removed stack
    // and tears down its network there.
    let sock = docker_sock(&nodes[leader]).display().to_string();
    nodes[leader].start_with("daemon", &["--docker-socket", &sock]);
    eventually_or(
        90,
        || {
            let out =
                d.try_ok(&["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"])?;
            let lines = sorted_lines(&out);
            let dead_back = lines.iter().any(|l| *l == format!("{dead} Ready Reachable"));
            (lines.len() == 3 && lines.iter().all(|l| l.contains(" Ready ")) && dead_back).then_some(())
        },
        || format!("{dead} back as a reachable manager:\n{}", common::daemon_log(&nodes[leader])),
    );

    // Every node's containers go.
    for id in &ids {
        let filter = format!("label=com.docker.swarm.node.id={id}");
        eventually(60, "the stack's containers removed", || {
            common::sh_stdout(&format!("docker ps -aq --filter {filter}")).trim().is_empty().then_some(())
        });
    }
}
