//! The `/v1` HTTP API served by every manager. JSON in and out; errors are
//! `{"error": {"code", "message"}}` with 400/404/409 for bad input and 503 with a clear message
//! when there is no quorum (a write or linearizable read never hangs past the quorum timeout).
//! Reads are linearizable unless the query says `?stale=true`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shoal_manager::{Consistency, InitError, Manager, ReadError, WriteError};
use shoal_state::{ClusterState, Command};
use shoal_types::{
    Availability, Node, NodeId, NodeRole, NodeSpec, Service, ServiceId, ServiceSpec, Task, Timestamp,
};
use std::collections::BTreeMap;
use std::sync::Arc;

type AppState = Arc<Manager>;

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(c) => {
                let (status, code) = match c.kind {
                    shoal_manager::ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                    shoal_manager::ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
                    shoal_manager::ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
                };
                ApiError::new(status, code, c.message)
            }
            e @ WriteError::NotLeader { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", e.to_string())
            }
            WriteError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            e @ ReadError::NotLeader { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", e.to_string())
            }
            ReadError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        }
    }
}

/// Rejects malformed JSON bodies with a 400 in the API's error format.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    #[serde(default)]
    pub stale: bool,
    pub service: Option<String>,
    pub node: Option<String>,
    #[serde(default)]
    pub force: bool,
}

impl ReadQuery {
    fn consistency(&self) -> Consistency {
        if self.stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        }
    }
}

pub(crate) async fn read<T>(
    m: &Manager,
    q: &ReadQuery,
    f: impl FnOnce(&ClusterState) -> T,
) -> Result<T, ApiError> {
    match q.consistency() {
        Consistency::Linearizable => Ok(crate::internal::read_linearizable(m, f).await?),
        Consistency::Stale => Ok(m.node.read(Consistency::Stale, f).await?),
    }
}

/// Everything the API serves, for the OpenAPI document and `shoal` CLI discovery.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/v1/cluster", "cluster and Raft status of this manager"),
    ("post", "/v1/cluster/init", "make this manager the first member of a new cluster ({data_path_port})"),
    ("post", "/v1/cluster/join", "join an existing cluster as a manager ({token, addr})"),
    ("get", "/v1/cluster/health", "every manager: reachable, Raft state, term, log and applied index"),
    ("get", "/v1/cluster/join-token/{role}", "the join token for workers or managers (root socket only)"),
    ("post", "/v1/cluster/join-token/{role}/rotate", "replace a join token"),
    (
        "post",
        "/v1/cluster/client-cert",
        "issue an operator's client certificate for the TCP API ({name, csr_pem?})",
    ),
    ("get", "/v1/nodes", "list nodes"),
    ("get", "/v1/nodes/{id}", "inspect a node (id or hostname)"),
    ("post", "/v1/nodes/{id}/update", "change availability, labels and role (promote/demote)"),
    ("post", "/v1/cluster/leave", "this node leaves the cluster (?force=true for the last manager)"),
    ("delete", "/v1/nodes/{id}", "remove a node (?force=true for a node that is still up)"),
    ("get", "/v1/services", "list services"),
    ("post", "/v1/services", "create a service from a ServiceSpec"),
    ("get", "/v1/services/{id}", "inspect a service (id or name)"),
    ("post", "/v1/services/{id}/update", "replace a service's spec"),
    ("post", "/v1/services/{id}/rollback", "return to the previous spec"),
    ("post", "/v1/services/{id}/scale", "set a replicated service's replica count ({replicas})"),
    ("post", "/v1/services/{id}/rebalance", "even out a replicated service's spread, one task at a time"),
    ("delete", "/v1/services/{id}", "remove a service and stop its tasks"),
    ("get", "/v1/tasks", "list tasks (?service=, ?node=)"),
    ("get", "/v1/networks", "list networks"),
    ("post", "/v1/networks", "create an overlay network from a NetworkSpec (VNI and subnet are allocated)"),
    ("get", "/v1/networks/{id}", "inspect a network (id or name), with every node's address on it"),
    ("delete", "/v1/networks/{id}", "remove a network that no service uses"),
    (
        "post",
        "/v1/tasks/{id}/migrate",
        "move a running task with its state to another node ({to?}): checkpoint, transfer, restore",
    ),
    (
        "post",
        "/v1/tasks/{id}/exec",
        "run a command in a running task's namespaces through its driver ({cmd, timeout_secs?}): exit code and output",
    ),
    ("get", "/v1/openapi.json", "this document"),
];

pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/init", post(cluster_init))
        .route("/v1/cluster/join", post(cluster_join))
        .route("/v1/cluster/leave", post(cluster_leave))
        .route("/v1/cluster/health", get(cluster_health))
        .route("/v1/cluster/join-token/{role}", get(join_token))
        .route("/v1/cluster/join-token/{role}/rotate", post(rotate_join_token))
        .route("/v1/cluster/client-cert", post(crate::tcp::issue_client_cert))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(inspect_node).delete(remove_node))
        .route("/v1/nodes/{id}/update", post(update_node))
        .route("/v1/services", get(list_services).post(create_service))
        .route("/v1/services/{id}", get(inspect_service).delete(remove_service))
        .route("/v1/services/{id}/update", post(update_service))
        .route("/v1/services/{id}/rollback", post(rollback_service))
        .route("/v1/services/{id}/scale", post(scale_service))
        .route("/v1/services/{id}/rebalance", post(rebalance_service))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/networks", get(crate::networks::list).post(crate::networks::create))
        .route("/v1/networks/{id}", get(crate::networks::inspect).delete(crate::networks::remove))
        .route("/v1/tasks/{id}/migrate", post(crate::migrate::migrate_handler))
        .route("/v1/tasks/{id}/checkpoint", post(crate::migrate::checkpoint_handler))
        .route(
            "/v1/tasks/restore",
            post(crate::migrate::restore_handler).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint (see /v1/openapi.json)")
        })
        .layer(axum::middleware::from_fn_with_state(manager.clone(), refuse_on_worker))
        .with_state(manager)
}

/// Once this node has joined as a worker (until its daemon restarts as one), management requests
/// go to a manager, as on a worker's own socket.
async fn refuse_on_worker(
    State(m): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if m.joined_as_worker().borrow().is_some() && req.uri().path() == "/v1/cluster/join" {
        return crate::join::JoinClusterError::AlreadyMember.into_api_error().into_response();
    }
    if m.joined_as_worker().borrow().is_some() && req.uri().path() != "/v1/health" {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_manager",
            "this node is a worker: run this command against a manager",
        )
        .into_response();
    }
    next.run(req).await
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub raft: shoal_manager::RaftStatus,
    pub index: u64,
    pub nodes: usize,
    pub services: usize,
    pub tasks: usize,
    /// The UDP port of the VXLAN data path (`cluster init --data-path-port`; 4789 by default).
    #[serde(default = "shoal_state::default_data_path_port")]
    pub data_path_port: u16,
}

async fn cluster(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let raft = m.node.status();
    let (index, nodes, services, tasks, data_path_port) = read(&m, &q, |s| {
        let port = s.cluster().map_or(shoal_state::DEFAULT_DATA_PATH_PORT, |c| c.data_path_port);
        (s.index(), s.nodes().len(), s.services().len(), s.tasks().len(), port)
    })
    .await?;
    Ok(Json(ClusterInfo { raft, index, nodes, services, tasks, data_path_port }))
}

impl From<InitError> for ApiError {
    fn from(e: InitError) -> Self {
        match e {
            InitError::Write(w) => w.into(),
            e @ (InitError::AlreadyInitialized(_) | InitError::NoCa) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            e @ InitError::NotAMember(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
        }
    }
}

/// What `cluster init` may choose (an empty body: the defaults).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitArgs {
    /// The VXLAN data-path port (1024-49151; default 4789), fixed for the cluster's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path_port: Option<u64>,
}

