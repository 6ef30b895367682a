//! Simulated hosts for the networking tests: a network namespace per host with an underlay
//! address (198.51.100.N/24) on a bridge in one more namespace, which also plays the outside
//! client (198.51.100.100). Each daemon runs in its host's namespace (`Node::netns`), so VXLAN,
//! nftables and the resolvers are real and per host. Everything is removed on drop, also when
//! the test fails: the namespaces of the hosts and the ones the daemons created.

use super::{eventually, leader_of, Node};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

fn must(cmd: &str) {
    let out = sh(cmd);
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

pub struct Underlay {
    tag: String,
    hosts: usize,
    /// The data directories of the nodes made here (their ids name the daemons' namespaces).
    dirs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Underlay {
    /// `tag` keeps the namespaces of tests that run at the same time apart (at most 9 bytes).
    pub fn new(tag: &str, hosts: usize) -> Underlay {
        let tag = format!("st{}{tag}", std::process::id() % 100_000);
        let u = Underlay { tag, hosts: 0, dirs: Default::default() };
        let ul = u.name();
        must(&format!(
            "ip netns add {ul} && ip -n {ul} link add name ulbr type bridge && ip -n {ul} link set ulbr up \
             && ip -n {ul} addr add 198.51.100.100/24 dev ulbr && ip -n {ul} link set lo up"
        ));
        let mut u = u;
        for _ in 0..hosts {
            u.add_host();
        }
        u
    }

    /// The underlay's namespace (the outside client).
    pub fn name(&self) -> String {
        format!("{}-ul", self.tag)
    }

    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.tag)
    }

    fn add_host(&mut self) {
        self.hosts += 1;
        let (i, ul, h) = (self.hosts, self.name(), self.host_ns(self.hosts));
        must(&format!(
            "ip netns add {h} && ip -n {ul} link add u{i} type veth peer name eth0 netns {h} \
             && ip -n {ul} link set u{i} master ulbr up && ip -n {h} addr add 198.51.100.{i}/24 dev eth0 \
             && ip -n {h} link set eth0 up && ip -n {h} link set lo up"
        ));
    }

    /// A node (not started) on host `i` (1-based), its files in `root/name`.
    pub fn node(&self, root: &Path, name: &str, i: usize) -> Node {
        assert!(i >= 1 && i <= self.hosts, "host {i} of {}", self.hosts);
        let mut n = Node::new(root, name);
        n.netns = Some(self.host_ns(i));
        n.host = format!("198.51.100.{i}");
        self.dirs.borrow_mut().push(n.dir.clone());
        n
    }

    /// Runs `cmd` with `sh -c` in network namespace `ns` (the mounts stay the test's own).
    pub fn run_in(&self, ns: &str, cmd: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["sh", "-c", cmd])
            .output()
            .expect("nsenter")
    }

    /// The prefix of the namespaces a node's daemon creates (`shoal-<first 8 of its id>-`).
    pub fn prefix_of(node_id: &str) -> String {
        format!("shoal-{}-", node_id.chars().take(8).collect::<String>())
    }

    /// The namespaces the daemons of this underlay created.
    pub fn daemon_namespaces(&self) -> Vec<String> {
        let prefixes: Vec<String> = self
            .dirs
            .borrow()
            .iter()
            .filter_map(|d| super::node_id_in(d))
            .map(|id| Self::prefix_of(&id))
            .collect();
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| prefixes.iter().any(|p| n.starts_with(p.as_str())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for ns in self.daemon_namespaces() {
            let _ = sh(&format!("ip netns del {ns}"));
        }
        for i in 1..=self.hosts {
            let _ = sh(&format!("ip netns del {}", self.host_ns(i)));
        }
        let _ = sh(&format!("ip netns del {}", self.name()));
    }
}

/// A process service `name` on `network` (pinned by `constraint` when given) that fetches
/// `http://TARGET/` by name again and again; returns the file that holds the newest answer.
pub fn fetcher(
    m: &Node,
    dir: &Path,
    name: &str,
    network: &str,
    constraint: Option<&str>,
    target: &str,
) -> PathBuf {
    let got = dir.join(format!("{name}.got"));
    let script = format!(
        "while :; do curl -s -m 2 http://{target}/ > {g}.tmp && mv {g}.tmp {g}; sleep 0.2; done",
        g = got.display()
    );
    let mut args =
        vec!["service", "create", "-d", "--name", name, "--driver", "process", "--network", network];
    if let Some(c) = constraint {
        args.extend(["--constraint", c]);
    }
    args.extend(["sh", "-c", &script]);
    m.ok(&args);
    got
}

