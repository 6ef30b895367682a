//! The node-to-node endpoints next to Raft's, served over mutual TLS on every manager:
//!
//! - `POST /internal/join` — a joining node presents a join token and a CSR (no client
//!   certificate yet) and gets its certificate and the CA; the token decides its role.
//! - `POST /internal/managers` — a manager that joined asks the leader to add it (learner, then
//!   voter). Needs its manager certificate, and may only add itself.
//! - `POST /internal/leader` — a follower forwards a write or a membership change to the leader
//!   (see [`crate::leader`], the one write path). Needs the certificate of a current member.
//! - `GET /internal/read-index` — a follower asks the leader for the read index of a
//!   linearizable read. Needs a manager certificate.
//! - `/internal/kv/...` — the key-value store for workers' etcd API (etcd's gRPC proxy): the
//!   `/v1/kv` routes ([`crate::kv_http`]) with typed errors, plus `GET /internal/kv/info`
//!   ([`crate::kv_http::KvInfo`]). Needs a node certificate (worker or manager) of a node that
//!   has not been removed; an operator's client certificate is refused.
//!
//! Errors use the API's `{"error": {"code", "message"}}` shape; `not_leader` carries the leader.

use crate::server::ApiError;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_manager::{JoinError, Manager, ManagerNode, RaftId, ReadError, WriteError};
use shoal_pki::{NodeIdentity, Role};
use shoal_state::Command;
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub csr_pem: String,
    pub node_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddManager {
    #[serde(with = "shoal_raft::raft_id_string")]
    pub raft_id: RaftId,
    pub node: ManagerNode,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReadIndex {
    pub index: u64,
}

type Peer = Extension<Option<NodeIdentity>>;

pub(crate) fn require_manager(peer: &Option<NodeIdentity>) -> Result<&NodeIdentity, ApiError> {
    match peer {
        Some(id) if id.role == Role::Manager => Ok(id),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a manager certificate of this cluster is required",
        )),
    }
}

/// A manager certificate of a *current* member: a removed manager's certificate stays valid until
/// it expires, but it no longer opens these endpoints.
pub(crate) fn require_member<'p>(
    m: &Manager,
    peer: &'p Option<NodeIdentity>,
) -> Result<&'p NodeIdentity, ApiError> {
    let id = require_manager(peer)?;
    let s = m.node.status();
    if s.voters.values().chain(s.learners.values()).any(|n| n.node_id == id.node_id) {
        Ok(id)
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "not a member of this cluster"))
    }
}

impl From<JoinError> for ApiError {
    fn from(e: JoinError) -> Self {
        let (status, code) = match &e {
            JoinError::BadToken => (StatusCode::UNAUTHORIZED, "bad_token"),
            JoinError::AlreadyMember(_) => (StatusCode::CONFLICT, "conflict"),
            JoinError::Pki(_) => (StatusCode::BAD_REQUEST, "invalid"),
            JoinError::NotInitialized | JoinError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A manager that has its certificate asks to be added (learner, then voter): through any
/// manager, which forwards to the leader.
async fn add_manager(
    State(m): State<Arc<Manager>>,
    Extension(peer): Peer,
    Json(req): Json<AddManager>,
) -> Result<StatusCode, ApiError> {
    let id = require_manager(&peer)?;
    if id.node_id != req.node.node_id {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "a manager may only add itself"));
    }
    crate::leader::submit(&m, crate::leader::LeaderOp::AddManager { raft_id: req.raft_id, node: req.node })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member manager that leaves asks to be taken out of the membership.
async fn remove_manager(
    State(m): State<Arc<Manager>>,
    Extension(peer): Peer,
) -> Result<StatusCode, ApiError> {
    let id = require_member(&m, &peer)?;
    remove_from_membership(&m, vec![id.node_id.clone()]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes managers out of the Raft membership (voters and learners), through the leader.
pub async fn remove_from_membership(m: &Manager, node_ids: Vec<String>) -> Result<(), WriteError> {
    crate::leader::submit(m, crate::leader::LeaderOp::RemoveMembers { node_ids }).await.map(|_| ())
}

/// Takes this manager out of the Raft membership.
pub async fn remove_self(m: &Manager) -> Result<(), WriteError> {
    remove_from_membership(m, vec![m.node.config().node.node_id.clone()]).await
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
}

/// The leader's answer to a heartbeat: when to send the next one (the period grows with the
/// cluster, see [`shoal_manager::heartbeat_period`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub period_ms: u64,
}

impl HeartbeatReply {
    pub fn new(period: std::time::Duration) -> Self {
        HeartbeatReply { period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX) }
    }

    /// The period in an answer's body; a leader from before periods were named answered none
    /// (204): the default then.
    pub fn period_of(body: &[u8]) -> std::time::Duration {
        serde_json::from_slice::<HeartbeatReply>(body)
            .map(|r| std::time::Duration::from_millis(r.period_ms))
            .unwrap_or(shoal_manager::HEARTBEAT_INTERVAL)
    }
}

async fn heartbeat(
    State(m): State<Arc<Manager>>,
    Extension(peer): Peer,
    Json(hb): Json<Heartbeat>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    match &peer {
        // Only nodes heartbeat: an operator's client certificate never counts, whatever its name.
        Some(id) if id.node_id == hb.node_id && matches!(id.role, Role::Manager | Role::Worker) => {}
        // A follower forwards the heartbeats its workers send it.
        Some(_) if require_member(&m, &peer).is_ok() => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a node may only heartbeat for itself (managers may forward)",
            ))
        }
    }
    if !m.node.is_leader() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "heartbeats go to the leader",
        ));
    }
    Ok(Json(HeartbeatReply::new(m.record_heartbeat(&hb.node_id))))
}

