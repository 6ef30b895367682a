//! `shoal task exec`, the operator's way: `shoal daemon` on every node, `cluster init`, a second
//! manager and a worker joined with tokens; commands run in tasks on the worker and on a manager,
//! through the leader and through the follower; the CLI exits with the command's exit code.
//! (`-i`/`-t` sessions: `task_exec_interactive.rs`.)

use serde_json::Value;
use std::process::Output;

mod common;
use common::{eventually, Node};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A service of one `sleep 300` process task on node `host`, with the environment `GREETING=hello`.
fn pinned_sleeper(m: &Node, name: &str, host: &str) -> String {
    let constraint = format!("node.hostname=={host}");
    m.ok(&[
        "service",
        "create",
        "--name",
        name,
        "--driver",
        "process",
        "--env",
        "GREETING=hello",
        "--constraint",
        &constraint,
        "sleep",
        "300",
    ]);
    common::one_running_task(m, name, 30)
}

/// A raw `POST` on a node's API socket: (status, body).
fn post_raw(n: &Node, path: &str, body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(n.dir.join("shoal.sock")).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn exec_runs_in_tasks_on_any_node_through_any_manager() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (m1, m2, w1) = common::two_managers_and_a_worker(tmp.path(), &[]);
    let (leader, follower) = common::leader_and_follower(&m1, &m2);

    let on_worker = pinned_sleeper(leader, "on-worker", "w1");
    let on_manager = pinned_sleeper(leader, "on-manager", "m1");

    // Through either manager, into a task on the worker (node to node) and on a manager (m1's own
    // agent in-process from m1, over mTLS from m2): the output as it came, the command's exit code.
    let script = "echo hi; echo err >&2; exit 7";
    for via in [leader, follower] {
        for task in [&on_worker, &on_manager] {
            let out = via.cli(&["task", "exec", task, "--", "sh", "-c", script]);
            assert_eq!(out.status.code(), Some(7), "{}{}", stdout(&out), stderr(&out));
            let text = stdout(&out);
            assert!(text.contains("hi\n") && text.contains("err\n"), "{text:?}");
            assert!(stderr(&out).is_empty(), "{}", stderr(&out));
        }
    }
    // A unique prefix names the task, as for `task inspect`; success exits 0; arguments that look
    // like flags belong to the command.
    let prefix = &on_worker[..12];
    let out = follower.cli(&["task", "exec", prefix, "--", "sh", "-c", "echo -n $0 $1", "-x", "--y"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "-x --y");
    // The command runs with the task's environment (through the task's driver, on its node).
    let out = leader.ok(&["task", "exec", &on_worker, "--", "sh", "-c", "echo $GREETING from $(hostname)"]);
    assert!(out.starts_with("hello from "), "{out}");

    // A command that does not exist: a shell's exit code, the reason on stderr.
    let out = leader.cli(&["task", "exec", &on_worker, "--", "no-such-command-here"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot run \"no-such-command-here\"") && stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
    // A command past its limit is killed, and says so.
    let out = follower.cli(&["task", "exec", "--timeout", "1", &on_worker, "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("timed out"), "{}", stdout(&out));

    // docker's -t needs a terminal on stdin (here it has none): refused as docker refuses it,
    // never ignored. `-i` alone streams (task_exec_interactive.rs): an empty stdin here.
    for flags in [&["-it"][..], &["-t"], &["--tty"]] {
        let mut args = vec!["task", "exec"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[on_worker.as_str(), "sh"]);
        let out = leader.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(stderr(&out).contains("the input device is not a TTY"), "{flags:?}: {}", stderr(&out));
    }
    let out = follower.cli(&["task", "exec", "-i", &on_worker, "--", "sh", "-c", "cat; echo done"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "done\n");

    // An unknown task: 404.
    let out = follower.cli(&["task", "exec", "no-such-task", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("task no-such-task not found"), "{}", stderr(&out));
    let (status, body) = post_raw(leader, "/v1/tasks/no-such-task/exec", r#"{"cmd": ["true"]}"#);
    assert_eq!((status, &body["error"]["code"]), (404, &Value::from("not_found")), "{body}");

    // Bad requests: 400 with the reason.
    let path = format!("/v1/tasks/{on_worker}/exec");
    for (body, why) in [
        (r#"{"cmd": []}"#, "exec needs a command"),
        (r#"{"cmd": ["true"], "timeout_secs": 0}"#, "timeout_secs must be between 1 and 600"),
        (r#"{"cmd": ["true"], "timeout_secs": 601}"#, "timeout_secs must be between 1 and 600"),
        (r#"{"cmd": ["true"], "tty": true}"#, "unknown field `tty`"),
    ] {
        let (status, answer) = post_raw(follower, &path, body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains(why)), "{body}: {answer}");
    }
    let (status, answer) = post_raw(leader, &path, r#"{"cmd": ["sh", "-c", "echo ok"], "timeout_secs": 5}"#);
    assert_eq!((status, answer), (200, serde_json::json!({"exit_code": 0, "output": "ok\n"})));

    // The worker's own socket sends the operator to a manager, as for every management command.
    let out = w1.cli(&["task", "exec", &on_worker, "--", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("this node is a worker"), "{}", stderr(&out));

    // A task that no longer runs (a job that completed): 409 with its state.
    leader.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "once",
        "--mode",
        "replicated-job",
        "--driver",
        "process",
        "--constraint",
        "node.hostname==w1",
        "true",
    ]);
    let done = eventually(30, "the job's task to complete", || {
        let v = leader.json(&["service", "ps", "once", "--format", "json"]);
        let t = v.as_array()?.first()?.clone();
        (t["status"]["state"] == "complete").then(|| t["id"].as_str().map(str::to_string)).flatten()
    });
    for via in [leader, follower] {
        let out = via.cli(&["task", "exec", &done, "--", "true"]);
        assert_eq!(out.status.code(), Some(1));
        let want = format!("task {done} is not running (state complete)");
        assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    }
    let (status, body) = post_raw(leader, &format!("/v1/tasks/{done}/exec"), r#"{"cmd": ["true"]}"#);
    assert_eq!((status, &body["error"]["code"]), (409, &Value::from("conflict")), "{body}");

    common::remove_services_and_wait(leader, &["on-worker", "on-manager", "once"], &[&m1, &m2, &w1]);
}
