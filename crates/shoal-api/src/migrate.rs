//! Live migration of a running task (checkpoint → transfer over the cluster's mTLS → restore),
//! coordinated by the manager that received `POST /v1/tasks/{id}/migrate`:
//!
//! 1. The target is chosen by the brain ([`shoal_core::migrate::target`]): a ready, active node
//!    whose driver can restore, that the scheduler would accept.
//! 2. The source node's agent checkpoints the task (it stops; the agent keeps it as it is until
//!    the managers move it, so its slot is not restarted) and keeps the checkpoint directory,
//!    with the key the managers derive from the cluster's CA key for this checkpoint and the
//!    binding (cluster, task, checkpoint) to sign it with when it is sent.
//! 3. The manager commits `MigrateTask` through Raft: the old task is told to stop, a new task
//!    takes its slot on the target with `restore` set (where to fetch the checkpoint, its key).
//! 4. The target's agent fetches the checkpoint from the source node's agent (node to node,
//!    mTLS) as a stream ([`shoal_driver_oci::checkpoint_stream`]): the source tars and signs it
//!    frame by frame while sending, the target verifies each frame before unpacking it, with no
//!    archive file on either side. Then it restores the task.
//!
//! **A migration never loses the task**: if anything fails after the checkpoint (the commit,
//! the transfer, verification, the restore), the task is restored on its own node from the copy
//! its agent kept, and the error says what failed. At most [`PER_NODE`] migrations leave one
//! node at a time.
//!
//! Checkpoint files (`task checkpoint` / `task restore`) are a JSON header line plus the same
//! stream (files of earlier versions hold a signed archive instead, and are still accepted); a
//! restored file is kept by the manager that received it until the task runs.

use crate::server::ApiError;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shoal_manager::Manager;
use shoal_pki::{NodeIdentity, Role};
use shoal_state::Command;
use shoal_types::{NodeId, RestoreSpec, Task, TaskId, TaskState, TaskStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Concurrent migrations out of one node.
pub const PER_NODE: usize = 2;
/// How long the new task may take to run before the migration falls back.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /v1/tasks/{id}/migrate`.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MigrateRequest {
    /// The target node (id or hostname); none: the brain chooses.
    #[serde(default)]
    pub to: Option<String>,
}

/// What a migration did.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Migration {
    pub from_task: String,
    /// The task that runs now (restored on `to_node`, or back on `from_node` after a failure).
    pub task: String,
    pub from_node: String,
    pub to_node: String,
    pub checkpoint_id: String,
    /// The checkpoint's size: its files (the stream adds tar headers and a 37-byte frame
    /// header and tag per MiB).
    pub archive_bytes: u64,
    /// From the checkpoint's start to the restored task running (the task's downtime).
    pub downtime_ms: u64,
    pub total_ms: u64,
    /// Set when the migration failed and the task was restored on its own node: what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// The source agent's part (`POST /internal/agent/checkpoint`).
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointRequest {
    pub task_id: String,
    pub checkpoint_id: String,
    pub key_hex: String,
    pub binding: String,
    /// A snapshot: the task goes on running.
    #[serde(default)]
    pub leave_running: bool,
    /// The `corrupt-checkpoint` failpoint of the coordinating manager: flip a byte of the stream.
    #[serde(default)]
    pub corrupt: bool,
}

/// The source agent's answer: the checkpoint stays there, for the restoring node to fetch.
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpointed {
    pub archive_bytes: u64,
    pub freeze_ms: u64,
}

/// Where a node's agent serves the archive of checkpoint `id`.
fn agent_archive_path(id: &str) -> String {
    format!("/internal/agent/checkpoint/{id}/archive")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The archive key for `checkpoint_id`: an HMAC of the id under a key derived from the cluster's
/// CA key, so only this cluster's managers can make or check it.
fn checkpoint_key(ca_key_pem: &str, checkpoint_id: &str) -> String {
    use ring::hmac;
    let root = ring::digest::digest(&ring::digest::SHA256, ca_key_pem.as_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA256, root.as_ref());
    hex(hmac::sign(&key, format!("shoal checkpoint {checkpoint_id}").as_bytes()).as_ref())
}

fn unavailable(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
}

fn failpoint(name: &str) -> bool {
    std::env::var("SHOAL_FAILPOINTS").is_ok_and(|v| v.split(',').any(|f| f.trim() == name))
}

/// Where a manager keeps checkpoint archives.
pub fn archive_dir(m: &Manager) -> PathBuf {
    m.tls_dir().parent().map_or_else(|| PathBuf::from("checkpoints"), |d| d.join("checkpoints"))
}

fn per_node(node: &NodeId) -> Arc<tokio::sync::Semaphore> {
    static SEMS: OnceLock<Mutex<BTreeMap<NodeId, Arc<tokio::sync::Semaphore>>>> = OnceLock::new();
    let map = SEMS.get_or_init(Mutex::default);
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(node.clone())
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PER_NODE)))
        .clone()
}

