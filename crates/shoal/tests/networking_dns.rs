//! How quickly the names follow the tasks, on simulated hosts (see `networking.rs`): `tasks.NAME`,
//! asked with dig from a task's namespace at its node's resolver, follows each change the
//! managers record within a second: a scale-up (new addresses appear), a task whose process dies
//! (its address goes) and a drained node (its task's address goes, the replacement's appears).
//!
//! Every command goes to a follower manager, as an operator's would. The time is measured from
//! when `service ps --format json` (through that follower) first shows the change to when the
//! resolver first answers with it, each polled by a thread of its own; the test prints it and
//! allows 1.5 s (the aim is 1 s, plus room for a loaded CI machine).
//!
//! A service's own DNS servers (`--dns`) on an overlay network: the node's resolver answers the
//! cluster's names and forwards the rest, from that service's task only, to a tiny DNS server the
//! test runs on the underlay; another task on the same node still asks the node's resolvers.

use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::sim::{task_namespaces, two_managers_and_a_worker, Underlay};
use common::{eventually, eventually_or, id_of, running, service_tasks, DockerImage, Node};

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
        self.ask_with(name, &[])
    }

    /// [`Dig::ask`] with more dig options (`+tcp`).
    fn ask_with(&self, name: &str, opts: &[&str]) -> BTreeSet<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["dig", "+short", "+time=1", "+tries=1"])
            .args(opts)
            .args([&format!("@{}", self.server), name])
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

/// The zone the test's own DNS server answers: every name in it is [`EXTERNAL_ADDR`].
const EXTERNAL_ZONE: &str = "shoal-test.example";
const EXTERNAL_ADDR: [u8; 4] = [203, 0, 113, 77];

/// The DNS answer to `query` (the wire format, by hand: one question, A records only): names in
/// [`EXTERNAL_ZONE`] get [`EXTERNAL_ADDR`] (no record for other types), others NXDOMAIN. None for
/// what is not a query; also returns the name asked.
fn external_answer(query: &[u8]) -> Option<(Vec<u8>, String)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).to_ascii_lowercase());
        at += 1 + len;
    }
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let question_end = at + 5;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");
    let ours = name == EXTERNAL_ZONE || name.ends_with(&format!(".{EXTERNAL_ZONE}"));
    let answer = ours && qtype == 1;
    // QR, the query's RD, RA; NXDOMAIN when not ours.
    let flags = [0x80 | (query[2] & 0x01), 0x80 | if ours { 0 } else { 3 }];
    let mut r = vec![query[0], query[1], flags[0], flags[1], 0, 1, 0, u8::from(answer), 0, 0, 0, 0];
    r.extend_from_slice(question);
    if answer {
        // The question's name (a pointer to offset 12), A, IN, TTL 60, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&EXTERNAL_ADDR);
    }
    Some((r, name))
}

/// A DNS server on UDP port 53 of `addr` in network namespace `netns`, answering with
/// [`external_answer`] and keeping the names it was asked; it stops when dropped.
struct ExternalDns {
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExternalDns {
    fn start(netns: &str, addr: &str) -> ExternalDns {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("the namespace");
        let at = format!("{addr}:53");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (asked2, stop2) = (asked.clone(), stop.clone());
        // A thread of its own enters the namespace; its socket stays there.
        let thread = std::thread::spawn(move || {
            let bound = rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| e.to_string())
            .and_then(|()| std::net::UdpSocket::bind(&at).map_err(|e| e.to_string()))
            .and_then(|s| {
                s.set_read_timeout(Some(Duration::from_millis(100))).map(|()| s).map_err(|e| e.to_string())
            });
            let sock = match bound {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 4096];
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if let Some((resp, name)) = external_answer(&buf[..n]) {
                    asked2.lock().expect("asked").push(name);
                    let _ = sock.send_to(&resp, from);
                }
            }
        });
        let ready = ready_rx.recv().expect("the DNS server thread");
        ready.unwrap_or_else(|e| panic!("the test's DNS server on {addr}:53 in {netns}: {e}"));
        ExternalDns { asked, stop, thread: Some(thread) }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("asked").clone()
    }
}

