//! The network view of one node, computed from the replicated state (a pure function of it):
//! what the node's agent needs to build its overlays, VIPs, routing mesh and DNS, with the DNS
//! servers of the node's own tasks that have some (its resolver forwards their other queries
//! there). Served next to the assignments by the dispatcher (long-polled, with a revision), from
//! any manager's replica.

use shoal_manager::Manager;
use shoal_net::{NetView, ViewAddr, ViewAlias, ViewNetwork, ViewPeer, ViewPort, ViewService, ViewTask};
use shoal_state::ClusterState;
use shoal_types::{EndpointMode, Node, NodeId, Protocol, TaskState};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The host part of a node's `host:port` address: its VXLAN endpoint.
fn vtep(n: &Node) -> String {
    let a = n.status.addr.as_str();
    let host = a.rsplit_once(':').map_or(a, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn host(addr: &str) -> String {
    addr.split_once('/').map_or(addr, |(a, _)| a).to_string()
}

/// The view of `node`: every network (all nodes take part in all of them), this node's own
/// address on each, the endpoints on other nodes, and every service that has addresses.
pub fn netview_of(state: &ClusterState, node: &NodeId) -> NetView {
    let mut view = NetView {
        vtep: state.node(node).map(vtep).unwrap_or_default(),
        // The cluster's (`cluster init --data-path-port`): the same on every node.
        data_port: state.cluster().map_or(shoal_state::DEFAULT_DATA_PATH_PORT, |c| c.data_path_port),
        ..Default::default()
    };
    let vteps: BTreeMap<&NodeId, String> = state.nodes().map(|n| (&n.id, vtep(n))).collect();
    // A node builds a network only when it needs it: a task of its own is on it, or it is the
    // routing mesh and something is published (every node then answers on the port). A node
    // with nothing to do on networks changes nothing in its kernel.
    let mut needed: std::collections::BTreeSet<&shoal_types::NetworkId> = state
        .tasks_on_node(node)
        .filter(|t| !t.status.state.is_terminal())
        .flat_map(|t| t.networks.iter().map(|n| &n.network_id))
        .collect();
    if state.services().any(|s| s.spec.endpoint.ingress_ports().next().is_some()) {
        needed.extend(state.ingress_network().map(|n| &n.id));
    }
    // Tasks on other nodes, by network: one pass over the tasks for all networks.
    let mut remote: BTreeMap<&shoal_types::NetworkId, Vec<ViewPeer>> = BTreeMap::new();
    for t in state.tasks() {
        let Some(on) = t.node_id.as_ref().filter(|n| *n != node) else { continue };
        if t.status.state.is_terminal() || t.status.state < TaskState::Assigned {
            continue;
        }
        let Some(vtep) = vteps.get(on) else { continue };
        for tn in t.networks.iter().filter(|tn| needed.contains(&tn.network_id)) {
            let peers = remote.entry(&tn.network_id).or_default();
            peers.extend(tn.addrs.iter().map(|a| ViewPeer { addr: host(a), vtep: vtep.clone() }));
        }
    }
    for net in state.networks().filter(|n| needed.contains(&n.id)) {
        let addrs = state.node_addresses(&net.id);
        let Some(local) = addrs.iter().find(|a| &a.node_id == node) else { continue };
        let mut peers: Vec<ViewPeer> = addrs
            .iter()
            .filter(|a| &a.node_id != node)
            .filter_map(|a| Some(ViewPeer { addr: host(&a.addr), vtep: vteps.get(&a.node_id)?.clone() }))
            .collect();
        peers.extend(remote.remove(&net.id).unwrap_or_default());
        peers.sort();
        peers.dedup();
        view.networks.push(ViewNetwork {
            id: net.id.to_string(),
            name: net.spec.name.clone(),
            vni: net.status.vni,
            subnet: net.status.subnet.clone(),
            mtu: net.spec.mtu,
            ingress: net.spec.ingress,
            local_addr: host(&local.addr),
            peers,
        });
    }
    let in_view: std::collections::BTreeSet<String> = view.networks.iter().map(|n| n.id.clone()).collect();
    for svc in state.services() {
        let mut tasks = Vec::new();
        for t in state.tasks_of_service(&svc.id) {
            if t.networks.is_empty() || t.status.state.is_terminal() {
                continue;
            }
            let addrs: Vec<ViewAddr> = t
                .networks
                .iter()
                .filter(|tn| in_view.contains(tn.network_id.as_str()))
                .flat_map(|tn| {
                    tn.addrs.iter().map(|a| ViewAddr { network_id: tn.network_id.to_string(), addr: host(a) })
                })
                .collect();
            if addrs.is_empty() {
                continue;
            }
            // Only this node's resolver is asked by the task (its resolv.conf names it), so only
            // this node's view carries the task's own servers.
            let own = t.node_id.as_ref() == Some(node);
            tasks.push(ViewTask {
                id: t.id.to_string(),
                slot: t.slot,
                node_id: t.node_id.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                addrs,
                ready: t.is_up() && t.desired_state <= TaskState::Running,
                dns_servers: if own { t.spec.dns.nameservers.clone() } else { Vec::new() },
            });
        }
        let vips: Vec<ViewAddr> = svc
            .endpoint
            .vips
            .iter()
            .filter(|v| in_view.contains(v.network_id.as_str()))
            .map(|v| ViewAddr { network_id: v.network_id.to_string(), addr: host(&v.addr) })
            .collect();
        if tasks.is_empty() && vips.is_empty() {
            continue;
        }
        let spec = &svc.spec;
        let aliases = spec
            .networks
            .iter()
            .filter_map(|a| {
                let id = state
                    .network(&shoal_types::NetworkId::new(a.target.clone()))
                    .or_else(|| state.network_by_name(&a.target))?
                    .id
                    .to_string();
                Some(
                    a.aliases
                        .iter()
                        .map(move |name| ViewAlias { network_id: id.clone(), name: name.clone() }),
                )
            })
            .flatten()
            .collect();
        let ingress_ports = spec
            .endpoint
            .ports
            .iter()
            .filter(|p| p.published != 0 && p.mode == shoal_types::PublishMode::Ingress)
            .map(|p| ViewPort {
                protocol: if p.protocol == Protocol::Udp { "udp" } else { "tcp" }.into(),
                published: p.published,
                target: p.target,
            })
            .collect();
        view.services.push(ViewService {
            id: svc.id.to_string(),
            name: spec.name.clone(),
            dnsrr: spec.endpoint.mode == EndpointMode::Dnsrr,
            aliases,
            vips,
            ingress_ports,
            tasks,
        });
    }
    // SipHash with fixed keys: the same view gives the same revision on every manager.
    let mut h = std::hash::DefaultHasher::new();
    serde_json::to_vec(&view).unwrap_or_default().hash(&mut h);
    view.revision = format!("{:016x}", h.finish());
    view
}

/// Answers with `node`'s view once it differs from `known`, or after `wait`.
pub async fn wait_netview(m: &Manager, node: &NodeId, known: Option<&str>, wait: Duration) -> NetView {
    // Any change to nodes, networks, services or tasks on networks may change the view.
    let mut changes = m.changes().net();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // What changed before this is in the read below; what changes after it wakes the wait.
        changes.mark_unchanged();
        let v = netview_of(&m.node.local_state().state, node);
        if known != Some(v.revision.as_str()) {
            return v;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Err(_) | Ok(Err(_)) => return v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_state::{ClusterObject, Command};
    use shoal_types::Timestamp;

    #[test]
    fn the_view_carries_the_clusters_data_path_port() {
        let mut state = ClusterState::new();
        let node = NodeId::new("n1");
        assert_eq!(netview_of(&state, &node).data_port, 4789, "no cluster object yet: the default");
        let cluster = ClusterObject {
            id: "c1".into(),
            created_at: Timestamp::ZERO,
            ca_cert_pem: String::new(),
            ca_key_pem: String::new(),
            worker_token: String::new(),
            manager_token: String::new(),
            data_path_port: 7789,
        };
        state
            .apply(Timestamp::from_secs(1), Command::InitCluster { cluster: Box::new(cluster) })
            .expect("init");
        let view = netview_of(&state, &node);
        assert_eq!(view.data_port, 7789);
        // The port is part of what the revision covers.
        let mut default = view.clone();
        default.data_port = 4789;
        assert_ne!(serde_json::to_vec(&default).ok(), serde_json::to_vec(&view).ok());
    }
}