/// `POST /v1/tasks/{id}/migrate`.
pub async fn migrate_handler(
    State(m): State<Arc<Manager>>,
    UrlPath(id): UrlPath<String>,
    crate::server::JsonBody(r): crate::server::JsonBody<MigrateRequest>,
) -> Result<Json<Migration>, ApiError> {
    let result = migrate(&m, &TaskId::new(id), r.to.as_deref()).await?;
    if let Some(why) = &result.failed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "migration_failed",
            format!(
                "migration failed, the task runs again on {} (task {}): {why}",
                result.from_node, result.task
            ),
        ));
    }
    Ok(Json(result))
}

/// Migrates one task; see the module documentation.
pub async fn migrate(m: &Arc<Manager>, id: &TaskId, to: Option<&str>) -> Result<Migration, ApiError> {
    let started = Instant::now();
    let invalid = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg);
    // What to move, where to, and how to sign it: from one linearizable read.
    let plan = crate::internal::read_linearizable(m, |s| {
        let task = s.task(id).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("task {id} not found"))
        })?;
        // Its addresses are allocated per task and its namespace built on its node: a restored
        // copy elsewhere would come back with other addresses. Refused rather than broken.
        if !task.networks.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "task {id} is on overlay networks: live migration would change its addresses, which is not \
                     supported yet (move it with a rolling update instead)"
                ),
            ));
        }
        let to = match to {
            Some(key) => Some(
                crate::app::find_node(s, key)?
                    .map(|n| n.id.clone())
                    .ok_or_else(|| ApiError::from(crate::app::AppError::not_found("node", key)))?,
            ),
            None => None,
        };
        let target = shoal_core::migrate::target(s, &task, to.as_ref()).map_err(invalid)?;
        let node = |n: &NodeId| s.node(n).map(|x| (x.description.hostname.clone(), x.status.addr.clone()));
        let source = task.node_id.clone().ok_or_else(|| invalid("the task has no node".into()))?;
        let cluster = s.cluster().cloned().ok_or_else(|| unavailable("the cluster is not initialized"))?;
        Ok::<_, ApiError>((task, source.clone(), node(&source), target.clone(), node(&target), cluster))
    })
    .await??;
    let (task, source, source_info, target, target_info, cluster) = plan;
    let (Some((source_name, source_addr)), Some((target_name, _))) = (source_info, target_info) else {
        return Err(unavailable("a node of the migration disappeared"));
    };
    let _slot = per_node(&source).acquire_owned().await.map_err(|e| unavailable(e.to_string()))?;
    let checkpoint_id = shoal_manager::random_id();
    let key_hex = checkpoint_key(&cluster.ca_key_pem, &checkpoint_id);
    let binding = format!("shoal/{}/{}/{}", cluster.id, task.id, checkpoint_id);
    let tls = m.client_tls().ok_or_else(|| unavailable("this manager has no certificate yet"))?;
    tracing::info!(task = %task.id, from = %source_name, to = %target_name, checkpoint = %checkpoint_id, "migrating a task");

    // 2. Checkpoint on the source. Until this succeeds nothing has changed: a failure is an error.
    let req = CheckpointRequest {
        task_id: task.id.to_string(),
        checkpoint_id: checkpoint_id.clone(),
        key_hex: key_hex.clone(),
        binding: binding.clone(),
        leave_running: false,
        corrupt: failpoint("corrupt-checkpoint"),
    };
    let frozen_at = Instant::now();
    let done = checkpoint_on(&tls, &source_addr, &source, &req).await.map_err(|e| {
        ApiError::new(StatusCode::CONFLICT, "checkpoint_failed", format!("checkpoint on {source_name}: {e}"))
    })?;
    let archive_bytes = done.archive_bytes;
    // The target fetches the checkpoint from the source node directly (mTLS between nodes).
    let restore = RestoreSpec {
        from_task: task.id.clone(),
        from_node: source.clone(),
        checkpoint_id: checkpoint_id.clone(),
        source_addr: source_addr.clone(),
        source_path: agent_archive_path(&checkpoint_id),
        source_server_name: shoal_pki::node_dns_name(source.as_str()),
        key_hex: key_hex.clone(),
        binding: binding.clone(),
    };
    // 3-4. Commit, wait for the restore; any failure from here on restores the task at home.
    let moved = async {
        if failpoint("migrate-after-checkpoint") {
            return Err("failpoint migrate-after-checkpoint".to_string());
        }
        let new = moved_task(&task, &target, restore.clone());
        let new_id = new.id.clone();
        commit(m, &task.id, new).await?;
        wait_running(m, &new_id).await.map(|()| new_id)
    }
    .await;
    let mut out = Migration {
        from_task: task.id.to_string(),
        task: String::new(),
        from_node: source_name.clone(),
        to_node: target_name.clone(),
        checkpoint_id: checkpoint_id.clone(),
        archive_bytes,
        downtime_ms: 0,
        total_ms: 0,
        failed: None,
    };
    match moved {
        Ok(new_id) => {
            out.task = new_id.to_string();
            out.downtime_ms = frozen_at.elapsed().as_millis() as u64;
            forget_checkpoint(&tls, &source_addr, &source, &checkpoint_id).await;
            let metrics = shoal_metrics::metrics();
            metrics.count_migration("moved");
            metrics.migration_downtime_seconds.observe(frozen_at.elapsed().as_secs_f64());
            tracing::info!(task = %new_id, from = %source_name, to = %target_name, downtime_ms = out.downtime_ms, "task migrated");
        }
        Err(why) => {
            tracing::warn!(task = %task.id, error = %why, "migration failed; restoring the task on its own node");
            let home = RestoreSpec { source_addr: String::new(), source_path: String::new(), ..restore };
            let back = restore_at_home(m, &task, &source, home).await;
            forget_checkpoint(&tls, &source_addr, &source, &checkpoint_id).await;
            match back {
                Ok(id) => {
                    shoal_metrics::metrics().count_migration("restored_at_home");
                    out.task = id.to_string();
                    out.to_node = source_name.clone();
                    out.downtime_ms = frozen_at.elapsed().as_millis() as u64;
                    out.failed = Some(why);
                }
                Err(e) => {
                    shoal_metrics::metrics().count_migration("lost");
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "migration_failed",
                        format!("migration failed ({why}) and restoring the task on {source_name} failed too ({e}); its slot restarts from scratch"),
                    ));
                }
            }
        }
    }
    out.total_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

