//! A worker's daemon killed (`kill -9`) while a docker task on an overlay network is starting
//! there, on simulated hosts (see `networking.rs`): once the daemon is back, the task's slot runs
//! again and is reachable by name from another host, nothing of the interrupted attempt runs on
//! beside it, and no task namespace is left that belongs to no running task.
//!
//! The moment of the kill is chosen, not guessed: the worker's daemon talks to dockerd through a
//! proxy of the test (`DOCKER_HOST`) that holds the answer to one container start, so the agent
//! waits exactly there (the engine has done the start, the agent never hears of it) until it is
//! killed. Once while the task is being prepared (its infra container, which holds its network
//! namespace, just started) and once while it starts (its own container just started, its handle
//! not recorded yet).

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod common;
use common::sim::{two_managers_and_a_worker, Underlay};
use common::{
    addr_of, daemon_log, eventually, eventually_or, id_of, running, service_tasks, sh_stdout as sh,
    DockerImage, Node,
};

const DOCKERD: &str = "/var/run/docker.sock";

/// A proxy in front of dockerd's socket that can hold the answer to one container start.
#[derive(Default)]
struct Gate {
    /// Container starts still to let through before the answer to the next one is held (None:
    /// hold nothing).
    hold_after: Mutex<Option<usize>>,
    /// The containers whose start was sent to dockerd and whose answer is held.
    held: Mutex<Vec<String>>,
}

impl Gate {
    /// Listens on `socket`; every connection is passed on to dockerd.
    fn serve(socket: &Path) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        let listener = UnixListener::bind(socket).expect("bind the docker proxy");
        let g = gate.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let g = g.clone();
                std::thread::spawn(move || g.pipe(client));
            }
        });
        gate
    }

    /// Lets `n` container starts through, then holds the answer to the next one.
    fn arm(&self, n: usize) {
        *self.held.lock().expect("lock") = Vec::new();
        *self.hold_after.lock().expect("lock") = Some(n);
    }

    fn disarm(&self) {
        *self.hold_after.lock().expect("lock") = None;
    }

    fn held(&self) -> Vec<String> {
        self.held.lock().expect("lock").clone()
    }

    /// Whether the answer to this request is to be held (it is a container start, its turn).
    fn hold(&self, request: &str) -> bool {
        let Some(line) = request.lines().find(|l| l.starts_with("POST ")) else { return false };
        let Some(id) = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.split_once("/containers/"))
            .and_then(|(_, rest)| rest.split('?').next()?.strip_suffix("/start"))
        else {
            return false;
        };
        let mut turn = self.hold_after.lock().expect("lock");
        match *turn {
            Some(0) => {
                *turn = None;
                self.held.lock().expect("lock").push(id.to_string());
                true
            }
            Some(n) => {
                *turn = Some(n - 1);
                false
            }
            None => false,
        }
    }

    /// Copies one connection both ways; once a held request went through, dockerd's answers on
    /// this connection are dropped (the daemon waits for them until it is killed).
    fn pipe(self: Arc<Self>, client: UnixStream) {
        let Ok(upstream) = UnixStream::connect(DOCKERD) else { return };
        let holding = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (Ok(mut from_up), Ok(mut to_client)) = (upstream.try_clone(), client.try_clone()) else { return };
        let h = holding.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = from_up.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if h.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                if to_client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_client.shutdown(std::net::Shutdown::Both);
        });
        let (mut from_client, mut to_up) = (client, upstream);
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from_client.read(&mut buf) {
            if n == 0 {
                break;
            }
            if self.hold(&String::from_utf8_lossy(&buf[..n])) {
                holding.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if to_up.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_up.shutdown(std::net::Shutdown::Both);
    }
}

/// The name and whether it runs, of a container (by id or name); None when there is none.
fn container(id: &str) -> Option<(String, bool)> {
    let out = sh(&format!("docker inspect -f '{{{{.Name}}}} {{{{.State.Running}}}}' {id} 2>/dev/null"));
    let (name, running) = out.trim().split_once(' ')?;
    Some((name.trim_start_matches('/').to_string(), running == "true"))
}

