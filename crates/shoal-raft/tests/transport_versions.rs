//! The Raft client against a peer of an older version: one that lists no ALPN protocol and
//! speaks HTTP/1.1 only (as Shoal did before Raft moved to HTTP/2). A rolling upgrade has such
//! peers for a while; the client must fall back to HTTP/1.1 and keep working.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use shoal_pki::{client_config, generate_key_and_csr, server_config, Ca, ClientAuth, Role};
use shoal_raft::openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use shoal_raft::openraft::raft::VoteRequest;
use shoal_raft::openraft::Vote;
use shoal_raft::transport::{raft_router, TlsNetwork};
use shoal_raft::{ManagerNode, NodeConfig, RaftNode};
use tokio::net::TcpListener;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[tokio::test]
async fn the_raft_client_falls_back_to_http1_with_an_older_peer() {
    let ca = Ca::generate("cluster-v").expect("CA");
    let issue = |node_id: &str| {
        let (key, csr) = generate_key_and_csr(node_id).expect("key and CSR");
        (ca.issue(&csr, node_id, Role::Manager, DAY, SystemTime::now()).expect("issue"), key)
    };
    let (cert1, key1) = issue("mgr-1");
    let (cert2, key2) = issue("mgr-2");

    // The "older" peer: its Raft router behind a TLS server without ALPN, HTTP/1.1 only.
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let me = ManagerNode { addr: addr.to_string(), node_id: "mgr-1".into() };
    let network = TlsNetwork::new(client_config(ca.cert_pem(), &cert1, &key1).expect("client config"));
    let node = Arc::new(
        RaftNode::start(NodeConfig::new(dir.path().join("raft"), 1, me.clone()), network)
            .await
            .expect("start"),
    );
    let tls = server_config(ca.cert_pem(), &cert1, &key1, ClientAuth::Required).expect("server config");
    assert!(tls.alpn_protocols.is_empty());
    let router = raft_router(node.clone());
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let (acceptor, router) = (tokio_rustls::TlsAcceptor::from(tls.clone()), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    // A new member's client asks it for a vote, twice (the second on the pooled connection).
    let mut net = TlsNetwork::new(client_config(ca.cert_pem(), &cert2, &key2).expect("client config"));
    let mut peer = net.new_client(1, &me).await;
    for term in [5, 6] {
        let req = VoteRequest::new(Vote::new(term, 2), None);
        let resp = peer.vote(req, RPCOption::new(Duration::from_secs(5))).await.expect("vote over HTTP/1.1");
        assert!(resp.vote_granted, "an empty log votes for a higher term: {resp:?}");
        assert_eq!(resp.vote.leader_id().term, term);
    }
    server.abort();
    node.shutdown().await;
}