/// The task that continues `old` on `node` from a checkpoint: same slot, spec and history.
fn moved_task(old: &Task, node: &NodeId, restore: RestoreSpec) -> Task {
    Task {
        id: TaskId::new(shoal_manager::random_id()),
        version: 0,
        node_id: Some(node.clone()),
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::Assigned,
            message: format!("migrating from task {}", old.id),
            ..Default::default()
        },
        restore: Some(restore),
        ..old.clone()
    }
}

async fn commit(m: &Manager, old: &TaskId, new: Task) -> Result<(), String> {
    // The old task's version as it is now (its status may have been reported meanwhile).
    for _ in 0..5 {
        let version =
            m.node.read(shoal_manager::Consistency::Stale, |s| s.task(old).map(|t| t.version)).await;
        let version = version.map_err(|e| e.to_string())?.ok_or_else(|| format!("task {old} disappeared"))?;
        let cmd =
            Command::MigrateTask { task_id: old.clone(), task_version: version, task: Box::new(new.clone()) };
        match crate::internal::write(m, cmd).await {
            Ok(_) => return Ok(()),
            Err(shoal_manager::WriteError::Refused(c)) if c.message.contains("changed concurrently") => {
                continue
            }
            Err(e) => return Err(format!("committing the move: {e}")),
        }
    }
    Err("committing the move: the task kept changing".into())
}