async fn cluster_init(
    State(m): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<ClusterInfo>, ApiError> {
    // Checked before anything is created. No body (a bare POST, as before options) is the defaults.
    let args: InitArgs = if body.iter().all(u8::is_ascii_whitespace) {
        InitArgs::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid body: {e}")))?
    };
    let data_path_port = match args.data_path_port {
        None => shoal_state::DEFAULT_DATA_PATH_PORT,
        Some(p) => shoal_state::validate_data_path_port(p)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?,
    };
    if m.node.status().leader.is_some() || !m.node.status().voters.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this node is already part of a cluster (see `shoal cluster inspect`)",
        ));
    }
    m.init_cluster(data_path_port).await?;
    cluster(State(m), Query(ReadQuery::default())).await
}

async fn cluster_health(State(m): State<AppState>) -> Json<Vec<crate::internal::ManagerHealth>> {
    Json(crate::internal::cluster_health(&m).await)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinArgs {
    pub token: String,
    pub addr: String,
}

/// What `cluster join` reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinInfo {
    /// `manager` or `worker`.
    pub role: String,
    /// Managers in the cluster, as this node knows them now.
    pub managers: usize,
}

async fn cluster_join(
    State(m): State<AppState>,
    JsonBody(a): JsonBody<JoinArgs>,
) -> Result<Json<JoinInfo>, ApiError> {
    use crate::join::JoinClusterError as E;
    crate::join::join_cluster(&m, &a.token, &a.addr).await.map_err(E::into_api_error)?;
    if m.joined_as_worker().borrow().is_some() {
        return Ok(Json(JoinInfo { role: "worker".into(), managers: 1 }));
    }
    let raft = m.node.status();
    Ok(Json(JoinInfo { role: "manager".into(), managers: raft.voters.len().max(raft.learners.len()) }))
}

#[derive(Debug, Default, Deserialize)]
pub struct LeaveQuery {
    #[serde(default)]
    pub force: bool,
}

/// This manager leaves: out of the Raft membership (through the leader), then the daemon stops
/// the node's tasks, forgets the cluster and exits. The last manager leaves only with `force`,
/// which ends the cluster.
async fn cluster_leave(
    State(m): State<AppState>,
    Query(q): Query<LeaveQuery>,
) -> Result<StatusCode, ApiError> {
    let status = m.node.status();
    let me = m.node.config().raft_id;
    let others = status.voters.keys().filter(|v| **v != me).count();
    if others == 0 && !q.force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this is the last manager: leaving ends the cluster and loses its state; use --force",
        ));
    }
    if others > 0 {
        crate::internal::remove_self(&m).await?;
    }
    m.request_leave();
    Ok(StatusCode::NO_CONTENT)
}

fn parse_role(role: &str) -> Result<NodeRole, ApiError> {
    match role {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("role must be worker or manager, not {role:?}"),
        )),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinTokenInfo {
    pub role: NodeRole,
    pub token: String,
}

async fn join_token(
    State(m): State<AppState>,
    Path(role): Path<String>,
) -> Result<Json<JoinTokenInfo>, ApiError> {
    let role = parse_role(&role)?;
    Ok(Json(JoinTokenInfo { role, token: current_join_token(&m, role).await? }))
}

/// The join token for `role` as the cluster has committed it (read through the leader, so a
/// rotated token is never shown stale, on any manager).
async fn current_join_token(m: &Manager, role: NodeRole) -> Result<String, ApiError> {
    read(m, &ReadQuery::default(), |s| {
        s.cluster().map(|c| match role {
            NodeRole::Worker => c.worker_token.clone(),
            NodeRole::Manager => c.manager_token.clone(),
        })
    })
    .await?
    .ok_or_else(|| ApiError::from(InitError::NoCa))
}

