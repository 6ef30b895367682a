//! The operator's path, as a Swarm operator walks it: `shoal daemon` on every node (never
//! `dev`), `cluster init` on a running daemon, joins with tokens read from whichever manager is
//! at hand, every command sent to followers as well as the leader, the leader killed or frozen
//! between commands, role changes while writes continue, and every daemon restarted one by one
//! with tasks running. Tasks use the process driver: the runtime is not the point here.

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{alive, eventually, eventually_or, Node};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn log(n: &Node) -> String {
    std::fs::read_to_string(n.dir.join("daemon.log")).unwrap_or_default()
}

fn hostname(n: &Node) -> &str {
    n.dir.file_name().and_then(|s| s.to_str()).unwrap_or("n")
}

/// This node's Raft view: (its node id, the leader's node id).
fn leader_of(n: &Node) -> Option<(String, String)> {
    let r = n.raft()?;
    Some((r["node_id"].as_str()?.to_string(), r["leader_node"]["node_id"].as_str()?.to_string()))
}

/// Index of the leader among `ms` (as the first live one sees it) and of one follower.
fn leader_and_follower(ms: &[&Node]) -> (usize, usize) {
    eventually(30, "a leader every manager agrees on", || {
        let views: Vec<(String, String)> = ms.iter().map(|m| leader_of(m)).collect::<Option<_>>()?;
        let leader = &views[0].1;
        if views.iter().any(|(_, l)| l != leader) {
            return None;
        }
        let li = views.iter().position(|(me, _)| me == leader)?;
        let fi = (0..ms.len()).find(|i| *i != li)?;
        Some((li, fi))
    })
}

/// `inspect` answers with one object or a list of them: the first.
fn first(v: Value) -> Value {
    match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    }
}

fn voters(n: &Node) -> Option<usize> {
    n.raft().and_then(|r| r["voters"].as_object().map(|v| v.len()))
}

