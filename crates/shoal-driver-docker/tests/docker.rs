//! Tests against the real Docker Engine on this machine (run as root).
//!
//! Every test imports its own busybox image (a rootfs tar built from the host's static busybox,
//! sent through the Engine API) under a unique tag, and a guard removes the containers it made
//! and the image, also when the test fails. When there is no engine or no static busybox the tests
//! print why and pass, unless `SHOAL_REQUIRE_RUNTIMES=1` is set.

use bollard::query_parameters::{
    CreateImageOptions, RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use shoal_driver::{Driver, DriverError, Handle, Limits, LogOptions, LogStream, Recovered, TaskConfig};
use shoal_driver_docker::{DockerDriver, DockerDriverConfig, LABEL_SERVICE_ID, LABEL_TASK_ID};
use shoal_types::{Mount, MountType, PortConfig};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SOCKET: &str = "/var/run/docker.sock";
const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "httpd", "nc", "dd", "head", "mkdir", "tr", "kill", "ls", "true", "false",
    "id", "env", "pwd", "hostname", "ps", "grep", "touch",
];
const TIMEOUT: Duration = Duration::from_secs(60);

/// Removes what a test created, whatever the outcome.
struct Cleanup {
    image: String,
    containers: Arc<Mutex<Vec<String>>>,
    volumes: Arc<Mutex<Vec<String>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let image = self.image.clone();
        let containers = self.containers.lock().map(|c| c.clone()).unwrap_or_default();
        let volumes = self.volumes.lock().map(|v| v.clone()).unwrap_or_default();
        // Drop cannot await, and may run inside the test's runtime: clean up from a thread of its own.
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok(docker) = Docker::connect_with_unix(SOCKET, 60, bollard::API_DEFAULT_VERSION) else {
                    return;
                };
                let Ok(docker) = docker.negotiate_version().await else { return };
                for id in containers {
                    let options = RemoveContainerOptions { force: true, ..Default::default() };
                    if let Err(e) = docker.remove_container(&id, Some(options)).await {
                        if !e.to_string().contains("No such container") {
                            eprintln!("cleanup: removing container {id}: {e}");
                        }
                    }
                }
                for volume in volumes {
                    if let Err(e) = docker.remove_volume(&volume, None::<RemoveVolumeOptions>).await {
                        eprintln!("cleanup: removing volume {volume}: {e}");
                    }
                }
                let options = RemoveImageOptions { force: true, ..Default::default() };
                if let Err(e) = docker.remove_image(&image, Some(options), None).await {
                    eprintln!("cleanup: removing image {image}: {e}");
                }
            });
        });
        let _ = done.join();
    }
}

struct Env {
    driver: DockerDriver,
    docker: Docker,
    image: String,
    prefix: String,
    containers: Arc<Mutex<Vec<String>>>,
    volumes: Arc<Mutex<Vec<String>>>,
    _cleanup: Cleanup,
}

impl Env {
    /// The test's environment, or `None` (test skipped) when this machine cannot run it.
    async fn new(test: &str) -> Option<Env> {
        let required = std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1");
        let skip = |why: &str| {
            assert!(!required, "SHOAL_REQUIRE_RUNTIMES=1 but {why}");
            eprintln!("skipping {test}: {why}");
        };
        let Some(busybox) = BUSYBOX_CANDIDATES.iter().map(Path::new).find(|p| p.exists()) else {
            skip("no static busybox on this machine (apt-get install busybox-static)");
            return None;
        };
        let driver = DockerDriver::new(DockerDriverConfig { socket: Some(PathBuf::from(SOCKET)) });
        if driver.fingerprint().await.is_none() {
            skip("no docker engine at /var/run/docker.sock");
            return None;
        }
        let docker = driver.client().await.expect("docker client").clone();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
        let prefix = format!("{test}-{}-{nanos}", std::process::id());
        let tag = prefix.replace('_', "-");
        let image = format!("shoal-test-busybox:{tag}");
        let cleanup = Cleanup {
            image: image.clone(),
            containers: Arc::new(Mutex::new(Vec::new())),
            volumes: Arc::new(Mutex::new(Vec::new())),
        };
        let containers = cleanup.containers.clone();
        let volumes = cleanup.volumes.clone();
        import_busybox(&docker, busybox, &tag).await;
        Some(Env { driver, docker, image, prefix, containers, volumes, _cleanup: cleanup })
    }

