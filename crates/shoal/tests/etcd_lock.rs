//! `etcdctl lock` (Debian's etcd-client 3.4) against three `shoal daemon` managers while the
//! leader is killed with SIGKILL, twice (the first one restarted in between). Four client loops
//! take the lock `mylock` over and over (`etcdctl --endpoints <all three> lock --ttl 5 mylock --
//! sh -c SECTION`, each run a new session), and every critical section appends an `enter` line (the
//! client, its run, `ETCD_LOCK_KEY`, `ETCD_LOCK_REV`) and, after a hold, an `exit` line to one
//! shared file opened with O_APPEND: each line is one write(2), so the file's order is the order
//! in which the sections began and ended, and an overlap shows as two `enter`s in a row. The test
//! writes its own `mark` lines (kills, restarts) into the same file.
//!
//! Each kill lands while one section holds the lock for longer than its TTL (its lease lives on
//! etcdctl's keep-alives alone) and the other clients queue behind it (their sessions, too, are
//! older than the TTL); the holder goes on holding until a full TTL has passed under the new leader.
//!
//! Checked: (1) no two critical sections overlap, also while the long one is held across the
//! failover, and its key is still there a TTL after it; (2) the holders' `ETCD_LOCK_REV`s and the
//! create revisions of their lock keys (the fencing tokens) strictly increase in the order they
//! entered, and the store's history at each `ETCD_LOCK_REV` shows that holder's key as the oldest
//! under the prefix (what the lock recipe relies on); (3) every client takes the lock again (twice)
//! after each kill and after the restart, within a deadline; (4) once the clients stop, the lock
//! prefix and the leases drain within the TTL.
//!
//! What leases cannot promise (kv-etcd.md §3.2, Jepsen's etcd 3.4.3 analysis): a holder that
//! stalls, or cannot reach the cluster, for longer than its TTL loses the lock while it still runs.
//! Nothing here stalls a client: etcdctl keeps every session alive every TTL/3 (5 s / 3), a kill -9
//! takes ~1.5 s to fail over, and a new leader gives every lease a full TTL, so an overlap or a lost
//! key here is Shoal's fault.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{daemon_log_plain, etcdctl_run, eventually, eventually_or, leader_of, poll, Node};

/// Client loops taking the lock at once.
const CLIENTS: usize = 4;
/// The lock's session TTL (`lock --ttl`), seconds.
const TTL: u64 = 5;
const LOCK: &str = "mylock";
/// Where etcdctl's lock recipe keeps its keys (`<name>/<lease id in hex>`).
const PREFIX: &str = "mylock/";
/// The critical section: `enter C I KEY REV T` and, after a hold, `exit C I T` appended to
/// `$LOG` (`>>` opens it O_APPEND; dash writes each line with one write(2)); T is /proc/uptime,
/// for the reader only: the file's order is what the checks trust. The hold is 0.2 s, except for
/// the one section that claims `$D/long` (a rename, so only one can): it holds for longer than
/// the TTL, says so in `$D/ready` (`C I KEY`), and goes on holding until the test creates
/// `$D/release` (after a leader kill and a TTL under the new leader).
const SECTION: &str = r#"read t _ </proc/uptime
echo "enter $C $I $ETCD_LOCK_KEY $ETCD_LOCK_REV $t" >>"$LOG"
if mv "$D/long" "$D/held" 2>/dev/null; then
  sleep "$LONG"; echo "$C $I $ETCD_LOCK_KEY" >"$D/ready.tmp"; mv "$D/ready.tmp" "$D/ready"
  while [ ! -e "$D/release" ]; do sleep 0.05; done
else
  sleep 0.2
fi
read t _ </proc/uptime
echo "exit $C $I $t" >>"$LOG""#;
/// How long every client may take to get the lock again after a kill or a restart: an election,
/// then up to a TTL for the keys whose owners died with their answers (a lock key put, or an
/// unlock, that committed but whose answer the killed leader never sent), then a turn in the queue.
const PROGRESS_SECS: u64 = 30;
/// Sections each client must complete after each kill and restart (more than one, so that the
/// lock changes hands under the new leader several times before the next step).
const PROGRESS_SECTIONS: usize = 2;

/// A line of the shared file.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    Enter {
        c: usize,
        i: u64,
        key: String,
        rev: i64,
    },
    Exit {
        c: usize,
        i: u64,
    },
    /// The test's own note (`mark NAME T`).
    Mark(String),
}