fn ready_nodes(n: &Node) -> Option<Vec<String>> {
    let out = n.cli(&["node", "ls", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut names: Vec<String> = v
        .as_array()?
        .iter()
        .filter(|x| x["status"]["state"] == "ready")
        .filter_map(|x| x["description"]["hostname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

/// The pids of `service`'s running tasks, sorted (None: the list could not be read).
fn running_pids(n: &Node, service: &str) -> Option<Vec<u32>> {
    let mut pids: Vec<u32> = common::running_tasks(n, service)?
        .iter()
        .filter_map(|t| t["status"]["runtime_id"].as_str()?.parse().ok())
        .collect();
    pids.sort();
    Some(pids)
}

/// Starts `shoal daemon` on `name` (no cluster yet).
fn daemon(root: &std::path::Path, name: &str) -> Node {
    let mut n = Node::new(root, name);
    n.start("daemon");
    n
}

/// `cluster init` on a running daemon, then managers `names[1..]` join with a token read from
/// the first one. Waits until every manager sees every voter and every node is ready.
fn managers(root: &std::path::Path, names: &[&str]) -> Vec<Node> {
    let first = daemon(root, names[0]);
    let out = first.ok(&["cluster", "init"]);
    assert!(out.contains("initialized"), "{out}");
    let mut ms = vec![first];
    for name in &names[1..] {
        let n = daemon(root, name);
        // The token is read from the newest manager: a follower, after the first join.
        let token = ms[ms.len() - 1].ok(&["cluster", "join-token", "manager", "-q"]);
        let via = ms[ms.len() - 1].addr();
        n.ok(&["cluster", "join", "--token", &token, &via]);
        ms.push(n);
    }
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    for m in &ms {
        eventually_or(
            40,
            || (voters(m) == Some(names.len()) && ready_nodes(m).as_ref() == Some(&want)).then_some(()),
            || format!("{} voters and ready nodes on {}:\n{}", names.len(), hostname(m), log(m)),
        );
    }
    ms
}

#[test]
fn init_on_a_running_daemon_then_workers_join_and_run_tasks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = daemon(tmp.path(), "m1");
    let out = m.ok(&["cluster", "init"]);
    assert!(out.contains("initialized"), "{out}");
    // No restart: the node registers, its agent runs tasks, its listener admits joiners.
    eventually_or(20, || (ready_nodes(&m)? == vec!["m1".to_string()]).then_some(()), || log(&m));
    let health = m.json(&["cluster", "health", "--format", "json"]);
    assert_eq!(health.as_array().map(Vec::len), Some(1), "{health}");
    let w = daemon(tmp.path(), "w1");
    let token = m.ok(&["cluster", "join-token", "worker", "-q"]);
    let out = w.ok(&["cluster", "join", "--token", &token, &m.addr()]);
    assert!(out.contains("worker"), "{out}");
    eventually(30, "both nodes ready", || (ready_nodes(&m)?.len() == 2).then_some(()));
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "s",
        "--driver",
        "process",
        "--replicas",
        "2",
        "sleep",
        "300",
    ]);
    eventually(30, "two running tasks", || (running_pids(&m, "s")?.len() == 2).then_some(()));
    // `cluster join` on a node that is already in a cluster says so, on a worker too.
    for n in [&m, &w] {
        let again = n.cli(&["cluster", "join", "--token", &token, &m.addr()]);
        assert!(!again.status.success());
        assert!(stderr(&again).contains("already"), "{}", stderr(&again));
    }
    common::remove_services_and_wait(&m, &["s"], &[&m, &w]);
}

#[test]
fn a_second_daemon_cannot_take_over_a_running_daemons_socket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = daemon(tmp.path(), "m1");
    m.ok(&["cluster", "init"]);
    eventually(20, "m1 ready", || (ready_nodes(&m)? == vec!["m1".to_string()]).then_some(()));
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    let out = Command::new(common::BIN)
        .arg("daemon")
        .arg("--data-dir")
        .arg(other.join("data"))
        .arg("--api-socket")
        .arg(m.dir.join("shoal.sock"))
        .args(["--listen-addr", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--ui-addr", "off"])
        .stdout(Stdio::null())
        .output()
        .expect("second daemon");
    assert!(!out.status.success(), "the second daemon must refuse to start");
    assert!(stderr(&out).contains("another daemon is serving"), "{}", stderr(&out));
    // The first daemon still answers on its socket.
    assert_eq!(ready_nodes(&m), Some(vec!["m1".to_string()]));
}

/// Every mutating command, sent to a follower; then the leader is killed between commands and
/// the survivors take the next ones; then every daemon restarts in turn with tasks running.
#[test]
fn every_write_through_a_follower_and_across_leader_failures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ms = managers(tmp.path(), &["m1", "m2", "m3"]);
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let f = &ms[fi];

    // A worker joins with a token read from a follower.
    let w = daemon(tmp.path(), "w1");
    let token = f.ok(&["cluster", "join-token", "worker", "-q"]);
    w.ok(&["cluster", "join", "--token", &token, &f.addr()]);
    eventually(30, "four ready nodes", || (ready_nodes(f)?.len() == 4).then_some(()));

    // Service verbs through the follower.
    f.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--driver",
        "process",
        "--replicas",
        "2",
        "sleep",
        "300",
    ]);
    eventually(30, "two tasks", || (running_pids(f, "web")?.len() == 2).then_some(()));
    f.ok(&["service", "update", "-d", "--env-add", "A=1", "web"]);
    eventually(30, "the update", || {
        let s = first(f.json(&["service", "inspect", "web"]));
        (s["spec"]["task_template"]["env"]["A"] == "1").then_some(())
    });
    f.ok(&["service", "scale", "-d", "web=3"]);
    eventually(30, "three tasks", || (running_pids(f, "web")?.len() == 3).then_some(()));
    f.ok(&["service", "rollback", "-d", "web"]);
    eventually(30, "the rollback to 2 replicas", || {
        let s = first(f.json(&["service", "inspect", "web"]));
        (s["spec"]["mode"]["replicated"]["replicas"] == 2 && running_pids(f, "web")?.len() == 2).then_some(())
    });
    f.ok(&["service", "rebalance", "-d", "web"]);
    f.ok(&["node", "update", "--label-add", "zone=a", "w1"]);
    let labels = first(f.json(&["node", "inspect", "w1"]));
    assert_eq!(labels["spec"]["labels"]["zone"], "a", "{labels}");
    // Rotating a token through a follower: the new one is what every manager shows.
    let rotated = f.ok(&["cluster", "join-token", "worker", "--rotate", "-q"]);
    assert_ne!(rotated, token);
    for m in &ms {
        assert_eq!(m.ok(&["cluster", "join-token", "worker", "-q"]), rotated);
    }

    // Kill the leader between two commands: the survivors take the next write.
    let killed = hostname(&ms[li]).to_string();
    ms[li].kill9();
    let survivor = if li == 0 { 1 } else { 0 };
    let s = &ms[survivor];
    let started = Instant::now();
    s.ok(&["service", "create", "-d", "--name", "after-failover", "--driver", "process", "sleep", "300"]);
    assert!(started.elapsed() < Duration::from_secs(15), "the write waited {:?}", started.elapsed());
    // The README's join path keeps working after a failover.
    let token = s.ok(&["cluster", "join-token", "worker", "-q"]);
    assert_eq!(token, rotated);
    // The killed manager is shown unreachable.
    eventually(15, "the killed manager to be down", || {
        let v = s.json(&["node", "ls", "--format", "json"]);
        v.as_array()?
            .iter()
            .any(|n| n["description"]["hostname"] == killed.as_str() && n["status"]["state"] == "down")
            .then_some(())
    });
    ms[li].start("daemon");
    for m in &ms {
        eventually_or(40, || (voters(m) == Some(3) && ready_nodes(m)?.len() == 4).then_some(()), || log(m));
    }

    // Every daemon restarts in turn: the tasks keep running (the same processes) and the
    // cluster keeps taking writes after each restart.
    let before = eventually(30, "web's tasks", || running_pids(&ms[0], "web").filter(|p| p.len() == 2));
    let mut w = w;
    for i in 0..4 {
        let n: &mut Node = if i < 3 { &mut ms[i] } else { &mut w };
        if let Some(mut c) = n.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        n.start("daemon");
        let name = format!("r{i}");
        let m = &ms[(i + 1) % 3];
        eventually_or(
            40,
            || {
                m.cli(&["service", "create", "-d", "--name", &name, "--driver", "process", "true"])
                    .status
                    .success()
                    .then_some(())
            },
            || log(m),
        );
        eventually(40, "every node ready again", || (ready_nodes(m)?.len() == 4).then_some(()));
        assert!(before.iter().all(|p| alive(*p)), "a task died when daemon {i} restarted");
    }
    let after = eventually(30, "web's tasks", || running_pids(&ms[0], "web").filter(|p| p.len() == 2));
    assert_eq!(before, after, "the same processes run web");
    let mut all = vec!["web", "after-failover", "r0", "r1", "r2", "r3"];
    all.sort();
    common::remove_services_and_wait(&ms[0], &all, &[&ms[0], &ms[1], &ms[2], &w]);
}

