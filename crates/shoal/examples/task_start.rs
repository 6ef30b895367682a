//! Task start latency per driver, next to the raw runtime in the same run:
//! `cargo run --release -p shoal --example task_start -- [RUNS]` (as root; docker and runc need
//! their runtimes and the image `shoal-bench:latest` built by scripts/bench-agent.sh).
//!
//! For each driver: the time of `prepare` + `start` until the driver reports the task running
//! (what the agent does between receiving an assignment and reporting `running`), then `stop` +
//! `destroy` outside the timing. The raw baselines are `docker run -d` and `runc run -d` of the
//! same command, timed the same way (until the command returns).

use shoal_driver::{Driver, Limits, TaskConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn cfg(dir: &std::path::Path, id: &str, image: Option<&str>, cmd: &[&str]) -> TaskConfig {
    TaskConfig {
        task_id: id.into(),
        service_id: "bench".into(),
        name: format!("bench.{id}"),
        image: image.map(str::to_string),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        limits: Limits { memory_bytes: Some(64 << 20), ..Default::default() },
        task_dir: dir.join(id),
        volumes_dir: dir.join("volumes"),
        ..Default::default()
    }
}

/// `RSS, PSS, private` (KiB) of the shim in `h`'s state (`launched.shim_pid`), from smaps_rollup.
fn shim_memory(h: &shoal_driver::Handle) -> Option<String> {
    let pid = h.state.get("launched")?.get("shim_pid")?.as_i64()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    Some(format!(
        "shim RSS {} KiB, PSS {} KiB, private {} KiB",
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:")
    ))
}

async fn bench(driver: &dyn Driver, runs: usize, image: Option<&str>, cmd: &[&str]) -> Option<Duration> {
    bench_with_memory(driver, runs, image, cmd).await.map(|(d, _)| d)
}

/// The median start, and the memory of the last run's shim (when the driver has one).
async fn bench_with_memory(
    driver: &dyn Driver,
    runs: usize,
    image: Option<&str>,
    cmd: &[&str],
) -> Option<(Duration, Option<String>)> {
    driver.fingerprint().await?;
    let dir = tempfile::tempdir().ok()?;
    let mut times = Vec::new();
    let mut memory = None;
    for i in 0..runs {
        let c = cfg(dir.path(), &format!("b{i}x{}", std::process::id()), image, cmd);
        std::fs::create_dir_all(&c.task_dir).ok()?;
        let t = Instant::now();
        if let Err(e) = driver.prepare(&c).await {
            eprintln!("{}: prepare: {e}", driver.name());
            return None;
        }
        let h = match driver.start(&c).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{}: start: {e}", driver.name());
                return None;
            }
        };
        times.push(t.elapsed());
        if i + 1 == runs {
            memory = shim_memory(&h);
        }
        let _ = driver.stop(&h, Duration::from_secs(1)).await;
        let _ = driver.destroy(&h).await;
    }
    Some((median(times), memory))
}

fn raw(
    runs: usize,
    mut make: impl FnMut(usize) -> std::process::Command,
    cleanup: impl Fn(usize),
) -> Option<Duration> {
    let mut times = Vec::new();
    for i in 0..runs {
        let mut c = make(i);
        let t = Instant::now();
        let ok = c.stdout(std::process::Stdio::null()).status().ok()?.success();
        times.push(t.elapsed());
        cleanup(i);
        if !ok {
            return None;
        }
    }
    Some(median(times))
}

