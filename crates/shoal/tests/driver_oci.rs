//! The oci driver against real runc, a real overlayfs and a real registry. Run as root:
//! `CARGO_TARGET_DIR=/work/target-oci cargo test -p shoal --test driver_oci`.
//! Needs runc, busybox-static and docker-registry (`scripts/install-deps.sh`); tests skip (with a
//! message) when run without root or without runc.

use shoal_driver::{Driver, DriverError, ExitStatus, Handle, Limits, LogOptions, Recovered, TaskConfig};
use shoal_driver_oci::{ImageStore, OciDriver, OciDriverConfig};
use shoal_types::{Mount, MountType};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const IMAGE: &str = "shoal-test/busybox:1";

fn usable() -> bool {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let runc = Command::new("runc").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    let bb = Path::new("/bin/busybox").exists();
    if !(root && runc && bb) {
        // CI sets SHOAL_REQUIRE_RUNTIMES=1 (scripts/test.sh): there a missing runtime fails.
        assert!(!required(), "SHOAL_REQUIRE_RUNTIMES=1 but root, runc or /bin/busybox is missing");
        eprintln!("skipping: needs root, runc and /bin/busybox (busybox-static)");
    }
    root && runc && bb
}

fn required() -> bool {
    std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1")
}

/// A rootfs tarball with a static busybox and its applets as symlinks.
fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs-src");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in
        ["sh", "echo", "sleep", "cat", "dd", "head", "tr", "id", "hostname", "ls", "true", "false", "yes"]
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
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

struct Env {
    tmp: tempfile::TempDir,
    driver: OciDriver,
    cfg: OciDriverConfig,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let store = ImageStore::open(data.join("images")).expect("store");
    let tar = busybox_rootfs_tar(tmp.path());
    store.import(std::fs::File::open(&tar).expect("open tar"), IMAGE).expect("import");
    let cfg = OciDriverConfig::new(&data, env!("CARGO_BIN_EXE_shoal-shim"));
    Env { driver: OciDriver::new(cfg.clone()), cfg, tmp }
}

impl Env {
    fn task(&self, cmd: &[&str]) -> TaskConfig {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("oci{}x{n}", std::process::id());
        let task_dir = self.tmp.path().join("tasks").join(&id);
        std::fs::create_dir_all(&task_dir).expect("task dir");
        TaskConfig {
            task_id: id.clone(),
            service_id: "svc".into(),
            name: format!("svc.1.{id}"),
            image: Some(IMAGE.into()),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            task_dir,
            volumes_dir: self.tmp.path().join("volumes"),
            ..TaskConfig::default()
        }
    }

    async fn run(&self, cfg: &TaskConfig) -> (Handle, ExitStatus, Vec<String>) {
        self.driver.prepare(cfg).await.expect("prepare");
        let h = self.driver.start(cfg).await.expect("start");
        let status = tokio::time::timeout(Duration::from_secs(60), self.driver.wait(&h))
            .await
            .expect("task did not exit in time")
            .expect("wait");
        let lines = logs(&self.driver, &h).await;
        (h, status, lines)
    }
}

async fn logs(d: &OciDriver, h: &Handle) -> Vec<String> {
    let mut rx = d.logs(h, &LogOptions::default()).await.expect("logs");
    let mut out = Vec::new();
    while let Some(l) = rx.recv().await {
        out.push(l.expect("log line").line);
    }
    out
}

