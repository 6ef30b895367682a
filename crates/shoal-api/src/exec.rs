//! `shoal task exec`: a command run inside a running task's namespaces, through its driver (the
//! process driver joins the task's network and mount namespaces when it has its own, oci runs
//! `runc exec`, docker the Engine's exec), like `docker exec` / `nomad alloc exec` without a
//! terminal.
//!
//! The same path as task logs ([`crate::logs`]): every node's agent serves
//! `POST /internal/agent/exec` on its node-to-node listener (mutual TLS; manager certificates
//! only). A manager's `POST /v1/tasks/{id}/exec` finds the task's node in its replica and asks that
//! node's agent — its own in-process, another over TLS verifying the node's certificate name — and
//! answers with the command's exit code and output. Exec is not a cluster write: nothing goes
//! through Raft.

use crate::internal::require_manager;
use crate::logs::{AgentSlot, LogsState};
use crate::server::{ApiError, JsonBody};
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_agent::ExecError;
use shoal_pki::NodeIdentity;
use shoal_state::ClusterState;
use shoal_types::{NodeId, TaskId, TaskState};
use std::sync::Arc;
use std::time::Duration;

/// How long a command may run when the request does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The longest a command may run.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Where a node's agent runs commands.
pub const AGENT_EXEC_PATH: &str = "/internal/agent/exec";
/// How much longer than the command's own limit a manager waits for the task's node.
const NODE_ANSWER_MARGIN: Duration = Duration::from_secs(15);

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// `POST /v1/tasks/{id}/exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ExecRequest {
    /// The program and its arguments (no shell: `["sh", "-c", "..."]` for one).
    pub cmd: Vec<String>,
    /// Seconds the command may run before it is killed (1 to [`MAX_TIMEOUT_SECS`]).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// What the command did: its exit code (128 + signal when killed; the driver's own code when it
/// timed out, 124 on the process driver) and its stdout then stderr, capped by the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecResponse {
    pub exit_code: i32,
    pub output: String,
}

/// A manager to the task's node (`POST /internal/agent/exec`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentExecRequest {
    pub task_id: String,
    pub cmd: Vec<String>,
    pub timeout_secs: u64,
}

pub(crate) fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg)
}

pub(crate) fn unavailable(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
}

pub(crate) fn unreachable(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", msg)
}

/// The command and the limit, checked the same on the manager and on the node.
fn check(cmd: &[String], timeout_secs: u64) -> Result<Duration, ApiError> {
    match cmd.first() {
        None => return Err(invalid("exec needs a command (cmd is empty)")),
        Some(p) if p.is_empty() => return Err(invalid("exec needs a command (cmd[0] is empty)")),
        Some(_) => {}
    }
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(invalid(format!(
            "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS} (got {timeout_secs})"
        )));
    }
    Ok(Duration::from_secs(timeout_secs))
}

/// The agent's refusal as the API's error.
pub(crate) fn from_exec_error(e: ExecError, cmd: &[String]) -> ApiError {
    match e {
        ExecError::EmptyCommand => invalid(e.to_string()),
        ExecError::NotHere(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        ExecError::NotRunning { .. } | ExecError::Ended(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        ExecError::CannotRun(why) => {
            let program = cmd.first().map_or("", String::as_str);
            ApiError::new(StatusCode::BAD_REQUEST, "cannot_run", format!("cannot run {program:?}: {why}"))
        }
        ExecError::Driver(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exec_failed", e.to_string())
        }
    }
}

async fn exec_here(
    slot: &AgentSlot,
    task: &TaskId,
    cmd: &[String],
    timeout: Duration,
) -> Result<ExecResponse, ApiError> {
    let agent = slot.get().cloned().ok_or_else(|| unavailable("the agent is not running yet"))?;
    let r = agent.exec_task(task, cmd, timeout).await.map_err(|e| from_exec_error(e, cmd))?;
    Ok(ExecResponse { exit_code: r.exit_code, output: r.output })
}

/// `POST /internal/agent/exec` on a node: run the command in one of its running tasks.
async fn agent_exec(
    State(slot): State<AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    JsonBody(r): JsonBody<AgentExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    require_manager(&peer)?;
    let timeout = check(&r.cmd, r.timeout_secs)?;
    let task = TaskId::new(r.task_id.clone());
    tracing::info!(task = %task, program = r.cmd.first().map_or("", String::as_str), "exec in a task");
    Ok(Json(exec_here(&slot, &task, &r.cmd, timeout).await?))
}

/// Where a task runs, as the replica says.
pub(crate) struct Target {
    pub(crate) node: NodeId,
    pub(crate) hostname: String,
    pub(crate) addr: String,
}

fn locate(s: &ClusterState, id: &TaskId) -> Result<Target, ApiError> {
    let t = s
        .task(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("task {id} not found")))?;
    let not_running = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("task {id} is not running (state {})", t.status.state),
        )
    };
    if t.status.state != TaskState::Running {
        return Err(not_running());
    }
    let node_id = t.node_id.as_ref().ok_or_else(not_running)?;
    let node = s.node(node_id).ok_or_else(|| {
        unavailable(format!("task {id} runs on node {node_id}, which is no longer in the cluster"))
    })?;
    Ok(Target {
        node: node.id.clone(),
        hostname: node.description.hostname.clone(),
        addr: node.status.addr.clone(),
    })
}