/// Nodes h1…hN on hosts 1 to `n` of `ul`, their daemons started.
pub fn start_hosts(ul: &Underlay, root: &Path, n: usize) -> Vec<Node> {
    start_hosts_env(ul, root, n, |_| &[])
}

/// [`start_hosts`], the daemon of host i started with the environment `env(i)`.
pub fn start_hosts_env<'e>(
    ul: &Underlay,
    root: &Path,
    n: usize,
    env: impl Fn(usize) -> &'e [(&'e str, &'e str)],
) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let mut node = ul.node(root, &format!("h{i}"), i);
            node.start_env("daemon", &[], env(i));
            node
        })
        .collect()
}

/// Three simulated hosts in one cluster (h1 manager, h2 and h3 workers), all ready.
pub fn three_hosts(ul: &Underlay, root: &Path) -> Vec<Node> {
    let hosts = start_hosts(ul, root, 3);
    let m = &hosts[0];
    m.ok(&["cluster", "init"]);
    let token = m.ok(&["cluster", "join-token", "worker", "-q"]);
    for h in &hosts[1..] {
        h.ok(&["cluster", "join", "--token", &token, &m.addr()]);
    }
    eventually(40, "three ready nodes", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        (nodes.as_array()?.iter().filter(|n| n["status"]["state"] == "ready").count() == 3).then_some(())
    });
    hosts
}

/// Three simulated hosts: h1 initializes the cluster, h2 joins as a manager, h3 as a worker whose
/// daemon gets `h3_env`. Returns the hosts and the index of a follower manager.
pub fn two_managers_and_a_worker(ul: &Underlay, root: &Path, h3_env: &[(&str, &str)]) -> (Vec<Node>, usize) {
    let hosts = start_hosts_env(ul, root, 3, |i| if i == 3 { h3_env } else { &[] });
    hosts[0].ok(&["cluster", "init"]);
    let token = hosts[0].ok(&["cluster", "join-token", "manager", "-q"]);
    hosts[1].ok(&["cluster", "join", "--token", &token, &hosts[0].addr()]);
    let token = hosts[1].ok(&["cluster", "join-token", "worker", "-q"]);
    hosts[2].ok(&["cluster", "join", "--token", &token, &hosts[1].addr()]);
    eventually(60, "three ready nodes and two voters", || {
        let nodes = hosts[0].json(&["node", "ls", "--format", "json"]);
        let ready = nodes.as_array()?.iter().filter(|n| n["status"]["state"] == "ready").count();
        let voters = hosts[1].raft()?["voters"].as_object()?.len();
        (ready == 3 && voters == 2).then_some(())
    });
    let f = eventually(30, "a leader both managers agree on", || {
        let (a, la) = leader_of(&hosts[0])?;
        let (b, lb) = leader_of(&hosts[1])?;
        if la != lb {
            return None;
        }
        if la == a {
            Some(1)
        } else if lb == b {
            Some(0)
        } else {
            None
        }
    });
    (hosts, f)
}

/// A process service `name` on `network` (with the extra `flags`: a constraint, a published port)
/// that serves `page` at `http://NAME/` with busybox's httpd, from `dir/www`.
pub fn web_server(m: &Node, dir: &Path, name: &str, network: &str, flags: &[&str], page: &str) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), page).expect("index");
    let www_s = www.display().to_string();
    let mut args =
        vec!["service", "create", "-d", "--name", name, "--driver", "process", "--network", network];
    args.extend_from_slice(flags);
    args.extend(["busybox", "httpd", "-f", "-p", "80", "-h", &www_s]);
    m.ok(&args);
}

/// The namespaces in /run/netns whose name ends with `-t-<one of ids>` (those of the tasks `ids`).
pub fn task_namespaces(ids: &[String]) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| ids.iter().any(|id| n.ends_with(&format!("-t-{id}"))))
                .collect()
        })
        .unwrap_or_default()
}