/// Waits until `id` runs (Ok) or fails (Err with its error).
async fn wait_running(m: &Manager, id: &TaskId) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + RESTORE_TIMEOUT;
    let mut events = m.node.subscribe();
    loop {
        let t = m
            .node
            .read(shoal_manager::Consistency::Stale, |s| {
                let t = s.task(id).cloned()?;
                let host = t.node_id.as_ref().and_then(|n| s.node(n)).map(|n| n.description.hostname.clone());
                Some((t, host.unwrap_or_default()))
            })
            .await;
        let (t, node) = t.map_err(|e| e.to_string())?.ok_or_else(|| format!("task {id} disappeared"))?;
        match t.status.state {
            TaskState::Running => return Ok(()),
            s if s.is_terminal() => {
                return Err(format!(
                    "restore on {node}: {}",
                    if t.status.err.is_empty() { t.status.message } else { t.status.err }
                ));
            }
            _ => {}
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(format!("the restored task did not run within {}s", RESTORE_TIMEOUT.as_secs()))
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err("the manager is stopping".into())
            }
            Ok(_) => {}
        }
    }
}

/// After a failure: the task continues on its own node from the checkpoint its agent kept. The
/// task to replace is whichever holds the slot now (the original, or a new one that failed).
async fn restore_at_home(
    m: &Manager,
    original: &Task,
    home: &NodeId,
    spec: RestoreSpec,
) -> Result<TaskId, String> {
    let holder = m
        .node
        .read(shoal_manager::Consistency::Stale, |s| {
            s.tasks_of_service(&original.service_id)
                .filter(|t| t.slot == original.slot && t.desired_state == TaskState::Running)
                .max_by_key(|t| t.created_at)
                .map(|t| t.id.clone())
        })
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the task's slot has no task any more")?;
    let new = moved_task(original, home, spec);
    let id = new.id.clone();
    commit(m, &holder, new).await?;
    wait_running(m, &id).await?;
    Ok(id)
}

/// Asks the source node's agent to checkpoint; the checkpoint stays there.
async fn checkpoint_on(
    tls: &Arc<rustls::ClientConfig>,
    addr: &str,
    node: &NodeId,
    req: &CheckpointRequest,
) -> Result<Checkpointed, String> {
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    let bytes =
        node_call(tls, addr, node, hyper::Method::POST, "/internal/agent/checkpoint", Some(body)).await?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// One request to a node's agent (its certificate must name the node); the whole body.
async fn node_call(
    tls: &Arc<rustls::ClientConfig>,
    addr: &str,
    node: &NodeId,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let server_name = shoal_pki::node_dns_name(node.as_str());
    let fut = async {
        let resp = crate::internal::open(tls.clone(), addr, &server_name, method, path, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(crate::internal::remote_error(status, &bytes));
        }
        Ok(bytes.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(300), fut)
        .await
        .map_err(|_| "no answer within 300s".to_string())?
}

/// Tells the source agent it may delete the checkpoint it kept (best effort).
async fn forget_checkpoint(tls: &Arc<rustls::ClientConfig>, addr: &str, node: &NodeId, id: &str) {
    let path = format!("/internal/agent/checkpoint/{id}");
    let name = shoal_pki::node_dns_name(node.as_str());
    if let Err(e) = crate::internal::open(tls.clone(), addr, &name, hyper::Method::DELETE, &path, None).await
    {
        tracing::debug!(error = %e, "could not tell the source to delete its checkpoint");
    }
}

/// The first line of a checkpoint file (`shoal task checkpoint --output`); the signed stream
/// follows. Every field is part of what the stream's MACs bind, so none can be changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileHeader {
    pub shoal_checkpoint: u32,
    pub cluster_id: String,
    pub service_id: String,
    pub slot: Option<u64>,
    pub task_id: String,
    pub checkpoint_id: String,
}

/// `POST /v1/tasks/{id}/checkpoint`.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckpointToFile {
    /// A snapshot: the task goes on running. Without it the task stops and its slot restarts
    /// from scratch, as for any stopped task (`task restore` brings the checkpoint back).
    #[serde(default)]
    pub leave_running: bool,
}