/// Runs the command through the agent of another node.
async fn exec_there(
    tls: Arc<rustls::ClientConfig>,
    target: &Target,
    req: &AgentExecRequest,
) -> Result<ExecResponse, ApiError> {
    use http_body_util::BodyExt;
    let (host, addr) = (&target.hostname, &target.addr);
    let cannot_reach = |why: String| {
        unreachable(format!("cannot reach node {host} ({addr}) where task {} runs: {why}", req.task_id))
    };
    let body = serde_json::to_vec(req).map_err(|e| invalid(e.to_string()))?;
    let server_name = shoal_pki::node_dns_name(target.node.as_str());
    let call = async {
        let resp =
            crate::internal::open(tls, addr, &server_name, hyper::Method::POST, AGENT_EXEC_PATH, Some(body))
                .await
                .map_err(cannot_reach)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| cannot_reach(e.to_string()))?.to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| unreachable(format!("node {host} answered something unexpected: {e}")));
        }
        Err(node_error(status, &bytes, host))
    };
    let limit = Duration::from_secs(req.timeout_secs) + NODE_ANSWER_MARGIN;
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| unreachable(format!("node {host} did not answer within {}s", limit.as_secs())))?
}

/// The node's refusal, passed on as it is when it is about the request or the task; anything
/// else (its certificate check, its own trouble) means the node could not do it.
pub(crate) fn node_error(status: StatusCode, bytes: &[u8], host: &str) -> ApiError {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let message = crate::internal::remote_error(status, bytes);
    let code = match v["error"]["code"].as_str() {
        Some("invalid") => "invalid",
        Some("not_found") => "not_found",
        Some("conflict") => "conflict",
        Some("cannot_run") => "cannot_run",
        Some("exec_failed") => "exec_failed",
        Some("unavailable") => "unavailable",
        _ => return unreachable(format!("node {host} refused the exec: {message}")),
    };
    ApiError::new(status, code, message)
}

/// Where task `id` runs. This manager's replica answers at once; a refusal (the task unknown or
/// not running) is confirmed with a linearizable read, so a replica a moment behind does not
/// refuse a task that runs now.
pub(crate) async fn find_target(m: &shoal_manager::Manager, id: &TaskId) -> Result<Target, ApiError> {
    let here = {
        let d = m.node.local_state();
        locate(&d.state, id)
    };
    match here {
        Ok(t) => Ok(t),
        Err(e) => match crate::internal::read_linearizable(m, |s| locate(s, id)).await {
            Ok(r) => r,
            Err(_) => Err(e),
        },
    }
}

/// Whether the task runs on this manager's own node (its agent in-process).
pub(crate) fn is_here(m: &shoal_manager::Manager, target: &Target) -> bool {
    target.node.as_str() == m.node.config().node.node_id
}

/// `POST /v1/tasks/{id}/exec`.
async fn task_exec(
    State(st): State<LogsState>,
    Path(id): Path<String>,
    JsonBody(r): JsonBody<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let timeout = check(&r.cmd, r.timeout_secs)?;
    let id = TaskId::new(id);
    let m = st.manager.clone();
    let target = find_target(&m, &id).await?;
    let out = if is_here(&m, &target) {
        exec_here(&st.agent, &id, &r.cmd, timeout).await?
    } else {
        let tls = m.client_tls().ok_or_else(|| unavailable("this manager has no certificate yet"))?;
        let req = AgentExecRequest { task_id: id.to_string(), cmd: r.cmd, timeout_secs: r.timeout_secs };
        exec_there(tls, &target, &req).await?
    };
    Ok(Json(out))
}

/// `POST /v1/tasks/{id}/exec` on a manager's `/v1` router.
pub fn exec_router(st: LogsState) -> Router {
    Router::new().route("/v1/tasks/{id}/exec", post(task_exec)).with_state(st)
}

/// The node's part, on [`crate::logs::agent_router`].
pub fn agent_exec_route() -> axum::routing::MethodRouter<AgentSlot> {
    post(agent_exec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_default_the_timeout() {
        let r: ExecRequest = serde_json::from_str(r#"{"cmd": ["true"]}"#).expect("parse");
        assert_eq!(r, ExecRequest { cmd: vec!["true".into()], timeout_secs: DEFAULT_TIMEOUT_SECS });
        let e =
            serde_json::from_str::<ExecRequest>(r#"{"cmd": ["true"], "tty": true}"#).expect_err("refused");
        assert!(e.to_string().contains("unknown field `tty`"), "{e}");
    }

    #[test]
    fn the_command_and_timeout_are_checked() {
        let cmd = vec!["true".to_string()];
        assert_eq!(check(&cmd, 30).ok(), Some(Duration::from_secs(30)));
        assert_eq!(check(&cmd, MAX_TIMEOUT_SECS).ok(), Some(Duration::from_secs(MAX_TIMEOUT_SECS)));
        for (cmd, secs, why) in [
            (vec![], 30, "exec needs a command (cmd is empty)"),
            (vec![String::new()], 30, "exec needs a command (cmd[0] is empty)"),
            (cmd.clone(), 0, "timeout_secs must be between 1 and 600 (got 0)"),
            (cmd.clone(), 601, "timeout_secs must be between 1 and 600 (got 601)"),
        ] {
            let e = check(&cmd, secs).expect_err(why);
            assert_eq!((e.status, e.code, e.message.as_str()), (StatusCode::BAD_REQUEST, "invalid", why));
        }
    }

    #[test]
    fn a_nodes_refusal_keeps_its_status_only_when_it_is_about_the_request() {
        let body =
            |code: &str| format!(r#"{{"error": {{"code": "{code}", "message": "why"}}}}"#).into_bytes();
        let e = node_error(StatusCode::CONFLICT, &body("conflict"), "w1");
        assert_eq!((e.status, e.code, e.message.as_str()), (StatusCode::CONFLICT, "conflict", "why"));
        let e = node_error(StatusCode::FORBIDDEN, &body("forbidden"), "w1");
        assert_eq!((e.status, e.code), (StatusCode::BAD_GATEWAY, "unreachable"));
        assert_eq!(e.message, "node w1 refused the exec: why");
    }
}
