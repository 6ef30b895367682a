//! Networks the operator's way (networking phase 1: cluster objects and allocation): three
//! managers started with `shoal daemon` + `cluster init` + `cluster join`, networks created and
//! removed through followers, services that join them, the leader killed between commands, and
//! every address the managers hand out checked for duplicates.
//!
//! The tasks use the process driver, each daemon on a simulated host of its own (`common::sim`),
//! so their network namespaces are really built; `networking.rs` checks the traffic. What this
//! suite checks is the allocation: VNIs, subnets, VIPs, task and node addresses, published ports,
//! and the errors.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

mod common;
use common::sim::Underlay;
use common::{eventually, eventually_or, Node};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn log(n: &Node) -> String {
    std::fs::read_to_string(n.dir.join("daemon.log")).unwrap_or_default()
}

/// A daemon on simulated host `i`: tasks on networks need a host of their own (VXLAN endpoint,
/// nftables, resolver).
fn daemon(ul: &Underlay, root: &std::path::Path, name: &str, i: usize) -> Node {
    let mut n = ul.node(root, name, i);
    n.start("daemon");
    n
}

fn voters(n: &Node) -> Option<usize> {
    n.raft().and_then(|r| r["voters"].as_object().map(|v| v.len()))
}

fn ready_nodes(n: &Node) -> Option<usize> {
    let out = n.cli(&["node", "ls", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v.as_array()?.iter().filter(|x| x["status"]["state"] == "ready").count())
}

/// `cluster init` on the first daemon, then the others join with a token read from the newest
/// manager; waits until every manager sees every voter and every node ready.
fn managers(ul: &Underlay, root: &std::path::Path, names: &[&str]) -> Vec<Node> {
    let first = daemon(ul, root, names[0], 1);
    first.ok(&["cluster", "init"]);
    let mut ms = vec![first];
    for name in &names[1..] {
        let n = daemon(ul, root, name, ms.len() + 1);
        let last = &ms[ms.len() - 1];
        let token = last.ok(&["cluster", "join-token", "manager", "-q"]);
        n.ok(&["cluster", "join", "--token", &token, &last.addr()]);
        ms.push(n);
    }
    for m in &ms {
        eventually_or(
            40,
            || (voters(m) == Some(names.len()) && ready_nodes(m) == Some(names.len())).then_some(()),
            || format!("{} managers ready:\n{}", names.len(), log(m)),
        );
    }
    ms
}

/// Index of the leader among `ms` (as every one of them sees it) and of one follower.
fn leader_and_follower(ms: &[Node]) -> (usize, usize) {
    eventually(30, "a leader every manager agrees on", || {
        let views: Vec<(String, String)> = ms
            .iter()
            .map(|m| {
                let r = m.raft()?;
                Some((r["node_id"].as_str()?.to_string(), r["leader_node"]["node_id"].as_str()?.to_string()))
            })
            .collect::<Option<_>>()?;
        let leader = &views[0].1;
        if views.iter().any(|(_, l)| l != leader) {
            return None;
        }
        let li = views.iter().position(|(me, _)| me == leader)?;
        Some((li, (li + 1) % ms.len()))
    })
}

/// The one object `inspect` printed (it prints a list).
fn first(v: Value) -> Value {
    match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    }
}

fn network(n: &Node, name: &str) -> Value {
    first(n.json(&["network", "inspect", name]))
}

/// The tasks of `service` (current and history), from `service ps --format json`.
fn tasks(n: &Node, service: &str) -> Vec<Value> {
    n.json(&["service", "ps", service, "--format", "json"]).as_array().cloned().unwrap_or_default()
}

fn running_with_addresses(n: &Node, service: &str, count: usize) -> Option<Vec<Value>> {
    let running = common::running_tasks(n, service)?;
    let addressed = running.iter().all(|t| t["networks"].as_array().is_some_and(|a| !a.is_empty()));
    (running.len() == count && addressed).then_some(running)
}