/// `POST /v1/tasks/{id}/checkpoint`: the task's checkpoint as a file (header line + archive).
pub async fn checkpoint_handler(
    State(m): State<Arc<Manager>>,
    UrlPath(id): UrlPath<String>,
    crate::server::JsonBody(r): crate::server::JsonBody<CheckpointToFile>,
) -> Result<Response, ApiError> {
    let invalid = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg);
    let id = TaskId::new(id);
    let (task, source, addr, cluster) = crate::internal::read_linearizable(&m, |s| {
        let task = s.task(&id).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("task {id} not found"))
        })?;
        let source = shoal_core::migrate::check_source(s, &task).map_err(invalid)?;
        let addr = s.node(&source).map(|n| n.status.addr.clone()).unwrap_or_default();
        let cluster = s.cluster().cloned().ok_or_else(|| unavailable("the cluster is not initialized"))?;
        Ok::<_, ApiError>((task, source, addr, cluster))
    })
    .await??;
    let header = FileHeader {
        shoal_checkpoint: 1,
        cluster_id: cluster.id.clone(),
        service_id: task.service_id.to_string(),
        slot: task.slot,
        task_id: task.id.to_string(),
        checkpoint_id: shoal_manager::random_id(),
    };
    let tls = m.client_tls().ok_or_else(|| unavailable("this manager has no certificate yet"))?;
    let req = CheckpointRequest {
        task_id: task.id.to_string(),
        checkpoint_id: header.checkpoint_id.clone(),
        key_hex: checkpoint_key(&cluster.ca_key_pem, &header.checkpoint_id),
        binding: file_binding(&header),
        leave_running: r.leave_running,
        corrupt: false,
    };
    checkpoint_on(&tls, &addr, &source, &req)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "checkpoint_failed", format!("checkpoint: {e}")))?;
    let path = agent_archive_path(&header.checkpoint_id);
    let fetched = node_call(&tls, &addr, &source, hyper::Method::GET, &path, None).await;
    forget_checkpoint(&tls, &addr, &source, &header.checkpoint_id).await;
    let archive = fetched.map_err(|e| unavailable(format!("fetching the checkpoint: {e}")))?;
    if !r.leave_running {
        // The task is stopped: tell the managers, so its slot is filled again at once.
        let version = crate::internal::read_linearizable(&m, |s| s.task(&task.id).map(|t| t.version)).await?;
        if let Some(version) = version {
            let plan = shoal_state::Plan {
                set_desired: vec![shoal_state::DesiredChange {
                    task_id: task.id.clone(),
                    task_version: version,
                    desired_state: TaskState::Shutdown,
                }],
                ..Default::default()
            };
            crate::internal::write(&m, Command::ApplyPlan { plan }).await?;
        }
    }
    let mut file = serde_json::to_vec(&header).map_err(|e| unavailable(e.to_string()))?;
    file.push(b'\n');
    file.extend_from_slice(&archive);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], file).into_response())
}

fn file_binding(h: &FileHeader) -> String {
    format!("shoal-file/{}/{}/{:?}/{}/{}", h.cluster_id, h.service_id, h.slot, h.task_id, h.checkpoint_id)
}

/// `POST /v1/tasks/restore?node=`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct RestoreQuery {
    pub node: Option<String>,
}