/// Promote and demote repeatedly, through followers and the leader, while writes continue: no
/// flapping, no node left half a member, and the writes all succeed.
#[test]
fn role_changes_through_any_manager_while_writes_continue() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ms = managers(tmp.path(), &["m1", "m2", "m3"]);
    let w = daemon(tmp.path(), "w1");
    let token = ms[1].ok(&["cluster", "join-token", "worker", "-q"]);
    w.ok(&["cluster", "join", "--token", &token, &ms[1].addr()]);
    eventually(30, "four ready nodes", || (ready_nodes(&ms[0])?.len() == 4).then_some(()));
    ms[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "pinned",
        "--driver",
        "process",
        "--constraint",
        "node.hostname==w1",
        "sleep",
        "600",
    ]);
    let pid = eventually(30, "the task on w1", || running_pids(&ms[0], "pinned")?.first().copied());

    // A writer scales a service through m1 and m2 in turn the whole time.
    ms[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "load",
        "--driver",
        "process",
        "--replicas",
        "0",
        "sleep",
        "600",
    ]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let socks: Vec<std::path::PathBuf> = ms[..2].iter().map(|m| m.dir.join("shoal.sock")).collect();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sock = &socks[i % socks.len()];
                let out = Command::new(common::BIN)
                    .arg("-H")
                    .arg(format!("unix://{}", sock.display()))
                    .args(["service", "scale", "-d", &format!("load={}", i % 3)])
                    .output()
                    .expect("cli");
                if out.status.success() {
                    ok += 1;
                } else {
                    failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                i += 1;
            }
            (ok, failed)
        })
    };

    let member = |n: &Node, host: &str| -> Option<bool> {
        let out = n.cli(&["node", "inspect", host]);
        let v = first(serde_json::from_slice(&out.stdout).ok()?);
        Some(v["spec"]["role"] == "manager" && v["manager_status"].is_object())
    };
    // Promote through a follower, demote through the leader, promote through the leader,
    // demote through a follower; then demote and promote a founding manager.
    let steps: [(&str, bool); 4] =
        [("promote", false), ("demote", true), ("promote", true), ("demote", false)];
    for (verb, via_leader) in steps {
        let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
        let via = &ms[if via_leader { li } else { fi }];
        via.ok(&["node", verb, "w1"]);
        // Idempotent: the same command again changes nothing and succeeds.
        via.ok(&["node", verb, "w1"]);
        let want = verb == "promote";
        eventually_or(
            60,
            || {
                let views: Vec<bool> = ms.iter().map(|m| member(m, "w1")).collect::<Option<_>>()?;
                let n = if want { 4 } else { 3 };
                // And w1 itself has become what it was told: a voter, or a worker.
                let itself = if want {
                    voters(&w) == Some(4)
                } else {
                    stderr(&w.cli(&["service", "ls"])).contains("this node is a worker")
                };
                (itself && views.iter().all(|v| *v == want) && ms.iter().all(|m| voters(m) == Some(n)))
                    .then_some(())
            },
            || {
                let managers: Vec<String> = ms
                    .iter()
                    .map(|m| {
                        let text = log(m);
                        let lines: Vec<&str> = text
                            .lines()
                            .filter(|l| {
                                l.contains("member")
                                    || l.contains("demot")
                                    || l.contains("promot")
                                    || l.contains("leader")
                            })
                            .map(|l| &l[..l.len().min(400)])
                            .collect::<Vec<_>>();
                        format!("--- {}:\n{}", hostname(m), lines.join("\n"))
                    })
                    .collect();
                format!(
                    "w1 {verb}d everywhere; its log:\n{}\nthe managers:\n{}",
                    log(&w),
                    managers.join("\n")
                )
            },
        );
        assert!(alive(pid), "the task on w1 survived the {verb}");
    }
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let other = (0..3).find(|i| *i != li && *i != fi).expect("third manager");
    let name = hostname(&ms[other]).to_string();
    ms[fi].ok(&["node", "demote", &name]);
    eventually(60, "two voters", || {
        ms.iter().filter(|m| m.dir != ms[other].dir).all(|m| voters(m) == Some(2)).then_some(())
    });
    ms[li].ok(&["node", "promote", &name]);
    eventually_or(
        60,
        || ms.iter().all(|m| voters(m) == Some(3)).then_some(()),
        || format!("{name} promoted again; its log:\n{}", log(&ms[other])),
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = writer.join().expect("writer");
    assert!(ok > 10, "the writer made progress ({ok})");
    assert!(
        failed.is_empty(),
        "{} of {} writes failed during role changes: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        failed
    );

    // Never flapping: one restart per role change in w1's log, and the Raft store intact.
    let wl = log(&w);
    assert_eq!(wl.matches("promoted: restarting as a manager").count(), 2, "{wl}");
    assert_eq!(wl.matches("demoted: restarting as a worker").count(), 2, "{wl}");
    assert!(!wl.contains("violates"), "{wl}");
    // Nobody is left half a member: cluster health lists exactly the three managers, reachable.
    let health = ms[0].json(&["cluster", "health", "--format", "json"]);
    let health = health.as_array().expect("health");
    assert_eq!(health.len(), 3, "{health:?}");
    assert!(health.iter().all(|h| h["reachable"] == true && h["voter"] == true), "{health:?}");
    common::remove_services_and_wait(&ms[0], &["pinned", "load"], &[&ms[0], &ms[1], &ms[2], &w]);
}

