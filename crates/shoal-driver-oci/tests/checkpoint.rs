//! Checkpoint/restore of oci tasks with real runc and CRIU. Run as root:
//! `CARGO_TARGET_DIR=/work/target-criu cargo test -p shoal-driver-oci --test checkpoint`.
//! Needs runc, busybox-static (`scripts/install-deps.sh`) and CRIU >= 4 (`scripts/install-criu.sh`);
//! skips without them, fails under SHOAL_REQUIRE_RUNTIMES=1.
//!
//! No libtest harness: the binary is also the tasks' shim (`<exe> shim <task_dir>`), so it has its
//! own `main`, which speaks the part of libtest's command line that cargo test and nextest use
//! (`--list --format terse`, `--exact NAME`, name filters).

mod support;

use shoal_driver::{CheckpointOptions, Driver, DriverError, Recovered};
use shoal_driver_oci::checkpoint::{self, CheckpointError};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use support::{logs, numbers, wait_for_count, Cleanup, Node};

/// `/tmp/count` is replaced by a rename, never truncated in place: a reader (the exec below) must
/// never see it empty between the shell's truncation and its write.
const COUNTER: &str = "echo before > /tmp/before; rm /etc/group; i=0; \
    while true; do i=$((i+1)); echo $i; echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; \
    sleep 0.05; done";
const CLUSTER: &[u8] = b"cluster-test";
const KEY: &[u8] = b"test-cluster-checkpoint-key";

fn binding(task_id: &str) -> Vec<u8> {
    [task_id.as_bytes(), b"\0", CLUSTER].concat()
}

async fn exec_out(n: &Node, h: &shoal_driver::Handle, cmd: &str) -> (i32, String) {
    let r = n
        .driver
        .exec(h, &["/bin/sh".to_string(), "-c".into(), cmd.into()], Duration::from_secs(10))
        .await
        .expect("exec");
    (r.exit_code, r.output.trim().to_string())
}