/// `POST /v1/tasks/restore` with a checkpoint file as the body: the checkpoint becomes the task
/// of its slot again (on `node`, else where the slot's task runs, else where it fits), replacing
/// the task that holds the slot now. The file is verified before anything changes: a tampered
/// file, or one from another cluster, is refused.
pub async fn restore_handler(
    State(m): State<Arc<Manager>>,
    axum::extract::Query(q): axum::extract::Query<RestoreQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Migration>, ApiError> {
    let started = Instant::now();
    let invalid = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg);
    let nl = body
        .iter()
        .take(4096)
        .position(|b| *b == b'\n')
        .ok_or_else(|| invalid("not a Shoal checkpoint file".into()))?;
    let header: FileHeader = serde_json::from_slice(&body[..nl])
        .map_err(|e| invalid(format!("not a Shoal checkpoint file: {e}")))?;
    safe_id(&header.checkpoint_id)?;
    let archive = body.slice(nl + 1..);
    let plan = crate::internal::read_linearizable(&m, |s| {
        let cluster = s.cluster().cloned().ok_or_else(|| unavailable("the cluster is not initialized"))?;
        if cluster.id != header.cluster_id {
            return Err(invalid(format!(
                "the checkpoint was made by another cluster ({})",
                header.cluster_id
            )));
        }
        let holder = s
            .tasks_of_service(&shoal_types::ServiceId::new(header.service_id.clone()))
            .filter(|t| t.slot == header.slot && t.desired_state == TaskState::Running)
            .max_by_key(|t| t.created_at)
            .cloned()
            .ok_or_else(|| invalid("the checkpoint's service or slot no longer exists".into()))?;
        let wanted = match &q.node {
            Some(key) => Some(
                crate::app::find_node(s, key)?
                    .map(|n| n.id.clone())
                    .ok_or_else(|| ApiError::from(crate::app::AppError::not_found("node", key)))?,
            ),
            None => None,
        };
        // Where: the node asked for, else the slot's node, else any node that can restore it.
        let mut sched = shoal_core::Scheduler::new(s);
        let mut candidates: Vec<NodeId> = wanted.clone().into_iter().collect();
        if wanted.is_none() {
            candidates.extend(holder.node_id.clone());
            candidates.extend(s.nodes().map(|n| n.id.clone()));
        }
        let mut why = Vec::new();
        let target = candidates.into_iter().find(|n| {
            let Some(node) = s.node(n) else { return false };
            if !shoal_core::migrate::can_checkpoint(node, &holder) {
                why.push(format!("{}: no driver there can restore a checkpoint", node.description.hostname));
                return false;
            }
            // The holder's own resources are freed by the replacement.
            let fits = holder.node_id.as_ref() == Some(n) || sched.fits(&holder, n).is_ok();
            if !fits {
                why.push(format!("{}: the task does not fit", node.description.hostname));
            }
            fits
        });
        let target =
            target.ok_or_else(|| invalid(format!("no node can restore the task ({})", why.join("; "))))?;
        let host = s.node(&target).map(|n| n.description.hostname.clone()).unwrap_or_default();
        Ok((cluster, holder, target, host))
    })
    .await??;
    let (cluster, holder, target, host) = plan;
    let key_hex = checkpoint_key(&cluster.ca_key_pem, &header.checkpoint_id);
    let key = unhex(&key_hex).ok_or_else(|| unavailable("bad key"))?;
    let dir = archive_dir(&m);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| unavailable(e.to_string()))?;
    let file = dir.join(format!("{}.ckpt", header.checkpoint_id));
    tokio::fs::write(&file, &archive).await.map_err(|e| unavailable(e.to_string()))?;
    // Verified here before anything changes (and again by the node that restores it).
    let (f, binding, check) =
        (file.clone(), file_binding(&header), dir.join(format!("verify-{}", header.checkpoint_id)));
    let verified = tokio::task::spawn_blocking(move || {
        let r = shoal_driver_oci::checkpoint_stream::unpack_file(&f, binding.as_bytes(), &key, &check);
        let _ = shoal_agent::store::remove_dir(&check);
        r.map(|_| ()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    if let Err(e) = verified {
        let _ = tokio::fs::remove_file(&file).await;
        return Err(invalid(format!("refused: {e}")));
    }
    let spec = RestoreSpec {
        from_task: TaskId::new(header.task_id.clone()),
        from_node: holder.node_id.clone().unwrap_or_else(|| target.clone()),
        checkpoint_id: header.checkpoint_id.clone(),
        source_addr: m.node.config().node.addr.clone(),
        source_path: format!("/internal/checkpoints/{}", header.checkpoint_id),
        source_server_name: shoal_pki::MANAGER_SERVER_NAME.into(),
        key_hex,
        binding: file_binding(&header),
    };
    let new = moved_task(&holder, &target, spec);
    let new_id = new.id.clone();
    let done = async {
        commit(&m, &holder.id, new).await?;
        wait_running(&m, &new_id).await
    }
    .await;
    let _ = tokio::fs::remove_file(&file).await;
    done.map_err(|e| {
        ApiError::new(StatusCode::CONFLICT, "restore_failed", format!("{e}; the slot restarts from scratch"))
    })?;
    let total_ms = started.elapsed().as_millis() as u64;
    Ok(Json(Migration {
        from_task: header.task_id,
        task: new_id.to_string(),
        from_node: String::new(),
        to_node: host,
        checkpoint_id: header.checkpoint_id,
        archive_bytes: archive.len() as u64,
        downtime_ms: total_ms,
        total_ms,
        failed: None,
    }))
}

fn require(peer: &Option<NodeIdentity>, roles: &[Role]) -> Result<(), ApiError> {
    match peer {
        Some(id) if roles.contains(&id.role) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a node certificate of this cluster is required",
        )),
    }
}