/// The task namespaces in /run/netns whose names start with `prefix` (one node's), by task id.
fn task_namespaces(prefix: &str) -> BTreeSet<String> {
    let tasks = format!("{prefix}t-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().strip_prefix(&tasks).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_worker_killed_while_a_docker_task_on_a_network_starts_runs_it_once_after_its_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("rst", 3);
    let image = DockerImage::import(&tmp.path().join("img"), "shoal-netrestart-slow");
    let proxy = tmp.path().join("docker-proxy.sock");
    let gate = Gate::serve(&proxy);
    let docker_host = format!("unix://{}", proxy.display());
    let env = [("DOCKER_HOST", docker_host.as_str())];
    let (mut hosts, f) = two_managers_and_a_worker(&ul, tmp.path(), &env);
    let fo = &hosts[f];
    fo.ok(&["network", "create", "front"]);
    let h3_prefix = Underlay::prefix_of(&hosts[2].node_id());

    // 1. Killed while the task is being prepared: its infra container has just started (the
    //    agent waits for dockerd's answer), its namespace not named nor plumbed yet.
    gate.arm(0);
    fo.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "slow",
        "--driver",
        "docker",
        "--network",
        "front",
        "--constraint",
        "node.hostname==h3",
        "--restart-delay",
        "1s",
        &image.0,
        "sh",
        "-c",
        "busybox mkdir -p /www && echo served-by-slow > /www/index.html && exec busybox httpd -f -p 80 -h /www",
    ]);
    let got = common::sim::fetcher(fo, tmp.path(), "fetch", "front", Some("node.hostname==h2"), "slow");
    let first = eventually(30, "slow's first task", || service_tasks(fo, "slow").first().map(id_of));
    let infra = format!("shoal-{first}-infra");
    eventually_or(
        60,
        || {
            let held = gate.held();
            (held.len() == 1 && container(&held[0]) == Some((infra.clone(), true))).then_some(())
        },
        || format!("the start of {infra} held: {:?}\n{}", gate.held(), daemon_log(&hosts[2])),
    );
    let state = service_tasks(fo, "slow").first().map(|t| t["status"]["state"].clone());
    eprintln!("killing h3 while {first} prepares (the managers say {state:?})");
    restart(&mut hosts[2], &gate, &env);
    let fo = &hosts[f];
    let failed = eventually_or(
        60,
        || {
            service_tasks(fo, "slow")
                .into_iter()
                .find(|t| id_of(t) == first && t["status"]["state"] == "failed")
        },
        || format!("{first} failed\n{}", daemon_log(&hosts[2])),
    );
    let err = failed["status"]["err"].as_str().unwrap_or_default();
    assert!(err.contains("restarted before the task started"), "{err}");
    // Its slot runs again, and a task on h2 reaches it by name.
    eventually_or(
        60,
        || std::fs::read_to_string(&got).ok().filter(|s| s.contains("served-by-slow")).map(|_| ()),
        || report(&hosts, f, &image, &h3_prefix, "the fetcher on h2 served by slow"),
    );
    no_leftovers(fo, &image, &h3_prefix, &[first.as_str()], 1, &|w| report(&hosts, f, &image, &h3_prefix, w));

    // 2. Killed while the task starts: its own container has just started in the infra
    //    container's namespace, and the agent has not recorded its handle.
    gate.arm(1);
    fo.ok(&["service", "scale", "-d", "slow=2"]);
    let second = eventually(30, "slow's new slot", || {
        let known: BTreeSet<String> = [first.clone()].into();
        service_tasks(fo, "slow")
            .into_iter()
            .find(|t| t["slot"] == 2 && !known.contains(&id_of(t)))
            .map(|t| id_of(&t))
    });
    let own = format!("slow.2.{second}");
    eventually_or(
        60,
        || {
            let held = gate.held();
            (held.len() == 1 && container(&held[0]) == Some((own.clone(), true))).then_some(())
        },
        || format!("the start of {own} held: {:?}\n{}", gate.held(), daemon_log(&hosts[2])),
    );
    eprintln!("killing h3 while {second} starts (its container runs, its handle is not recorded)");
    restart(&mut hosts[2], &gate, &env);
    let fo = &hosts[f];
    eventually_or(
        60,
        || {
            service_tasks(fo, "slow")
                .iter()
                .any(|t| id_of(t) == second && t["status"]["state"] == "failed")
                .then_some(())
        },
        || report(&hosts, f, &image, &h3_prefix, &format!("{second} failed")),
    );
    // Two tasks of slow run (the new slot's replacement), both reachable by name from h2.
    let up = eventually_or(
        60,
        || {
            let up: Vec<Value> = service_tasks(fo, "slow").into_iter().filter(running).collect();
            (up.len() == 2).then_some(up)
        },
        || report(&hosts, f, &image, &h3_prefix, "two running tasks of slow"),
    );
    let fetcher = service_tasks(fo, "fetch").into_iter().find(running).expect("the fetcher runs");
    let fetcher_ns =
        format!("{}t-{}", Underlay::prefix_of(fetcher["node_id"].as_str().expect("node")), id_of(&fetcher));
    let resolv =
        std::fs::read_to_string(hosts[1].dir.join(format!("data/agent/net/resolv/{}.conf", id_of(&fetcher))))
            .expect("the fetcher's resolv.conf");
    let dns = resolv.lines().find_map(|l| l.strip_prefix("nameserver ")).expect("nameserver").to_string();
    let want: BTreeSet<String> = up.iter().filter_map(addr_of).collect();
    eventually_or(
        20,
        || {
            let out = ul.run_in(&fetcher_ns, &format!("dig +short +time=1 +tries=1 @{dns} tasks.slow"));
            let got: BTreeSet<String> =
                String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            (got == want).then_some(())
        },
        || report(&hosts, f, &image, &h3_prefix, &format!("tasks.slow = {want:?}")),
    );
    for a in &want {
        let out = ul.run_in(&fetcher_ns, &format!("curl -s -m 3 http://{a}/"));
        assert!(String::from_utf8_lossy(&out.stdout).contains("served-by-slow"), "{a} from h2");
    }
    no_leftovers(fo, &image, &h3_prefix, &[first.as_str(), second.as_str()], 2, &|w| {
        report(&hosts, f, &image, &h3_prefix, w)
    });

    // Removing the services leaves no namespace and no container of any of their tasks.
    let mut ids: Vec<String> = service_tasks(fo, "slow").iter().map(id_of).collect();
    ids.extend(service_tasks(fo, "fetch").iter().map(id_of));
    fo.ok(&["service", "rm", "slow", "fetch"]);
    eventually_or(
        60,
        || {
            let left: Vec<String> = std::fs::read_dir("/run/netns")
                .ok()?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| ids.iter().any(|id| n.ends_with(&format!("-t-{id}"))))
                .collect();
            (left.is_empty() && image.containers("").is_empty()).then_some(())
        },
        || report(&hosts, f, &image, &h3_prefix, "nothing left after service rm"),
    );
    eventually(30, "the network removed", || {
        hosts[f].cli(&["network", "rm", "front"]).status.success().then_some(())
    });
}

