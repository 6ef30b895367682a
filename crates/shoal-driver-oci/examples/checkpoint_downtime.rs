//! Checkpoint + restore downtime of an oci task holding N MB of touched memory, with and without
//! one pre-dump. Run as root, with runc and CRIU (`scripts/install-criu.sh`):
//! `CARGO_TARGET_DIR=/work/target-criu cargo run --release -p shoal-driver-oci --example checkpoint_downtime [MB...]`
//! (default sizes 10 100 500). The binary is also the tasks' shim.
//!
//! Downtime = the final dump (the task is frozen, then stopped) + the restore until CRIU is done.
//! A move between nodes adds packing, the transfer and unpacking, printed separately.

#[path = "../tests/support/mod.rs"]
mod support;

use shoal_driver::{CheckpointOptions, Driver};
use shoal_driver_oci::checkpoint::{self, Compression};
use std::time::{Duration, Instant};
use support::{logs, poll, Cleanup, Node};

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn main() {
    support::shim_entry();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    rt.expect("tokio runtime").block_on(run());
}

async fn run() {
    if !support::usable().await {
        std::process::exit(1);
    }
    let sizes: Vec<u64> = {
        let a: Vec<u64> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
        if a.is_empty() {
            vec![10, 100, 500]
        } else {
            a
        }
    };
    let tmp = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let tar = support::busybox_rootfs_tar(tmp.path());
    let (a, b) = (Node::new(&tmp.path().join("a"), &tar), Node::new(&tmp.path().join("b"), &tar));
    let guard = Cleanup::default();
    let dirty = a.driver.criu_info().await.is_some_and(|i| i.mem_dirty_track);
    println!("criu: {:?}; dirty-memory tracking (pre-dumps): {dirty}", a.driver.criu_info().await);
    println!(
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>11} {:>9} {:>9} {:>10}",
        "MB",
        "pre-dump",
        "rss MB",
        "freeze ms",
        "total ms",
        "restore ms",
        "DOWN ms",
        "archive MB",
        "pack ms",
        "gzip ms",
        "unpack ms"
    );
    for &mb in &sizes {
        for pre in [0u32, 1] {
            // dd holds one block of `mb` MB of random data while blocked writing into the pipe.
            let script = format!(
                "dd if=/dev/urandom bs={mb}M count=2 2>/dev/null | {{ head -c 1 >/dev/null; echo ready; exec sleep 1000000; }}"
            );
            let cfg = a.task(&["/bin/sh", "-c", &script]);
            guard.add(&cfg);
            let h = a.driver.start(&cfg).await.expect("start");
            poll("ready", Duration::from_secs(120), || async {
                logs(&a.driver, &h).await.iter().any(|l| l == "ready").then_some(())
            })
            .await;
            let rss = a.driver.stats(&h).await.map(|s| s.memory_bytes >> 20).unwrap_or(0);
            // Earlier rounds' dirty pages would otherwise be written back during this one.
            rustix::fs::sync();
            let dir = tmp.path().join(format!("ck-{mb}-{pre}"));
            let opts = CheckpointOptions { pre_dumps: pre, ..CheckpointOptions::default() };
            let report = a.driver.checkpoint(&h, &dir, &opts).await.expect("checkpoint");
            let s = a.driver.wait(&h).await.expect("wait");
            assert!(s.is_checkpointed(), "{s:?}");
            a.driver.destroy(&h).await.expect("destroy");

            let binding = cfg.task_id.as_bytes();
            let archive = tmp.path().join(format!("ck-{mb}-{pre}.shoal"));
            let t = Instant::now();
            let size =
                checkpoint::pack_with(&dir, &archive, binding, b"key", Compression::None).expect("pack");
            let pack = t.elapsed();
            let gz = tmp.path().join("gz.shoal");
            let t = Instant::now();
            checkpoint::pack_with(&dir, &gz, binding, b"key", Compression::Gzip).expect("pack gzip");
            let gzip = t.elapsed();
            std::fs::remove_file(&gz).expect("rm");
            let dest = tmp.path().join(format!("b-ck-{mb}-{pre}"));
            let t = Instant::now();
            checkpoint::unpack_verified(&archive, binding, b"key", &dest).expect("unpack");
            let unpack = t.elapsed();

            rustix::fs::sync();
            let cfg2 = b.task(&["/bin/sh", "-c", &script]);
            guard.add(&cfg2);
            let t = Instant::now();
            let h2 = b.driver.restore(&cfg2, &dest).await.expect("restore");
            let restore = t.elapsed();
            let rss2 = b.driver.stats(&h2).await.map(|s| s.memory_bytes >> 20).unwrap_or(0);
            assert!(rss2 + 2 >= mb, "restored task holds {rss2} MB");
            b.driver.stop(&h2, Duration::ZERO).await.expect("stop");
            b.driver.destroy(&h2).await.expect("destroy");
            println!(
                "{mb:>6} {:>9} {rss:>9} {:>9} {:>9} {:>10} {:>9} {:>11} {:>9} {:>9} {:>10}",
                format!("{}/{pre}", report.pre_dumps),
                ms(report.freeze),
                ms(report.total),
                ms(restore),
                ms(report.freeze + restore),
                size >> 20,
                ms(pack),
                ms(gzip),
                ms(unpack)
            );
            for p in [&dir, &dest] {
                let _ = std::fs::remove_dir_all(p);
            }
            let _ = std::fs::remove_file(&archive);
        }
    }
}
