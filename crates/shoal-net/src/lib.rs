//! Service networking on one node.
//!
//! The managers send each node a complete, versioned [`NetView`]; [`Net::reconcile`] makes the
//! kernel match it and changes nothing when it already does (after an agent restart too). Per
//! overlay network there is a *sandbox* namespace holding a bridge, the VXLAN device (its UDP
//! socket stays in the node's namespace) and a veth to the node (`shl<vni>`) that carries the
//! node's own address on the network and the services' VIPs. Remote endpoints are static
//! neighbour and forwarding entries on the VXLAN device (`nolearning proxy`: no flooding, ARP is
//! answered locally); nothing is learnt by gossip. Tasks get a namespace of their own with one
//! `eth<k>` per network ([`Net::attach`]). The VIPs, the routing mesh and the egress masquerade
//! are one nftables table (see [`nft`]); the resolver ([`dns`]) answers on the node's addresses.
//!
//! The sandbox keeps bridged traffic away from the node's firewall (Docker's `FORWARD DROP`
//! and `br_netfilter` live in the node's namespace).

pub mod dns;
pub mod names;
pub mod nft;
mod sys;
pub mod view;

pub use view::{NetView, ViewAddr, ViewAlias, ViewNetwork, ViewPeer, ViewPort, ViewService, ViewTask};

use names::Names;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// VXLAN's overhead: outer Ethernet, IP, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD: u16 = 50;
pub const DEFAULT_DATA_PORT: u16 = 4789;
/// The ruleset last loaded, kept in the state directory (an agent restart then reloads nothing).
const NFT_FILE: &str = "ruleset.json";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{cmd}: {message}")]
    Command { cmd: String, message: String },
    #[error("{0}")]
    Invalid(String),
    /// The task's network is not in this node's view yet (the task waits for it).
    #[error("network {0} is not ready on this node yet")]
    NotReady(String),
}

/// A task's address on one network, with its prefix (`10.0.1.7/24`), as the managers gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskAddr {
    pub network_id: String,
    pub addr: String,
}

/// Where a task attached to networks runs: its namespace and its `resolv.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub netns: PathBuf,
    pub resolv_conf: PathBuf,
}

/// What the last reconcile left, to tell what changed.
#[derive(Default)]
struct Applied {
    /// The ruleset in the kernel (to send only the difference next time, and to know which
    /// backends went).
    rules: Option<nft::Ruleset>,
    forwarding: bool,
}

/// One node's networking.
pub struct Net {
    names: Names,
    state_dir: PathBuf,
    resolv_dir: PathBuf,
    applied: tokio::sync::Mutex<Applied>,
    /// The underlay's MTU, by underlay address, read once (not on every view and attach).
    underlay_mtu: std::sync::Mutex<BTreeMap<String, u16>>,
}

/// `10.0.1.0/24` → (address, prefix).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), NetError> {
    let (a, p) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a.parse().map_err(|_| NetError::Invalid(format!("not an IPv4 address: {s:?}")))?;
    let prefix: u8 =
        p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| NetError::Invalid(format!("bad prefix: {s:?}")))?;
    Ok((addr, prefix))
}

pub(crate) fn host_of(addr: &str) -> &str {
    addr.split_once('/').map_or(addr, |(a, _)| a)
}

fn netns_exists(name: &str) -> bool {
    Path::new(names::NETNS_DIR).join(name).exists()
}

