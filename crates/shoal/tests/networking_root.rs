//! Service networking in the machine's own network namespace, next to a running dockerd and its
//! firewall (`FORWARD` policy `DROP`, `br_netfilter`): the simulated hosts of `networking.rs`
//! cannot show that traffic the node forwards between its overlay endpoints gets through, nor
//! run docker tasks (one dockerd per machine).
//!
//! One test function: every flow here owns the machine's `ip shoal` table and `DOCKER-USER`
//! rules, and nextest runs the tests of a binary in parallel processes.

use std::process::Command;

mod common;
use common::{daemon_log, eventually, eventually_or, sh_stdout as sh, Node};

/// Takes away what the node built in the machine's namespace, also when the test fails (the
/// daemon is killed before this runs: fields drop in order).
struct RootCleanup {
    node: Node,
    /// A docker image this test imported: its containers and itself go too.
    image: Option<String>,
}

impl Drop for RootCleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(id) = common::node_id_in(&self.node.dir) {
            let prefix = common::sim::Underlay::prefix_of(&id);
            for ns in sh("ip netns list").lines().filter_map(|l| l.split_whitespace().next()) {
                if ns.starts_with(&prefix) {
                    sh(&format!("ip netns del {ns}"));
                }
            }
        }
        sh("nft delete table ip shoal; for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(shl|vx)[0-9]+$'); do ip link del $l; done");
        sh("iptables -D DOCKER-USER -i shl+ -j ACCEPT; iptables -D DOCKER-USER -o shl+ -j ACCEPT");
        if let Some(image) = &self.image {
            sh(&format!(
                "docker rm -f $(docker ps -aq --filter ancestor={image}) 2>/dev/null; docker rmi -f {image}"
            ));
        }
    }
}

/// Once nothing here uses networks, the node takes its rules and namespaces away again.
fn networking_gone() {
    eventually(60, "the node's networking gone", || {
        let table = Command::new("nft").args(["list", "table", "ip", "shoal"]).output().ok()?;
        let user = sh("iptables -S DOCKER-USER");
        (!table.status.success() && !user.contains("shl+")).then_some(())
    });
}

#[test]
fn networking_in_the_machines_own_namespace() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut guard = RootCleanup { node: Node::new(tmp.path(), "root1"), image: None };
    a_service_reaches_another_by_name_on_a_host_where_docker_drops_forwarding(&mut guard, tmp.path());
    a_docker_task_joins_an_overlay_network_through_its_infra_container(&mut guard, tmp.path());
}

fn a_service_reaches_another_by_name_on_a_host_where_docker_drops_forwarding(
    guard: &mut RootCleanup,
    tmp: &std::path::Path,
) {
    assert!(
        sh("iptables -S FORWARD").lines().any(|l| l.trim() == "-P FORWARD DROP"),
        "this test needs dockerd's firewall in place (scripts/install-deps.sh starts dockerd)"
    );
    guard.node.start("daemon");
    let m = &guard.node;
    m.ok(&["cluster", "init"]);
    eventually(30, "the node ready", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        (nodes.as_array()?.first()?["status"]["state"] == "ready").then_some(())
    });
    m.ok(&["network", "create", "rootnet"]);
    common::sim::web_server(m, tmp, "rweb", "rootnet", &[], "hello through the forward chain\n");
    let got = common::sim::fetcher(m, tmp, "rclient", "rootnet", None, "rweb");
    // Task → VIP → DNAT → back out towards the other task: forwarded by this node, through
    // Docker's FORWARD chain.
    eventually_or(
        60,
        || std::fs::read_to_string(&got).ok().filter(|s| s.contains("hello through")).map(|_| ()),
        || daemon_log(m),
    );
    let user = sh("iptables -S DOCKER-USER");
    assert!(user.contains("-i shl+ -j ACCEPT") && user.contains("-o shl+ -j ACCEPT"), "{user}");

    m.ok(&["service", "rm", "rweb", "rclient"]);
    eventually(60, "the network removed", || {
        m.cli(&["network", "rm", "rootnet"]).status.success().then_some(())
    });
    networking_gone();
}

/// Docker cannot join a namespace by path: the task's infra container holds it, the task's
/// container joins that one's, and both go with the task.
fn a_docker_task_joins_an_overlay_network_through_its_infra_container(
    guard: &mut RootCleanup,
    tmp: &std::path::Path,
) {
    let image = format!(
        "netroot-{}:1",
        tmp.file_name().and_then(|f| f.to_str()).unwrap_or("x").to_lowercase().replace('.', "")
    );
    common::docker_import(&tmp.join("dockerimg"), &image);
    guard.image = Some(image.clone());
    let m = &guard.node;
    m.ok(&["network", "create", "dockernet"]);
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "dweb",
        "--driver",
        "docker",
        "--network",
        "dockernet",
        &image,
        "sh",
        "-c",
        "busybox mkdir -p /www && echo hello from a docker task > /www/index.html && \
         exec busybox httpd -f -p 80 -h /www",
    ]);
    let got = common::sim::fetcher(m, tmp, "dclient", "dockernet", None, "dweb");
    eventually_or(
        90,
        || std::fs::read_to_string(&got).ok().filter(|s| s.contains("hello from a docker")).map(|_| ()),
        || {
            let ps = m.cli(&["service", "ps", "dweb"]);
            format!("{}\n{}", String::from_utf8_lossy(&ps.stdout), daemon_log(m))
        },
    );
    let tasks = common::running_tasks(m, "dweb").expect("service ps");
    let task = tasks.first().and_then(|t| t["id"].as_str()).expect("a running dweb task").to_string();
    let containers = |filter: &str| sh(&format!("docker ps -aq --filter label={filter}"));
    let ours = containers(&format!("shoal.task.id={task}"));
    assert_eq!(ours.lines().count(), 2, "the task's container and its infra container: {ours}");
    assert_eq!(containers(&format!("shoal.infra --filter label=shoal.task.id={task}")).lines().count(), 1);
    // Inside the container, names resolve through the node's resolver (its resolv.conf).
    let client_addr = eventually(30, "the client's address", || {
        let t = common::running_tasks(m, "dclient")?.into_iter().next()?;
        Some(t["networks"][0]["addrs"][0].as_str()?.split('/').next()?.to_string())
    });
    let looked_up = m.ok(&["task", "exec", &task, "--", "busybox", "nslookup", "tasks.dclient"]);
    assert!(looked_up.contains(&client_addr), "{looked_up}");

    m.ok(&["service", "rm", "dweb", "dclient"]);
    eventually(60, "the network removed", || {
        m.cli(&["network", "rm", "dockernet"]).status.success().then_some(())
    });
    eventually(60, "the task's containers removed", || {
        containers(&format!("shoal.task.id={task}")).trim().is_empty().then_some(())
    });
    networking_gone();
    let left: Vec<String> = sh("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.ends_with(&format!("-t-{task}")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "the task's namespace is left: {left:?}");
}
