//! Images across the cluster: a node fetches an oci image it lacks from a peer that reports it
//! (verified blob by blob), `service create` pins the image to its digest, and an image no node
//! has is rejected with a reason that names it. Real daemons (a manager and a worker), runc.

mod common;

use common::{eventually, eventually_or, Node};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const IMAGE: &str = "images-cluster-test:1";

fn store_images(n: &Node) -> Vec<Value> {
    let out = Command::new(common::BIN)
        .args(["image", "--data-dir"])
        .arg(n.dir.join("data"))
        .args(["ls", "--format", "json"])
        .output()
        .expect("image ls");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

fn image_rm(n: &Node, image: &str) {
    let out = Command::new(common::BIN)
        .args(["image", "--data-dir"])
        .arg(n.dir.join("data"))
        .args(["rm", image])
        .output()
        .expect("image rm");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The images node `hostname` reports in its description, as the managers see it.
fn reported(m: &Node, hostname: &str) -> Option<Value> {
    let nodes = m.json(&["node", "ls", "--format", "json"]);
    nodes.as_array()?.iter().find(|n| n["description"]["hostname"] == hostname).map(|n| {
        let images = &n["description"]["images"];
        if images.is_null() {
            Value::Object(Default::default())
        } else {
            images.clone()
        }
    })
}

/// Flips bytes in the middle of a file, keeping its size.
fn corrupt(path: &Path) {
    let mut data = std::fs::read(path).expect("read blob");
    let (mid, len) = (data.len() / 2, data.len());
    for b in &mut data[mid..(mid + 16).min(len)] {
        *b ^= 0xff;
    }
    std::fs::write(path, data).expect("write blob");
}

fn create(m: &Node, args: &[&str]) -> std::process::Output {
    let mut all = vec!["service", "create", "-d"];
    all.extend_from_slice(args);
    let out = m.cli(&all);
    assert!(out.status.success(), "service create {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A `dev` manager and a worker joined to it, each named by its hostname.
fn manager_and_worker(root: &Path, manager: &str, worker: &str) -> (Node, Node) {
    let mut m = Node::new(root, manager);
    let mut w = Node::new(root, worker);
    m.start("dev");
    w.start("daemon");
    common::join_worker(&m, &w);
    (m, w)
}

/// Creates the oci service `name` of `image` constrained to `on` (a hostname) and waits until
/// its one task runs there; returns what `service create` printed.
fn run_on(m: &Node, name: &str, image: &str, on: &Node) -> std::process::Output {
    let host = on.dir.file_name().and_then(|n| n.to_str()).expect("hostname");
    let constraint = format!("node.hostname=={host}");
    let out =
        create(m, &["--name", name, "--driver", "oci", "--constraint", &constraint, image, "sleep", "300"]);
    let node_id = on.node_id();
    eventually_or(
        60,
        || {
            let t = common::running_tasks(m, name)?;
            (t.len() == 1 && t[0]["node_id"] == node_id.as_str()).then_some(())
        },
        || format!("{name}'s task to run on {host}: {:#?}", common::service_tasks(m, name)),
    );
    out
}

#[test]
fn a_node_fetches_a_missing_image_from_a_peer_verified_and_pinned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (m, w) = manager_and_worker(tmp.path(), "img-mgr", "img-wrk");
    let tar = common::busybox_rootfs(tmp.path());
    // On the manager only.
    common::import_image(&[&m], &tar, IMAGE);
    let digest = store_images(&m)[0]["config_digest"].as_str().expect("digest").to_string();
    eventually_or(
        30,
        || (reported(&m, "img-mgr")?[IMAGE] == digest.as_str()).then_some(()),
        || format!("the manager to report its image: {:?}", reported(&m, "img-mgr")),
    );
    assert!(store_images(&w).is_empty(), "the worker starts without the image");

    // Constrained to the worker, which lacks the image: it fetches it from the manager.
    let started = Instant::now();
    let out = run_on(&m, "fetched", IMAGE, &w);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{out:?}");
    eprintln!("fetched from the peer and running in {:?}", started.elapsed());
    let fetched = store_images(&w);
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0]["name"], IMAGE);
    assert_eq!(fetched[0]["config_digest"], digest.as_str());
    let log = common::daemon_log_plain(&w);
    let line =
        log.lines().find(|l| l.contains("image fetched from a peer")).unwrap_or_else(|| panic!("{log}"));
    eprintln!("worker: {line}");

    // The spec is pinned to the digest, as Swarm does.
    let spec = m.json(&["service", "inspect", "fetched", "--format", "json"]);
    let spec = if spec.is_array() { spec[0].clone() } else { spec };
    assert_eq!(spec["spec"]["task_template"]["image"], format!("{IMAGE}@{digest}").as_str());
    // And the worker reports what it fetched.
    eventually(30, "the worker to report the image", || {
        (reported(&m, "img-wrk")?[IMAGE] == digest.as_str()).then_some(())
    });

    // The other way round: the manager's own agent (in-process plane) fetches from the worker.
    common::remove_services_and_wait(&m, &["fetched"], &[&m, &w]);
    image_rm(&m, IMAGE);
    eventually(30, "the manager to stop reporting the image", || {
        reported(&m, "img-mgr")?.get(IMAGE).is_none().then_some(())
    });
    run_on(&m, "back", IMAGE, &m);
    assert_eq!(store_images(&m)[0]["config_digest"], digest.as_str());
    eventually(30, "the manager to report the image again", || {
        (reported(&m, "img-mgr")?[IMAGE] == digest.as_str()).then_some(())
    });

    // A tampered blob on the source is refused: the fetch verifies every digest.
    common::remove_services_and_wait(&m, &["back"], &[&m, &w]);
    image_rm(&w, IMAGE);
    eventually(30, "the worker to stop reporting the image", || {
        reported(&m, "img-wrk")?.get(IMAGE).is_none().then_some(())
    });
    let layer = store_images(&m)[0]["layers"][0].as_str().expect("layer").to_string();
    let blob = m.dir.join("data/images/blobs/sha256").join(layer.trim_start_matches("sha256:"));
    corrupt(&blob);
    create(
        &m,
        &[
            "--name",
            "tampered",
            "--driver",
            "oci",
            "--constraint",
            "node.hostname==img-wrk",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let refused = eventually_or(
        60,
        || {
            common::service_tasks(&m, "tampered")
                .into_iter()
                .find(|t| t["status"]["err"].as_str().is_some_and(|e| e.contains("digest mismatch")))
        },
        || format!("a task refused for a digest mismatch: {:#?}", common::service_tasks(&m, "tampered")),
    );
    eprintln!("tampered: {}", refused["status"]["err"]);
    assert!(matches!(refused["status"]["state"].as_str(), Some("rejected" | "failed")), "{refused:#}");
    assert!(common::running_tasks(&m, "tampered").is_some_and(|t| t.is_empty()));
    assert!(store_images(&w).is_empty(), "nothing unverified entered the worker's store");
    common::remove_services_and_wait(&m, &["tampered"], &[&m, &w]);

    // An image no node has: created unpinned with a warning, the task rejected with a reason
    // that names the image, then kept pending (explained) instead of retried on that node.
    let out = create(
        &m,
        &[
            "--name",
            "ghost",
            "--driver",
            "oci",
            "--constraint",
            "node.hostname==img-wrk",
            "ghost-image:1",
            "sleep",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning") && stderr.contains("could not be accessed"), "{stderr}");
    let spec = m.json(&["service", "inspect", "ghost", "--format", "json"]);
    let spec = if spec.is_array() { spec[0].clone() } else { spec };
    assert_eq!(spec["spec"]["task_template"]["image"], "ghost-image:1");
    let rejected = eventually_or(
        60,
        || {
            common::service_tasks(&m, "ghost").into_iter().find(|t| {
                t["status"]["state"] == "rejected"
                    && t["status"]["err"].as_str().is_some_and(|e| {
                        e.contains("ghost-image:1") && e.contains("img-wrk") && e.contains("no peer has it")
                    })
            })
        },
        || format!("a rejected task naming the image: {:#?}", common::service_tasks(&m, "ghost")),
    );
    eprintln!("rejected: {}", rejected["status"]["err"]);
    let pending = eventually_or(
        60,
        || {
            common::service_tasks(&m, "ghost").into_iter().find(|t| {
                t["status"]["state"] == "pending"
                    && t["status"]["err"].as_str().is_some_and(|e| e.contains("image ghost-image:1"))
            })
        },
        || format!("a pending task explained: {:#?}", common::service_tasks(&m, "ghost")),
    );
    eprintln!("pending: {}", pending["status"]["err"]);
    m.ok(&["service", "rm", "ghost"]);
}

/// An image imported a moment before `service create` is not reported by its node yet (nodes
/// report their stores every 2 s): the node that must run the task waits for a source a little
/// longer than that instead of rejecting the task at once.
#[test]
fn an_image_imported_a_moment_ago_is_fetched_without_a_rejection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (m, w) = manager_and_worker(tmp.path(), "fresh-mgr", "fresh-wrk");
    let tar = common::busybox_rootfs(tmp.path());
    common::import_image(&[&m], &tar, "fresh:1");
    run_on(&m, "fresh", "fresh:1", &w);
    let history = common::service_tasks(&m, "fresh");
    assert_eq!(history.len(), 1, "the first task ran, none was rejected: {history:#?}");
    common::remove_services_and_wait(&m, &["fresh"], &[&m, &w]);
}