fn parse_line(l: &str) -> Option<Line> {
    let f: Vec<&str> = l.split(' ').collect();
    match f.as_slice() {
        ["enter", c, i, key, rev, _t] => Some(Line::Enter {
            c: c.parse().ok()?,
            i: i.parse().ok()?,
            key: key.to_string(),
            rev: rev.parse().ok()?,
        }),
        ["exit", c, i, _t] => Some(Line::Exit { c: c.parse().ok()?, i: i.parse().ok()? }),
        ["mark", name, _t] => Some(Line::Mark(name.to_string())),
        _ => None,
    }
}

/// The shared file's lines, raw and parsed; fails the test on a line that is neither (a torn or
/// unexpected write, or an etcdctl that did not set `ETCD_LOCK_KEY`/`ETCD_LOCK_REV`).
fn read_log(log: &Path) -> Vec<(String, Line)> {
    let text = std::fs::read_to_string(log).expect("the sections log");
    text.lines()
        .map(|l| {
            let parsed = parse_line(l).unwrap_or_else(|| panic!("unexpected line {l:?} in the log:\n{text}"));
            (l.to_string(), parsed)
        })
        .collect()
}

/// /proc/uptime's seconds (the clock the sections print).
fn uptime() -> String {
    let s = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    s.split_whitespace().next().unwrap_or("?").to_string()
}

/// Appends `mark NAME T` to the shared file (one write, O_APPEND, like the sections).
fn mark(log: &Path, name: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(log).expect("the sections log");
    f.write_all(format!("mark {name} {}\n", uptime()).as_bytes()).expect("mark");
}

/// Per client, the critical sections that began after the mark `name` and have ended.
fn sections_since(log: &Path, name: &str) -> [usize; CLIENTS] {
    let mut done = [0; CLIENTS];
    let mut open: [Option<u64>; CLIENTS] = [None; CLIENTS];
    let mut seen = false;
    for (_, l) in read_log(log) {
        match l {
            Line::Mark(m) if m == name => seen = true,
            Line::Enter { c, i, .. } if seen => open[c] = Some(i),
            Line::Exit { c, i } if seen && open[c] == Some(i) => {
                done[c] += 1;
                open[c] = None;
            }
            _ => {}
        }
    }
    done
}

/// Whether the critical sections in `lines` (the file's order) never overlap: each `enter` comes
/// when no section is open, and each `exit` closes the open one; an error shows where not. A
/// section still open at the end is an error unless `open_at_end`, and then it must be there.
fn exclusion(lines: &[(String, Line)], open_at_end: bool) -> Result<(), String> {
    let window = |at: usize| {
        let from = at.saturating_sub(12);
        let to = (at + 12).min(lines.len());
        lines[from..to].iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join("\n")
    };
    let mut holder: Option<(usize, u64, usize)> = None;
    for (at, (raw, l)) in lines.iter().enumerate() {
        match l {
            Line::Enter { c, i, .. } => {
                if let Some((hc, hi, hat)) = holder {
                    return Err(format!(
                        "mutual exclusion violated: `{raw}` (line {}) while client {hc} run {hi} \
                         (line {}) held the lock:\n{}",
                        at + 1,
                        hat + 1,
                        window(at)
                    ));
                }
                holder = Some((*c, *i, at));
            }
            Line::Exit { c, i } => {
                if holder.map(|(hc, hi, _)| (hc, hi)) != Some((*c, *i)) {
                    return Err(format!(
                        "`{raw}` (line {}) ends a section that was not the one holding the lock:\n{}",
                        at + 1,
                        window(at)
                    ));
                }
                holder = None;
            }
            Line::Mark(_) => {}
        }
    }
    match (holder, open_at_end) {
        (Some((c, i, at)), false) => {
            Err(format!("client {c} run {i}'s section (line {}) never ended", at + 1))
        }
        (None, true) => Err("no section is open at the end".to_string()),
        _ => Ok(()),
    }
}

