//! Helpers shared by the tests that run real `shoal` processes.

#![allow(dead_code)] // each test binary uses a different part

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod https;
pub mod sim;

/// How often the polling helpers look again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `f` until it returns Some, or fails the test after `secs`.
pub fn eventually<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_or(secs, f, || format!("timed out waiting for {what}"))
}

/// Like [`eventually`], with a failure message built only when it times out (e.g. a log).
pub fn eventually_or<T>(secs: u64, f: impl FnMut() -> Option<T>, why: impl FnOnce() -> String) -> T {
    poll(Duration::from_secs(secs), f).unwrap_or_else(|| panic!("{}", why()))
}

/// Polls `f` until it returns Some, or gives up after `timeout` (None): for callers that must not
/// panic (cleanup in `Drop`) or that handle the timeout themselves.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`poll`] for async tests, looking again every `every` (a sampling period where the caller
/// also measures something on each call).
pub async fn poll_async<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for async tests.
pub async fn eventually_async<T>(secs: u64, what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    poll_async(Duration::from_secs(secs), POLL_EVERY, f)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Whether a task (a `service ps --format json` row) runs and is meant to.
pub fn running(t: &Value) -> bool {
    t["status"]["state"] == "running" && t["desired_state"] == "running"
}

/// Task id → (node id, pid) of the service's tasks that run and are meant to.
pub fn running_pids(n: &Node, service: &str) -> Option<std::collections::BTreeMap<String, (String, u32)>> {
    let out = n.cli(&["service", "ps", service, "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?
        .iter()
        .filter(|t| running(t))
        .map(|t| {
            let pid = t["status"]["runtime_id"].as_str()?.parse().ok()?;
            Some((t["id"].as_str()?.to_string(), (t["node_id"].as_str()?.to_string(), pid)))
        })
        .collect()
}

/// The tasks of `service` that run and are meant to (`service ps --format json` rows); None when
/// the list could not be read.
pub fn running_tasks(n: &Node, service: &str) -> Option<Vec<Value>> {
    let out = n.cli(&["service", "ps", service, "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v.as_array()?.iter().filter(|t| running(t)).cloned().collect())
}

/// Every task of `service` (`service ps --format json` rows, running or not); none when the list
/// could not be read.
pub fn service_tasks(n: &Node, service: &str) -> Vec<Value> {
    let out = n.cli(&["service", "ps", service, "--format", "json"]);
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// The first task of `service` whose state is running (`service ps` must answer).
pub fn task_of(n: &Node, service: &str) -> Option<Value> {
    let v = n.json(&["service", "ps", service, "--format", "json"]);
    v.as_array()?.iter().find(|t| t["status"]["state"] == "running").cloned()
}

/// The id of `service`'s one running task, waited for up to `secs`.
pub fn one_running_task(m: &Node, service: &str, secs: u64) -> String {
    eventually(secs, "the service's task to run", || {
        let t = running_tasks(m, service)?;
        match t.as_slice() {
            [one] => one["id"].as_str().map(str::to_string),
            _ => None,
        }
    })
}

/// A task's id (empty when the row has none).
pub fn id_of(t: &Value) -> String {
    t["id"].as_str().unwrap_or_default().to_string()
}

/// A task's address on its first network, without the prefix length.
pub fn addr_of(t: &Value) -> Option<String> {
    Some(t["networks"][0]["addrs"][0].as_str()?.split('/').next()?.to_string())
}

/// The hostnames of the nodes `n` lists as ready, sorted; None when the list could not be read.
pub fn ready_nodes(n: &Node) -> Option<Vec<String>> {
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

/// This node's Raft view: (its node id, the leader's node id).
pub fn leader_of(n: &Node) -> Option<(String, String)> {
    let r = n.raft()?;
    Some((r["node_id"].as_str()?.to_string(), r["leader_node"]["node_id"].as_str()?.to_string()))
}

/// Whether `n` is a follower that knows the leader.
pub fn is_follower(n: &Node) -> Option<bool> {
    let r = n.raft()?;
    let leader = r["leader_node"]["node_id"].as_str()?;
    Some(r["node_id"].as_str()? != leader)
}

/// Of two managers, (the leader, the follower), once one of them is a follower that knows the
/// leader.
pub fn leader_and_follower<'a>(a: &'a Node, b: &'a Node) -> (&'a Node, &'a Node) {
    eventually(30, "a follower that knows the leader", || match (is_follower(a)?, is_follower(b)?) {
        (false, true) => Some((a, b)),
        (true, false) => Some((b, a)),
        _ => None,
    })
}

/// Daemons m1, m2 and w1 under `root`: m1 runs `cluster init`, m2 (started with `m2_extra`) joins
/// it as a manager and w1 as a worker, both with tokens m1 gives; waits until both managers list
/// the three nodes ready.
pub fn two_managers_and_a_worker(root: &Path, m2_extra: &[&str]) -> (Node, Node, Node) {
    let mut m1 = Node::new(root, "m1");
    m1.start("daemon");
    assert!(m1.ok(&["cluster", "init"]).contains("initialized"));
    let mut m2 = Node::new(root, "m2");
    m2.start_with("daemon", m2_extra);
    let token = m1.ok(&["cluster", "join-token", "manager", "-q"]);
    m2.ok(&["cluster", "join", "--token", &token, &m1.addr()]);
    let mut w1 = Node::new(root, "w1");
    w1.start("daemon");
    let token = m1.ok(&["cluster", "join-token", "worker", "-q"]);
    w1.ok(&["cluster", "join", "--token", &token, &m1.addr()]);
    let want = vec!["m1".to_string(), "m2".to_string(), "w1".to_string()];
    for m in [&m1, &m2] {
        eventually_or(
            40,
            || (ready_nodes(m).as_ref() == Some(&want)).then_some(()),
            || format!("three ready nodes:\n{}", daemon_log(m)),
        );
    }
    (m1, m2, w1)
}

/// Runs `cmd` with `input` on its standard input; its output captured.
pub fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// The SHA-256 of `s` in hex, as `sha256sum` prints it.
pub fn sha256_hex(s: &str) -> String {
    let out = with_stdin(Command::new("sha256sum"), s.as_bytes());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// Every regular file under `dir` whose bytes contain `needle`. Other file systems mounted
/// below (a task's tmpfs: memory) are not descended into.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let Ok(root_dev) = std::fs::metadata(dir).map(|m| m.dev()) else { return found };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if meta.dev() != root_dev {
                continue;
            }
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                let data = std::fs::read(e.path()).unwrap_or_default();
                if data.windows(needle.len()).any(|w| w == needle) {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    found
}

/// `n`'s daemon log (`daemon.log`); empty when there is none.
pub fn daemon_log(n: &Node) -> String {
    std::fs::read_to_string(n.dir.join("daemon.log")).unwrap_or_default()
}

/// [`daemon_log`] without terminal colours.
pub fn daemon_log_plain(n: &Node) -> String {
    let raw = daemon_log(n);
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The node id in the data directory of the node whose files are in `dir` (`data/node.json`);
/// None before it has one.
pub fn node_id_in(dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(dir.join("data/node.json")).ok()?;
    serde_json::from_str::<Value>(&s).ok()?["node_id"].as_str().map(str::to_string)
}

/// What `sh -c cmd` printed on stdout.
pub fn sh_stdout(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process-driver task that runs `sh -c script` in `dir`, with a fresh id (`prefix-pid-seq`).
pub fn sh_task(prefix: &str, dir: &Path, script: &str) -> shoal_driver::TaskConfig {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{prefix}-{}-{seq}", std::process::id());
    shoal_driver::TaskConfig {
        task_id: id.clone(),
        name: id,
        command: vec!["sh".into(), "-c".into(), script.into()],
        task_dir: dir.to_path_buf(),
        ..Default::default()
    }
}

/// A TCP port that was free a moment ago on every address. Chosen below the kernel's ephemeral
/// range (32768–60999 here), where the outgoing connections of every test running at the same
/// time take their local ports: a port 0 bind handed out one of those, and a daemon started a
/// moment later could find it taken by some connection ("Address already in use").
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Test processes run side by side: each starts at its own place in 20000..32000.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (start.wrapping_add(n.wrapping_mul(13)) % 12_000) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in 20000..32000")
}

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

pub struct Node {
    pub dir: PathBuf,
    /// The address the daemon listens on (127.0.0.1, or a simulated host's underlay address).
    pub host: String,
    /// The network namespace of a simulated host the daemon runs in (see `sim`).
    pub netns: Option<String>,
    pub port: u16,
    /// Where the daemon serves its web UI (managers) and `/metrics`.
    pub ui_port: u16,
    /// Where the daemon serves the etcd API on loopback ([`Node::with_etcd`]); 0: the default
    /// address, which only one daemon on the machine gets (the others turn theirs off). Each
    /// port a test reserves ahead is a chance for another process to take it first, so only the
    /// tests of the etcd API ask for one.
    pub etcd_port: u16,
    pub child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_processes_under(&self.dir);
    }
}

/// Tasks outlive their daemon by design (their shims are not its children), but a test's tasks
/// must not outlive the test, also one that failed before it removed its services: kills every
/// process whose command line names a path under `dir` (the shims, whose argument is their task
/// directory) and everything below them.
pub fn kill_processes_under(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let mut children: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    let mut roots = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`: comm may hold spaces, so read after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(&needle) {
            roots.push(pid);
        }
    }
    let mut doomed = Vec::new();
    while let Some(pid) = roots.pop() {
        doomed.push(pid);
        roots.extend(children.get(&pid).into_iter().flatten());
    }
    for pid in doomed {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
    }
}

impl Node {
    pub fn new(root: &Path, name: &str) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        Node {
            dir,
            host: "127.0.0.1".into(),
            netns: None,
            port: free_port(),
            ui_port: free_port(),
            etcd_port: 0,
            child: None,
        }
    }

    /// A node (not started) that serves the etcd API on a loopback port of its own.
    pub fn with_etcd(root: &Path, name: &str) -> Node {
        let mut n = Node::new(root, name);
        n.etcd_port = free_port();
        n
    }

    pub fn start(&mut self, mode: &str) {
        self.start_with(mode, &[]);
    }

    pub fn start_with(&mut self, mode: &str, extra: &[&str]) {
        self.start_env(mode, extra, &[]);
    }

    /// Starts the daemon with extra environment variables (e.g. `SHOAL_FAILPOINTS`).
    pub fn start_env(&mut self, mode: &str, extra: &[&str], env: &[(&str, &str)]) {
        self.start_bin_env(Path::new(BIN), mode, extra, env)
    }

    /// Starts the daemon from another `shoal` binary (an upgrade: a copy of [`BIN`] elsewhere).
    pub fn start_bin(&mut self, bin: &Path, mode: &str, extra: &[&str]) {
        self.start_bin_env(bin, mode, extra, &[])
    }

    fn start_bin_env(&mut self, bin: &Path, mode: &str, extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{mode}.log")))
            .expect("log");
        // In a simulated host's namespace through `nsenter --net` (never `ip netns exec`, whose
        // private mount namespace would hide the namespaces the daemon creates).
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .envs(env.iter().copied())
            .args([mode])
            .args(extra)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--api-socket")
            .arg(self.dir.join("shoal.sock"))
            .args(["--listen-addr", &format!("{}:{}", self.host, self.port)])
            .args(["--ui-addr", &format!("127.0.0.1:{}", self.ui_port)])
            .args(if self.etcd_port == 0 {
                Vec::new()
            } else {
                vec!["--etcd-addr".to_string(), format!("127.0.0.1:{}", self.etcd_port)]
            })
            .args(["--hostname", self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("n")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.child = Some(child);
        let sock = self.dir.join("shoal.sock");
        // Accepting, not only bound: a daemon that stops right after binding (its log says why)
        // leaves a socket nobody listens on.
        eventually_or(
            20,
            || std::os::unix::net::UnixStream::connect(&sock).is_ok().then_some(()),
            || {
                let log = std::fs::read_to_string(self.dir.join(format!("{mode}.log"))).unwrap_or_default();
                format!("{} did not open its API socket:\n{log}", self.dir.display())
            },
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
        let _ = std::fs::remove_file(self.dir.join("shoal.sock"));
    }

    /// `http://127.0.0.1:<ui port>`.
    pub fn ui_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ui_port)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-H")
            .arg(format!("unix://{}", self.dir.join("shoal.sock").display()))
            .args(args)
            .output()
            .expect("cli")
    }

    /// The CLI with `input` on its standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("-H").arg(format!("unix://{}", self.dir.join("shoal.sock").display())).args(args);
        with_stdin(cmd, input)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("json")
    }

    /// This node's id (its `data/node.json` must exist).
    pub fn node_id(&self) -> String {
        node_id_in(&self.dir).expect("node_id in data/node.json")
    }

    pub fn raft(&self) -> Option<Value> {
        let out = self.cli(&["cluster", "inspect", "--format", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
            .flatten()
            .map(|v| v["raft"].clone())
    }
}

/// Joins `w` (a started `daemon`) to `m`'s cluster as a worker and waits until the managers see
/// it ready; returns what `cluster join` printed.
pub fn join_worker(m: &Node, w: &Node) -> String {
    let token = m.ok(&["cluster", "join-token", "worker", "-q"]);
    let out = w.ok(&["cluster", "join", "--token", &token, &m.addr()]);
    let hostname = w.dir.file_name().and_then(|n| n.to_str()).unwrap_or("n").to_string();
    eventually(30, "the worker to be ready", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        nodes
            .as_array()?
            .iter()
            .any(|n| n["description"]["hostname"] == hostname.as_str() && n["status"]["state"] == "ready")
            .then_some(())
    });
    out
}

/// A rootfs tarball with a static busybox and a few applets: the test image (no registry is
/// reachable here, so images are built from it).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for l in ["sh", "sleep", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).expect("symlink");
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().expect("tar");
    assert!(st.success());
    tar
}

/// Removes `services` and waits until the agents on `nodes` have cleaned up after every task
/// (processes, containers, mounts, cgroups), so nothing outlives the test.
pub fn remove_services_and_wait(m: &Node, services: &[&str], nodes: &[&Node]) {
    let mut args = vec!["service", "rm"];
    args.extend_from_slice(services);
    m.ok(&args);
    for n in nodes {
        let dir = n.dir.join("data/agent/tasks");
        eventually(30, "the agents to clean up", || {
            std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()).then_some(())
        });
    }
}

/// Imports the image tarball `tar` as `image` into each node's own image store (the oci driver's).
pub fn import_image(nodes: &[&Node], tar: &Path, image: &str) {
    for n in nodes {
        let out = Command::new(BIN)
            .args(["image", "--data-dir"])
            .arg(n.dir.join("data"))
            .arg("import")
            .arg(tar)
            .arg(image)
            .output()
            .expect("image import");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Fails the test unless the machine's dockerd answers.
pub fn assert_dockerd() {
    assert!(
        Command::new("docker").arg("version").output().is_ok_and(|o| o.status.success()),
        "this test needs dockerd (scripts/install-deps.sh starts it)"
    );
}

/// Imports the busybox rootfs of [`busybox_rootfs`] (made in `dir`) into the machine's dockerd as
/// `image`.
pub fn docker_import(dir: &Path, image: &str) {
    std::fs::create_dir_all(dir).expect("image dir");
    let tar = busybox_rootfs(dir);
    let out = Command::new("docker").arg("import").arg(&tar).arg(image).output().expect("docker import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A docker image a test imported: its containers and itself go on drop, also when the test fails
/// (declared before the nodes, so the daemons are killed first).
pub struct DockerImage(pub String);

impl DockerImage {
    /// Checks that dockerd runs, then imports the busybox rootfs (see [`docker_import`]) as a
    /// fresh image `name-<pid>:1`.
    pub fn import(dir: &Path, name: &str) -> DockerImage {
        assert_dockerd();
        let image = format!("{name}-{}:1", std::process::id());
        docker_import(dir, &image);
        DockerImage(image)
    }

    /// The names of the containers made from the image that start with `prefix` (tasks and infra
    /// containers).
    pub fn containers(&self, prefix: &str) -> Vec<String> {
        sh_stdout(&format!("docker ps -a --filter ancestor={} --format '{{{{.Names}}}}'", self.0))
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for DockerImage {
    fn drop(&mut self) {
        sh_stdout(&format!("docker rm -f $(docker ps -aq --filter ancestor={}) 2>/dev/null", self.0));
        sh_stdout(&format!("docker rmi -f {} 2>/dev/null", self.0));
    }
}

/// Starts `cmd` with its stdout piped; its lines arrive on the receiver as it prints them.
pub fn spawn_lines(mut cmd: Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next `n` lines from `rx`, waiting up to `secs` for them all.
pub fn next_lines(rx: &std::sync::mpsc::Receiver<String>, n: usize, secs: u64) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) => out.push(l),
            Err(_) => panic!("printed {out:?}, expected {n} lines"),
        }
    }
    out
}

/// `shoal daemon`s named `names` under `root` (each with its etcd port): the first runs `cluster
/// init`, the others join it as managers; returns once every one lists them all as voters.
pub fn managers(root: &Path, names: &[&str]) -> Vec<Node> {
    let mut nodes: Vec<Node> = names.iter().map(|n| Node::with_etcd(root, n)).collect();
    for n in nodes.iter_mut() {
        n.start("daemon");
    }
    assert!(nodes[0].ok(&["cluster", "init"]).contains("initialized"));
    let token = nodes[0].ok(&["cluster", "join-token", "manager", "-q"]);
    for n in &nodes[1..] {
        n.ok(&["cluster", "join", "--token", &token, &nodes[0].addr()]);
    }
    for n in &nodes {
        eventually(30, "every manager a voter everywhere", || {
            n.raft().filter(|r| r["voters"].as_object().map(|v| v.len()) == Some(names.len())).map(|_| ())
        });
    }
    nodes
}

/// The real `etcdctl` (v3 API) against `n`'s `--etcd-addr`: `host:port` without a scheme, as
/// etcdctl 3.4 needs (kv-etcd.md §1.3).
pub fn etcdctl(n: &Node, args: &[&str]) -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{}", n.etcd_port))
        .args(["--dial-timeout=5s", "--command-timeout=15s"])
        .args(args);
    c
}

/// `etcdctl ARGS` against `n`, run to the end.
pub fn etcdctl_run(n: &Node, args: &[&str]) -> Output {
    etcdctl(n, args).output().expect("etcdctl is installed (scripts/install-deps.sh)")
}

/// `etcdctl ARGS` against `n`, which must succeed: its stdout.
pub fn etcdctl_ok(n: &Node, args: &[&str]) -> String {
    let o = etcdctl_run(n, args);
    assert!(o.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `etcdctl watch ARGS` against `n`: its lines as they come.
pub fn etcdctl_watch(n: &Node, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
    spawn_lines(etcdctl(n, &[&["watch"][..], args].concat()))
}