async fn cleanup(d: &OciDriver, h: &Handle) {
    d.destroy(h).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_reports_runc() {
    if !usable() {
        return;
    }
    let e = env();
    let info = e.driver.fingerprint().await.expect("fingerprint");
    assert_eq!(info.name, "oci");
    assert!(info.version.starts_with('1'), "{}", info.version);
    for c in ["images", "limits", "exec"] {
        assert!(info.capabilities.iter().any(|x| x == c));
    }
    let bad = OciDriver::new(OciDriverConfig { runc: "/nonexistent/runc".into(), ..e.cfg.clone() });
    assert!(bad.fingerprint().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_exits_zero_with_logs_and_own_pid_namespace() {
    if !usable() {
        return;
    }
    let e = env();
    let cfg = e.task(&["/bin/sh", "-c", "echo hello from oci; echo pid=$$; hostname"]);
    let (h, status, lines) = e.run(&cfg).await;
    assert!(status.success(), "{status:?} {lines:?}");
    assert!(lines.contains(&"hello from oci".to_string()), "{lines:?}");
    assert!(lines.contains(&"pid=1".to_string()), "{lines:?}");
    assert!(lines.contains(&cfg.task_id.chars().take(12).collect::<String>()), "{lines:?}");
    assert_eq!(h.runtime_id, format!("shoal-{}", cfg.task_id));
    cleanup(&e.driver, &h).await;
    assert!(!cfg.task_dir.join("upper").exists());
    // destroy is idempotent
    cleanup(&e.driver, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_and_image_env() {
    if !usable() {
        return;
    }
    let e = env();
    let mut cfg = e.task(&["/bin/sh", "-c", "echo FOO=$FOO; exit 7"]);
    cfg.env.insert("FOO".into(), "bar".into());
    let (h, status, lines) = e.run(&cfg).await;
    assert_eq!(status.code, 7);
    assert!(!status.oom_killed);
    assert!(lines.contains(&"FOO=bar".to_string()), "{lines:?}");
    cleanup(&e.driver, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_grace_then_kill() {
    if !usable() {
        return;
    }
    let e = env();
    // Handles TERM within the grace period.
    let cfg = e.task(&[
        "/bin/sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    let h = e.driver.start(&cfg).await.expect("start");
    wait_for_log(&e.driver, &h, "ready").await;
    e.driver.stop(&h, Duration::from_secs(10)).await.expect("stop");
    let s = e.driver.wait(&h).await.expect("wait");
    assert_eq!(s.code, 3, "{s:?}");
    assert!(logs(&e.driver, &h).await.contains(&"got-term".to_string()));
    cleanup(&e.driver, &h).await;

    // Ignores TERM: killed after the grace period.
    let cfg = e.task(&["/bin/sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"]);
    let h = e.driver.start(&cfg).await.expect("start");
    wait_for_log(&e.driver, &h, "ready").await;
    let t = Instant::now();
    e.driver.stop(&h, Duration::from_millis(500)).await.expect("stop");
    assert!(t.elapsed() >= Duration::from_millis(500));
    let s = e.driver.wait(&h).await.expect("wait");
    assert_eq!(s.code, 137, "{s:?}");
    // Stopping an exited task succeeds.
    e.driver.stop(&h, Duration::from_secs(1)).await.expect("stop again");
    cleanup(&e.driver, &h).await;
}

async fn wait_for_log(d: &OciDriver, h: &Handle, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if logs(d, h).await.iter().any(|l| l == want) {
            return;
        }
        assert!(Instant::now() < deadline, "never logged {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oom_killed() {
    if !usable() {
        return;
    }
    let e = env();
    let mut cfg = e.task(&["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]);
    cfg.limits = Limits { memory_bytes: Some(16 << 20), ..Limits::default() };
    let (h, status, _) = e.run(&cfg).await;
    assert_eq!(status.code, 137, "{status:?}");
    assert!(status.oom_killed, "{status:?}");
    cleanup(&e.driver, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_below_minimum_and_missing_image_are_invalid() {
    if !usable() {
        return;
    }
    let e = env();
    let mut cfg = e.task(&["/bin/true"]);
    cfg.limits.memory_bytes = Some(1 << 20);
    assert!(matches!(e.driver.prepare(&cfg).await, Err(DriverError::Invalid(_))));
    let mut cfg = e.task(&["/bin/true"]);
    cfg.image = Some("no/such:image".into());
    match e.driver.prepare(&cfg).await {
        Err(DriverError::Invalid(m)) => assert!(m.contains("image not found: no/such:image"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let mut cfg = e.task(&["/bin/true"]);
    cfg.mounts = vec![Mount {
        kind: MountType::Bind,
        source: "/no/such/dir".into(),
        target: "/x".into(),
        readonly: false,
    }];
    assert!(matches!(e.driver.prepare(&cfg).await, Err(DriverError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mounts_and_volumes_are_visible() {
    if !usable() {
        return;
    }
    let e = env();
    let host = e.tmp.path().join("hostdata");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("hello.txt"), "from the host\n").expect("write");
    let mut cfg =
        e.task(&["/bin/sh", "-c", "cat /data/hello.txt; echo persisted > /vol/f; cat /vol/f; id -u"]);
    cfg.user = "nobody".into();
    cfg.mounts = vec![
        Mount {
            kind: MountType::Bind,
            source: host.display().to_string(),
            target: "/data".into(),
            readonly: true,
        },
        Mount { kind: MountType::Volume, source: "v1".into(), target: "/vol".into(), readonly: false },
    ];
    std::fs::create_dir_all(cfg.volumes_dir.join("v1")).expect("vol");
    std::fs::set_permissions(cfg.volumes_dir.join("v1"), std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let (h, status, lines) = e.run(&cfg).await;
    assert!(status.success(), "{status:?} {lines:?}");
    assert!(lines.contains(&"from the host".to_string()), "{lines:?}");
    assert!(lines.contains(&"persisted".to_string()), "{lines:?}");
    assert!(lines.contains(&"65534".to_string()), "{lines:?}");
    assert_eq!(std::fs::read_to_string(cfg.volumes_dir.join("v1/f")).expect("volume file"), "persisted\n");
    cleanup(&e.driver, &h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_exec_and_stats_with_a_fresh_driver() {
    if !usable() {
        return;
    }
    let e = env();
    let mut cfg = e.task(&["/bin/sh", "-c", "echo ready; while true; do sleep 0.1; done"]);
    cfg.limits = Limits { memory_bytes: Some(64 << 20), pids: Some(50), nano_cpus: Some(500_000_000) };
    let h = e.driver.start(&cfg).await.expect("start");
    wait_for_log(&e.driver, &h, "ready").await;
    let fresh = OciDriver::new(e.cfg.clone());
    assert_eq!(fresh.recover(&h).await.expect("recover"), Recovered::Running);
    let r = fresh
        .exec(
            &h,
            &["/bin/sh".into(), "-c".into(), "echo in-container; exit 4".into()],
            Duration::from_secs(20),
        )
        .await
        .expect("exec");
    assert_eq!(r.exit_code, 4);
    assert!(r.output.contains("in-container"), "{r:?}");
    let st = fresh.stats(&h).await.expect("stats");
    assert!(st.pids >= 1, "{st:?}");
    assert_eq!(st.memory_limit_bytes, Some(64 << 20));
    fresh.stop(&h, Duration::from_millis(200)).await.expect("stop");
    match fresh.recover(&h).await.expect("recover") {
        Recovered::Exited(s) => assert_eq!(s.code, 137),
        other => panic!("expected Exited, got {other:?}"),
    }
    cleanup(&fresh, &h).await;
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Registry(std::process::Child);
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_registry_and_run() {
    if !usable() {
        return;
    }
    let bin = Path::new("/usr/bin/docker-registry");
    if !bin.exists() {
        assert!(!required(), "SHOAL_REQUIRE_RUNTIMES=1 but /usr/bin/docker-registry is missing");
        eprintln!("skipping: /usr/bin/docker-registry is not installed");
        return;
    }
    let e = env();
    let port = free_port();
    let reg_dir = e.tmp.path().join("registry");
    std::fs::create_dir_all(&reg_dir).expect("registry dir");
    let conf = e.tmp.path().join("registry.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            reg_dir.display()
        ),
    )
    .expect("config");
    let _reg = Registry(
        Command::new(bin)
            .arg("serve")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "registry did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reference = format!("127.0.0.1:{port}/shoal/bb:v1");
    e.driver.store().expect("store").push(IMAGE, &reference, true).await.expect("push");

    // A second node's store pulls it.
    let data2 = e.tmp.path().join("data2");
    let store2 = ImageStore::open(data2.join("images")).expect("store2");
    let rec = store2.pull(&reference, true).await.expect("pull");
    assert_eq!(rec.name, reference);
    assert_eq!(store2.list().expect("list").len(), 1);
    // Pulling again is a no-op for the blobs.
    store2.pull(&reference, true).await.expect("pull again");

    let d2 = OciDriver::new(OciDriverConfig::new(&data2, env!("CARGO_BIN_EXE_shoal-shim")));
    let mut cfg = e.task(&["/bin/echo", "pulled and ran"]);
    cfg.image = Some(reference.clone());
    d2.prepare(&cfg).await.expect("prepare");
    let h = d2.start(&cfg).await.expect("start");
    let s = d2.wait(&h).await.expect("wait");
    assert!(s.success(), "{s:?}");
    assert_eq!(logs(&d2, &h).await, vec!["pulled and ran".to_string()]);
    d2.destroy(&h).await.expect("destroy");
}

#[test]
fn image_cli_import_ls_rm() {
    if !usable() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = busybox_rootfs_tar(tmp.path());
    let data = tmp.path().join("data");
    let shoal = env!("CARGO_BIN_EXE_shoal");
    let run = |args: &[&str]| {
        let out = Command::new(shoal)
            .arg("image")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .expect("run shoal");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["import", &tar.display().to_string(), "cli/bb"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["ls", "-q"]);
    assert!(ok && out.trim() == "cli/bb:latest", "{out}");
    let (ok, out) = run(&["ls", "--format", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["name"], "cli/bb:latest");
    let (ok, out) = run(&["rm", "cli/bb"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["ls", "-q"]);
    assert!(ok && out.trim().is_empty(), "{out}");
    let (ok, out) = run(&["rm", "cli/bb"]);
    assert!(!ok && out.contains("image not found"), "{out}");
    // Layers and blobs went with the last image.
    assert_eq!(std::fs::read_dir(data.join("images/layers")).expect("layers").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_missing_from_the_image_is_rejected_and_leaves_nothing_behind() {
    if !usable() {
        return;
    }
    let e = env();
    let cfg = e.task(&["/bin/no-such-program"]);
    let err = e.driver.prepare(&cfg).await.expect_err("a missing program is found out before starting");
    assert!(matches!(err, shoal_driver::DriverError::Invalid(_)), "{err:?}");
    let err = e.driver.start(&cfg).await.expect_err("a missing program cannot start");
    assert!(matches!(err, shoal_driver::DriverError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-program"), "{err}");
    // A bare name is looked up through PATH in the image; applets that are symlinks count.
    e.driver.prepare(&e.task(&["sleep", "1"])).await.expect("sleep is in the image");
    // No handle reaches the agent, so nothing may be left: no runc state, no mount.
    let state =
        Command::new("runc").args(["state", &format!("shoal-{}", cfg.task_id)]).output().expect("runc");
    assert!(!state.status.success(), "the container is gone");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&cfg.task_dir.display().to_string()), "the overlay is unmounted");
}

/// A start that was interrupted after runc created the container (the daemon died mid-start)
/// leaves runc's state behind: starting the same task again removes it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_container_of_the_same_task_is_removed_at_start() {
    if !usable() {
        return;
    }
    let e = env();
    let cfg = e.task(&["/bin/echo", "first"]);
    let (h, status, _) = e.run(&cfg).await;
    assert!(status.success(), "{status:?}");
    // `runc run --keep`: the stopped container stays known to runc until it is deleted.
    assert!(Path::new("/run/runc").join(&h.runtime_id).exists(), "runc keeps the stopped container");
    let again = TaskConfig { command: vec!["/bin/echo".into(), "second".into()], ..cfg.clone() };
    let h2 = e.driver.start(&again).await.expect("start over the leftover");
    assert_eq!(h2.runtime_id, h.runtime_id, "the same container id");
    let s = tokio::time::timeout(Duration::from_secs(60), e.driver.wait(&h2))
        .await
        .expect("in time")
        .expect("wait");
    assert!(s.success(), "{s:?}");
    assert!(logs(&e.driver, &h2).await.contains(&"second".to_string()));
    cleanup(&e.driver, &h2).await;
}
