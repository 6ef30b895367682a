//! Three managers in one process, each with its own store and its own TLS listener on
//! 127.0.0.1: real TCP, real mTLS (certificates from the cluster CA), the Raft transport from
//! `shoal_raft::transport`. Covers membership changes, replication by log and by snapshot,
//! leader failover and who may call the Raft endpoints.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use shoal_pki::{
    client_config, generate_key_and_csr, pinned_client_config, server_config, Ca, ClientAuth, Role,
    MANAGER_SERVER_NAME,
};
use shoal_raft::openraft;
use shoal_raft::transport::{
    handle_raft_rpc, raft_router, serve_tls, RpcError, TlsNetwork, ENTRY_FORMAT_HEADER,
};
use shoal_raft::{Consistency, ManagerNode, NodeConfig, RaftId, RaftNode};
use shoal_state::Command;
use shoal_types::{Service, ServiceId, ServiceSpec};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound for anything that should take well under a second.
const DEADLINE: Duration = Duration::from_secs(15);
/// What "a new leader within a few seconds" means (election timeouts are 400–800 ms).
const FAILOVER_DEADLINE: Duration = Duration::from_secs(5);

/// The managers the servers accept; a manager certificate for anyone else gets 403.
const MEMBERS: [&str; 4] = ["mgr-1", "mgr-2", "mgr-3", "mgr-4"];

fn issue(ca: &Ca, node_id: &str, role: Role) -> (String, String) {
    let (key_pem, csr) = generate_key_and_csr(node_id).expect("key and CSR");
    let cert_pem = ca.issue(&csr, node_id, role, 30 * DAY, SystemTime::now()).expect("issue");
    (cert_pem, key_pem)
}

