//! `shoal info`: the cluster at a glance, like `docker info` (the client, the manager that
//! answered, Raft, nodes, services and tasks, this manager's node and drivers).

use anyhow::Result;
use serde::Serialize;
use shoal_api::server::ClusterInfo;
use shoal_api::Client;
use shoal_types::{Node, NodeRole, NodeState};

#[derive(Serialize)]
struct Info {
    client_version: &'static str,
    host: String,
    cluster: ClusterInfo,
    managers: usize,
    workers: usize,
    nodes_ready: usize,
    nodes_down: usize,
    tasks_running: usize,
    /// The answering manager's node, as the cluster knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Node>,
}

pub async fn run(c: &Client, host: &str, json: bool) -> Result<()> {
    let cluster: ClusterInfo = c.get("/v1/cluster").await?;
    let nodes: Vec<Node> = c.get("/v1/nodes").await?;
    let tasks: Vec<serde_json::Value> = c.get("/v1/tasks").await?;
    let running = tasks.iter().filter(|t| t["status"]["state"] == "running").count();
    let node = nodes.iter().find(|n| n.id.as_str() == cluster.raft.node_id).cloned();
    let info = Info {
        client_version: env!("CARGO_PKG_VERSION"),
        host: host.to_string(),
        managers: nodes.iter().filter(|n| n.spec.role == NodeRole::Manager).count(),
        workers: nodes.iter().filter(|n| n.spec.role == NodeRole::Worker).count(),
        nodes_ready: nodes.iter().filter(|n| n.status.state == NodeState::Ready).count(),
        nodes_down: nodes.iter().filter(|n| n.status.state == NodeState::Down).count(),
        tasks_running: running,
        node,
        cluster,
    };
    if json {
        return crate::cli::print_json(&info);
    }
    let r = &info.cluster.raft;
    println!("Client:");
    println!(" Version:        {}", info.client_version);
    println!(" Daemon:         {}", info.host);
    println!("Server:");
    println!(" Manager:        {} (raft id {}, {})", r.node_id, r.raft_id, r.state);
    let leader =
        r.leader_node.as_ref().map_or("none".to_string(), |n| format!("{} at {}", n.node_id, n.addr));
    println!(" Leader:         {leader}");
    println!(
        " Raft:           term {}, applied index {}",
        r.term,
        r.last_applied.map_or("-".into(), |i| i.to_string())
    );
    println!(" Voters:         {}", r.voters.len());
    println!(
        " Nodes:          {} ({} managers, {} workers; {} ready, {} down)",
        info.cluster.nodes, info.managers, info.workers, info.nodes_ready, info.nodes_down
    );
    println!(" Services:       {}", info.cluster.services);
    println!(" Tasks:          {} ({} running)", info.cluster.tasks, info.tasks_running);
    println!(" Data path port: {}", info.cluster.data_path_port);
    if let Some(n) = &info.node {
        let d = &n.description;
        println!(" Hostname:       {}", d.hostname);
        println!(" Engine version: {}", d.engine_version);
        println!(" OS/Arch:        {}/{}", d.platform.os, d.platform.arch);
        println!(" CPUs:           {}", d.resources.nano_cpus as f64 / 1e9);
        println!(" Memory:         {:.1} GiB", d.resources.memory_bytes as f64 / (1u64 << 30) as f64);
        let drivers: Vec<&str> = d.drivers.iter().map(|x| x.name.as_str()).collect();
        println!(" Drivers:        {}", drivers.join(", "));
        if !d.engine_labels.is_empty() {
            let labels: Vec<String> = d.engine_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(" Labels:         {}", labels.join(", "));
        }
    }
    Ok(())
}
