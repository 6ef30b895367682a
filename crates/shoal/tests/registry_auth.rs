//! Registry pulls with credentials (`service create/update --with-registry-auth`) on real parts:
//! Debian's docker-registry with htpasswd (bcrypt) auth on 127.0.0.1 over plain HTTP (dockerd
//! allows loopback registries without TLS), the docker CLI to log in and push with a temporary
//! `DOCKER_CONFIG`, dockerd, and one `shoal dev` node running docker-driver services. The
//! password must reach the engine's pull and nowhere else: not `service inspect`, not the
//! daemon's log, not a file of the node's data directory (Raft's log holds it sealed).
//!
//! Needs dockerd, docker-registry and htpasswd (apache2-utils), all from
//! `scripts/install-deps.sh`; skips without the registry or htpasswd unless
//! `SHOAL_REQUIRE_RUNTIMES=1`.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

mod common;
use common::{eventually_or, free_port, DockerImage, Node, BIN};

/// The registry user's password: a string found nowhere else.
const PASSWORD: &str = "Pw-shoal-regauth-7fq2Lz";
const USER: &str = "alice";

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn required() -> bool {
    std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1")
}

fn tools_present() -> bool {
    let missing: Vec<_> = ["/usr/bin/docker-registry", "/usr/bin/htpasswd"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!required(), "SHOAL_REQUIRE_RUNTIMES=1 but {missing:?} missing");
    eprintln!("skipping: {missing:?} not installed (scripts/install-deps.sh)");
    false
}

/// Starts docker-registry on 127.0.0.1:`port` with one htpasswd user.
fn start_registry(dir: &Path, port: u16) -> Registry {
    std::fs::create_dir_all(dir.join("storage")).expect("registry dir");
    let out = Command::new("htpasswd").args(["-nbB", USER, PASSWORD]).output().expect("htpasswd");
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("htpasswd"), &out.stdout).expect("htpasswd file");
    let conf = dir.join("registry.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
            dir.join("storage").display(),
            dir.join("htpasswd").display()
        ),
    )
    .expect("registry config");
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let reg = Registry(child);
    common::eventually(20, "the registry to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    reg
}