/// Every address the managers handed out, per network id, with who holds it: gateways, node
/// addresses, the services' VIPs and the addresses of every task that has not ended. Panics on a
/// duplicate.
fn all_addresses(n: &Node, services: &[&str]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut hold = |net: &str, addr: &str, owner: String| {
        let ip = addr.split('/').next().unwrap_or(addr).to_string();
        let prev = out.entry(net.to_string()).or_default().insert(ip.clone(), owner.clone());
        assert!(prev.is_none(), "{ip} on {net} handed out twice: {} and {owner}", prev.unwrap_or_default());
    };
    let nets = n.json(&["network", "ls", "--format", "json"]);
    for net in nets.as_array().into_iter().flatten() {
        let id = net["id"].as_str().unwrap_or_default();
        hold(id, net["status"]["gateway"].as_str().unwrap_or_default(), "gateway".into());
        let info = network(n, id);
        for p in info["peers"].as_array().into_iter().flatten() {
            hold(id, p["addr"].as_str().unwrap_or_default(), format!("node {}", p["node_id"]));
        }
    }
    for s in services {
        let svc = first(n.json(&["service", "inspect", s]));
        for v in svc["endpoint"]["vips"].as_array().into_iter().flatten() {
            hold(
                v["network_id"].as_str().unwrap_or_default(),
                v["addr"].as_str().unwrap_or_default(),
                format!("vip of {s}"),
            );
        }
        // An ended task's addresses are free again (it keeps them on record only).
        let ended = ["complete", "shutdown", "failed", "rejected", "remove", "orphaned"];
        for t in
            tasks(n, s).into_iter().filter(|t| !ended.contains(&t["status"]["state"].as_str().unwrap_or("")))
        {
            for tn in t["networks"].as_array().into_iter().flatten() {
                for a in tn["addrs"].as_array().into_iter().flatten() {
                    hold(
                        tn["network_id"].as_str().unwrap_or_default(),
                        a.as_str().unwrap_or_default(),
                        format!("task {}", t["id"]),
                    );
                }
            }
        }
    }
    out
}

fn in_subnet(addr: &str, prefix: &str) -> bool {
    addr.starts_with(prefix)
}