/// The namespaces in `/run/netns`.
fn list_netns() -> Vec<String> {
    std::fs::read_dir(names::NETNS_DIR)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

async fn link_exists(ns: Option<&str>, name: &str) -> bool {
    sys::ip(ns, &["link", "show", "dev", name]).await.is_ok()
}

impl Net {
    /// `node_id` names this node's namespaces; `state_dir` holds the tasks' `resolv.conf` files.
    pub fn new(node_id: &str, state_dir: &Path) -> Net {
        Net {
            names: Names::new(node_id),
            state_dir: state_dir.to_path_buf(),
            resolv_dir: state_dir.join("resolv"),
            applied: Default::default(),
            underlay_mtu: Default::default(),
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The MTU of tasks on `n`: the network's, or the underlay's minus VXLAN's overhead.
    async fn mtu(&self, n: &ViewNetwork, vtep: &str) -> u16 {
        if let Some(m) = n.mtu {
            return m;
        }
        let known =
            self.underlay_mtu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(vtep).copied();
        let underlay = match known {
            Some(m) => m,
            None => {
                let m = self.read_underlay_mtu(vtep).await;
                self.underlay_mtu
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(vtep.to_string(), m);
                m
            }
        };
        underlay.saturating_sub(VXLAN_OVERHEAD).max(68)
    }

    /// The MTU of the interface that carries `vtep` (1500 when none is found).
    async fn read_underlay_mtu(&self, vtep: &str) -> u16 {
        let underlay = match sys::json("ip", None, &["-4", "addr", "show"]).await {
            Ok(v) => v
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["addr_info"].as_array().into_iter().flatten().any(|a| a["local"] == vtep))
                .and_then(|l| l["mtu"].as_u64()),
            Err(_) => None,
        };
        underlay.and_then(|m| u16::try_from(m).ok()).unwrap_or(1500)
    }

    /// Makes the kernel match `view`; returns how many changes it made (0 when it already did).
    pub async fn reconcile(&self, view: &NetView) -> Result<usize, NetError> {
        let mut applied = self.applied.lock().await;
        let mut changes = 0;
        let mut errors = Vec::new();
        if view.networks.is_empty() && view.services.is_empty() {
            // Nothing to build: leave the node's kernel alone (and take away what an earlier
            // view built).
            return self.clear(&mut applied).await;
        }
        if !applied.forwarding {
            sys::sysctl("net.ipv4.ip_forward", "1")?;
            sys::sysctl("net.ipv4.conf.all.send_redirects", "0")?;
            applied.forwarding = true;
        }
        for n in &view.networks {
            match self.ensure_network(view, n).await {
                Ok(c) => changes += c,
                Err(e) => errors.push(format!("network {}: {e}", n.name)),
            }
        }
        match let_overlays_through_the_firewall(true).await {
            Ok(n) => changes += n,
            Err(e) => errors.push(e.to_string()),
        }
        // Sandboxes of networks that are gone (their tasks are gone too).
        let wanted: BTreeSet<u32> = view.networks.iter().map(|n| n.vni).collect();
        for ns in list_netns() {
            if let Some(vni) = self.names.sandbox_vni(&ns) {
                if !wanted.contains(&vni) {
                    match remove_sandbox(&ns, vni).await {
                        Ok(_) => {
                            tracing::info!(netns = %ns, "removed the sandbox of a deleted network");
                            changes += 1;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
        }
        let mut rules = nft::ruleset(view);
        let saved = self.state_dir.join(NFT_FILE);
        if applied.rules.is_none() {
            // After a restart: the previous run's ruleset, if the kernel still has the table.
            let loaded = sys::run("nft", &["list", "table", "ip", nft::TABLE]).await.is_ok();
            applied.rules = loaded
                .then(|| std::fs::read(&saved).ok())
                .flatten()
                .and_then(|b| serde_json::from_slice::<nft::Ruleset>(&b).ok());
        }
        if let Some(old) = applied.rules.as_ref().filter(|old| rules.is_loaded_by(old)) {
            rules.keep_chains_of(old);
            applied.rules = Some(rules);
        } else {
            // Elements (and new balancing chains) only when the structure is the same: one
            // service's backends cost a few ms whatever the number of services. Else the whole
            // table, atomically.
            let update = applied.rules.as_ref().and_then(|old| rules.update_from(old));
            let input = update.clone().unwrap_or_else(|| rules.full());
            match sys::run_with("nft", &["-f", "-"], Some(&input)).await {
                Ok(_) => {
                    let before = applied.rules.as_ref().map(|r| &r.balancing);
                    changes += 1 + forget_removed_backends(before, &rules.balancing).await;
                    if update.is_some() {
                        if let Some(old) = &applied.rules {
                            rules.keep_chains_of(old);
                        }
                    }
                    if let Err(e) = std::fs::create_dir_all(&self.state_dir).and_then(|()| {
                        std::fs::write(&saved, serde_json::to_vec(&rules).map_err(std::io::Error::other)?)
                    }) {
                        tracing::warn!(file = %saved.display(), error = %e, "cannot keep the loaded ruleset");
                    }
                    applied.rules = Some(rules);
                }
                Err(e) => {
                    // The next attempt replaces the whole table.
                    applied.rules = None;
                    errors.push(e.to_string())
                }
            }
        }
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(NetError::Invalid(errors.join("; ")))
        }
    }

    /// Removes this node's sandboxes and ruleset (its tasks' namespaces stay with their tasks).
    async fn clear(&self, applied: &mut Applied) -> Result<usize, NetError> {
        let mut changes = 0;
        for ns in list_netns() {
            if let Some(vni) = self.names.sandbox_vni(&ns) {
                remove_sandbox(&ns, vni).await?;
                changes += 1;
            }
        }
        changes += let_overlays_through_the_firewall(false).await.unwrap_or(0);
        let had_table = applied.rules.is_some() || self.state_dir.join(NFT_FILE).exists();
        if had_table {
            // Gone already is fine (another agent on this host may have removed it).
            let _ = sys::run("nft", &["delete", "table", "ip", nft::TABLE]).await;
            let _ = std::fs::remove_file(self.state_dir.join(NFT_FILE));
            changes += 1;
        }
        applied.rules = None;
        Ok(changes)
    }

    /// The sandbox of `n`, the node's endpoint and VIPs on it, and the static peers.
    async fn ensure_network(&self, view: &NetView, n: &ViewNetwork) -> Result<usize, NetError> {
        let mut changes = self.ensure_sandbox(view, n).await?;
        let sandbox = self.names.sandbox(n.vni);
        let host_if = names::lb_host(n.vni);
        // The node's address with the subnet's prefix, and every VIP on the network as a /32.
        let (_, prefix) = parse_cidr(&n.subnet)?;
        let mut want: BTreeSet<String> = BTreeSet::new();
        want.insert(format!("{}/{prefix}", n.local_addr));
        for s in &view.services {
            for v in s.vips.iter().filter(|v| v.network_id == n.id) {
                want.insert(format!("{}/32", host_of(&v.addr)));
            }
        }
        let have: BTreeSet<String> = sys::json("ip", None, &["-4", "addr", "show", "dev", &host_if])
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
            .collect();
        let mut lines = Vec::new();
        for a in have.difference(&want) {
            lines.push(format!("addr del {a} dev {host_if}"));
        }
        for a in want.difference(&have) {
            lines.push(format!("addr add {a} dev {host_if}"));
        }
        changes += lines.len();
        sys::batch("ip", None, &lines).await?;

        // Peers: neighbour (address → MAC) and forwarding (MAC → node) entries on the VXLAN device.
        let vx = names::vxlan(n.vni);
        let mut want_peers: BTreeMap<String, String> = BTreeMap::new();
        for p in &n.peers {
            let (addr, _) = parse_cidr(&p.addr)?;
            want_peers.insert(addr.to_string(), p.vtep.clone());
        }
        let neigh = sys::json("ip", Some(&sandbox), &["neigh", "show", "dev", &vx]).await?;
        let have_neigh: BTreeMap<String, String> = neigh
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((e["dst"].as_str()?.to_string(), e["lladdr"].as_str().unwrap_or("").to_string()))
            })
            .collect();
        let fdb = sys::json("bridge", Some(&sandbox), &["fdb", "show", "dev", &vx]).await?;
        let have_fdb: BTreeMap<String, String> = fdb
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["mac"].as_str()?.to_string(), e["dst"].as_str()?.to_string())))
            .collect();
        let mut ip_lines = Vec::new();
        let mut fdb_lines = Vec::new();
        let mut want_fdb: BTreeMap<String, String> = BTreeMap::new();
        for (addr, vtep) in &want_peers {
            let ip: Ipv4Addr = addr.parse().map_err(|_| NetError::Invalid(format!("bad peer {addr}")))?;
            let mac = names::mac(ip);
            if have_neigh.get(addr) != Some(&mac) {
                ip_lines.push(format!("neigh replace {addr} lladdr {mac} dev {vx} nud permanent"));
            }
            want_fdb.insert(mac, vtep.clone());
        }
        for addr in have_neigh.keys() {
            if !want_peers.contains_key(addr) {
                ip_lines.push(format!("neigh del {addr} dev {vx}"));
            }
        }
        for (mac, vtep) in &want_fdb {
            if have_fdb.get(mac) != Some(vtep) {
                if let Some(old) = have_fdb.get(mac) {
                    fdb_lines.push(format!("fdb del {mac} dev {vx} dst {old} self"));
                }
                fdb_lines.push(format!("fdb append {mac} dev {vx} dst {vtep} self permanent"));
            }
        }
        for (mac, vtep) in &have_fdb {
            if !want_fdb.contains_key(mac) && mac != "00:00:00:00:00:00" {
                fdb_lines.push(format!("fdb del {mac} dev {vx} dst {vtep} self"));
            }
        }
        changes += ip_lines.len() + fdb_lines.len();
        sys::batch("ip", Some(&sandbox), &ip_lines).await?;
        sys::batch("bridge", Some(&sandbox), &fdb_lines).await?;
        Ok(changes)
    }

    /// Creates what is missing of `n`'s sandbox: namespace, bridge, VXLAN device, the veth to the
    /// node. Returns how many pieces it created.
    async fn ensure_sandbox(&self, view: &NetView, n: &ViewNetwork) -> Result<usize, NetError> {
        let ns = self.names.sandbox(n.vni);
        let vx = names::vxlan(n.vni);
        let host_if = names::lb_host(n.vni);
        let mut changes = 0;
        if n.local_addr.is_empty() {
            return Err(NetError::NotReady(n.name.clone()));
        }
        let mtu = self.mtu(n, &view.vtep).await.to_string();
        if !netns_exists(&ns) {
            sys::ip(None, &["netns", "add", &ns]).await?;
            sys::ip(Some(&ns), &["link", "set", "lo", "up"]).await?;
            changes += 1;
        }
        if !link_exists(Some(&ns), names::BRIDGE).await {
            sys::ip(Some(&ns), &["link", "add", names::BRIDGE, "type", "bridge"]).await?;
            sys::ip(Some(&ns), &["link", "set", names::BRIDGE, "up"]).await?;
            changes += 1;
        }
        let port = if view.data_port == 0 { DEFAULT_DATA_PORT } else { view.data_port };
        // The device as the kernel has it: None when there is none, else its UDP port (None when
        // iproute2 does not print it: left alone rather than made again on every view).
        let have = sys::json("ip", Some(&ns), &["-d", "link", "show", "dev", &vx])
            .await
            .ok()
            .map(|v| v[0]["linkinfo"]["info_data"]["port"].as_u64());
        let missing = match have {
            None => true,
            // Made with another data-path port (a sandbox left by an earlier cluster): its
            // tunnels would never meet the other nodes'. Made again below.
            Some(Some(p)) if p != u64::from(port) => {
                tracing::info!(
                    device = %vx, netns = %ns, have = p, want = port,
                    "the VXLAN port differs: recreating the device"
                );
                sys::ip(Some(&ns), &["link", "del", &vx]).await?;
                true
            }
            Some(_) => false,
        };
        if missing {
            // A leftover from an interrupted attempt, still in the node's namespace.
            let _ = sys::ip(None, &["link", "del", &vx]).await;
            let port = port.to_string();
            let vni = n.vni.to_string();
            let add = [
                "link",
                "add",
                &vx,
                "mtu",
                &mtu,
                "type",
                "vxlan",
                "id",
                &vni,
                "dstport",
                &port,
                "local",
                &view.vtep,
                "nolearning",
                "proxy",
            ];
            // A device of a sandbox deleted just before may still be on its way out.
            let mut tries = 0;
            loop {
                match sys::ip(None, &add).await {
                    Ok(_) => break,
                    Err(e) if tries < 20 && e.to_string().contains("already exists") => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            sys::ip(None, &["link", "set", &vx, "netns", &ns]).await?;
            sys::ip(Some(&ns), &["link", "set", &vx, "master", names::BRIDGE, "up"]).await?;
            changes += 1;
        }
        if !link_exists(None, &host_if).await {
            let _ = sys::ip(Some(&ns), &["link", "del", names::LB_SANDBOX]).await;
            let local: Ipv4Addr = n
                .local_addr
                .parse()
                .map_err(|_| NetError::Invalid(format!("bad node address {}", n.local_addr)))?;
            sys::ip(
                None,
                &[
                    "link",
                    "add",
                    &host_if,
                    "mtu",
                    &mtu,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    names::LB_SANDBOX,
                    "netns",
                    &ns,
                ],
            )
            .await?;
            sys::ip(Some(&ns), &["link", "set", names::LB_SANDBOX, "master", names::BRIDGE, "up"]).await?;
            sys::ip(None, &["link", "set", &host_if, "address", &names::mac(local), "up"]).await?;
            let _ = sys::sysctl(&format!("net.ipv4.conf.{host_if}.send_redirects"), "0");
            let _ = sys::sysctl(&format!("net.ipv4.conf.{host_if}.rp_filter"), "0");
            changes += 1;
        }
        Ok(changes)
    }

    /// Gives task `task_id` its namespace with one interface per address (in order: the first
    /// network carries its default route and its resolver). Idempotent: a task already attached
    /// is left as it is.
    pub async fn attach(
        &self,
        task_id: &str,
        addrs: &[TaskAddr],
        view: &NetView,
    ) -> Result<Attachment, NetError> {
        let _guard = self.applied.lock().await;
        let ns = self.names.task(task_id);
        let first = addrs.first().ok_or_else(|| NetError::Invalid("the task has no address".into()))?;
        let first_net =
            view.network(&first.network_id).ok_or_else(|| NetError::NotReady(first.network_id.clone()))?;
        if !netns_exists(&ns) {
            sys::ip(None, &["netns", "add", &ns]).await?;
            sys::ip(Some(&ns), &["link", "set", "lo", "up"]).await?;
        }
        for (k, ta) in addrs.iter().enumerate() {
            let n = view.network(&ta.network_id).ok_or_else(|| NetError::NotReady(ta.network_id.clone()))?;
            self.ensure_sandbox(view, n).await?;
            let (ip, _) = parse_cidr(&ta.addr)?;
            let (_, prefix) = parse_cidr(&n.subnet)?;
            let cidr = format!("{ip}/{prefix}");
            let ifname = names::task_if(k);
            let present = sys::json("ip", Some(&ns), &["-4", "addr", "show", "dev", &ifname])
                .await
                .ok()
                .and_then(|v| {
                    v.as_array()?.iter().find_map(|l| {
                        l["addr_info"]
                            .as_array()?
                            .iter()
                            .find(|a| a["local"] == ip.to_string().as_str())
                            .map(|_| ())
                    })
                })
                .is_some();
            if present {
                continue;
            }
            let sandbox = self.names.sandbox(n.vni);
            let veth = names::task_veth(task_id);
            let mtu = self.mtu(n, &view.vtep).await.to_string();
            let _ = sys::ip(Some(&ns), &["link", "del", &ifname]).await;
            let _ = sys::ip(Some(&sandbox), &["link", "del", &veth]).await;
            sys::ip(
                Some(&sandbox),
                &["link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name", &ifname, "netns", &ns],
            )
            .await?;
            sys::ip(Some(&sandbox), &["link", "set", &veth, "master", names::BRIDGE, "up"]).await?;
            sys::ip(Some(&ns), &["link", "set", &ifname, "address", &names::mac(ip), "up"]).await?;
            sys::ip(Some(&ns), &["addr", "add", &cidr, "dev", &ifname]).await?;
        }
        sys::ip(Some(&ns), &["route", "replace", "default", "via", &first_net.local_addr]).await?;
        std::fs::create_dir_all(&self.resolv_dir)
            .map_err(|e| NetError::Invalid(format!("creating {}: {e}", self.resolv_dir.display())))?;
        let resolv_conf = self.resolv_dir.join(format!("{task_id}.conf"));
        let text = format!("nameserver {}\noptions ndots:0\n", first_net.local_addr);
        if std::fs::read_to_string(&resolv_conf).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&resolv_conf, text)
                .map_err(|e| NetError::Invalid(format!("writing {}: {e}", resolv_conf.display())))?;
        }
        Ok(Attachment { netns: Path::new(names::NETNS_DIR).join(&ns), resolv_conf })
    }

    /// Removes a task's namespace (its veths go with it) and its `resolv.conf`.
    pub async fn detach(&self, task_id: &str) -> Result<(), NetError> {
        let _guard = self.applied.lock().await;
        let ns = self.names.task(task_id);
        if netns_exists(&ns) {
            sys::ip(None, &["netns", "del", &ns]).await?;
        }
        let _ = std::fs::remove_file(self.resolv_dir.join(format!("{task_id}.conf")));
        Ok(())
    }

    /// Removes the namespaces of this node's tasks that are not in `live` (left by a crash).
    pub async fn forget_tasks_except(&self, live: &BTreeSet<String>) -> usize {
        let mut removed = 0;
        for ns in list_netns() {
            let Some(task) = self.names.task_of(&ns) else { continue };
            if !live.contains(task) {
                match self.detach(task).await {
                    Ok(()) => {
                        tracing::info!(netns = %ns, "removed the namespace of a task that is gone");
                        removed += 1;
                    }
                    Err(e) => tracing::warn!(netns = %ns, error = %e, "cannot remove a stale task namespace"),
                }
            }
        }
        removed
    }

    /// Removes everything this node created (the node leaves the cluster).
    pub async fn remove_all(&self) {
        for ns in list_netns() {
            if self.names.sandbox_vni(&ns).is_some() || self.names.task_of(&ns).is_some() {
                let _ = sys::ip(None, &["netns", "del", &ns]).await;
            }
        }
        let _ = sys::run("nft", &["delete", "table", "ip", nft::TABLE]).await;
        let _ = std::fs::remove_file(self.state_dir.join(NFT_FILE));
        *self.applied.lock().await = Applied::default();
    }
}

