//! The application layer: the operations every front end offers (`/v1`, the web UI, which calls
//! `/v1`, and the APIs to come: Docker Engine, etcd, Chronos), each with its rules in one place:
//! lookups by id or name (an ambiguous hostname refused), validation, retries on version races,
//! the last manager that cannot go, migration before a drain, and the one write path (through
//! the leader). Front ends only translate their wire formats into these calls and [`AppError`]
//! into their error shapes.

use crate::registry_auth::RegistryAuth;
use serde::{Deserialize, Serialize};
use shoal_manager::{Consistency, ErrorKind, Manager, ReadError, WriteError};
use shoal_state::{ClusterState, Command, NodeAddress};
use shoal_types::validate::MAX_REPLICAS;
use shoal_types::{
    Availability, Network, NetworkId, NetworkSpec, Node, NodeId, NodeRole, NodeSpec, Service, ServiceId,
    ServiceMode, ServiceSpec, Task, TaskId, Timestamp,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What went wrong, in terms every front end can translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or asks for something impossible (HTTP 400).
    Invalid,
    /// The object does not exist (404).
    NotFound,
    /// The request conflicts with the state: in use, exists, a version race, ambiguous (409).
    Conflict,
    /// Not allowed for this caller (403).
    Forbidden,
    /// No leader, no quorum, not in a cluster: try again or elsewhere (503).
    Unavailable,
}

impl Kind {
    /// The HTTP status every HTTP front end answers this kind with.
    pub fn http_status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An application error: its kind, a stable machine code (`not_found`, `conflict`, `not_leader`,
/// …) and the message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let code = match kind {
            Kind::Invalid => "invalid",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::Forbidden => "forbidden",
            Kind::Unavailable => "unavailable",
        };
        AppError { kind, code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::new(Kind::Invalid, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        AppError::new(Kind::Conflict, message)
    }
    pub fn not_found(what: &str, key: &str) -> Self {
        AppError::new(Kind::NotFound, format!("{what} {key} not found"))
    }
}

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(c) => {
                let kind = match c.kind {
                    ErrorKind::NotFound => Kind::NotFound,
                    ErrorKind::Conflict => Kind::Conflict,
                    ErrorKind::Invalid => Kind::Invalid,
                };
                AppError::new(kind, c.message)
            }
            e @ WriteError::NotLeader { .. } => {
                AppError { kind: Kind::Unavailable, code: "not_leader", message: e.to_string() }
            }
            WriteError::Unavailable(m) => AppError::new(Kind::Unavailable, m),
        }
    }
}

impl From<ReadError> for AppError {
    fn from(e: ReadError) -> Self {
        match e {
            e @ ReadError::NotLeader { .. } => {
                AppError { kind: Kind::Unavailable, code: "not_leader", message: e.to_string() }
            }
            ReadError::Unavailable(m) => AppError::new(Kind::Unavailable, m),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// A partial node update (`shoal node update`, `node promote/demote`, the UI's availability
/// buttons, Docker's node update).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct NodeUpdate {
    /// The node version the change is based on; omit to apply it to the newest spec.
    pub version: Option<u64>,
    pub availability: Option<Availability>,
    pub role: Option<NodeRole>,
    pub label_add: BTreeMap<String, String>,
    pub label_rm: Vec<String>,
    /// With availability `drain`: migrate the node's tasks that can be checkpointed first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub migrate: bool,
}

/// A network as `network inspect` shows it: the object and every node's address on it.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub network: Network,
    /// Each node's own address on the network (its endpoint there once the agents plumb it).
    #[serde(default)]
    pub peers: Vec<NodeAddress>,
}

/// Which tasks to list.
#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    /// A service id or name.
    pub service: Option<String>,
    /// A node id or hostname.
    pub node: Option<String>,
}

/// New object ids: 25 base-36 characters from the OS random source.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = Timestamp::from_system_time(std::time::SystemTime::now()).as_nanos();
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    let hi = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let lo = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    shoal_types::id::id_from_bits(hi, lo)
}

