//! The node's one nftables table (`ip shoal`), rendered from the view.
//!
//! Flat sets and maps, and one small chain per backend count (never one per service): a VIP with
//! `k` ready backends maps to `jump vip<k>` in the verdict map `vip_lb`, and chain `vip<k>` DNATs
//! to `vip . numgen random mod k → backend`, so every backend gets exactly `1/k` of the new
//! connections and a VIP costs `k + 1` elements. Published ports work the same way through
//! `pub_<proto>_lb` and chains `<proto><k>`. Connections stay with their backend (NAT decides on
//! the first packet). DNATed traffic leaving towards an overlay is SNATed to this node's address
//! there, so replies come back through it; traffic from the overlays to the outside is
//! masqueraded. A VIP with no ready backend is refused (`reject`) rather than answered by a
//! socket of the node.
//!
//! A change that keeps the table's structure (backends, VIPs, ports, a new backend count) is sent
//! as element deletes and adds (and new chains) in one transaction; anything else replaces the
//! table whole, also in one transaction.

use crate::names;
use crate::view::NetView;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

pub const TABLE: &str = "shoal";

/// Backends per VIP, and per published port (`tcp/8080`) the backends with their target port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balancing {
    pub vips: BTreeMap<String, Vec<String>>,
    pub published: BTreeMap<String, Vec<(String, u16)>>,
}

/// The key of a published port in [`Balancing::published`].
pub fn port_key(protocol: &str, published: u16) -> String {
    format!("{}/{published}", if protocol == "udp" { "udp" } else { "tcp" })
}

/// Who serves what, from the view: ready tasks only, in a stable order.
pub fn balancing(view: &NetView) -> Balancing {
    let ingress: BTreeSet<&str> = view.networks.iter().filter(|n| n.ingress).map(|n| n.id.as_str()).collect();
    let mut b = Balancing::default();
    for svc in &view.services {
        for vip in &svc.vips {
            if view.network(&vip.network_id).is_none() {
                continue;
            }
            let mut backends: Vec<String> = svc
                .tasks
                .iter()
                .filter(|t| t.ready)
                .flat_map(|t| {
                    t.addrs
                        .iter()
                        .filter(|a| a.network_id == vip.network_id)
                        .map(|a| crate::host_of(&a.addr).to_string())
                })
                .collect();
            backends.sort();
            backends.dedup();
            b.vips.entry(crate::host_of(&vip.addr).to_string()).or_default().extend(backends);
        }
        for port in &svc.ingress_ports {
            let mut backends: Vec<(String, u16)> = svc
                .tasks
                .iter()
                .filter(|t| t.ready)
                .flat_map(|t| {
                    t.addrs
                        .iter()
                        .filter(|a| ingress.contains(a.network_id.as_str()))
                        .map(|a| (crate::host_of(&a.addr).to_string(), port.target))
                })
                .collect();
            backends.sort();
            backends.dedup();
            b.published.entry(port_key(&port.protocol, port.published)).or_default().extend(backends);
        }
    }
    b
}

/// The rule of chain `<kind><k>` (kind `vip`, `tcp` or `udp`): one of `k` backends at random.
fn chain_rule(kind: &str, k: usize) -> String {
    match kind {
        "vip" => format!("dnat to ip daddr . numgen random mod {k} map @vip_backends"),
        proto => format!("dnat to {proto} dport . numgen random mod {k} map @pub_{proto}_backends"),
    }
}

/// The table split into its structure (base chains, set declarations), its balancing chains and
/// the elements of each set: when only elements and chains are added or changed (backends,
/// VIPs, ports), the update is the difference, not the whole table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// The table with every set empty and no balancing chain.
    pub skeleton: String,
    /// The balancing chains: (kind, backend count).
    pub chains: BTreeSet<(String, usize)>,
    /// Elements by set name (a map's element is `key : value`).
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// Who serves what (to clear the connection tracking of backends that went).
    pub balancing: Balancing,
}

