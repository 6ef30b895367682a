//! The chaos suite: real `shoal daemon` managers on simulated hosts (network namespaces, see
//! `common::sim`) under faults — `kill -9` and restart of the leader and of followers, SIGSTOP
//! pauses, symmetric and asymmetric network partitions (nftables drops between the hosts), a full
//! disk, and a slow disk (every fsync of one manager delayed, `tests/fixtures/slow_fsync.c`) —
//! while clients write and read the key-value store through random managers. Every operation is
//! recorded (invocation, completion or none when its outcome is unknown, result) and the history
//! is checked for linearizability (`shoal-lincheck`, Wing–Gong with memoization) for registers
//! with compare-and-set. After the faults: every manager back, acknowledged service creations
//! all present and no service that was definitely refused (no phantoms), one running task per
//! slot of a replicated service (no duplicates).
//!
//! CI runs a short seeded run; `scripts/chaos.sh` runs long ones (`SHOAL_CHAOS_CYCLES`,
//! `SHOAL_CHAOS_MANAGERS`, `SHOAL_CHAOS_SEED`, `SHOAL_CHAOS_REPORT=FILE` for the figures).

use serde_json::Value;
use shoal_kv::{Compare, CompareResult, CompareTarget, Op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use shoal_lincheck as lin;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::sim::{sh, Underlay};
use common::{eventually_or, Node};

const KEYS: usize = 6;
const CLIENTS: usize = 4;
/// How long a client waits for an answer before it counts the operation as ambiguous.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift64*), seeded per run and per client.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What became of a request.
enum Sent {
    /// The socket refused the connection: the request never reached the manager.
    Refused,
    /// Sent, but no (complete) answer: refused midway, reset, timed out.
    Lost,
    Answer(u16, Vec<u8>),
}

/// One HTTP/1.1 request on a unix socket.
fn http(sock: &Path, method: &str, path: &str, body: &[u8]) -> Sent {
    let Ok(s) = UnixStream::connect(sock) else { return Sent::Refused };
    match exchange(s, method, path, body) {
        Some((status, body)) => Sent::Answer(status, body),
        None => Sent::Lost,
    }
}

fn exchange(mut s: UnixStream, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status: u16 = headers.split_whitespace().nth(1)?.parse().ok()?;
    let mut rest = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let len = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).ok()?;
            if len == 0 {
                break;
            }
            out.extend_from_slice(rest.get(nl + 2..nl + 2 + len)?);
            rest = rest.get(nl + 4 + len..)?.to_vec();
        }
        rest = out;
    }
    Some((status, rest))
}

/// What a client asked for.
#[derive(Clone, Debug)]
enum Call {
    Get(usize),
    Put(usize, String),
    /// Set `new` if the key holds `expected` (`None`: absent).
    Cas(usize, Option<String>, String),
}

/// What it got.
#[derive(Clone, Debug)]
enum Answer {
    Value(Option<String>),
    Done,
    Cas(bool),
}

fn key(k: usize) -> Vec<u8> {
    format!("chaos/{k}").into_bytes()
}

/// The outcome of an operation.
enum Outcome {
    /// It did not take effect (never sent, or refused with a 4xx): not part of the history.
    Failed,
    /// Unknown: no answer, or a 5xx (a write that timed out waiting for a quorum, or whose
    /// leader went away, may still commit).
    Ambiguous,
    Done(Answer),
}

/// Runs `call` against the manager whose API socket is `sock`.
fn perform(sock: &Path, call: &Call) -> Outcome {
    match perform_inner(sock, call) {
        Ok(a) => Outcome::Done(a),
        Err(true) => Outcome::Ambiguous,
        Err(false) => Outcome::Failed,
    }
}

