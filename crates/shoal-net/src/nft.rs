//! The node's one nftables table (`ip shoal`), rendered from the view and replaced atomically.
//!
//! Flat sets and maps only (no chain per service): a VIP is DNATed to
//! `vip . numgen random mod SLOTS → backend`, a published port to
//! `port . numgen random mod SLOTS → backend . target port`, with the backends spread over the
//! slots round-robin. Connections stay with their backend (NAT decides on the first packet).
//! DNATed traffic leaving towards an overlay is SNATed to this node's address there, so replies
//! come back through it; traffic from the overlays to the outside is masqueraded. A VIP with no
//! ready backend is refused (`reject`) rather than answered by a socket of the node.

use crate::names;
use crate::view::NetView;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Slots per VIP or published port: 60 divides evenly among 1-6, 10, 12, 15, 20 and 30 backends.
pub const SLOTS: usize = 60;
pub const TABLE: &str = "shoal";

/// Backends per VIP, and per published (protocol, port) the backends with their target port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balancing {
    pub vips: BTreeMap<String, Vec<String>>,
    pub published: BTreeMap<(String, u16), Vec<(String, u16)>>,
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
            b.published.entry((port.protocol.clone(), port.published)).or_default().extend(backends);
        }
    }
    b
}

/// The table split into its structure (chains, set declarations) and the elements of each set:
/// when only elements change (backends, VIPs, ports), the update is the difference, not the
/// whole table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The table with every set empty.
    pub skeleton: String,
    /// Elements by set name (a map's element is `key : value`).
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// The table with its elements: `nft -f` input that replaces the previous one.
    pub full: String,
    /// Who serves what (to clear the connection tracking of backends that went).
    pub balancing: Balancing,
}

impl Ruleset {
    /// `nft -f` input that turns `old` into `self` in one transaction by changing elements only;
    /// None when the structure differs (then the table is replaced whole).
    pub fn update_from(&self, old: &Ruleset) -> Option<String> {
        if self.skeleton != old.skeleton {
            return None;
        }
        let empty = BTreeSet::new();
        let mut out = String::new();
        for (name, new) in &self.sets {
            let before = old.sets.get(name).unwrap_or(&empty);
            // A map's key is what `delete element` names; a changed value is a delete and an add.
            let key = |e: &String| e.split(" : ").next().unwrap_or(e).to_string();
            let gone: Vec<String> = before.difference(new).map(key).collect();
            let added: Vec<&String> = new.difference(before).collect();
            if !gone.is_empty() {
                let _ = writeln!(out, "delete element ip {TABLE} {name} {{ {} }}", gone.join(", "));
            }
            if !added.is_empty() {
                let added: Vec<&str> = added.iter().map(|s| s.as_str()).collect();
                let _ = writeln!(out, "add element ip {TABLE} {name} {{ {} }}", added.join(", "));
            }
        }
        Some(out)
    }
}

struct Writer {
    full: String,
    skeleton: String,
    sets: BTreeMap<String, BTreeSet<String>>,
}

impl Writer {
    fn text(&mut self, s: &str) {
        self.full.push_str(s);
        self.skeleton.push_str(s);
    }

    /// `set NAME { DECL; elements = { … } }`
    fn set(&mut self, kind: &str, name: &str, decl: &str, items: &[String]) {
        let head = format!("  {kind} {name} {{ {decl};");
        self.text(&head);
        if !items.is_empty() {
            let _ = write!(self.full, " elements = {{ {} }}", items.join(", "));
        }
        self.text(" }\n");
        self.sets.insert(name.to_string(), items.iter().cloned().collect());
    }
}

/// The whole table as `nft -f` input that replaces the previous one in one transaction.
pub fn render(view: &NetView) -> String {
    ruleset(view).full
}