/// A new token replaces the old one (which stops working at once; nodes that joined with it are
/// not affected), through the leader like every write.
async fn rotate_join_token(
    State(m): State<AppState>,
    Path(role): Path<String>,
) -> Result<Json<JoinTokenInfo>, ApiError> {
    let role = parse_role(&role)?;
    let ca_pem = read(&m, &ReadQuery::default(), |s| s.cluster().map(|c| c.ca_cert_pem.clone()))
        .await?
        .ok_or_else(|| ApiError::from(InitError::NoCa))?;
    let digest = shoal_pki::cert_pem_digest(&ca_pem).map_err(|e| ApiError::from(InitError::from(e)))?;
    let token = shoal_pki::JoinToken::generate(&digest).map_err(|e| ApiError::from(InitError::from(e)))?;
    crate::internal::write(&m, Command::SetJoinToken { role, token: token.to_string() }).await?;
    Ok(Json(JoinTokenInfo { role, token: current_join_token(&m, role).await? }))
}

/// A node by id, or by hostname when exactly one node has it (like docker, an ambiguous
/// hostname is refused: use the id).
fn find_node<'s>(s: &'s ClusterState, key: &str) -> Result<Option<&'s Node>, ApiError> {
    if let Some(n) = s.node(&NodeId::new(key)) {
        return Ok(Some(n));
    }
    let mut named = s.nodes().filter(|n| n.description.hostname == key);
    match (named.next(), named.next()) {
        (Some(n), None) => Ok(Some(n)),
        (None, _) => Ok(None),
        (Some(a), Some(b)) => {
            let mut ids = vec![a.id.to_string(), b.id.to_string()];
            ids.extend(named.map(|n| n.id.to_string()));
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "node {key} is ambiguous: {} nodes have this hostname ({}); use the node id",
                    ids.len(),
                    ids.join(", ")
                ),
            ))
        }
    }
}

fn find_service<'s>(s: &'s ClusterState, key: &str) -> Option<&'s Service> {
    s.service(&ServiceId::new(key)).or_else(|| s.service_by_name(key))
}

/// Manager status is Raft's view, not a stored claim: leader and members come from the current
/// membership, reachability from the node's heartbeat state.
fn with_manager_status(m: &Manager, mut node: Node) -> Node {
    let raft = m.node.status();
    let member =
        raft.voters.values().chain(raft.learners.values()).find(|n| n.node_id == node.id.as_str()).cloned();
    node.manager_status = member.map(|n| shoal_types::ManagerStatus {
        leader: raft.leader_node.as_ref().is_some_and(|l| l.node_id == n.node_id),
        reachability: if node.status.state == shoal_types::NodeState::Ready {
            shoal_types::Reachability::Reachable
        } else {
            shoal_types::Reachability::Unreachable
        },
        addr: n.addr,
    });
    node
}

