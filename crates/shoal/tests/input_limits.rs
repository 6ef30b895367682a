//! Limits on input, found by trying, against a real `shoal daemon` after `cluster init`: every
//! error is JSON in the API's shape (`{"error": {"code", "message"}}`) — a body over the limit
//! (413), a method an endpoint does not take (405), a body that is not JSON (415), a bad query
//! (400) — and specs over the size limits are refused naming the field, with nothing created.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

mod common;
use common::Node;

/// `curl` on the node's API socket: (status, JSON body).
fn call(n: &Node, method: &str, path: &str, body: Option<(&str, &Path)>) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(n.dir.join("shoal.sock"))
        .args(["-X", method]);
    if let Some((content_type, file)) = body {
        c.args(["-H", &format!("content-type: {content_type}")])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
    }
    let out = c.arg(format!("http://shoal{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body:?}"));
    (code.parse().expect("status"), json)
}

fn refused(n: &Node, args: &[&str], want: &str) {
    let out = n.cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(want), "shoal {args:?}: {err}");
}

#[test]
fn oversized_and_malformed_input_gets_json_errors_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut n = Node::new(tmp.path(), "m");
    n.start("daemon");
    assert!(n.ok(&["cluster", "init"]).contains("initialized"));

    let big = tmp.path().join("big.json");
    let name = "x".repeat(3 * 1024 * 1024);
    std::fs::write(&big, format!("{{\"name\":\"{name}\"}}")).expect("write");
    let (code, e) = call(&n, "POST", "/v1/services", Some(("application/json", &big)));
    assert_eq!((code, e["error"]["code"].as_str()), (413, Some("too_large")), "{e}");
    let (code, e) = call(&n, "POST", "/v1/networks", Some(("application/json", &big)));
    assert_eq!((code, e["error"]["code"].as_str()), (413, Some("too_large")), "{e}");

    let small = tmp.path().join("small.json");
    std::fs::write(&small, r#"{"name":"n1"}"#).expect("write");
    let (code, e) = call(&n, "POST", "/v1/networks", Some(("text/plain", &small)));
    assert_eq!((code, e["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{e}");
    let (code, e) = call(&n, "DELETE", "/v1/services", None);
    assert_eq!((code, e["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{e}");
    let (code, e) = call(&n, "GET", "/v1/tasks?stale=perhaps", None);
    assert_eq!((code, e["error"]["code"].as_str()), (400, Some("invalid")), "{e}");
    let (code, e) = call(&n, "GET", "/v1/no-such-thing", None);
    assert_eq!((code, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");

    // Specs over the limits, refused naming the field.
    let mut args: Vec<String> =
        ["service", "create", "-d", "--name", "many", "--driver", "process"].map(String::from).to_vec();
    for i in 0..65 {
        args.push("--label".into());
        args.push(format!("k{i}=v"));
    }
    args.extend(["sleep".into(), "1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&n, &args, "labels: 65 labels is above the limit of 64");
    let long = format!("k={}", "v".repeat(5000));
    refused(
        &n,
        &["service", "create", "-d", "--name", "long", "--driver", "process", "--label", &long, "sleep", "1"],
        "the value is longer than 4096 bytes",
    );
    let env_file = tmp.path().join("env");
    std::fs::write(&env_file, (0..1100).map(|i| format!("V{i}=x\n")).collect::<String>()).expect("env");
    refused(
        &n,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "env",
            "--driver",
            "process",
            "--env-file",
            env_file.to_str().expect("path"),
            "sleep",
            "1",
        ],
        "1100 variables is above the limit of 1024",
    );
    common::eventually(30, "the node registered", || common::ready_nodes(&n).filter(|v| !v.is_empty()));
    let key = format!("{}=1", "k".repeat(200));
    refused(&n, &["node", "update", "--label-add", &key, "m"], "1 to 128 characters");
    let (_, services) = call(&n, "GET", "/v1/services", None);
    assert_eq!(services, serde_json::json!([]), "nothing was created");
}
