//! Networks and their addresses, decided in `apply` (phase 1 of service networking: objects and
//! allocation; nothing on the nodes uses them yet).
//!
//! Everything here is deterministic — no clock, no randomness, `BTreeMap` order — so every
//! replica and the simulator allocate the same addresses from the same log:
//!
//! - **VNIs** are handed out serially from [`MIN_VNI`] with a cursor that wraps around, so a
//!   freed VNI is not reused until every other one has been.
//! - **Subnets**: the spec's (IPv4, /8 to /29, no overlap with another network), or the next /24
//!   of the default pool `10.0.0.0/8` from `10.0.1.0/24` that overlaps nothing. The ingress
//!   network takes `10.255.0.0/16` when that is free.
//! - **IPAM** per network: the addresses in use and a `next` cursor; allocation takes the first
//!   free address from the cursor on, wrapping around (libnetwork's serial allocation), so a
//!   released address is not handed out again at once. The gateway (by default the first host
//!   address) is reserved; the network and broadcast addresses are never handed out.
//! - **Owners** of addresses: the gateway, a service's VIP per network (`vip` endpoint mode), a
//!   task's address per network of its service, and one address per node and network
//!   (`node_lb`, the node's own endpoint on the overlay). The set of used addresses is an index:
//!   `restore` rebuilds it from the owners and `check_indexes` compares, so a leak shows.
//!
//! A task gets its addresses in the apply that creates it. When a network is full it keeps
//! none, stays pending with `no free address in network NAME`, and gets them when it is placed
//! later; the scheduler sees the same free counts and explains it the same way, so it never
//! proposes a placement that apply would refuse.

use crate::{event, not_found, touch, Action, Applied, ClusterState, Object, StateError};
use serde::{Deserialize, Serialize};
use shoal_types::network::{
    self as net, Ipv4Net, DEFAULT_POOL, DEFAULT_POOL_PREFIX, DEFAULT_POOL_START, INGRESS_NAME,
    INGRESS_SUBNET, MAX_VNI, MIN_VNI,
};
use shoal_types::{
    EndpointMode, Network, NetworkId, NetworkSpec, NodeId, Protocol, PublishMode, Service, ServiceEndpoint,
    ServiceId, ServiceSpec, Task, TaskNetwork, TaskState, Timestamp, VirtualIp,
};
use std::collections::{BTreeMap, BTreeSet};

/// The addresses of one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pool {
    subnet: Ipv4Net,
    /// Every address some owner holds (gateway, VIPs, tasks, node endpoints): an index.
    used: BTreeSet<u32>,
    /// Where the next allocation starts looking (state: it survives snapshots).
    next: u32,
}

impl Pool {
    fn new(subnet: Ipv4Net) -> Pool {
        Pool { subnet, used: BTreeSet::new(), next: subnet.first_host() }
    }

    fn free(&self) -> u64 {
        self.subnet.hosts().saturating_sub(self.used.len() as u64)
    }

    /// The first free address in `from..=to`, if any.
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        if from > to {
            return None;
        }
        let mut candidate = u64::from(from);
        for &u in self.used.range(from..=to) {
            if u64::from(u) != candidate {
                break;
            }
            candidate += 1;
        }
        u32::try_from(candidate).ok().filter(|c| *c <= to)
    }

    /// Serial allocation: the first free address from the cursor on, wrapping around once.
    fn allocate(&mut self) -> Option<u32> {
        let (lo, hi) = (self.subnet.first_host(), self.subnet.last_host());
        let start = if (lo..=hi).contains(&self.next) { self.next } else { lo };
        let a = self.first_free(start, hi).or_else(|| self.first_free(lo, start.saturating_sub(1)))?;
        self.used.insert(a);
        self.next = a.wrapping_add(1);
        Some(a)
    }

    fn hold(&mut self, addr: &str) {
        if let Some(a) = net::parse_addr_with_prefix(addr).filter(|a| self.subnet.is_host(*a)) {
            self.used.insert(a);
        }
    }

    fn release(&mut self, addr: &str) {
        if let Some(a) = net::parse_addr_with_prefix(addr) {
            self.used.remove(&a);
        }
    }
}

