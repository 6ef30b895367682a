//! Task logs, from wherever the tasks run (`shoal service logs`).
//!
//! Every node's agent serves `GET /internal/agent/logs?task=ID&tail=N&since=NANOS&follow=BOOL` on
//! its node-to-node listener (mutual TLS; manager certificates only): newline-delimited JSON
//! [`LogRecord`]s read through the task's driver. A manager's `GET /v1/services/{id}/logs` asks the
//! agent of every node that ran one of the service's tasks — its own in-process, others over TLS
//! (verifying the node's certificate name) — and merges the lines: sorted by time for a snapshot,
//! in arrival order while following. `GET /v1/tasks/{id}/logs` does the same for one task. Both
//! take an id, an id's unique prefix, or (a service) its name, as docker does; each line says
//! where it came from ([`LogOrigin`]) so that the CLI can name it as the user asks.

use crate::app::{find_service, resolve_prefix, Lookup};
use crate::server::ApiError;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use shoal_agent::Agent;
use shoal_driver::{LogOptions, LogStream};
use shoal_manager::Manager;
use shoal_pki::{NodeIdentity, Role};
use shoal_state::ClusterState;
use shoal_types::{Node, NodeId, Service, Task, TaskId, Timestamp};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The node's agent, once it runs (the listener starts before the agent does).
pub type AgentSlot = Arc<OnceLock<Arc<Agent>>>;

/// One log line of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogRecord {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: u64,
    pub stream: LogStream,
    pub line: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_id: String,
    /// `<service>.<slot or node>.<task id>@<node>`, for display.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The task's service, slot and node, by name and by id (`service logs --no-resolve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<LogOrigin>,
}

/// Where a task's lines come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct LogOrigin {
    pub service_id: String,
    pub service_name: String,
    /// The task's slot; `None` for a global service's task (its node names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    pub node_id: String,
    /// The node's hostname.
    pub node_name: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogQuery {
    #[serde(default)]
    pub task: String,
    #[serde(default)]
    pub tail: Option<usize>,
    /// Nanoseconds since the Unix epoch.
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub follow: bool,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

fn options(q: &LogQuery) -> LogOptions {
    LogOptions {
        follow: q.follow,
        tail: q.tail,
        since: q.since.map(|n| UNIX_EPOCH + Duration::from_nanos(n)),
    }
}

/// A stream of NDJSON lines from a channel.
fn ndjson(rx: mpsc::Receiver<LogRecord>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let rec = rx.recv().await?;
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(line)), rx))
    });
    ([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

/// Lines of one task on this node, through its driver.
async fn local_logs(
    agent: &Agent,
    task: &TaskId,
    q: &LogQuery,
    out: mpsc::Sender<LogRecord>,
    source: Source,
) -> Result<(), String> {
    let (driver, handle) = agent
        .task_handle(task)
        .ok_or_else(|| format!("task {task} is not on this node (or never started)"))?;
    let mut rx = driver.logs(&handle, &options(q)).await.map_err(|e| e.to_string())?;
    while let Some(item) = rx.recv().await {
        let Ok(l) = item else { break };
        let rec = LogRecord {
            timestamp: nanos(l.timestamp),
            stream: l.stream,
            line: l.line,
            task_id: task.to_string(),
            source: source.text.clone(),
            origin: source.origin.clone(),
        };
        if out.send(rec).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn agent_logs(
    State(slot): State<AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    if !matches!(peer, Some(NodeIdentity { role: Role::Manager, .. })) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a manager certificate of this cluster is required",
        ));
    }
    let agent = slot.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the agent is not running yet")
    })?;
    let task = TaskId::new(q.task.clone());
    // Fail early (404) when the task is not here, rather than with an empty stream.
    if agent.task_handle(&task).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("task {task} has no logs on this node"),
        ));
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = local_logs(&agent, &task, &q, tx, Source::default()).await {
            tracing::debug!(error = %e, "task logs");
        }
    });
    Ok(ndjson(rx))
}

/// The agent's endpoints on a node's node-to-node listener.
pub fn agent_router(slot: AgentSlot) -> Router {
    Router::new()
        .route("/internal/agent/logs", get(agent_logs))
        .route(crate::exec::AGENT_EXEC_PATH, crate::exec::agent_exec_route())
        .route(crate::exec_stream::AGENT_EXEC_STREAM_PATH, crate::exec_stream::agent_exec_stream_route())
        .route("/internal/agent/checkpoint", axum::routing::post(crate::migrate::agent_checkpoint))
        .route(
            "/internal/agent/checkpoint/{id}",
            axum::routing::delete(crate::migrate::agent_forget_checkpoint),
        )
        .route("/internal/agent/checkpoint/{id}/archive", get(crate::migrate::agent_archive))
        .route("/internal/agent/images/{reference}", get(crate::images::agent_image))
        .route("/internal/agent/blobs/sha256/{hex}", get(crate::images::agent_blob))
        .with_state(slot)
}