/// Where Docker runs, the node's `FORWARD` policy is `DROP` and only `DOCKER-USER` is the
/// operator's: traffic the node forwards between its overlay endpoints (VIPs, the routing mesh)
/// would be dropped there. With `on`, accept rules for the `shl*` interfaces go first in
/// `DOCKER-USER` (or in `FORWARD` when its policy drops and there is no Docker); without, they are
/// taken out. A node without iptables has no such policy. Returns the rules changed.
async fn let_overlays_through_the_firewall(on: bool) -> Result<usize, NetError> {
    let chain = if sys::run("iptables", &["-S", "DOCKER-USER"]).await.is_ok() {
        "DOCKER-USER"
    } else {
        match sys::run("iptables", &["-S", "FORWARD"]).await {
            Ok(rules) if rules.lines().any(|l| l.trim() == "-P FORWARD DROP") => "FORWARD",
            _ => return Ok(0),
        }
    };
    let pattern = format!("{}+", names::LB_HOST_PREFIX);
    let mut changed = 0;
    for dir in ["-i", "-o"] {
        let rule = [chain, dir, pattern.as_str(), "-j", "ACCEPT"];
        let present = sys::run("iptables", &[&["-C"][..], &rule[..]].concat()).await.is_ok();
        if on && !present {
            sys::run("iptables", &[&["-I"][..], &rule[..]].concat()).await?;
            changed += 1;
        } else if !on && present {
            sys::run("iptables", &[&["-D"][..], &rule[..]].concat()).await?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Deletes a sandbox. Its VXLAN device goes first and at once: a namespace's devices are torn
/// down in the background after `ip netns del`, and until then a new device with the same VNI
/// cannot be made (the network may come back right away).
async fn remove_sandbox(ns: &str, vni: u32) -> Result<(), NetError> {
    let _ = sys::ip(Some(ns), &["link", "del", &names::vxlan(vni)]).await;
    sys::ip(None, &["netns", "del", ns]).await.map(|_| ())
}

/// Connection-tracking entries to backends that are no longer behind a VIP or a published port
/// are deleted: a UDP flow would otherwise stick to a dead task.
async fn forget_removed_backends(before: Option<&nft::Balancing>, after: &nft::Balancing) -> usize {
    let Some(before) = before else { return 0 };
    let mut gone: BTreeSet<&str> = BTreeSet::new();
    for (vip, old) in &before.vips {
        let now = after.vips.get(vip);
        for b in old {
            if now.is_none_or(|n| !n.contains(b)) {
                gone.insert(b);
            }
        }
    }
    for (port, old) in &before.published {
        let now = after.published.get(port);
        for (b, t) in old {
            if now.is_none_or(|n| !n.contains(&(b.clone(), *t))) {
                gone.insert(b);
            }
        }
    }
    for b in &gone {
        // Exit status 1: there was nothing to delete.
        let _ = sys::run("conntrack", &["-D", "--reply-src", b]).await;
    }
    gone.len()
}
