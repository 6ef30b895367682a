//! The dispatcher: how agents follow their assignments and report what their tasks do.
//!
//! Every manager serves it, to its own agent in-process ([`LocalPlane`]) and to workers over
//! mutual TLS (`/internal/dispatcher/*`, the node id comes from the client certificate):
//!
//! - `POST /internal/dispatcher/register` — the node's description; registers it (role from the
//!   certificate) or refreshes it.
//! - `GET /internal/dispatcher/assignments?revision=R` — every task bound to the node. Long-poll:
//!   answers at once when R is not the current revision, else when one of the node's tasks changes
//!   or after [`LONG_POLL`] with the same revision. Served from the manager's local replica, so any
//!   manager can serve it; writes go through the leader.
//! - `POST /internal/dispatcher/status` — a batch of status reports, one Raft write.
//! - `POST /internal/dispatcher/heartbeat` — recorded by the leader (forwarded by a follower).
//! - `POST /internal/dispatcher/renew` — a CSR for a new certificate with the same node id and
//!   role (workers renew through a manager; managers sign their own).
//!
//! A worker ([`RemotePlane`]) talks to one manager at a time and moves to the next on errors; it
//! learns the current managers from every assignments answer.

use crate::internal::{call, Heartbeat};
use crate::registry_auth::RegistryAuth;
use crate::server::ApiError;
use async_trait::async_trait;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_agent::{Assignments, ControlPlane, PlaneError, StatusReport};
use shoal_manager::Manager;
use shoal_pki::{NodeIdentity, Role};
use shoal_state::{ClusterState, Command, TaskStatusReport};
use shoal_types::{
    Node, NodeDescription, NodeId, NodeRole, NodeSpec, NodeState, NodeStatus, Task, TaskId, TaskState,
    Timestamp,
};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The longest an assignments request waits for a change.
pub const LONG_POLL: Duration = Duration::from_secs(10);

/// The revision of `node`'s assignments ([`assignments_of`]), computed without copying them.
pub fn assignments_revision(state: &ClusterState, node: &NodeId) -> String {
    let mut tasks: Vec<&Task> = state.tasks_on_node(node).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    revision(state, node, &tasks)
}

/// SipHash with fixed keys over the tasks' ids and versions and the node's role: deterministic
/// for a given build, which is all a revision needs.
fn revision(state: &ClusterState, node: &NodeId, tasks: &[&Task]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    for t in tasks {
        t.id.as_str().hash(&mut h);
        t.version.hash(&mut h);
    }
    tasks.len().hash(&mut h);
    // The node's role is part of what the agent follows (promote/demote).
    state.node(node).map(|n| n.spec.role).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The node's tasks and a revision that changes whenever one of them does.
pub fn assignments_of(state: &ClusterState, node: &NodeId) -> Assignments {
    let mut refs: Vec<&Task> = state.tasks_on_node(node).collect();
    refs.sort_by(|a, b| a.id.cmp(&b.id));
    let revision = revision(state, node, &refs);
    let tasks: Vec<Task> = refs.into_iter().cloned().collect();
    // The tasks' services, whose names name the tasks' containers (a service's name never changes).
    let services = tasks
        .iter()
        .filter_map(|t| {
            let s = state.service(&t.service_id)?;
            let stack = s.spec.labels.get("com.docker.stack.namespace").cloned();
            Some((t.service_id.clone(), shoal_agent::AssignedService { name: s.spec.name.clone(), stack }))
        })
        .collect();
    let registry_auth = registry_credentials(state, &tasks);
    let secrets = secrets_for(state, &tasks);
    Assignments { revision, tasks, services, registry_auth, secrets }
}

/// The data of the secrets and configs that the node's live tasks yet to run use: a node gets
/// only what its own tasks need, and only until they start (the files are then in the task's
/// tmpfs). A task whose secret is gone (which `apply` prevents while the task is live) gets
/// none and is rejected by its agent with the reason.
fn secrets_for(
    state: &ClusterState,
    tasks: &[Task],
) -> BTreeMap<shoal_types::SecretId, shoal_types::SecretData> {
    let mut out = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.is_live() && t.status.state < TaskState::Running) {
        for r in t.spec.secrets.iter().chain(&t.spec.configs) {
            let Some(id) = &r.id else { continue };
            if let Some(s) = state.secret(id) {
                out.insert(id.clone(), s.spec.data.clone());
            }
        }
    }
    out
}