/// Whether the revisions (each with who had it) strictly increase in their order.
fn increasing(what: &str, revs: &[(String, i64)]) -> Result<(), String> {
    match revs.windows(2).find(|w| w[0].1 >= w[1].1) {
        Some(w) => Err(format!(
            "{what} went from {} ({}) to {} ({}), in the order the holders entered",
            w[0].1, w[0].0, w[1].1, w[1].0
        )),
        None => Ok(()),
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The client loops: each runs `etcdctl lock` again as soon as the last one exited, until
/// stopped. Dropping them kills what still runs (etcdctl and its section: one process group).
struct Clients {
    stop: Arc<AtomicBool>,
    /// Each client's running etcdctl; the loop reaps it while holding the lock, so a signal sent
    /// while holding it never reaches a reused pid.
    running: Arc<Mutex<Vec<Option<Child>>>>,
    threads: Vec<std::thread::JoinHandle<Tally>>,
    /// Each client's etcdctl stderr.
    errs: Vec<PathBuf>,
}

/// One client's etcdctl runs: how many, and how many failed (e.g. an RPC cut by a kill).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    runs: u32,
    failed: u32,
}

impl Clients {
    fn start(endpoints: &str, log: &Path, dir: &Path) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Mutex::new((0..CLIENTS).map(|_| None).collect::<Vec<Option<Child>>>()));
        let errs: Vec<PathBuf> = (0..CLIENTS).map(|c| dir.join(format!("client{c}.stderr"))).collect();
        let threads = (0..CLIENTS)
            .map(|c| {
                let (stop, running, err) = (stop.clone(), running.clone(), errs[c].clone());
                let (endpoints, log) = (endpoints.to_string(), log.to_path_buf());
                std::thread::spawn(move || client_loop(c, &endpoints, &log, &err, &stop, &running))
            })
            .collect();
        Clients { stop, running, threads, errs }
    }

    /// Stops the loops: no new runs; SIGTERM to the running etcdctls (etcdctl then gives up
    /// waiting and deletes its key, or lets a running section finish and unlocks); waits for
    /// them all.
    fn stop(&mut self) -> Vec<Tally> {
        {
            let running = self.running.lock().expect("clients");
            self.stop.store(true, Ordering::SeqCst);
            for child in running.iter().flatten() {
                signal(&["-TERM", &child.id().to_string()]);
            }
        }
        let threads = std::mem::take(&mut self.threads);
        poll(Duration::from_secs(20), || threads.iter().all(|t| t.is_finished()).then_some(()))
            .unwrap_or_else(|| {
                panic!("an etcdctl did not exit within 20 s of SIGTERM\n{}", self.stderr_tails())
            });
        threads.into_iter().map(|t| t.join().expect("a client loop panicked")).collect()
    }

    fn stderr_tails(&self) -> String {
        let mut s = String::new();
        for (c, p) in self.errs.iter().enumerate() {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            s += &format!("--- client {c} etcdctl stderr (last lines)\n{}\n", tail(&text, 8));
        }
        s
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        if let Ok(running) = self.running.lock() {
            self.stop.store(true, Ordering::SeqCst);
            for child in running.iter().flatten() {
                // The process group: etcdctl and the section it runs.
                signal(&["-KILL", "--", &format!("-{}", child.id())]);
            }
        }
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

fn signal(args: &[&str]) {
    let _ = Command::new("kill").args(args).stderr(Stdio::null()).status();
}

fn client_loop(
    c: usize,
    endpoints: &str,
    log: &Path,
    err: &Path,
    stop: &AtomicBool,
    running: &Mutex<Vec<Option<Child>>>,
) -> Tally {
    let mut tally = Tally::default();
    for i in 1.. {
        {
            let mut r = running.lock().expect("clients");
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let stderr =
                std::fs::OpenOptions::new().create(true).append(true).open(err).expect("stderr file");
            let child = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .env("C", c.to_string())
                .env("I", i.to_string())
                .env("LOG", log)
                .env("D", log.parent().expect("the log's directory"))
                .env("LONG", (TTL + 1).to_string())
                .arg(format!("--endpoints={endpoints}"))
                .args([
                    "--dial-timeout=2s",
                    "lock",
                    "--ttl",
                    &TTL.to_string(),
                    LOCK,
                    "--",
                    "sh",
                    "-c",
                    SECTION,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .expect("etcdctl is installed (scripts/install-deps.sh)");
            r[c] = Some(child);
        }
        let status = loop {
            {
                let mut r = running.lock().expect("clients");
                let child = r[c].as_mut().expect("this client's etcdctl");
                if let Some(status) = child.try_wait().expect("wait for etcdctl") {
                    r[c] = None;
                    break status;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        tally.runs += 1;
        if !status.success() {
            tally.failed += 1;
        }
    }
    tally
}

/// The keys under the prefix at `rev` with their create revisions, oldest first (`get -w fields`).
fn keys_at(n: &Node, rev: i64) -> Vec<(String, i64)> {
    let rev = rev.to_string();
    let o = etcdctl_run(n, &["get", "--prefix", PREFIX, "--rev", &rev, "-w", "fields"]);
    assert!(o.status.success(), "get --rev {rev}: {}", String::from_utf8_lossy(&o.stderr));
    let mut keys = Vec::new();
    let mut key = None;
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(k) = l.strip_prefix("\"Key\" : ") {
            key = Some(k.trim_matches('"').to_string());
        } else if let Some(r) = l.strip_prefix("\"CreateRevision\" : ") {
            let k = key.take().expect("a Key line before CreateRevision");
            keys.push((k, r.trim().parse().expect("CreateRevision")));
        }
    }
    keys.sort_by_key(|(_, r)| *r);
    keys
}

/// Grants a lease of the lock's TTL through `n` (after a leader change), puts a key with it and
/// waits for the key to go. The new leader gives every lease a full TTL when it takes over, and
/// the probe's TTL starts no earlier, so once the probe is gone every lease that the new leader
/// saw no keep-alive for has expired too: a lock holder's lease that is still there was kept alive
/// under the new leader.
fn await_ttl_under_new_leader(n: &Node) {
    let ttl = TTL.to_string();
    let id = eventually(30, "a lease with a key on it", || {
        let o = etcdctl_run(n, &["lease", "grant", &ttl]);
        let id = String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1)?.to_string();
        let put = etcdctl_run(n, &["put", "--lease", &id, "probe", "x"]);
        (o.status.success() && put.status.success()).then_some(id)
    });
    eventually(TTL + 30, "the probe lease to expire", || {
        let o = etcdctl_run(n, &["get", "probe", "--keys-only"]);
        (o.status.success() && o.stdout.is_empty()).then_some(())
    });
    let o = etcdctl_run(n, &["lease", "timetolive", &id]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("lease {id} already expired\n"));
}

#[test]
fn etcdctl_lock_excludes_across_leader_kills() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes = common::managers(tmp.path(), &["lk1", "lk2", "lk3"]);
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect();
    let endpoints: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.etcd_port)).collect();
    let log = tmp.path().join("sections.log");
    std::fs::write(&log, "").expect("log");
    let t_cluster = t0.elapsed();

    let mut clients = Clients::start(&endpoints.join(","), &log, tmp.path());
    let diagnostics = |clients: &Clients, nodes: &[Node]| {
        let mut s = format!(
            "--- sections log (last lines)\n{}\n",
            tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40)
        );
        s += &clients.stderr_tails();
        for n in nodes {
            s += &format!(
                "--- {} daemon log (last lines)\n{}\n",
                n.dir.display(),
                tail(&daemon_log_plain(n), 25)
            );
        }
        s
    };
    let await_progress = |clients: &Clients, nodes: &[Node], name: &str| {
        let t = Instant::now();
        eventually_or(
            PROGRESS_SECS,
            || sections_since(&log, name).iter().all(|n| *n >= PROGRESS_SECTIONS).then_some(()),
            || {
                format!(
                    "every client to take the lock {PROGRESS_SECTIONS} times after `{name}` within \
                     {PROGRESS_SECS} s; sections per client since: {:?}\n{}",
                    sections_since(&log, name),
                    diagnostics(clients, nodes)
                )
            },
        );
        t.elapsed()
    };
    mark(&log, "started");
    let mut timings = vec![("every client twice", await_progress(&clients, &nodes, "started"))];

    let mut down: Option<usize> = None;
    for round in 1..=2 {
        let live = (0..nodes.len()).find(|i| Some(*i) != down).expect("a live manager");
        let (_, leader) = eventually(30, "a leader", || leader_of(&nodes[live]));
        let li = ids.iter().position(|id| *id == leader).expect("the leader is one of the managers");
        let survivor = (0..nodes.len()).find(|i| *i != li && Some(*i) != down).expect("a survivor");

        // The next section holds the lock past its lease's first TTL, the others queue behind
        // it (their sessions age past the TTL too), and then the leader dies.
        let t = Instant::now();
        std::fs::write(tmp.path().join("long"), "").expect("long");
        let (hc, hi, hkey) = eventually_or(
            PROGRESS_SECS + TTL,
            || {
                let ready = std::fs::read_to_string(tmp.path().join("ready")).ok()?;
                match ready.split_whitespace().collect::<Vec<_>>().as_slice() {
                    [c, i, key] => Some((c.parse::<usize>().ok()?, i.parse::<u64>().ok()?, key.to_string())),
                    _ => None,
                }
            },
            || format!("a section to hold the lock for {} s\n{}", TTL + 1, diagnostics(&clients, &nodes)),
        );
        timings.push(("a section held past the TTL", t.elapsed()));
        nodes[li].kill9();
        let name = nodes[li].dir.file_name().and_then(|f| f.to_str()).unwrap_or("?").to_string();
        let killed = format!("killed-{round}-{name}");
        mark(&log, &killed);
        let t = Instant::now();
        eventually_or(
            30,
            || leader_of(&nodes[survivor]).filter(|(_, l)| *l != leader).map(|_| ()),
            || format!("a new leader after killing {name}\n{}", diagnostics(&clients, &nodes)),
        );
        timings.push(("a new leader", t.elapsed()));

        // A TTL under the new leader: the holder, alive and keeping its lease alive, still holds
        // the lock (its key is there) and nobody else entered.
        let t = Instant::now();
        await_ttl_under_new_leader(&nodes[survivor]);
        timings.push(("a TTL under the new leader", t.elapsed()));
        if let Err(e) = exclusion(&read_log(&log), true) {
            panic!("{e}\n{}", diagnostics(&clients, &nodes));
        }
        let keys = etcdctl_run(&nodes[survivor], &["get", "--prefix", PREFIX, "--keys-only"]);
        assert!(keys.status.success(), "get --prefix {PREFIX}: {}", String::from_utf8_lossy(&keys.stderr));
        let keys = String::from_utf8_lossy(&keys.stdout).into_owned();
        assert!(
            keys.lines().any(|k| k == hkey),
            "client {hc} run {hi} holds the lock and keeps its lease alive, but its key {hkey} is gone a TTL \
             after the leader changed; keys under {PREFIX}: {keys:?}\n{}",
            diagnostics(&clients, &nodes)
        );
        std::fs::write(tmp.path().join("release"), "").expect("release");
        eventually(30, "the long section to end", || {
            read_log(&log).iter().any(|(_, l)| *l == Line::Exit { c: hc, i: hi }).then_some(())
        });
        for f in ["held", "ready", "release"] {
            std::fs::remove_file(tmp.path().join(f)).expect("the long section's files");
        }
        timings.push(("every client twice after the kill", await_progress(&clients, &nodes, &killed)));

        if round == 1 {
            nodes[li].start("daemon");
            eventually_or(
                30,
                || leader_of(&nodes[li]).filter(|(me, l)| me != l).map(|_| ()),
                || format!("the restarted manager to follow the leader\n{}", diagnostics(&clients, &nodes)),
            );
            mark(&log, "restarted");
            timings.push((
                "every client twice after the restart",
                await_progress(&clients, &nodes, "restarted"),
            ));
        } else {
            down = Some(li);
        }
    }
    let tallies = clients.stop();
    let t_load = t0.elapsed();
    let live = (0..nodes.len()).find(|i| Some(*i) != down).expect("a live manager");
    let lines = read_log(&log);

    // (1) Mutual exclusion: enter, exit of the same run, enter, exit, ... in the file's order.
    if let Err(e) = exclusion(&lines, false) {
        panic!("{e}\n{}", diagnostics(&clients, &nodes));
    }

    // (2) Fencing: the revisions grow in the order the holders entered, and the history at each
    // holder's ETCD_LOCK_REV shows its key as the oldest under the prefix.
    let enters: Vec<(usize, u64, String, i64)> = lines
        .iter()
        .filter_map(|(_, l)| match l {
            Line::Enter { c, i, key, rev } => Some((*c, *i, key.clone(), *rev)),
            _ => None,
        })
        .collect();
    let revs: Vec<(String, i64)> =
        enters.iter().map(|(c, i, _, rev)| (format!("client {c} run {i}"), *rev)).collect();
    if let Err(e) = increasing("ETCD_LOCK_REV", &revs) {
        panic!("{e}");
    }
    let t = Instant::now();
    let mut creates: Vec<Option<i64>> = vec![None; enters.len()];
    std::thread::scope(|s| {
        let workers = 4;
        let chunk = enters.len().div_ceil(workers).max(1);
        for (part, out) in enters.chunks(chunk).zip(creates.chunks_mut(chunk)) {
            let node = &nodes[live];
            s.spawn(move || {
                for ((c, i, key, rev), slot) in part.iter().zip(out.iter_mut()) {
                    let keys = keys_at(node, *rev);
                    assert_eq!(
                        keys.first().map(|(k, _)| k.as_str()),
                        Some(key.as_str()),
                        "at ETCD_LOCK_REV {rev}, client {c} run {i}'s key {key} is not the oldest \
                         under {PREFIX}: {keys:?}"
                    );
                    *slot = keys.first().map(|(_, r)| *r);
                }
            });
        }
    });
    let creates: Vec<(String, i64)> =
        enters.iter().zip(creates).map(|((_, _, key, _), r)| (key.clone(), r.expect("checked"))).collect();
    if let Err(e) = increasing("the fencing token (the lock key's create revision)", &creates) {
        panic!("{e}");
    }
    let t_history = t.elapsed();

    // (4) No lock key and no lease outlives its TTL once the clients are gone.
    let t = Instant::now();
    let leftovers = || {
        let keys = etcdctl_run(&nodes[live], &["get", "--prefix", PREFIX, "--keys-only"]);
        let leases = etcdctl_run(&nodes[live], &["lease", "list"]);
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&keys.stdout).trim(),
            String::from_utf8_lossy(&leases.stdout).trim()
        )
    };
    eventually_or(
        TTL + 15,
        || {
            let o = etcdctl_run(&nodes[live], &["get", "--prefix", PREFIX, "--keys-only"]);
            let l = etcdctl_run(&nodes[live], &["lease", "list"]);
            (o.status.success()
                && o.stdout.is_empty()
                && l.status.success()
                && String::from_utf8_lossy(&l.stdout).starts_with("found 0 leases"))
            .then_some(())
        },
        || format!("the lock keys and leases to go within the TTL; left: {}", leftovers()),
    );
    let t_drain = t.elapsed();

    let runs: u32 = tallies.iter().map(|t| t.runs).sum();
    let failed: u32 = tallies.iter().map(|t| t.failed).sum();
    println!(
        "{} critical sections, {runs} etcdctl runs ({failed} failed), per client {tallies:?}\n\
         cluster {t_cluster:?}, load {t_load:?}, {timings:?}, history checks {t_history:?}, \
         drain {t_drain:?}, total {:?}\n{}",
        enters.len(),
        t0.elapsed(),
        clients.stderr_tails()
    );
}