/// Sends this node's heartbeat to the current leader every `HEARTBEAT_INTERVAL`.
/// A manager that hears no leader yet (promoted and catching up, or just restarted) heartbeats
/// through the managers it knows, whose dispatcher passes it on to the leader: its node is not
/// marked down (and its tasks stopped as stale) while it catches up.
pub async fn heartbeat_loop(m: Arc<Manager>) {
    let me = m.node.config().node.node_id.clone();
    loop {
        tokio::time::sleep(shoal_manager::HEARTBEAT_INTERVAL).await;
        let Some(tls) = m.client_tls() else { continue };
        let delivered = match m.node.status().leader_node {
            Some(leader) if leader.node_id == me => {
                let _ = m.record_heartbeat(&me);
                continue;
            }
            Some(leader) => {
                let Ok(body) = serde_json::to_vec(&Heartbeat { node_id: me.clone() }) else { continue };
                call(tls, &leader.addr, hyper::Method::POST, "/internal/heartbeat", Some(body))
                    .await
                    .map(|_| ())
            }
            None => {
                let path = m.tls_dir().join(crate::join::MANAGERS_FILE);
                let known: Vec<String> = std::fs::read(path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                let mut last = Err("no manager known".to_string());
                for addr in known {
                    last = match call(
                        tls.clone(),
                        &addr,
                        hyper::Method::POST,
                        "/internal/dispatcher/heartbeat",
                        None,
                    )
                    .await
                    {
                        Ok((st, _)) if st.is_success() => Ok(()),
                        Ok((st, bytes)) => Err(remote_error(st, &bytes)),
                        Err(e) => Err(e),
                    };
                    if last.is_ok() {
                        break;
                    }
                }
                last
            }
        };
        if let Err(e) = delivered {
            tracing::debug!(error = %e, "heartbeat not delivered");
        }
    }
}

async fn status(
    State(m): State<Arc<Manager>>,
    Extension(peer): Peer,
) -> Result<Json<shoal_manager::RaftStatus>, ApiError> {
    require_member(&m, &peer)?;
    Ok(Json(m.node.status()))
}

/// One manager's health as seen from here.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ManagerHealth {
    pub node_id: String,
    pub addr: String,
    pub voter: bool,
    pub reachable: bool,
    pub error: Option<String>,
    pub status: Option<shoal_manager::RaftStatus>,
}

/// Asks every manager in the membership for its Raft status (like `etcdctl cluster-health`).
pub async fn cluster_health(m: &Manager) -> Vec<ManagerHealth> {
    let local = m.node.status();
    let me = m.node.config().node.node_id.clone();
    let members: Vec<(bool, ManagerNode)> = local
        .voters
        .values()
        .map(|n| (true, n.clone()))
        .chain(local.learners.values().map(|n| (false, n.clone())))
        .collect();
    let mut out = Vec::new();
    for (voter, node) in members {
        if node.node_id == me {
            out.push(ManagerHealth {
                node_id: node.node_id,
                addr: node.addr,
                voter,
                reachable: true,
                error: None,
                status: Some(local.clone()),
            });
            continue;
        }
        let res = match m.client_tls() {
            None => Err("this node has no certificate".to_string()),
            Some(tls) => match tokio::time::timeout(
                std::time::Duration::from_secs(2),
                call(tls, &node.addr, hyper::Method::GET, "/internal/status", None),
            )
            .await
            {
                Err(_) => Err("no answer within 2s".to_string()),
                Ok(Err(e)) => Err(e),
                Ok(Ok((st, bytes))) if st.is_success() => {
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
                }
                Ok(Ok((st, bytes))) => Err(remote_error(st, &bytes)),
            },
        };
        let (reachable, error, status) = match res {
            Ok(s) => (true, None, Some(s)),
            Err(e) => (false, Some(e), None),
        };
        out.push(ManagerHealth { node_id: node.node_id, addr: node.addr, voter, reachable, error, status });
    }
    out
}