/// What the test saw, for a failure message.
fn report(hosts: &[Node], f: usize, image: &DockerImage, h3_prefix: &str, what: &str) -> String {
    format!(
        "{what}\nslow: {:?}\nnamespaces of h3: {:?}\ncontainers: {:?}\nh3 log:\n{}",
        service_tasks(&hosts[f], "slow"),
        task_namespaces(h3_prefix),
        image.containers(""),
        daemon_log(&hosts[2])
    )
}

/// Nothing of the interrupted attempts `killed` is left on h3 (no container, no namespace), and
/// h3's task namespaces are exactly those of slow's `n` running tasks.
fn no_leftovers(
    fo: &Node,
    image: &DockerImage,
    h3_prefix: &str,
    killed: &[&str],
    n: usize,
    diagnose: &dyn Fn(&str) -> String,
) {
    eventually_or(
        30,
        || {
            let up: BTreeSet<String> =
                service_tasks(fo, "slow").iter().filter(|t| running(t)).map(id_of).collect();
            let containers = image.containers("");
            let left = containers.iter().any(|c| killed.iter().any(|k| c.contains(k)));
            (up.len() == n && task_namespaces(h3_prefix) == up && !left).then_some(())
        },
        || diagnose(&format!("h3's namespaces = slow's {n} running tasks, nothing left of {killed:?}")),
    );
    // Each running task is its container and its infra container, nothing more.
    let mut want: Vec<String> = service_tasks(fo, "slow")
        .iter()
        .filter(|t| running(t))
        .flat_map(|t| [format!("slow.{}.{}", t["slot"], id_of(t)), format!("shoal-{}-infra", id_of(t))])
        .collect();
    want.sort();
    let mut have = image.containers("");
    have.sort();
    assert_eq!(have, want, "{}", diagnose("the containers of slow's running tasks"));
}

/// `kill -9` of h3's daemon (the held docker request dies with it), then a start with the gate open.
fn restart(h3: &mut Node, gate: &Gate, env: &[(&str, &str)]) {
    h3.kill9();
    gate.disarm();
    h3.start_env("daemon", &[], env);
}
