//! The `/v1` HTTP API served by every manager. JSON in and out; errors are
//! `{"error": {"code", "message"}}` with 400/404/409 for bad input and 503 with a clear message
//! when there is no quorum (a write or linearizable read never hangs past the quorum timeout).
//! Reads are linearizable unless the query says `?stale=true`.

use crate::app::{App, AppError, TaskFilter};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shoal_manager::{Consistency, InitError, Manager, ReadError, WriteError};
use shoal_state::{ClusterState, Command};
use shoal_types::{Node, NodeRole, Service, ServiceSpec, Task};
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = e.kind.http_status();
        ApiError::new(status, e.code, e.message)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        AppError::from(e).into()
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        AppError::from(e).into()
    }
}

/// A body the JSON extractor refused, in the API's error format: 413 for one over the size
/// limit, 415 without a JSON content type, else 400.
pub fn json_rejection(e: axum::extract::rejection::JsonRejection) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the limit of {} bytes", MAX_BODY_BYTES),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", e.body_text())
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
    }
}

/// Makes every error answer JSON in the API's format (`{"error": {"code", "message"}}`): the
/// ones the framework writes itself as text or with no body (a body over its limit, a missing
/// content type, a bad path or query) keep their status and headers and get the shape every
/// client parses.
pub async fn json_errors(res: axum::response::Response) -> axum::response::Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    use axum::response::IntoResponse;
    let status = res.status();
    let json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "invalid",
        _ => "internal",
    };
    let message =
        if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let fresh = ApiError::new(status, code, message).into_response();
    let (fresh_parts, fresh_body) = fresh.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    if let Some(ct) = fresh_parts.headers.get(CONTENT_TYPE) {
        parts.headers.insert(CONTENT_TYPE, ct.clone());
    }
    axum::response::Response::from_parts(parts, fresh_body)
}

/// The largest checkpoint file `POST /v1/tasks/restore` takes (it is held in memory while it is
/// checked and handed to the node).
pub const MAX_CHECKPOINT_BYTES: usize = 2 * 1024 * 1024 * 1024;

/// The largest JSON body the API takes (axum's default; a spec, a stack with its secrets).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Rejects malformed JSON bodies with a 400 in the API's error format (415 without a JSON
/// content type, 413 over the size limit). Every request body of the API is a JSON object: any
/// other JSON value is refused, also where serde would read a struct from an array of its
/// fields in order (`[null, null]` for a node update).
pub struct JsonBody<T>(pub T);

/// Whether the request says its body is JSON (`application/json`, `application/*+json`), as
/// axum's `Json` decides.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else { return false };
    kind == "application" && (sub == "json" || sub.ends_with("+json"))
}