impl Ruleset {
    /// `nft -f` input that replaces the previous table with this one in one transaction.
    pub fn full(&self) -> String {
        let mut out = String::with_capacity(
            self.skeleton.len() + 32 * self.sets.values().map(|s| s.len()).sum::<usize>(),
        );
        out.push_str(&self.skeleton);
        for (kind, k) in &self.chains {
            let _ = writeln!(out, "add chain ip {TABLE} {kind}{k}");
            let _ = writeln!(out, "add rule ip {TABLE} {kind}{k} {}", chain_rule(kind, *k));
        }
        for (name, elements) in &self.sets {
            if !elements.is_empty() {
                out.push_str("add element ip ");
                out.push_str(TABLE);
                out.push(' ');
                out.push_str(name);
                out.push_str(" { ");
                join_into(&mut out, elements.iter());
                out.push_str(" }\n");
            }
        }
        out
    }

    /// Whether the kernel holding `old` already holds this table (balancing chains that are no
    /// longer used are harmless and stay until the table is replaced).
    pub fn is_loaded_by(&self, old: &Ruleset) -> bool {
        self.skeleton == old.skeleton && self.sets == old.sets && self.chains.is_subset(&old.chains)
    }

    /// `nft -f` input that turns `old` into `self` in one transaction by adding chains and
    /// changing elements only; None when the structure differs (then the table is replaced
    /// whole). Call [`Ruleset::keep_chains_of`] once it is loaded.
    pub fn update_from(&self, old: &Ruleset) -> Option<String> {
        if self.skeleton != old.skeleton {
            return None;
        }
        let empty = BTreeSet::new();
        let mut out = String::new();
        for (kind, k) in self.chains.difference(&old.chains) {
            let _ = writeln!(out, "add chain ip {TABLE} {kind}{k}");
            let _ = writeln!(out, "add rule ip {TABLE} {kind}{k} {}", chain_rule(kind, *k));
        }
        // Deletes first, in every set, then adds: a map key whose value changes is deleted and
        // added again.
        let mut adds = String::new();
        for (name, new) in &self.sets {
            let before = old.sets.get(name).unwrap_or(&empty);
            let key = |e: &String| e.split(" : ").next().unwrap_or(e).to_string();
            let gone: BTreeSet<String> = before.difference(new).map(key).collect();
            let added: Vec<&String> = new.difference(before).collect();
            if !gone.is_empty() {
                let _ = write!(out, "delete element ip {TABLE} {name} {{ ");
                join_into(&mut out, gone.iter());
                out.push_str(" }\n");
            }
            if !added.is_empty() {
                let _ = write!(adds, "add element ip {TABLE} {name} {{ ");
                join_into(&mut adds, added.into_iter());
                adds.push_str(" }\n");
            }
        }
        for (name, before) in &old.sets {
            if !self.sets.contains_key(name) && !before.is_empty() {
                let keys: BTreeSet<String> =
                    before.iter().map(|e| e.split(" : ").next().unwrap_or(e).to_string()).collect();
                let _ = write!(out, "delete element ip {TABLE} {name} {{ ");
                join_into(&mut out, keys.iter());
                out.push_str(" }\n");
            }
        }
        out.push_str(&adds);
        Some(out)
    }

    /// After [`Ruleset::update_from`] was loaded: the chains the kernel now has.
    pub fn keep_chains_of(&mut self, old: &Ruleset) {
        self.chains.extend(old.chains.iter().cloned());
    }
}

fn join_into<'a>(out: &mut String, items: impl Iterator<Item = &'a String>) {
    for (i, e) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(e);
    }
}

/// The whole table as `nft -f` input that replaces the previous one in one transaction.
pub fn render(view: &NetView) -> String {
    ruleset(view).full()
}

