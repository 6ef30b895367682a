//! Nodes. The operator owns `spec` (role, availability, labels); the agent reports `description`
//! (what the machine is and can run); the dispatcher owns `status` (is it alive).

use crate::id::NodeId;
use crate::resources::Resources;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_status: Option<ManagerStatus>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Manager,
    #[default]
    Worker,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

/// `active` takes tasks; `pause` keeps its tasks but takes no new ones; `drain` moves its tasks off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

/// The operator's part of a node; refuses unknown fields like the service spec. The rest of
/// the node (description, status, manager status) is reported by agents and managers, possibly
/// of a newer version, and stays tolerant of fields it does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSpec {
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

/// A task runtime on the node and what it can do (the scheduler filters on these).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverInfo {
    pub name: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeDescription {
    pub hostname: String,
    pub platform: Platform,
    /// Total schedulable resources of the node.
    pub resources: Resources,
    pub drivers: Vec<DriverInfo>,
    pub engine_version: String,
    /// Labels set on the daemon's command line (`shoal daemon --label k=v`); `engine.labels.K`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub engine_labels: BTreeMap<String, String>,
}

impl NodeDescription {
    pub fn driver(&self, name: &str) -> Option<&DriverInfo> {
        self.drivers.iter().find(|d| d.name == name)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    #[default]
    Unknown,
    Ready,
    Down,
    Disconnected,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub state: NodeState,
    pub addr: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    #[default]
    Unknown,
    Reachable,
    Unreachable,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagerStatus {
    pub leader: bool,
    pub reachability: Reachability,
    pub addr: String,
}

impl Node {
    /// Ready and active: may receive new tasks.
    pub fn is_schedulable(&self) -> bool {
        self.status.state == NodeState::Ready && self.spec.availability == Availability::Active
    }

    /// A minimal ready worker, for tests and the simulator.
    pub fn test(id: &str, hostname: &str) -> Node {
        Node {
            id: NodeId::new(id),
            version: 1,
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
            spec: NodeSpec::default(),
            description: NodeDescription {
                hostname: hostname.to_string(),
                platform: Platform { os: "linux".into(), arch: "x86_64".into() },
                resources: Resources {
                    nano_cpus: 4 * crate::resources::NANO_CPUS_PER_CPU,
                    memory_bytes: 8 << 30,
                    ..Default::default()
                },
                drivers: vec![DriverInfo {
                    name: "process".into(),
                    version: "1".into(),
                    capabilities: vec![],
                }],
                engine_version: String::new(),
                engine_labels: BTreeMap::new(),
            },
            status: NodeStatus { state: NodeState::Ready, addr: String::new(), message: String::new() },
            manager_status: None,
        }
    }
}