/// `Err(true)`: ambiguous; `Err(false)`: failed without effect.
fn perform_inner(sock: &Path, call: &Call) -> Result<Answer, bool> {
    let ok = |r: Sent| -> Result<Value, bool> {
        match r {
            Sent::Refused => Err(false),
            Sent::Lost => Err(true),
            Sent::Answer(200, body) => serde_json::from_slice(&body).map_err(|_| true),
            Sent::Answer(s, _) => Err(s >= 500),
        }
    };
    let body = |v: &Op| serde_json::to_vec(v).map_err(|_| false);
    match call {
        Call::Get(k) => {
            let req = serde_json::to_vec(&RangeRequest::key(key(*k))).map_err(|_| false)?;
            let v = ok(http(sock, "POST", "/v1/kv/range", &req))?;
            let kvs = v["kvs"].as_array().ok_or(true)?;
            Ok(Answer::Value(kvs.first().and_then(|kv| kv["value"].as_str()).map(decode)))
        }
        Call::Put(k, value) => {
            let op =
                Op::Put(PutRequest { key: key(*k), value: value.clone().into_bytes(), ..Default::default() });
            ok(http(sock, "POST", "/v1/kv/ops", &body(&op)?))?;
            Ok(Answer::Done)
        }
        Call::Cas(k, expected, new) => {
            let guard = match expected {
                Some(v) => {
                    Compare::new(key(*k), CompareResult::Equal, CompareTarget::Value(v.clone().into_bytes()))
                }
                None => Compare::new(key(*k), CompareResult::Equal, CompareTarget::Version(0)),
            };
            let put = PutRequest { key: key(*k), value: new.clone().into_bytes(), ..Default::default() };
            let op = Op::Txn(TxnRequest {
                compare: vec![guard],
                success: vec![RequestOp::Put(put)],
                failure: vec![],
            });
            let v = ok(http(sock, "POST", "/v1/kv/ops", &body(&op)?))?;
            let succeeded =
                v["txn"]["succeeded"].as_bool().or_else(|| v["succeeded"].as_bool()).ok_or(true)?;
            Ok(Answer::Cas(succeeded))
        }
    }
}

fn decode(b64: &str) -> String {
    String::from_utf8_lossy(&shoal_kv::base64::decode(b64).unwrap_or_default()).into_owned()
}

/// One recorded operation.
#[derive(Clone, Debug)]
struct Record {
    client: usize,
    call: Call,
    invoke: u64,
    /// Completion time and answer; none: ambiguous.
    done: Option<(u64, Answer)>,
}

/// The clients: each picks a manager, a key and an operation at random, and records.
fn client(
    id: usize,
    seed: u64,
    socks: Vec<PathBuf>,
    start: Instant,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Record>>>,
) {
    let mut rng = Rng::new(seed ^ ((id as u64 + 1) * 0x1000_0001));
    let mut seen: Vec<Option<String>> = vec![None; KEYS];
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let k = rng.below(KEYS as u64) as usize;
        n += 1;
        let call = match rng.below(10) {
            0..=3 => Call::Get(k),
            4..=6 => Call::Put(k, format!("c{id}-{n}")),
            _ => Call::Cas(k, seen[k].clone(), format!("c{id}-{n}")),
        };
        let sock = &socks[rng.below(socks.len() as u64) as usize];
        let invoke = start.elapsed().as_nanos() as u64;
        let done = match perform(sock, &call) {
            Outcome::Failed => {
                // Never happened (a manager down, a refusal): not part of the history.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Outcome::Ambiguous => None,
            Outcome::Done(a) => Some((start.elapsed().as_nanos() as u64, a)),
        };
        if let Some((_, Answer::Value(v))) = &done {
            seen[k] = v.clone();
        }
        out.lock().expect("history").push(Record { client: id, call, invoke, done });
    }
}

/// The faults a cycle injects.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    IsolateLeader,
    /// The leader receives nothing from the others but can still send.
    LeaderDeaf,
    /// The disk of the manager with a small data file system (the last one) fills up.
    DiskFull,
    /// Every fsync of the leader or of a follower takes 200–500 ms.
    SlowDisk,
}

