//! What a node must know to build its networks: the complete view the managers send it (served
//! by the dispatcher next to the task assignments, with a revision). Agents derive every piece of
//! kernel state (sandboxes, peers, VIPs, routing mesh, DNS) from the newest view alone.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetView {
    /// Changes whenever anything below does.
    pub revision: String,
    /// This node's underlay address: the local end of its VXLAN tunnels.
    pub vtep: String,
    /// The UDP port VXLAN uses between nodes.
    pub data_port: u16,
    pub networks: Vec<ViewNetwork>,
    pub services: Vec<ViewService>,
}

/// An overlay network as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewNetwork {
    pub id: String,
    pub name: String,
    pub vni: u32,
    /// `10.0.1.0/24`.
    pub subnet: String,
    /// None: the underlay's MTU minus VXLAN's 50 bytes.
    pub mtu: Option<u16>,
    pub ingress: bool,
    /// This node's own address on the network (its load-balancer endpoint, gateway of its
    /// tasks and address of its DNS resolver), without prefix.
    pub local_addr: String,
    /// Every address on the network that lives on another node, with that node's underlay
    /// address: tasks and the other nodes' own addresses.
    pub peers: Vec<ViewPeer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewPeer {
    pub addr: String,
    pub vtep: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewService {
    pub id: String,
    pub name: String,
    /// `dnsrr`: the name resolves to the tasks' addresses; no VIP.
    pub dnsrr: bool,
    /// Extra names per network.
    pub aliases: Vec<ViewAlias>,
    pub vips: Vec<ViewAddr>,
    /// Ports published on every node (routing mesh).
    pub ingress_ports: Vec<ViewPort>,
    /// The service's tasks that have addresses, running or not.
    pub tasks: Vec<ViewTask>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewAlias {
    pub network_id: String,
    pub name: String,
}

/// An address on a network, without prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewAddr {
    pub network_id: String,
    pub addr: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewPort {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub published: u16,
    pub target: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewTask {
    pub id: String,
    pub slot: Option<u64>,
    pub node_id: String,
    pub addrs: Vec<ViewAddr>,
    /// Running and not unhealthy (or starting with a health check): a backend of the VIP and
    /// the routing mesh, and listed under `tasks.NAME`.
    pub ready: bool,
    /// The task's own DNS servers (`--dns`, IP literals), only for a task of this node that has
    /// them: the node's resolver forwards the names it does not own, asked from the task's
    /// addresses, to these instead of the node's resolvers. Left out of the JSON when empty, so
    /// views without it read (and hash) as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
}

impl NetView {
    pub fn network(&self, id: &str) -> Option<&ViewNetwork> {
        self.networks.iter().find(|n| n.id == id)
    }
}