async fn list_nodes(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Node>>, ApiError> {
    let nodes: Vec<Node> = read(&m, &q, |s| s.nodes().cloned().collect()).await?;
    Ok(Json(nodes.into_iter().map(|n| with_manager_status(&m, n)).collect()))
}

async fn inspect_node(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Node>, ApiError> {
    read(&m, &q, |s| find_node(s, &id).map(|n| n.cloned()))
        .await??
        .map(|n| Json(with_manager_status(&m, n)))
        .ok_or_else(|| ApiError::not_found("node", &id))
}

/// A partial node update, as `shoal node update` sends it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeUpdate {
    pub version: Option<u64>,
    pub availability: Option<Availability>,
    pub role: Option<shoal_types::NodeRole>,
    pub label_add: BTreeMap<String, String>,
    pub label_rm: Vec<String>,
    /// With availability `drain`: migrate the node's tasks that can be checkpointed first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub migrate: bool,
}

/// Before a drain: the tasks on `node` that can be checkpointed and should keep their state
/// (`all`: `--migrate`; else those of services with `--on-drain migrate`) move to other nodes
/// (at most `PER_NODE` at a time). A task whose migration fails is back on the node and is
/// restarted elsewhere by the drain, like the tasks that cannot migrate.
async fn migrate_off(m: &Arc<Manager>, node: &NodeId, all: bool) -> Result<(), ApiError> {
    use futures_util::StreamExt;
    let ids: Vec<shoal_types::TaskId> = read(m, &ReadQuery::default(), |s| {
        let wanted = |t: &Task| {
            all || s
                .service(&t.service_id)
                .is_some_and(|svc| svc.spec.on_drain == shoal_types::OnDrain::Migrate)
        };
        s.tasks_on_node(node)
            .filter(|t| wanted(t) && shoal_core::migrate::check_source(s, t).is_ok())
            .map(|t| t.id.clone())
            .collect()
    })
    .await?;
    let results: Vec<_> = futures_util::stream::iter(ids.into_iter().map(|id| {
        let m = m.clone();
        async move { (id.clone(), crate::migrate::migrate(&m, &id, None).await) }
    }))
    .buffer_unordered(crate::migrate::PER_NODE)
    .collect()
    .await;
    for (id, r) in results {
        match r {
            Ok(x) if x.failed.is_none() => {
                tracing::info!(task = %id, to = %x.to_node, "migrated off a draining node")
            }
            Ok(x) => {
                tracing::warn!(task = %id, error = ?x.failed, "migration failed; the drain restarts it elsewhere")
            }
            Err(e) => {
                tracing::warn!(task = %id, error = %e.message, "migration failed; the drain restarts it elsewhere")
            }
        }
    }
    Ok(())
}

/// `spec` with the update's changes.
fn updated_spec(spec: &NodeSpec, u: &NodeUpdate) -> Result<NodeSpec, ApiError> {
    let mut spec = spec.clone();
    if let Some(a) = u.availability {
        spec.availability = a;
    }
    if let Some(r) = u.role {
        spec.role = r;
    }
    spec.labels.extend(u.label_add.clone());
    for k in &u.label_rm {
        if spec.labels.remove(k).is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("node has no label {k:?}"),
            ));
        }
    }
    Ok(spec)
}