fn safe_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "bad checkpoint id"));
    }
    Ok(())
}

/// `POST /internal/agent/checkpoint` on a node: checkpoint the task and keep the checkpoint.
pub async fn agent_checkpoint(
    State(slot): State<crate::logs::AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    crate::server::JsonBody(r): crate::server::JsonBody<CheckpointRequest>,
) -> Result<Response, ApiError> {
    require(&peer, &[Role::Manager])?;
    safe_id(&r.checkpoint_id)?;
    let agent = slot.get().cloned().ok_or_else(|| unavailable("the agent is not running yet"))?;
    let key =
        unhex(&r.key_hex).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "bad key"))?;
    let dir = agent.checkpoints_dir().join(&r.checkpoint_id);
    let _ = shoal_agent::store::remove_dir(&dir);
    let opts = shoal_driver::CheckpointOptions { leave_running: r.leave_running, ..Default::default() };
    let report =
        agent.checkpoint_task(&TaskId::new(r.task_id.clone()), &dir, &opts).await.map_err(|e| match e {
            shoal_driver::DriverError::NotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("task {} is not on this node", r.task_id),
            ),
            e => ApiError::new(StatusCode::CONFLICT, "checkpoint_failed", e.to_string()),
        })?;
    // The checkpoint stays here until the managers say the task runs elsewhere: the restoring
    // node fetches it from here as a stream (packed while it is sent), and the task is restored
    // from it at home if the migration fails.
    let bytes = checkpoint_bytes(&dir);
    streams().insert(r.checkpoint_id.clone(), StreamParams { key, binding: r.binding, corrupt: r.corrupt });
    let freeze_ms = report.freeze.as_millis() as u64;
    tracing::info!(task = %r.task_id, bytes, freeze_ms, "task checkpointed");
    Ok(Json(Checkpointed { archive_bytes: bytes, freeze_ms }).into_response())
}

/// How this node signs the stream of a checkpoint it holds (in memory only: after a restart
/// the checkpoint can still be restored here, but no longer sent).
struct StreamParams {
    key: Vec<u8>,
    binding: String,
    /// The `corrupt-checkpoint` failpoint of the manager that asked for it.
    corrupt: bool,
}

struct Streams(Mutex<BTreeMap<String, Arc<StreamParams>>>);

impl Streams {
    fn insert(&self, id: String, p: StreamParams) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Arc::new(p));
    }
    fn get(&self, id: &str) -> Option<Arc<StreamParams>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }
    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

fn streams() -> &'static Streams {
    static S: OnceLock<Streams> = OnceLock::new();
    S.get_or_init(|| Streams(Mutex::default()))
}

/// The size of a checkpoint directory's files (what its stream carries, less tar headers and
/// frame tags).
fn checkpoint_bytes(dir: &Path) -> u64 {
    fn rec(d: &Path) -> u64 {
        let Ok(it) = std::fs::read_dir(d) else { return 0 };
        it.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => rec(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            })
            .sum()
    }
    rec(dir)
}