/// The checker itself: it finds an overlap, an exit of a section not holding the lock, a section
/// that never ended, and a fencing token that does not grow.
#[test]
fn the_checks_catch_what_they_look_for() {
    let log = |text: &str| -> Vec<(String, Line)> {
        text.lines().map(|l| (l.to_string(), parse_line(l).expect("a log line"))).collect()
    };
    let good = "enter 0 1 mylock/1 2 1.0\nexit 0 1 1.2\nmark killed-1-lk1 1.3\n\
                enter 1 1 mylock/2 5 1.9\nexit 1 1 2.1";
    assert_eq!(exclusion(&log(good), false), Ok(()));
    assert!(exclusion(&log(good), true).is_err(), "no section is open");
    let overlap = "enter 0 1 mylock/1 2 1.0\nenter 1 1 mylock/2 5 1.1\nexit 0 1 1.2\nexit 1 1 1.3";
    assert!(exclusion(&log(overlap), false).is_err_and(|e| e.contains("mutual exclusion violated")));
    let foreign_exit = "enter 0 1 mylock/1 2 1.0\nexit 1 1 1.2";
    assert!(exclusion(&log(foreign_exit), false).is_err());
    assert!(exclusion(&log("enter 0 1 mylock/1 2 1.0"), false).is_err());
    assert_eq!(exclusion(&log("enter 0 1 mylock/1 2 1.0"), true), Ok(()));
    let overlap_open = "enter 0 1 mylock/1 2 1.0\nenter 1 1 mylock/2 5 1.1";
    assert!(exclusion(&log(overlap_open), true).is_err());
    assert_eq!(parse_line("enter 0 1   1.0"), None, "etcdctl set no ETCD_LOCK_KEY/ETCD_LOCK_REV");
    let revs = |r: &[i64]| r.iter().map(|r| (String::new(), *r)).collect::<Vec<_>>();
    assert_eq!(increasing("rev", &revs(&[2, 5, 9])), Ok(()));
    assert!(increasing("rev", &revs(&[2, 9, 9])).is_err());
    assert!(increasing("rev", &revs(&[2, 9, 5])).is_err());
}
