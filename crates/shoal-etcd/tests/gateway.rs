//! The JSON gateway, compared with etcd's own: the same curl requests against a real etcd 3.4
//! (Debian's `etcd-server`) started here and against Shoal's server over the in-memory backend,
//! answers compared byte for byte after masking what legitimately differs (ids, header
//! revisions, terms, sizes, versions). Also: gRPC (the real etcdctl) on the same port, HTTP/2,
//! and over TLS the client-certificate requirement for JSON clients too.
//!
//! Needs `etcd`, `etcdctl` and `curl` on the PATH (`apt-get install etcd-server etcd-client
//! curl`); skipped without them unless `SHOAL_REQUIRE_RUNTIMES=1`.

mod support;

use shoal_etcd::{EtcdServer, MemoryBackend};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use support::{eventually, pki, server_config};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

fn missing(test: &str) -> bool {
    let on_path = |b: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
    };
    let absent: Vec<&str> = ["etcd", "etcdctl", "curl"].into_iter().filter(|b| !on_path(b)).collect();
    if absent.is_empty() {
        return false;
    }
    assert!(
        !std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1"),
        "SHOAL_REQUIRE_RUNTIMES=1 but {absent:?} not installed"
    );
    eprintln!("skipping {test}: {absent:?} not installed (apt-get install etcd-server etcd-client curl)");
    true
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One HTTP answer, as curl saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// curl against one server: `base` is `http://host:port` (or https), `extra` curl's TLS flags.
#[derive(Clone)]
struct Curl {
    base: String,
    extra: Vec<String>,
}

impl Curl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("curl");
        c.args(["-s", "-S", "--max-time", "20"])
            .args(&self.extra)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs curl to the end: (exit status ok, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().await.expect("curl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn request(&self, method: &str, path: &str, body: Option<&str>, flags: &[&str]) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut args = vec!["-o", "-", "-w", "\n%{http_code} %{content_type}", "-X", method];
        args.extend_from_slice(flags);
        if let Some(b) = body {
            args.extend_from_slice(&["--data-binary", b]);
        }
        args.push(&url);
        let (ok, out, err) = self.run(&args).await;
        assert!(ok, "curl {method} {url}: {err}");
        let (body, meta) = out.rsplit_once('\n').expect("curl's -w line");
        let (status, content_type) = meta.split_once(' ').unwrap_or((meta, ""));
        Answer {
            status: status.parse().expect("status code"),
            content_type: content_type.to_string(),
            body: body.to_string(),
        }
    }

    async fn post(&self, path: &str, body: &str) -> Answer {
        self.request("POST", path, Some(body), &[]).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[]).await
    }

    /// A streaming POST (`/v3/watch`), read line by line.
    fn stream(&self, path: &str, body: &str) -> Lines {
        let url = format!("{}{path}", self.base);
        let mut child =
            self.command(&["-N", "-X", "POST", "--data-binary", body, &url]).spawn().expect("curl");
        let stdout = child.stdout.take().expect("stdout");
        Lines { _child: child, lines: BufReader::new(stdout).lines() }
    }
}

struct Lines {
    _child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Lines {
    async fn next(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a streamed line in time")
            .expect("read")
            .expect("the stream goes on")
    }
}

/// Replaces the value of every `"key":` in `s` (a string, number or flat array) with `"*"`,
/// keeping everything else byte for byte.
fn mask(s: &str, keys: &[&str]) -> String {
    let mut out = s.to_string();
    for key in keys {
        let needle = format!("\"{key}\":");
        let mut from = 0;
        while let Some(at) = out[from..].find(&needle) {
            let start = from + at + needle.len();
            let rest = &out[start..];
            let len = match rest.as_bytes().first() {
                Some(b'"') => rest[1..].find('"').map_or(rest.len(), |e| e + 2),
                Some(b'[') => rest.find(']').map_or(rest.len(), |e| e + 1),
                _ => rest.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(rest.len()),
            };
            out.replace_range(start..start + len, "\"*\"");
            from = start + 3;
        }
    }
    out
}

/// Header fields: ids, term and revision differ between two clusters.
const HEADER: &[&str] = &["cluster_id", "member_id", "raft_term", "revision"];

/// (label, method, path, body, what to mask besides [`HEADER`]).
type Step = (&'static str, &'static str, &'static str, Option<&'static str>, &'static [&'static str]);

