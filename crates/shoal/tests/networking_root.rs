//! Service networking in the machine's own network namespace, next to a running dockerd and its
//! firewall (`FORWARD` policy `DROP`, `br_netfilter`): the simulated hosts of `networking.rs`
//! cannot show that traffic the node forwards between its overlay endpoints gets through.

use std::process::Command;

mod common;
use common::{eventually, eventually_or, Node};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Takes away what the node built in the machine's namespace, also when the test fails (the
/// daemon is killed before this runs: fields drop in order).
struct RootCleanup {
    node: Node,
}

impl Drop for RootCleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let id = std::fs::read_to_string(self.node.dir.join("data/node.json")).ok().and_then(|s| {
            serde_json::from_str::<serde_json::Value>(&s).ok()?["node_id"].as_str().map(str::to_string)
        });
        if let Some(id) = id {
            let prefix = common::sim::Underlay::prefix_of(&id);
            for ns in sh("ip netns list").lines().filter_map(|l| l.split_whitespace().next()) {
                if ns.starts_with(&prefix) {
                    sh(&format!("ip netns del {ns}"));
                }
            }
        }
        sh("nft delete table ip shoal; for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(shl|vx)[0-9]+$'); do ip link del $l; done");
        sh("iptables -D DOCKER-USER -i shl+ -j ACCEPT; iptables -D DOCKER-USER -o shl+ -j ACCEPT");
    }
}

#[test]
fn a_service_reaches_another_by_name_on_a_host_where_docker_drops_forwarding() {
    assert!(
        sh("iptables -S FORWARD").lines().any(|l| l.trim() == "-P FORWARD DROP"),
        "this test needs dockerd's firewall in place (scripts/install-deps.sh starts dockerd)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut guard = RootCleanup { node: Node::new(tmp.path(), "root1") };
    guard.node.start("daemon");
    let m = &guard.node;
    m.ok(&["cluster", "init"]);
    eventually(30, "the node ready", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        (nodes.as_array()?.first()?["status"]["state"] == "ready").then_some(())
    });
    m.ok(&["network", "create", "rootnet"]);
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "hello through the forward chain\n").expect("index");
    let www_s = www.display().to_string();
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "rweb",
        "--driver",
        "process",
        "--network",
        "rootnet",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        &www_s,
    ]);
    let got = common::sim::fetcher(m, tmp.path(), "rclient", "rootnet", None, "rweb");
    // Task → VIP → DNAT → back out towards the other task: forwarded by this node, through
    // Docker's FORWARD chain.
    eventually_or(
        60,
        || std::fs::read_to_string(&got).ok().filter(|s| s.contains("hello through")).map(|_| ()),
        || std::fs::read_to_string(m.dir.join("daemon.log")).unwrap_or_default(),
    );
    let user = sh("iptables -S DOCKER-USER");
    assert!(user.contains("-i shl+ -j ACCEPT") && user.contains("-o shl+ -j ACCEPT"), "{user}");

    // Once nothing here uses networks, the node takes its rules and namespaces away again.
    m.ok(&["service", "rm", "rweb", "rclient"]);
    eventually(60, "the network removed", || {
        m.cli(&["network", "rm", "rootnet"]).status.success().then_some(())
    });
    eventually(60, "the node's networking gone", || {
        let table = Command::new("nft").args(["list", "table", "ip", "shoal"]).output().ok()?;
        let user = sh("iptables -S DOCKER-USER");
        (!table.status.success() && !user.contains("shl+")).then_some(())
    });
}