/// Refuses a body whose JSON is not an object, before it is read into a type.
pub fn require_json_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the request body is empty: send a JSON object",
        )),
        Some(_) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "the request body must be a JSON object"))
        }
    }
}

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than the limit of {} bytes", MAX_BODY_BYTES),
            ),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text()),
        })?;
        require_json_object(&body)?;
        match Json::<T>::from_bytes(&body) {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct ReadQuery {
    #[serde(default)]
    pub stale: bool,
    pub service: Option<String>,
    pub node: Option<String>,
    #[serde(default)]
    pub force: bool,
}

impl ReadQuery {
    pub fn consistency(&self) -> Consistency {
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

pub use crate::app::{new_id, NodeUpdate};

/// Everything the API serves, for the OpenAPI document and `shoal` CLI discovery.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/v1/cluster", "cluster and Raft status of this manager"),
    ("post", "/v1/cluster/init", "make this manager the first member of a new cluster ({data_path_port})"),
    ("post", "/v1/cluster/join", "join an existing cluster as a manager ({token, addr})"),
    (
        "get",
        "/v1/cluster/backup",
        "a backup of the replicated state (CA key and tokens included: keep it safe)",
    ),
    ("post", "/v1/cluster/restore", "start a new cluster on this fresh manager from a backup file"),
    ("get", "/v1/cluster/health", "every manager: reachable, Raft state, term, log and applied index"),
    ("get", "/v1/cluster/join-token/{role}", "the join token for workers or managers (admins only)"),
    ("post", "/v1/cluster/join-token/{role}/rotate", "replace a join token"),
    (
        "post",
        "/v1/cluster/client-cert",
        "issue an operator's client certificate for the TCP API ({name, csr_pem?, role?: admin|read-only})",
    ),
    ("get", "/v1/nodes", "list nodes"),
    ("get", "/v1/nodes/{id}", "inspect a node (id or hostname)"),
    ("post", "/v1/nodes/{id}/update", "change availability, labels and role (promote/demote)"),
    ("post", "/v1/cluster/leave", "this node leaves the cluster (?force=true for the last manager)"),
    ("delete", "/v1/nodes/{id}", "remove a node (?force=true for a node that is still up)"),
    ("get", "/v1/services", "list services"),
    ("post", "/v1/services", "create a service from a ServiceSpec, or {spec, registry_auth} with registry credentials to seal"),
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
    ("post", "/v1/cluster/autolock", "turn autolock on ({autolock: true}: a new unlock key, shown once) or off"),
    ("get", "/v1/cluster/unlock-key", "the unlock key while autolock is on (admins only)"),
    ("post", "/v1/cluster/unlock", "unlock a manager that autolock keeps locked ({unlock_key}; 409 when not locked)"),
    ("post", "/v1/cluster/unlock-key/rotate", "replace the unlock key (managers rewrap their data keys)"),
    ("get", "/v1/secrets", "list secrets (never their data)"),
    ("post", "/v1/secrets", "create a secret from a SecretSpec ({name, labels, data: base64})"),
    ("get", "/v1/secrets/{id}", "inspect a secret (id, name or id prefix), without its data"),
    ("delete", "/v1/secrets/{id}", "remove a secret that no service uses"),
    ("get", "/v1/configs", "list configs (without their data)"),
    ("post", "/v1/configs", "create a config from a SecretSpec ({name, labels, data: base64})"),
    ("get", "/v1/configs/{id}", "inspect a config, with its data"),
    ("delete", "/v1/configs/{id}", "remove a config that no service uses"),
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
    (
        "post",
        "/v1/tasks/{id}/exec/stream",
        "interactive exec ({cmd, stdin?, tty?, size?}, Upgrade: shoal-exec): stdin, output and exit code streamed in frames",
    ),
    (
        "post",
        "/v1/tasks/{id}/checkpoint",
        "checkpoint a running task into a file ({leave_running?}): a JSON header line, then the archive",
    ),
    (
        "post",
        "/v1/tasks/restore",
        "restore a checkpoint file as its slot's task again (?node=), replacing the task that holds the slot",
    ),
    ("get", "/v1/stacks", "list stacks (the com.docker.stack.namespace labels of services and networks)"),
    (
        "post",
        "/v1/stacks/{name}/deploy",
        "create or update a stack from a StackSpec ({spec, prune}): networks, then services in dependency order",
    ),
    ("get", "/v1/stacks/{name}/services", "the services of a stack"),
    ("get", "/v1/stacks/{name}/tasks", "the tasks of a stack's services"),
    ("delete", "/v1/stacks/{name}", "remove a stack's services, then its networks"),
    ("get", "/v1/services/{id}/logs", "the lines of every task of a service (?follow, ?tail, ?since), NDJSON"),
    ("get", "/v1/tasks/{id}/logs", "the lines of one task (id or unique prefix), NDJSON"),
    ("get", "/v1/events", "object changes as they happen (?since, ?until, ?type), NDJSON"),
    ("post", "/v1/kv/range", "read keys (a RangeRequest, +serializable; keys and values base64)"),
    ("post", "/v1/kv/ops", "a key-value write: put, delete_range, txn, compact, lease_grant, lease_revoke"),
    ("get", "/v1/kv/watch", "changes from a revision (?key, ?range_end base64, ?start_revision), NDJSON"),
    ("get", "/v1/kv/leases", "every lease id"),
    ("get", "/v1/kv/leases/{id}", "a lease's remaining time from the leader (?keys=true)"),
    ("post", "/v1/kv/leases/{id}/keepalive", "renew a lease on the leader"),
    ("get", "/v1/jobs", "scheduled jobs (services in mode scheduled) with their runs"),
    ("get", "/v1/jobs/graph", "the jobs' dependency graph (?format=json|dot|csv)"),
    ("post", "/v1/jobs/{id}/run", "start a run of a scheduled job now"),
    ("post", "/v1/jobs/{id}/suspend", "stop starting scheduled and parent-triggered runs"),
    ("post", "/v1/jobs/{id}/resume", "start them again (no catch-up of what was missed)"),
    ("get", "/v1/units", "fleet units: submitted files and launched services, with their tasks"),
    ("put", "/v1/units/{name}", "submit a systemd unit file with [X-Fleet] options ({text, start?})"),
    ("post", "/v1/units/{name}/start", "launch a submitted unit (or an instance of a submitted template)"),
    ("post", "/v1/units/{name}/stop", "remove a unit's service, keep its file"),
    ("delete", "/v1/units/{name}", "stop a unit and forget its file"),
    ("get", "/v1/openapi.json", "this document"),
];

pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/init", post(cluster_init))
        .route("/v1/cluster/join", post(cluster_join))
        .route("/v1/cluster/leave", post(cluster_leave))
        .route("/v1/cluster/health", get(cluster_health))
        .route("/v1/cluster/backup", get(cluster_backup))
        .route(
            "/v1/cluster/restore",
            post(cluster_restore).layer(axum::extract::DefaultBodyLimit::max(MAX_BACKUP_BYTES)),
        )
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
            post(crate::migrate::restore_handler)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_CHECKPOINT_BYTES)),
        )
        .route("/v1/openapi.json", get(openapi))
        .merge(crate::stack::routes())
        .merge(crate::jobs::routes())
        .merge(crate::secrets::routes())
        .merge(crate::autolock::routes())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint (see /v1/openapi.json)")
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on this endpoint (see /v1/openapi.json)"),
            )
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

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterInfo {
    pub raft: shoal_manager::RaftStatus,
    pub index: u64,
    pub nodes: usize,
    pub services: usize,
    pub tasks: usize,
    /// The UDP port of the VXLAN data path (`cluster init --data-path-port`; 4789 by default).
    #[serde(default = "shoal_state::default_data_path_port")]
    pub data_path_port: u16,
    /// Whether autolock is on (the unlock key is never shown here).
    #[serde(default)]
    pub autolock: bool,
}

