//! Encryption at rest on real daemons: three managers (`cluster init` + join) hold a secret, a
//! key-value pair, the CA key and the join tokens; after `kill -9` of all three, no file under
//! any manager's data directory shows any of them, in the clear or base64 (the Raft log and
//! snapshots are sealed with each manager's data key, `raft/raft.key`, mode 0600); restarted,
//! the managers read everything back.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{eventually, managers, BIN};

const PASSWORD: &str = "Pw-shoal-at-rest-6Tz1qR8d";
const VALUE: &str = "kv-value-shoal-at-rest-2Mx7";

fn base64(s: &str) -> String {
    let mut child = Command::new("base64")
        .args(["-w", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write");
    String::from_utf8_lossy(&child.wait_with_output().expect("base64").stdout).trim().to_string()
}

/// Every regular file under `dir` containing `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                let data = std::fs::read(e.path()).unwrap_or_default();
                if data.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(e.path().display().to_string());
                }
            }
        }
    }
    found
}

/// 40 characters of the CA key's PEM body that hold its private scalar (the first ones are the
/// same in every P-256 key), from a backup (JSON: newlines escaped).
fn ca_key_part(backup: &str) -> String {
    let start = backup.find("\"ca_key_pem\":\"").expect("ca_key_pem in the backup") + "\"ca_key_pem\":\"".len();
    let pem = &backup[start..];
    let end = pem.find("-----END").expect("end of the PEM");
    let body: String = pem[..end].split("\\n").skip(1).collect();
    assert!(body.len() >= 80, "{body}");
    body[36..76].to_string()
}

#[test]
fn a_stolen_manager_data_directory_reveals_no_secret_key_or_token() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut nodes = managers(tmp.path(), &["m1", "m2", "m3"]);
    let (_, leader) = eventually(30, "a leader", || common::leader_of(&nodes[0]));
    let follower = nodes.iter().position(|n| n.node_id() != leader).expect("a follower");
    let f = &nodes[follower];

    let mut child = Command::new(BIN)
        .arg("-H")
        .arg(format!("unix://{}", f.dir.join("shoal.sock").display()))
        .args(["secret", "create", "db-pw", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(PASSWORD.as_bytes()).expect("write");
    assert!(child.wait_with_output().expect("wait").status.success());
    assert_eq!(f.ok(&["kv", "put", "app/password", VALUE]), "OK");
    let worker_token = f.ok(&["cluster", "join-token", "worker", "-q"]);
    let manager_token = f.ok(&["cluster", "join-token", "manager", "-q"]);
    let backup = tmp.path().join("cluster.backup");
    f.ok(&["cluster", "backup", "-o", backup.to_str().expect("path")]);
    let ca_part = ca_key_part(&std::fs::read_to_string(&backup).expect("backup"));
    // Every manager has applied it all before they die.
    for n in &nodes {
        eventually(30, "the secret on every manager", || {
            n.ok(&["secret", "ls", "--stale", "--format", "{{.Name}}"]).contains("db-pw").then_some(())
        });
    }
    for n in nodes.iter_mut() {
        n.kill9();
    }

    let needles = [
        ("the secret", PASSWORD.to_string()),
        ("the secret in base64", base64(PASSWORD)),
        ("the KV value", VALUE.to_string()),
        ("the KV value in base64", base64(VALUE)),
        ("the worker token", worker_token),
        ("the manager token", manager_token),
        ("the CA key", ca_part),
    ];
    for n in &nodes {
        let data = n.dir.join("data");
        for (what, needle) in &needles {
            assert_eq!(
                files_containing(&data, needle),
                Vec::<String>::new(),
                "{what} on {}'s disk",
                n.dir.display()
            );
        }
        let key = std::fs::metadata(data.join("raft/raft.key")).expect("raft.key");
        assert_eq!(key.mode() & 0o777, 0o600);
    }

    // Restarted, the managers read it all back.
    for n in nodes.iter_mut() {
        n.start("daemon");
    }
    let n = &nodes[0];
    eventually(60, "the secret listed again", || {
        n.cli(&["secret", "ls", "--format", "{{.Name}}"]).status.success().then_some(())
    });
    assert_eq!(n.ok(&["secret", "ls", "--format", "{{.Name}}"]), "db-pw");
    assert_eq!(n.ok(&["kv", "get", "app/password", "--print-value-only"]), VALUE);
}
