//! Shared by tests/checkpoint.rs and examples/checkpoint_downtime.rs: the binary is its own shim,
//! "nodes" with a local busybox image, task configs, logs and cleanup.
#![allow(dead_code)]

use shoal_driver::{Driver, Handle, LogOptions, TaskConfig};
use shoal_driver_oci::{ImageStore, OciDriver, OciDriverConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "shoal-test/busybox:1";

/// When run as `<exe> shim <task_dir>` (by `shim::launch`), be the shim and exit.
pub fn shim_entry() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        let code = match args.get(2) {
            Some(dir) => shoal_driver::shim::run(Path::new(dir)),
            None => 2,
        };
        std::process::exit(code);
    }
}

pub fn required() -> bool {
    std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1")
}

/// Root, runc, /bin/busybox and a CRIU whose `criu check` passes. Without them: skip (a message),
/// or fail under SHOAL_REQUIRE_RUNTIMES=1.
pub async fn usable() -> bool {
    let root = rustix::process::geteuid().is_root();
    let runc = Command::new("runc").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    let bb = Path::new("/bin/busybox").exists();
    let criu = shoal_driver::criu::probe(Path::new("criu")).await.is_some();
    if !(root && runc && bb && criu) {
        let what = format!("root={root} runc={runc} /bin/busybox={bb} criu-check={criu}");
        assert!(
            !required(),
            "SHOAL_REQUIRE_RUNTIMES=1 but a runtime is missing ({what}); run scripts/install-criu.sh"
        );
        eprintln!("skipping: needs root, runc, /bin/busybox and a working criu >= 4 ({what})");
    }
    root && runc && bb && criu
}

/// A rootfs tarball with a static busybox and its applets as symlinks.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs-src");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "sleep", "cat", "dd", "head", "tr", "ls", "rm", "true", "false", "hostname"]
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    tar
}

/// One "node": its own data dir (image store) and driver, with the busybox image imported.
pub struct Node {
    pub dir: PathBuf,
    pub driver: OciDriver,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Node {
    pub fn new(dir: &Path, rootfs_tar: &Path) -> Node {
        let data = dir.join("data");
        let store = ImageStore::open(data.join("images")).expect("store");
        store.import(std::fs::File::open(rootfs_tar).expect("open tar"), IMAGE).expect("import");
        let shim = std::env::current_exe().expect("current exe");
        Node { dir: dir.to_path_buf(), driver: OciDriver::new(OciDriverConfig::new(&data, shim)) }
    }

    pub fn task(&self, cmd: &[&str]) -> TaskConfig {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("ck{}x{n}", std::process::id());
        let task_dir = self.dir.join("tasks").join(&id);
        std::fs::create_dir_all(&task_dir).expect("task dir");
        TaskConfig {
            task_id: id.clone(),
            service_id: "svc".into(),
            name: format!("svc.1.{id}"),
            image: Some(IMAGE.into()),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            task_dir,
            volumes_dir: self.dir.join("volumes"),
            ..TaskConfig::default()
        }
    }
}

pub async fn logs(d: &OciDriver, h: &Handle) -> Vec<String> {
    let mut rx = d.logs(h, &LogOptions::default()).await.expect("logs");
    let mut out = Vec::new();
    while let Some(l) = rx.recv().await {
        out.push(l.expect("log line").line);
    }
    out
}

/// The numeric lines of a log, in order.
pub fn numbers(lines: &[String]) -> Vec<u64> {
    lines.iter().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Polls `f` every 50 ms until it returns `Some`, failing after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the task has logged a number >= `n`; returns the numbers so far.
pub async fn wait_for_count(d: &OciDriver, h: &Handle, n: u64) -> Vec<u64> {
    poll(&format!("{} to count to {n}", h.task_id), Duration::from_secs(60), || async {
        let nums = numbers(&logs(d, h).await);
        nums.last().is_some_and(|&l| l >= n).then_some(nums)
    })
    .await
}

/// Removes containers and mounts of the tasks it was told about, even when a test panics.
#[derive(Default)]
pub struct Cleanup {
    tasks: std::sync::Mutex<Vec<TaskConfig>>,
}

impl Cleanup {
    pub fn add(&self, cfg: &TaskConfig) {
        if let Ok(mut t) = self.tasks.lock() {
            t.push(cfg.clone());
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let tasks = self.tasks.lock().map(|t| t.clone()).unwrap_or_default();
        for cfg in tasks {
            let id = format!("shoal-{}", cfg.task_id);
            let _ = Command::new("runc").args(["delete", "--force", &id]).output();
            let rootfs = cfg.task_dir.join("rootfs");
            if std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(&*rootfs.to_string_lossy()))
            {
                let _ = Command::new("umount").arg("-l").arg(&rootfs).output();
            }
        }
    }
}

/// Whether runc still knows the container.
pub fn runc_knows(id: &str) -> bool {
    Command::new("runc").args(["state", id]).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
}