async fn update_node(
    State(m): State<AppState>,
    Path(id): Path<String>,
    JsonBody(u): JsonBody<NodeUpdate>,
) -> Result<Json<Node>, ApiError> {
    let q = ReadQuery::default();
    // Read through the leader: a role change is decided on the committed state, never on a
    // lagging replica.
    let node = read(&m, &q, |s| find_node(s, &id).map(|n| n.cloned()))
        .await??
        .ok_or_else(|| ApiError::not_found("node", &id))?;
    if let Some(k) = u.label_add.keys().find(|k| k.trim().is_empty()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid label key {k:?}")));
    }
    let spec = updated_spec(&node.spec, &u)?;
    let member = {
        let status = m.node.status();
        let voters = status.voters.len();
        status
            .voters
            .values()
            .map(|n| (true, n))
            .chain(status.learners.values().map(|n| (false, n)))
            .find(|(_, n)| n.node_id == node.id.as_str())
            .map(|(voter, _)| (voter, voters))
    };
    if spec.role == NodeRole::Worker {
        // Checked before anything is written: the last manager cannot go.
        if let Some((true, 1)) = member {
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "cannot demote the last manager"));
        }
    }
    if spec.availability == Availability::Drain && node.spec.availability != Availability::Drain {
        migrate_off(&m, &node.id, u.migrate).await?;
    }
    let mut attempt = (node.version, spec);
    for tries in 1.. {
        let expected_version = Some(u.version.unwrap_or(attempt.0));
        let cmd = Command::UpdateNodeSpec { id: node.id.clone(), expected_version, spec: attempt.1.clone() };
        match crate::internal::write(&m, cmd).await {
            Ok(_) => break,
            // Without a version from the client, a race with a status change (heartbeats,
            // registration) is not the client's conflict: apply the same change to the newest spec.
            Err(WriteError::Refused(c))
                if u.version.is_none() && c.kind == shoal_manager::ErrorKind::Conflict && tries < 5 =>
            {
                let fresh = read(&m, &q, |s| s.node(&node.id).cloned())
                    .await?
                    .ok_or_else(|| ApiError::not_found("node", &id))?;
                attempt = (fresh.version, updated_spec(&fresh.spec, &u)?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if attempt.1.role == NodeRole::Worker && member.is_some() {
        // The spec says worker first, so the demoted node knows what to become once it is out of
        // the membership. Idempotent: demoting a half-demoted node finishes the job (and the
        // leader's reconciler does the same on its own).
        crate::internal::remove_from_membership(&m, vec![node.id.to_string()]).await?;
    }
    let q = ReadQuery { stale: true, ..Default::default() };
    read(&m, &q, |s| s.node(&node.id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("node", &id))
}

async fn remove_node(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<StatusCode, ApiError> {
    let node = read(&m, &ReadQuery::default(), |s| find_node(s, &id).map(|n| n.cloned())).await??;
    let status = m.node.status();
    let Some(node) = node else {
        // A manager in the membership without a node object (it never registered, or its object
        // is gone): `node rm` takes it out of the membership all the same.
        let ghost = status
            .voters
            .values()
            .chain(status.learners.values())
            .find(|n| n.node_id == id && n.node_id != m.node.config().node.node_id);
        return match ghost {
            Some(n) => {
                crate::internal::remove_from_membership(&m, vec![n.node_id.clone()]).await?;
                // Remembered as removed: if it comes back it learns so and starts anew.
                let id = shoal_types::NodeId::new(n.node_id.clone());
                crate::internal::write(&m, Command::RemoveNode { id }).await?;
                Ok(StatusCode::NO_CONTENT)
            }
            None => Err(ApiError::not_found("node", &id)),
        };
    };
    if node.status.state == shoal_types::NodeState::Ready && !q.force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("node {} is ready: drain and stop it first, or use --force", node.id),
        ));
    }
    if node.id.as_str() == m.node.config().node.node_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "a manager cannot remove itself; demote it or run `shoal cluster leave` on it",
        ));
    }
    // A manager leaves the Raft membership first (voter or learner), so its certificate stops
    // working for Raft at once; the last voter can never be removed.
    let member =
        status.voters.values().chain(status.learners.values()).any(|n| n.node_id == node.id.as_str());
    if member {
        crate::internal::remove_from_membership(&m, vec![node.id.to_string()]).await?;
    }
    crate::internal::write(&m, Command::RemoveNode { id: node.id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Service>>, ApiError> {
    Ok(Json(read(&m, &q, |s| s.services().cloned().collect()).await?))
}

async fn inspect_service(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Service>, ApiError> {
    read(&m, &q, |s| find_service(s, &id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("service", &id))
}

/// New object ids: 25 base-36 characters from the OS random source.
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = Timestamp::from_system_time(std::time::SystemTime::now()).as_nanos();
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    let hi = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let lo = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    shoal_types::id::id_from_bits(hi, lo)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    pub id: String,
}

async fn create_service(
    State(m): State<AppState>,
    JsonBody(spec): JsonBody<ServiceSpec>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    spec.validate().map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid service spec: {e}"))
    })?;
    let id = new_id();
    let svc = Service::new(ServiceId::new(id.clone()), spec);
    crate::internal::write(&m, Command::CreateService { service: Box::new(svc) }).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdate {
    /// The service version the change is based on (optimistic concurrency); omit to overwrite.
    pub version: Option<u64>,
    pub spec: ServiceSpec,
}

async fn service_id(m: &Manager, key: &str) -> Result<ServiceId, ApiError> {
    read(m, &ReadQuery::default(), |s| find_service(s, key).map(|s| s.id.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found("service", key))
}

async fn update_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
    JsonBody(u): JsonBody<ServiceUpdate>,
) -> Result<Json<Service>, ApiError> {
    // The driver rules are checked here, on the request; `apply` checks only the structure, so
    // commands committed before a rule existed replay as they applied then.
    u.spec.validate().map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid service spec: {e}"))
    })?;
    let id = service_id(&m, &key).await?;
    let cmd = Command::UpdateService { id: id.clone(), expected_version: u.version, spec: Box::new(u.spec) };
    crate::internal::write(&m, cmd).await?;
    let q = ReadQuery { stale: true, ..Default::default() };
    read(&m, &q, |s| s.service(&id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("service", &key))
}

async fn rollback_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Service>, ApiError> {
    let id = service_id(&m, &key).await?;
    crate::internal::write(&m, Command::RollbackService { id: id.clone(), expected_version: None }).await?;
    let q = ReadQuery { stale: true, ..Default::default() };
    read(&m, &q, |s| s.service(&id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("service", &key))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: u64,
}

/// The most replicas one request may ask for (a typo guard, not a cluster limit).
const MAX_REPLICAS: u64 = 100_000;

/// Changes only the replica count, whatever else changes meanwhile (retried on a version race).
async fn scale_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
    JsonBody(r): JsonBody<ScaleRequest>,
) -> Result<Json<Service>, ApiError> {
    if r.replicas > MAX_REPLICAS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("replicas: at most {MAX_REPLICAS}, got {}", r.replicas),
        ));
    }
    let id = service_id(&m, &key).await?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let svc = read(&m, &ReadQuery::default(), |s| s.service(&id).cloned())
            .await?
            .ok_or_else(|| ApiError::not_found("service", &key))?;
        let mut spec = svc.spec.clone();
        match &mut spec.mode {
            shoal_types::ServiceMode::Replicated { replicas } => *replicas = r.replicas,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("service {} is not a replicated service: it cannot be scaled", svc.spec.name),
                ))
            }
        }
        let cmd = Command::UpdateService {
            id: id.clone(),
            expected_version: Some(svc.version),
            spec: Box::new(spec),
        };
        match crate::internal::write(&m, cmd).await {
            Ok(_) => break,
            Err(WriteError::Refused(c)) if c.kind == shoal_manager::ErrorKind::Conflict && attempts < 5 => {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
    let q = ReadQuery { stale: true, ..Default::default() };
    read(&m, &q, |s| s.service(&id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("service", &key))
}

async fn rebalance_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Service>, ApiError> {
    let id = service_id(&m, &key).await?;
    crate::internal::write(&m, Command::RebalanceService { id: id.clone() }).await?;
    let q = ReadQuery { stale: true, ..Default::default() };
    read(&m, &q, |s| s.service(&id).cloned())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("service", &key))
}

async fn remove_service(State(m): State<AppState>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    let id = service_id(&m, &key).await?;
    crate::internal::write(&m, Command::RemoveService { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tasks(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Task>>, ApiError> {
    let tasks = read(&m, &q, |s| {
        let svc = q.service.as_deref().map(|k| find_service(s, k).map(|x| x.id.clone()));
        let node = match q.node.as_deref().map(|k| find_node(s, k)).transpose() {
            Ok(n) => n.map(|n| n.map(|x| x.id.clone())),
            Err(e) => return Err(e),
        };
        match (svc, node) {
            (Some(None), _) => Err(ApiError::not_found("service", q.service.as_deref().unwrap_or(""))),
            (_, Some(None)) => Err(ApiError::not_found("node", q.node.as_deref().unwrap_or(""))),
            (Some(Some(sid)), n) => Ok(s
                .tasks_of_service(&sid)
                .filter(|t| n.as_ref().is_none_or(|n| n.as_ref() == t.node_id.as_ref()))
                .cloned()
                .collect()),
            (None, Some(Some(nid))) => Ok(s.tasks_on_node(&nid).cloned().collect()),
            (None, None) => Ok(s.tasks().cloned().collect()),
        }
    })
    .await??;
    Ok(Json(tasks))
}

async fn openapi() -> Json<serde_json::Value> {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(
                method.to_string(),
                json!({
                    "summary": summary,
                    "responses": {
                        "200": {"description": "success (JSON)"},
                        "4XX": {"description": "bad input: {\"error\": {\"code\", \"message\"}}"},
                        "503": {"description": "no quorum or no leader: {\"error\": {\"code\", \"message\"}}"}
                    }
                }),
            );
        }
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "Shoal API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
    }))
}