/// `GET /internal/agent/checkpoint/{id}/archive`: a checkpoint this node made, for the node that
/// restores it (or the manager writing it to a file).
pub async fn agent_archive(
    State(slot): State<crate::logs::AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    require(&peer, &[Role::Manager, Role::Worker])?;
    safe_id(&id)?;
    let agent = slot.get().cloned().ok_or_else(|| unavailable("the agent is not running yet"))?;
    let dir = agent.checkpoints_dir().join(&id);
    let params = streams().get(&id).filter(|_| dir.is_dir()).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("checkpoint {id} is not on this node"))
    })?;
    // Packed while it is sent: a blocking thread tars and signs frame by frame into a small
    // queue that the response body drains (it waits while the receiver is slower).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let send = |frame: Vec<u8>| {
            tx.blocking_send(Ok(frame.into()))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the receiver went away"))
        };
        let sent = shoal_driver_oci::checkpoint_stream::write_stream(
            &dir,
            params.binding.as_bytes(),
            &params.key,
            params.corrupt,
            send,
        );
        if let Err(e) = sent {
            tracing::warn!(checkpoint = %id, error = %e, "sending a checkpoint failed");
            // The body ends in an error: the receiver sees a broken transfer, not a short one.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// `DELETE /internal/agent/checkpoint/{id}`: the task runs elsewhere; drop the local copy.
pub async fn agent_forget_checkpoint(
    State(slot): State<crate::logs::AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    require(&peer, &[Role::Manager])?;
    safe_id(&id)?;
    let agent = slot.get().cloned().ok_or_else(|| unavailable("the agent is not running yet"))?;
    streams().remove(&id);
    shoal_agent::store::remove_dir(&agent.checkpoints_dir().join(&id))
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /internal/checkpoints/{id}` on a manager: the archive, for the node restoring it.
pub async fn serve_archive(
    State(m): State<Arc<Manager>>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    require(&peer, &[Role::Manager, Role::Worker])?;
    safe_id(&id)?;
    let bytes = tokio::fs::read(archive_dir(&m).join(format!("{id}.ckpt")))
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("checkpoint {id}: {e}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// For the planes: fetch `spec`'s checkpoint (from `local` when this node holds it, else over
/// mTLS from the node that does), verify it and unpack it into `dest`. A stream (from a node) is
/// verified and unpacked frame by frame while it arrives; an archive (a checkpoint file a
/// manager holds) is received whole, then verified, then unpacked.
pub async fn fetch_checkpoint(
    tls: Arc<rustls::ClientConfig>,
    local: Option<&Path>,
    spec: &RestoreSpec,
    dest: &Path,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    safe_id(&spec.checkpoint_id).map_err(|e| e.message)?;
    let key = unhex(&spec.key_hex).ok_or("bad key")?;
    let spool = dest.with_extension("ckpt");
    if let Some(parent) = spool.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| e.to_string())?;
    }
    let (binding, d) = (spec.binding.clone(), dest.to_path_buf());
    if let Some(dir) = local {
        let file = dir.join(format!("{}.ckpt", spec.checkpoint_id));
        return tokio::task::spawn_blocking(move || {
            shoal_driver_oci::checkpoint_stream::unpack_file(&file, binding.as_bytes(), &key, &d)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    let unpack = move |reader: &mut dyn std::io::Read| {
        shoal_driver_oci::checkpoint_stream::unpack_any(reader, &spool, binding.as_bytes(), &key, &d)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let resp = crate::internal::open(
        tls,
        &spec.source_addr,
        &spec.source_server_name,
        hyper::Method::GET,
        &spec.source_path,
        None,
    )
    .await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        return Err(crate::internal::remote_error(status, &bytes));
    }
    // The body's chunks go through a small queue to a blocking thread that verifies and unpacks
    // them as they come.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, String>>(16);
    let worker = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader { rx, cur: hyper::body::Bytes::new() };
        unpack(&mut reader)
    });
    while let Some(frame) = body.frame().await {
        let item = match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Err(e) => Err(format!("receiving the checkpoint: {e}")),
        };
        let failed = item.is_err();
        // A closed queue: the worker stopped (it refused the stream); its error says why.
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    worker.await.map_err(|e| e.to_string())?
}

/// A `Read` over the chunks of a response body that another task receives.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<hyper::body::Bytes, String>>,
    cur: hyper::body::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_cluster_and_checkpoint() {
        let a = checkpoint_key("ca-1", "c1");
        assert_eq!(a, checkpoint_key("ca-1", "c1"));
        assert_ne!(a, checkpoint_key("ca-2", "c1"));
        assert_ne!(a, checkpoint_key("ca-1", "c2"));
        assert_eq!(unhex(&a).map(|k| k.len()), Some(32));
        assert_eq!(unhex("0g"), None);
    }
}