fn show(name: &str, d: Option<Duration>) {
    match d {
        Some(d) => println!("{name:<28} {:>8.1} ms", d.as_secs_f64() * 1000.0),
        None => println!("{name:<28} {:>8}", "n/a"),
    }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    // The shim: $SHOAL_SHIM, or `shoal-shim` built next to this example; and the `shoal` binary
    // (which can be the shim too): $SHOAL_BIN, or the one built next to this example.
    let built = |name: &str| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.parent().and_then(|p| p.parent()).map(|p| p.join(name)).unwrap_or_default()
    };
    let shim = std::env::var_os("SHOAL_SHIM").map(PathBuf::from).unwrap_or_else(|| built("shoal-shim"));
    let shoal = std::env::var_os("SHOAL_BIN").map(PathBuf::from).unwrap_or_else(|| built("shoal"));
    println!("median of {runs} sequential starts (prepare + start until running)");
    for (name, exe) in [("shoal process driver", &shim), ("  same under `shoal shim`", &shoal)] {
        let process =
            shoal_driver_process::ProcessDriver::new(shoal_driver_process::ProcessDriverConfig::new(exe));
        match bench_with_memory(&process, runs, None, &["sleep", "60"]).await {
            Some((d, memory)) => {
                show(name, Some(d));
                if let Some(m) = memory {
                    println!("{:<28} {m}", "");
                }
            }
            None => show(name, None),
        }
    }
    show(
        "raw fork+exec (sleep 60)",
        raw(
            runs,
            |_| {
                let mut c = std::process::Command::new("sh");
                c.args(["-c", "sleep 60 & kill $!"]);
                c
            },
            |_| {},
        ),
    );
    if let Some(rootfs_tar) = std::env::var_os("SHOAL_BENCH_ROOTFS").map(PathBuf::from) {
        match oci(&shim, &rootfs_tar, runs).await {
            Ok((driver, raw)) => {
                show("shoal oci driver", driver);
                show("raw runc run -d", raw);
            }
            Err(e) => eprintln!("oci: {e}"),
        }
    }
    let docker = shoal_driver_docker::DockerDriver::new(Default::default());
    show("shoal docker driver", bench(&docker, runs, Some("shoal-bench:latest"), &["sleep", "60"]).await);
    show(
        "raw docker run -d",
        raw(
            runs,
            |i| {
                let mut c = std::process::Command::new("docker");
                c.args([
                    "run",
                    "-d",
                    "--name",
                    &format!("raw-bench-{i}"),
                    "shoal-bench:latest",
                    "sleep",
                    "60",
                ]);
                c
            },
            |i| {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", &format!("raw-bench-{i}")])
                    .stdout(std::process::Stdio::null())
                    .status();
            },
        ),
    );
}

/// The oci driver on a private image store, and `runc run -d` of the same rootfs.
async fn oci(
    shim: &std::path::Path,
    rootfs_tar: &std::path::Path,
    runs: usize,
) -> Result<(Option<Duration>, Option<Duration>), String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let driver = shoal_driver_oci::OciDriver::new(shoal_driver_oci::OciDriverConfig::new(root.path(), shim));
    let store = driver.store().map_err(|e| e.to_string())?;
    let f = std::fs::File::open(rootfs_tar).map_err(|e| e.to_string())?;
    store.import(f, "shoal-bench:latest").map_err(|e| e.to_string())?;
    let ours = bench(&driver, runs, Some("shoal-bench:latest"), &["sleep", "60"]).await;

    // The raw baseline: one unpacked rootfs, one bundle per run.
    let rootfs = root.path().join("raw-rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
    let st = std::process::Command::new("tar").arg("-C").arg(&rootfs).arg("-xf").arg(rootfs_tar).status();
    if !st.is_ok_and(|s| s.success()) {
        return Err("unpacking the rootfs failed".into());
    }
    let bundle = root.path().join("raw-bundle");
    std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    let st = std::process::Command::new("runc").arg("spec").arg("--bundle").arg(&bundle).status();
    if !st.is_ok_and(|s| s.success()) {
        return Err("runc spec failed".into());
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sleep", "60"]);
    spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    std::fs::write(&path, serde_json::to_vec(&spec).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let pid = std::process::id();
    let raw = raw(
        runs,
        |i| {
            let mut c = std::process::Command::new("runc");
            c.args(["run", "-d", "--bundle"]).arg(&bundle).arg(format!("raw-bench-{pid}-{i}"));
            c.stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            c
        },
        |i| {
            let _ = std::process::Command::new("runc")
                .args(["delete", "--force", &format!("raw-bench-{pid}-{i}")])
                .status();
        },
    );
    Ok((ours, raw))
}
