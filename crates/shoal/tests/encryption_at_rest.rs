//! Encryption at rest on real daemons: three managers (`cluster init` + join) hold a secret, a
//! key-value pair, the CA key and the join tokens; after `kill -9` of all three, no file under
//! any manager's data directory shows any of them, in the clear or base64 (the Raft log and
//! snapshots are sealed with each manager's data key, `raft/raft.key`, mode 0600); restarted,
//! the managers read everything back.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

mod common;
use common::{eventually, files_containing, managers};

const PASSWORD: &str = "Pw-shoal-at-rest-6Tz1qR8d";
const VALUE: &str = "kv-value-shoal-at-rest-2Mx7";

fn base64(s: &str) -> String {
    let mut cmd = Command::new("base64");
    cmd.args(["-w", "0"]);
    String::from_utf8_lossy(&common::with_stdin(cmd, s.as_bytes()).stdout).trim().to_string()
}

/// 40 characters of the CA key's PEM body that hold its private scalar (the first ones are the
/// same in every P-256 key), from a backup (JSON: newlines escaped).
fn ca_key_part(backup: &str) -> String {
    let start =
        backup.find("\"ca_key_pem\":\"").expect("ca_key_pem in the backup") + "\"ca_key_pem\":\"".len();
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

    assert!(f.cli_stdin(&["secret", "create", "db-pw", "-"], PASSWORD.as_bytes()).status.success());
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
                files_containing(&data, needle.as_bytes()),
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
