//! Autolock on real daemons: three managers (`cluster init` + join); `cluster update
//! --autolock=true` through a follower wraps every manager's data key by an unlock key that no
//! disk holds; a manager killed and restarted waits locked (every command says so) until
//! `shoal cluster unlock` gets the right key, then catches up on what was written meanwhile;
//! a rotated key opens a restarted leader and the old one no longer does; `--autolock=false`
//! lets managers start unattended again.

use std::path::Path;
use std::process::Output;

mod common;
use common::{eventually, eventually_or, managers, Node};

fn cli_stdin(n: &Node, args: &[&str], input: &str) -> Output {
    n.cli_stdin(args, input.as_bytes())
}

fn key_file(n: &Node) -> String {
    std::fs::read_to_string(n.dir.join("data/raft/raft.key")).unwrap_or_default()
}

fn wrapped(n: &Node) -> bool {
    let f = key_file(n);
    f.contains("\"wrapped\"") && !f.contains("\"key\"")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn the_key(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("SHLKEY-1-"))
        .expect("an unlock key in the output")
        .to_string()
}

/// Restarts `n` (killed), unlocks it with `key` and waits until its replica lists `secret`.
fn restart_and_unlock(n: &mut Node, key: &str, secret: &str) {
    n.start("daemon");
    let out = n.cli(&["node", "ls"]);
    assert!(!out.status.success() && stderr(&out).contains("locked"), "a locked manager says so: {out:?}");
    let out = cli_stdin(n, &["cluster", "unlock"], &format!("{key}\n"));
    assert!(out.status.success(), "unlock: {}", stderr(&out));
    eventually(60, "the unlocked manager's replica up to date", || {
        let out = n.cli(&["secret", "ls", "--stale", "--format", "{{.Name}}"]);
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l == secret).then_some(())
    });
}

fn create_secret(n: &Node, name: &str) {
    let out = cli_stdin(n, &["secret", "create", name, "-"], "data");
    assert!(out.status.success(), "{}", stderr(&out));
}

fn leader_index(nodes: &[Node]) -> usize {
    let (_, leader) = eventually(30, "a leader", || common::leader_of(&nodes[0]));
    nodes.iter().position(|n| n.node_id() == leader).expect("the leader is one of them")
}

#[test]
fn autolocked_managers_wait_for_their_unlock_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut nodes = managers(tmp.path(), &["m1", "m2", "m3"]);
    assert!(!nodes.iter().any(wrapped), "no autolock: plain key files");
    let l = leader_index(&nodes);
    let f = (l + 1) % 3;

    let out = nodes[f].ok(&["cluster", "update", "--autolock=true"]);
    let key = the_key(&out);
    for n in &nodes {
        eventually_or(30, || wrapped(n).then_some(()), || format!("{}: {}", n.dir.display(), key_file(n)));
        assert!(!key_file(n).contains(&key), "the unlock key is never on disk");
    }
    assert_eq!(nodes[l].ok(&["cluster", "unlock-key", "-q"]), key);
    let info = nodes[l].json(&["cluster", "inspect", "--format", "json"]);
    assert_eq!(info["autolock"], true, "{info}");
    assert!(!info.to_string().contains(&key));
    let again = nodes[f].ok(&["cluster", "update", "--autolock=true"]);
    assert!(again.contains("already on") && !again.contains("SHLKEY"), "{again}");
    let out = nodes[l].cli(&["cluster", "unlock"]);
    assert!(stderr(&out).contains("not locked") || stderr(&out).contains("no unlock key"), "{out:?}");

    // A follower killed, something written meanwhile, the follower back: locked until unlocked.
    let victim = (l + 2) % 3;
    nodes[victim].kill9();
    create_secret(&nodes[l], "while-down");
    nodes[victim].start("daemon");
    let out = nodes[victim].cli(&["cluster", "inspect"]);
    assert!(!out.status.success() && stderr(&out).contains("locked"), "{out:?}");
    let out = cli_stdin(&nodes[victim], &["cluster", "unlock"], "SHLKEY-1-not-a-key\n");
    assert!(!out.status.success() && stderr(&out).contains("not an unlock key"), "{out:?}");
    let other = {
        // A well-formed key that is not this cluster's: one character of its body changed.
        let mut chars: Vec<char> = key.chars().collect();
        chars[9] = if chars[9] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let out = cli_stdin(&nodes[victim], &["cluster", "unlock"], &format!("{other}\n"));
    assert!(!out.status.success() && stderr(&out).contains("does not open"), "{out:?}");
    nodes[victim].kill9();
    restart_and_unlock(&mut nodes[victim], &key, "while-down");

    // Rotation: every manager rewraps; a restarted leader opens with the new key only.
    let before: Vec<String> = nodes.iter().map(key_file).collect();
    let rotated = the_key(&nodes[f].ok(&["cluster", "unlock-key", "--rotate"]));
    assert_ne!(rotated, key);
    for (n, old) in nodes.iter().zip(&before) {
        eventually_or(30, || (key_file(n) != *old && wrapped(n)).then_some(()), || "rewrapped".into());
    }
    let l = leader_index(&nodes);
    nodes[l].kill9();
    let survivor = (l + 1) % 3;
    eventually(30, "a new leader", || {
        let (_, id) = common::leader_of(&nodes[survivor])?;
        (id != nodes[l].node_id()).then_some(())
    });
    create_secret(&nodes[survivor], "after-rotation");
    nodes[l].start("daemon");
    let out = cli_stdin(&nodes[l], &["cluster", "unlock"], &format!("{key}\n"));
    assert!(!out.status.success() && stderr(&out).contains("does not open"), "the old key: {out:?}");
    nodes[l].kill9();
    restart_and_unlock(&mut nodes[l], &rotated, "after-rotation");

    // Off: plain key files, and a restart needs nobody.
    let out = nodes[survivor].ok(&["cluster", "update", "--autolock=false"]);
    assert!(out.contains("Autolock is off"), "{out}");
    for n in &nodes {
        eventually_or(30, || key_file(n).contains("\"key\"").then_some(()), || key_file(n));
    }
    let out = nodes[survivor].cli(&["cluster", "unlock-key"]);
    assert!(!out.status.success() && stderr(&out).contains("autolock is off"), "{out:?}");
    nodes[f].kill9();
    nodes[f].start("daemon");
    eventually(60, "a restarted manager serving without an unlock", || {
        nodes[f].cli(&["secret", "ls", "--stale"]).status.success().then_some(())
    });
    assert!(Path::new(&nodes[f].dir.join("data/raft/raft.key")).exists());
}
