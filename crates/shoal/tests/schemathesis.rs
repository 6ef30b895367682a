//! The real schemathesis (PyPI; `scripts/install-deps.sh` installs it into its own venv) against
//! `/v1/openapi.json` of a real manager, over the TCP API with an admin client certificate:
//! every documented operation with generated valid and invalid requests, all its checks (no
//! server error, documented status codes and content types, responses that match their
//! schemas, invalid input refused, valid input not refused for its shape). It must find
//! nothing. A missing schemathesis fails the test: it is installed before the tests run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::https::tcp_cli;
use common::{eventually, free_port, poll, Node};

/// Where `scripts/install-deps.sh` installs schemathesis (`SHOAL_SCHEMATHESIS` overrides).
const DEFAULT_ST: &str = "/opt/shoal-schemathesis/bin/st";

/// Test cases per operation and phase: about a minute and a half on two cores.
const MAX_EXAMPLES: &str = "60";

/// Operations left out, each for a reason of its own:
const EXCLUDED: &[(&str, &str)] = &[
    // The manager leaves the cluster and the daemon exits: the rest of the run has no API.
    ("post", "/v1/cluster/leave"),
    // Dials the address in the body (the leader to join): the test sends traffic nowhere else.
    ("post", "/v1/cluster/join"),
    // Both stream until the client goes away (events as they happen, key changes); a
    // schemathesis request reads its whole answer, so every one would end in a timeout.
    ("get", "/v1/events"),
    ("get", "/v1/kv/watch"),
];

/// The manager's certificate names it `manager.shoal` (and `<node id>.node.shoal`), not
/// `127.0.0.1`: schemathesis (Python) resolves that name to loopback through this hook, so it
/// verifies the server's certificate against the cluster CA for the name it really has.
const RESOLVE_HOOK: &str = r#"
import socket

_getaddrinfo = socket.getaddrinfo


def _loopback_for_the_manager(host, *args, **kwargs):
    if host == "manager.shoal":
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_for_the_manager
"#;

/// The statuses `positive_data_acceptance` takes for a request that matches the schemas, beyond
/// its defaults (2xx, 3xx, 401, 403, 404, 409, 429, 5xx):
/// - 400: the schemas give every request's shape, but not the rules that tie fields together
///   or read a string's content (a command or an image; a subnet that is an IPv4 CIDR; name
///   rules; a unit name's type suffix; an integer written as `374.0`), which the handlers check
///   and answer with a 400 naming the field. A 400 for a malformed request is what the
///   `negative_data_rejection` check wants; a 5xx or an undocumented status still fails.
/// - 426: `POST /v1/tasks/{id}/exec/stream` streams only on a connection that asks to be
///   upgraded (`Upgrade: shoal-exec`), which a schemathesis request never does.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "426", "429", "5xx"]
"#;

fn schemathesis() -> PathBuf {
    let st = std::env::var_os("SHOAL_SCHEMATHESIS").map_or_else(|| PathBuf::from(DEFAULT_ST), PathBuf::from);
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: run scripts/install-deps.sh (or set SHOAL_SCHEMATHESIS)",
        st.display()
    );
    st
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn schemathesis_finds_nothing_in_the_v1_api() {
    let st = schemathesis();
    let tmp = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let mut m = Node::new(tmp.path(), "mgr");
    m.start_with("daemon", &["--api-addr", &api]);
    let out = m.ok(&["cluster", "init"]);
    assert!(out.contains("initialized"), "{out}");

    // An admin client certificate for the TCP API, and the API answering with it.
    let certs = tmp.path().join("certs");
    m.ok(&["cluster", "client-cert", "--out", utf8(&certs), "--name", "schemathesis"]);
    eventually(30, "the TCP API to list the node", || {
        let out = tcp_cli(api_port, &certs, &["node", "ls", "--format", "json"]);
        let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (out.status.success() && nodes.as_array().is_some_and(|n| !n.is_empty())).then_some(())
    });

    // Objects for the operations on one object to find half of the time (the other half: the
    // generated ids, mostly unknown): schemathesis cannot make valid ones itself, whose rules the
    // schemas do not carry. Nothing that runs tasks: the generated requests would then run
    // commands (exec, scaled and updated services) on this machine.
    let network = m.ok(&["network", "create", "schemathesis-net"]);
    let secret = ok_stdin(&m, &["secret", "create", "schemathesis-secret", "-"], b"s3cret");
    let config = ok_stdin(&m, &["config", "create", "schemathesis-config", "-"], b"x=1");
    let lease = m.ok(&["kv", "lease", "grant", "3600"]);
    let lease = lease
        .split_whitespace()
        .nth(1)
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("a lease id in {lease:?}"));
    let mut config_file = CONFIG.to_string();
    for (name, route, value) in [
        ("networks", "/v1/networks/", format!("{network:?}")),
        ("secrets", "/v1/secrets/", format!("{secret:?}")),
        ("configs", "/v1/configs/", format!("{config:?}")),
        ("nodes", "/v1/nodes/", format!("{:?}", m.node_id())),
        ("leases", "/v1/kv/leases/", lease.to_string()),
    ] {
        config_file.push_str(&format!(
            "\n[dictionaries.{name}]\nvalues = [{value}]\n\n[[operations]]\ninclude-path-regex = \"^{route}\"\n\
             parameters = {{ \"path.id\" = {{ dictionary = \"{name}\", probability = 0.5 }} }}\n"
        ));
    }

    let work = tmp.path().join("schemathesis");
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::write(work.join("shoal_resolve.py"), RESOLVE_HOOK).expect("hook");
    std::fs::write(work.join("schemathesis.toml"), config_file).expect("config");
    let url = format!("https://manager.shoal:{api_port}/v1/openapi.json");
    let mut args: Vec<String> = vec![
        "--no-color".into(),
        "--config-file".into(),
        utf8(&work.join("schemathesis.toml")).into(),
        "run".into(),
        url,
        "--checks".into(),
        "all".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--seed".into(),
        "1".into(),
        // One worker: the run is then the same for the same seed.
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "30".into(),
        "--request-cert".into(),
        utf8(&certs.join("cert.pem")).into(),
        "--request-cert-key".into(),
        utf8(&certs.join("key.pem")).into(),
        "--tls-verify".into(),
        utf8(&certs.join("ca.pem")).into(),
    ];
    for (method, path) in EXCLUDED {
        args.push("--exclude-operation-id".into());
        args.push(shoal_api::openapi::operation_id(method, path));
    }

    let stdout = work.join("stdout");
    let mut child = Command::new(&st)
        .args(&args)
        .current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", "shoal_resolve")
        .env("PYTHONPATH", &work)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(work.join("stderr")).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", st.display()));
    let status = poll(Duration::from_secs(600), || child.try_wait().expect("wait for schemathesis"));
    let output = || {
        let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap_or_default();
        format!(
            "{}\n{}\n--- daemon log (tail) ---\n{}",
            read("stdout"),
            read("stderr"),
            tail(&common::daemon_log(&m))
        )
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("schemathesis did not finish within 10 minutes:\n{}", output());
    };
    assert!(status.success(), "schemathesis found failures ({status}):\n{}", output());
    let text = std::fs::read_to_string(&stdout).expect("stdout");
    assert!(text.contains(" passed"), "schemathesis ran no test case:\n{text}");
    println!("{text}");
}

/// `shoal ARGS` with `input` on stdin; its output, trimmed.
fn ok_stdin(m: &Node, args: &[&str], input: &[u8]) -> String {
    let out = m.cli_stdin(args, input);
    assert!(out.status.success(), "shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
