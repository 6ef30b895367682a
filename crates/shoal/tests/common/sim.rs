//! Simulated hosts for the networking tests: a network namespace per host with an underlay
//! address (198.51.100.N/24) on a bridge in one more namespace, which also plays the outside
//! client (198.51.100.100). Each daemon runs in its host's namespace (`Node::netns`), so VXLAN,
//! nftables and the resolvers are real and per host. Everything is removed on drop, also when
//! the test fails: the namespaces of the hosts and the ones the daemons created.

use super::Node;
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
            .filter_map(|d| std::fs::read_to_string(d.join("data/node.json")).ok())
            .filter_map(|s| {
                serde_json::from_str::<serde_json::Value>(&s).ok()?["node_id"].as_str().map(Self::prefix_of)
            })
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