/// A node by id, or by hostname when exactly one node has it (like docker, an ambiguous hostname
/// is refused: use the id).
pub fn find_node<'s>(s: &'s ClusterState, key: &str) -> AppResult<Option<&'s Node>> {
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
            Err(AppError::conflict(format!(
                "node {key} is ambiguous: {} nodes have this hostname ({}); use the node id",
                ids.len(),
                ids.join(", ")
            )))
        }
    }
}

/// A service by id, or by name.
pub fn find_service<'s>(s: &'s ClusterState, key: &str) -> Option<&'s Service> {
    s.service(&ServiceId::new(key)).or_else(|| s.service_by_name(key))
}

/// A network by id, or by name.
pub fn find_network<'s>(s: &'s ClusterState, key: &str) -> Option<&'s Network> {
    s.network(&NetworkId::new(key)).or_else(|| s.network_by_name(key))
}

/// What [`resolve_prefix`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Node,
    Service,
    Task,
    Network,
}

/// A key as Docker resolves it (`docker service rm 1nzd34uubvk2`, an id as `ls` shows it): an
/// id or a name (a hostname for nodes), as the lookups above take it, or else the full id of the
/// one object whose id starts with `key`. `None`: nothing matches; a prefix of several ids is a
/// conflict.
pub fn resolve_prefix(s: &ClusterState, what: Lookup, key: &str) -> AppResult<Option<String>> {
    let exact = match what {
        Lookup::Node => find_node(s, key)?.is_some(),
        Lookup::Service => find_service(s, key).is_some(),
        Lookup::Task => s.task(&TaskId::new(key)).is_some(),
        Lookup::Network => find_network(s, key).is_some(),
    };
    if exact || key.is_empty() {
        return Ok(exact.then(|| key.to_string()));
    }
    let starts = |id: &str| id.starts_with(key).then(|| id.to_string());
    let ids: Vec<String> = match what {
        Lookup::Node => s.nodes().filter_map(|n| starts(n.id.as_str())).collect(),
        Lookup::Service => s.services().filter_map(|x| starts(x.id.as_str())).collect(),
        Lookup::Task => s.tasks().filter_map(|t| starts(t.id.as_str())).collect(),
        Lookup::Network => s.networks().filter_map(|n| starts(n.id.as_str())).collect(),
    };
    match ids.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => {
            let kind = format!("{what:?}").to_lowercase();
            Err(AppError::conflict(format!("{kind} {key} is ambiguous ({} matches found)", many.len())))
        }
    }
}

/// `spec` with the update's changes.
fn updated_spec(spec: &NodeSpec, u: &NodeUpdate) -> AppResult<NodeSpec> {
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
            return Err(AppError::invalid(format!("node has no label {k:?}")));
        }
    }
    Ok(spec)
}

/// Seals registry credentials for service `id` (see [`crate::registry_auth`]).
fn seal_auth(ca_key: &str, id: &ServiceId, auth: &RegistryAuth) -> AppResult<shoal_types::SealedAuth> {
    if auth.username.is_empty() && auth.password.is_empty() {
        return Err(AppError::invalid("registry credentials without a user name or password"));
    }
    crate::registry_auth::seal(ca_key, id.as_str(), auth)
        .map_err(|e| AppError::new(Kind::Unavailable, e.to_string()))
}

/// The application, on one manager.
#[derive(Clone)]
pub struct App {
    m: Arc<Manager>,
}

impl App {
    pub fn new(m: Arc<Manager>) -> Self {
        App { m }
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.m
    }

    /// A read of the state: linearizable (through the leader's read index) or this replica's.
    pub async fn read<T>(&self, c: Consistency, f: impl FnOnce(&ClusterState) -> T) -> AppResult<T> {
        match c {
            Consistency::Linearizable => Ok(crate::internal::read_linearizable(&self.m, f).await?),
            Consistency::Stale => Ok(self.m.node.read(Consistency::Stale, f).await?),
        }
    }