/// A counter checkpointed on node A continues on node B (other data dir, task dir and container
/// id): the same process, with its memory and its rootfs changes, output in the new task's log.
async fn counter_moves_to_another_node() {
    if !support::usable().await {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = support::busybox_rootfs_tar(tmp.path());
    let (a, b) = (Node::new(&tmp.path().join("a"), &tar), Node::new(&tmp.path().join("b"), &tar));
    let guard = Cleanup::default();

    let info = a.driver.fingerprint().await.expect("fingerprint");
    assert!(info.capabilities.iter().any(|c| c == "checkpoint"), "{info:?}");

    let cfg = a.task(&["/bin/sh", "-c", COUNTER]);
    guard.add(&cfg);
    let h = a.driver.start(&cfg).await.expect("start");
    wait_for_count(&a.driver, &h, 20).await;

    // The agent is already waiting when the checkpoint stops the task.
    let waiter = {
        let (d, h) = (a.driver.clone(), h.clone());
        tokio::spawn(async move { d.wait(&h).await })
    };
    let dir = tmp.path().join("a/ck");
    let report = a.driver.checkpoint(&h, &dir, &CheckpointOptions::default()).await.expect("checkpoint");
    eprintln!("checkpoint: {report:?}");
    let status = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the checkpointed task did not end")
        .expect("join")
        .expect("wait");
    assert!(status.is_checkpointed(), "{status:?}");
    assert_eq!(a.driver.wait(&h).await.expect("wait"), status);
    assert_eq!(a.driver.recover(&h).await.expect("recover"), Recovered::Exited(status));
    let before = numbers(&logs(&a.driver, &h).await);
    let last = *before.last().expect("counted");
    assert!(last >= 20);
    assert_eq!(before, (1..=last).collect::<Vec<_>>(), "the original's log is complete");
    a.driver.destroy(&h).await.expect("destroy after checkpoint");
    assert!(!support::is_mounted(&cfg.task_dir.join("rootfs")));

    // Carried as a signed archive.
    let archive = tmp.path().join("ck.shoal");
    checkpoint::pack(&dir, &archive, &binding(&cfg.task_id), KEY).expect("pack");
    let dest = tmp.path().join("b/ck");
    checkpoint::unpack_verified(&archive, &binding(&cfg.task_id), KEY, &dest).expect("unpack");

    let cfg2 = b.task(&["/bin/sh", "-c", COUNTER]);
    guard.add(&cfg2);
    let t = Instant::now();
    let h2 = b.driver.restore(&cfg2, &dest).await.expect("restore");
    eprintln!("restore took {:?}", t.elapsed());
    assert_ne!(h2.runtime_id, h.runtime_id);
    let after = wait_for_count(&b.driver, &h2, last + 5).await;
    assert_eq!(after[0], last + 1, "the restored counter continues where it stopped: {after:?}");
    assert_eq!(after, (last + 1..=*after.last().unwrap_or(&0)).collect::<Vec<_>>());

    // Its rootfs changes came along: a new file, a changed one, a deleted one.
    assert_eq!(exec_out(&b, &h2, "cat /tmp/before").await, (0, "before".into()));
    let (code, count) = exec_out(&b, &h2, "cat /tmp/count").await;
    assert_eq!(code, 0);
    assert!(count.parse::<u64>().is_ok_and(|c| c > last), "{count}");
    assert_ne!(exec_out(&b, &h2, "ls /etc/group").await.0, 0, "the deleted file stays deleted");
    // Still the same process: pid 1 of its namespace, the shell that started on node A.
    assert_eq!(
        exec_out(&b, &h2, "cat /proc/1/cmdline | tr '\\0' ' '").await.1,
        format!("/bin/sh -c {COUNTER}")
    );

    b.driver.stop(&h2, Duration::from_secs(2)).await.expect("stop");
    let s2 = tokio::time::timeout(Duration::from_secs(30), b.driver.wait(&h2))
        .await
        .expect("the restored task did not end")
        .expect("wait");
    assert!(!s2.is_checkpointed(), "{s2:?}");
    assert!(matches!(b.driver.recover(&h2).await.expect("recover"), Recovered::Exited(_)));
    b.driver.destroy(&h2).await.expect("destroy");
    b.driver.destroy(&h2).await.expect("destroy is idempotent");
    assert!(!support::runc_knows(&h2.runtime_id));
    assert!(!support::is_mounted(&cfg2.task_dir.join("rootfs")));
}

/// `leave_running` snapshots a task that keeps going; the snapshot restores as a second copy.
/// Asks for a pre-dump too: done where the kernel tracks dirty memory, skipped elsewhere.
async fn leave_running_keeps_the_original() {
    if !support::usable().await {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = support::busybox_rootfs_tar(tmp.path());
    let a = Node::new(&tmp.path().join("a"), &tar);
    let guard = Cleanup::default();
    let cfg = a.task(&["/bin/sh", "-c", COUNTER]);
    guard.add(&cfg);
    let h = a.driver.start(&cfg).await.expect("start");
    let seen = wait_for_count(&a.driver, &h, 10).await;
    let dir = tmp.path().join("ck");
    let opts = CheckpointOptions { leave_running: true, pre_dumps: 1, ..CheckpointOptions::default() };
    let report = a.driver.checkpoint(&h, &dir, &opts).await.expect("checkpoint");
    eprintln!("checkpoint (leave running, 1 pre-dump asked): {report:?}");
    let dirty = a.driver.criu_info().await.is_some_and(|i| i.mem_dirty_track);
    assert_eq!(report.pre_dumps, u32::from(dirty));
    assert_eq!(dir.join("pre-1").is_dir(), dirty);

    // The original keeps counting.
    let now = numbers(&logs(&a.driver, &h).await);
    wait_for_count(&a.driver, &h, now.last().copied().unwrap_or(0) + 10).await;
    assert_eq!(a.driver.recover(&h).await.expect("recover"), Recovered::Running);

    // The copy starts from the snapshot, next to it.
    let cfg2 = a.task(&["/bin/sh", "-c", COUNTER]);
    guard.add(&cfg2);
    let h2 = a.driver.restore(&cfg2, &dir).await.expect("restore");
    let copy = wait_for_count(&a.driver, &h2, 1).await;
    assert!(copy[0] > seen[seen.len() - 1], "{copy:?} vs {seen:?}");
    assert_eq!(exec_out(&a, &h2, "cat /tmp/before").await, (0, "before".into()));

    for (h, c) in [(&h, &cfg), (&h2, &cfg2)] {
        a.driver.stop(h, Duration::from_secs(2)).await.expect("stop");
        let s = a.driver.wait(h).await.expect("wait");
        assert!(!s.is_checkpointed(), "{s:?}");
        a.driver.destroy(h).await.expect("destroy");
        assert!(!support::is_mounted(&c.task_dir.join("rootfs")));
    }
}

/// A tampered or foreign archive is refused before anything is extracted; a corrupt checkpoint
/// dir fails the restore with CRIU's reason and leaves nothing behind; without a working criu
/// checkpoint is unsupported.
async fn bad_checkpoints_are_refused() {
    if !support::usable().await {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = support::busybox_rootfs_tar(tmp.path());
    let a = Node::new(&tmp.path().join("a"), &tar);
    let guard = Cleanup::default();
    let cfg = a.task(&["/bin/sh", "-c", COUNTER]);
    guard.add(&cfg);
    let h = a.driver.start(&cfg).await.expect("start");
    wait_for_count(&a.driver, &h, 3).await;

    let no_criu = shoal_driver_oci::OciDriver::new(shoal_driver_oci::OciDriverConfig {
        criu: "/nonexistent/criu".into(),
        ..shoal_driver_oci::OciDriverConfig::new(
            tmp.path().join("a/data"),
            std::env::current_exe().expect("exe"),
        )
    });
    let info = no_criu.fingerprint().await.expect("fingerprint");
    assert!(!info.capabilities.iter().any(|c| c == "checkpoint"), "{info:?}");
    let err = no_criu.checkpoint(&h, &tmp.path().join("x"), &CheckpointOptions::default()).await;
    assert!(matches!(err, Err(DriverError::Unsupported { .. })), "{err:?}");

    let dir = tmp.path().join("ck");
    a.driver.checkpoint(&h, &dir, &CheckpointOptions::default()).await.expect("checkpoint");
    // A second checkpoint of the stopped task, or into a used dir, is an error.
    assert!(a.driver.checkpoint(&h, &dir, &CheckpointOptions::default()).await.is_err());
    a.driver.destroy(&h).await.expect("destroy");

    let archive = tmp.path().join("ck.shoal");
    checkpoint::pack(&dir, &archive, &binding(&cfg.task_id), KEY).expect("pack");
    let mut bytes = std::fs::read(&archive).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    let tampered = tmp.path().join("tampered.shoal");
    std::fs::write(&tampered, &bytes).expect("write");
    let dest = tmp.path().join("dest");
    let err =
        checkpoint::unpack_verified(&tampered, &binding(&cfg.task_id), KEY, &dest).expect_err("tampered");
    assert!(matches!(err, CheckpointError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("failed verification"), "{err}");
    let err =
        checkpoint::unpack_verified(&archive, &binding("another-task"), KEY, &dest).expect_err("foreign");
    assert!(matches!(err, CheckpointError::Rejected(_)), "{err}");
    assert!(!dest.exists(), "nothing extracted from a refused archive");

    // Restoring from a dir that is not a checkpoint, or a corrupt one.
    let cfg2 = a.task(&["/bin/sh", "-c", COUNTER]);
    guard.add(&cfg2);
    let err = a.driver.restore(&cfg2, &tmp.path().join("nothing")).await.expect_err("no checkpoint");
    assert!(matches!(err, DriverError::Invalid(_)), "{err}");
    checkpoint::unpack_verified(&archive, &binding(&cfg.task_id), KEY, &dest).expect("unpack");
    std::fs::write(dest.join("criu/inventory.img"), b"garbage").expect("corrupt");
    let err = a.driver.restore(&cfg2, &dest).await.expect_err("corrupt checkpoint");
    eprintln!("corrupt checkpoint: {err}");
    assert!(err.to_string().contains("restore"), "{err}");
    assert!(!support::runc_knows(&format!("shoal-{}", cfg2.task_id)));
    assert!(!support::is_mounted(&cfg2.task_dir.join("rootfs")));
}

type TestFn = fn() -> Pin<Box<dyn Future<Output = ()>>>;

const TESTS: &[(&str, TestFn)] = &[
    ("counter_moves_to_another_node", || Box::pin(counter_moves_to_another_node())),
    ("leave_running_keeps_the_original", || Box::pin(leave_running_keeps_the_original())),
    ("bad_checkpoints_are_refused", || Box::pin(bad_checkpoints_are_refused())),
];

fn main() {
    support::shim_entry();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut list = false;
    let mut ignored = false;
    let mut exact = false;
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => list = true,
            "--ignored" => ignored = true,
            "--exact" => exact = true,
            // Options with a value.
            "--format" | "--test-threads" | "--color" | "--skip" | "-Z" | "--logfile" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    let selected: Vec<&(&str, TestFn)> = TESTS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters.iter().any(|f| if exact { name == f } else { name.contains(f.as_str()) })
        })
        .collect();
    if list {
        if !ignored {
            for (name, _) in &selected {
                println!("{name}: test");
            }
        }
        return;
    }
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    println!("\nrunning {} tests", if ignored { 0 } else { selected.len() });
    for (name, f) in selected.iter().filter(|_| !ignored) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        let ok = match rt {
            Ok(rt) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f()))).is_ok(),
            Err(e) => {
                eprintln!("building the runtime: {e}");
                false
            }
        };
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    let filtered = TESTS.len() - selected.len();
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