/// Networks, their address pools and the per-node endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NetState {
    networks: BTreeMap<NetworkId, Network>,
    by_name: BTreeMap<String, NetworkId>,
    pools: BTreeMap<NetworkId, Pool>,
    /// Each node's own address on each network.
    node_lb: BTreeMap<(NodeId, NetworkId), u32>,
    /// Where the next VNI allocation starts looking (0: at [`MIN_VNI`]).
    next_vni: u32,
}

/// The allocation state a snapshot carries besides the objects: cursors and node endpoints. The
/// used-address sets are rebuilt from their owners on restore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpamSnapshot {
    pub next_vni: u32,
    /// The next address each network's allocator tries (dotted quad).
    pub cursors: BTreeMap<NetworkId, String>,
    pub node_lb: Vec<NodeAddress>,
}

/// A node's own address on a network (its endpoint there: the routing mesh, the VIP load
/// balancer and the tasks' gateway when the agents plumb it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeAddress {
    pub node_id: NodeId,
    pub network_id: NetworkId,
    pub addr: String,
}

impl NetState {
    pub(crate) fn snapshot(&self) -> (Vec<Network>, IpamSnapshot) {
        let networks = self.networks.values().cloned().collect();
        let ipam = IpamSnapshot {
            next_vni: self.next_vni,
            cursors: self.pools.iter().map(|(id, p)| (id.clone(), net::fmt_ipv4(p.next))).collect(),
            node_lb: self
                .node_lb
                .iter()
                .filter_map(|((node, id), a)| {
                    let p = self.pools.get(id)?;
                    Some(NodeAddress {
                        node_id: node.clone(),
                        network_id: id.clone(),
                        addr: p.subnet.addr_string(*a),
                    })
                })
                .collect(),
        };
        (networks, ipam)
    }

    fn insert(&mut self, n: Network) {
        if let Ok(subnet) = Ipv4Net::parse(&n.status.subnet) {
            let mut pool = Pool::new(subnet);
            pool.hold(&n.status.gateway);
            self.pools.insert(n.id.clone(), pool);
        }
        self.by_name.insert(n.spec.name.clone(), n.id.clone());
        self.networks.insert(n.id.clone(), n);
    }

    /// A task holds its addresses until it ends (Docker releases them then too): a slot's history
    /// of failed tasks must not use up a small subnet. The ended task keeps them in its record.
    fn hold_task(&mut self, t: &Task) {
        if t.status.state.is_terminal() {
            return;
        }
        for tn in &t.networks {
            if let Some(p) = self.pools.get_mut(&tn.network_id) {
                tn.addrs.iter().for_each(|a| p.hold(a));
            }
        }
    }

    fn hold_vips(&mut self, svc: &Service) {
        for v in &svc.endpoint.vips {
            if let Some(p) = self.pools.get_mut(&v.network_id) {
                p.hold(&v.addr);
            }
        }
    }

    fn release_vip(&mut self, v: &VirtualIp) {
        if let Some(p) = self.pools.get_mut(&v.network_id) {
            p.release(&v.addr);
        }
    }

    fn ingress(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.ingress)
    }

    fn resolve(&self, target: &str) -> Option<&Network> {
        let id = NetworkId::new(target);
        self.networks.get(&id).or_else(|| self.by_name.get(target).and_then(|id| self.networks.get(id)))
    }

    fn name(&self, id: &NetworkId) -> String {
        self.networks.get(id).map_or_else(|| id.to_string(), |n| n.spec.name.clone())
    }

    /// The first VNI from the cursor on that no network has, wrapping around once.
    fn free_vni(&self) -> Option<u32> {
        let used: BTreeSet<u32> = self.networks.values().map(|n| n.status.vni).collect();
        let start = if (MIN_VNI..=MAX_VNI).contains(&self.next_vni) { self.next_vni } else { MIN_VNI };
        (start..=MAX_VNI).chain(MIN_VNI..start).find(|v| !used.contains(v))
    }

    /// A /24 of the default pool, from 10.0.1.0/24 on, that overlaps no network.
    fn free_pool_subnet(&self) -> Option<Ipv4Net> {
        let pool = Ipv4Net::parse(DEFAULT_POOL).ok()?;
        let start = Ipv4Net::parse(DEFAULT_POOL_START).ok()?;
        let step = 1u32 << (32 - u32::from(DEFAULT_POOL_PREFIX));
        let taken: Vec<Ipv4Net> = self.pools.values().map(|p| p.subnet).collect();
        let mut at = start.network();
        while pool.contains(at) {
            let candidate = Ipv4Net::new(at, DEFAULT_POOL_PREFIX)?;
            match taken.iter().filter(|t| t.overlaps(&candidate)).map(|t| t.broadcast()).max() {
                None => return Some(candidate),
                // Skip past everything the overlapping network covers.
                Some(end) => at = end.checked_add(1)?.max(at.checked_add(step)?) & !(step - 1),
            }
        }
        None
    }

    fn overlapping(&self, subnet: &Ipv4Net) -> Option<&Network> {
        let id = self.pools.iter().find(|(_, p)| p.subnet.overlaps(subnet)).map(|(id, _)| id)?;
        self.networks.get(id)
    }
}