    fn task(&self, name: &str, script: &str) -> TaskConfig {
        TaskConfig {
            task_id: format!("{}-{name}", self.prefix),
            service_id: format!("svc-{}", self.prefix),
            name: format!("svc.1.{}-{name}", self.prefix),
            image: Some(self.image.clone()),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![script.into()],
            ..Default::default()
        }
    }

    async fn start(&self, cfg: &TaskConfig) -> Handle {
        // Registered before the start so that a half-started container is cleaned up too.
        self.containers.lock().expect("lock").push(DockerDriver::container_name(cfg));
        self.driver.prepare(cfg).await.expect("prepare");
        let handle = self.driver.start(cfg).await.expect("start");
        self.containers.lock().expect("lock").push(handle.runtime_id.clone());
        handle
    }

    async fn wait(&self, handle: &Handle) -> shoal_driver::ExitStatus {
        tokio::time::timeout(TIMEOUT, self.driver.wait(handle)).await.expect("wait timed out").expect("wait")
    }
}

/// A rootfs with busybox and a few applet links, imported like `docker import`.
async fn import_busybox(docker: &Docker, busybox: &Path, tag: &str) {
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["bin", "tmp", "etc", "www"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        builder.append_data(&mut header, format!("{dir}/"), std::io::empty()).expect("dir");
    }
    let binary = std::fs::read(busybox).expect("read busybox");
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(binary.len() as u64);
    builder.append_data(&mut header, "bin/busybox", binary.as_slice()).expect("busybox");
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox").expect("link");
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    builder.append_data(&mut header, "etc/passwd", passwd.as_slice()).expect("passwd");
    let rootfs = builder.into_inner().expect("tar");

    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some("shoal-test-busybox".into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(bytes::Bytes::from(rootfs))), None);
    while let Some(item) = progress.next().await {
        item.expect("importing the busybox image");
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_logs(driver: &DockerDriver, handle: &Handle) -> Vec<shoal_driver::LogLine> {
    let mut rx = driver.logs(handle, &LogOptions::default()).await.expect("logs");
    let mut lines = Vec::new();
    while let Some(line) = tokio::time::timeout(TIMEOUT, rx.recv()).await.expect("logs timed out") {
        lines.push(line.expect("log line"));
    }
    lines
}

#[tokio::test]
async fn echo_exits_zero_with_logs() {
    let Some(env) = Env::new("echo").await else { return };
    let before = SystemTime::now() - Duration::from_secs(5);
    let cfg = env.task("echo", "echo hello-shoal; echo oops-shoal >&2");
    let handle = env.start(&cfg).await;
    assert_eq!(handle.driver, "docker");
    assert_eq!(handle.runtime_id.len(), 12);
    let status = env.wait(&handle).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(status.code, 0);

    let lines = all_logs(&env.driver, &handle).await;
    let out = lines.iter().find(|l| l.line == "hello-shoal").expect("stdout line");
    assert_eq!(out.stream, LogStream::Stdout);
    assert!(out.timestamp >= before && out.timestamp <= SystemTime::now() + Duration::from_secs(5));
    let err = lines.iter().find(|l| l.line == "oops-shoal").expect("stderr line");
    assert_eq!(err.stream, LogStream::Stderr);

    let tail = env.driver.logs(&handle, &LogOptions { tail: Some(1), ..Default::default() }).await;
    let mut tail = tail.expect("tail logs");
    let mut tailed = Vec::new();
    while let Some(line) = tail.recv().await {
        tailed.push(line.expect("line"));
    }
    assert_eq!(tailed.len(), 1, "{tailed:?}");

    match env.driver.recover(&handle).await.expect("recover") {
        Recovered::Exited(status) => assert_eq!(status.code, 0),
        other => panic!("expected exited, got {other:?}"),
    }
    env.driver.stop(&handle, Duration::from_secs(1)).await.expect("stop of an exited task");
    env.driver.destroy(&handle).await.expect("destroy");
    env.driver.destroy(&handle).await.expect("destroy again");
    env.driver.stop(&handle, Duration::from_secs(1)).await.expect("stop of a removed task");
    assert!(matches!(env.driver.recover(&handle).await, Err(DriverError::NotFound(_))));
}

#[tokio::test]
async fn non_zero_exit_code() {
    let Some(env) = Env::new("exit").await else { return };
    let handle = env.start(&env.task("exit", "exit 3")).await;
    let status = env.wait(&handle).await;
    assert_eq!(status.code, 3);
    assert!(!status.success());
    assert!(!status.oom_killed);
    assert_eq!(status.signal, None);
    env.driver.destroy(&handle).await.expect("destroy");
}

#[tokio::test]
async fn stop_kills_a_term_ignoring_task_after_the_grace() {
    let Some(env) = Env::new("stop").await else { return };
    let cfg = env.task("stop", "trap '' TERM; echo ready; while true; do sleep 1; done");
    let handle = env.start(&cfg).await;
    let follow = LogOptions { follow: true, ..Default::default() };
    let mut followed = env.driver.logs(&handle, &follow).await.expect("follow logs");
    loop {
        let line = tokio::time::timeout(TIMEOUT, followed.recv()).await.expect("no ready line");
        if line.expect("stream open").expect("log line").line == "ready" {
            break;
        }
    }
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    env.driver.stop(&handle, grace).await.expect("stop");
    let took = started.elapsed();
    assert!(took >= grace - Duration::from_millis(200), "stopped after {took:?}");
    assert!(took < grace + Duration::from_secs(15), "stopped after {took:?}");
    let status = env.wait(&handle).await;
    assert_eq!(status.code, 137, "{status:?}");
    assert_eq!(status.signal, Some(9));
    // Following ends when the task does.
    while let Some(line) = tokio::time::timeout(TIMEOUT, followed.recv()).await.expect("follow did not end") {
        line.expect("log line");
    }
    assert!(!status.oom_killed);
    env.driver.destroy(&handle).await.expect("destroy");
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let Some(env) = Env::new("oom").await else { return };
    // `exec`: the hog is the container's only process, so the OOM kill ends the container (with a
    // shell in front, the shell would go on and exit 0 after its child was killed).
    let mut cfg = env.task("oom", "exec dd if=/dev/zero of=/dev/null bs=256M count=1");
    cfg.limits = Limits { memory_bytes: Some(16 << 20), ..Default::default() };
    let handle = env.start(&cfg).await;
    let status = env.wait(&handle).await;
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(status.code, 137, "{status:?}");
    assert!(status.message.contains("OOM"), "{status:?}");
    env.driver.destroy(&handle).await.expect("destroy");
}

#[tokio::test]
async fn a_new_driver_recovers_a_running_task() {
    let Some(env) = Env::new("recover").await else { return };
    let cfg = env.task("recover", "echo up; exec sleep 600");
    let handle = env.start(&cfg).await;

    // As after an agent restart: a fresh driver with only the persisted handle.
    let persisted = serde_json::to_string(&handle).expect("serialize handle");
    let handle: Handle = serde_json::from_str(&persisted).expect("deserialize handle");
    let driver = DockerDriver::new(DockerDriverConfig::default());
    assert_eq!(driver.recover(&handle).await.expect("recover"), Recovered::Running);

    let listed = driver.list_shoal_containers().await.expect("list");
    let mine = listed.iter().find(|(task, _, _)| *task == cfg.task_id).expect("listed");
    assert!(mine.1.starts_with(&handle.runtime_id));
    assert!(mine.2, "listed as running");

    let stats = driver.stats(&handle).await.expect("stats");
    assert!(stats.pids >= 1, "{stats:?}");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert_eq!(stats.memory_limit_bytes, None);

    let exec = driver.exec(&handle, &["echo".into(), "from-exec".into()], TIMEOUT).await.expect("exec");
    assert_eq!(exec.exit_code, 0);
    assert_eq!(exec.output.trim(), "from-exec");
    let exec = driver.exec(&handle, &["sh".into(), "-c".into(), "exit 4".into()], TIMEOUT).await;
    assert_eq!(exec.expect("exec").exit_code, 4);
    let started = Instant::now();
    let exec = driver.exec(&handle, &["sleep".into(), "31".into()], Duration::from_secs(1)).await;
    assert_ne!(exec.expect("exec").exit_code, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The timed-out command was killed, not left behind.
    let count = ["sh".to_string(), "-c".into(), "ps | grep -c '[s]leep 31'".into()];
    eventually("the timed-out exec to be killed", || async {
        let exec = driver.exec(&handle, &count, TIMEOUT).await.expect("exec ps");
        (exec.output.trim() == "0").then_some(())
    })
    .await;

    let waiter = {
        let handle = handle.clone();
        let driver = DockerDriver::new(DockerDriverConfig::default());
        tokio::spawn(async move { driver.wait(&handle).await })
    };
    driver.stop(&handle, Duration::from_secs(5)).await.expect("stop");
    let status = tokio::time::timeout(TIMEOUT, waiter).await.expect("wait timed out").expect("join");
    let status = status.expect("wait");
    // sleep is PID 1 with no SIGTERM handler: the kernel ignores TERM for it, so it gets KILLed.
    assert!(matches!(status.code, 137 | 143), "{status:?}");
    driver.destroy(&handle).await.expect("destroy");
    assert!(matches!(driver.recover(&handle).await, Err(DriverError::NotFound(_))));
}

#[tokio::test]
async fn containers_have_no_restart_policy_and_carry_labels_and_limits() {
    let Some(env) = Env::new("policy").await else { return };
    let mut cfg = env.task("policy", "echo policy $(id -u) $(pwd) $(hostname) $SHOAL_GREETING");
    cfg.user = "65534".into();
    cfg.workdir = "/tmp".into();
    cfg.hostname = "shoal-host".into();
    cfg.limits = Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(64) };
    cfg.labels.insert("team".into(), "fish".into());
    cfg.env.insert("SHOAL_GREETING".into(), "hi".into());
    let handle = env.start(&cfg).await;
    let info = env.docker.inspect_container(&handle.runtime_id, None).await.expect("inspect");
    let host = info.host_config.expect("host config");
    let policy = host.restart_policy.and_then(|p| p.name).expect("restart policy");
    assert_eq!(policy, bollard::models::RestartPolicyNameEnum::NO);
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.log_config.and_then(|l| l.typ).as_deref(), Some("json-file"));
    let config = info.config.expect("config");
    let labels = config.labels.expect("labels");
    assert_eq!(labels.get(LABEL_TASK_ID), Some(&cfg.task_id));
    assert_eq!(labels.get(LABEL_SERVICE_ID), Some(&cfg.service_id));
    assert_eq!(labels.get("team").map(String::as_str), Some("fish"));
    assert!(config.env.unwrap_or_default().contains(&"SHOAL_GREETING=hi".to_string()));
    // Swarm's name: SERVICE.SLOT.TASKID.
    assert_eq!(info.name.as_deref(), Some(format!("/svc.1.{}", cfg.task_id).as_str()));
    assert!(env.wait(&handle).await.success());
    let lines = all_logs(&env.driver, &handle).await;
    assert!(lines.iter().any(|l| l.line == "policy 65534 /tmp shoal-host hi"), "{lines:?}");

    // Starting the same task again replaces the stale (exited) container of the same name.
    let again = env.start(&cfg).await;
    assert_ne!(again.runtime_id, handle.runtime_id);
    assert!(matches!(env.driver.recover(&handle).await, Err(DriverError::NotFound(_))));
    env.wait(&again).await;
    env.driver.destroy(&again).await.expect("destroy");
}

