//! What the API cannot honour is refused when the service is created or updated, with the field
//! and the reason, instead of being accepted and then ignored: flags the process driver cannot
//! do (`--hostname`, `--mount`, `-p P:T` with P != T), and JSON fields nobody knows (`"limts"`,
//! `"availabilty"`). Nothing is created or changed by a refused request.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Output;

mod common;
use common::{eventually, remove_services_and_wait, Node};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ready(n: &Node) -> Option<()> {
    let out = n.cli(&["node", "ls", "--format", "json"]);
    let nodes: Value = serde_json::from_slice(&out.stdout).ok()?;
    (nodes.as_array()?.first()?["status"]["state"] == "ready").then_some(())
}

fn dev_node(root: &std::path::Path) -> Node {
    let mut n = Node::new(root, "refuse");
    n.start("dev");
    eventually(30, "the node to be ready", || ready(&n));
    n
}

/// POSTs `body` to the daemon's API socket as a raw HTTP/1.1 request: (status, whole response).
fn post(n: &Node, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(n.dir.join("shoal.sock")).expect("connect to the API socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

fn service_names(n: &Node) -> Vec<String> {
    let v = n.json(&["service", "ls", "--format", "json"]);
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s["spec"]["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn flags_the_process_driver_cannot_honour_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path());

    let cases: &[(&[&str], &str)] = &[
        (
            &["--hostname", "x"],
            "task_template.hostname: the process driver cannot set a hostname (use the oci or docker driver)",
        ),
        (
            &["--mount", "type=bind,source=/tmp,target=/x"],
            "task_template.mounts: the process driver cannot mount anything (use the oci or docker driver)",
        ),
        (
            &["-p", "8080:80"],
            "endpoint.ports[0].published: the process driver cannot publish port 8080 as target port 80",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["service", "create", "--name", "refused", "--driver", "process"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["sleep", "300"]);
        let out = n.cli(&args);
        assert!(!out.status.success(), "{flags:?} was accepted: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr(&out).contains(want), "{flags:?}: {}", stderr(&out));
        assert_eq!(service_names(&n), Vec::<String>::new(), "{flags:?} created a service");
    }

    // What the process driver can do is accepted: a port published as itself (the task listens
    // on it; the scheduler reserves it on the node).
    n.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--driver",
        "process",
        "-p",
        "8080:8080",
        "sleep",
        "300",
    ]);
    assert_eq!(service_names(&n), ["web"]);
    // An update is held to the same rules, and a refused one changes nothing.
    let before = n.json(&["service", "inspect", "web", "--format", "json"]);
    let out = n.cli(&["service", "update", "-d", "--hostname", "x", "web"]);
    assert!(!out.status.success(), "update --hostname was accepted");
    assert!(
        stderr(&out).contains("task_template.hostname: the process driver cannot set a hostname"),
        "{}",
        stderr(&out)
    );
    let out = n.cli(&["service", "update", "-d", "--publish-add", "9090:90", "web"]);
    assert!(!out.status.success(), "update --publish-add 9090:90 was accepted");
    assert!(stderr(&out).contains("cannot publish port 9090 as target port 90"), "{}", stderr(&out));
    let after = n.json(&["service", "inspect", "web", "--format", "json"]);
    assert_eq!(after["version"], before["version"], "a refused update changed the service");
    remove_services_and_wait(&n, &["web"], &[&n]);
}

#[test]
fn unknown_fields_in_a_service_spec_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path());

    let body = r#"{"name":"typo","task_template":{"command":["sleep","300"],
        "resources":{"limts":{"memory_bytes":67108864}}}}"#;
    let (status, resp) = post(&n, "/v1/services", body);
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("unknown field `limts`"), "{resp}");
    assert_eq!(service_names(&n), Vec::<String>::new());

    let body = r#"{"name":"typo","task_template":{"command":["sleep","300"],"hostnme":"x"}}"#;
    let (status, resp) = post(&n, "/v1/services", body);
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("unknown field `hostnme`"), "{resp}");
    assert_eq!(service_names(&n), Vec::<String>::new());

    // The same spec spelled right is created, with the limit it asked for.
    let body = r#"{"name":"typo","task_template":{"command":["sleep","300"],
        "resources":{"limits":{"memory_bytes":67108864}}}}"#;
    let (status, resp) = post(&n, "/v1/services", body);
    assert_eq!(status, 201, "{resp}");
    let svc = n.json(&["service", "inspect", "typo", "--format", "json"]);
    assert_eq!(svc["spec"]["task_template"]["resources"]["limits"]["memory_bytes"], 67108864);
    assert_eq!(svc["spec"]["task_template"]["stop_grace_period"], "10s", "docker's default grace period");

    // An update with a misspelled field is refused too, and changes nothing.
    let id = svc["id"].as_str().unwrap_or_default().to_string();
    let body = r#"{"spec":{"name":"typo","task_template":{"command":["sleep","300"],
        "restart_policy":{"max_attempt":3}}}}"#;
    let (status, resp) = post(&n, &format!("/v1/services/{id}/update"), body);
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("unknown field `max_attempt`"), "{resp}");
    let after = n.json(&["service", "inspect", "typo", "--format", "json"]);
    assert_eq!(after["version"], svc["version"]);
    remove_services_and_wait(&n, &["typo"], &[&n]);
}

#[test]
fn node_update_rejects_unknown_fields() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let n = dev_node(tmp.path());
    let nodes = n.json(&["node", "ls", "--format", "json"]);
    let id = nodes[0]["id"].as_str().unwrap_or_default().to_string();

    let (status, resp) = post(&n, &format!("/v1/nodes/{id}/update"), r#"{"availabilty":"drain"}"#);
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("unknown field `availabilty`"), "{resp}");
    let node = n.json(&["node", "inspect", &id, "--format", "json"]);
    assert_eq!(node["spec"]["availability"], "active", "a refused update changed the node");
}