/// The table for `view`, with its structure, chains and elements apart (see [`Ruleset`]).
pub fn ruleset(view: &NetView) -> Ruleset {
    let b = balancing(view);
    let mut chains = BTreeSet::new();
    // Gathered in vectors and sorted once (faster than inserting one by one at 10,000 services).
    let mut vips_in = Vec::new();
    let mut vip_lb = Vec::with_capacity(b.vips.len());
    let mut vip_backends = Vec::with_capacity(2 * b.vips.len());
    // A served VIP is reached on its network's interface (`shl<vni>`) only.
    for svc in &view.services {
        for v in &svc.vips {
            let Some(n) = view.network(&v.network_id) else { continue };
            let addr = crate::host_of(&v.addr);
            if b.vips.get(addr).is_some_and(|bk| !bk.is_empty()) {
                vips_in.push(format!("\"{}\" . {addr}", names::lb_host(n.vni)));
            }
        }
    }
    for (vip, backends) in &b.vips {
        if backends.is_empty() {
            continue;
        }
        chains.insert(("vip".to_string(), backends.len()));
        vip_lb.push(format!("{vip} : jump vip{}", backends.len()));
        for (i, backend) in backends.iter().enumerate() {
            vip_backends.push(format!("{vip} . {i} : {backend}"));
        }
    }
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for proto in ["tcp", "udp"] {
        let mut lb = Vec::new();
        let mut map = Vec::new();
        for (key, backends) in &b.published {
            let Some((p, published)) = key.split_once('/') else { continue };
            if p != proto || backends.is_empty() {
                continue;
            }
            chains.insert((proto.to_string(), backends.len()));
            lb.push(format!("{published} : jump {proto}{}", backends.len()));
            for (i, (addr, target)) in backends.iter().enumerate() {
                map.push(format!("{published} . {i} : {addr} . {target}"));
            }
        }
        sets.insert(format!("pub_{proto}_lb"), lb.into_iter().collect());
        sets.insert(format!("pub_{proto}_backends"), map.into_iter().collect());
    }
    sets.insert("vips_all".into(), b.vips.keys().cloned().collect());
    sets.insert("vips_in".into(), vips_in.into_iter().collect());
    sets.insert("vip_lb".into(), vip_lb.into_iter().collect());
    sets.insert("vip_backends".into(), vip_backends.into_iter().collect());
    sets.insert("subnets".into(), view.networks.iter().map(|n| n.subnet.clone()).collect());
    Ruleset { skeleton: skeleton(view), chains, sets, balancing: b }
}