#[tokio::test]
async fn a_missing_image_is_invalid() {
    let Some(env) = Env::new("missing").await else { return };
    let mut cfg = env.task("missing", "true");
    cfg.image = Some(format!("shoal-test-missing:{}", env.prefix.replace('_', "-")));
    match env.driver.prepare(&cfg).await {
        Err(DriverError::Invalid(message)) => assert!(message.contains("image not found"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    env.containers.lock().expect("lock").push(DockerDriver::container_name(&cfg));
    assert!(matches!(env.driver.start(&cfg).await, Err(DriverError::Invalid(_))));

    let mut small = env.task("small", "true");
    small.limits.memory_bytes = Some(1 << 20);
    assert!(matches!(env.driver.prepare(&small).await, Err(DriverError::Invalid(_))));
}

#[tokio::test]
async fn bind_mounts_are_visible_inside() {
    let Some(env) = Env::new("bind").await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("greeting"), "from-the-host\n").expect("write");
    let volume = format!("shoal-test-{}", env.prefix.replace('_', "-"));
    env.volumes.lock().expect("lock").push(volume.clone());
    let script = "cat /mnt/host/greeting && ! touch /mnt/host/nope 2>/dev/null && echo kept > /data/file";
    let mut cfg = env.task("bind", script);
    cfg.mounts = vec![
        Mount {
            kind: MountType::Bind,
            source: dir.path().to_string_lossy().into_owned(),
            target: "/mnt/host".into(),
            readonly: true,
        },
        Mount { kind: MountType::Volume, source: volume.clone(), target: "/data".into(), readonly: false },
    ];
    let handle = env.start(&cfg).await;
    let status = env.wait(&handle).await;
    let lines = all_logs(&env.driver, &handle).await;
    assert!(status.success(), "{status:?} {lines:?}");
    assert!(lines.iter().any(|l| l.line == "from-the-host"), "{lines:?}");
    env.driver.destroy(&handle).await.expect("destroy");

    // The named volume is a docker volume that outlives the task.
    let mut reader = env.task("reader", "cat /data/file");
    reader.mounts = vec![cfg.mounts[1].clone()];
    let handle = env.start(&reader).await;
    assert!(env.wait(&handle).await.success());
    let lines = all_logs(&env.driver, &handle).await;
    assert!(lines.iter().any(|l| l.line == "kept"), "{lines:?}");
    env.driver.destroy(&handle).await.expect("destroy");

    let mut missing = cfg.clone();
    missing.mounts[0].source = dir.path().join("absent").to_string_lossy().into_owned();
    assert!(matches!(env.driver.prepare(&missing).await, Err(DriverError::Invalid(_))));
}

#[tokio::test]
async fn host_ports_are_published() {
    let Some(env) = Env::new("port").await else { return };
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let script = "echo shoal-port-ok > /www/index.html && exec httpd -f -p 8080 -h /www";
    let mut cfg = env.task("port", script);
    cfg.ports = vec![PortConfig { published: port, target: 8080, ..Default::default() }];
    let handle = env.start(&cfg).await;
    let body = eventually("the published port to answer", || async move {
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            response.contains("shoal-port-ok").then_some(response)
        })
        .await
        .ok()
        .flatten()
    })
    .await;
    assert!(body.starts_with("HTTP/1."), "{body}");
    env.driver.stop(&handle, Duration::from_secs(2)).await.expect("stop");
    env.driver.destroy(&handle).await.expect("destroy");
}

