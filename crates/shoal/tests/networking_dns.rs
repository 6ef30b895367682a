//! How quickly the names follow the tasks, on simulated hosts (see `networking.rs`): `tasks.NAME`,
//! asked with dig from a task's namespace at its node's resolver, follows each change the
//! managers record within a second: a scale-up (new addresses appear), a task whose process dies
//! (its address goes) and a drained node (its task's address goes, the replacement's appears).
//!
//! Every command goes to a follower manager, as an operator's would. The time is measured from
//! when `service ps --format json` (through that follower) first shows the change to when the
//! resolver first answers with it, each polled by a thread of its own; the test prints it and
//! allows 1.5 s (the aim is 1 s, plus room for a loaded CI machine).

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::sim::{task_namespaces, two_managers_and_a_worker, Underlay};
use common::{eventually, eventually_or, id_of, running, service_tasks, Node};

/// How long the DNS may lag behind `service ps`.
const ALLOWED: Duration = Duration::from_millis(1500);
/// The sampling period of both pollers.
const EVERY: Duration = Duration::from_millis(20);

/// A task's address on its first network (empty when it has none).
fn addr_of(t: &Value) -> String {
    common::addr_of(t).unwrap_or_default()
}

fn running_addrs(ts: &[Value]) -> BTreeSet<String> {
    ts.iter().filter(|t| running(t)).map(addr_of).collect()
}

/// Asks a node's resolver for a name from a task's namespace.
#[derive(Clone)]
struct Dig {
    netns: String,
    server: String,
}

impl Dig {
    /// The addresses in the answer (none when there is no answer).
    fn ask(&self, name: &str) -> BTreeSet<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["dig", "+short", "+time=1", "+tries=1", &format!("@{}", self.server), name])
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
            .map(str::to_string)
            .collect()
    }
}

/// A condition on the tasks `service ps` lists.
type OnTasks<'a> = Box<dyn Fn(&[Value]) -> bool + Sync + 'a>;
/// A condition on the addresses the resolver answers.
type OnAnswer<'a> = Box<dyn Fn(&BTreeSet<String>) -> bool + Sync + 'a>;

/// A condition on `service ps` and one on the resolver's answer, which should come true together.
struct Change<'a> {
    what: &'a str,
    ps: OnTasks<'a>,
    dns: OnAnswer<'a>,
}