/// The table's structure: set declarations and base chains, which depend on the networks only.
fn skeleton(view: &NetView) -> String {
    let mut t = String::new();
    // Creating the table first makes the delete succeed on a node that has none yet.
    let _ = writeln!(t, "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{");
    t.push_str("  set vips_all { type ipv4_addr; }\n");
    t.push_str("  set vips_in { typeof iifname . ip daddr; }\n");
    t.push_str("  map vip_lb { type ipv4_addr : verdict; }\n");
    t.push_str("  map vip_backends { typeof ip daddr . numgen random mod 2 : ip daddr; }\n");
    for proto in ["tcp", "udp"] {
        let _ = writeln!(t, "  map pub_{proto}_lb {{ type inet_service : verdict; }}");
        let _ = writeln!(
            t,
            "  map pub_{proto}_backends {{ typeof {proto} dport . numgen random mod 2 : ip daddr . {proto} dport; }}"
        );
    }
    t.push_str("  set subnets { type ipv4_addr; flags interval; }\n");
    // A task reaches the VIPs of its own networks only (the node itself, all of them).
    let mut mesh = String::new();
    for proto in ["tcp", "udp"] {
        let _ = writeln!(
            mesh,
            "    fib daddr type local ip daddr != @vips_all {proto} dport vmap @pub_{proto}_lb"
        );
    }
    let _ = write!(
        t,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname . ip daddr @vips_in ip daddr vmap @vip_lb\n{mesh}  }}\n"
    );
    let _ = write!(
        t,
        "  chain output {{\n    type nat hook output priority -100; policy accept;\n    ip daddr vmap @vip_lb\n{mesh}  }}\n"
    );
    t.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    for n in &view.networks {
        if n.local_addr.is_empty() {
            continue;
        }
        let _ =
            writeln!(t, "    oifname \"{}\" ct status dnat snat to {}", names::lb_host(n.vni), n.local_addr);
    }
    let _ = writeln!(t, "    ip saddr @subnets oifname != \"{}*\" masquerade", names::LB_HOST_PREFIX);
    t.push_str("  }\n");
    t.push_str(
        "  chain input {\n    type filter hook input priority filter; policy accept;\n    ip daddr @vips_all reject\n  }\n",
    );
    // Networks are isolated: the node routes between its overlay endpoints, but forwards from one
    // network to another only what the VIPs or the mesh translated.
    t.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    for n in &view.networks {
        let _ = writeln!(
            t,
            "    iifname \"{i}\" oifname \"{p}*\" oifname != \"{i}\" ct status & dnat == 0 drop",
            i = names::lb_host(n.vni),
            p = names::LB_HOST_PREFIX
        );
    }
    t.push_str("  }\n}\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{ViewAddr, ViewNetwork, ViewPort, ViewService, ViewTask};

    fn view() -> NetView {
        let net = |id: &str, vni, subnet: &str, local: &str, ingress| ViewNetwork {
            id: id.into(),
            name: id.into(),
            vni,
            subnet: subnet.into(),
            local_addr: local.into(),
            ingress,
            ..Default::default()
        };
        let task = |id: &str, addrs: &[(&str, &str)], ready| ViewTask {
            id: id.into(),
            addrs: addrs
                .iter()
                .map(|(n, a)| ViewAddr { network_id: (*n).into(), addr: (*a).into() })
                .collect(),
            ready,
            ..Default::default()
        };
        NetView {
            networks: vec![
                net("n1", 4097, "10.0.1.0/24", "10.0.1.250", false),
                net("in", 4096, "10.255.0.0/16", "10.255.0.9", true),
            ],
            services: vec![
                ViewService {
                    name: "web".into(),
                    vips: vec![
                        ViewAddr { network_id: "n1".into(), addr: "10.0.1.2".into() },
                        ViewAddr { network_id: "in".into(), addr: "10.255.0.2".into() },
                    ],
                    ingress_ports: vec![ViewPort { protocol: "tcp".into(), published: 8080, target: 80 }],
                    tasks: vec![
                        task("a", &[("n1", "10.0.1.3"), ("in", "10.255.0.3")], true),
                        task("b", &[("n1", "10.0.1.4"), ("in", "10.255.0.4")], true),
                        task("c", &[("n1", "10.0.1.5"), ("in", "10.255.0.5")], false),
                    ],
                    ..Default::default()
                },
                ViewService {
                    name: "idle".into(),
                    vips: vec![ViewAddr { network_id: "n1".into(), addr: "10.0.1.6".into() }],
                    tasks: vec![task("d", &[("n1", "10.0.1.7")], false)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_tasks_are_backends_each_exactly_once() {
        let b = balancing(&view());
        assert_eq!(b.vips["10.0.1.2"], vec!["10.0.1.3", "10.0.1.4"]);
        assert!(b.vips["10.0.1.6"].is_empty());
        assert_eq!(
            b.published["tcp/8080"],
            vec![("10.255.0.3".to_string(), 80), ("10.255.0.4".to_string(), 80)]
        );
        let r = ruleset(&view());
        // Two ready backends: the VIP jumps to the chain that picks one of two, each named once.
        assert!(r.sets["vip_lb"].contains("10.0.1.2 : jump vip2"), "{:?}", r.sets["vip_lb"]);
        assert!(r.sets["vip_backends"].contains("10.0.1.2 . 0 : 10.0.1.3"));
        assert!(r.sets["vip_backends"].contains("10.0.1.2 . 1 : 10.0.1.4"));
        assert!(r.sets["pub_tcp_lb"].contains("8080 : jump tcp2"));
        assert!(r.sets["pub_tcp_backends"].contains("8080 . 1 : 10.255.0.4 . 80"));
        let t = r.full();
        assert!(!t.contains("10.0.1.5"), "an unready task is no backend");
        assert!(
            t.contains("add rule ip shoal vip2 dnat to ip daddr . numgen random mod 2 map @vip_backends"),
            "{t}"
        );
        assert!(t.contains(
            "add rule ip shoal tcp2 dnat to tcp dport . numgen random mod 2 map @pub_tcp_backends"
        ));
        // k + 1 elements per balanced VIP: web's two VIPs (front and ingress), two backends each.
        assert_eq!(r.sets["vip_backends"].len() + r.sets["vip_lb"].len(), 6);
    }

    #[test]
    fn a_vip_without_backends_is_refused_not_balanced() {
        let r = ruleset(&view());
        assert!(r.sets["vip_lb"].iter().all(|e| !e.starts_with("10.0.1.6 ")), "{:?}", r.sets["vip_lb"]);
        assert!(r.sets["vips_all"].contains("10.0.1.6"));
        assert!(r.sets["vips_in"].contains("\"shl4097\" . 10.0.1.2"));
        assert!(!r.sets["vips_in"].iter().any(|e| e.ends_with("10.0.1.6")));
        assert!(r.skeleton.contains("ip daddr @vips_all reject"));
    }

    #[test]
    fn replies_come_back_through_this_node() {
        let t = render(&view());
        assert!(t.contains("oifname \"shl4097\" ct status dnat snat to 10.0.1.250"), "{t}");
        assert!(t.contains("oifname \"shl4096\" ct status dnat snat to 10.255.0.9"), "{t}");
        assert!(t.starts_with("table ip shoal\ndelete table ip shoal\n"));
    }

    #[test]
    fn networks_do_not_route_into_each_other() {
        let t = render(&view());
        assert!(
            t.contains(
                "iifname \"shl4097\" oifname \"shl*\" oifname != \"shl4097\" ct status & dnat == 0 drop"
            ),
            "{t}"
        );
    }

    #[test]
    fn a_backend_change_is_an_element_update_and_a_new_network_a_replacement() {
        let before = ruleset(&view());
        // A third backend: a new chain for three, the VIP's jump replaced, one backend added.
        let mut v = view();
        v.services[0].tasks[2].ready = true;
        let mut after = ruleset(&v);
        let update = after.update_from(&before).expect("same structure");
        assert!(update.starts_with("add chain ip shoal tcp3\n"), "{update}");
        assert!(
            update.contains("add chain ip shoal vip3\nadd rule ip shoal vip3 dnat to ip daddr . numgen random mod 3 map @vip_backends\n"),
            "{update}"
        );
        assert!(update.contains("delete element ip shoal vip_lb { 10.0.1.2, 10.255.0.2 }"), "{update}");
        assert!(update.contains("add element ip shoal vip_lb { 10.0.1.2 : jump vip3, "), "{update}");
        assert!(update.contains("add element ip shoal vip_backends { 10.0.1.2 . 2 : 10.0.1.5, "), "{update}");
        assert!(!update.contains("table"), "{update}");
        // Every delete comes before any add (a changed map value is a delete and an add).
        let last_delete = update.rfind("delete element").expect("deletes");
        let first_add = update.find("add element").expect("adds");
        assert!(last_delete < first_add, "{update}");
        after.keep_chains_of(&before);
        assert!(after.chains.contains(&("vip".to_string(), 2)), "the kernel keeps the chain for two");
        // Back to two: no chain to add, the chain for three stays, nothing else changes twice.
        let back = ruleset(&view());
        let update = back.update_from(&after).expect("same structure");
        assert!(!update.contains("add chain"), "{update}");
        assert!(update.contains("add element ip shoal vip_lb { 10.0.1.2 : jump vip2, "), "{update}");
        assert!(update.contains("delete element ip shoal vip_backends { 10.0.1.2 . 2, "), "{update}");
        assert!(back.is_loaded_by(&before) && !back.is_loaded_by(&after));
        assert_eq!(ruleset(&view()).update_from(&before).as_deref(), Some(""), "no change, nothing to do");
        let mut v = view();
        v.networks.push(ViewNetwork {
            id: "n2".into(),
            vni: 4098,
            subnet: "10.0.2.0/24".into(),
            local_addr: "10.0.2.9".into(),
            ..Default::default()
        });
        assert_eq!(ruleset(&v).update_from(&before), None, "new chains: the table is replaced");
    }

    #[test]
    fn the_ruleset_reads_back_from_its_saved_form() {
        let r = ruleset(&view());
        let text = serde_json::to_string(&r).expect("json");
        let back: Ruleset = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
        assert!(r.is_loaded_by(&back));
    }

    #[test]
    fn an_empty_view_is_a_valid_empty_table() {
        let t = render(&NetView::default());
        assert!(!t.contains("add element"), "{t}");
    }
}