async fn read_index(
    State(m): State<Arc<Manager>>,
    Extension(peer): Peer,
) -> Result<Json<ReadIndex>, ApiError> {
    require_member(&m, &peer)?;
    Ok(Json(ReadIndex { index: m.node.read_index().await? }))
}

pub fn internal_router(m: Arc<Manager>) -> Router {
    Router::new()
        .route("/internal/join", post(crate::join::serve_join))
        .route("/internal/managers", post(add_manager).delete(remove_manager))
        .route("/internal/leader", post(crate::leader::serve_forwarded))
        .route("/internal/read-index", get(read_index))
        .route("/internal/heartbeat", post(heartbeat))
        .route("/internal/status", get(status))
        .route("/internal/checkpoints/{id}", get(crate::migrate::serve_archive))
        .with_state(m.clone())
        .merge(crate::dispatcher::dispatcher_router(m.clone()))
        .merge(shoal_raft::transport::raft_router(m.node.clone()))
}

/// The key-value routes for workers' etcd API (see the module doc).
pub fn internal_kv_router(m: Arc<Manager>, kv: Arc<crate::kv::KvApp>) -> Router {
    crate::kv_http::kv_routes::<crate::kv_http::WireError>("/internal/kv")
        .route("/internal/kv/info", get(kv_info))
        .route_layer(axum::middleware::from_fn_with_state(m, nodes_only))
        .with_state(kv)
}

async fn kv_info(State(kv): State<Arc<crate::kv::KvApp>>) -> Json<crate::kv_http::KvInfo> {
    Json(crate::kv_http::KvInfo::of(&kv))
}

/// Only nodes of this cluster (workers and managers) that `node rm` has not removed.
async fn nodes_only(
    State(m): State<Arc<Manager>>,
    Extension(peer): Peer,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match crate::dispatcher::member_peer(&m, &peer) {
        Ok(_) => next.run(req).await,
        Err(e) => crate::kv_http::WireError::from(e).into_response(),
    }
}

/// Sends a JSON request to another manager over TLS; returns the status and body.
pub async fn call(
    tls: Arc<rustls::ClientConfig>,
    addr: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, hyper::body::Bytes), String> {
    use http_body_util::BodyExt;
    let fut = async {
        let resp = open(tls, addr, shoal_pki::MANAGER_SERVER_NAME, method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), fut)
        .await
        .map_err(|_| format!("{addr} did not answer within 15s"))?
}

/// Kept-alive connections to the managers, for requests that may safely be sent twice
/// (a worker's heartbeats, status reports, assignments, registration): each idle connection goes
/// back here once its answer is read, and the next request to that address takes it instead of
/// paying a TCP and mutual-TLS handshake. With a thousand nodes heartbeating every second, the
/// handshakes alone kept a manager busy (BENCHMARKS.md, the load test).
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<Vec<(String, Sender)>>,
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>;

/// Idle connections kept per address (a worker has at most a few requests in flight).
const POOL_PER_ADDR: usize = 4;

impl Pool {
    /// Like [`call`], on a kept connection when there is one. A kept connection the manager has
    /// closed meanwhile fails before any answer; the request then goes once more on a new one,
    /// which is why only requests that may be sent twice go through here.
    pub async fn call(
        &self,
        tls: Arc<rustls::ClientConfig>,
        addr: &str,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, hyper::body::Bytes), String> {
        let fut = async {
            if let Some(sender) = self.take(addr) {
                if let Ok(answer) = self.exchange(sender, addr, method.clone(), path, body.clone()).await {
                    return Ok(answer);
                }
            }
            let conn = connect(tls, addr, shoal_pki::MANAGER_SERVER_NAME).await?;
            self.exchange(conn.sender, addr, method, path, body).await
        };
        tokio::time::timeout(std::time::Duration::from_secs(15), fut)
            .await
            .map_err(|_| format!("{addr} did not answer within 15s"))?
    }

