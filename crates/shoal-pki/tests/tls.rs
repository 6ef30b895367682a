//! Real TLS handshakes over TCP on 127.0.0.1 with tokio-rustls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use shoal_pki::{
    cert_pem_digest, client_config, extract_ca_pem_from_chain, generate_key_and_csr, identity_from_cert,
    pinned_client_config, server_config, Ca, ClientAuth, NodeIdentity, Role, MANAGER_SERVER_NAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound so that a bug cannot hang the test suite; handshakes take milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// A node's key and certificate as it would hold them.
struct Node {
    cert_pem: String,
    key_pem: String,
}

fn node(ca: &Ca, node_id: &str, role: Role) -> Node {
    let (key_pem, csr) = generate_key_and_csr(node_id).expect("key and CSR");
    let cert_pem = ca.issue(&csr, node_id, role, 30 * DAY, SystemTime::now()).expect("issue");
    Node { cert_pem, key_pem }
}

/// What each side saw.
struct Outcome {
    /// Ok(peer chain the client saw) once the client exchanged application data.
    client: Result<Vec<CertificateDer<'static>>, String>,
    /// Ok(identity of the client certificate, if any) once the server exchanged application data.
    server: Result<Option<NodeIdentity>, String>,
}

impl Outcome {
    fn both_ok(&self) -> bool {
        self.client.is_ok() && self.server.is_ok()
    }
}

/// Runs one connection: the client writes "ping", the server answers "pong". Both sides must
/// complete the handshake *and* the exchange for their result to be Ok.
async fn exchange(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"ping" {
            return Err("bad request".to_owned());
        }
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(cert) => Some(identity_from_cert(cert).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(identity)
    });

    let name = ServerName::try_from(server_name.to_owned()).expect("valid server name");
    let connector = TlsConnector::from(client);
    let client_result = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err("bad response".to_owned());
        }
        let chain = tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
        Ok(chain.into_iter().map(CertificateDer::into_owned).collect())
    };
    let client = tokio::time::timeout(DEADLINE, client_result).await.expect("client did not hang");
    let server = tokio::time::timeout(DEADLINE, server_task)
        .await
        .expect("server did not hang")
        .expect("server task did not panic");
    Outcome { client, server }
}

#[tokio::test]
async fn mtls_between_manager_server_and_worker_client() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let manager = node(&ca, "mgr-1", Role::Manager);
    let worker = node(&ca, "wrk-1", Role::Worker);
    let server = server_config(ca.cert_pem(), &manager.cert_pem, &manager.key_pem, ClientAuth::Required)
        .expect("server");
    let client = client_config(ca.cert_pem(), &worker.cert_pem, &worker.key_pem).expect("client");

    let outcome = exchange(server, client, MANAGER_SERVER_NAME).await;
    let chain = outcome.client.expect("client completes");
    assert_eq!(
        outcome.server.expect("server completes"),
        Some(NodeIdentity { node_id: "wrk-1".into(), role: Role::Worker })
    );
    // The server sent [node certificate, CA certificate].
    assert_eq!(chain.len(), 2);
    assert_eq!(
        identity_from_cert(&chain[0]).expect("server identity"),
        NodeIdentity { node_id: "mgr-1".into(), role: Role::Manager }
    );
    assert_eq!(
        chain[1].as_ref(),
        CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA").as_ref()
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let rogue_ca = Ca::generate("cluster-a").expect("rogue CA");
    let manager = node(&ca, "mgr-1", Role::Manager);
    let intruder = node(&rogue_ca, "wrk-1", Role::Worker);
    // The intruder trusts the real CA (so it would accept the server) but its own certificate
    // comes from the rogue CA.
    let client = client_config(ca.cert_pem(), &intruder.cert_pem, &intruder.key_pem).expect("client");

    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let server =
            server_config(ca.cert_pem(), &manager.cert_pem, &manager.key_pem, auth).expect("server config");
        let outcome = exchange(server, client.clone(), MANAGER_SERVER_NAME).await;
        let err = outcome.server.expect_err("server must refuse a foreign client certificate");
        assert!(err.contains("BadSignature") || err.contains("UnknownIssuer"), "{auth:?}: {err}");
        assert!(outcome.client.is_err(), "{auth:?}: client must not complete an exchange");
    }
}

