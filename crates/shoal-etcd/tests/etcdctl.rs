//! The real `etcdctl` (Debian's etcd-client 3.4) against the gRPC layer over the in-memory
//! backend: every command Shoal documents, with its printed output.
//!
//! Needs `etcdctl` on the PATH (`apt-get install etcd-client`, scripts/install-deps.sh); the
//! tests are skipped without it, unless `SHOAL_REQUIRE_RUNTIMES=1`.
//!
//! Endpoints are given as `127.0.0.1:PORT` without a scheme: etcdctl 3.4 sends an invalid
//! `:authority` for `http://…` on its maintenance calls (design note §1.3).

mod support;

use shoal_etcd::{EtcdServer, MemoryBackend};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use support::eventually;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

fn etcdctl_missing(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcdctl").is_file()));
    if found {
        return false;
    }
    assert!(
        !std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1"),
        "SHOAL_REQUIRE_RUNTIMES=1 but etcdctl is not installed"
    );
    eprintln!("skipping {test}: etcdctl is not installed (apt-get install etcd-client)");
    true
}

struct Cluster {
    endpoint: String,
    backend: Arc<MemoryBackend>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Cluster {
    start_with(Duration::from_secs(600)).await
}

async fn start_with(progress: Duration) -> Cluster {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    let backend = MemoryBackend::new();
    backend.set_client_urls(vec![format!("http://{endpoint}")]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = EtcdServer::new(backend.clone()).progress_interval(progress);
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Cluster { endpoint, backend, _stop: stop }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cluster {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut c = self.cmd(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("spawn etcdctl");
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("stdin");
            w.write_all(input.as_bytes()).await.expect("write stdin");
            drop(w);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("etcdctl finished in time")
            .expect("etcdctl output");
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, None).await;
        assert!(o.ok, "etcdctl {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    async fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args, None).await;
        assert!(!o.ok, "etcdctl {args:?} should fail: {}", o.stdout);
        o.stderr
    }

    fn revision(&self) -> i64 {
        use shoal_etcd::EtcdBackend;
        self.backend.header().revision
    }
}

/// A running `etcdctl watch`, read line by line with a deadline.
struct Watch {
    _child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Watch {
    fn spawn(c: &Cluster, args: &[&str]) -> Watch {
        let mut child = c.cmd(args).spawn().expect("spawn etcdctl watch");
        let stdout = child.stdout.take().expect("stdout");
        Watch { _child: child, lines: BufReader::new(stdout).lines() }
    }

    async fn next_lines(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("watch output in time (got {out:?})"))
                .expect("read watch output");
            match line {
                Some(l) => out.push(l),
                None => panic!("watch ended early after {out:?}"),
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_del() {
    if etcdctl_missing("put_get_del") {
        return;
    }
    let c = start().await;
    let r0 = c.revision();
    assert_eq!(c.ok(&["put", "foo", "bar"]).await, "OK\n");
    assert_eq!(c.ok(&["get", "foo"]).await, "foo\nbar\n");
    assert_eq!(c.ok(&["put", "--prev-kv", "foo", "baz"]).await, "OK\nfoo\nbar\n");
    for (k, v) in [("p/c", "3"), ("p/a", "1"), ("p/b", "2"), ("q", "x")] {
        assert_eq!(c.ok(&["put", k, v]).await, "OK\n");
    }
    assert_eq!(c.ok(&["get", "--prefix", "p/"]).await, "p/a\n1\np/b\n2\np/c\n3\n");
    assert_eq!(c.ok(&["get", "--prefix", "p/", "--limit=2"]).await, "p/a\n1\np/b\n2\n");
    assert_eq!(
        c.ok(&["get", "--prefix", "p/", "--sort-by=VALUE", "--order=DESCEND"]).await,
        "p/c\n3\np/b\n2\np/a\n1\n"
    );
    assert_eq!(c.ok(&["get", "--prefix", "p/", "--keys-only"]).await, "p/a\n\np/b\n\np/c\n\n");
    assert_eq!(c.ok(&["get", "--from-key", "p/b"]).await, "p/b\n2\np/c\n3\nq\nx\n");
    assert_eq!(c.ok(&["get", "--print-value-only", "foo"]).await, "baz\n");
    // At the revision of the first put, foo was "bar".
    assert_eq!(c.ok(&["get", "foo", &format!("--rev={}", r0 + 1)]).await, "foo\nbar\n");
    assert_eq!(c.ok(&["get", "foo", "--consistency=s"]).await, "foo\nbaz\n");
    // JSON output carries the header and the revisions.
    let json = c.ok(&["get", "foo", "-w", "json"]).await;
    assert!(json.contains(&format!("\"cluster_id\":{},", shoal_etcd::memory::MEMORY_CLUSTER_ID)), "{json}");
    assert!(json.contains(&format!("\"mod_revision\":{}", r0 + 2)), "{json}");
    assert!(json.contains("\"count\":1"), "{json}");
    assert_eq!(c.ok(&["get", "missing"]).await, "");
    assert_eq!(c.ok(&["del", "foo"]).await, "1\n");
    assert_eq!(c.ok(&["del", "foo"]).await, "0\n");
    assert_eq!(c.ok(&["del", "--prefix", "--prev-kv", "p/"]).await, "3\np/a\n1\np/b\n2\np/c\n3\n");
    assert_eq!(c.ok(&["get", "--prefix", "p/"]).await, "");
    let future = format!("--rev={}", c.revision() + 10);
    let err = c.fails(&["get", "q", &future]).await;
    assert!(err.contains("etcdserver: mvcc: required revision is a future revision"), "{err}");
    let err = c.fails(&["put", "nokey", "--ignore-value"]).await;
    assert!(err.contains("etcdserver: key not found"), "{err}");
    assert_eq!(c.ok(&["put", "q", "--ignore-value"]).await, "OK\n");
    assert_eq!(c.ok(&["get", "q"]).await, "q\nx\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_interactive() {
    if etcdctl_missing("txn_interactive") {
        return;
    }
    let c = start().await;
    c.ok(&["put", "user1", "bad"]).await;
    let o = c
        .run(
            &["txn", "-i"],
            Some("value(\"user1\") = \"bad\"\n\ndel user1\nput user2 good\n\nput user3 fail\n\n"),
        )
        .await;
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    // `-i` prompts for each section on stdout.
    const PROMPTS: &str = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";
    assert_eq!(o.stdout, format!("{PROMPTS}SUCCESS\n\n1\n\nOK\n"));
    assert_eq!(c.ok(&["get", "--prefix", "user"]).await, "user2\ngood\n");
    let rev = c.revision();
    // A false compare runs the failure branch; mod(), version() and create() compares.
    let input = format!(
        "mod(\"user2\") > \"{rev}\"\nversion(\"user2\") = \"1\"\n\nput x 1\n\nget user2\nput user3 f\n\n"
    );
    let o = c.run(&["txn", "-i"], Some(&input)).await;
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout, format!("{PROMPTS}FAILURE\n\nuser2\ngood\n\nOK\n"));
    let o = c.run(&["txn", "-i"], Some("create(\"nokey\") = \"0\"\n\nput a 1\nput a 2\n\n\n")).await;
    assert!(!o.ok);
    assert!(o.stderr.contains("etcdserver: duplicate key given in txn request"), "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prefix_rev_prev_kv() {
    if etcdctl_missing("watch_prefix_rev_prev_kv") {
        return;
    }
    let c = start().await;
    let r0 = c.revision();
    c.ok(&["put", "w/a", "1"]).await;
    c.ok(&["put", "w/a", "2"]).await;
    // From a past revision, with prev_kv: the replay first.
    let mut w = Watch::spawn(&c, &["watch", "--prefix", "w/", &format!("--rev={}", r0 + 1), "--prev-kv"]);
    assert_eq!(w.next_lines(8).await, ["PUT", "w/a", "1", "PUT", "w/a", "1", "w/a", "2"]);
    // Live events, read while we write: a put and a delete (with its prev_kv).
    c.ok(&["put", "w/b", "x"]).await;
    assert_eq!(w.next_lines(3).await, ["PUT", "w/b", "x"]);
    c.ok(&["put", "other", "y"]).await;
    c.ok(&["del", "w/a"]).await;
    assert_eq!(w.next_lines(4).await, ["DELETE", "w/a", "2", "w/a"]);
    // The delete's kv has an empty value: etcdctl prints an empty line for it.
    assert_eq!(w.next_lines(1).await, [""]);

    // A watch from "now" on one key: once it is registered, the next put shows up.
    let mut now = Watch::spawn(&c, &["watch", "solo"]);
    eventually(20, "the second watch to register", || async { (c.backend.watch_count() == 2).then_some(()) })
        .await;
    c.ok(&["put", "solo", "1"]).await;
    assert_eq!(now.next_lines(3).await, ["PUT", "solo", "1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases() {
    if etcdctl_missing("leases") {
        return;
    }
    let c = start().await;
    assert_eq!(c.ok(&["lease", "grant", "100"]).await, "lease 0000000000000001 granted with TTL(100s)\n");
    assert_eq!(c.ok(&["put", "--lease=1", "lk", "v"]).await, "OK\n");
    assert_eq!(
        c.ok(&["lease", "keep-alive", "--once", "1"]).await,
        "lease 0000000000000001 keepalived with TTL(100)\n"
    );
    let ttl = c.ok(&["lease", "timetolive", "--keys", "1"]).await;
    assert!(
        ttl.starts_with("lease 0000000000000001 granted with TTL(100s), remaining(")
            && ttl.ends_with("s), attached keys([lk])\n"),
        "{ttl}"
    );
    assert_eq!(c.ok(&["lease", "timetolive", "77"]).await, "lease 0000000000000077 already expired\n");
    assert_eq!(c.ok(&["lease", "grant", "1"]).await, "lease 0000000000000002 granted with TTL(2s)\n");
    assert_eq!(c.ok(&["lease", "list"]).await, "found 2 leases\n0000000000000001\n0000000000000002\n");
    assert_eq!(c.ok(&["lease", "revoke", "1"]).await, "lease 0000000000000001 revoked\n");
    assert_eq!(c.ok(&["get", "lk"]).await, "");
    let err = c.fails(&["lease", "revoke", "1"]).await;
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");
    let err = c.fails(&["put", "--lease=1", "lk", "v"]).await;
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");
    // Lease 2 (TTL 2 s) expires by itself; its key goes with it.
    c.ok(&["put", "--lease=2", "short", "v"]).await;
    eventually(10, "lease 2 to expire", || async {
        (c.ok(&["lease", "list"]).await == "found 0 leases\n").then_some(())
    })
    .await;
    assert_eq!(c.ok(&["get", "short"]).await, "");
    // Keep-alive of an unknown lease: the server answers TTL 0 (stream open), which
    // clientv3 turns into "lease not found".
    let err = c.fails(&["lease", "keep-alive", "--once", "2"]).await;
    assert!(err.contains("etcdserver: requested lease not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance() {
    if etcdctl_missing("cluster_and_maintenance") {
        return;
    }
    let c = start().await;
    let id = format!("{:x}", shoal_etcd::memory::MEMORY_MEMBER_ID);
    assert_eq!(
        c.ok(&["member", "list"]).await,
        format!("{id}, started, shoal-memory, , http://{}, false\n", c.endpoint)
    );
    c.ok(&["put", "a", "1"]).await;
    let status = c.ok(&["endpoint", "status"]).await;
    assert!(status.starts_with(&format!("{}, {id}, 3.4.0, ", c.endpoint)), "{status}");
    assert!(status.contains(", true, false, 1, 2, 2, \n"), "{status}");
    // etcdctl 3.4 prints the health line on stderr.
    let o = c.run(&["endpoint", "health"], None).await;
    assert!(o.ok, "{}", o.stderr);
    let health = o.stderr;
    assert!(
        health.starts_with(&format!("{} is healthy: successfully committed proposal", c.endpoint)),
        "{health}"
    );
    assert!(c.ok(&["alarm", "list"]).await.is_empty());
    assert_eq!(c.ok(&["defrag"]).await, format!("Finished defragmenting etcd member[{}]\n", c.endpoint));
    let err = c.fails(&["member", "remove", &id]).await;
    assert!(err.contains("shoal node promote"), "{err}");
    let err = c.fails(&["endpoint", "hashkv"]).await;
    assert!(err.contains("HashKV is not supported"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction() {
    if etcdctl_missing("compaction") {
        return;
    }
    let c = start().await;
    for v in ["1", "2", "3", "4"] {
        c.ok(&["put", "k", v]).await;
    }
    let rev = c.revision();
    assert_eq!(
        c.ok(&["compaction", &(rev - 1).to_string()]).await,
        format!("compacted revision {}\n", rev - 1)
    );
    let err = c.fails(&["get", "k", &format!("--rev={}", rev - 2)]).await;
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    assert_eq!(c.ok(&["get", "k", &format!("--rev={}", rev - 1)]).await, "k\n3\n");
    let err = c.fails(&["compaction", &(rev - 1).to_string()]).await;
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    assert_eq!(
        c.ok(&["compaction", "--physical", &rev.to_string()]).await,
        format!("compacted revision {rev}\n")
    );
    // A watch from a compacted revision is canceled with the compaction revision.
    let o = c.run(&["watch", "k", &format!("--rev={}", rev - 2)], None).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("watch was canceled (etcdserver: mvcc: required revision has been compacted)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("Error: watch is canceled by the server"), "{}", o.stderr);
}