/// The registry credentials of the node's tasks that have yet to start, unsealed for it: only a
/// node that runs a task of a service gets the service's credentials, in the assignment next to
/// the task (the stored task keeps them sealed), and the agent keeps them in memory only.
fn registry_credentials(state: &ClusterState, tasks: &[Task]) -> BTreeMap<TaskId, RegistryAuth> {
    let mut out = BTreeMap::new();
    let Some(ca_key) = state.cluster().map(|c| c.ca_key_pem.as_str()) else { return out };
    for t in tasks.iter().filter(|t| t.is_live() && t.status.state < TaskState::Running) {
        let Some(sealed) = &t.spec.registry_auth else { continue };
        match crate::registry_auth::unseal(ca_key, t.service_id.as_str(), sealed) {
            Ok(auth) => {
                out.insert(t.id.clone(), auth);
            }
            Err(e) => {
                tracing::warn!(task = %t.id, service = %t.service_id, error = %e, "registry credentials not delivered")
            }
        }
    }
    out
}

/// Answers with the node's assignments once they differ from `known`, or after `wait`.
pub async fn wait_assignments(
    m: &Manager,
    node: &NodeId,
    known: Option<&str>,
    wait: Duration,
) -> Assignments {
    // Watch before reading, so no change between the read and the wait is missed. Only
    // changes to this node's tasks and node object wake it (`shoal_manager::changes`).
    let mut changes = m.changes().node(node);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // What changed before this is in the read below; what changes after it wakes the wait.
        changes.mark_unchanged();
        {
            let d = m.node.local_state();
            if known != Some(assignments_revision(&d.state, node).as_str()) {
                return assignments_of(&d.state, node);
            }
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Err(_) | Ok(Err(_)) => return assignments_of(&m.node.local_state().state, node),
        }
    }
}

fn node_object(id: NodeId, role: NodeRole, description: NodeDescription, addr: String) -> Node {
    Node {
        id,
        version: 0,
        created_at: Timestamp::ZERO,
        updated_at: Timestamp::ZERO,
        spec: NodeSpec { role, ..Default::default() },
        description,
        status: NodeStatus { state: NodeState::Ready, addr, message: String::new() },
        manager_status: None,
    }
}

fn reports(node_id: NodeId, r: Vec<StatusReport>) -> Command {
    Command::ReportTaskStatus {
        node_id,
        reports: r.into_iter().map(|r| TaskStatusReport { task_id: r.task_id, status: r.status }).collect(),
    }
}