    /// Forgets every kept connection (after a certificate renewal: new ones present the new one).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn take(&self, addr: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|(_, s)| !s.is_closed());
        let i = idle.iter().position(|(a, _)| a == addr)?;
        Some(idle.swap_remove(i).1)
    }

    fn put(&self, addr: &str, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.iter().filter(|(a, _)| a == addr).count() < POOL_PER_ADDR {
            idle.push((addr.to_string(), sender));
        }
    }

    async fn exchange(
        &self,
        mut sender: Sender,
        addr: &str,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, hyper::body::Bytes), String> {
        use http_body_util::BodyExt;
        sender.ready().await.map_err(|e| format!("{addr}: {e}"))?;
        let req = json_request(method, path, shoal_pki::MANAGER_SERVER_NAME, body)?;
        let resp = sender.send_request(req).await.map_err(|e| format!("request to {addr}: {e}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        self.put(addr, sender);
        Ok((status, bytes))
    }
}

/// Sends one request to another node over mutual TLS, verifying its certificate as
/// `server_name`; returns the response with its body still to be read (it may be a stream).
pub async fn open(
    tls: Arc<rustls::ClientConfig>,
    addr: &str,
    server_name: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let conn = connect(tls, addr, server_name).await?;
    conn.send(method, path, body).await
}

/// A connection to another node, TLS done, nothing sent yet.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    addr: String,
    server_name: String,
}

/// Connects to another node over mutual TLS (nothing is sent): what fails here never reached
/// the other side's application.
pub async fn connect(
    tls: Arc<rustls::ClientConfig>,
    addr: &str,
    server_name: &str,
) -> Result<Connection, String> {
    use hyper_util::rt::TokioIo;
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {addr}: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Connection { sender, addr: addr.to_string(), server_name: server_name.to_string() })
}

impl Connection {
    /// Sends the request; returns the response with its body still to be read.
    pub async fn send(
        mut self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let req = json_request(method, path, &self.server_name, body)?;
        let addr = self.addr.clone();
        self.sender.send_request(req).await.map_err(|e| format!("request to {addr}: {e}"))
    }
}

/// A request with a JSON body (empty when none) for `server_name`.
fn json_request(
    method: hyper::Method,
    path: &str,
    server_name: &str,
    body: Option<Vec<u8>>,
) -> Result<hyper::Request<http_body_util::Full<hyper::body::Bytes>>, String> {
    hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())
}

pub(crate) fn remote_error(status: StatusCode, bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"))
}

/// A write from anywhere: committed by the leader, through the one write path.
pub async fn write(m: &Manager, cmd: Command) -> Result<shoal_raft::Response, WriteError> {
    crate::leader::submit(m, crate::leader::LeaderOp::Write { command: cmd })
        .await?
        .ok_or_else(|| WriteError::Unavailable("the leader sent no result for the write".into()))
}

/// A linearizable read from anywhere: the leader confirms its read index; a follower asks the
/// leader for it and waits until its own replica has applied that far.
pub async fn read_linearizable<T>(
    m: &Manager,
    f: impl FnOnce(&shoal_state::ClusterState) -> T,
) -> Result<T, ReadError> {
    let index = read_index_anywhere(m).await?;
    m.node.read_at(index, f).await
}

/// The read index from the leader, wherever it is: here, or asked over mTLS; again at the next
/// leader while the leader is unknown or fails to answer, for as long as a follower waits for a
/// leader (a read has no effect, so asking again is always safe; leaders can change more than
/// once in a burst).
async fn read_index_anywhere(m: &Manager) -> Result<u64, ReadError> {
    let deadline = tokio::time::Instant::now() + crate::leader::LEADER_WAIT;
    loop {
        let failed_leader = match m.node.read_index().await {
            Ok(i) => return Ok(i),
            Err(ReadError::NotLeader { leader: Some(leader) }) => match ask_read_index(m, &leader).await {
                Ok(i) => return Ok(i),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => Some(leader),
            },
            Err(ReadError::NotLeader { leader: None }) if tokio::time::Instant::now() >= deadline => {
                return Err(ReadError::Unavailable(crate::leader::NO_LEADER.into()))
            }
            Err(ReadError::NotLeader { leader: None }) => None,
            Err(e) => return Err(e),
        };
        // At most one round each 50 ms, even while this manager still names a leader that
        // no longer answers as one.
        let next_round = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        crate::leader::wait_for_leader(m, failed_leader.as_ref())
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        tokio::time::sleep_until(next_round).await;
    }
}

async fn ask_read_index(m: &Manager, leader: &ManagerNode) -> Result<u64, ReadError> {
    let tls =
        m.client_tls().ok_or_else(|| ReadError::Unavailable("this node has no certificate yet".into()))?;
    let (status, bytes) = call(tls, &leader.addr, hyper::Method::GET, "/internal/read-index", None)
        .await
        .map_err(|e| ReadError::Unavailable(format!("asking the leader for a read index failed: {e}")))?;
    if !status.is_success() {
        return Err(ReadError::Unavailable(remote_error(status, &bytes)));
    }
    let ri: ReadIndex = serde_json::from_slice(&bytes).map_err(|e| ReadError::Unavailable(e.to_string()))?;
    Ok(ri.index)
}