/// The sequence both servers get. Revisions of keys are not masked: the same writes in the
/// same order give the same revisions in both.
fn unary_steps() -> Vec<Step> {
    const STATUS: &[&str] =
        &["version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex"];
    const MEMBER: &[&str] = &["ID", "name", "peerURLs", "clientURLs"];
    const TTL: &[&str] = &["TTL"];
    let txn_ok = r#"{"compare":[{"target":"VALUE","key":"Z3cx","value":"aGVsbG8=","result":"EQUAL"}],"success":[{"request_put":{"key":"Z3cx","value":"d29ybGQ="}},{"request_range":{"key":"Z3cx"}}],"failure":[{"request_range":{"key":"Z3cx"}}]}"#;
    let txn_failed = r#"{"compare":[{"target":"VALUE","key":"Z3cx","value":"aGVsbG8=","result":"EQUAL"}],"success":[{"request_put":{"key":"Z3cx","value":"d29ybGQ="}}],"failure":[{"request_range":{"key":"Z3cx"}},{"request_delete_range":{"key":"YQ==","prev_kv":true}}]}"#;
    vec![
        ("put", "POST", "/v3/kv/put", Some(r#"{"key":"Z3cx","value":"aGVsbG8="}"#), &[]),
        ("range", "POST", "/v3/kv/range", Some(r#"{"key":"Z3cx"}"#), &[]),
        ("v3beta range", "POST", "/v3beta/kv/range", Some(r#"{"key":"Z3cx"}"#), &[]),
        ("v3alpha range", "POST", "/v3alpha/kv/range", Some(r#"{"key":"Z3cx"}"#), &[]),
        ("put a", "POST", "/v3/kv/put", Some(r#"{"key":"YQ==","value":"MQ=="}"#), &[]),
        (
            "put ab, nothing before",
            "POST",
            "/v3/kv/put",
            Some(r#"{"key":"YWI=","value":"Mg==","prev_kv":true}"#),
            &[],
        ),
        (
            "put ab with prev_kv",
            "POST",
            "/v3/kv/put",
            Some(r#"{"key":"YWI=","value":"Mw==","prev_kv":true}"#),
            &[],
        ),
        (
            "prefix, keys only",
            "POST",
            "/v3/kv/range",
            Some(r#"{"key":"YQ==","range_end":"Yg==","keys_only":true}"#),
            &[],
        ),
        (
            "prefix, count only",
            "POST",
            "/v3/kv/range",
            Some(r#"{"key":"YQ==","range_end":"Yg==","count_only":true}"#),
            &[],
        ),
        (
            "prefix, limit, sorted",
            "POST",
            "/v3/kv/range",
            Some(r#"{"key":"YQ==","range_end":"Yg==","limit":1,"sort_order":"DESCEND","sort_target":"KEY"}"#),
            &[],
        ),
        (
            "camelCase names, numbers as strings, enum numbers",
            "POST",
            "/v3/kv/range",
            Some(r#"{"key":"YQ==","rangeEnd":"Yg==","limit":"1","sort_order":2,"unknown_field":[1]}"#),
            &[],
        ),
        (
            "from key, serializable",
            "POST",
            "/v3/kv/range",
            Some(r#"{"key":"YQ==","range_end":"AA==","serializable":true}"#),
            &[],
        ),
        ("txn, success branch", "POST", "/v3/kv/txn", Some(txn_ok), &[]),
        ("txn, failure branch", "POST", "/v3/kv/txn", Some(txn_failed), &[]),
        ("txn, empty", "POST", "/v3/kv/txn", Some("{}"), &[]),
        (
            "txn, nested",
            "POST",
            "/v3/kv/txn",
            Some(
                r#"{"compare":[{"target":"VERSION","key":"eg==","version":"0","result":"EQUAL"}],"success":[{"request_txn":{}}]}"#,
            ),
            &[],
        ),
        (
            "deleterange with prev_kv",
            "POST",
            "/v3/kv/deleterange",
            Some(r#"{"key":"YWI=","prev_kv":true}"#),
            &[],
        ),
        ("deleterange, nothing", "POST", "/v3/kv/deleterange", Some(r#"{"key":"bm9uZQ=="}"#), &[]),
        ("compaction", "POST", "/v3/kv/compaction", Some(r#"{"revision":"7"}"#), &[]),
        (
            "range at a compacted revision",
            "POST",
            "/v3/kv/range",
            Some(r#"{"key":"Z3cx","revision":"3"}"#),
            &[],
        ),
        ("compaction again", "POST", "/v3/kv/compaction", Some(r#"{"revision":"5"}"#), &[]),
        ("compaction in the future", "POST", "/v3/kv/compaction", Some(r#"{"revision":"100"}"#), &[]),
        ("range in the future", "POST", "/v3/kv/range", Some(r#"{"key":"Z3cx","revision":1000}"#), &[]),
        ("range without a key", "POST", "/v3/kv/range", Some("{}"), &[]),
        ("put without a key", "POST", "/v3/kv/put", Some(r#"{"value":"MQ=="}"#), &[]),
        ("lease grant", "POST", "/v3/lease/grant", Some(r#"{"TTL":30,"ID":1000}"#), &[]),
        ("lease grant, exists", "POST", "/v3/lease/grant", Some(r#"{"TTL":30,"ID":1000}"#), &[]),
        (
            "put with the lease",
            "POST",
            "/v3/kv/put",
            Some(r#"{"key":"bGs=","value":"MQ==","lease":"1000"}"#),
            &[],
        ),
        (
            "put with an unknown lease",
            "POST",
            "/v3/kv/put",
            Some(r#"{"key":"bGs=","value":"MQ==","lease":"123"}"#),
            &[],
        ),
        ("timetolive with keys", "POST", "/v3/lease/timetolive", Some(r#"{"ID":1000,"keys":true}"#), TTL),
        ("timetolive, kv path", "POST", "/v3/kv/lease/timetolive", Some(r#"{"ID":"1000"}"#), TTL),
        ("timetolive, unknown lease", "POST", "/v3/lease/timetolive", Some(r#"{"ID":1234}"#), &[]),
        ("leases", "POST", "/v3/lease/leases", Some("{}"), &[]),
        ("leases, kv path", "POST", "/v3/kv/lease/leases", Some("{}"), &[]),
        ("keepalive (a stream)", "POST", "/v3/lease/keepalive", Some(r#"{"ID":1000}"#), &[]),
        ("keepalive, unknown lease", "POST", "/v3/lease/keepalive", Some(r#"{"ID":1234}"#), &[]),
        ("revoke", "POST", "/v3/lease/revoke", Some(r#"{"ID":1000}"#), &[]),
        ("revoke again, kv path", "POST", "/v3/kv/lease/revoke", Some(r#"{"ID":1000}"#), &[]),
        ("leases after revoke", "POST", "/v3/lease/leases", Some("{}"), &[]),
        ("the lease's key went with it", "POST", "/v3/kv/range", Some(r#"{"key":"bGs="}"#), &[]),
        ("member list", "POST", "/v3/cluster/member/list", Some("{}"), MEMBER),
        ("status", "POST", "/v3/maintenance/status", Some("{}"), STATUS),
        ("alarms", "POST", "/v3/maintenance/alarm", Some("{}"), &[]),
        ("defragment", "POST", "/v3/maintenance/defragment", Some("{}"), &[]),
        // Malformed bodies: Go's and jsonpb's own messages.
        ("truncated JSON", "POST", "/v3/kv/range", Some(r#"{"key":"Z3cx""#), &[]),
        ("not JSON", "POST", "/v3/kv/range", Some("xx"), &[]),
        ("trailing comma", "POST", "/v3/kv/range", Some(r#"{"key":"Z3cx",}"#), &[]),
        ("empty body", "POST", "/v3/kv/range", Some(""), &[]),
        ("an array", "POST", "/v3/kv/range", Some("[1]"), &[]),
        ("bad base64", "POST", "/v3/kv/range", Some(r#"{"key":"YQ"}"#), &[]),
        ("unknown enum name", "POST", "/v3/kv/range", Some(r#"{"key":"YQ==","sort_order":"BAD"}"#), &[]),
        ("number for a bool", "POST", "/v3/kv/range", Some(r#"{"key":"YQ==","count_only":1}"#), &[]),
        ("fraction for an int64", "POST", "/v3/kv/range", Some(r#"{"key":"YQ==","limit":1.5}"#), &[]),
        ("object for a list", "POST", "/v3/kv/txn", Some(r#"{"success":{}}"#), &[]),
        ("watch, malformed first request", "POST", "/v3/watch", Some("xx"), &[]),
        // Paths and methods.
        ("GET on a POST path", "GET", "/v3/kv/range", None, &[]),
        ("unknown gateway path", "POST", "/v3/kv/nope", Some("{}"), &[]),
        ("unknown path", "GET", "/nope", None, &[]),
        ("unknown v3beta path", "POST", "/v3beta/kv/nope", Some("{}"), &[]),
        ("trailing slash", "POST", "/v3/kv/range/", Some(r#"{"key":"Z3cx"}"#), &[]),
        ("the prefix alone", "POST", "/v3beta/", Some("{}"), &[]),
        ("the prefix without its slash", "POST", "/v3", Some("{}"), &[]),
        ("GET the prefix without its slash", "GET", "/v3", None, &[]),
        ("a query string", "POST", "/v3/kv/range?limit=5", Some(r#"{"key":"Z3cx"}"#), &[]),
        ("health", "GET", "/health", None, &[]),
        ("POST /health", "POST", "/health", Some("{}"), &[]),
        ("version", "GET", "/version", None, &["etcdserver"]),
    ]
}

/// Differences that are not the gateway's, applied to Shoal's masked answer so that the rest
/// of it is still compared byte for byte: the in-memory test double's member has no peer URLs.
fn known_service_differences(label: &str, shoal: &str) -> String {
    match label {
        // The MemoryBackend's member has no peer URLs.
        "member list" => shoal.replacen(r#""name":"*","#, r#""name":"*","peerURLs":"*","#, 1),
        _ => shoal.to_string(),
    }
}

/// Requests whose HTTP headers are compared too (those etcd's gateway sets itself; `TE:
/// trailers` so that hyper sends the trailers Go always sends).
const HEADER_STEPS: &[(&str, &str, &str, Option<&str>)] = &[
    ("headers: success", "POST", "/v3/kv/range", Some(r#"{"key":"Z3cx"}"#)),
    ("headers: gRPC error", "POST", "/v3/kv/range", Some(r#"{"key":"Z3cx","revision":"3"}"#)),
    ("headers: malformed body", "POST", "/v3/kv/range", Some("xx")),
    ("headers: stream", "POST", "/v3/lease/keepalive", Some(r#"{"ID":1234}"#)),
    ("headers: GET on a POST path", "GET", "/v3/kv/range", None),
    ("headers: unknown path", "GET", "/nope", None),
    ("headers: health", "GET", "/health", None),
    ("headers: POST /health", "POST", "/health", Some("{}")),
    ("headers: version", "GET", "/version", None),
];

async fn headers(c: &Curl, method: &str, path: &str, body: Option<&str>) -> String {
    const COMPARED: &[&str] = &[
        "content-type",
        "grpc-metadata-content-type",
        "trailer",
        "grpc-trailer-content-type",
        "x-content-type-options",
        "allow",
    ];
    let url = format!("{}{path}", c.base);
    let mut args = vec!["-o", "/dev/null", "-D", "-", "-H", "TE: trailers", "-X", method];
    if let Some(b) = body {
        args.extend_from_slice(&["--data-binary", b]);
    }
    args.push(&url);
    let (ok, out, err) = c.run(&args).await;
    assert!(ok, "curl {method} {url}: {err}");
    let mut lines = out.lines().map(str::trim_end);
    let status = lines.next().unwrap_or_default().to_string();
    let mut kept: Vec<String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(n, _)| COMPARED.contains(&n.as_str()))
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    kept.sort();
    format!("{status} | {}", kept.join(" | "))
}

async fn observe(c: &Curl) -> Vec<(String, Answer)> {
    let mut out = Vec::new();
    for (label, method, path, body, masks) in unary_steps() {
        let mut a = c.request(method, path, body, &[]).await;
        a.body = mask(&mask(&a.body, HEADER), masks);
        out.push((label.to_string(), a));
    }
    for (label, method, path, body) in HEADER_STEPS {
        let body = headers(c, method, path, *body).await;
        out.push((label.to_string(), Answer { status: 0, content_type: String::new(), body }));
    }
    // A watch: created, then the events of a put, a put (with its prev_kv) and a delete made
    // by other requests while the stream is open; then a progress request on its own stream.
    let mut w = c.stream("/v3/watch", r#"{"create_request":{"key":"dw==","prev_kv":true}}"#);
    let mut lines = vec![w.next().await];
    for (path, body) in [
        ("/v3/kv/put", r#"{"key":"dw==","value":"MQ=="}"#),
        ("/v3/kv/put", r#"{"key":"dw==","value":"Mg=="}"#),
        ("/v3/kv/deleterange", r#"{"key":"dw=="}"#),
    ] {
        assert_eq!(c.post(path, body).await.status, 200);
        lines.push(w.next().await);
    }
    let mut p = c.stream("/v3/watch", r#"{"progress_request":{}}"#);
    lines.push(p.next().await);
    for (i, l) in lines.into_iter().enumerate() {
        let body = mask(&l, HEADER);
        out.push((format!("watch line {i}"), Answer { status: 200, content_type: String::new(), body }));
    }
    out
}

/// A real etcd 3.4 in `dir` on free loopback ports; killed when dropped.
async fn start_etcd(dir: &Path) -> (Child, Curl) {
    let (client, peer) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("etcd.log")).expect("log");
    let child = Command::new("etcd")
        .args(["--name", "default", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("etcd starts");
    let curl = Curl { base: format!("http://127.0.0.1:{client}"), extra: Vec::new() };
    eventually(30, "etcd to be healthy", || {
        let curl = curl.clone();
        async move {
            let (ok, out, _) = curl.run(&["--max-time", "2", &format!("{}/health", curl.base)]).await;
            (ok && out == r#"{"health":"true"}"#).then_some(())
        }
    })
    .await;
    (child, curl)
}

/// Shoal's server over the in-memory backend on a free loopback port.
async fn start_shoal(tls: Option<Arc<rustls::ServerConfig>>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    let backend = MemoryBackend::new();
    backend.set_client_urls(vec![format!("http://{endpoint}")]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = EtcdServer::new(backend).tls(tls);
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (endpoint, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_what_etcd_answers() {
    if missing("the_gateway_answers_what_etcd_answers") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd) = start_etcd(dir.path()).await;
    let (endpoint, _stop) = start_shoal(None).await;
    let shoal = Curl { base: format!("http://{endpoint}"), extra: Vec::new() };

    let expected = observe(&etcd).await;
    let got = observe(&shoal).await;
    assert_eq!(expected.len(), got.len());
    let mut differences = Vec::new();
    for ((label, e), (_, g)) in expected.iter().zip(&got) {
        let g = Answer { body: known_service_differences(label, &g.body), ..g.clone() };
        if *e != g {
            differences.push(format!("{label}:\n  etcd:  {e:?}\n  shoal: {g:?}"));
        }
    }
    assert!(differences.is_empty(), "{} differences:\n{}", differences.len(), differences.join("\n"));

    // gRPC on the same port: etcdctl writes, the gateway reads, and back.
    let etcdctl = |args: &[&str]| {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
            .args(args)
            .kill_on_drop(true);
        c
    };
    let out = etcdctl(&["put", "g", "1"]).output().await.expect("etcdctl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n", "{}", String::from_utf8_lossy(&out.stderr));
    let r = shoal.post("/v3/kv/range", r#"{"key":"Zw=="}"#).await;
    assert!(r.body.contains(r#""key":"Zw==","#) && r.body.contains(r#""value":"MQ==""#), "{r:?}");
    assert_eq!(shoal.post("/v3/kv/put", r#"{"key":"Zw==","value":"Mg=="}"#).await.status, 200);
    let out = etcdctl(&["get", "g"]).output().await.expect("etcdctl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "g\n2\n");

    // HTTP/2 without TLS (prior knowledge) reaches the gateway too.
    let h2 =
        shoal.request("POST", "/v3/kv/range", Some(r#"{"key":"Zw=="}"#), &["--http2-prior-knowledge"]).await;
    assert_eq!((h2.status, h2.content_type.as_str()), (200, "application/json"), "{h2:?}");
    assert!(h2.body.contains(r#""value":"Mg==""#), "{h2:?}");

    // Browsers are refused (see gateway.rs: etcd's answer would be readable by any web page).
    let refused = shoal
        .request("POST", "/v3/kv/range", Some(r#"{"key":"Zw=="}"#), &["-H", "Origin: http://evil.example"])
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.ends_with(r#""code":7}"#), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_gateway_wants_a_client_certificate_too() {
    if missing("over_tls_the_gateway_wants_a_client_certificate_too") {
        return;
    }
    let p = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key] = p.write_client_files(dir.path());
    let (endpoint, _stop) = start_shoal(Some(server_config(&p))).await;
    let base = format!("https://{endpoint}");
    let with_cert = Curl {
        base: base.clone(),
        extra: vec![
            "--cacert".into(),
            ca.clone(),
            "--cert".into(),
            cert.clone(),
            "--key".into(),
            key.clone(),
        ],
    };
    // HTTP/2 (curl's choice through ALPN) and HTTP/1.1.
    let put = with_cert.post("/v3/kv/put", r#"{"key":"dA==","value":"MQ=="}"#).await;
    assert_eq!(put.status, 200, "{put:?}");
    let get = with_cert.request("POST", "/v3/kv/range", Some(r#"{"key":"dA=="}"#), &["--http1.1"]).await;
    assert!(get.body.contains(r#""value":"MQ==""#), "{get:?}");
    assert_eq!(with_cert.get("/health").await.body, r#"{"health":"true"}"#);
    // gRPC on the same TLS port.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .arg(format!("--cacert={}", ca.clone()))
        .arg(format!("--cert={}", cert.clone()))
        .arg(format!("--key={}", key.clone()))
        .args(["get", "t", "--print-value-only"])
        .output()
        .await
        .expect("etcdctl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "{}", String::from_utf8_lossy(&out.stderr));

    // Without a client certificate the handshake is refused: no HTTP answer at all.
    let without = Curl { base, extra: vec!["--cacert".into(), ca.clone()] };
    for flags in [&[][..], &["--http1.1"][..]] {
        let mut args = flags.to_vec();
        let url = format!("{}/v3/kv/range", without.base);
        args.extend_from_slice(&[
            "-o",
            "-",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            r#"{"key":"dA=="}"#,
            &url,
        ]);
        let (ok, out, err) = without.run(&args).await;
        assert!(!ok, "a client without a certificate got an answer: {out}");
        assert!(!out.contains("MQ=="), "{out} {err}");
        let (ok, out, _) = without
            .run(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{}/health", without.base)])
            .await;
        assert!(!ok && (out.is_empty() || out == "000"), "/health without a certificate: {out}");
    }
}