impl Drop for ExternalDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn external_answers_are_the_tests_own() {
    // The query dig sends for `a.shoal-test.example` A (id 0x1234, RD), and one for another name.
    let q = |name: &str, qtype: u8| {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, qtype, 0, 1]);
        m
    };
    let (r, name) = external_answer(&q("A.shoal-test.example", 1)).expect("an answer");
    assert_eq!(name, "a.shoal-test.example");
    assert_eq!(&r[..12], &[0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    assert_eq!(&r[r.len() - 4..], &EXTERNAL_ADDR);
    let (r, _) = external_answer(&q("elsewhere.example", 1)).expect("an answer");
    assert_eq!(&r[2..8], &[0x81, 0x83, 0, 1, 0, 0], "NXDOMAIN");
    let (r, _) = external_answer(&q("a.shoal-test.example", 28)).expect("an answer");
    assert_eq!(&r[2..8], &[0x81, 0x80, 0, 1, 0, 0], "AAAA: no record");
}

/// A single-node cluster on host 1 of `ul` with a network `front`, ready.
fn one_node_with_a_network(ul: &Underlay, root: &std::path::Path) -> Node {
    let mut n = ul.node(root, "h1", 1);
    n.start("dev");
    eventually(30, "the node ready", || {
        let nodes = n.cli(&["node", "ls", "--format", "json"]);
        let v: Value = serde_json::from_slice(&nodes.stdout).ok()?;
        (v.as_array()?.iter().filter(|x| x["status"]["state"] == "ready").count() == 1).then_some(())
    });
    n.ok(&["network", "create", "front"]);
    n
}

/// The running task of `service`: its id, and a [`Dig`] from its namespace at its resolver.
fn dig_of(n: &Node, service: &str) -> (String, Dig) {
    let t =
        eventually(90, &format!("{service} running"), || service_tasks(n, service).into_iter().find(running));
    let id = id_of(&t);
    let resolv = std::fs::read_to_string(n.dir.join(format!("data/agent/net/resolv/{id}.conf")))
        .expect("the task's resolv.conf from the agent");
    let dig = Dig {
        netns: format!("{}t-{id}", Underlay::prefix_of(t["node_id"].as_str().expect("node"))),
        server: resolv.lines().find_map(|l| l.strip_prefix("nameserver ")).expect("nameserver").to_string(),
    };
    (id, dig)
}

/// The address the test's server gives every name in its zone.
fn external_answer_set() -> BTreeSet<String> {
    BTreeSet::from([std::net::Ipv4Addr::from(EXTERNAL_ADDR).to_string()])
}

/// `name` asked from `dig`'s task gets the test's server's answer (within 30 s).
fn answers_from_the_tests_server(dig: &Dig, name: &str) {
    eventually_or(
        30,
        || (dig.ask(name) == external_answer_set()).then_some(()),
        || format!("{name} from {}: {:?}", dig.netns, dig.ask(name)),
    );
}

/// The tasks of a service with `--dns` and of one without, on the same node and network: the
/// first's other names go to its server, the second's to the node's resolvers; both resolve the
/// cluster's names. Its resolv.conf keeps naming Shoal's resolver, with its search domain.
#[test]
fn a_tasks_own_dns_servers_answer_what_the_cluster_does_not_own() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("dnsown", 1);
    // The test's DNS server, on the underlay next to the node (which reaches it from its own
    // namespace, where its resolver runs).
    let external = ExternalDns::start(&ul.name(), "198.51.100.100");
    let n = one_node_with_a_network(&ul, tmp.path());
    let seen = tmp.path().join("own.resolv");
    let script = format!("cat /etc/resolv.conf > {0}.tmp && mv {0}.tmp {0}; exec sleep 600", seen.display());
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "own",
        "--driver",
        "process",
        "--network",
        "front",
        "--dns",
        "198.51.100.100",
        "--dns-search",
        EXTERNAL_ZONE,
        "sh",
        "-c",
        &script,
    ]);
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "plain",
        "--driver",
        "process",
        "--network",
        "front",
        "sleep",
        "600",
    ]);
    let (own_id, own) = dig_of(&n, "own");
    let (plain_id, plain) = dig_of(&n, "plain");

    // Inside the task: Shoal's resolver, with the service's search domain.
    let inside =
        eventually(30, "the task's view of /etc/resolv.conf", || std::fs::read_to_string(&seen).ok());
    let nameservers: Vec<&str> = inside.lines().filter_map(|l| l.strip_prefix("nameserver ")).collect();
    assert_eq!(nameservers, [own.server.as_str()], "{inside}");
    assert!(inside.lines().any(|l| l == format!("search {EXTERNAL_ZONE}")), "{inside}");

    // Cluster names resolve for both, as before.
    for (who, dig) in [("own", &own), ("plain", &plain)] {
        eventually_or(
            30,
            || (dig.ask("own").len() == 1 && dig.ask("tasks.plain").len() == 1).then_some(()),
            || format!("{who}: own = {:?}, tasks.plain = {:?}", dig.ask("own"), dig.ask("tasks.plain")),
        );
    }
    // The external name: the test's server answers the task with --dns, over UDP and TCP.
    answers_from_the_tests_server(&own, "ext.shoal-test.example");
    assert_eq!(own.ask_with("tcp.shoal-test.example", &["+tcp"]), external_answer_set(), "over TCP");
    assert!(external.asked().iter().any(|a| a == "tcp.shoal-test.example"), "{:?}", external.asked());
    // The other task asks the node's resolvers: never the test's server.
    assert!(
        plain.ask("plain.shoal-test.example").is_empty(),
        "the task without --dns got the server's answer"
    );
    assert!(
        !external.asked().iter().any(|a| a == "plain.shoal-test.example"),
        "the task without --dns reached the test's server: {:?}",
        external.asked()
    );

    n.ok(&["service", "rm", "own", "plain"]);
    let ids = [own_id, plain_id];
    eventually(60, "no namespace of their tasks", || task_namespaces(&ids).is_empty().then_some(()));
}

