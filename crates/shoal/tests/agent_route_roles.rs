//! Who may call a node's agent routes, with real processes: `shoal daemon` + `cluster init` on a
//! manager, a second `shoal daemon` joined as a worker, a process task on each. On both nodes'
//! node-to-node listeners the manager-only agent routes (logs, exec, streamed exec, checkpoint,
//! forgetting a checkpoint) refuse a worker's node certificate and operators' client certificates
//! (admin and read-only) with 403, while the manager's node certificate gets through the same
//! requests (a task's logs, a command's exit code, a `101`), so a 403 can only come from the role
//! check. The checkpoint archives (`/internal/agent/checkpoint/{id}/archive`, the manager's
//! `/internal/checkpoints/{id}`) are node routes: both node certificates pass, clients are refused.
//! Without a certificate a worker's listener refuses the handshake and a manager's routes refuse
//! the request. Both API sockets are mode 0600.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::https::{pem, with_cert, without_cert};
use common::{eventually_or, Node};

/// A node-to-node listener: its address and the name its certificate must carry.
struct Listener {
    what: &'static str,
    addr: String,
    server_name: String,
    /// A worker's listener wants a client certificate at the handshake; a manager's does not
    /// (`/internal/join` is for nodes that have none yet), so there the routes refuse.
    certificate_required: bool,
}

/// `r` on `l` as `who` must be refused: 403 from the route's role check, or, without a
/// certificate where one is required, no handshake.
fn assert_refused(l: &Listener, who: &str, tls: &Arc<rustls::ClientConfig>, r: &Request) {
    let what = format!("{} {} ({}) on {} with {who}", r.method, r.path, r.route, l.what);
    let answer = call(l, tls.clone(), r);
    if who == NO_CERTIFICATE && l.certificate_required {
        assert!(answer.is_err(), "{what}: served: {:?}", answer.map(|a| a.text));
        return;
    }
    let a = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(a.status, 403, "{what}: {}", a.text);
    assert!(a.text.contains("forbidden"), "{what}: {}", a.text);
}

const NO_CERTIFICATE: &str = "no certificate";

/// One request to an agent route.
struct Request {
    route: &'static str,
    method: &'static str,
    path: String,
    body: Option<String>,
    /// `Connection: Upgrade` + `Upgrade: shoal-exec` (the streamed exec).
    upgrade: bool,
}