async fn cluster(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let raft = m.node.status();
    let (index, nodes, services, tasks, data_path_port, autolock) = read(&m, &q, |s| {
        let port = s.cluster().map_or(shoal_state::DEFAULT_DATA_PATH_PORT, |c| c.data_path_port);
        (s.index(), s.nodes().len(), s.services().len(), s.tasks().len(), port, s.unlock_key().is_some())
    })
    .await?;
    Ok(Json(ClusterInfo { raft, index, nodes, services, tasks, data_path_port, autolock }))
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
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
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
        require_json_object(&body)?;
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

/// The largest backup `POST /v1/cluster/restore` takes.
const MAX_BACKUP_BYTES: usize = 4 << 30;

/// `GET /v1/cluster/backup`: the backup file (see [`crate::backup`]).
async fn cluster_backup(State(m): State<AppState>) -> Result<axum::response::Response, ApiError> {
    let (header, bytes) = app(&m).backup().await?;
    tracing::info!(raft_index = header.raft_index, bytes = bytes.len(), "backup taken");
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `POST /v1/cluster/restore` (the backup file as the body): a new cluster from it.
async fn cluster_restore(
    State(m): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<ClusterInfo>, ApiError> {
    app(&m).restore(body.to_vec()).await?;
    cluster(State(m), Query(ReadQuery::default())).await
}

async fn cluster_health(State(m): State<AppState>) -> Json<Vec<crate::internal::ManagerHealth>> {
    Json(crate::internal::cluster_health(&m).await)
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinArgs {
    pub token: String,
    pub addr: String,
}

/// What `cluster join` reports.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
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

fn app(m: &AppState) -> App {
    App::new(m.clone())
}

async fn list_nodes(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Node>>, ApiError> {
    Ok(Json(app(&m).nodes(q.consistency()).await?))
}

async fn inspect_node(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Node>, ApiError> {
    Ok(Json(app(&m).node(&id, q.consistency()).await?))
}

async fn update_node(
    State(m): State<AppState>,
    Path(id): Path<String>,
    JsonBody(u): JsonBody<NodeUpdate>,
) -> Result<Json<Node>, ApiError> {
    Ok(Json(app(&m).update_node(&id, &u).await?))
}

async fn remove_node(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<StatusCode, ApiError> {
    app(&m).remove_node(&id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_services(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Service>>, ApiError> {
    Ok(Json(app(&m).services(q.consistency()).await?))
}

async fn inspect_service(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(app(&m).service(&id, q.consistency()).await?))
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Created {
    pub id: String,
    /// Things the operator should know (an image no node has, as Swarm warns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/services` with registry credentials: the spec and, next to it (never inside it),
/// the credentials, which the managers seal before they are stored. A bare [`ServiceSpec`] is
/// the request without credentials.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCreate {
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::registry_auth::RegistryAuth>,
}

async fn create_service(
    State(m): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    require_json_object(&body)?;
    // A ServiceSpec has no `spec` field: an object with one is the envelope with credentials.
    let probe: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let envelope = probe.as_object().is_some_and(|o| o.contains_key("spec"));
    let invalid = |e: axum::extract::rejection::JsonRejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())
    };
    let (spec, auth) = if envelope {
        let Json(c) = Json::<ServiceCreate>::from_bytes(&body).map_err(invalid)?;
        (c.spec, c.registry_auth)
    } else {
        (Json::<ServiceSpec>::from_bytes(&body).map_err(invalid)?.0, None)
    };
    let (id, warnings) = app(&m).create_service_resolving_image(spec, auth).await?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string(), warnings })))
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdate {
    /// The service version the change is based on (optimistic concurrency); omit to overwrite.
    pub version: Option<u64>,
    pub spec: ServiceSpec,
    /// New registry credentials (`--with-registry-auth`), sealed by the managers; without them
    /// the service keeps its sealed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::registry_auth::RegistryAuth>,
}

async fn update_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
    JsonBody(u): JsonBody<ServiceUpdate>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(app(&m).update_service_with_auth(&key, u.version, u.spec, u.registry_auth).await?))
}

async fn rollback_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(app(&m).rollback_service(&key).await?))
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: u64,
}

async fn scale_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
    JsonBody(r): JsonBody<ScaleRequest>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(app(&m).scale_service(&key, r.replicas).await?))
}

async fn rebalance_service(
    State(m): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Service>, ApiError> {
    Ok(Json(app(&m).rebalance_service(&key).await?))
}

async fn remove_service(State(m): State<AppState>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    app(&m).remove_service(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tasks(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Task>>, ApiError> {
    let filter = TaskFilter { service: q.service.clone(), node: q.node.clone() };
    Ok(Json(app(&m).tasks(&filter, q.consistency()).await?))
}

/// `GET /v1/openapi.json`: generated from the types (see [`crate::openapi`]).
async fn openapi() -> Json<serde_json::Value> {
    crate::openapi::serve().await
}