/// Streams one task's lines from the agent of another node.
async fn remote_logs(
    tls: Arc<rustls::ClientConfig>,
    addr: &str,
    node: &NodeId,
    q: &LogQuery,
    out: mpsc::Sender<LogRecord>,
    source: Source,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let server_name = shoal_pki::node_dns_name(node.as_str());
    let path = format!("/internal/agent/logs?{}", query_string(q));
    let resp = crate::internal::open(tls, addr, &server_name, hyper::Method::GET, &path, None).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(crate::internal::remote_error(status, &bytes));
    }
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Ok(mut rec) = serde_json::from_slice::<LogRecord>(&line) {
                rec.task_id = q.task.clone();
                rec.source = source.text.clone();
                rec.origin = source.origin.clone();
                if out.send(rec).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

fn query_string(q: &LogQuery) -> String {
    let mut parts = vec![format!("task={}", q.task), format!("follow={}", q.follow)];
    if let Some(t) = q.tail {
        parts.push(format!("tail={t}"));
    }
    if let Some(s) = q.since {
        parts.push(format!("since={s}"));
    }
    parts.join("&")
}

/// What `/v1/services/{id}/logs` needs besides the manager: its own agent.
#[derive(Clone)]
pub struct LogsState {
    pub manager: Arc<Manager>,
    pub agent: AgentSlot,
}

/// How a manager names a task's lines.
#[derive(Clone, Debug, Default)]
struct Source {
    /// `<service>.<slot or node>.<task id>@<node>`.
    text: String,
    origin: Option<LogOrigin>,
}

fn source_of(t: &Task, svc: &Service, node: &Node) -> Source {
    let slot = t
        .slot
        .map_or_else(|| t.node_id.as_ref().map_or_else(String::new, |n| n.to_string()), |s| s.to_string());
    let id: String = t.id.as_str().chars().take(12).collect();
    let node_name = &node.description.hostname;
    Source {
        text: format!("{}.{slot}.{id}@{node_name}", svc.spec.name),
        origin: Some(LogOrigin {
            service_id: svc.id.to_string(),
            service_name: svc.spec.name.clone(),
            slot: t.slot,
            node_id: node.id.to_string(),
            node_name: node_name.clone(),
        }),
    }
}

/// A task whose lines to read: on which node (id, address), named how.
type Target = (TaskId, NodeId, String, Source);

/// The tasks of `tasks` that have lines (they started), in slot order, with their nodes.
fn targets(s: &ClusterState, svc: &Service, tasks: Vec<Task>) -> Vec<Target> {
    let mut tasks: Vec<Task> =
        tasks.into_iter().filter(|t| t.status.state >= shoal_types::TaskState::Starting).collect();
    tasks.sort_by(|a, b| (a.slot, &a.id).cmp(&(b.slot, &b.id)));
    tasks
        .into_iter()
        .filter_map(|t| {
            let node = s.node(t.node_id.as_ref()?)?;
            let source = source_of(&t, svc, node);
            Some((t.id.clone(), node.id.clone(), node.status.addr.clone(), source))
        })
        .collect()
}

fn not_found(what: &str, key: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {key} not found"))
}

async fn service_logs(
    State(st): State<LogsState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    // Which tasks, on which nodes (name and address), from this manager's replica.
    let targets = {
        let d = st.manager.node.local_state();
        let s = &d.state;
        let key = resolve_prefix(s, Lookup::Service, &id)?.ok_or_else(|| not_found("service", &id))?;
        let svc = find_service(s, &key).ok_or_else(|| not_found("service", &id))?;
        targets(s, svc, s.tasks_of_service(&svc.id).cloned().collect())
    };
    read_logs(&st, targets, q).await
}

/// One task's lines (`service logs TASK`): the task by id or unique id prefix.
async fn task_logs(
    State(st): State<LogsState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let targets = {
        let d = st.manager.node.local_state();
        let s = &d.state;
        let key = resolve_prefix(s, Lookup::Task, &id)?.ok_or_else(|| not_found("task", &id))?;
        let task = s.task(&TaskId::new(key)).ok_or_else(|| not_found("task", &id))?;
        let svc = s.service(&task.service_id).ok_or_else(|| not_found("task", &id))?;
        targets(s, svc, vec![task.clone()])
    };
    read_logs(&st, targets, q).await
}

/// The lines of `targets`, each asked of its node's agent (this node's in-process), merged.
async fn read_logs(st: &LogsState, targets: Vec<Target>, q: LogQuery) -> Result<Response, ApiError> {
    let m = st.manager.clone();
    let me = NodeId::new(m.node.config().node.node_id.clone());
    let (tx, mut rx) = mpsc::channel::<LogRecord>(1024);
    for (task, node, addr, source) in targets {
        let tx = tx.clone();
        let q = LogQuery { task: task.to_string(), ..q.clone() };
        let agent = st.agent.get().cloned();
        let tls = m.client_tls();
        let local = node == me;
        tokio::spawn(async move {
            let r = if local {
                match agent {
                    Some(a) => local_logs(&a, &task, &q, tx, source).await,
                    None => Err("the agent is not running yet".into()),
                }
            } else {
                match tls {
                    Some(tls) => remote_logs(tls, &addr, &node, &q, tx, source).await,
                    None => Err("this manager has no certificate".into()),
                }
            };
            if let Err(e) = r {
                tracing::debug!(task = %task, error = %e, "logs unavailable");
            }
        });
    }
    drop(tx);
    if q.follow {
        return Ok(ndjson(rx));
    }
    // A snapshot: everything, in time order.
    let mut all = Vec::new();
    while let Some(r) = rx.recv().await {
        all.push(r);
    }
    all.sort_by(|a, b| (a.timestamp, &a.task_id).cmp(&(b.timestamp, &b.task_id)));
    let (tx, rx) = mpsc::channel(all.len().max(1));
    for r in all {
        let _ = tx.try_send(r);
    }
    drop(tx);
    Ok(ndjson(rx))
}

/// `GET /v1/services/{id}/logs` and `GET /v1/tasks/{id}/logs`.
pub fn service_logs_router(st: LogsState) -> Router {
    Router::new()
        .route("/v1/services/{id}/logs", get(service_logs))
        .route("/v1/tasks/{id}/logs", get(task_logs))
        .with_state(st)
}

/// For the CLI: a timestamp of a record.
pub fn record_time(r: &LogRecord) -> Timestamp {
    Timestamp::from_nanos(r.timestamp)
}