const FAULTS: [Fault; 8] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::IsolateLeader,
    Fault::LeaderDeaf,
    Fault::DiskFull,
    Fault::SlowDisk,
];

/// A slow disk: `tests/fixtures/slow_fsync.c`, built here and loaded into every manager with
/// `LD_PRELOAD`; while a manager's control file holds N, each of its fsync, fdatasync and syncfs
/// calls first sleeps N ms (reads and writes are untouched, as with a disk whose cache flush is
/// slow). The kernel offers no slow-flush device without modules (dm-delay), so libc's calls
/// are where it can be simulated.
struct SlowFsync(PathBuf);

impl SlowFsync {
    fn build(dir: &Path) -> SlowFsync {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slow_fsync.c");
        let lib = dir.join("slow_fsync.so");
        let out = sh(&format!("cc -shared -fPIC -O2 -o {} {} -ldl", lib.display(), src.display()));
        assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
        SlowFsync(lib)
    }

    fn control(n: &Node) -> PathBuf {
        n.dir.join("slow-fsync")
    }

    /// Starts (or restarts) a manager with the library loaded.
    fn start(&self, n: &mut Node) {
        let (lib, ctl) = (self.0.display().to_string(), Self::control(n).display().to_string());
        n.start_env("daemon", &[], &[("LD_PRELOAD", &lib), ("SHOAL_SLOW_FSYNC_FILE", &ctl)]);
    }

    fn slow(n: &Node, ms: u64) {
        std::fs::write(Self::control(n), ms.to_string()).expect("control file");
    }

    fn fast(n: &Node) {
        let _ = std::fs::remove_file(Self::control(n));
    }
}

/// A small tmpfs as a manager's data directory, so a fault can fill it; unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("dir");
        let out = sh(&format!("mount -t tmpfs -o size={mib}m,mode=0700 tmpfs {}", dir.display()));
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the file system (a file of everything that is free).
    fn fill(&self) {
        let _ = sh(&format!("dd if=/dev/zero of={}/filler bs=1M 2>/dev/null", self.0.display()));
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l {}", self.0.display()));
    }
}

struct Cluster {
    ul: Underlay,
    nodes: Vec<Node>,
}

impl Cluster {
    fn leader(&self) -> Option<usize> {
        for n in &self.nodes {
            if let Some((_, id)) = common::leader_of(n) {
                return self
                    .nodes
                    .iter()
                    .position(|m| common::node_id_in(&m.dir).as_deref() == Some(id.as_str()));
            }
        }
        None
    }

