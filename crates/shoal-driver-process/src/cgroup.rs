//! cgroups for process tasks, v1 and v2 (unified).
//!
//! Shoal's cgroups live under a parent (`shoal` by default):
//! - v2: `<mount>/shoal/<task>`; the shims live in `<mount>/shoal/shims` (a leaf, so the parent
//!   holds no processes and may delegate controllers).
//! - v1: `<controller mount>/shoal/<task>` for each of memory, cpu, cpuacct and pids (cpu and
//!   cpuacct may share one mount, `cpu,cpuacct`, resolved through mountinfo), and
//!   `<controller mount>/shoal/shims`.
//!
//! On a hybrid system (v1 controllers plus an empty v2 hierarchy) the v1 controllers are used.
//!
//! **Pids.** A task's own `pids.max` is its pids limit when it has one (none by default, as with
//! Docker). The parent's `pids.max` caps all of Shoal's tasks together (and their shims, and the
//! oci driver's containers, which runc puts under `/shoal` too) at [`parent_pids_cap`] of the
//! node's pid space, so that a fork bomb in a task cannot take the last pids from the node
//! (daemon, sshd, …): the rest is kept for the system, as Kubernetes' `system-reserved` pids do.
//! The cap is written only where the parent has no limit (`max`): an administrator's value stays.

use serde::{Deserialize, Serialize};
use shoal_driver::{Limits, Stats};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The controllers Shoal uses.
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// The CFS period used for CPU quotas, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Where the cgroup hierarchies are mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// The unified hierarchy mounted at `mount`.
    V2 { mount: PathBuf },
    /// Controller name → the mount point of the v1 hierarchy that carries it.
    V1 { controllers: BTreeMap<String, PathBuf> },
}