/// A frozen leader (SIGSTOP) does not stall a write sent to a follower for a fixed timeout: the
/// follower follows the new leader. Concurrent reads and writes on a healthy cluster never fail
/// for want of a quorum. A dead manager leaves the membership with `node rm`.
#[test]
fn a_frozen_leader_and_a_busy_leader() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ms = managers(tmp.path(), &["m1", "m2", "m3"]);

    // Busy: 120 concurrent linearizable reads and 30 concurrent writes, through every manager.
    let socks: Vec<std::path::PathBuf> = ms.iter().map(|m| m.dir.join("shoal.sock")).collect();
    let threads: Vec<_> = (0..150)
        .map(|i| {
            let sock = socks[i % 3].clone();
            std::thread::spawn(move || {
                let name = format!("c{i}");
                let args: Vec<&str> = if i % 5 == 0 {
                    vec![
                        "service",
                        "create",
                        "-d",
                        "--name",
                        &name,
                        "--driver",
                        "process",
                        "--replicas",
                        "0",
                        "true",
                    ]
                } else {
                    vec!["service", "ls", "-q"]
                };
                let out = Command::new(common::BIN)
                    .arg("-H")
                    .arg(format!("unix://{}", sock.display()))
                    .args(&args)
                    .output()
                    .expect("cli");
                (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
            })
        })
        .collect();
    let failures: Vec<String> =
        threads.into_iter().filter_map(|t| t.join().ok()).filter(|(ok, _)| !ok).map(|(_, e)| e).collect();
    assert!(failures.is_empty(), "{} of 150 requests failed: {:?}", failures.len(), failures);

    // Frozen: the leader stops answering but keeps its sockets open.
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let pid = ms[li].child.as_ref().expect("running").id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    let started = Instant::now();
    let out =
        ms[fi].cli(&["service", "create", "-d", "--name", "while-frozen", "--driver", "process", "true"]);
    let took = started.elapsed();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(took < Duration::from_secs(10), "the write took {took:?} (a new leader is elected in ~2 s)");

    // A dead manager is removed from the membership through a follower.
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let victim = (0..3).find(|i| *i != li && *i != fi).expect("third manager");
    let name = hostname(&ms[victim]).to_string();
    ms[victim].kill9();
    ms[fi].ok(&["node", "rm", "--force", &name]);
    for i in [li, fi] {
        eventually(20, "two members in cluster health", || {
            let h = ms[i].json(&["cluster", "health", "--format", "json"]);
            (h.as_array()?.len() == 2).then_some(())
        });
    }
    let names: Vec<String> = (0..150).filter(|i| i % 5 == 0).map(|i| format!("c{i}")).collect();
    let mut args: Vec<&str> = vec!["service", "rm", "while-frozen"];
    args.extend(names.iter().map(String::as_str));
    ms[li].ok(&args);
}