/// Records a heartbeat on the leader, or forwards it there: the period the leader named.
async fn deliver_heartbeat(m: &Manager, node_id: &str) -> Result<std::time::Duration, String> {
    if m.node.is_leader() {
        return Ok(m.record_heartbeat(node_id));
    }
    let leader = m.node.status().leader_node.ok_or("no leader")?;
    let tls = m.client_tls().ok_or("this manager has no certificate")?;
    let body = serde_json::to_vec(&Heartbeat { node_id: node_id.to_string() }).map_err(|e| e.to_string())?;
    let (st, bytes) = call(tls, &leader.addr, hyper::Method::POST, "/internal/heartbeat", Some(body)).await?;
    if st.is_success() {
        Ok(crate::internal::HeartbeatReply::period_of(&bytes))
    } else {
        Err(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The agent of a manager node: the dispatcher in-process.
pub struct LocalPlane {
    pub manager: Arc<Manager>,
    pub node_id: NodeId,
    pub addr: String,
}

#[async_trait]
impl ControlPlane for LocalPlane {
    async fn register(&self, description: &NodeDescription) -> Result<(), PlaneError> {
        if self.manager.node.status().leader.is_none() {
            return Err(PlaneError("no leader yet".into()));
        }
        let node =
            node_object(self.node_id.clone(), NodeRole::Manager, description.clone(), self.addr.clone());
        crate::internal::write(&self.manager, Command::RegisterNode { node: Box::new(node) })
            .await
            .map(|_| ())
            .map_err(|e| PlaneError(e.to_string()))
    }

    async fn assignments(&self, known: Option<&str>) -> Result<Assignments, PlaneError> {
        Ok(wait_assignments(&self.manager, &self.node_id, known, LONG_POLL).await)
    }

    async fn netview(&self, known: Option<&str>) -> Result<shoal_net::NetView, PlaneError> {
        Ok(crate::netview::wait_netview(&self.manager, &self.node_id, known, LONG_POLL).await)
    }

    async fn report(&self, r: Vec<StatusReport>) -> Result<(), PlaneError> {
        crate::internal::write(&self.manager, reports(self.node_id.clone(), r))
            .await
            .map(|_| ())
            .map_err(|e| PlaneError(e.to_string()))
    }

    /// A manager's heartbeats are sent by its manager loop already.
    async fn heartbeat(&self) -> Result<std::time::Duration, PlaneError> {
        Ok(shoal_agent::HEARTBEAT_INTERVAL)
    }

    async fn fetch_checkpoint(
        &self,
        spec: &shoal_types::RestoreSpec,
        dest: &std::path::Path,
    ) -> Result<(), PlaneError> {
        let tls =
            self.manager.client_tls().ok_or_else(|| PlaneError("this node has no certificate yet".into()))?;
        let here = spec.source_addr == self.manager.node.config().node.addr
            && spec.source_path.starts_with("/internal/checkpoints/");
        let local = here.then(|| crate::migrate::archive_dir(&self.manager));
        crate::migrate::fetch_checkpoint(tls, local.as_deref(), spec, dest).await.map_err(PlaneError)
    }

    async fn fetch_image(&self, reference: &str, store_root: &std::path::Path) -> Result<String, PlaneError> {
        let tls =
            self.manager.client_tls().ok_or_else(|| PlaneError("this node has no certificate yet".into()))?;
        let sources =
            crate::images::sources(&self.manager.node.local_state().state, reference, &self.node_id);
        crate::images::fetch_image(tls, sources, reference, store_root).await.map_err(PlaneError)
    }
}

type Peer = Extension<Option<NodeIdentity>>;

/// The error code of a refusal because `node rm` removed the calling node.
pub const NODE_REMOVED: &str = "node_removed";

/// The calling node: a manager or worker certificate of this cluster. An operator's client
/// certificate ([`Role::Client`]) is not a node and is refused.
fn peer(p: &Option<NodeIdentity>) -> Result<&NodeIdentity, ApiError> {
    match p {
        Some(id) if matches!(id.role, Role::Manager | Role::Worker) => Ok(id),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a node certificate of this cluster is required",
        )),
    }
}

/// A node certificate of a node that `node rm` has not removed (its certificate stays valid
/// until it expires; the removed node learns from this answer that it is out of the cluster).
pub(crate) fn member_peer<'p>(
    m: &Manager,
    p: &'p Option<NodeIdentity>,
) -> Result<&'p NodeIdentity, ApiError> {
    let id = peer(p)?;
    if m.node.local_state().state.is_removed(&NodeId::new(id.node_id.clone())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            NODE_REMOVED,
            format!("node {} was removed from the cluster", id.node_id),
        ));
    }
    Ok(id)
}

/// Whether a dispatcher's answer says that `node rm` removed the calling node.
pub fn says_node_removed(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::FORBIDDEN
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| v["error"]["code"] == NODE_REMOVED)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Register {
    pub description: NodeDescription,
    /// Where the node can be reached (informational for workers).
    pub addr: String,
}

/// What a worker learns with its assignments: where the managers are.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AssignmentsReply {
    #[serde(flatten)]
    pub assignments: Assignments,
    pub managers: Vec<String>,
    /// The role the operator wants the node to have (`node promote/demote`); the node acts on it.
    #[serde(default)]
    pub role: Option<NodeRole>,
}