    /// Waits until every manager is a voter that knows the same leader.
    fn healthy(&self, secs: u64) {
        let want = self.nodes.len();
        eventually_or(
            secs,
            || {
                let mut leaders = Vec::new();
                for n in &self.nodes {
                    let raft = n.raft()?;
                    if raft["voters"].as_object()?.len() != want {
                        return None;
                    }
                    leaders.push(common::leader_of(n)?.1);
                }
                leaders.windows(2).all(|w| w[0] == w[1]).then_some(())
            },
            || {
                let mut why = String::from("every manager back with one leader; what each says:\n");
                for n in &self.nodes {
                    let raft = n.raft().map(|r| {
                        format!("{} term {} leader {}", r["state"], r["term"], r["leader_node"]["node_id"])
                    });
                    let log = common::daemon_log_plain(n);
                    let tail: Vec<&str> = log.lines().rev().take(8).collect();
                    why.push_str(&format!(
                        "{}: {raft:?}\n  {}\n",
                        n.dir.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
                    ));
                }
                why
            },
        );
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let out = sh(&format!("kill -{sig} {pid}"));
        assert!(out.status.success(), "kill -{sig}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Drops, in host `i`'s namespace, what comes from (and, unless `deaf_only`, what goes to) the
    /// other managers.
    fn cut(&self, i: usize, deaf_only: bool) {
        let me = format!("198.51.100.{}", i + 1);
        let others: Vec<String> =
            (0..self.nodes.len()).filter(|j| *j != i).map(|j| format!("198.51.100.{}", j + 1)).collect();
        let set = others.join(", ");
        let mut rules = format!(
            "add table inet chaos\nadd chain inet chaos in {{ type filter hook input priority -300; }}\n\
             add rule inet chaos in ip saddr {{ {set} }} ip daddr {me} drop\n"
        );
        if !deaf_only {
            rules.push_str(&format!(
                "add chain inet chaos out {{ type filter hook output priority -300; }}\n\
                 add rule inet chaos out ip daddr {{ {set} }} drop\n"
            ));
        }
        let file = self.nodes[i].dir.join("chaos.nft");
        std::fs::write(&file, rules).expect("rules");
        let out = self.ul.run_in(&self.ul.host_ns(i + 1), &format!("nft -f {}", file.display()));
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn heal(&self, i: usize) {
        let _ = self.ul.run_in(&self.ul.host_ns(i + 1), "nft delete table inet chaos");
    }
}

/// Figures of a run (also written to `SHOAL_CHAOS_REPORT` as JSON).
#[derive(Debug, serde::Serialize)]
struct Report {
    managers: usize,
    seed: u64,
    cycles: usize,
    faults: Vec<String>,
    operations: usize,
    ok: usize,
    ambiguous: usize,
    linearizable: String,
    violations: usize,
    services_acknowledged: usize,
    services_missing: usize,
    phantom_services: usize,
    duplicate_slots: usize,
    seconds: f64,
}

fn to_lincheck(history: &[Record]) -> Vec<lin::KvOperation> {
    history
        .iter()
        .map(|r| {
            let input = match &r.call {
                Call::Get(k) => lin::KvInput::Get { key: k.to_string() },
                Call::Put(k, v) => lin::KvInput::Put { key: k.to_string(), value: v.clone() },
                Call::Cas(k, e, n) => {
                    lin::KvInput::Cas { key: k.to_string(), expected: e.clone(), new: n.clone() }
                }
            };
            let (complete, output) = match &r.done {
                None => (None, None),
                Some((t, a)) => (
                    Some(*t),
                    Some(match a {
                        Answer::Value(v) => lin::KvOutput::Get(v.clone()),
                        Answer::Done => lin::KvOutput::Ok,
                        Answer::Cas(b) => lin::KvOutput::Cas(*b),
                    }),
                ),
            };
            lin::Operation { client: r.client as u64, invoke: r.invoke, complete, input, output }
        })
        .collect()
}

#[test]
fn linearizable_under_kills_pauses_and_partitions() {
    let managers = env_or("SHOAL_CHAOS_MANAGERS", 3) as usize;
    let cycles = env_or("SHOAL_CHAOS_CYCLES", FAULTS.len() as u64) as usize;
    let seed = env_or("SHOAL_CHAOS_SEED", 15);
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tmp");
    let ul = Underlay::new("cx", managers);
    let mut nodes: Vec<Node> = (1..=managers).map(|i| ul.node(tmp.path(), &format!("m{i}"), i)).collect();
    // The last manager keeps its data on a small file system of its own (the disk-full fault).
    let small = SmallDisk::mount(&nodes[managers - 1].dir.join("data"), 256);
    let slow_disk = SlowFsync::build(tmp.path());
    for n in nodes.iter_mut() {
        slow_disk.start(n);
    }
    assert!(nodes[0].ok(&["cluster", "init"]).contains("initialized"));
    let token = nodes[0].ok(&["cluster", "join-token", "manager", "-q"]);
    for n in &nodes[1..] {
        n.ok(&["cluster", "join", "--token", &token, &nodes[0].addr()]);
    }
    let mut c = Cluster { ul, nodes };
    c.healthy(60);
    c.nodes[0].ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "slots",
        "--driver",
        "process",
        "--replicas",
        "3",
        "sleep",
        "600",
    ]);

    // Clients on the key-value store, and one that creates services (for phantoms and losses).
    let socks: Vec<PathBuf> = c.nodes.iter().map(|n| n.dir.join("shoal.sock")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut threads = Vec::new();
    for id in 0..CLIENTS {
        let (socks, stop, history) = (socks.clone(), stop.clone(), history.clone());
        threads.push(std::thread::spawn(move || client(id, seed, socks, start, stop, history)));
    }
    let creations = Arc::new(Mutex::new(Vec::<(String, Option<bool>)>::new()));
    {
        let (socks, stop, creations) = (socks.clone(), stop.clone(), creations.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 0xC0FFEE);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("obj-{n}");
                let spec = serde_json::json!({"name": name, "task_template": {"command": ["sleep", "600"]},
                    "mode": {"replicated": {"replicas": 0}}});
                let sock = &socks[rng.below(socks.len() as u64) as usize];
                let r = http(sock, "POST", "/v1/services", &serde_json::to_vec(&spec).expect("json"));
                let outcome = match r {
                    Sent::Answer(201, _) => Some(true),
                    Sent::Refused => Some(false),
                    Sent::Answer(s, _) if (400..500).contains(&s) => Some(false),
                    _ => None,
                };
                creations.lock().expect("creations").push((name, outcome));
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }

    let mut rng = Rng::new(seed);
    // Every fault once, in a seeded order, then faults at random: even CI's short run meets each.
    let mut order = FAULTS.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut faults = Vec::new();
    for cycle in 0..cycles {
        let fault = match order.get(cycle) {
            Some(f) => *f,
            None => FAULTS[rng.below(FAULTS.len() as u64) as usize],
        };
        // `SHOAL_CHAOS_ONLY=DiskFull` (a fault's name): that fault in every cycle.
        let fault = match std::env::var("SHOAL_CHAOS_ONLY") {
            Ok(only) => *FAULTS.iter().find(|f| format!("{f:?}") == only).expect("a fault's name"),
            Err(_) => fault,
        };
        let leader = match c.leader() {
            Some(l) => l,
            None => {
                c.healthy(60);
                c.leader().expect("a leader")
            }
        };
        let follower = (leader + 1 + rng.below(managers as u64 - 1) as usize) % managers;
        let hold = Duration::from_millis(1000 + rng.below(2000));
        faults.push(format!("{cycle}: {fault:?} (held {} ms)", hold.as_millis()));
        eprintln!("chaos cycle {cycle}: {fault:?}, held {} ms", hold.as_millis());
        match fault {
            Fault::KillLeader | Fault::KillFollower => {
                let i = if matches!(fault, Fault::KillLeader) { leader } else { follower };
                c.nodes[i].kill9();
                std::thread::sleep(hold);
                slow_disk.start(&mut c.nodes[i]);
            }
            Fault::PauseLeader | Fault::PauseFollower => {
                let i = if matches!(fault, Fault::PauseLeader) { leader } else { follower };
                c.signal(i, "STOP");
                std::thread::sleep(hold);
                c.signal(i, "CONT");
            }
            Fault::SlowDisk => {
                let i = if rng.below(2) == 0 { leader } else { follower };
                let ms = 200 + rng.below(301);
                faults.push(format!("{cycle}: (every fsync of manager {} took {ms} ms more)", i + 1));
                SlowFsync::slow(&c.nodes[i], ms);
                std::thread::sleep(hold);
                SlowFsync::fast(&c.nodes[i]);
            }
            Fault::IsolateLeader | Fault::LeaderDeaf => {
                c.cut(leader, matches!(fault, Fault::LeaderDeaf));
                std::thread::sleep(hold);
                c.heal(leader);
            }
            Fault::DiskFull => {
                small.fill();
                std::thread::sleep(hold);
                small.free();
                // A manager that stopped on a failed write is started again (its acknowledged
                // writes are on disk; what failed was never acknowledged).
                let last = managers - 1;
                if c.nodes[last].child.as_mut().is_some_and(|ch| matches!(ch.try_wait(), Ok(Some(_)))) {
                    faults.push(format!("{cycle}: the full-disk manager had stopped; restarted"));
                    c.nodes[last].kill9();
                    slow_disk.start(&mut c.nodes[last]);
                }
            }
        }
        c.healthy(60);
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client");
    }

    // Final reads through every manager, once all are back: they complete the history.
    let mut history = Arc::try_unwrap(history).expect("clients done").into_inner().expect("history");
    for (i, sock) in socks.iter().enumerate() {
        for k in 0..KEYS {
            let invoke = start.elapsed().as_nanos() as u64;
            let Outcome::Done(answer) = perform(sock, &Call::Get(k)) else { panic!("a final read answers") };
            let done = Some((start.elapsed().as_nanos() as u64, answer));
            history.push(Record { client: 1000 + i, call: Call::Get(k), invoke, done });
        }
    }
    let ops = to_lincheck(&history);
    if let Ok(path) = std::env::var("SHOAL_CHAOS_HISTORY") {
        std::fs::write(path, serde_json::to_vec(&ops).expect("json")).expect("history");
    }
    let options = lin::Options { max_states: 20_000_000, max_states_per_partition: 2_000_000 };
    let result = lin::check_kv(&ops, &options).expect("a well-formed history");
    let verdict = match &result.outcome {
        lin::Outcome::Linearizable => "linearizable".to_string(),
        lin::Outcome::NotLinearizable(v) => format!("NOT linearizable: {}", v.describe(&ops)),
        lin::Outcome::Unknown { .. } => "unknown (search budget exhausted)".to_string(),
    };
    let violations = usize::from(matches!(result.outcome, lin::Outcome::NotLinearizable(_)));

    // Services: every acknowledged creation is there, none that was refused; one task per slot.
    let listed: Vec<String> = c.nodes[0]
        .json(&["service", "ls", "--format", "json"])
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["spec"]["name"].as_str().map(str::to_string))
        .collect();
    let creations = creations.lock().expect("creations").clone();
    let acknowledged: Vec<&String> =
        creations.iter().filter(|(_, o)| *o == Some(true)).map(|(n, _)| n).collect();
    let missing = acknowledged.iter().filter(|n| !listed.contains(n)).count();
    let phantom = listed
        .iter()
        .filter(|n| n.as_str() != "slots")
        .filter(|n| !creations.iter().any(|(c, o)| c == *n && *o != Some(false)))
        .count();
    let tasks = common::eventually(90, "the slots service converged", || {
        let running = common::running_tasks(&c.nodes[0], "slots")?;
        (running.len() >= 3).then_some(running)
    });
    let mut slots: Vec<u64> = tasks.iter().filter_map(|t| t["slot"].as_u64()).collect();
    slots.sort_unstable();
    let duplicate_slots = slots.windows(2).filter(|w| w[0] == w[1]).count();

    let report = Report {
        managers,
        seed,
        cycles,
        faults,
        operations: history.len(),
        ok: history.iter().filter(|r| r.done.is_some()).count(),
        ambiguous: history.iter().filter(|r| r.done.is_none()).count(),
        linearizable: verdict.clone(),
        violations,
        services_acknowledged: acknowledged.len(),
        services_missing: missing,
        phantom_services: phantom,
        duplicate_slots,
        seconds: started.elapsed().as_secs_f64(),
    };
    eprintln!("{}", serde_json::to_string_pretty(&report).expect("json"));
    if let Ok(path) = std::env::var("SHOAL_CHAOS_REPORT") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("json")).expect("report");
    }
    assert!(result.is_linearizable(), "{verdict}");
    assert!(report.ok > 100, "the clients got answers: {report:?}");
    assert_eq!((missing, phantom, duplicate_slots), (0, 0, 0), "{report:?}");
}