/// Polls `service ps SERVICE` through `fo` and the resolver, each in a thread of its own, from
/// before `act` runs until every change has shown on both sides; returns for each change the
/// resolver's lag behind `service ps` in milliseconds (negative: the resolver was first), and
/// the last `service ps` and answer seen.
fn race(
    fo: &Node,
    service: &str,
    dig: &Dig,
    changes: &[Change<'_>],
    act: impl FnOnce(),
) -> (Vec<i128>, Vec<Value>, BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let name = format!("tasks.{service}");
    let (ps_times, dns_times, last_ps, last_dns) = std::thread::scope(|s| {
        let ps = s.spawn(|| {
            let mut seen: Vec<Option<Instant>> = vec![None; changes.len()];
            let mut last = Vec::new();
            while seen.iter().any(Option::is_none) && Instant::now() < deadline {
                last = service_tasks(fo, service);
                let now = Instant::now();
                for (c, t) in changes.iter().zip(seen.iter_mut()) {
                    if t.is_none() && (c.ps)(&last) {
                        *t = Some(now);
                    }
                }
                std::thread::sleep(EVERY);
            }
            (seen, last)
        });
        let dns = s.spawn(|| {
            let mut seen: Vec<Option<Instant>> = vec![None; changes.len()];
            let mut last = BTreeSet::new();
            while seen.iter().any(Option::is_none) && Instant::now() < deadline {
                last = dig.ask(&name);
                let now = Instant::now();
                for (c, t) in changes.iter().zip(seen.iter_mut()) {
                    if t.is_none() && (c.dns)(&last) {
                        *t = Some(now);
                    }
                }
                std::thread::sleep(EVERY);
            }
            (seen, last)
        });
        act();
        let (ps_times, last_ps) = ps.join().expect("the ps poller");
        let (dns_times, last_dns) = dns.join().expect("the dns poller");
        (ps_times, dns_times, last_ps, last_dns)
    });
    let mut lags = Vec::new();
    for (c, (p, d)) in changes.iter().zip(ps_times.iter().zip(&dns_times)) {
        let (Some(p), Some(d)) = (p, d) else {
            panic!(
                "{}: service ps saw it: {}, the resolver saw it: {}\nlast ps: {last_ps:?}\nlast answer: {last_dns:?}",
                c.what,
                p.is_some(),
                d.is_some()
            );
        };
        let lag = if d >= p {
            d.duration_since(*p).as_millis() as i128
        } else {
            -(p.duration_since(*d).as_millis() as i128)
        };
        eprintln!("{}: tasks.{service} followed {lag} ms after service ps showed it", c.what);
        lags.push(lag);
    }
    (lags, last_ps, last_dns)
}

fn assert_in_time(lags: &[i128], what: &str) {
    for lag in lags {
        assert!(
            *lag < ALLOWED.as_millis() as i128,
            "{what}: the resolver lagged {lag} ms behind the managers"
        );
    }
}

#[test]
fn tasks_name_follows_scaling_crashes_and_drains_within_a_second() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("dns", 3);
    let (hosts, f) = two_managers_and_a_worker(&ul, tmp.path(), &[]);
    let fo = &hosts[f];
    fo.ok(&["network", "create", "front"]);
    // The resolver asked: h3's, from the namespace of a task there.
    fo.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "probe",
        "--driver",
        "process",
        "--network",
        "front",
        "--constraint",
        "node.hostname==h3",
        "sleep",
        "600",
    ]);
    fo.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--driver",
        "process",
        "--network",
        "front",
        "--restart-delay",
        "1s",
        "sleep",
        "600",
    ]);
    let probe = eventually(60, "the probe running", || service_tasks(fo, "probe").into_iter().find(running));
    let probe_id = id_of(&probe);
    let resolv = std::fs::read_to_string(hosts[2].dir.join(format!("data/agent/net/resolv/{probe_id}.conf")))
        .expect("the probe's resolv.conf");
    let dig = Dig {
        netns: format!("{}t-{probe_id}", Underlay::prefix_of(probe["node_id"].as_str().expect("node"))),
        server: resolv.lines().find_map(|l| l.strip_prefix("nameserver ")).expect("nameserver").to_string(),
    };
    let one = eventually(60, "one web task running", || {
        let up = running_addrs(&service_tasks(fo, "web"));
        (up.len() == 1).then_some(up)
    });
    eventually_or(
        30,
        || (dig.ask("tasks.web") == one).then_some(()),
        || format!("tasks.web = {one:?}, the resolver says {:?}", dig.ask("tasks.web")),
    );

    // Scale up 1 → 3: the new tasks' addresses appear.
    let three = [Change {
        what: "scale 1 -> 3",
        ps: Box::new(|ts| running_addrs(ts).len() == 3),
        dns: Box::new(|a| a.len() == 3),
    }];
    let (lags, ps, answer) = race(fo, "web", &dig, &three, || {
        fo.ok(&["service", "scale", "-d", "web=3"]);
    });
    assert_eq!(answer, running_addrs(&ps), "tasks.web after the scale-up");
    assert_in_time(&lags, "scale up");

    // A task's process dies: its address goes.
    let victim = service_tasks(fo, "web")
        .into_iter()
        .find(|t| running(t) && t["node_id"] != probe["node_id"])
        .expect("a web task off h3");
    let (victim_id, victim_addr) = (id_of(&victim), addr_of(&victim));
    let pid = victim["status"]["runtime_id"].as_str().expect("pid").to_string();
    let crash = [Change {
        what: "a task crashed",
        ps: Box::new(|ts| ts.iter().any(|t| id_of(t) == victim_id && t["status"]["state"] != "running")),
        dns: Box::new(|a| !a.is_empty() && !a.contains(&victim_addr)),
    }];
    let (lags, ps, _) = race(fo, "web", &dig, &crash, || {
        let out = Command::new("kill").args(["-KILL", &pid]).output().expect("kill");
        assert!(out.status.success(), "kill {pid}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let state = ps.iter().find(|t| id_of(t) == victim_id).map(|t| t["status"]["state"].clone());
    assert_eq!(state, Some(Value::from("failed")), "the crashed task");
    assert_in_time(&lags, "crash");
    // Its replacement comes (restart delay 1 s) and is in the answer too.
    let again = eventually(60, "three web tasks running again", || {
        let up = running_addrs(&service_tasks(fo, "web"));
        (up.len() == 3).then_some(up)
    });
    eventually(10, "tasks.web with the replacement", || (dig.ask("tasks.web") == again).then_some(()));

    // A node running a task is drained: that task's address goes, its replacement's appears.
    let before = service_tasks(fo, "web");
    let old = before
        .iter()
        .find(|t| running(t) && t["node_id"] != probe["node_id"])
        .cloned()
        .expect("a web task off h3");
    let (old_id, old_addr) = (id_of(&old), addr_of(&old));
    let known_ids: BTreeSet<String> = before.iter().map(id_of).collect();
    let known_addrs: BTreeSet<String> = before.iter().map(addr_of).collect();
    let node = old["node_id"].as_str().expect("node").to_string();
    let hostname = hostname_of(fo, &node);
    let drain = [
        Change {
            what: "drain: the drained task leaves",
            ps: Box::new(|ts| ts.iter().any(|t| id_of(t) == old_id && !running(t))),
            dns: Box::new(|a| !a.is_empty() && !a.contains(&old_addr)),
        },
        Change {
            what: "drain: the replacement arrives",
            ps: Box::new(|ts| ts.iter().any(|t| running(t) && !known_ids.contains(&id_of(t)))),
            dns: Box::new(|a| a.iter().any(|x| !known_addrs.contains(x))),
        },
    ];
    let (lags, ps, answer) = race(fo, "web", &dig, &drain, || {
        fo.ok(&["node", "update", "--availability", "drain", &hostname]);
    });
    assert_in_time(&lags, "drain");
    let new = ps.iter().find(|t| running(t) && !known_ids.contains(&id_of(t))).expect("the replacement");
    assert_ne!(new["node_id"].as_str(), Some(node.as_str()), "the replacement runs elsewhere");
    assert!(answer.contains(&addr_of(new)) && !answer.contains(&old_addr), "{answer:?}");
    eventually(10, "tasks.web = the running tasks", || {
        (dig.ask("tasks.web") == running_addrs(&service_tasks(fo, "web"))).then_some(())
    });

    // Nothing is left of the tasks once the services are gone.
    let mut ids: Vec<String> = service_tasks(fo, "web").iter().map(id_of).collect();
    ids.extend(service_tasks(fo, "probe").iter().map(id_of));
    fo.ok(&["service", "rm", "web", "probe"]);
    eventually(60, "no namespace of their tasks", || task_namespaces(&ids).is_empty().then_some(()));
}

fn hostname_of(n: &Node, node_id: &str) -> String {
    let nodes = n.json(&["node", "ls", "--format", "json"]);
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == node_id))
        .and_then(|x| x["description"]["hostname"].as_str())
        .expect("the node's hostname")
        .to_string()
}