/// The table for `view`, with its structure and elements apart (see [`Ruleset`]).
pub fn ruleset(view: &NetView) -> Ruleset {
    let b = balancing(view);
    // The interface each VIP is reached on (its network's `shl<vni>`).
    let mut vip_if: Vec<String> = Vec::new();
    for svc in &view.services {
        for v in &svc.vips {
            let Some(n) = view.network(&v.network_id) else { continue };
            let addr = crate::host_of(&v.addr);
            if b.vips.get(addr).is_some_and(|bk| !bk.is_empty()) {
                vip_if.push(format!("\"{}\" . {addr}", names::lb_host(n.vni)));
            }
        }
    }
    vip_if.sort();
    vip_if.dedup();
    let mut all_vips: Vec<String> = b.vips.keys().cloned().collect();
    all_vips.sort();
    let mut served = Vec::new();
    let mut vip_map = Vec::new();
    for (vip, backends) in &b.vips {
        if backends.is_empty() {
            continue;
        }
        served.push(vip.clone());
        for slot in 0..SLOTS {
            vip_map.push(format!("{vip} . {slot} : {}", backends[slot % backends.len()]));
        }
    }
    let mut ports: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut port_maps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((proto, published), backends) in &b.published {
        let proto = if proto == "udp" { "udp" } else { "tcp" };
        if backends.is_empty() {
            continue;
        }
        ports.entry(proto).or_default().push(published.to_string());
        for slot in 0..SLOTS {
            let (addr, target) = &backends[slot % backends.len()];
            port_maps.entry(proto).or_default().push(format!("{published} . {slot} : {addr} . {target}"));
        }
    }
    let subnets: Vec<String> = view.networks.iter().map(|n| n.subnet.clone()).collect();

    let mut w = Writer { full: String::new(), skeleton: String::new(), sets: BTreeMap::new() };
    // Creating the table first makes the delete succeed on a node that has none yet.
    w.text(&format!("table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n"));
    w.set("set", "vips_all", "type ipv4_addr", &all_vips);
    w.set("set", "vips", "type ipv4_addr", &served);
    w.set("set", "vips_in", "typeof iifname . ip daddr", &vip_if);
    w.set("map", "vip_backends", "typeof ip daddr . numgen random mod 60 : ip daddr", &vip_map);
    for proto in ["tcp", "udp"] {
        w.set(
            "set",
            &format!("pub_{proto}"),
            &format!("typeof {proto} dport"),
            ports.get(proto).map_or(&[][..], |v| v),
        );
        w.set(
            "map",
            &format!("pub_{proto}_backends"),
            &format!("typeof {proto} dport . numgen random mod 60 : ip daddr . {proto} dport"),
            port_maps.get(proto).map_or(&[][..], |v| v),
        );
    }
    w.set("set", "subnets", "type ipv4_addr; flags interval", &subnets);
    let mut t = String::new();
    // A task reaches the VIPs of its own networks only (the node itself, all of them).
    let dnat_in = "iifname . ip daddr @vips_in dnat to ip daddr . numgen random mod 60 map @vip_backends";
    let dnat = "ip daddr @vips dnat to ip daddr . numgen random mod 60 map @vip_backends";
    let mesh = |hook: &str| {
        let mut s = String::new();
        for proto in ["tcp", "udp"] {
            let _ = writeln!(
                s,
                "    fib daddr type local ip daddr != @vips_all {proto} dport @pub_{proto} dnat to {proto} dport . numgen random mod 60 map @pub_{proto}_backends"
            );
        }
        let _ = hook;
        s
    };
    let _ = write!(
        t,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {dnat_in}\n{}  }}\n",
        mesh("prerouting")
    );
    let _ = write!(
        t,
        "  chain output {{\n    type nat hook output priority -100; policy accept;\n    {dnat}\n{}  }}\n",
        mesh("output")
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
    t.push_str("  }\n");
    t.push_str("}\n");
    w.text(&t);
    Ruleset { skeleton: w.skeleton, sets: w.sets, full: w.full, balancing: b }
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
    fn only_ready_tasks_are_backends_spread_evenly() {
        let b = balancing(&view());
        assert_eq!(b.vips["10.0.1.2"], vec!["10.0.1.3", "10.0.1.4"]);
        assert!(b.vips["10.0.1.6"].is_empty());
        assert_eq!(
            b.published[&("tcp".to_string(), 8080)],
            vec![("10.255.0.3".to_string(), 80), ("10.255.0.4".to_string(), 80)]
        );
        let t = render(&view());
        assert_eq!(t.matches(": 10.0.1.3").count(), SLOTS / 2);
        assert_eq!(t.matches(": 10.0.1.4").count(), SLOTS / 2);
        assert!(!t.contains(": 10.0.1.5"), "an unready task is no backend");
        assert_eq!(t.matches("8080 . ").count(), SLOTS);
    }

    #[test]
    fn a_vip_without_backends_is_refused_not_balanced() {
        let t = render(&view());
        let vips = t.lines().find(|l| l.contains("set vips {")).expect("vips");
        assert!(vips.contains("10.0.1.2") && !vips.contains("10.0.1.6"), "{vips}");
        let all = t.lines().find(|l| l.contains("set vips_all")).expect("vips_all");
        assert!(all.contains("10.0.1.6"), "{all}");
        assert!(t.contains("ip daddr @vips_all reject"));
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
        let mut v = view();
        v.services[0].tasks[0].ready = false;
        let after = ruleset(&v);
        let update = after.update_from(&before).expect("same structure");
        // Slots that pointed at 10.0.1.3 now point at 10.0.1.4: deleted by key and added again.
        assert!(update.contains("delete element ip shoal vip_backends { 10.0.1.2 . 0,"), "{update}");
        assert!(update.contains("add element ip shoal vip_backends { 10.0.1.2 . 0 : 10.0.1.4,"), "{update}");
        assert!(!update.contains("table"), "{update}");
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
    fn an_empty_view_is_a_valid_empty_table() {
        let t = render(&NetView::default());
        assert!(!t.contains("elements"), "{t}");
    }
}
