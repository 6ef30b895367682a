//! The `/v1` API over TCP with mutual TLS (`--api-addr`), with real processes: an operator's
//! client certificate from `cluster client-cert` works with `-H tcp://`; no certificate, a
//! worker's certificate, or a client certificate on the node-to-node endpoints is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

mod common;
use common::https::{https, pem, status_of, tcp_cli, tcp_ok, with_cert, without_cert};
use common::{eventually, free_port, Node};

#[test]
fn tcp_api_with_client_certificates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let mut m = Node::new(tmp.path(), "mgr");
    m.start_with("dev", &["--api-addr", &api]);

    // Without a certificate in the TLS directory: a clear error.
    let empty = tmp.path().join("empty");
    let out = tcp_cli(api_port, &empty, &["node", "ls"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no client certificate in") && err.contains("shoal cluster client-cert"), "{err}");

    // An operator's certificate, over the root socket.
    let certs = tmp.path().join("certs");
    let out = m.ok(&["cluster", "client-cert", "--out", certs.to_str().expect("utf8"), "--name", "alice"]);
    assert!(out.contains("written to"), "{out}");
    assert!(
        out.contains(&format!("shoal -H tcp://{api} --tls-dir")),
        "the manager's real API address: {out}"
    );
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&certs.join("key.pem")), 0o600, "the key is private");
    assert_eq!(mode(&certs), 0o700);
    assert_eq!(
        shoal_pki::identity_from_pem(&pem(&certs.join("cert.pem"))).expect("identity"),
        shoal_pki::NodeIdentity { node_id: "alice".into(), role: shoal_pki::Role::Client }
    );
    // No overwrite without --force.
    let again = m.cli(&["cluster", "client-cert", "--out", certs.to_str().expect("utf8")]);
    assert!(!again.status.success());

    // The CLI over TCP.
    // The node registers itself moments after the cluster is created: wait for it too.
    let nodes = eventually(20, "the TCP API to list the node", || {
        let out = tcp_cli(api_port, &certs, &["node", "ls", "--format", "json"]);
        let v = out
            .status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"))?;
        v.as_array().is_some_and(|a| !a.is_empty()).then_some(v)
    });
    let nodes = nodes.as_array().expect("array");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let manager_id = nodes[0]["id"].as_str().expect("id").to_string();
    tcp_ok(
        api_port,
        &certs,
        &["service", "create", "--name", "web", "--replicas", "0", "--driver", "process", "sleep", "300"],
    );
    let services: serde_json::Value =
        serde_json::from_str(&tcp_ok(api_port, &certs, &["service", "ls", "--format", "json"]))
            .expect("json");
    assert!(services.as_array().is_some_and(|s| s.iter().any(|s| s["spec"]["name"] == "web")), "{services}");
    tcp_ok(api_port, &certs, &["service", "rm", "web"]);

    let ca = pem(&certs.join("ca.pem"));
    let alice = with_cert(&certs, "ca.pem", "cert.pem", "key.pem");
    let resp = https(&api, alice.clone(), "GET", "/v1/cluster", "").expect("answer");
    assert_eq!(status_of(&resp), Some(200), "{resp}");

    // No client certificate: the handshake is refused, nothing is served.
    let refused = https(&api, without_cert(&ca), "GET", "/v1/nodes", "");
    assert!(
        refused.as_ref().map_or(true, |r| status_of(r).is_none()),
        "served without a certificate: {refused:?}"
    );

    // A client certificate made by another CA: refused as well.
    let rogue_ca = shoal_pki::Ca::generate("rogue").expect("CA");
    let (key, csr) = shoal_pki::generate_key_and_csr("alice").expect("csr");
    let rogue_cert = rogue_ca
        .issue(
            &csr,
            "alice",
            shoal_pki::Role::Client,
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
        .expect("issue");
    let rogue = shoal_pki::client_config(&ca, &rogue_cert, &key).expect("config");
    let refused = https(&api, rogue, "GET", "/v1/nodes", "");
    assert!(
        refused.as_ref().map_or(true, |r| status_of(r).is_none()),
        "served a foreign certificate: {refused:?}"
    );

    // The manager's own certificate may use the API.
    let mgr_tls = m.dir.join("data/tls");
    let resp = https(&api, with_cert(&mgr_tls, "ca.crt", "node.crt", "node.key"), "GET", "/v1/cluster", "")
        .expect("answer");
    assert_eq!(status_of(&resp), Some(200), "{resp}");

    // A client certificate named like the manager node: still not a node on the node-to-node
    // endpoints (dispatcher, heartbeats, Raft).
    let impostor = tmp.path().join("impostor");
    tcp_ok(
        api_port,
        &certs,
        &["cluster", "client-cert", "--out", impostor.to_str().expect("utf8"), "--name", &manager_id],
    );
    for tls in [alice.clone(), with_cert(&impostor, "ca.pem", "cert.pem", "key.pem")] {
        let heartbeat = format!("{{\"node_id\":\"{manager_id}\"}}");
        for (method, path, body) in [
            ("POST", "/internal/dispatcher/heartbeat", "{}"),
            ("GET", "/internal/dispatcher/assignments", ""),
            ("POST", "/internal/dispatcher/register", "{\"description\":{},\"addr\":\"127.0.0.1:1\"}"),
            ("POST", "/internal/dispatcher/renew", "{\"csr_pem\":\"x\"}"),
            ("POST", "/internal/heartbeat", heartbeat.as_str()),
            (
                "POST",
                "/internal/leader",
                "{\"op\":\"write\",\"command\":{\"remove_service\":{\"id\":\"nope\"}}}",
            ),
            (
                "POST",
                "/internal/managers",
                "{\"raft_id\":\"1\",\"node\":{\"addr\":\"x:1\",\"node_id\":\"x\"}}",
            ),
            ("GET", "/internal/read-index", ""),
            ("POST", "/internal/raft/vote", "{}"),
        ] {
            let resp = https(&m.addr(), tls.clone(), method, path, body).expect("answer");
            assert_eq!(status_of(&resp), Some(403), "{method} {path} with a client certificate: {resp}");
        }
    }

    // A worker's certificate is refused on the TCP API.
    let mut w = Node::new(tmp.path(), "wrk");
    w.start("daemon");
    common::join_worker(&m, &w);
    let wrk_tls = w.dir.join("data/tls");
    eventually(20, "the worker's certificate", || wrk_tls.join("node.crt").exists().then_some(()));
    let worker = with_cert(&wrk_tls, "ca.crt", "node.crt", "node.key");
    let resp = https(&api, worker.clone(), "GET", "/v1/nodes", "");
    assert!(
        resp.as_ref().map_or(true, |r| status_of(r) == Some(403) || status_of(r).is_none()),
        "a worker certificate used the API: {resp:?}"
    );
    assert_eq!(resp.as_ref().ok().and_then(|r| status_of(r)), Some(403), "{resp:?}");
    // ...while the same certificate still works where it belongs (the dispatcher).
    let resp = https(&m.addr(), worker, "POST", "/internal/dispatcher/heartbeat", "{}").expect("answer");
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    // Two nodes: the default period.
    assert!(resp.contains("{\"period_ms\":1000}"), "{resp}");
}