#[tokio::test]
async fn server_from_another_ca_is_refused() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let rogue_ca = Ca::generate("cluster-a").expect("rogue CA");
    let rogue_manager = node(&rogue_ca, "mgr-1", Role::Manager);
    let worker = node(&ca, "wrk-1", Role::Worker);
    let server = server_config(
        rogue_ca.cert_pem(),
        &rogue_manager.cert_pem,
        &rogue_manager.key_pem,
        ClientAuth::Optional,
    )
    .expect("server");
    let client = client_config(ca.cert_pem(), &worker.cert_pem, &worker.key_pem).expect("client");
    let outcome = exchange(server, client, MANAGER_SERVER_NAME).await;
    let err = outcome.client.expect_err("client must refuse a server from another CA");
    assert!(err.contains("BadSignature") || err.contains("UnknownIssuer"), "{err}");
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn worker_certificate_cannot_act_as_manager_server() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let worker_server = node(&ca, "wrk-1", Role::Worker);
    let other_worker = node(&ca, "wrk-2", Role::Worker);
    let server =
        server_config(ca.cert_pem(), &worker_server.cert_pem, &worker_server.key_pem, ClientAuth::Required)
            .expect("server");
    let client = client_config(ca.cert_pem(), &other_worker.cert_pem, &other_worker.key_pem).expect("client");

    let outcome = exchange(server.clone(), client.clone(), MANAGER_SERVER_NAME).await;
    let err = outcome.client.expect_err("a worker certificate must not pass as manager.shoal");
    assert!(err.contains("not valid for name \"manager.shoal\""), "{err}");
    assert!(outcome.server.is_err());

    // The same server is fine under its own node name, so the failure above is about the name.
    let outcome = exchange(server, client, "wrk-1.node.shoal").await;
    assert!(outcome.both_ok(), "client {:?} server {:?}", outcome.client.err(), outcome.server.err());
}

#[tokio::test]
async fn client_without_certificate_required_vs_optional() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let manager = node(&ca, "mgr-1", Role::Manager);
    // A client trusting the CA but presenting no certificate.
    let anonymous = pinned_client_config(&ca.digest()).expect("pinned client");

    let required = server_config(ca.cert_pem(), &manager.cert_pem, &manager.key_pem, ClientAuth::Required)
        .expect("server");
    let outcome = exchange(required, anonymous.clone(), MANAGER_SERVER_NAME).await;
    let err = outcome.server.expect_err("Required server must refuse a client without certificate");
    assert!(err.contains("peer sent no certificates"), "{err}");
    assert!(outcome.client.is_err());

    let optional = server_config(ca.cert_pem(), &manager.cert_pem, &manager.key_pem, ClientAuth::Optional)
        .expect("server");
    let outcome = exchange(optional, anonymous, MANAGER_SERVER_NAME).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client.err());
    assert_eq!(outcome.server.expect("Optional server accepts"), None, "no client identity expected");
}

#[tokio::test]
async fn pinned_client_accepts_only_the_pinned_ca() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let manager = node(&ca, "mgr-1", Role::Manager);
    let server = server_config(ca.cert_pem(), &manager.cert_pem, &manager.key_pem, ClientAuth::Optional)
        .expect("server");

    // Right digest: the handshake succeeds and the CA can be taken from the chain.
    let outcome =
        exchange(server.clone(), pinned_client_config(&ca.digest()).expect("pinned"), MANAGER_SERVER_NAME)
            .await;
    let chain = outcome.client.expect("pinned client with the right digest connects");
    assert!(outcome.server.is_ok());
    let ca_pem = extract_ca_pem_from_chain(&chain).expect("CA in chain");
    assert_eq!(cert_pem_digest(&ca_pem).expect("digest"), ca.digest());
    // The extracted CA is directly usable as the trust root afterwards.
    let worker = node(&ca, "wrk-1", Role::Worker);
    let outcome = exchange(
        server.clone(),
        client_config(&ca_pem, &worker.cert_pem, &worker.key_pem).expect("client"),
        MANAGER_SERVER_NAME,
    )
    .await;
    assert!(outcome.both_ok());

    // Wrong digest: refused, even though everything else is valid.
    let mut wrong = ca.digest();
    let flipped = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(63.., flipped);
    let outcome =
        exchange(server.clone(), pinned_client_config(&wrong).expect("pinned"), MANAGER_SERVER_NAME).await;
    let err = outcome.client.expect_err("wrong digest must be refused");
    assert!(err.contains("does not match the join token"), "{err}");
    assert!(outcome.server.is_err());

    // The digest of another CA: refused as well.
    let other = Ca::generate("cluster-a").expect("CA");
    let outcome =
        exchange(server, pinned_client_config(&other.digest()).expect("pinned"), MANAGER_SERVER_NAME).await;
    assert!(outcome.client.is_err());

    assert!(pinned_client_config("not-a-digest").is_err());
}