/// An answer: the status and the whole text (head and body).
struct Answer {
    status: u16,
    text: String,
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// One HTTP/1.1 request over mutual TLS to `l`, verifying its certificate name: the answer, or why
/// there was none. Reads and writes have a deadline. After a `101` only the head is read; a body
/// with a `Content-Length` is read to its length (an upgrade request's connection stays open),
/// any other to the end of the connection (`Connection: close`).
fn call(l: &Listener, tls: Arc<rustls::ClientConfig>, r: &Request) -> Result<Answer, String> {
    let name = rustls::pki_types::ServerName::try_from(l.server_name.clone()).expect("server name");
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(&l.addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let body = r.body.as_deref().unwrap_or("");
    let connection =
        if r.upgrade { "Connection: Upgrade\r\nUpgrade: shoal-exec\r\n" } else { "Connection: close\r\n" };
    let content = if r.body.is_some() {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let req = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n{content}{connection}\r\n{body}",
        r.method, r.path, l.server_name
    );
    stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = head_end(&out) {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            if head.starts_with("http/1.1 101") {
                break;
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if length.is_some_and(|n| out.len() >= end + n) {
                break;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify after answering is fine.
            Err(_) if head_end(&out).is_some() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok(Answer { status, text })
}

/// A service of one `sleep 300` process task on node `host`: its task id.
fn pinned_sleeper(m: &Node, name: &str, host: &str) -> String {
    let constraint = format!("node.hostname=={host}");
    m.ok(&[
        "service",
        "create",
        "--name",
        name,
        "--driver",
        "process",
        "--constraint",
        &constraint,
        "sleep",
        "300",
    ]);
    common::one_running_task(m, name, 30)
}

/// The manager-only agent routes, on task `task` (which runs on the node called). The checkpoint
/// names a task that is not there: a manager gets 404 (and nothing is frozen), anyone else 403.
fn manager_only(task: &str) -> Vec<(Request, u16)> {
    let key = "00".repeat(32);
    vec![
        (
            Request {
                route: "logs",
                method: "GET",
                path: format!("/internal/agent/logs?task={task}&tail=5"),
                body: None,
                upgrade: false,
            },
            200,
        ),
        (
            Request {
                route: "exec",
                method: "POST",
                path: "/internal/agent/exec".into(),
                body: Some(format!(r#"{{"task_id":"{task}","cmd":["sh","-c","exit 3"],"timeout_secs":10}}"#)),
                upgrade: false,
            },
            200,
        ),
        (
            Request {
                route: "exec/stream",
                method: "POST",
                path: "/internal/agent/exec/stream".into(),
                body: Some(format!(r#"{{"task_id":"{task}","exec":{{"cmd":["true"]}}}}"#)),
                upgrade: true,
            },
            101,
        ),
        (
            Request {
                route: "checkpoint",
                method: "POST",
                path: "/internal/agent/checkpoint".into(),
                body: Some(format!(
                    r#"{{"task_id":"notataskhere","checkpoint_id":"rolesckpt","key_hex":"{key}","binding":"roles","leave_running":true}}"#
                )),
                upgrade: false,
            },
            404,
        ),
        (
            Request {
                route: "forget checkpoint",
                method: "DELETE",
                path: "/internal/agent/checkpoint/rolesckpt".into(),
                body: None,
                upgrade: false,
            },
            204,
        ),
    ]
}

#[test]
fn agent_routes_refuse_all_but_managers_and_the_api_sockets_are_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "m1");
    m.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    let mut w = Node::new(tmp.path(), "w1");
    w.start("daemon");
    common::join_worker(&m, &w);

    // The API sockets: root's only (the manager's `/v1`, the worker's leave and health).
    for n in [&m, &w] {
        let sock = n.dir.join("shoal.sock");
        let meta = std::fs::metadata(&sock).expect("the API socket");
        assert!(meta.file_type().is_socket(), "{}", sock.display());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "mode of {}", sock.display());
    }

    // The identities: each node's certificate, an admin and a read-only operator certificate.
    let (mgr_tls, wrk_tls) = (m.dir.join("data/tls"), w.dir.join("data/tls"));
    eventually_or(
        20,
        || wrk_tls.join("node.crt").exists().then_some(()),
        || format!("the worker's certificate:\n{}", common::daemon_log(&w)),
    );
    let manager = with_cert(&mgr_tls, "ca.crt", "node.crt", "node.key");
    let worker = with_cert(&wrk_tls, "ca.crt", "node.crt", "node.key");
    let certs = tmp.path().join("alice");
    m.ok(&["cluster", "client-cert", "--out", certs.to_str().expect("utf8"), "--name", "alice"]);
    let admin = with_cert(&certs, "ca.pem", "cert.pem", "key.pem");
    let ro_certs = tmp.path().join("bob");
    m.ok(&[
        "cluster",
        "client-cert",
        "--out",
        ro_certs.to_str().expect("utf8"),
        "--name",
        "bob",
        "--role",
        "read-only",
    ]);
    let read_only = with_cert(&ro_certs, "ca.pem", "cert.pem", "key.pem");
    let anonymous = without_cert(&pem(&mgr_tls.join("ca.crt")));
    let clients = [
        ("an admin client certificate", &admin),
        ("a read-only client certificate", &read_only),
        (NO_CERTIFICATE, &anonymous),
    ];

    let on_worker = pinned_sleeper(&m, "on-worker", "w1");
    let on_manager = pinned_sleeper(&m, "on-manager", "m1");
    let wl = Listener {
        what: "the worker",
        addr: w.addr(),
        server_name: shoal_pki::node_dns_name(&w.node_id()),
        certificate_required: true,
    };
    let ml = Listener {
        what: "the manager",
        addr: m.addr(),
        server_name: shoal_pki::node_dns_name(&m.node_id()),
        certificate_required: false,
    };

    for (l, task) in [(&wl, &on_worker), (&ml, &on_manager)] {
        for (r, want) in manager_only(task) {
            let what = format!("{} {} ({}) on {}", r.method, r.path, r.route, l.what);
            // The manager gets through: the route is there and the request is well formed. The
            // node's agent may still be starting: asked again until it answers as it should.
            let got = eventually_or(
                30,
                || call(l, manager.clone(), &r).ok().filter(|a| a.status == want),
                || {
                    format!(
                        "{what} with the manager's certificate: {:?}",
                        call(l, manager.clone(), &r).map(|a| a.text)
                    )
                },
            );
            assert!(got.status != 401 && got.status != 403, "{what}: {}", got.text);
            match r.route {
                "logs" => assert!(got.text.contains("application/x-ndjson"), "{what}: {}", got.text),
                "exec" => assert!(got.text.contains(r#""exit_code":3"#), "{what}: {}", got.text),
                "checkpoint" => assert!(got.text.contains("is not on this node"), "{what}: {}", got.text),
                _ => {}
            }
            // Everyone else: refused by the role check, whatever the request.
            assert_refused(l, "the worker's node certificate", &worker, &r);
            for (who, tls) in clients {
                assert_refused(l, who, tls, &r);
            }
        }
    }

    // The archives of checkpoints: node routes (a restoring worker fetches them), not clients'.
    let archives = [
        (&wl, "/internal/agent/checkpoint/rolesckpt/archive"),
        (&ml, "/internal/agent/checkpoint/rolesckpt/archive"),
        (&ml, "/internal/checkpoints/rolesckpt"),
    ];
    for (l, path) in archives {
        let r = Request { route: "archive", method: "GET", path: path.into(), body: None, upgrade: false };
        let what = format!("GET {path} on {}", l.what);
        for (who, tls) in
            [("the manager's node certificate", &manager), ("the worker's node certificate", &worker)]
        {
            let a = call(l, tls.clone(), &r).unwrap_or_else(|e| panic!("{what} with {who}: {e}"));
            assert_eq!(a.status, 404, "{what} with {who} (no such checkpoint): {}", a.text);
        }
        for (who, tls) in clients {
            assert_refused(l, who, tls, &r);
        }
    }

    common::remove_services_and_wait(&m, &["on-worker", "on-manager"], &[&m, &w]);
}
