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