/// A docker CLI command with its credentials in `config`.
fn docker(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The shoal CLI on node `m` with the docker CLI's credentials in `config`.
fn shoal(m: &Node, config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("-H")
        .arg(format!("unix://{}", m.dir.join("shoal.sock").display()))
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .expect("shoal")
}

/// POSTs `body` to the node's `/v1` API; the status and the answer.
fn api(m: &Node, path: &str, body: &Value) -> (u16, String) {
    let mut child = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(m.dir.join("shoal.sock"))
        .args(["-X", "POST", "-H", "content-type: application/json", "--data-binary", "@-"])
        .arg(format!("http://localhost{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(body.to_string().as_bytes()).expect("write");
    drop(input);
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), answer.to_string())
}

fn tasks(m: &Node, service: &str) -> Vec<Value> {
    common::service_tasks(m, service)
}

fn sealed(m: &Node, service: &str) -> String {
    let v = m.json(&["service", "inspect", service, "--format", "json"]);
    let v = if v.is_array() { v[0].clone() } else { v };
    v["spec"]["task_template"]["registry_auth"].as_str().unwrap_or_default().to_string()
}

/// Every file under `dir`, recursively (sockets and the like skipped).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn services_pull_with_the_operators_registry_credentials() {
    if !tools_present() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // Before the node: containers and images go after the daemon.
    let local = DockerImage::import(&tmp.path().join("img"), "shoal-regauth");
    let port = free_port();
    let _registry = start_registry(&tmp.path().join("registry"), port);
    let registry = format!("127.0.0.1:{port}");
    let remote = format!("{registry}/shoal/regauth-{}:1", std::process::id());
    let pulled = DockerImage(remote.clone());
    // A second tag, for a service created through the Docker Engine API.
    let remote2 = format!("{registry}/shoal/regauth-{}:2", std::process::id());
    let pulled2 = DockerImage(remote2.clone());

    // The operator logs in and pushes; then the engine forgets the image, so a task must pull it.
    let config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&config).expect("docker config dir");
    docker(&config, &["login", "-u", USER, "--password-stdin", &registry], Some(PASSWORD));
    docker(&config, &["tag", &local.0, &remote], None);
    docker(&config, &["push", &remote], None);
    docker(&config, &["rmi", &remote], None);
    docker(&config, &["tag", &local.0, &remote2], None);
    docker(&config, &["push", &remote2], None);
    docker(&config, &["rmi", &remote2], None);

    let mut m = Node::new(tmp.path(), "node");
    m.start("dev");
    // A worker: the credentials reach it in its assignments over the node-to-node mTLS link.
    let mut w = Node::new(tmp.path(), "worker");
    w.start("daemon");
    common::join_worker(&m, &w);
    let worker_id = w.node_id();
    let run = ["--driver", "docker", remote.as_str(), "sleep", "1000"];

    // No entry for the registry, or a credential helper: the CLI refuses, naming why.
    let empty = tmp.path().join("empty-config");
    std::fs::create_dir_all(&empty).expect("dir");
    std::fs::write(empty.join("config.json"), r#"{"auths": {}}"#).expect("config");
    let args = [&["service", "create", "-d", "--name", "nocreds", "--with-registry-auth"][..], &run].concat();
    let out = shoal(&m, &empty, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "created without credentials: {err}");
    assert!(err.contains(&format!("no credentials for registry {registry}")), "{err}");
    let helper = tmp.path().join("helper-config");
    std::fs::create_dir_all(&helper).expect("dir");
    std::fs::write(
        helper.join("config.json"),
        format!(r#"{{"auths": {{}}, "credHelpers": {{"{registry}": "pass"}}}}"#),
    )
    .expect("config");
    let out = shoal(&m, &helper, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("credential helpers are not supported"), "{err}");

    // Without the flag the engine's pull is anonymous: the task is rejected with the pull's failure.
    m.ok(&[&["service", "create", "-d", "--name", "anon"][..], &run].concat());
    let reason = eventually_or(
        60,
        || {
            tasks(&m, "anon").iter().find(|t| t["status"]["state"] == "rejected").and_then(|t| {
                t["status"]["err"].as_str().filter(|e| e.contains("pulling it failed")).map(str::to_string)
            })
        },
        || format!("a rejected task: {:#?}", tasks(&m, "anon")),
    );
    eprintln!("the anonymous pull was refused: {reason}");
    let lower = reason.to_lowercase();
    assert!(
        lower.contains("unauthorized")
            || lower.contains("no basic auth credentials")
            || lower.contains("authentication"),
        "{reason}"
    );
    m.ok(&["service", "rm", "anon"]);

    // With it: the engine pulls with the operator's credentials and the task runs — on the
    // worker, whose agent got them from the managers over mTLS (the first pull of the image).
    let out = shoal(
        &m,
        &config,
        &[
            &["service", "create", "-d", "--name", "priv", "--with-registry-auth"][..],
            &["--constraint", "node.role==worker"],
            &run,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let running = eventually_or(
        90,
        || common::running_tasks(&m, "priv").filter(|t| !t.is_empty()),
        || format!("a running task: {:#?}\n{}", tasks(&m, "priv"), common::daemon_log_plain(&w)),
    );
    assert_eq!(running[0]["node_id"], worker_id.as_str(), "the task runs on the worker");
    assert!(!pulled.containers("priv.").is_empty(), "no container of the pulled image");

    // The service shows only the sealed value; an update without the flag keeps it, one with
    // it replaces it.
    let first = sealed(&m, "priv");
    assert!(!first.is_empty(), "no sealed credentials in service inspect");
    let inspect = m.ok(&["service", "inspect", "priv", "--format", "json"]);
    assert!(!inspect.contains(PASSWORD), "{inspect}");
    m.ok(&["service", "update", "-d", "--env-add", "A=1", "priv"]);
    assert_eq!(sealed(&m, "priv"), first, "an update without --with-registry-auth must keep them");
    let out = shoal(&m, &config, &["service", "update", "-d", "--with-registry-auth", "priv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = sealed(&m, "priv");
    assert!(!second.is_empty() && second != first, "--with-registry-auth must seal them anew");
    eventually_or(
        90,
        || {
            let ts = tasks(&m, "priv");
            ts.iter()
                .any(|t| common::running(t) && t["spec"]["registry_auth"] == Value::String(second.clone()))
                .then_some(())
        },
        || format!("the updated task running: {:#?}", tasks(&m, "priv")),
    );
    let listed = m.ok(&["service", "ps", "priv", "--format", "json"]);
    assert!(!listed.contains(PASSWORD));

    // Sealed credentials come only from the managers: a spec that brings some is refused on
    // create, and on update unless they were sealed for that very service.
    let mut spec = m.json(&["service", "inspect", "priv", "--format", "json"]);
    if spec.is_array() {
        spec = spec[0].clone();
    }
    let mut spec = spec["spec"].clone();
    spec["name"] = Value::String("copy".into());
    let (status, body) = api(&m, "/v1/services", &spec);
    assert!(status == 400 && body.contains("set only by the managers"), "{status} {body}");
    m.ok(&["service", "create", "-d", "--name", "other", "--driver", "docker", &local.0, "sleep", "1000"]);
    spec["name"] = Value::String("other".into());
    spec["task_template"]["image"] = Value::String(local.0.clone());
    let (status, body) = api(&m, "/v1/services/other/update", &serde_json::json!({ "spec": spec }));
    assert!(status == 400 && body.contains("not credentials sealed for this service"), "{status} {body}");
    m.ok(&["service", "rm", "other"]);

    // The docker CLI's --with-registry-auth through Shoal's Docker Engine API (X-Registry-Auth).
    let sock = m.dir.join("docker.sock");
    common::eventually(20, "the docker socket", || sock.exists().then_some(()));
    let host = format!("unix://{}", sock.display());
    let viadocker = [
        "-H",
        &host,
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--with-registry-auth",
        "--name",
        "viadocker",
        &remote2,
        "sleep",
        "1000",
    ];
    docker(&config, &viadocker, None);
    eventually_or(
        90,
        || common::running_tasks(&m, "viadocker").filter(|t| !t.is_empty()),
        || format!("a running task: {:#?}\n{}", tasks(&m, "viadocker"), common::daemon_log_plain(&m)),
    );
    assert!(!pulled2.containers("viadocker.").is_empty(), "no container of the pulled image");
    assert!(!sealed(&m, "viadocker").is_empty(), "no sealed credentials");
    let inspected = docker(&config, &["-H", &host, "service", "inspect", "viadocker"], None);
    assert!(!String::from_utf8_lossy(&inspected.stdout).contains(PASSWORD));

    // Nowhere on the node in plain text: not the daemon's log, not a task record, not Raft's log.
    let raft = m.dir.join("data/raft/raft.redb");
    assert!(raft.exists(), "no {}", raft.display());
    let all = [files(&m.dir), files(&w.dir)].concat();
    assert!(all.iter().any(|f| f.starts_with(m.dir.join("data/agent/tasks"))), "no task records");
    assert!(all.iter().any(|f| f.starts_with(w.dir.join("data/agent/tasks"))), "no worker task records");
    assert!(all.iter().any(|f| f.extension().is_some_and(|e| e == "log")), "no daemon log");
    for f in &all {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(!contains(&bytes, PASSWORD.as_bytes()), "the password is in {}", f.display());
    }
    m.ok(&["service", "rm", "priv", "viadocker"]);
}
