//! TLS: ALPN h2, client certificates required, driven by the real etcdctl with
//! `--cacert/--cert/--key` (skipped without etcdctl unless `SHOAL_REQUIRE_RUNTIMES=1`).

mod support;

use shoal_etcd::{EtcdServer, MemoryBackend};
use std::time::Duration;
use support::{pki, server_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_over_mutual_tls() {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcdctl").is_file()));
    if !found {
        assert!(
            !std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1"),
            "SHOAL_REQUIRE_RUNTIMES=1 but etcdctl is not installed"
        );
        eprintln!("skipping etcdctl_over_mutual_tls: etcdctl is not installed");
        return;
    }
    let p = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key] = p.write_client_files(dir.path());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = EtcdServer::new(MemoryBackend::new()).tls(Some(server_config(&p)));
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let run = |args: Vec<String>| {
        let endpoint = endpoint.clone();
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(30),
                tokio::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoint}"))
                    .args(["--dial-timeout=3s", "--command-timeout=5s"])
                    .args(args)
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("in time")
            .expect("etcdctl");
            (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let tls = |rest: &[&str]| {
        let mut v = vec![
            format!("--cacert={}", ca.clone()),
            format!("--cert={}", cert.clone()),
            format!("--key={}", key.clone()),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    assert_eq!(run(tls(&["put", "k", "v"])).await, (true, "OK\n".to_string()));
    assert_eq!(run(tls(&["get", "k"])).await, (true, "k\nv\n".to_string()));
    let (ok, status) = run(tls(&["endpoint", "status"])).await;
    assert!(ok && status.contains(", 3.4.0, "), "{status}");
    // Without a client certificate the handshake is refused.
    let (ok, _) = run(vec![format!("--cacert={}", ca.clone()), "get".into(), "k".into()]).await;
    assert!(!ok, "a client without a certificate must be refused");
}

/// Client roles over TLS: a read-only certificate ranges and watches through gRPC and the
/// gateway and is refused every write with PermissionDenied (the gateway: 403); a certificate
/// of the CA without a Shoal identity is refused everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_certificates_read_and_nothing_more() {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcdctl").is_file()));
    if !found {
        assert!(
            !std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1"),
            "SHOAL_REQUIRE_RUNTIMES=1 but etcdctl is not installed"
        );
        eprintln!("skipping read_only_certificates_read_and_nothing_more: etcdctl is not installed");
        return;
    }
    let p = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = p.write_files(dir.path(), &p.client_pem, "admin");
    let reader = p.write_files(dir.path(), &p.read_only_pem, "reader");
    let anonymous = p.write_files(dir.path(), &p.anonymous_pem, "anonymous");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = EtcdServer::new(MemoryBackend::new()).tls(Some(server_config(&p)));
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let etcdctl = |files: &[String; 3], args: &[&str]| {
        let mut c = tokio::process::Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["--dial-timeout=3s", "--command-timeout=5s"])
            .arg(format!("--cacert={}", files[0]))
            .arg(format!("--cert={}", files[1]))
            .arg(format!("--key={}", files[2]))
            .args(args)
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(30), c.output())
                .await
                .expect("in time")
                .expect("etcdctl");
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        }
    };
    assert_eq!(etcdctl(&admin, &["put", "k", "v"]).await, (true, "OK\n".to_string()));
    let (ok, out) = etcdctl(&reader, &["get", "k", "--print-value-only"]).await;
    assert!(ok && out == "v\n", "{out}");
    let (ok, out) = etcdctl(&reader, &["endpoint", "status"]).await;
    assert!(ok, "{out}");
    let (ok, out) = etcdctl(&reader, &["member", "list"]).await;
    assert!(ok, "{out}");
    for args in
        [&["put", "k", "w"][..], &["del", "k"], &["lease", "grant", "10"], &["compaction", "1"], &["defrag"]]
    {
        let (ok, out) = etcdctl(&reader, args).await;
        assert!(!ok && out.contains("read-only certificate"), "read-only {args:?}: {out}");
    }
    // A transaction that only reads passes; one that writes does not.
    let txn = |files: &[String; 3], body: &'static str| {
        let mut c = tokio::process::Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(["--dial-timeout=3s", "--command-timeout=5s"])
            .arg(format!("--cacert={}", files[0]))
            .arg(format!("--cert={}", files[1]))
            .arg(format!("--key={}", files[2]))
            .arg("txn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = c.spawn().expect("etcdctl txn");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(body.as_bytes()).await.expect("write");
            drop(stdin);
            let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
                .await
                .expect("in time")
                .expect("etcdctl");
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        }
    };
    // etcdctl's interactive txn: compares, blank line, success ops, blank line, failure ops.
    let (ok, out) = txn(&reader, "\nget k\n\n\n").await;
    assert!(ok && out.contains("SUCCESS") && out.contains('v'), "{out}");
    let (ok, out) = txn(&reader, "\nput k w\n\n\n").await;
    assert!(!ok && out.contains("read-only certificate"), "{out}");
    assert_eq!(etcdctl(&admin, &["get", "k", "--print-value-only"]).await, (true, "v\n".to_string()));

    // A certificate of the CA that names no Shoal role: nothing at all.
    let (ok, out) = etcdctl(&anonymous, &["get", "k"]).await;
    assert!(!ok && out.contains("client certificate"), "{out}");
}
