//! What the shoal-etcd tests share: a throwaway CA with a server and a client certificate, the
//! server's TLS configuration requiring client certificates, and polling with a deadline.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Pki {
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub server: (rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>),
    /// An admin's client certificate (Shoal identity: CN a name, OU `client`) and its key.
    pub client_pem: (String, String),
    /// A read-only client certificate (OU `client-ro`) and its key.
    pub read_only_pem: (String, String),
    /// A certificate of this CA without a Shoal identity (no OU) and its key.
    pub anonymous_pem: (String, String),
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair, SanType,
    };
    // Distinct names: OpenSSL (curl) takes a leaf whose issuer is its own subject for
    // self-signed.
    let named = |cn: &str| {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = named("shoal-etcd test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_ca_cert_der(ca.der(), ca_key).expect("issuer");
    let server_key = KeyPair::generate().expect("key");
    let mut p = named("shoal-etcd test server");
    p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = p.signed_by(&server_key, &issuer).expect("server cert");
    // Client certificates carry a Shoal identity (CN a name, OU the role): the server refuses
    // others, as Shoal's etcd API does.
    let client = |cn: &str, ou: Option<&str>| {
        let key = KeyPair::generate().expect("key");
        let mut p = named(cn);
        if let Some(ou) = ou {
            p.distinguished_name.push(DnType::OrganizationalUnitName, ou);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).expect("client cert");
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server: (
            server.der().clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
                server_key.serialize_der(),
            )),
        ),
        client_pem: client("etcd-test-client", Some("client")),
        read_only_pem: client("etcd-test-reader", Some("client-ro")),
        anonymous_pem: client("shoal-etcd test client", None),
    }
}

impl Pki {
    /// Writes `ca.pem`, `client.pem` and `client.key` (what etcdctl's and curl's TLS flags
    /// take) into `dir`; their paths, in that order.
    pub fn write_client_files(&self, dir: &std::path::Path) -> [String; 3] {
        self.write_files(dir, &self.client_pem, "client")
    }

    /// Writes `ca.pem`, `NAME.pem` and `NAME.key` for the certificate `pair`; their paths.
    pub fn write_files(&self, dir: &std::path::Path, pair: &(String, String), name: &str) -> [String; 3] {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        let files = [("ca.pem", &self.ca_pem), (cert.as_str(), &pair.0), (key.as_str(), &pair.1)];
        files.map(|(name, pem)| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path.to_string_lossy().into_owned()
        })
    }
}

pub fn server_config(p: &Pki) -> Arc<rustls::ServerConfig> {
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

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
