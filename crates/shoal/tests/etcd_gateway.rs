//! etcd's JSON gateway (`curl -X POST :2379/v3/kv/…`) on real `shoal daemon`s: two managers
//! (`cluster init` + a join) and a worker, each serving the etcd API on its own `--etcd-addr`.
//! A write through one manager's gateway is read through the other's (a follower), a watch
//! through a gateway sees what etcdctl writes, `/health` and `/version` answer, and a worker's
//! gateway forwards to the managers as its gRPC API does. The answers' exact form is compared
//! with a real etcd in `shoal-etcd`'s `tests/gateway.rs`.
//!
//! Needs `curl` and `etcdctl` (scripts/install-deps.sh).

use serde_json::Value;
use std::process::{Command, Stdio};

mod common;
use common::{etcdctl_ok, eventually, next_lines, spawn_lines, Node};

/// `curl -X POST <node's etcd API><path> -d <body>`: the HTTP status and the body.
fn curl(n: &Node, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}{path}", n.etcd_port);
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.arg(&url).output().expect("curl is installed (scripts/install-deps.sh)");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.parse().unwrap_or(0), body.to_string())
}

/// A POST that must answer 200 with JSON.
fn post(n: &Node, path: &str, body: &str) -> Value {
    let (status, out) = curl(n, "POST", path, Some(body));
    assert_eq!(status, 200, "POST {path} {body} on {}: {out}", n.dir.display());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
}

/// The one value a range answered (`key`, `value` base64 as etcd's gateway writes them).
fn value_of(n: &Node, key_b64: &str) -> Option<String> {
    let r = post(n, "/v3/kv/range", &format!(r#"{{"key":"{key_b64}"}}"#));
    r["kvs"].as_array()?.first()?["value"].as_str().map(str::to_string)
}

/// A streaming `POST /v3/watch` through `n`'s gateway: its `{"result":…}` lines as they come.
fn watch(n: &Node, body: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut c = Command::new("curl");
    c.args(["-s", "-N", "-X", "POST", "--data-binary", body])
        .arg(format!("http://127.0.0.1:{}/v3/watch", n.etcd_port))
        .stdin(Stdio::null());
    spawn_lines(c)
}

fn result(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    v["result"].clone()
}

/// The gateway's health check answers true once the node has a leader and reads go through.
fn healthy(n: &Node) {
    eventually(30, "the gateway's /health", || {
        let (status, body) = curl(n, "GET", "/health", None);
        (status == 200 && body == r#"{"health":"true"}"#).then_some(())
    });
}

#[test]
fn curl_through_the_gateways_of_two_managers_and_a_worker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nodes = common::managers(tmp.path(), &["g1", "g2"]);
    let (leader, follower) = common::leader_and_follower(&nodes[0], &nodes[1]);
    for n in &nodes {
        healthy(n);
        assert_eq!(
            curl(n, "GET", "/version", None),
            (200, r#"{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}"#.to_string())
        );
    }

    // Written through the leader's gateway, read through the follower's (linearizable: no
    // waiting), and the other way round.
    let put = post(leader, "/v3/kv/put", r#"{"key":"Z3cvYQ==","value":"cG9zdGdyZXM="}"#);
    let rev: i64 = put["header"]["revision"].as_str().and_then(|r| r.parse().ok()).expect("a revision");
    let r = post(follower, "/v3/kv/range", r#"{"key":"Z3cvYQ=="}"#);
    assert_eq!(r["kvs"][0]["value"], "cG9zdGdyZXM=", "{r}");
    assert_eq!(r["kvs"][0]["mod_revision"], rev.to_string(), "{r}");
    assert_eq!(r["count"], "1", "{r}");
    post(follower, "/v3/kv/put", r#"{"key":"Z3cvYg==","value":"cmVkaXM="}"#);
    assert_eq!(value_of(leader, "Z3cvYg==").as_deref(), Some("cmVkaXM="));
    assert_eq!(etcdctl_ok(leader, &["get", "gw/b", "--print-value-only"]), "redis\n", "gRPC sees it too");
    // A txn through the follower: compare-and-swap.
    let txn = post(
        follower,
        "/v3/kv/txn",
        r#"{"compare":[{"target":"VALUE","key":"Z3cvYQ==","value":"cG9zdGdyZXM=","result":"EQUAL"}],"success":[{"request_put":{"key":"Z3cvYQ==","value":"bWFuYWdlcg=="}}]}"#,
    );
    assert_eq!(txn["succeeded"], true, "{txn}");
    assert_eq!(value_of(leader, "Z3cvYQ==").as_deref(), Some("bWFuYWdlcg=="));
    // etcd's errors, with grpc-gateway's form and status.
    let (status, body) = curl(leader, "POST", "/v3/lease/revoke", Some(r#"{"ID":1234}"#));
    assert_eq!(
        (status, body.as_str()),
        (
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
        )
    );
    let members = post(follower, "/v3/cluster/member/list", "{}");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "{members}");

    // A watch through the follower's gateway sees a put made by etcdctl on the leader.
    let (mut w, rx) = watch(follower, r#"{"create_request":{"key":"Z3cv","range_end":"Z3cw"}}"#);
    assert_eq!(result(&next_lines(&rx, 1, 20)[0])["created"], true);
    assert_eq!(etcdctl_ok(leader, &["put", "gw/m", "manager"]), "OK\n");
    let event = result(&next_lines(&rx, 1, 20)[0]);
    assert_eq!(event["events"][0]["kv"]["key"], "Z3cvbQ==", "{event}");
    assert_eq!(event["events"][0]["kv"]["value"], "bWFuYWdlcg==", "{event}");

    // A worker's gateway forwards to the managers, as its gRPC API does.
    let mut worker = Node::with_etcd(tmp.path(), "gw");
    worker.start("daemon");
    common::join_worker(&nodes[0], &worker);
    eventually(30, "the worker's etcd API to forward", || {
        common::daemon_log(&worker).contains("forwarding to the managers").then_some(())
    });
    healthy(&worker);
    assert_eq!(curl(&worker, "GET", "/version", None).0, 200);
    post(&worker, "/v3/kv/put", r#"{"key":"Z3cvdw==","value":"d29ya2Vy"}"#);
    assert_eq!(value_of(follower, "Z3cvdw==").as_deref(), Some("d29ya2Vy"), "written through the worker");
    assert_eq!(value_of(&worker, "Z3cvYg==").as_deref(), Some("cmVkaXM="), "read through the worker");
    // The watch through the follower sees the worker's write; one through the worker sees a
    // write through a manager's gateway.
    let event = result(&next_lines(&rx, 1, 20)[0]);
    assert_eq!(event["events"][0]["kv"]["key"], "Z3cvdw==", "{event}");
    let (mut ww, wrx) = watch(&worker, r#"{"create_request":{"key":"Z3cvYQ=="}}"#);
    assert_eq!(result(&next_lines(&wrx, 1, 20)[0])["created"], true);
    post(leader, "/v3/kv/put", r#"{"key":"Z3cvYQ==","value":"cG9zdGdyZXM="}"#);
    let event = result(&next_lines(&wrx, 1, 20)[0]);
    assert_eq!(event["events"][0]["kv"]["value"], "cG9zdGdyZXM=", "{event}");
    let members = post(&worker, "/v3/cluster/member/list", "{}");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "the managers: {members}");

    for c in [&mut w, &mut ww] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
