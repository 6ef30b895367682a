//! Client roles with real processes: a `shoal daemon` serving the `/v1` API over TCP
//! (`--api-addr`), the Chronos API and the etcd API on non-loopback addresses (so over mutual
//! TLS), and certificates from `shoal cluster client-cert --role admin|read-only`. A read-only
//! certificate lists and inspects and is refused every change and every secret, on every
//! listener; an admin's does everything; a worker's node certificate and a foreign CA's are
//! refused.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::https::{https, pem, status_of, tcp_cli, tcp_ok, with_cert};
use common::{eventually, free_port, Node};

/// The command must fail, saying that the certificate is read-only.
fn refused_read_only(port: u16, tls_dir: &Path, args: &[&str]) {
    let out = tcp_cli(port, tls_dir, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "read-only ran {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("read-only certificate"), "{args:?}: {err}");
}

fn client_dir(dir: &Path) -> Arc<rustls::ClientConfig> {
    with_cert(dir, "ca.pem", "cert.pem", "key.pem")
}

/// `etcdctl` over TLS with the certificate files of `dir` against `127.0.0.1:port` (the
/// server's certificate names `manager.shoal`, not the address: its chain is not checked here;
/// the server checks ours).
fn etcdctl(port: u16, ca: &Path, cert: &Path, key: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .args(["--dial-timeout=5s", "--command-timeout=10s", "--insecure-skip-tls-verify"])
        .arg(format!("--cacert={}", ca.display()))
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .args(args)
        .output()
        .expect("etcdctl is installed (scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn client_roles_on_every_listener() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    // Not loopback, so both are served over mutual TLS (reached here on 127.0.0.1).
    let (chronos_port, etcd_port) = (free_port(), free_port());
    let chronos = format!("127.0.0.1:{chronos_port}");
    let mut m = Node::new(tmp.path(), "mgr");
    m.start_with(
        "daemon",
        &[
            "--api-addr",
            &api,
            "--chronos-addr",
            &format!("0.0.0.0:{chronos_port}"),
            "--etcd-addr",
            &format!("0.0.0.0:{etcd_port}"),
        ],
    );
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));

    // One certificate of each role, over the root socket. `--help` says what each may do.
    let help = m.ok(&["cluster", "client-cert", "--help"]);
    assert!(
        help.contains("read-only") && help.contains("admin") && help.contains("no join tokens"),
        "{help}"
    );
    let admin = tmp.path().join("admin");
    let reader = tmp.path().join("reader");
    let out = m.ok(&["cluster", "client-cert", "--out", admin.to_str().expect("utf8"), "--name", "alice"]);
    assert!(out.contains("(admin)"), "{out}");
    let out = m.ok(&[
        "cluster",
        "client-cert",
        "--out",
        reader.to_str().expect("utf8"),
        "--name",
        "bob",
        "--role",
        "read-only",
    ]);
    assert!(out.contains("(read-only)"), "{out}");
    // The roles live in the subject OU: `client` is what every client certificate carried before
    // roles existed, so those stay admins'.
    let role_of =
        |dir: &Path| shoal_pki::identity_from_pem(&pem(&dir.join("cert.pem"))).expect("identity").role;
    assert_eq!(role_of(&admin), shoal_pki::Role::Client);
    assert_eq!(role_of(&reader), shoal_pki::Role::ClientReadOnly);
    let bad = m.cli(&["cluster", "client-cert", "--out", "/nonexistent/x", "--role", "root"]);
    assert!(!bad.status.success(), "an unknown role is refused");

    // The TCP API serves once the node has its certificate (and the node registers itself).
    let nodes = eventually(20, "the TCP API to list the node", || {
        let out = tcp_cli(api_port, &reader, &["node", "ls", "--format", "json"]);
        let v = out
            .status
            .success()
            .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json"))?;
        v.as_array().is_some_and(|a| !a.is_empty()).then_some(v)
    });
    let node_id = nodes[0]["id"].as_str().expect("id").to_string();

    // Admin: changes, join tokens, certificates, backups.
    tcp_ok(
        api_port,
        &admin,
        &["service", "create", "--name", "web", "--replicas", "0", "--driver", "process", "sleep", "300"],
    );
    let token = tcp_ok(api_port, &admin, &["cluster", "join-token", "worker", "-q"]);
    assert!(token.starts_with("SHOAL-1-"), "{token}");
    let more = tmp.path().join("more");
    tcp_ok(
        api_port,
        &admin,
        &["cluster", "client-cert", "--out", more.to_str().expect("utf8"), "--name", "carol"],
    );
    let backup = tmp.path().join("backup.shoal");
    tcp_ok(api_port, &admin, &["cluster", "backup", "-o", backup.to_str().expect("utf8")]);
    assert!(backup.exists());

    // Read-only: lists and inspects...
    let services = tcp_ok(api_port, &reader, &["service", "ls", "--format", "json"]);
    assert!(services.contains("\"web\""), "{services}");
    tcp_ok(api_port, &reader, &["service", "inspect", "web"]);
    tcp_ok(api_port, &reader, &["service", "ps", "web"]);
    tcp_ok(api_port, &reader, &["service", "logs", "web"]);
    tcp_ok(api_port, &reader, &["node", "inspect", &node_id]);
    tcp_ok(api_port, &reader, &["cluster", "inspect"]);
    // ...and nothing else, with a clear error.
    refused_read_only(
        api_port,
        &reader,
        &["service", "create", "--name", "web2", "--replicas", "0", "--driver", "process", "sleep", "300"],
    );
    refused_read_only(api_port, &reader, &["service", "scale", "web=2"]);
    refused_read_only(api_port, &reader, &["service", "rm", "web"]);
    refused_read_only(api_port, &reader, &["node", "update", "--availability", "drain", &node_id]);
    refused_read_only(api_port, &reader, &["cluster", "join-token", "worker"]);
    refused_read_only(api_port, &reader, &["cluster", "join-token", "manager", "--rotate"]);
    let escalate = tmp.path().join("escalate");
    refused_read_only(
        api_port,
        &reader,
        &["cluster", "client-cert", "--out", escalate.to_str().expect("utf8"), "--name", "mallory"],
    );
    assert!(!escalate.join("cert.pem").exists(), "nothing written for a refused certificate");
    let stolen = tmp.path().join("stolen.shoal");
    refused_read_only(api_port, &reader, &["cluster", "backup", "-o", stolen.to_str().expect("utf8")]);
    assert!(!stolen.exists(), "no backup file for a read-only certificate");
    // Raw requests: 403 with the API's error shape.
    for (method, path, body) in [
        ("POST", "/v1/tasks/x/exec", r#"{"cmd":["id"]}"#),
        ("POST", "/v1/tasks/x/checkpoint", "{}"),
        ("GET", "/v1/cluster/join-token/manager", ""),
        ("GET", "/v1/cluster/backup", ""),
        ("POST", "/v1/kv/ops", "{}"),
        ("DELETE", "/v1/services/web", ""),
    ] {
        let resp = https(&api, client_dir(&reader), method, path, body).expect("answer");
        assert_eq!(status_of(&resp), Some(403), "{method} {path}: {resp}");
        assert!(resp.contains(r#""code":"forbidden""#) && resp.contains("read-only certificate"), "{resp}");
    }
    let resp = https(&api, client_dir(&reader), "POST", "/v1/kv/range", r#"{"key":"YQ=="}"#).expect("answer");
    assert_eq!(status_of(&resp), Some(200), "a range read is a read: {resp}");
    // The service is still there, unchanged.
    let services: serde_json::Value =
        serde_json::from_str(&tcp_ok(api_port, &admin, &["service", "ls", "--format", "json"]))
            .expect("json");
    let services = services.as_array().expect("array");
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(services[0]["spec"]["mode"]["replicated"]["replicas"], 0, "{services:?}");

    // The Chronos API over TLS: the same rule.
    let resp = eventually(20, "the Chronos API over TLS", || {
        https(&chronos, client_dir(&reader), "GET", "/v1/scheduler/jobs", "").ok()
    });
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    let job = r#"{"name":"nightly","command":"true","schedule":"R/2030-01-01T00:00:00Z/P1D"}"#;
    let resp = https(&chronos, client_dir(&reader), "POST", "/v1/scheduler/iso8601", job).expect("answer");
    assert_eq!(status_of(&resp), Some(403), "{resp}");
    assert!(resp.contains("read-only certificate"), "{resp}");
    let resp = https(&chronos, client_dir(&admin), "POST", "/v1/scheduler/iso8601", job).expect("answer");
    assert!(matches!(status_of(&resp), Some(200..=299)), "{resp}");

    // The etcd API over TLS (gRPC through etcdctl, and the JSON gateway).
    let files = |dir: &Path| (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    let (ca, admin_cert, admin_key) = files(&admin);
    let (_, reader_cert, reader_key) = files(&reader);
    eventually(20, "the etcd API over TLS", || {
        etcdctl(etcd_port, &ca, &admin_cert, &admin_key, &["put", "k", "v"]).0.then_some(())
    });
    let (ok, out) = etcdctl(etcd_port, &ca, &reader_cert, &reader_key, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "v", "{out}");
    for args in [&["put", "k", "w"][..], &["del", "k"], &["lease", "grant", "30"]] {
        let (ok, out) = etcdctl(etcd_port, &ca, &reader_cert, &reader_key, args);
        assert!(!ok && out.contains("read-only certificate"), "read-only etcdctl {args:?}: {out}");
    }
    let etcd = format!("127.0.0.1:{etcd_port}");
    let resp = https(&etcd, client_dir(&reader), "POST", "/v3/kv/put", r#"{"key":"aw==","value":"dw=="}"#)
        .expect("answer");
    assert_eq!(status_of(&resp), Some(403), "{resp}");
    let resp =
        https(&etcd, client_dir(&reader), "POST", "/v3/kv/range", r#"{"key":"aw=="}"#).expect("answer");
    assert!(status_of(&resp) == Some(200) && resp.contains(r#""value":"dg==""#), "{resp}");

    // A worker's node certificate: refused everywhere an operator's is taken.
    let mut w = Node::new(tmp.path(), "wrk");
    w.start("daemon");
    common::join_worker(&m, &w);
    let wrk_tls = w.dir.join("data/tls");
    eventually(20, "the worker's certificate", || wrk_tls.join("node.crt").exists().then_some(()));
    let worker = with_cert(&wrk_tls, "ca.crt", "node.crt", "node.key");
    for (addr, path) in [(&api, "/v1/nodes"), (&chronos, "/v1/scheduler/jobs")] {
        let resp = https(addr, worker.clone(), "GET", path, "").expect("answer");
        assert_eq!(status_of(&resp), Some(403), "a worker certificate on {addr}{path}: {resp}");
    }
    let resp = https(&etcd, worker.clone(), "POST", "/v3/kv/range", r#"{"key":"aw=="}"#).expect("answer");
    assert_eq!(status_of(&resp), Some(403), "a worker certificate on etcd: {resp}");
    let (ok, out) = etcdctl(
        etcd_port,
        &ca,
        &wrk_tls.join("node.crt"),
        &wrk_tls.join("node.key"),
        &["get", "k", "--print-value-only"],
    );
    assert!(!ok && out.contains("PermissionDenied") && out.contains("a worker certificate"), "{out}");

    // A client certificate from another CA: no handshake on any of them.
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
    let rogue = shoal_pki::client_config(&pem(&admin.join("ca.pem")), &rogue_cert, &key).expect("config");
    for addr in [&api, &chronos, &etcd] {
        let refused = https(addr, rogue.clone(), "GET", "/v1/nodes", "");
        assert!(
            refused.as_ref().map_or(true, |r| status_of(r).is_none()),
            "{addr} served a foreign certificate: {refused:?}"
        );
    }
}