struct Member {
    id: RaftId,
    me: ManagerNode,
    addr: SocketAddr,
    node: Arc<RaftNode>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

async fn start_member(ca: &Ca, id: RaftId) -> Member {
    start_member_as(ca, id, false).await
}

/// Answers as a binary from before batched entries: without the entry-format header.
async fn as_older_binary(mut r: axum::response::Response) -> axum::response::Response {
    r.headers_mut().remove(ENTRY_FORMAT_HEADER);
    r
}

/// `older`: the member's Raft answers leave out the entry-format header, as an older binary's.
async fn start_member_as(ca: &Ca, id: RaftId, older: bool) -> Member {
    let node_id = format!("mgr-{id}");
    let (cert, key) = issue(ca, &node_id, Role::Manager);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let me = ManagerNode { addr: addr.to_string(), node_id };
    let cfg = NodeConfig::new(dir.path().join("raft"), id, me.clone());
    let network =
        TlsNetwork::new(client_config(ca.cert_pem(), &cert, &key).expect("client config")).with_local_id(id);
    let node = Arc::new(RaftNode::start(cfg, network).await.expect("start raft"));
    // Optional client auth, as the real listener (it also serves the join endpoint): the raft
    // routes must then refuse clients without a certificate themselves.
    let tls = server_config(ca.cert_pem(), &cert, &key, ClientAuth::Optional).expect("server config");
    let members: Arc<BTreeSet<String>> = Arc::new(MEMBERS.iter().map(|m| m.to_string()).collect());
    let authorize = move |peer: &shoal_pki::NodeIdentity, _path: &str| members.contains(&peer.node_id);
    let mut router = raft_router(node.clone());
    if older {
        router = router.layer(axum::middleware::map_response(as_older_binary));
    }
    let server = tokio::spawn(serve_tls(listener, tls, router, authorize));
    Member { id, me, addr, node, server, _dir: dir }
}

fn create(name: &str) -> Command {
    let mut spec = ServiceSpec { name: name.into(), ..Default::default() };
    spec.task_template.command = vec!["sleep".into()];
    let service = Service::new(ServiceId::new(format!("id-{name}")), spec);
    Command::CreateService { service: Box::new(service) }
}

fn has_service(node: &RaftNode, name: &str) -> bool {
    node.local_state().state.service_by_name(name).is_some()
}

/// Polls `f` until it holds; panics after `timeout`. Returns how long it took.
async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One POST over a fresh TLS connection with `client`; returns status and body.
async fn post(client: Arc<rustls::ClientConfig>, addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(MANAGER_SERVER_NAME).expect("server name");
    let tls = TlsConnector::from(client).connect(name, tcp).await.expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("HTTP");
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(HOST, MANAGER_SERVER_NAME)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The same over HTTP/2, as a peer's Raft client sends it: the connection must negotiate the
/// Raft ALPN protocol (it is then served on Raft's own runtime).
async fn post_h2(
    client: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut config = (*client).clone();
    config.alpn_protocols = vec![shoal_raft::runtime::RAFT_ALPN.to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(MANAGER_SERVER_NAME).expect("server name");
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(shoal_raft::runtime::RAFT_ALPN), "Raft's ALPN protocol");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("HTTP/2");
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("https://{addr}{path}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The body of a well-formed vote request (a peer would otherwise answer 400, not 403).
const VOTE: &str = r#"{"vote":{"leader_id":{"term":99,"node_id":9},"committed":false},"last_log_id":null}"#;

/// Sends `names` as concurrent creates to `node`; returns each answer (in `names` order) and
/// how many log entries they took.
async fn concurrent_creates(node: &Arc<RaftNode>, names: &[String]) -> (Vec<Result<u64, String>>, u64) {
    let before = node.status().last_log_index.unwrap_or(0);
    let writes: Vec<_> = names
        .iter()
        .map(|name| {
            let (node, command) = (node.clone(), create(name));
            tokio::spawn(async move { node.write(command).await.map(|r| r.index).map_err(|e| e.to_string()) })
        })
        .collect();
    let mut answers = Vec::new();
    for w in writes {
        answers.push(w.await.expect("write task"));
    }
    let after = node.status().last_log_index.unwrap_or(0);
    (answers, after - before)
}

/// Group commit: concurrent writes share entries, each still applied and answered on its own,
/// on one manager and on three; never while a member may be an older binary that cannot read
/// a batched entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_writes_share_entries_unless_a_member_is_older() {
    let ca = Ca::generate("cluster-b").expect("CA");
    let m1 = start_member(&ca, 1).await;
    m1.node.initialize().await.expect("initialize");
    assert_eq!(m1.node.wait_for_leader(DEADLINE).await, Some(1));
    let names = |prefix: &str| (0..200).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();

    // One manager: 200 writes in far fewer entries. A duplicate name among them is refused
    // alone; every other write is applied, with its own state index.
    let mut alone = names("alone");
    alone[100] = "alone-7".into();
    let (answers, entries) = concurrent_creates(&m1.node, &alone).await;
    assert!(entries < 100, "200 concurrent writes took {entries} entries");
    let refused: Vec<_> = answers.iter().enumerate().filter(|(_, a)| a.is_err()).map(|(i, _)| i).collect();
    assert!(refused == [7] || refused == [100], "exactly one of the two alone-7 is refused: {answers:?}");
    let indexes: BTreeSet<u64> = answers.iter().filter_map(|a| a.as_ref().ok().copied()).collect();
    assert_eq!(indexes.len(), 199, "each applied write has its own state index");
    assert_eq!(m1.node.local_state().state.services().count(), 199);
    // What the control loops write (here: node states) keeps one entry per write, refused or not.
    let before = m1.node.status().last_log_index.unwrap_or(0);
    let states: Vec<_> = (0..50)
        .map(|i| {
            let node = m1.node.clone();
            let command = Command::SetNodeStatus {
                id: shoal_types::NodeId::new(format!("no-such-node-{i}")),
                state: shoal_types::NodeState::Down,
                message: String::new(),
            };
            tokio::spawn(async move { node.write(command).await.is_err() })
        })
        .collect();
    for s in states {
        assert!(s.await.expect("write task"), "a state for an unknown node is refused");
    }
    let entries = m1.node.status().last_log_index.unwrap_or(0) - before;
    assert!(entries >= 50, "50 node states took only {entries} entries");

    // An older member (it does not say it reads batches): one entry per write.
    let m2 = start_member(&ca, 2).await;
    let m3 = start_member_as(&ca, 3, true).await;
    for m in [&m2, &m3] {
        m1.node.add_learner(m.id, m.me.clone()).await.expect("add learner");
    }
    m1.node.change_voters(BTreeSet::from([1, 2, 3])).await.expect("change voters");
    let (answers, entries) = concurrent_creates(&m1.node, &names("mixed")).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert!(entries >= 200, "with an older member, 200 writes took only {entries} entries");

    // Once the older member is removed, the two current members batch again, and every write
    // reaches the follower.
    m1.node.change_voters(BTreeSet::from([1, 2])).await.expect("remove the older member");
    let (answers, entries) = concurrent_creates(&m1.node, &names("pair")).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert!(entries < 100, "200 concurrent writes took {entries} entries");
    eventually("every write on the follower", DEADLINE, || {
        m2.node.local_state().state.services().count() == 599
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_managers_replicate_fail_over_and_refuse_strangers() {
    let started = Instant::now();
    let ca = Ca::generate("cluster-a").expect("CA");
    let mut members = Vec::new();
    for id in 1..=3 {
        members.push(start_member(&ca, id).await);
    }

    // Node 1 bootstraps, then takes 2 and 3 in as learners and makes them voters.
    let m1 = &members[0];
    m1.node.initialize().await.expect("initialize");
    assert_eq!(m1.node.wait_for_leader(DEADLINE).await, Some(1));
    for m in &members[1..] {
        m1.node.add_learner(m.id, m.me.clone()).await.expect("add learner");
    }
    assert_eq!(m1.node.status().learners.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    m1.node.change_voters(BTreeSet::from([1, 2, 3])).await.expect("change voters");
    let status = m1.node.status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(status.learners.is_empty());

    // A write on the leader reaches every replica.
    m1.node.write(create("web")).await.expect("first write");
    eventually("first write on all replicas", DEADLINE, || {
        members.iter().all(|m| has_service(&m.node, "web"))
    })
    .await;
    // Followers know the leader and its address.
    for m in &members[1..] {
        let s = m.node.status();
        assert_eq!(s.leader, Some(1));
        assert_eq!(s.leader_node.as_ref(), Some(&m1.me));
    }

    // A fourth manager joins as a learner after the leader compacted its log: it can only catch
    // up through a snapshot (the `snapshot` RPC).
    let raft1 = m1.node.raft();
    let applied = m1.node.status().last_applied.expect("applied");
    raft1.trigger().snapshot().await.expect("trigger snapshot");
    eventually("snapshot built", DEADLINE, || {
        raft1.metrics().borrow().snapshot.is_some_and(|s| s.index >= applied)
    })
    .await;
    raft1.trigger().purge_log(applied).await.expect("trigger purge");
    eventually("log purged", DEADLINE, || {
        raft1.metrics().borrow().purged.is_some_and(|p| p.index >= applied)
    })
    .await;
    let m4 = start_member(&ca, 4).await;
    m1.node.add_learner(m4.id, m4.me.clone()).await.expect("add learner 4");
    assert!(has_service(&m4.node, "web"), "learner 4 got the state from the snapshot");
    assert!(m4.node.raft().metrics().borrow().snapshot.is_some(), "learner 4 installed a snapshot");

    // Who may call the Raft endpoints (asked of a follower, whose state must not change).
    let m2 = &members[1];
    let (worker_cert, worker_key) = issue(&ca, "wrk-1", Role::Worker);
    let worker = client_config(ca.cert_pem(), &worker_cert, &worker_key).expect("worker client");
    serde_json::from_str::<shoal_raft::openraft::raft::VoteRequest<RaftId>>(VOTE)
        .expect("VOTE is a vote request");
    let (status, body) = post(worker.clone(), m2.addr, "/internal/raft/vote", VOTE).await;
    assert_eq!(status, 403, "worker certificate: {body}");
    assert!(body.contains("worker wrk-1"), "{body}");
    let (status, _) = post(worker.clone(), m2.addr, "/internal/raft/append", "{}").await;
    assert_eq!(status, 403, "worker certificate on append");
    let (status, body) = post_h2(worker, m2.addr, "/internal/raft/vote", VOTE).await;
    assert_eq!(status, 403, "worker certificate over HTTP/2: {body}");
    let anonymous = pinned_client_config(&ca.digest()).expect("pinned client");
    let (status, body) = post(anonymous, m2.addr, "/internal/raft/vote", VOTE).await;
    assert_eq!(status, 403, "no certificate: {body}");
    let (stranger_cert, stranger_key) = issue(&ca, "mgr-9", Role::Manager);
    let stranger = client_config(ca.cert_pem(), &stranger_cert, &stranger_key).expect("stranger client");
    let (status, body) = post(stranger, m2.addr, "/internal/raft/vote", VOTE).await;
    assert_eq!(status, 403, "manager not authorized by the caller: {body}");
    // A member's certificate gets through to the handler, which refuses what is not a request.
    let (member_cert, member_key) = issue(&ca, "mgr-3", Role::Manager);
    let member = client_config(ca.cert_pem(), &member_cert, &member_key).expect("member client");
    let (status, body) = post(member.clone(), m2.addr, "/internal/raft/vote", "{\"nonsense\":1}").await;
    assert_eq!(status, 400, "bad body: {body}");
    let (status, body) = post(member.clone(), m2.addr, "/internal/raft/elect-me", VOTE).await;
    assert_eq!(status, 400, "unknown kind: {body}");
    let (status, body) = post_h2(member, m2.addr, "/internal/raft/vote", "{\"nonsense\":1}").await;
    assert_eq!(status, 400, "bad body over HTTP/2: {body}");
    assert_eq!(m2.node.status().term, m1.node.status().term, "refused requests changed nothing");

    // The framework-independent handler.
    let raft = m2.node.raft();
    let e = handle_raft_rpc(raft, "nope", b"{}").await.expect_err("unknown kind");
    assert!(matches!(e, RpcError::UnknownKind(_)) && e.http_status() == 400, "{e}");
    let e = handle_raft_rpc(raft, "append", b"[").await.expect_err("bad json");
    assert!(matches!(e, RpcError::BadRequest { .. }) && e.http_status() == 400, "{e}");
    // Entries of a newer format (a leader running a newer Shoal) are refused before they reach
    // the log, whether this binary could decode them or not.
    let newer = shoal_raft::formats::ENTRY + 1;
    let entry = shoal_raft::Entry {
        log_id: shoal_raft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
        payload: openraft::EntryPayload::Normal(shoal_raft::Request {
            format: newer,
            ..shoal_raft::Request::single(
                shoal_types::Timestamp::from_secs(1),
                Command::RemoveService { id: ServiceId::new("x") },
            )
        }),
    };
    let append = openraft::raft::AppendEntriesRequest::<shoal_raft::TypeConfig> {
        vote: openraft::Vote::new(1, 1),
        prev_log_id: None,
        entries: vec![entry],
        leader_commit: None,
    };
    let decodable = serde_json::to_string(&append).expect("json");
    let undecodable = decodable.replace("remove_service", "a_command_of_the_future");
    let want = format!(
        "a Raft log entry was written by a newer Shoal (format {newer}, this binary knows up to {}): upgrade this binary",
        shoal_raft::formats::ENTRY
    );
    for body in [decodable, undecodable] {
        let e = handle_raft_rpc(raft, "append", body.as_bytes()).await.expect_err("newer entries");
        assert!(matches!(e, RpcError::BadRequest { .. }) && e.to_string().contains(&want), "{e}");
    }

    // The leader goes away: its Raft stops and its listener with every connection closes.
    let old_term = m1.node.status().term;
    m1.node.shutdown().await;
    m1.server.abort();
    let survivors = &members[1..];
    let failover = eventually("a new leader among the survivors", FAILOVER_DEADLINE, || {
        survivors.iter().any(|m| m.node.is_leader() && m.node.status().term > old_term)
    })
    .await;
    let leader = survivors.iter().find(|m| m.node.is_leader()).expect("new leader");
    let follower = survivors.iter().find(|m| m.id != leader.id).expect("other survivor");

    // With two of three voters the cluster still commits, and nothing was lost.
    leader.node.write(create("api")).await.expect("second write on the new leader");
    let web_linearizable = leader
        .node
        .read(Consistency::Linearizable, |s| s.service_by_name("web").is_some())
        .await
        .expect("linearizable read");
    assert!(web_linearizable, "the first write survived the failover");
    eventually("second write on the other survivor", DEADLINE, || {
        has_service(&follower.node, "api") && has_service(&follower.node, "web")
    })
    .await;
    eprintln!("new leader {} after {failover:?}; whole test {:?}", leader.me.node_id, started.elapsed());

    // The learner keeps following the new leader.
    eventually("second write on the learner", DEADLINE, || has_service(&m4.node, "api")).await;

    for m in survivors.iter().chain([&m4]) {
        m.node.shutdown().await;
        m.server.abort();
    }
}
