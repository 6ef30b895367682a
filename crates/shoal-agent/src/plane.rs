//! How the agent talks to the managers. The API crate implements it: in-process on a manager
//! node, over mutual TLS on a worker (the dispatcher endpoints).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_types::{NodeDescription, ServiceId, Task, TaskId, TaskStatus};
use std::collections::BTreeMap;

/// The tasks assigned to this node, as of `revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    /// Changes whenever any of the node's tasks changes; the agent passes it back to wait for
    /// the next change.
    pub revision: String,
    /// Every task bound to this node, in id order: the complete set, never a delta.
    pub tasks: Vec<Task>,
    /// The services of those tasks (their names name the tasks' containers). Older managers
    /// send none: the agent then names containers after the service id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<ServiceId, AssignedService>,
    /// Registry credentials of tasks that still have to start, by task: unsealed by the
    /// dispatcher for this node only, kept in memory (never in the task records), Debug
    /// redacted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_auth: BTreeMap<TaskId, shoal_driver::RegistryAuth>,
    /// The data of the secrets and configs that the node's tasks yet to start use, by id: sent
    /// to this node only, kept in memory until the task's files are in its tmpfs, Debug
    /// redacted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<shoal_types::SecretId, shoal_types::SecretData>,
}

/// What the agent knows of a task's service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedService {
    pub name: String,
    /// Its `com.docker.stack.namespace` label, for a service of a stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// An observed task status, batched to the managers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub task_id: TaskId,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PlaneError(pub String);

#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Registers this node (or refreshes its description).
    async fn register(&self, description: &NodeDescription) -> Result<(), PlaneError>;
    /// The node's assignments: at once when `known` is not the current revision, else when they
    /// change (or after a server-chosen wait, with the same revision).
    async fn assignments(&self, known: Option<&str>) -> Result<Assignments, PlaneError>;
    /// Delivers a batch of status reports (one Raft write).
    async fn report(&self, reports: Vec<StatusReport>) -> Result<(), PlaneError>;
    /// Says the node is alive; answers the period to send the next heartbeat after.
    async fn heartbeat(&self) -> Result<std::time::Duration, PlaneError>;
    /// The node's network view, long-polled like the assignments: at once when `known` is not
    /// the current revision, else when it changes (or after a server-chosen wait). A plane
    /// without networks never answers.
    async fn netview(&self, _known: Option<&str>) -> Result<shoal_net::NetView, PlaneError> {
        std::future::pending().await
    }
    /// Fetches a migrated task's checkpoint from the manager that holds it, verifies it and
    /// unpacks it into `dest` (nothing is unpacked from an archive that fails verification).
    async fn fetch_checkpoint(
        &self,
        spec: &shoal_types::RestoreSpec,
        _dest: &std::path::Path,
    ) -> Result<(), PlaneError> {
        Err(PlaneError(format!("this node cannot fetch checkpoint {}", spec.checkpoint_id)))
    }
    /// Fetches image `reference` (`name:tag`, possibly pinned `@sha256:…`) from a ready peer
    /// that reports it into the oci image store at `store_root`, verifying every blob; answers
    /// with the peer's hostname. A plane without peers has none.
    async fn fetch_image(
        &self,
        reference: &str,
        _store_root: &std::path::Path,
    ) -> Result<String, PlaneError> {
        Err(PlaneError(format!("no peer has {reference}")))
    }
}