/// Workloads that crash or start slowly, created through a follower, with the leader killed in
/// between: the CLI reports the crash with its reason and a non-zero exit, and waits for the slow
/// one to turn healthy before it says converged.
#[test]
fn crashing_and_slow_starting_services_through_a_follower() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ms = managers(tmp.path(), &["m1", "m2", "m3"]);
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let out =
        ms[fi].cli(&["service", "create", "--name", "crash", "--driver", "process", "sh", "-c", "exit 3"]);
    assert!(!out.status.success(), "a crashing service must not converge");
    assert!(stderr(&out).contains("exited with code 3"), "{}", stderr(&out));

    ms[li].kill9();
    let survivor = (0..3).find(|i| *i != li).expect("a survivor");
    let ready = tmp.path().join("ready");
    let script = format!("sleep 3; touch {}; sleep 600", ready.display());
    let check = format!("test -f {}", ready.display());
    let started = Instant::now();
    let out = ms[survivor].cli(&[
        "service",
        "create",
        "--name",
        "slow",
        "--driver",
        "process",
        "--health-cmd",
        &check,
        "--health-interval",
        "1s",
        "--health-start-period",
        "30s",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ready.exists() && started.elapsed() >= Duration::from_secs(3), "converged before it was healthy");
    ms[li].start("daemon");
    eventually_or(40, || ms.iter().all(|m| voters(m) == Some(3)).then_some(()), || log(&ms[li]));
    let nodes: Vec<&Node> = ms.iter().collect();
    common::remove_services_and_wait(&ms[survivor], &["crash", "slow"], &nodes);
}