#[tokio::test]
async fn pinned_client_refuses_worker_server_even_with_right_digest() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let worker = node(&ca, "wrk-1", Role::Worker);
    let server = server_config(ca.cert_pem(), &worker.cert_pem, &worker.key_pem, ClientAuth::Optional)
        .expect("server");
    // Even when the caller connects with the worker's own name, the pinned verifier insists on
    // manager.shoal.
    let outcome =
        exchange(server, pinned_client_config(&ca.digest()).expect("pinned"), "wrk-1.node.shoal").await;
    let err = outcome.client.expect_err("worker must not be accepted as a join endpoint");
    assert!(err.contains("not valid for name \"manager.shoal\""), "{err}");
}

#[tokio::test]
async fn pinned_client_refuses_a_server_signed_by_another_ca_that_sends_the_pinned_ca() {
    // An attacker who knows the (public) CA certificate appends it to a chain whose leaf was
    // signed by a different CA: the digest matches, but the leaf does not verify under it.
    let ca = Ca::generate("cluster-a").expect("CA");
    let rogue = Ca::generate("cluster-a").expect("rogue CA");
    let fake_manager = node(&rogue, "mgr-1", Role::Manager);
    // server_config sends [leaf, ca_pem]: give it the real CA as "chain" while the leaf is rogue.
    let server =
        server_config(ca.cert_pem(), &fake_manager.cert_pem, &fake_manager.key_pem, ClientAuth::Optional)
            .expect("server");
    let outcome =
        exchange(server, pinned_client_config(&ca.digest()).expect("pinned"), MANAGER_SERVER_NAME).await;
    let err = outcome.client.expect_err("rogue leaf must be refused");
    assert!(err.contains("UnknownIssuer") || err.contains("BadSignature"), "{err}");
}

#[test]
fn configs_reject_bad_inputs() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let manager = node(&ca, "mgr-1", Role::Manager);
    let other = node(&ca, "mgr-2", Role::Manager);
    assert!(server_config("junk", &manager.cert_pem, &manager.key_pem, ClientAuth::Required).is_err());
    assert!(server_config(ca.cert_pem(), "junk", &manager.key_pem, ClientAuth::Required).is_err());
    assert!(server_config(ca.cert_pem(), &manager.cert_pem, "junk", ClientAuth::Required).is_err());
    // Key of a different node.
    assert!(server_config(ca.cert_pem(), &manager.cert_pem, &other.key_pem, ClientAuth::Required).is_err());
    assert!(client_config(ca.cert_pem(), &manager.cert_pem, &other.key_pem).is_err());
    assert!(extract_ca_pem_from_chain(&[]).is_err());
    // Error messages do not contain key material.
    let err = server_config(
        ca.cert_pem(),
        &manager.cert_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
        ClientAuth::Required,
    )
    .expect_err("bad key");
    assert!(!err.to_string().contains("AAAA"));
}

#[tokio::test]
async fn client_certificate_authenticates_but_cannot_serve() {
    let ca = Ca::generate("cluster-a").expect("CA");
    let manager = node(&ca, "mgr-1", Role::Manager);
    let alice = node(&ca, "alice", Role::Client);
    let server = server_config(ca.cert_pem(), &manager.cert_pem, &manager.key_pem, ClientAuth::Required)
        .expect("server");
    let client = client_config(ca.cert_pem(), &alice.cert_pem, &alice.key_pem).expect("client");
    let outcome = exchange(server, client.clone(), MANAGER_SERVER_NAME).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client.err());
    assert_eq!(
        outcome.server.expect("server completes"),
        Some(NodeIdentity { node_id: "alice".into(), role: Role::Client })
    );

    // A client certificate cannot pose as a manager (nor as any server).
    let rogue =
        server_config(ca.cert_pem(), &alice.cert_pem, &alice.key_pem, ClientAuth::Required).expect("server");
    let outcome = exchange(rogue, client, MANAGER_SERVER_NAME).await;
    assert!(outcome.client.is_err());
}