/// The same with the docker driver: Docker gets no DNS servers of its own for a task in its infra
/// container's namespace; the container's resolv.conf names Shoal's resolver (with the service's
/// option), which forwards to the service's server.
#[test]
fn a_docker_tasks_own_dns_servers_are_asked_through_shoals_resolver() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("dnsdock", 1);
    let image = DockerImage::import(&tmp.path().join("img"), "shoal-dnsown");
    let external = ExternalDns::start(&ul.name(), "198.51.100.100");
    let n = one_node_with_a_network(&ul, tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let mount = format!("type=bind,source={},target=/out", out.display());
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "dock",
        "--driver",
        "docker",
        "--network",
        "front",
        "--dns",
        "198.51.100.100",
        "--dns-option",
        "ndots:2",
        "--mount",
        &mount,
        &image.0,
        "sh",
        "-c",
        "busybox cat /etc/resolv.conf > /out/resolv.tmp && busybox mv /out/resolv.tmp /out/resolv; \
         exec busybox sleep 600",
    ]);
    let (id, dock) = dig_of(&n, "dock");
    let inside = eventually(30, "the container's /etc/resolv.conf", || {
        std::fs::read_to_string(out.join("resolv")).ok()
    });
    let nameservers: Vec<&str> = inside.lines().filter_map(|l| l.strip_prefix("nameserver ")).collect();
    assert_eq!(nameservers, [dock.server.as_str()], "{inside}");
    assert!(inside.lines().any(|l| l.starts_with("options") && l.contains("ndots:2")), "{inside}");
    answers_from_the_tests_server(&dock, "dock.shoal-test.example");
    assert!(external.asked().iter().any(|a| a == "dock.shoal-test.example"), "{:?}", external.asked());
    eventually(30, "dock by name", || (dock.ask("dock").len() == 1).then_some(()));

    n.ok(&["service", "rm", "dock"]);
    eventually(60, "no namespace of its task", || {
        task_namespaces(std::slice::from_ref(&id)).is_empty().then_some(())
    });
}