#[derive(Debug, Deserialize)]
struct AssignmentsQuery {
    revision: Option<String>,
}

async fn register(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
    Json(r): Json<Register>,
) -> Result<StatusCode, ApiError> {
    let id = member_peer(&m, &p)?;
    let role = if id.role == Role::Manager { NodeRole::Manager } else { NodeRole::Worker };
    let node = node_object(NodeId::new(id.node_id.clone()), role, r.description, r.addr);
    crate::internal::write(&m, Command::RegisterNode { node: Box::new(node) }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn assignments(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
    Query(q): Query<AssignmentsQuery>,
) -> Result<Json<AssignmentsReply>, ApiError> {
    let id = member_peer(&m, &p)?;
    let a = wait_assignments(&m, &NodeId::new(id.node_id.clone()), q.revision.as_deref(), LONG_POLL).await;
    let s = m.node.status();
    let managers = s.voters.values().chain(s.learners.values()).map(|n| n.addr.clone()).collect();
    let node_id = NodeId::new(id.node_id.clone());
    let role = m.node.local_state().state.node(&node_id).map(|n| n.spec.role);
    Ok(Json(AssignmentsReply { assignments: a, managers, role }))
}

async fn netview(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
    Query(q): Query<AssignmentsQuery>,
) -> Result<Json<shoal_net::NetView>, ApiError> {
    let id = member_peer(&m, &p)?;
    let node = NodeId::new(id.node_id.clone());
    Ok(Json(crate::netview::wait_netview(&m, &node, q.revision.as_deref(), LONG_POLL).await))
}

async fn status(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
    Json(r): Json<Vec<StatusReport>>,
) -> Result<StatusCode, ApiError> {
    let id = member_peer(&m, &p)?;
    crate::internal::write(&m, reports(NodeId::new(id.node_id.clone()), r)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /internal/dispatcher/images?reference=R`: the calling node's peers that report image R.
async fn image_sources(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
    Query(q): Query<crate::images::SourcesQuery>,
) -> Result<Json<Vec<crate::images::ImageSource>>, ApiError> {
    let id = member_peer(&m, &p)?;
    shoal_driver_oci::store::validate_reference(&q.reference)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let node = NodeId::new(id.node_id.clone());
    Ok(Json(crate::images::sources(&m.node.local_state().state, &q.reference, &node)))
}

async fn heartbeat(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
) -> Result<Json<crate::internal::HeartbeatReply>, ApiError> {
    let id = member_peer(&m, &p)?;
    let period = deliver_heartbeat(&m, &id.node_id)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    Ok(Json(crate::internal::HeartbeatReply::new(period)))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Renewal {
    pub csr_pem: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Renewed {
    pub cert_pem: String,
}

async fn renew(
    State(m): State<Arc<Manager>>,
    Extension(p): Peer,
    Json(r): Json<Renewal>,
) -> Result<Json<Renewed>, ApiError> {
    let id = member_peer(&m, &p)?;
    let node = NodeId::new(id.node_id.clone());
    let desired = crate::internal::read_linearizable(&m, |s| s.node(&node).map(|n| n.spec.role)).await?;
    let cert_pem = m.sign_renewal(&id.node_id, id.role, desired, &r.csr_pem).await?;
    Ok(Json(Renewed { cert_pem }))
}

pub fn dispatcher_router(m: Arc<Manager>) -> Router {
    Router::new()
        .route("/internal/dispatcher/renew", post(renew))
        .route("/internal/dispatcher/register", post(register))
        .route("/internal/dispatcher/assignments", get(assignments))
        .route("/internal/dispatcher/netview", get(netview))
        .route("/internal/dispatcher/status", post(status))
        .route("/internal/dispatcher/heartbeat", post(heartbeat))
        .route("/internal/dispatcher/images", get(image_sources))
        .with_state(m)
}

/// A worker's way to the managers: mutual TLS to one manager at a time.
pub struct RemotePlane {
    /// The role the operator wants this node to have, as last heard from a manager.
    role: tokio::sync::watch::Sender<Option<NodeRole>>,
    /// Set once a manager says that `node rm` removed this node.
    removed: tokio::sync::watch::Sender<bool>,
    tls: std::sync::RwLock<Arc<rustls::ClientConfig>>,
    /// Kept-alive connections to the managers (every call here may be sent twice).
    pool: crate::internal::Pool,
    managers: Mutex<Vec<String>>,
    addr: String,
}

impl RemotePlane {
    pub fn new(tls: Arc<rustls::ClientConfig>, managers: Vec<String>, addr: String) -> RemotePlane {
        RemotePlane {
            role: tokio::sync::watch::channel(None).0,
            removed: tokio::sync::watch::channel(false).0,
            tls: std::sync::RwLock::new(tls),
            pool: crate::internal::Pool::default(),
            managers: Mutex::new(managers),
            addr,
        }
    }

    /// Changes of the role the operator wants for this node (`node promote/demote`).
    pub fn desired_role(&self) -> tokio::sync::watch::Receiver<Option<NodeRole>> {
        self.role.subscribe()
    }

    /// Becomes true when a manager says that `node rm` removed this node from the cluster.
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// The client TLS config requests use now (renewals replace it).
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Uses a renewed certificate from the next request on.
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.tls.write().unwrap_or_else(PoisonError::into_inner) = tls;
        self.pool.clear();
    }

    /// Has a manager sign a new certificate for this node (same id and role) from `csr_pem`.
    pub async fn renew(&self, csr_pem: String) -> Result<String, PlaneError> {
        let body = serde_json::to_vec(&Renewal { csr_pem }).map_err(|e| PlaneError(e.to_string()))?;
        let bytes = self.call(hyper::Method::POST, "/internal/dispatcher/renew", Some(body)).await?;
        let r: Renewed = serde_json::from_slice(&bytes).map_err(|e| PlaneError(e.to_string()))?;
        Ok(r.cert_pem)
    }

    pub fn managers(&self) -> Vec<String> {
        self.managers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Tries each known manager in turn, starting with the last one that answered.
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, PlaneError> {
        let managers = self.managers();
        let mut last = String::from("no manager address known");
        let tls = self.tls.read().unwrap_or_else(PoisonError::into_inner).clone();
        for (i, addr) in managers.iter().enumerate() {
            match self.pool.call(tls.clone(), addr, method.clone(), path, body.clone()).await {
                Ok((st, bytes)) if st.is_success() => {
                    if i > 0 {
                        // Remember the one that works.
                        let mut m = self.managers.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(pos) = m.iter().position(|a| a == addr) {
                            let a = m.remove(pos);
                            m.insert(0, a);
                        }
                    }
                    return Ok(bytes.to_vec());
                }
                // The managers' state says so: asking another manager changes nothing.
                Ok((st, bytes)) if says_node_removed(st, &bytes) => {
                    if !self.removed.send_replace(true) {
                        tracing::warn!("the managers removed this node from the cluster");
                    }
                    return Err(PlaneError(String::from_utf8_lossy(&bytes).into_owned()));
                }
                Ok((st, bytes)) => last = format!("{addr}: HTTP {st}: {}", String::from_utf8_lossy(&bytes)),
                Err(e) => last = e,
            }
        }
        Err(PlaneError(last))
    }
}

#[async_trait]
impl ControlPlane for RemotePlane {
    async fn register(&self, description: &NodeDescription) -> Result<(), PlaneError> {
        let body =
            serde_json::to_vec(&Register { description: description.clone(), addr: self.addr.clone() })
                .map_err(|e| PlaneError(e.to_string()))?;
        self.call(hyper::Method::POST, "/internal/dispatcher/register", Some(body)).await.map(|_| ())
    }

    async fn assignments(&self, known: Option<&str>) -> Result<Assignments, PlaneError> {
        let path = match known {
            Some(r) => format!("/internal/dispatcher/assignments?revision={r}"),
            None => "/internal/dispatcher/assignments".to_string(),
        };
        let bytes = self.call(hyper::Method::GET, &path, None).await?;
        let reply: AssignmentsReply =
            serde_json::from_slice(&bytes).map_err(|e| PlaneError(e.to_string()))?;
        if reply.role.is_some() {
            self.role.send_if_modified(|r| {
                let changed = *r != reply.role;
                if changed {
                    tracing::info!(role = ?reply.role, "the managers set this node's role");
                }
                *r = reply.role;
                changed
            });
        }
        if !reply.managers.is_empty() {
            let mut m = self.managers.lock().unwrap_or_else(PoisonError::into_inner);
            let current = m.first().cloned();
            let mut next = reply.managers;
            // Keep talking to the manager that answered; learn the rest.
            if let Some(c) = current.filter(|c| next.contains(c)) {
                next.retain(|a| *a != c);
                next.insert(0, c);
            }
            *m = next;
        }
        Ok(reply.assignments)
    }

    async fn netview(&self, known: Option<&str>) -> Result<shoal_net::NetView, PlaneError> {
        let path = match known {
            Some(r) => format!("/internal/dispatcher/netview?revision={r}"),
            None => "/internal/dispatcher/netview".to_string(),
        };
        let bytes = self.call(hyper::Method::GET, &path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| PlaneError(e.to_string()))
    }

    async fn report(&self, r: Vec<StatusReport>) -> Result<(), PlaneError> {
        let body = serde_json::to_vec(&r).map_err(|e| PlaneError(e.to_string()))?;
        self.call(hyper::Method::POST, "/internal/dispatcher/status", Some(body)).await.map(|_| ())
    }

    async fn heartbeat(&self) -> Result<std::time::Duration, PlaneError> {
        self.call(hyper::Method::POST, "/internal/dispatcher/heartbeat", Some(b"{}".to_vec()))
            .await
            .map(|body| crate::internal::HeartbeatReply::period_of(&body))
    }

    async fn fetch_checkpoint(
        &self,
        spec: &shoal_types::RestoreSpec,
        dest: &std::path::Path,
    ) -> Result<(), PlaneError> {
        let tls = self.tls.read().unwrap_or_else(PoisonError::into_inner).clone();
        crate::migrate::fetch_checkpoint(tls, None, spec, dest).await.map_err(PlaneError)
    }

    async fn fetch_image(&self, reference: &str, store_root: &std::path::Path) -> Result<String, PlaneError> {
        let path = format!("/internal/dispatcher/images?reference={}", crate::images::encode(reference));
        let bytes = self.call(hyper::Method::GET, &path, None).await?;
        let sources: Vec<crate::images::ImageSource> =
            serde_json::from_slice(&bytes).map_err(|e| PlaneError(e.to_string()))?;
        let tls = self.client_tls();
        crate::images::fetch_image(tls, sources, reference, store_root).await.map_err(PlaneError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_certificates_reach_the_dispatcher() {
        let id = |role| Some(NodeIdentity { node_id: "n1".into(), role });
        assert!(peer(&id(Role::Manager)).is_ok());
        assert!(peer(&id(Role::Worker)).is_ok());
        for refused in [id(Role::Client), None] {
            let err = peer(&refused).expect_err("refused");
            assert_eq!(err.status, StatusCode::FORBIDDEN);
        }
    }

    #[test]
    fn credentials_go_with_tasks_that_have_yet_to_start() {
        use shoal_types::{ServiceId, TaskStatus, TaskTemplate};
        let mut state = ClusterState::new();
        let cluster = shoal_state::ClusterObject {
            id: "c1".into(),
            created_at: Timestamp::ZERO,
            ca_cert_pem: String::new(),
            ca_key_pem: "ca-key".into(),
            worker_token: String::new(),
            manager_token: String::new(),
            data_path_port: 4789,
        };
        let auth =
            RegistryAuth { username: "u".into(), password: "p".into(), serveraddress: "r:5000".into() };
        let sealed = crate::registry_auth::seal("ca-key", "s1", &auth).expect("seal");
        let task = |id: &str, service: &str, state: TaskState, desired: TaskState| Task {
            id: TaskId::new(id),
            version: 1,
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
            service_id: ServiceId::new(service),
            slot: Some(1),
            node_id: Some(NodeId::new("n1")),
            spec: TaskTemplate {
                image: Some("r:5000/a".into()),
                registry_auth: Some(sealed.clone()),
                ..Default::default()
            }
            .into(),
            endpoint: Default::default(),
            spec_version: 1,
            desired_state: desired,
            status: TaskStatus { state, ..Default::default() },
            restart_history: vec![],
            restore: None,
            networks: Vec::new(),
        };
        let tasks = vec![
            task("assigned", "s1", TaskState::Assigned, TaskState::Running),
            task("running", "s1", TaskState::Running, TaskState::Running),
            task("stopping", "s1", TaskState::Assigned, TaskState::Shutdown),
            task("foreign", "s2", TaskState::Assigned, TaskState::Running),
        ];
        assert!(registry_credentials(&state, &tasks).is_empty(), "no cluster, no key");
        state
            .apply(Timestamp::from_secs(1), Command::InitCluster { cluster: Box::new(cluster) })
            .expect("init");
        let delivered = registry_credentials(&state, &tasks);
        assert_eq!(delivered.keys().map(|t| t.as_str()).collect::<Vec<_>>(), ["assigned"]);
        assert_eq!(delivered.get(&TaskId::new("assigned")), Some(&auth));
        // On the wire next to the tasks, in the stored tasks only sealed.
        let a = Assignments { tasks: tasks.clone(), registry_auth: delivered, ..Default::default() };
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(json.matches("\"password\":\"p\"").count(), 1, "{json}");
        assert!(!format!("{a:?}").contains("\"p\""));
    }

    #[test]
    fn secrets_go_only_to_the_node_whose_task_needs_them_and_only_before_it_runs() {
        use shoal_types::{
            Secret, SecretData, SecretKind, SecretReference, SecretSpec, Service, ServiceId, ServiceSpec,
            TaskStatus,
        };
        let mut state = ClusterState::new();
        let at = Timestamp::from_secs(1);
        for (id, name, data) in [("x1", "pw", "hunter2"), ("x2", "other", "swordfish")] {
            let spec = SecretSpec { name: name.into(), data: SecretData(data.into()), ..Default::default() };
            let secret = Secret::new(id.into(), SecretKind::Secret, spec);
            state.apply(at, Command::CreateSecret { secret: Box::new(secret) }).expect("secret");
        }
        let mut spec = ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.command = vec!["sleep".into()];
        spec.task_template.secrets = vec![SecretReference::new("pw")];
        let svc = Service::new(ServiceId::new("s1"), spec);
        state.apply(at, Command::CreateService { service: Box::new(svc) }).expect("service");
        let template = state.service(&ServiceId::new("s1")).expect("svc").spec.task_template.clone();
        let task = |id: &str, node: &str, st: TaskState| Task {
            id: TaskId::new(id),
            version: 1,
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
            service_id: ServiceId::new("s1"),
            slot: Some(1),
            node_id: Some(NodeId::new(node)),
            spec: template.clone().into(),
            endpoint: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus { state: st, ..Default::default() },
            restart_history: vec![],
            restore: None,
            networks: Vec::new(),
        };
        let on_n1 = [task("t1", "n1", TaskState::Assigned)];
        let delivered = secrets_for(&state, &on_n1);
        assert_eq!(delivered.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x1"], "only the one it uses");
        assert_eq!(
            delivered.get(&shoal_types::SecretId::new("x1")).map(|d| d.as_bytes()),
            Some(&b"hunter2"[..])
        );
        assert!(secrets_for(&state, &[task("t2", "n1", TaskState::Running)]).is_empty(), "not once it runs");
        assert!(secrets_for(&state, &[]).is_empty(), "a node without such a task gets nothing");
        let a = Assignments { secrets: delivered, ..Default::default() };
        assert!(!format!("{a:?}").contains("hunter2"), "Debug never shows the data");
    }
}