/// `node rm --force` of a live worker and of a live manager: each notices, stops its tasks,
/// forgets the cluster and keeps running as a daemon in no cluster, refuses to come back under
/// its old id, and joins again with a token like a new machine.
#[test]
fn removed_nodes_notice_forget_the_cluster_and_join_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ms = managers(tmp.path(), &["m1", "m2", "m3"]);
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let w = daemon(tmp.path(), "w1");
    common::join_worker(&ms[fi], &w);
    let on_w1 = ["--constraint", "node.hostname==w1"];
    let mut args = vec!["service", "create", "-d", "--name", "pinned", "--driver", "process"];
    args.extend(on_w1);
    args.extend(["sleep", "300"]);
    ms[fi].ok(&args);
    let pid = eventually(30, "the pinned task running", || running_pids(&ms[fi], "pinned")?.first().copied());
    let old_id = first(ms[li].json(&["node", "inspect", "w1", "--format", "json"]))["id"]
        .as_str()
        .expect("id")
        .to_string();

    // A live node needs --force, through a follower.
    let refused = ms[fi].cli(&["node", "rm", "w1"]);
    assert!(!refused.status.success() && stderr(&refused).contains("--force"), "{}", stderr(&refused));
    ms[fi].ok(&["node", "rm", "--force", "w1"]);
    eventually_or(30, || (!alive(pid)).then_some(()), || format!("the task still runs:\n{}", log(&w)));
    let not_in_cluster = || {
        let out = w.cli(&["node", "ls"]);
        (!out.status.success() && stderr(&out).contains("not in a cluster")).then_some(())
    };
    eventually_or(30, not_in_cluster, || log(&w));
    assert!(log(&w).contains("removed from the cluster"), "{}", log(&w));
    // The old id is gone for good: it never reappears in the node list.
    let ids: Vec<String> = ms[li]
        .json(&["node", "ls", "--format", "json"])
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    assert!(!ids.contains(&old_id), "{ids:?}");
    // The same daemon joins again, with a new id, and runs the pinned service's task again.
    common::join_worker(&ms[li], &w);
    let new_id = first(ms[li].json(&["node", "inspect", "w1", "--format", "json"]))["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(new_id, old_id);
    eventually(30, "the pinned task running again", || running_pids(&ms[li], "pinned")?.first().copied());

    // A second machine with the same hostname joins (as Docker, it is accepted): a command that
    // names the hostname is refused as ambiguous, listing both ids, instead of picking one.
    let twin = {
        let mut n = Node::new(&tmp.path().join("twin"), "w1");
        n.start("daemon");
        n
    };
    let token = ms[fi].ok(&["cluster", "join-token", "worker", "-q"]);
    twin.ok(&["cluster", "join", "--token", &token, &ms[fi].addr()]);
    let twin_id = eventually(30, "the twin listed", || {
        let nodes = ms[fi].json(&["node", "ls", "--format", "json"]);
        nodes.as_array()?.iter().find_map(|n| {
            let id = n["id"].as_str()?;
            (n["description"]["hostname"] == "w1" && id != new_id).then(|| id.to_string())
        })
    });
    let ambiguous = ms[fi].cli(&["node", "update", "--availability", "drain", "w1"]);
    let err = stderr(&ambiguous);
    assert!(!ambiguous.status.success(), "an ambiguous hostname must be refused");
    assert!(err.contains(&new_id) && err.contains(&twin_id), "{err}");
    ms[fi].ok(&["node", "update", "--availability", "drain", &twin_id]);
    let drained = first(ms[li].json(&["node", "inspect", &twin_id, "--format", "json"]));
    assert_eq!(drained["spec"]["availability"], "drain", "{drained}");
    let kept = first(ms[li].json(&["node", "inspect", &new_id, "--format", "json"]));
    assert_eq!(kept["spec"]["availability"], "active", "{kept}");

    // A killed manager is shown down and unreachable within a few of the leader's Raft
    // heartbeats, well before the dispatcher's 3 s heartbeat grace runs out.
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let victim = (0..3).find(|i| *i != li && *i != fi).expect("third manager");
    let name = hostname(&ms[victim]).to_string();
    ms[victim].kill9();
    let killed_at = Instant::now();
    let shown = eventually(15, "the killed manager down and unreachable", || {
        let v = first(ms[fi].json(&["node", "inspect", &name, "--format", "json"]));
        (v["status"]["state"] == "down" && v["manager_status"]["reachability"] == "unreachable")
            .then(|| (killed_at.elapsed(), v))
    });
    assert!(shown.0 < Duration::from_millis(2500), "shown down after {:?}: {}", shown.0, shown.1);
    assert!(shown.1["status"]["message"].as_str().is_some_and(|m| m.contains("unreachable")), "{}", shown.1);
    ms[victim].start("daemon");
    let mut want: Vec<String> = vec!["m1".into(), "m2".into(), "m3".into(), "w1".into(), "w1".into()];
    want.sort();
    for m in &ms {
        eventually_or(
            40,
            || (voters(m) == Some(3) && ready_nodes(m).as_ref() == Some(&want)).then_some(()),
            || log(m),
        );
    }

    // A live manager (a follower), removed through the other follower.
    let (li, fi) = leader_and_follower(&ms.iter().collect::<Vec<_>>());
    let victim = (0..3).find(|i| *i != li && *i != fi).expect("third manager");
    let name = hostname(&ms[victim]).to_string();
    ms[fi].ok(&["node", "rm", "--force", &name]);
    for i in [li, fi] {
        eventually(20, "two members in cluster health", || {
            let h = ms[i].json(&["cluster", "health", "--format", "json"]);
            (h.as_array()?.len() == 2).then_some(())
        });
    }
    eventually_or(
        40,
        || {
            let out = ms[victim].cli(&["node", "ls"]);
            (!out.status.success() && stderr(&out).contains("not in a cluster")).then_some(())
        },
        || log(&ms[victim]),
    );
    let token = ms[li].ok(&["cluster", "join-token", "manager", "-q"]);
    ms[victim].ok(&["cluster", "join", "--token", &token, &ms[fi].addr()]);
    eventually_or(40, || ms.iter().all(|m| voters(m) == Some(3)).then_some(()), || log(&ms[victim]));
    let nodes: Vec<&Node> = ms.iter().chain([&w]).collect();
    common::remove_services_and_wait(&ms[li], &["pinned"], &nodes);
}
