//! TLS: ALPN h2, client certificates required, driven by the real etcdctl with
//! `--cacert/--cert/--key` (skipped without etcdctl unless `SHOAL_REQUIRE_RUNTIMES=1`).

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shoal_etcd::{EtcdServer, MemoryBackend};
use std::sync::Arc;
use std::time::Duration;

struct Pki {
    ca_pem: String,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client_pem: (String, String),
    ca_der: CertificateDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_ca_cert_der(ca.der(), ca_key).expect("issuer");

    let server_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = p.signed_by(&server_key, &issuer).expect("server cert");

    let client_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::default();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = p.signed_by(&client_key, &issuer).expect("client cert");

    Pki {
        ca_pem: ca.pem(),
        server: (
            server.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        ),
        client_pem: (client.pem(), client_key.serialize_pem()),
        ca_der: ca.der().clone(),
    }
}

fn server_config(p: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca_der.clone()).expect("root");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .expect("verifier");
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![p.server.0.clone()], p.server.1.clone_key())
        .expect("server config");
    Arc::new(cfg)
}

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
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), &p.ca_pem).expect("write");
    std::fs::write(path("client.pem"), &p.client_pem.0).expect("write");
    std::fs::write(path("client.key"), &p.client_pem.1).expect("write");

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
            format!("--cacert={}", path("ca.pem")),
            format!("--cert={}", path("client.pem")),
            format!("--key={}", path("client.key")),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    assert_eq!(run(tls(&["put", "k", "v"])).await, (true, "OK\n".to_string()));
    assert_eq!(run(tls(&["get", "k"])).await, (true, "k\nv\n".to_string()));
    let (ok, status) = run(tls(&["endpoint", "status"])).await;
    assert!(ok && status.contains(", 3.4.0, "), "{status}");
    // Without a client certificate the handshake is refused.
    let (ok, _) = run(vec![format!("--cacert={}", path("ca.pem")), "get".into(), "k".into()]).await;
    assert!(!ok, "a client without a certificate must be refused");
}