    /// A write through the one write path (the leader, forwarded by followers).
    pub async fn write(&self, cmd: Command) -> AppResult<shoal_raft::Response> {
        Ok(crate::internal::write(&self.m, cmd).await?)
    }

    // ---- nodes ----

    /// Manager status is Raft's view, not a stored claim: leader and members come from the
    /// current membership, reachability from the node's heartbeat state.
    fn with_manager_status(&self, mut node: Node) -> Node {
        let raft = self.m.node.status();
        let member = raft
            .voters
            .values()
            .chain(raft.learners.values())
            .find(|n| n.node_id == node.id.as_str())
            .cloned();
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

    pub async fn nodes(&self, c: Consistency) -> AppResult<Vec<Node>> {
        let nodes: Vec<Node> = self.read(c, |s| s.nodes().cloned().collect()).await?;
        Ok(nodes.into_iter().map(|n| self.with_manager_status(n)).collect())
    }

    pub async fn node(&self, key: &str, c: Consistency) -> AppResult<Node> {
        self.read(c, |s| find_node(s, key).map(|n| n.cloned()))
            .await??
            .map(|n| self.with_manager_status(n))
            .ok_or_else(|| AppError::not_found("node", key))
    }

    /// Changes a node's availability, labels or role. Decided on the committed state; the last
    /// manager cannot be demoted; a drain first migrates what should keep its state; a race with
    /// a status change (heartbeats) is retried when the caller gave no version; a demoted
    /// manager leaves the Raft membership after its spec says worker.
    pub async fn update_node(&self, key: &str, u: &NodeUpdate) -> AppResult<Node> {
        let node = self
            .read(Consistency::Linearizable, |s| find_node(s, key).map(|n| n.cloned()))
            .await??
            .ok_or_else(|| AppError::not_found("node", key))?;
        if let Some(k) = u.label_add.keys().find(|k| k.trim().is_empty()) {
            return Err(AppError::invalid(format!("invalid label key {k:?}")));
        }
        let spec = updated_spec(&node.spec, u)?;
        shoal_types::validate::validate_labels(&spec.labels)
            .map_err(|m| AppError::invalid(format!("invalid node spec: labels: {m}")))?;
        let member = {
            let status = self.m.node.status();
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
                return Err(AppError::conflict("cannot demote the last manager"));
            }
        }
        if spec.availability == Availability::Drain && node.spec.availability != Availability::Drain {
            self.migrate_off(&node.id, u.migrate).await?;
        }
        let mut attempt = (node.version, spec);
        for tries in 1.. {
            let expected_version = Some(u.version.unwrap_or(attempt.0));
            let cmd =
                Command::UpdateNodeSpec { id: node.id.clone(), expected_version, spec: attempt.1.clone() };
            match crate::internal::write(&self.m, cmd).await {
                Ok(_) => break,
                // Without a version from the client, a race with a status change (heartbeats,
                // registration) is not the client's conflict: apply the same change to the
                // newest spec.
                Err(WriteError::Refused(c))
                    if u.version.is_none() && c.kind == ErrorKind::Conflict && tries < 5 =>
                {
                    let fresh = self
                        .read(Consistency::Linearizable, |s| s.node(&node.id).cloned())
                        .await?
                        .ok_or_else(|| AppError::not_found("node", key))?;
                    attempt = (fresh.version, updated_spec(&fresh.spec, u)?);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if attempt.1.role == NodeRole::Worker && member.is_some() {
            // The spec says worker first, so the demoted node knows what to become once it is
            // out of the membership. Idempotent: demoting a half-demoted node finishes the job
            // (and the leader's reconciler does the same on its own).
            crate::internal::remove_from_membership(&self.m, vec![node.id.to_string()]).await?;
        }
        self.read(Consistency::Stale, |s| s.node(&node.id).cloned())
            .await?
            .ok_or_else(|| AppError::not_found("node", key))
    }

    /// Before a drain: the tasks on `node` that can be checkpointed and should keep their state
    /// (`all`: `--migrate`; else those of services with `--on-drain migrate`) move to other
    /// nodes (at most `PER_NODE` at a time). A task whose migration fails is back on the node
    /// and is restarted elsewhere by the drain, like the tasks that cannot migrate.
    async fn migrate_off(&self, node: &NodeId, all: bool) -> AppResult<()> {
        use futures_util::StreamExt;
        let ids: Vec<TaskId> = self
            .read(Consistency::Linearizable, |s| {
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
            let m = self.m.clone();
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

    /// Removes a node: refused for a ready node without `force` and for this manager itself; a
    /// manager leaves the Raft membership first; a member without a node object is taken out of
    /// the membership all the same. The node is remembered as removed.
    pub async fn remove_node(&self, key: &str, force: bool) -> AppResult<()> {
        let node = self.read(Consistency::Linearizable, |s| find_node(s, key).map(|n| n.cloned())).await??;
        let status = self.m.node.status();
        let me = self.m.node.config().node.node_id.clone();
        let Some(node) = node else {
            // A manager in the membership without a node object (it never registered, or its
            // object is gone).
            let ghost = status
                .voters
                .values()
                .chain(status.learners.values())
                .find(|n| n.node_id == key && n.node_id != me);
            return match ghost {
                Some(n) => {
                    crate::internal::remove_from_membership(&self.m, vec![n.node_id.clone()]).await?;
                    // Remembered as removed: if it comes back it learns so and starts anew.
                    self.write(Command::RemoveNode { id: NodeId::new(n.node_id.clone()) }).await?;
                    Ok(())
                }
                None => Err(AppError::not_found("node", key)),
            };
        };
        if node.status.state == shoal_types::NodeState::Ready && !force {
            return Err(AppError::conflict(format!(
                "node {} is ready: drain and stop it first, or use --force",
                node.id
            )));
        }
        if node.id.as_str() == me {
            return Err(AppError::conflict(
                "a manager cannot remove itself; demote it or run `shoal cluster leave` on it",
            ));
        }
        // A manager leaves the Raft membership first (voter or learner), so its certificate stops
        // working for Raft at once; the last voter can never be removed.
        let member =
            status.voters.values().chain(status.learners.values()).any(|n| n.node_id == node.id.as_str());
        if member {
            crate::internal::remove_from_membership(&self.m, vec![node.id.to_string()]).await?;
        }
        self.write(Command::RemoveNode { id: node.id }).await?;
        Ok(())
    }

    // ---- services ----

    pub async fn services(&self, c: Consistency) -> AppResult<Vec<Service>> {
        self.read(c, |s| s.services().cloned().collect()).await
    }

    pub async fn service(&self, key: &str, c: Consistency) -> AppResult<Service> {
        self.read(c, |s| find_service(s, key).cloned())
            .await?
            .ok_or_else(|| AppError::not_found("service", key))
    }

    /// The id of the service `key` names, on the committed state (a name must not name
    /// yesterday's service).
    pub async fn service_id(&self, key: &str) -> AppResult<ServiceId> {
        self.read(Consistency::Linearizable, |s| find_service(s, key).map(|s| s.id.clone()))
            .await?
            .ok_or_else(|| AppError::not_found("service", key))
    }

    async fn service_after_write(&self, id: &ServiceId, key: &str) -> AppResult<Service> {
        self.read(Consistency::Stale, |s| s.service(id).cloned())
            .await?
            .ok_or_else(|| AppError::not_found("service", key))
    }

    /// Creates a service; returns its id. The driver rules are checked here, on the request;
    /// `apply` checks only the structure, so commands committed before a rule existed replay as
    /// they applied then.
    pub async fn create_service(&self, spec: ServiceSpec) -> AppResult<ServiceId> {
        self.create_service_with_auth(spec, None).await
    }

    /// Creates a service with registry credentials (`--with-registry-auth`, Docker's
    /// `X-Registry-Auth`): they are sealed for the new service before anything is written
    /// ([`crate::registry_auth`]). A spec may not bring sealed credentials of its own.
    pub async fn create_service_with_auth(
        &self,
        mut spec: ServiceSpec,
        auth: Option<RegistryAuth>,
    ) -> AppResult<ServiceId> {
        if spec.task_template.registry_auth.is_some() {
            return Err(AppError::invalid(
                "invalid service spec: task_template.registry_auth: set only by the managers, from \
                 credentials sent with the request (--with-registry-auth)",
            ));
        }
        let id = ServiceId::new(new_id());
        if let Some(a) = auth {
            let key = self.ca_key().await?;
            spec.task_template.registry_auth = Some(seal_auth(&key, &id, &a)?);
        }
        spec.validate().map_err(|e| AppError::invalid(format!("invalid service spec: {e}")))?;
        if !spec.depends_on.is_empty() {
            let check = |s: &ClusterState| crate::stack::check_dependencies(s, &spec, None);
            self.read(Consistency::Linearizable, check).await??;
        }
        let svc = Service::new(id.clone(), spec);
        self.write(Command::CreateService { service: Box::new(svc) }).await?;
        Ok(id)
    }

    /// Creates a service as `service create` does, resolving its image like Swarm: an oci
    /// service's image reported by some node is pinned to its config digest
    /// (`name:tag@sha256:…`), so every node runs the same image. Without such a node the service
    /// is created unpinned and the answer carries a warning. Stacks and the Docker API create
    /// services unpinned ([`App::create_service`]): a redeployed stack compares its file's specs
    /// with the stored ones, which a pinned image would always make differ.
    pub async fn create_service_resolving_image(
        &self,
        mut spec: ServiceSpec,
        auth: Option<RegistryAuth>,
    ) -> AppResult<(ServiceId, Vec<String>)> {
        let mut warnings = Vec::new();
        let oci = spec.task_template.driver.as_deref() == Some("oci");
        if let Some(image) = spec.task_template.image.clone().filter(|_| oci) {
            let (name, digest) = shoal_types::node::image_ref_parts(&image);
            if digest.is_none() {
                let found = self.read(Consistency::Stale, |s| pinned_digest(s, &name)).await?;
                match found {
                    Some(d) => spec.task_template.image = Some(format!("{name}@{d}")),
                    None => warnings.push(format!(
                        "image {image} could not be accessed on any node: the service uses it unpinned \
                         (a node that lacks it fetches it from a peer once one reports it)"
                    )),
                }
            }
        }
        let id = self.create_service_with_auth(spec, auth).await?;
        Ok((id, warnings))
    }

    /// Replaces a service's spec; `version` (optimistic concurrency) refuses the change when the
    /// service changed since.
    pub async fn update_service(
        &self,
        key: &str,
        version: Option<u64>,
        spec: ServiceSpec,
    ) -> AppResult<Service> {
        self.update_service_with_auth(key, version, spec, None).await
    }

    /// [`App::update_service`] with registry credentials. With `auth` they are sealed and
    /// replace the service's; without, a spec that brings none keeps the service's sealed
    /// credentials (as Swarm does), and one that brings sealed credentials must bring ones
    /// sealed for this service.
    pub async fn update_service_with_auth(
        &self,
        key: &str,
        version: Option<u64>,
        mut spec: ServiceSpec,
        auth: Option<RegistryAuth>,
    ) -> AppResult<Service> {
        let id = self.service_id(key).await?;
        if let Some(a) = auth {
            let key = self.ca_key().await?;
            spec.task_template.registry_auth = Some(seal_auth(&key, &id, &a)?);
        } else if let Some(given) = &spec.task_template.registry_auth {
            let key = self.ca_key().await?;
            if crate::registry_auth::unseal(&key, id.as_str(), given).is_err() {
                return Err(AppError::invalid(
                    "invalid service spec: task_template.registry_auth: not credentials sealed for this \
                     service (send them with --with-registry-auth)",
                ));
            }
        } else if spec.task_template.image.is_some() {
            let stored = self
                .read(Consistency::Linearizable, |s| {
                    s.service(&id).map(|s| s.spec.task_template.registry_auth.clone())
                })
                .await?;
            spec.task_template.registry_auth = stored.flatten();
        }
        spec.validate().map_err(|e| AppError::invalid(format!("invalid service spec: {e}")))?;
        if !spec.depends_on.is_empty() {
            let check = |s: &ClusterState| crate::stack::check_dependencies(s, &spec, Some(&id));
            self.read(Consistency::Linearizable, check).await??;
        }
        let cmd = Command::UpdateService { id: id.clone(), expected_version: version, spec: Box::new(spec) };
        self.write(cmd).await?;
        self.service_after_write(&id, key).await
    }

    /// The cluster CA's private key, from which the registry credentials' key derives.
    async fn ca_key(&self) -> AppResult<String> {
        self.read(Consistency::Stale, |s| s.cluster().map(|c| c.ca_key_pem.clone()))
            .await?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                AppError::new(Kind::Unavailable, "the cluster is not initialized: no key to seal credentials")
            })
    }

    /// Returns to the previous spec.
    pub async fn rollback_service(&self, key: &str) -> AppResult<Service> {
        let id = self.service_id(key).await?;
        self.write(Command::RollbackService { id: id.clone(), expected_version: None }).await?;
        self.service_after_write(&id, key).await
    }

    /// Changes only the replica count, whatever else changes meanwhile (retried on a version
    /// race).
    pub async fn scale_service(&self, key: &str, replicas: u64) -> AppResult<Service> {
        if replicas > MAX_REPLICAS {
            return Err(AppError::invalid(format!("replicas: at most {MAX_REPLICAS}, got {replicas}")));
        }
        let id = self.service_id(key).await?;
        self.edit_spec(&id, key, |svc, spec| match &mut spec.mode {
            ServiceMode::Replicated { replicas: r } => {
                *r = replicas;
                Ok(true)
            }
            _ => Err(AppError::invalid(format!(
                "service {} is not a replicated service: it cannot be scaled",
                svc.spec.name
            ))),
        })
        .await
    }

    /// Changes the spec of service `id` with `edit`, applied to its newest version and retried
    /// (up to 5 times) when another write changed it meanwhile; `edit` answers false when there
    /// is nothing to change. Returns the service as committed.
    pub async fn edit_spec(
        &self,
        id: &ServiceId,
        key: &str,
        edit: impl Fn(&Service, &mut ServiceSpec) -> AppResult<bool>,
    ) -> AppResult<Service> {
        for attempt in 1.. {
            let svc = self
                .read(Consistency::Linearizable, |s| s.service(id).cloned())
                .await?
                .ok_or_else(|| AppError::not_found("service", key))?;
            let mut spec = svc.spec.clone();
            if !edit(&svc, &mut spec)? {
                return Ok(svc);
            }
            let cmd = Command::UpdateService {
                id: id.clone(),
                expected_version: Some(svc.version),
                spec: Box::new(spec),
            };
            match crate::internal::write(&self.m, cmd).await {
                Ok(_) => break,
                Err(WriteError::Refused(c)) if c.kind == ErrorKind::Conflict && attempt < 5 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.service_after_write(id, key).await
    }

    /// Evens out a replicated service's spread, one task at a time.
    pub async fn rebalance_service(&self, key: &str) -> AppResult<Service> {
        let id = self.service_id(key).await?;
        self.write(Command::RebalanceService { id: id.clone() }).await?;
        self.service_after_write(&id, key).await
    }

    /// Removes a service; its tasks stop.
    pub async fn remove_service(&self, key: &str) -> AppResult<()> {
        let id = self.service_id(key).await?;
        self.write(Command::RemoveService { id }).await?;
        Ok(())
    }

    // ---- tasks ----

    /// Tasks, of one service and/or on one node (each named by id or name).
    pub async fn tasks(&self, f: &TaskFilter, c: Consistency) -> AppResult<Vec<Task>> {
        self.read(c, |s| {
            let svc = f.service.as_deref().map(|k| find_service(s, k).map(|x| x.id.clone()));
            let node =
                f.node.as_deref().map(|k| find_node(s, k)).transpose()?.map(|n| n.map(|x| x.id.clone()));
            match (svc, node) {
                (Some(None), _) => Err(AppError::not_found("service", f.service.as_deref().unwrap_or(""))),
                (_, Some(None)) => Err(AppError::not_found("node", f.node.as_deref().unwrap_or(""))),
                (Some(Some(sid)), n) => Ok(s
                    .tasks_of_service(&sid)
                    .filter(|t| n.as_ref().is_none_or(|n| n.as_ref() == t.node_id.as_ref()))
                    .cloned()
                    .collect()),
                (None, Some(Some(nid))) => Ok(s.tasks_on_node(&nid).cloned().collect()),
                (None, None) => Ok(s.tasks().cloned().collect()),
            }
        })
        .await?
    }

    // ---- networks ----

    pub async fn networks(&self, c: Consistency) -> AppResult<Vec<Network>> {
        self.read(c, |s| s.networks().cloned().collect()).await
    }

    pub async fn network(&self, key: &str, c: Consistency) -> AppResult<NetworkInfo> {
        self.read(c, |s| {
            find_network(s, key).map(|n| NetworkInfo { network: n.clone(), peers: s.node_addresses(&n.id) })
        })
        .await?
        .ok_or_else(|| AppError::not_found("network", key))
    }

    /// Creates an overlay network; `apply` allocates its VNI and subnet and refuses overlaps.
    pub async fn create_network(&self, spec: NetworkSpec) -> AppResult<NetworkId> {
        spec.validate().map_err(|e| AppError::invalid(format!("invalid network spec: {e}")))?;
        shoal_types::validate::validate_labels(&spec.labels)
            .map_err(|m| AppError::invalid(format!("invalid network spec: labels: {m}")))?;
        let id = NetworkId::new(new_id());
        let network = Network::new(id.clone(), spec);
        self.write(Command::CreateNetwork { network: Box::new(network) }).await?;
        Ok(id)
    }

    /// Removes a network that no service uses (`apply` refuses one in use, naming the services).
    pub async fn remove_network(&self, key: &str) -> AppResult<()> {
        // Resolved on the committed state (a name must not name yesterday's network).
        let id = self
            .read(Consistency::Linearizable, |s| find_network(s, key).map(|n| n.id.clone()))
            .await?
            .ok_or_else(|| AppError::not_found("network", key))?;
        self.write(Command::RemoveNetwork { id }).await?;
        Ok(())
    }

    /// Removes a network once the tasks of removed services still stopping on it have stopped
    /// (`stack rm`, and `docker network rm` right after `docker stack rm`, which Swarm allows):
    /// waits out their longest grace period and `STOP_SLACK` more. A network that a service uses
    /// is refused at once.
    pub async fn remove_network_when_stopped(&self, key: &str) -> AppResult<()> {
        let grace = self
            .read(Consistency::Linearizable, |s| {
                let id = find_network(s, key)?.id.clone();
                s.tasks()
                    .filter(|t| {
                        !t.status.state.is_terminal() && t.networks.iter().any(|n| n.network_id == id)
                    })
                    .map(|t| t.spec.stop_grace_period)
                    .max()
            })
            .await?
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + grace + STOP_SLACK;
        loop {
            match self.remove_network(key).await {
                Err(e)
                    if e.kind == Kind::Conflict
                        && e.message.contains(shoal_state::STILL_STOPPING)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }
}

/// How long a network's removal waits for stopping tasks beyond their grace period.
const STOP_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// The config digest the ready nodes report for image `name` (`name:tag`): the most common, the
/// smallest on a tie; None when no node has it.
pub fn pinned_digest(s: &ClusterState, name: &str) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for n in s.nodes().filter(|n| n.status.state == shoal_types::NodeState::Ready) {
        if let Some(d) = n.description.images.get(name) {
            *counts.entry(d.as_str()).or_insert(0) += 1;
        }
    }
    let best = counts.values().copied().max()?;
    counts.into_iter().find(|(_, c)| *c == best).map(|(d, _)| d.to_string())
}
