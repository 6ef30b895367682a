//! The load-test harness against a real manager (`shoal daemon` + `cluster init`, drained):
//! five simulated nodes join with the worker token, a service's tasks run on them and go with
//! the service. Keeps the harness that `scripts/bench-scale.sh` drives from rotting.

use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `shoal` binary of the same build (cargo builds every binary of the workspace before it
/// runs the tests).
fn shoal_bin() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_shoal-loadtest"));
    let bin = me.with_file_name("shoal");
    assert!(bin.exists(), "{} is missing: build the workspace (`cargo build -p shoal`) first", bin.display());
    bin
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(sock: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(shoal_bin())
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// The harness's newest report line.
fn last_report(out: &Path) -> Option<Value> {
    let f = std::fs::File::open(out).ok()?;
    let last = std::io::BufReader::new(f).lines().map_while(Result::ok).last()?;
    serde_json::from_str(&last).ok()
}

#[test]
fn simulated_nodes_join_run_a_services_tasks_and_drop_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let sock = d.join("m.sock");
    let addr = format!("127.0.0.1:{}", free_port());
    let _manager = Kill(
        Command::new(shoal_bin())
            .args(["daemon", "--data-dir"])
            .arg(d.join("m"))
            .arg("--api-socket")
            .arg(&sock)
            .args(["--listen-addr", &addr, "--ui-addr", "off", "--etcd-addr", "off", "--hostname", "manager"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon"),
    );
    poll("cluster init", 30, || cli(&sock, &["cluster", "init"]).ok());
    poll("drain the manager", 30, || {
        cli(&sock, &["node", "update", "--availability", "drain", "manager"]).ok()
    });
    let token = cli(&sock, &["cluster", "join-token", "worker", "-q"]).expect("token");
    std::fs::write(d.join("token"), token).expect("token file");

    let out = d.join("load.out");
    let _load = Kill(
        Command::new(env!("CARGO_BIN_EXE_shoal-loadtest"))
            .args(["--managers", &addr, "--nodes", "5", "--prefix", "simnode", "--token-file"])
            .arg(d.join("token"))
            .arg("--dir")
            .arg(d.join("nodes"))
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("loadtest"),
    );
    let nodes = poll("five simulated nodes ready", 60, || {
        let ls: Value = serde_json::from_str(&cli(&sock, &["node", "ls", "--format", "json"]).ok()?).ok()?;
        let ready: Vec<String> = ls
            .as_array()?
            .iter()
            .filter(|n| n["status"]["state"] == "ready")
            .filter_map(|n| n["description"]["hostname"].as_str().map(str::to_string))
            .collect();
        (ready.len() == 6).then_some(ready)
    });
    for i in 0..5 {
        assert!(nodes.contains(&format!("simnode-{i}")), "{nodes:?}");
    }

    cli(
        &sock,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "w",
            "--replicas",
            "20",
            "--driver",
            "process",
            "--env",
            "ROUND=1",
            "sleep",
            "1d",
        ],
    )
    .expect("create");
    poll("20 tasks running on the simulated nodes", 60, || {
        let r = last_report(&out)?;
        (r["running"] == 20 && r["running_by_round"]["1"] == 20).then_some(())
    });
    // None on the drained manager: every running task is one of the harness's.
    let ps = cli(&sock, &["service", "ps", "w", "--format", "json"]).expect("ps");
    assert!(!ps.contains("\"manager\""), "a task on the drained manager: {ps}");

    cli(&sock, &["service", "rm", "w"]).expect("rm");
    poll("the tasks stopped with the service", 60, || {
        let r = last_report(&out)?;
        (r["running"] == 0 && r["stopped"] == 20).then_some(())
    });
}