/// Deletes a named network namespace on drop, also when the test fails.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A task on overlay networks: its infra container holds the namespace and its container joins
/// it. `remove_network_namespace`, which needs only the task id, removes both: the agent calls it
/// for a task whose handle it never recorded (it died between the start and the record), and the
/// task's container must not run on there unseen.
#[tokio::test]
async fn removing_the_network_namespace_removes_the_task_container_in_it() {
    let Some(env) = Env::new("netns").await else { return };
    let mut cfg = env.task("netns", "exec sleep 600");
    let ns = format!("shoal-dtest-{}-netns", std::process::id());
    let _ns = NetnsGuard(ns.clone());
    env.containers.lock().expect("lock").push(DockerDriver::infra_name(&cfg.task_id));
    env.driver.network_namespace(&cfg, &ns).await.expect("the infra container");
    assert!(Path::new("/run/netns").join(&ns).exists(), "the namespace is named");
    cfg.netns = Some(Path::new("/run/netns").join(&ns));
    let handle = env.start(&cfg).await;
    assert!(matches!(env.driver.recover(&handle).await, Ok(Recovered::Running)));

    env.driver.remove_network_namespace(&cfg.task_id).await.expect("remove");
    assert!(
        matches!(env.driver.recover(&handle).await, Err(DriverError::NotFound(_))),
        "the task's container"
    );
    let infra = env.docker.inspect_container(&DockerDriver::infra_name(&cfg.task_id), None).await;
    assert!(infra.is_err(), "the infra container is gone");
    // Idempotent, as the agent calls it again when the task is removed.
    env.driver.remove_network_namespace(&cfg.task_id).await.expect("again");
}