#[test]
fn networks_through_followers_with_the_leader_killed_between_commands() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("objs", 3);
    let mut ms = managers(&ul, tmp.path(), &["m1", "m2", "m3"]);
    let (li, fi) = leader_and_follower(&ms);
    let f = &ms[fi];

    // `cluster init` made the routing-mesh network, with an address for every node.
    let ingress = network(f, "ingress");
    assert_eq!(ingress["spec"]["ingress"], true, "{ingress}");
    assert_eq!(
        (ingress["status"]["subnet"].as_str(), ingress["status"]["vni"].as_u64()),
        (Some("10.255.0.0/16"), Some(4096))
    );
    assert_eq!(ingress["peers"].as_array().map(Vec::len), Some(3), "{ingress}");

    // Create through a follower: ids come back, VNIs and subnets are allocated.
    let id = f.ok(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.42.0.0/24",
        "--opt",
        "mtu=1400",
        "--label",
        "team=web",
        "front",
    ]);
    assert_eq!(id.len(), 25, "{id}");
    f.ok(&["network", "create", "back"]);
    let front = network(f, "front");
    assert_eq!(front["id"], id.as_str());
    assert_eq!(
        (front["status"]["vni"].as_u64(), front["status"]["gateway"].as_str(), front["spec"]["mtu"].as_u64()),
        (Some(4097), Some("10.42.0.1"), Some(1400))
    );
    let back = network(f, "back");
    assert_eq!(
        (back["status"]["subnet"].as_str(), back["status"]["vni"].as_u64()),
        (Some("10.0.1.0/24"), Some(4098))
    );
    let peers: BTreeSet<&str> =
        front["peers"].as_array().into_iter().flatten().filter_map(|p| p["addr"].as_str()).collect();
    assert_eq!(peers.len(), 3, "one address per node: {front}");
    assert!(peers.iter().all(|a| in_subnet(a, "10.42.0.")), "{peers:?}");
    let ls = f.ok(&["network", "ls"]);
    assert!(
        ls.lines().next().is_some_and(
            |h| h.split_whitespace().collect::<Vec<_>>() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        ),
        "{ls}"
    );
    assert!(ls.lines().any(|l| l.contains("front") && l.contains("overlay") && l.contains("swarm")), "{ls}");
    assert_eq!(f.ok(&["network", "ls", "-q"]).lines().count(), 3);

    // Refused with a clear message: overlap, bad CIDR, a name taken, an unknown network.
    for (args, want) in [
        (
            vec!["network", "create", "--subnet", "10.42.0.0/16", "other"],
            "subnet 10.42.0.0/16 overlaps network front (10.42.0.0/24)",
        ),
        (
            vec!["network", "create", "--subnet", "10.43.0.5/24", "other"],
            "\"10.43.0.5/24\" has host bits set: the network is 10.43.0.0/24",
        ),
        (vec!["network", "create", "--subnet", "10.43.0.0/30", "other"], "the prefix must be from /8 to /29"),
        (vec!["network", "create", "front"], "a network named \"front\" already exists"),
        (vec!["network", "inspect", "nope"], "network nope not found"),
        (vec!["network", "rm", "nope"], "network nope not found"),
        (
            vec![
                "service",
                "create",
                "-d",
                "--name",
                "x",
                "--network",
                "nope",
                "--driver",
                "process",
                "sleep",
                "300",
            ],
            "network nope not found",
        ),
    ] {
        let out = f.cli(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }

    // A service on a network: a VIP there, and tasks with distinct addresses in the subnet.
    f.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--replicas",
        "3",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    let running = eventually(40, "web's three tasks with addresses", || running_with_addresses(f, "web", 3));
    let addrs: BTreeSet<String> =
        running.iter().filter_map(|t| t["networks"][0]["addrs"][0].as_str().map(str::to_string)).collect();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    assert!(addrs.iter().all(|a| in_subnet(a, "10.42.0.") && a.ends_with("/24")), "{addrs:?}");
    assert!(running.iter().all(|t| t["networks"][0]["network_id"] == id.as_str()));
    let web = first(f.json(&["service", "inspect", "web"]));
    let vip = web["endpoint"]["vips"][0]["addr"].as_str().unwrap_or_default().to_string();
    assert!(in_subnet(&vip, "10.42.0.") && !addrs.contains(&vip), "{web}");
    assert_eq!(web["spec"]["networks"][0]["target"], id.as_str(), "the spec holds the network's id");
    let pretty = f.ok(&["service", "inspect", "--pretty", "web"]);
    assert!(pretty.contains(&format!("VirtualIP:\t{vip}")), "{pretty}");
    let task_id = running[0]["id"].as_str().unwrap_or_default();
    let shown = first(f.json(&["task", "inspect", &task_id[..12]]));
    assert_eq!(shown["networks"], running[0]["networks"]);

    // A network in use cannot go; the error names the service.
    let out = f.cli(&["network", "rm", "front"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("network front is in use by services attached to it: web"),
        "{}",
        stderr(&out)
    );

    // Scale up and down: every address stays unique; what scale-down frees comes back.
    f.ok(&["service", "scale", "-d", "web=5"]);
    eventually(40, "five tasks", || running_with_addresses(f, "web", 5));
    all_addresses(f, &["web"]);
    f.ok(&["service", "scale", "-d", "web=2"]);
    eventually(40, "two tasks and the others gone", || {
        (running_with_addresses(f, "web", 2).is_some() && tasks(f, "web").len() == 2).then_some(())
    });

    // A /29 has room for its gateway, the three nodes, one VIP and one task: the second task
    // stays pending and says why; scaling back frees the slot, removing the service the address.
    f.ok(&["network", "create", "--subnet", "10.77.0.0/29", "small"]);
    f.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "tiny",
        "--network",
        "small",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    eventually(40, "tiny's task", || running_with_addresses(f, "tiny", 1));
    f.ok(&["service", "scale", "-d", "tiny=2"]);
    eventually(40, "tiny's second task pending for want of an address", || {
        tasks(f, "tiny")
            .iter()
            .any(|t| {
                t["status"]["state"] == "pending" && t["status"]["err"] == "no free address in network small"
            })
            .then_some(())
    });
    f.ok(&["service", "scale", "-d", "tiny=1"]);
    eventually(40, "the pending task gone", || (tasks(f, "tiny").len() == 1).then_some(()));
    // Once tiny's task has stopped and is deleted, its address and VIP serve another service
    // (until then tiny2's task waits, pending).
    f.ok(&["service", "rm", "tiny"]);
    f.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "tiny2",
        "--network",
        "small",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    eventually_or(
        60,
        || running_with_addresses(f, "tiny2", 1),
        || {
            format!(
                "tiny2 gets the freed addresses: {:?}\n{}",
                tasks(f, "tiny2"),
                ms.iter().map(log).collect::<Vec<_>>().join("\n----\n")
            )
        },
    );

    // Kill the leader between two commands: the survivors allocate, and nothing is handed out
    // twice, before or after the killed manager is back.
    let before = all_addresses(f, &["web", "tiny2"]);
    ms[li].kill9();
    let s = &ms[fi];
    s.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "api",
        "--network",
        "front",
        "--network",
        "back",
        "--replicas",
        "2",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    s.ok(&["service", "update", "-d", "--network-add", "back", "web"]);
    eventually(40, "api's tasks", || running_with_addresses(s, "api", 2));
    eventually(60, "web's tasks on both networks", || {
        let r = common::running_tasks(s, "web")?;
        (r.len() == 2 && r.iter().all(|t| t["networks"].as_array().is_some_and(|a| a.len() == 2)))
            .then_some(())
    });
    let after = all_addresses(s, &["web", "tiny2", "api"]);
    for (net, held) in &before {
        for (ip, owner) in held
            .iter()
            .filter(|(_, o)| o.starts_with("gateway") || o.starts_with("node") || o.starts_with("vip"))
        {
            assert_eq!(after.get(net).and_then(|h| h.get(ip)), Some(owner), "{ip} on {net} changed hands");
        }
    }
    ms[li].start("daemon");
    let s = &ms[fi];
    for m in &ms {
        eventually_or(40, || (voters(m) == Some(3) && ready_nodes(m) == Some(3)).then_some(()), || log(m));
    }
    let all = ["web", "tiny2", "api"];
    eventually(30, "every replica to show the same allocations", || {
        (all_addresses(&ms[li], &all) == all_addresses(s, &all)).then_some(())
    });
    s.ok(&["service", "update", "-d", "--network-rm", "back", "web"]);

    // Published ports through the routing mesh are reserved cluster-wide.
    s.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "pub1",
        "--publish",
        "published=8080,target=8080,mode=ingress",
        "--driver",
        "process",
        "sleep",
        "300",
    ]);
    let pub1 = first(s.json(&["service", "inspect", "pub1"]));
    assert_eq!(pub1["endpoint"]["vips"][0]["network_id"], ingress["id"], "{pub1}");
    for publish in ["published=8080,target=8080,mode=ingress", "8080:8080"] {
        let out = s.cli(&[
            "service",
            "create",
            "-d",
            "--name",
            "pub2",
            "--publish",
            publish,
            "--driver",
            "process",
            "sleep",
            "300",
        ]);
        assert!(!out.status.success(), "{publish} was accepted");
        assert!(
            stderr(&out).contains("port 8080/tcp is already published by service pub1"),
            "{}",
            stderr(&out)
        );
    }
    let out = s.cli(&["network", "rm", "ingress"]);
    assert!(
        stderr(&out)
            .contains("in use by services that publish ports through the routing mesh (mode=ingress): pub1"),
        "{}",
        stderr(&out)
    );

    // Everything goes: then so can the networks.
    let nodes: Vec<&Node> = ms.iter().collect();
    common::remove_services_and_wait(s, &["web", "tiny2", "api", "pub1"], &nodes);
    for net in ["front", "back", "small"] {
        eventually(60, "the network to be removable", || {
            s.cli(&["network", "rm", net]).status.success().then_some(())
        });
    }
    let left: Vec<String> = s.ok(&["network", "ls", "-q"]).lines().map(str::to_string).collect();
    assert_eq!(left, [ingress["id"].as_str().unwrap_or_default()]);
}