/// A deterministic object id from the cluster's id, a name and the log index (FNV-1a).
fn derived_id(cluster: &str, name: &str, index: u64) -> NetworkId {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in cluster.bytes().chain(std::iter::once(0)).chain(name.bytes()).chain(index.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    NetworkId::new(shoal_types::id::id_from_bits(fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4)))
}

/// How `RemoveNetwork`'s refusal names tasks of removed services that are still stopping on the
/// network (callers that may wait for them look for it).
pub const STILL_STOPPING: &str = "that have not stopped yet";

fn conflict(m: impl Into<String>) -> StateError {
    StateError::Conflict(m.into())
}

fn names(v: &[String]) -> String {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v.join(", ")
}

impl ClusterState {
    // ---- reads -------------------------------------------------------------------------------

    pub fn network(&self, id: &NetworkId) -> Option<&Network> {
        self.net.networks.get(id)
    }
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.net.by_name.get(name).and_then(|id| self.net.networks.get(id))
    }
    /// Networks in id order.
    pub fn networks(&self) -> impl ExactSizeIterator<Item = &Network> + '_ {
        self.net.networks.values()
    }
    /// The routing-mesh network, once it exists.
    pub fn ingress_network(&self) -> Option<&Network> {
        self.net.ingress()
    }
    /// Addresses of the network no one holds yet.
    pub fn free_addresses(&self, id: &NetworkId) -> u64 {
        self.net.pools.get(id).map_or(0, Pool::free)
    }
    /// Every node's own address on the network, in node order.
    pub fn node_addresses(&self, id: &NetworkId) -> Vec<NodeAddress> {
        let Some(p) = self.net.pools.get(id) else { return Vec::new() };
        self.net
            .node_lb
            .iter()
            .filter(|((_, n), _)| n == id)
            .map(|((node, n), a)| NodeAddress {
                node_id: node.clone(),
                network_id: n.clone(),
                addr: p.subnet.addr_string(*a),
            })
            .collect()
    }

    /// The networks a service's tasks join: its own (in the spec's order), then `ingress` when
    /// it publishes a port through the routing mesh. Unknown targets are left out.
    pub fn service_networks(&self, spec: &ServiceSpec) -> Vec<NetworkId> {
        let mut out: Vec<NetworkId> = Vec::new();
        let ingress = spec.endpoint.ingress_ports().next().and_then(|_| self.net.ingress()).map(|n| &n.id);
        let targets = spec.networks.iter().filter_map(|a| self.net.resolve(&a.target).map(|n| &n.id));
        for id in targets.chain(ingress) {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The networks on which `t` still needs an address before it may be placed: for a task
    /// that a plan is about to create, every network of its service.
    pub fn addresses_needed(&self, t: &Task) -> Vec<NetworkId> {
        if t.version == 0 && t.networks.is_empty() {
            return self
                .services
                .get(&t.service_id)
                .map(|s| self.service_networks(&s.spec))
                .unwrap_or_default();
        }
        t.networks_without_address().cloned().collect()
    }

    /// Why a network cannot give a task an address: `no free address in network NAME`.
    pub fn no_free_address(&self, id: &NetworkId) -> String {
        format!("no free address in network {}", self.net.name(id))
    }

    // ---- snapshot ----------------------------------------------------------------------------

    /// Rebuilds the network state of a restored snapshot: networks and cursors as saved, the
    /// used addresses from their owners (gateways, node endpoints, VIPs, tasks).
    pub(crate) fn restore_networks(&mut self, networks: Vec<Network>, ipam: IpamSnapshot) {
        let mut ns = NetState { next_vni: ipam.next_vni, ..Default::default() };
        for n in networks {
            ns.insert(n);
        }
        for (id, next) in ipam.cursors {
            if let (Some(p), Ok(a)) = (ns.pools.get_mut(&id), net::parse_ipv4(&next)) {
                p.next = a;
            }
        }
        for a in ipam.node_lb {
            if let Some(p) = ns.pools.get_mut(&a.network_id) {
                if let Some(ip) = net::parse_addr_with_prefix(&a.addr) {
                    p.used.insert(ip);
                    ns.node_lb.insert((a.node_id, a.network_id), ip);
                }
            }
        }
        for svc in self.services.values() {
            ns.hold_vips(svc);
        }
        for t in self.tasks.values() {
            ns.hold_task(t);
        }
        self.net = ns;
    }

    /// Index maintenance for `put_task`: the task's addresses are in use.
    pub(crate) fn hold_task_addresses(&mut self, t: &Task) {
        self.net.hold_task(t);
    }

    /// Index maintenance for `drop_task`: the task's addresses are free again (an ended task's
    /// were freed when it ended, and may be another task's by now).
    pub(crate) fn release_task_addresses(&mut self, t: &Task) {
        if t.status.state.is_terminal() {
            return;
        }
        for tn in &t.networks {
            if let Some(p) = self.net.pools.get_mut(&tn.network_id) {
                tn.addrs.iter().for_each(|a| p.release(a));
            }
        }
    }

    // ---- networks ----------------------------------------------------------------------------

    pub(crate) fn create_network(
        &mut self,
        index: u64,
        at: Timestamp,
        mut n: Network,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        n.spec.validate().map_err(StateError::InvalidNetwork)?;
        if self.net.networks.contains_key(&n.id) {
            return Err(StateError::AlreadyExists { kind: "network", id: n.id.to_string() });
        }
        if self.net.by_name.contains_key(&n.spec.name) {
            return Err(conflict(format!("a network named {:?} already exists", n.spec.name)));
        }
        if let Some(i) = n.spec.ingress.then(|| self.net.ingress()).flatten() {
            return Err(conflict(format!(
                "an ingress network already exists: {} (there can be only one; remove it first)",
                i.spec.name
            )));
        }
        let vni = self.net.free_vni().ok_or_else(|| conflict("no free VXLAN network identifier left"))?;
        let subnet = match &n.spec.subnet {
            Some(s) => {
                let subnet = Ipv4Net::parse(s).map_err(|e| conflict(format!("subnet: {e}")))?;
                if let Some(o) = self.net.overlapping(&subnet) {
                    return Err(conflict(format!(
                        "subnet {subnet} overlaps network {} ({})",
                        o.spec.name, o.status.subnet
                    )));
                }
                subnet
            }
            None => {
                let ingress =
                    Ipv4Net::parse(INGRESS_SUBNET).ok().filter(|s| self.net.overlapping(s).is_none());
                match ingress.filter(|_| n.spec.ingress) {
                    Some(s) => s,
                    None => self.net.free_pool_subnet().ok_or_else(|| {
                        conflict(format!(
                            "the default pool {DEFAULT_POOL} has no free /24 left: give a subnet"
                        ))
                    })?,
                }
            }
        };
        let gateway = match &n.spec.gateway {
            Some(g) => net::parse_ipv4(g).map_err(|e| conflict(format!("gateway: {e}")))?,
            None => subnet.first_host(),
        };
        let nodes = self.nodes.len() as u64;
        if subnet.hosts().saturating_sub(1) < nodes {
            return Err(conflict(format!(
                "subnet {subnet} has {} addresses besides its gateway, fewer than the cluster's {nodes} nodes \
                 need (one each): use a larger subnet",
                subnet.hosts().saturating_sub(1)
            )));
        }
        n.status =
            shoal_types::NetworkStatus { vni, subnet: subnet.to_string(), gateway: net::fmt_ipv4(gateway) };
        n.created_at = at;
        touch(&mut n.version, &mut n.updated_at, index, at);
        let id = n.id.clone();
        out.events.push(event(index, at, Action::Create, Object::Network(Box::new(n.clone()))));
        self.net.insert(n);
        self.net.next_vni = vni.wrapping_add(1);
        let nodes: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for node in nodes {
            self.allocate_node_address(&node, &id);
        }
        Ok(())
    }

    pub(crate) fn remove_network(
        &mut self,
        index: u64,
        at: Timestamp,
        id: &NetworkId,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        let n = self.net.networks.get(id).ok_or_else(|| not_found("network", id.as_str()))?;
        let name = n.spec.name.clone();
        let users: Vec<String> = self
            .services
            .values()
            .filter(|s| self.service_networks(&s.spec).contains(id))
            .map(|s| s.spec.name.clone())
            .collect();
        if !users.is_empty() {
            let users = names(&users);
            return Err(conflict(if n.spec.ingress {
                format!("network {name} is in use by services that publish ports through the routing mesh (mode=ingress): {users}")
            } else {
                format!(
                    "network {name} is in use by services attached to it: {users} (`shoal service update \
                     --network-rm {name} SERVICE`, or remove them first)"
                )
            }));
        }
        let holders: Vec<&Task> =
            self.tasks.values().filter(|t| t.networks.iter().any(|tn| tn.network_id == *id)).collect();
        // A task told to stop on a node that is down cannot report until the node returns; it
        // does not hold the network (as in Swarm): the returning agent stops it, and its view no
        // longer has the network, so it tears the network down there.
        let node_down = |t: &Task| {
            t.node_id
                .as_ref()
                .and_then(|n| self.nodes.get(n))
                .is_some_and(|n| n.status.state == shoal_types::NodeState::Down)
        };
        let live: Vec<String> = holders
            .iter()
            .filter(|t| !t.status.state.is_terminal())
            .filter(|t| !(t.desired_state.is_terminal() && node_down(t)))
            .map(|t| {
                self.services
                    .get(&t.service_id)
                    .map_or_else(|| t.service_id.to_string(), |s| s.spec.name.clone())
            })
            .collect();
        if !live.is_empty() {
            return Err(conflict(format!(
                "network {name} still has tasks of service {} {STILL_STOPPING}; try again when they have",
                names(&live)
            )));
        }
        // Stopped tasks kept as history let go of their addresses on it.
        let stopped: Vec<Task> = holders.into_iter().cloned().collect();
        for mut t in stopped {
            t.networks.retain(|tn| tn.network_id != *id);
            self.commit_task(index, at, t, out);
        }
        let Some(n) = self.net.networks.remove(id) else { return Ok(()) };
        self.net.by_name.remove(&n.spec.name);
        self.net.pools.remove(id);
        self.net.node_lb.retain(|(_, nid), _| nid != id);
        out.events.push(event(index, at, Action::Remove, Object::Network(Box::new(n))));
        Ok(())
    }

    /// The routing-mesh network, created if there is none yet (`cluster init`, or the first
    /// service that publishes an ingress port in a cluster from before networks existed).
    pub(crate) fn ensure_ingress(
        &mut self,
        index: u64,
        at: Timestamp,
        out: &mut Applied,
    ) -> Result<NetworkId, StateError> {
        if let Some(n) = self.net.ingress() {
            return Ok(n.id.clone());
        }
        if self.net.by_name.contains_key(INGRESS_NAME) {
            return Err(conflict(format!(
                "a network named {INGRESS_NAME} exists but is not the routing-mesh network: remove it, or \
                 create the routing-mesh network under another name (`network create --ingress NAME`)"
            )));
        }
        let cluster = self.cluster.as_ref().map_or("", |c| c.id.as_str());
        let id = derived_id(cluster, INGRESS_NAME, index);
        let spec = NetworkSpec { name: INGRESS_NAME.into(), ingress: true, ..Default::default() };
        self.create_network(index, at, Network::new(id.clone(), spec), out)?;
        Ok(id)
    }

    // ---- nodes -------------------------------------------------------------------------------

    fn allocate_node_address(&mut self, node: &NodeId, id: &NetworkId) {
        let key = (node.clone(), id.clone());
        if self.net.node_lb.contains_key(&key) {
            return;
        }
        // Best effort: a full network leaves the node without an endpoint on it (the network's
        // creation made sure there was room for every node it knew).
        if let Some(a) = self.net.pools.get_mut(id).and_then(Pool::allocate) {
            self.net.node_lb.insert(key, a);
        }
    }

    /// A node registered: it gets its address on every network.
    pub(crate) fn node_joined_networks(&mut self, node: &NodeId) {
        if !self.nodes.contains_key(node) {
            return;
        }
        let ids: Vec<NetworkId> = self.net.networks.keys().cloned().collect();
        for id in ids {
            self.allocate_node_address(node, &id);
        }
    }

    /// A node was removed: its addresses are free.
    pub(crate) fn node_left_networks(&mut self, node: &NodeId) {
        let keys: Vec<(NodeId, NetworkId)> =
            self.net.node_lb.keys().filter(|(n, _)| n == node).cloned().collect();
        for k in keys {
            if let Some(a) = self.net.node_lb.remove(&k) {
                if let Some(p) = self.net.pools.get_mut(&k.1) {
                    p.used.remove(&a);
                }
            }
        }
    }

    // ---- services ----------------------------------------------------------------------------

    /// Replaces each network target (name or id) by the network's id; refuses unknown networks
    /// and explicit attachment to the routing-mesh network. Changes nothing in the state.
    pub(crate) fn resolve_service_networks(&self, spec: &mut ServiceSpec) -> Result<(), StateError> {
        let mut seen = BTreeSet::new();
        for a in &mut spec.networks {
            let n = self.net.resolve(&a.target).ok_or_else(|| not_found("network", &a.target))?;
            if n.spec.ingress {
                return Err(StateError::Invalid(shoal_types::ValidationError::single(
                    "networks",
                    format!(
                        "{} is the routing-mesh network: services join it by publishing a port with mode=ingress",
                        n.spec.name
                    ),
                )));
            }
            if !seen.insert(n.id.clone()) {
                return Err(StateError::Invalid(shoal_types::ValidationError::single(
                    "networks",
                    format!("network {} is listed twice", n.spec.name),
                )));
            }
            a.target = n.id.to_string();
        }
        Ok(())
    }

    /// Published ports are reserved cluster-wide when they go through the routing mesh: no
    /// other service may publish the same port (and protocol), in either mode.
    fn check_published_ports(&self, id: &ServiceId, spec: &ServiceSpec) -> Result<(), StateError> {
        let mine_ingress: BTreeSet<(Protocol, u16)> = spec.endpoint.ingress_ports().collect();
        let mine_host: BTreeSet<(Protocol, u16)> = spec.endpoint.host_ports().collect();
        if mine_ingress.is_empty() && mine_host.is_empty() {
            return Ok(());
        }
        for other in self.services.values().filter(|s| s.id != *id) {
            for p in other.spec.endpoint.ports.iter().filter(|p| p.published != 0) {
                let key = (p.protocol, p.published);
                let clash = match p.mode {
                    PublishMode::Ingress => mine_ingress.contains(&key) || mine_host.contains(&key),
                    PublishMode::Host => mine_ingress.contains(&key),
                };
                if clash {
                    let proto = if p.protocol == Protocol::Udp { "udp" } else { "tcp" };
                    let mode = if p.mode == PublishMode::Ingress { "ingress" } else { "host" };
                    return Err(conflict(format!(
                        "port {}/{proto} is already published by service {} (mode {mode}): ports published \
                         through the routing mesh are reserved on every node",
                        p.published, other.spec.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Gives a service about to be stored with `spec` the VIPs it asks for (`endpoint` holds
    /// the ones it has): ports checked against the other services, the ingress network created
    /// if it needs one, VIPs kept on networks it stays on, released on networks it leaves,
    /// allocated on new ones. On error nothing changed.
    pub(crate) fn attach_service(
        &mut self,
        index: u64,
        at: Timestamp,
        id: &ServiceId,
        spec: &ServiceSpec,
        endpoint: &mut ServiceEndpoint,
        out: &mut Applied,
    ) -> Result<(), StateError> {
        let involved = !endpoint.vips.is_empty()
            || !spec.networks.is_empty()
            || spec.endpoint.ports.iter().any(|p| p.published != 0);
        if !involved {
            return Ok(());
        }
        self.check_published_ports(id, spec)?;
        let saved = self.net.clone();
        let mut events = Vec::new();
        match self.reconcile_vips(index, at, spec, endpoint, &mut events) {
            Ok(()) => {
                out.events.extend(events);
                Ok(())
            }
            Err(e) => {
                self.net = saved;
                Err(e)
            }
        }
    }

    fn reconcile_vips(
        &mut self,
        index: u64,
        at: Timestamp,
        spec: &ServiceSpec,
        endpoint: &mut ServiceEndpoint,
        events: &mut Vec<crate::Event>,
    ) -> Result<(), StateError> {
        if spec.endpoint.ingress_ports().next().is_some() {
            let mut out = Applied::default();
            self.ensure_ingress(index, at, &mut out)?;
            events.extend(out.events);
        }
        let wanted: Vec<NetworkId> = match spec.endpoint.mode {
            EndpointMode::Vip => self.service_networks(spec),
            EndpointMode::Dnsrr => Vec::new(),
        };
        let (keep, drop): (Vec<VirtualIp>, Vec<VirtualIp>) =
            std::mem::take(&mut endpoint.vips).into_iter().partition(|v| wanted.contains(&v.network_id));
        for v in &drop {
            self.net.release_vip(v);
        }
        let mut vips = Vec::new();
        for id in wanted {
            if let Some(v) = keep.iter().find(|v| v.network_id == id) {
                vips.push(v.clone());
                continue;
            }
            let name = self.no_free_address(&id);
            let Some(p) = self.net.pools.get_mut(&id) else { continue };
            let a = p.allocate().ok_or_else(|| conflict(format!("{name} for the service's virtual IP")))?;
            let addr = p.subnet.addr_string(a);
            vips.push(VirtualIp { network_id: id, addr });
        }
        endpoint.vips = vips;
        Ok(())
    }

    /// A removed service's VIPs are free.
    pub(crate) fn detach_service(&mut self, svc: &Service) {
        for v in &svc.endpoint.vips {
            self.net.release_vip(v);
        }
    }

    // ---- tasks -------------------------------------------------------------------------------

    /// Allocates an address on every network in `t.networks` that has none, all or nothing:
    /// `Err(no free address in network NAME)` when one of them is full (nothing allocated).
    pub(crate) fn allocate_task_addresses(&mut self, t: &mut Task) -> Result<(), String> {
        let missing: Vec<NetworkId> = t.networks_without_address().cloned().collect();
        if let Some(full) =
            missing.iter().find(|id| self.free_addresses(id) == 0 && self.net.pools.contains_key(id))
        {
            return Err(self.no_free_address(full));
        }
        for tn in t.networks.iter_mut().filter(|tn| tn.addrs.is_empty()) {
            // A network removed since the task was made has no pool: nothing to allocate there.
            if let Some(p) = self.net.pools.get_mut(&tn.network_id) {
                if let Some(a) = p.allocate() {
                    tn.addrs.push(p.subnet.addr_string(a));
                }
            }
        }
        Ok(())
    }

    /// A new task joins its service's networks and gets an address on each (all or nothing).
    pub(crate) fn attach_task_networks(&mut self, t: &mut Task) -> Result<(), String> {
        t.networks = match self.services.get(&t.service_id) {
            Some(s) => self
                .service_networks(&s.spec)
                .into_iter()
                .map(|network_id| TaskNetwork { network_id, addrs: Vec::new() })
                .collect(),
            None => Vec::new(),
        };
        self.allocate_task_addresses(t)
    }

    /// A task is created (by a plan): as [`Self::attach_task_networks`]; when a network is
    /// full the task gets no address, and if the scheduler had placed it, it goes back to
    /// pending with the reason (its node is kept only when it is bound to it, as a global task
    /// is).
    pub(crate) fn attach_new_task(&mut self, t: &mut Task) {
        if let Err(why) = self.attach_task_networks(t) {
            if t.status.state == TaskState::Assigned && t.slot.is_some() {
                t.node_id = None;
            }
            if t.status.state <= TaskState::Assigned {
                t.status.state = TaskState::Pending;
                t.status.message = "pending task scheduling".into();
            }
            t.status.err = why;
        }
    }

    /// A placement that apply refuses because a network of the task is full: the task stays
    /// pending, and says why (once).
    pub(crate) fn refuse_placement(
        &mut self,
        index: u64,
        at: Timestamp,
        mut t: Task,
        why: String,
        out: &mut Applied,
    ) {
        if t.status.err == why && t.status.state == TaskState::Pending {
            return;
        }
        if t.status.state != TaskState::Pending {
            t.status.state = TaskState::Pending;
            t.status.timestamp = at;
        }
        t.status.message = "pending task scheduling".into();
        t.status.err = why;
        self.commit_task(index, at, t, out);
    }
}

#[cfg(test)]
mod tests;
