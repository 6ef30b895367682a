//! Nodes. The operator owns `spec` (role, availability, labels); the agent reports `description`
//! (what the machine is and can run); the dispatcher owns `status` (is it alive).

use crate::id::NodeId;
use crate::resources::Resources;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(schemars::JsonSchema)]
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
#[derive(schemars::JsonSchema)]
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
#[derive(schemars::JsonSchema)]
pub struct NodeSpec {
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

/// A task runtime on the node and what it can do (the scheduler filters on these).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct DriverInfo {
    pub name: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
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
    /// The images in the node's oci image store: `name:tag` → config digest (`sha256:…`), at
    /// most [`MAX_REPORTED_IMAGES`]. Other nodes fetch a missing image from one that has it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
}

/// The most images a node reports in its description (the rest stay local).
pub const MAX_REPORTED_IMAGES: usize = 256;

/// How a task's error starts when its image is on neither its node nor any peer; the scheduler
/// avoids such a node for the service while the rejection is in the slot history.
pub const IMAGE_NOT_FOUND: &str = "image not found";

/// Whether a task error says its image was on neither its node nor a peer.
pub fn is_image_not_found(err: &str) -> bool {
    err.starts_with(IMAGE_NOT_FOUND)
}

/// An image reference split the Docker way: `name:tag` (`:latest` added when there is no tag)
/// and the pinned digest, if any (`busybox`, `busybox:1`, `busybox:1@sha256:…`, `busybox@sha256:…`).
pub fn image_ref_parts(reference: &str) -> (String, Option<&str>) {
    let reference = reference.trim();
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let name =
        if last.contains(':') || name.is_empty() { name.to_string() } else { format!("{name}:latest") };
    (name, digest)
}

impl NodeDescription {
    pub fn driver(&self, name: &str) -> Option<&DriverInfo> {
        self.drivers.iter().find(|d| d.name == name)
    }

    /// Whether the node reports `reference` in its image store: by digest when it is pinned
    /// (any name with that config digest), else by `name:tag`.
    pub fn has_image(&self, reference: &str) -> bool {
        match image_ref_parts(reference) {
            (_, Some(digest)) => self.images.values().any(|d| d == digest),
            (name, None) => self.images.contains_key(&name),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum NodeState {
    #[default]
    Unknown,
    Ready,
    Down,
    Disconnected,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct NodeStatus {
    pub state: NodeState,
    pub addr: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Reachability {
    #[default]
    Unknown,
    Reachable,
    Unreachable,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
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
                images: BTreeMap::new(),
            },
            status: NodeStatus { state: NodeState::Ready, addr: String::new(), message: String::new() },
            manager_status: None,
        }
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn references_split_the_docker_way() {
        assert_eq!(image_ref_parts("busybox"), ("busybox:latest".into(), None));
        assert_eq!(image_ref_parts("reg:5000/a/b"), ("reg:5000/a/b:latest".into(), None));
        assert_eq!(image_ref_parts("a/b:1"), ("a/b:1".into(), None));
        assert_eq!(image_ref_parts("a:1@sha256:ab"), ("a:1".into(), Some("sha256:ab")));
        assert_eq!(image_ref_parts("a@sha256:ab"), ("a:latest".into(), Some("sha256:ab")));
    }

    #[test]
    fn a_node_has_an_image_by_name_or_by_pinned_digest() {
        let mut d = NodeDescription::default();
        d.images.insert("busybox:latest".into(), "sha256:aa".into());
        assert!(d.has_image("busybox"));
        assert!(d.has_image("busybox:latest@sha256:aa"));
        assert!(d.has_image("other@sha256:aa"));
        assert!(!d.has_image("busybox:latest@sha256:bb"));
        assert!(!d.has_image("busybox:1"));
        // Older descriptions without images still decode; an empty list is not written.
        let json = serde_json::to_string(&NodeDescription::default()).expect("json");
        assert!(!json.contains("images"));
        assert!(is_image_not_found("image not found: x"));
    }
}