/// Parses `/proc/self/mountinfo`: v1 when a v1 hierarchy carries the memory controller, else v2
/// when a cgroup2 file system is mounted, else `None`.
pub fn parse_mountinfo(text: &str) -> Option<Layout> {
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = pre.split_whitespace().nth(4) else { continue };
        let mut post = post.split_whitespace();
        let fstype = post.next();
        let _source = post.next();
        let options = post.next().unwrap_or("");
        let mount_point = PathBuf::from(unescape_mount(mount_point));
        match fstype {
            // Prefer /sys/fs/cgroup itself when several are mounted.
            Some("cgroup2") if v2.is_none() || mount_point == Path::new("/sys/fs/cgroup") => {
                v2 = Some(mount_point);
            }
            Some("cgroup") => {
                for opt in options.split(',') {
                    if CONTROLLERS.contains(&opt) {
                        v1.entry(opt.to_string()).or_insert_with(|| mount_point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    if v1.contains_key("memory") {
        Some(Layout::V1 { controllers: v1 })
    } else {
        v2.map(|mount| Layout::V2 { mount })
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the layout of this machine.
pub fn detect() -> Option<Layout> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text)
}

/// The cgroup directories of one task (or of the shims). v2: every field is the same directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCgroups {
    pub unified: bool,
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

impl Layout {
    pub fn version(&self) -> u8 {
        match self {
            Layout::V2 { .. } => 2,
            Layout::V1 { .. } => 1,
        }
    }

    /// The directories under which Shoal creates cgroups (`<mount>/<parent>`).
    pub fn parent_dirs(&self, parent: &str) -> Vec<PathBuf> {
        self.cgroups(parent, None).dirs()
    }

    /// The cgroups of `<parent>/<name>`.
    pub fn task(&self, parent: &str, name: &str) -> TaskCgroups {
        self.cgroups(parent, Some(name))
    }

    fn cgroups(&self, parent: &str, name: Option<&str>) -> TaskCgroups {
        let under = |base: &Path| {
            let p = base.join(parent);
            match name {
                Some(n) => p.join(n),
                None => p,
            }
        };
        match self {
            Layout::V2 { mount } => {
                let d = under(mount);
                TaskCgroups {
                    unified: true,
                    memory: Some(d.clone()),
                    cpu: Some(d.clone()),
                    cpuacct: Some(d.clone()),
                    pids: Some(d),
                }
            }
            Layout::V1 { controllers } => {
                let get = |c: &str| controllers.get(c).map(|m| under(m));
                TaskCgroups {
                    unified: false,
                    memory: get("memory"),
                    cpu: get("cpu"),
                    cpuacct: get("cpuacct"),
                    pids: get("pids"),
                }
            }
        }
    }
}

/// Keeps only characters safe in a cgroup directory name.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    match s.as_str() {
        "" | "." | ".." | "shims" => format!("task-{s}"),
        _ => s,
    }
}

/// The node's pid space: the lower of `kernel.pid_max` and `kernel.threads-max` (threads count as
/// pids), `None` when neither is readable.
pub fn node_pid_space() -> Option<u64> {
    let pid_max = read_u64(Path::new("/proc/sys/kernel/pid_max"));
    let threads_max = read_u64(Path::new("/proc/sys/kernel/threads-max"));
    match (pid_max, threads_max) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The most pids all of Shoal's tasks may hold together on a node with `space` pids: all but a
/// tenth, and never less than 1024 kept for the system (nor more than half the space).
pub fn parent_pids_cap(space: u64) -> u64 {
    let reserve = (space / 10).max(1024).min(space / 2);
    space - reserve
}

impl Layout {
    /// Writes `cap` into `<parent>/pids.max` when it has no limit yet (`max`).
    /// Returns the limit in effect there: `cap`, or the value someone else set.
    pub fn cap_parent_pids(&self, parent: &str, cap: u64) -> io::Result<u64> {
        let Some(dir) = self.cgroups(parent, None).pids else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no pids controller on this node"));
        };
        let file = dir.join("pids.max");
        let current = std::fs::read_to_string(&file)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", file.display())))?;
        match current.trim() {
            "max" => {
                std::fs::write(&file, cap.to_string())
                    .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", file.display())))?;
                Ok(cap)
            }
            other => other.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: unexpected {other:?}", file.display()),
                )
            }),
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` lines).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

impl TaskCgroups {
    /// The distinct directories.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut d: Vec<PathBuf> =
            [&self.memory, &self.cpu, &self.cpuacct, &self.pids].into_iter().flatten().cloned().collect();
        d.sort();
        d.dedup();
        d
    }

    /// The `cgroup.procs` files to write a pid into to join all of them.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self, limits: &Limits) -> io::Result<()> {
        if self.unified {
            if let Some(dir) = &self.memory {
                enable_v2_controllers(dir);
            }
        }
        for d in self.dirs() {
            std::fs::create_dir_all(&d)?;
        }
        self.write_limits(limits)
    }

    fn write_limits(&self, limits: &Limits) -> io::Result<()> {
        let write = |dir: &Option<PathBuf>, file: &str, value: String| -> io::Result<()> {
            match dir {
                Some(d) => std::fs::write(d.join(file), value).map_err(|e| {
                    io::Error::new(e.kind(), format!("writing {}: {e}", d.join(file).display()))
                }),
                None => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("no cgroup controller for {file} on this node"),
                )),
            }
        };
        let quota = limits.nano_cpus.map(|n| (n.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000));
        if self.unified {
            if let Some(m) = limits.memory_bytes {
                write(&self.memory, "memory.max", m.to_string())?;
                if let Some(d) = &self.memory {
                    if d.join("memory.swap.max").exists() {
                        write(&self.memory, "memory.swap.max", "0".into())?;
                    }
                }
            }
            if let Some(q) = quota {
                write(&self.cpu, "cpu.max", format!("{q} {CPU_PERIOD_US}"))?;
            }
            if let Some(p) = limits.pids {
                write(&self.pids, "pids.max", p.to_string())?;
            }
        } else {
            if let Some(m) = limits.memory_bytes {
                write(&self.memory, "memory.limit_in_bytes", m.to_string())?;
                if let Some(d) = &self.memory {
                    if d.join("memory.memsw.limit_in_bytes").exists() {
                        write(&self.memory, "memory.memsw.limit_in_bytes", m.to_string())?;
                    }
                }
            }
            if let Some(q) = quota {
                write(&self.cpu, "cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                write(&self.cpu, "cpu.cfs_quota_us", q.to_string())?;
            }
            if let Some(p) = limits.pids {
                write(&self.pids, "pids.max", p.to_string())?;
            }
        }
        Ok(())
    }

    /// Every pid in any of the cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs everything in the cgroups and returns once they are empty (or after 5 s).
    pub async fn kill_all(&self) {
        if self.unified {
            if let Some(d) = &self.memory {
                let kill = d.join("cgroup.kill");
                if kill.exists() {
                    if let Err(e) = std::fs::write(&kill, "1") {
                        tracing::warn!(cgroup = %d.display(), error = %e, "cgroup.kill failed");
                    }
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                tracing::warn!(?pids, "processes left in the task's cgroup after SIGKILL");
                return;
            }
            for pid in pids {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Removes the directories (killing anything left first). Missing directories are fine.
    pub async fn remove(&self) -> io::Result<()> {
        self.kill_all().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in self.dirs() {
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY while the last processes finish exiting.
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(cgroup = %d.display(), error = %e, "cgroup not removable yet");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(io::Error::new(e.kind(), format!("removing {}: {e}", d.display()))),
                }
            }
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed something in the memory cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        let d = self.memory.as_ref()?;
        if self.unified {
            keyed(&d.join("memory.events"), "oom_kill")
        } else {
            keyed(&d.join("memory.oom_control"), "oom_kill")
        }
    }

    /// v1 only: how often the memory limit was hit.
    pub fn memory_failcnt(&self) -> Option<u64> {
        if self.unified {
            return None;
        }
        read_u64(&self.memory.as_ref()?.join("memory.failcnt"))
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        if self.unified {
            if let Some(d) = &self.cpu {
                s.cpu_usage_ns = keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0).saturating_mul(1000);
            }
            if let Some(d) = &self.memory {
                s.memory_bytes = read_u64(&d.join("memory.current")).unwrap_or(0);
            }
        } else {
            if let Some(d) = &self.cpuacct {
                s.cpu_usage_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
            }
            if let Some(d) = &self.memory {
                s.memory_bytes = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
            }
        }
        if let Some(d) = &self.pids {
            s.pids = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        s
    }
}

/// v2: controllers must be enabled in every ancestor's `cgroup.subtree_control` for a task cgroup
/// to have them. Best effort: failures are logged; writing the limits reports what is missing.
fn enable_v2_controllers(task_dir: &Path) {
    let Some(parent) = task_dir.parent() else { return };
    let Some(root) = parent.parent() else { return };
    for dir in [root, parent] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot create cgroup");
            continue;
        }
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        for c in ["memory", "cpu", "pids"] {
            if !available.split_whitespace().any(|a| a == c) || enabled.split_whitespace().any(|a| a == c) {
                continue;
            }
            if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                tracing::warn!(cgroup = %dir.display(), controller = c, error = %e, "cannot enable controller");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
26 20 0:23 / /proc rw - proc proc rw
";

    #[test]
    fn detects_v1_with_combined_cpu_mount() {
        let l = parse_mountinfo(HYBRID).expect("layout");
        assert_eq!(l.version(), 1);
        let t = l.task("shoal", "t1");
        assert_eq!(t.cpu, Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/shoal/t1")));
        assert_eq!(t.cpuacct, t.cpu);
        assert_eq!(t.memory, Some(PathBuf::from("/sys/fs/cgroup/memory/shoal/t1")));
        assert_eq!(t.dirs().len(), 3);
        assert_eq!(l.parent_dirs("shoal")[1], PathBuf::from("/sys/fs/cgroup/memory/shoal"));
    }

    #[test]
    fn detects_v2() {
        let l = parse_mountinfo(UNIFIED).expect("layout");
        assert_eq!(l, Layout::V2 { mount: "/sys/fs/cgroup".into() });
        let t = l.task("shoal", "t1");
        assert_eq!(t.procs_files(), vec![PathBuf::from("/sys/fs/cgroup/shoal/t1/cgroup.procs")]);
        assert!(parse_mountinfo("26 20 0:23 / /proc rw - proc proc rw\n").is_none());
    }

    #[test]
    fn detects_this_machine() {
        // Whatever this machine has, detection must agree with /sys/fs/cgroup.
        if let Some(l) = detect() {
            match l {
                Layout::V2 { mount } => assert!(mount.join("cgroup.controllers").exists()),
                Layout::V1 { controllers } => assert!(controllers["memory"].join("cgroup.procs").exists()),
            }
        }
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount(r"/plain\"), r"/plain\");
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("web.1.abc"), "web.1.abc");
        assert_eq!(sanitize("../x"), ".._x");
        assert_eq!(sanitize("shims"), "task-shims");
        assert_eq!(sanitize(""), "task-");
    }

    #[test]
    fn v2_limits_and_controllers() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").expect("write");
        let l = Layout::V2 { mount: root.path().to_path_buf() };
        let t = l.task("shoal", "t");
        std::fs::create_dir_all(root.path().join("shoal/t")).expect("mkdir");
        std::fs::write(root.path().join("shoal/t/memory.swap.max"), "max").expect("write");
        let limits = Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(42) };
        t.create(&limits).expect("create");
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect(p);
        // The test root offers controllers; each write of "+c" replaces the fake file.
        assert_eq!(read("cgroup.subtree_control"), "+pids");
        assert_eq!(read("shoal/t/memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("shoal/t/memory.swap.max"), "0");
        assert_eq!(read("shoal/t/cpu.max"), "50000 100000");
        assert_eq!(read("shoal/t/pids.max"), "42");
        // Stats and OOM parsing.
        std::fs::write(root.path().join("shoal/t/cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").expect("w");
        std::fs::write(root.path().join("shoal/t/memory.current"), "4096\n").expect("w");
        std::fs::write(root.path().join("shoal/t/pids.current"), "3\n").expect("w");
        std::fs::write(
            root.path().join("shoal/t/memory.events"),
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        )
        .expect("w");
        let s = t.stats();
        assert_eq!((s.cpu_usage_ns, s.memory_bytes, s.pids), (1_500_000, 4096, 3));
        assert_eq!(t.oom_kills(), Some(1));
        std::fs::write(root.path().join("shoal/t/cgroup.procs"), "12\n7\n").expect("w");
        assert_eq!(t.pids(), vec![7, 12]);
    }

    #[test]
    fn parent_pids_cap_keeps_a_reserve() {
        assert_eq!(parent_pids_cap(32768), 32768 - 3276);
        assert_eq!(parent_pids_cap(4_194_304), 4_194_304 - 419_430);
        // Small nodes keep at least 1024, but tasks always get half.
        assert_eq!(parent_pids_cap(8192), 8192 - 1024);
        assert_eq!(parent_pids_cap(1500), 750);
        let space = node_pid_space().expect("this machine has /proc/sys/kernel/pid_max");
        assert!(parent_pids_cap(space) < space);
    }

    #[test]
    fn the_parent_cap_is_written_only_where_there_is_no_limit() {
        let root = tempfile::tempdir().expect("tempdir");
        let parent = root.path().join("shoal");
        std::fs::create_dir_all(&parent).expect("mkdir");
        std::fs::write(parent.join("pids.max"), "max\n").expect("w");
        let l = Layout::V2 { mount: root.path().to_path_buf() };
        assert_eq!(l.cap_parent_pids("shoal", 1000).expect("cap"), 1000);
        assert_eq!(std::fs::read_to_string(parent.join("pids.max")).expect("r"), "1000");
        // Set already (by us or an administrator): kept.
        std::fs::write(parent.join("pids.max"), "77\n").expect("w");
        assert_eq!(l.cap_parent_pids("shoal", 1000).expect("cap"), 77);
        assert_eq!(std::fs::read_to_string(parent.join("pids.max")).expect("r"), "77\n");
        // v1: the pids hierarchy's parent.
        let v1 = Layout::V1 { controllers: BTreeMap::from([("pids".to_string(), root.path().join("pids"))]) };
        std::fs::create_dir_all(root.path().join("pids/shoal")).expect("mkdir");
        std::fs::write(root.path().join("pids/shoal/pids.max"), "max\n").expect("w");
        assert_eq!(v1.cap_parent_pids("shoal", 5).expect("cap"), 5);
        assert_eq!(std::fs::read_to_string(root.path().join("pids/shoal/pids.max")).expect("r"), "5");
        let no_pids = Layout::V1 { controllers: BTreeMap::new() };
        assert!(no_pids.cap_parent_pids("shoal", 5).is_err());
    }

    #[test]
    fn v1_limits() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut controllers = BTreeMap::new();
        for c in ["memory", "pids"] {
            controllers.insert(c.to_string(), root.path().join(c));
        }
        controllers.insert("cpu".into(), root.path().join("cpu,cpuacct"));
        controllers.insert("cpuacct".into(), root.path().join("cpu,cpuacct"));
        let t = Layout::V1 { controllers }.task("shoal", "t");
        std::fs::create_dir_all(root.path().join("memory/shoal/t")).expect("mkdir");
        std::fs::write(root.path().join("memory/shoal/t/memory.memsw.limit_in_bytes"), "").expect("w");
        let limits = Limits { memory_bytes: Some(16 << 20), nano_cpus: Some(2_000_000_000), pids: Some(10) };
        t.create(&limits).expect("create");
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect(p);
        assert_eq!(read("memory/shoal/t/memory.limit_in_bytes"), (16u64 << 20).to_string());
        assert_eq!(read("memory/shoal/t/memory.memsw.limit_in_bytes"), (16u64 << 20).to_string());
        assert_eq!(read("cpu,cpuacct/shoal/t/cpu.cfs_quota_us"), "200000");
        assert_eq!(read("cpu,cpuacct/shoal/t/cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids/shoal/t/pids.max"), "10");
        std::fs::write(
            root.path().join("memory/shoal/t/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("w");
        assert_eq!(t.oom_kills(), Some(2));
        std::fs::write(root.path().join("cpu,cpuacct/shoal/t/cpuacct.usage"), "123456\n").expect("w");
        assert_eq!(t.stats().cpu_usage_ns, 123456);
    }
}
