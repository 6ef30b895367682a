//! `/nodes`: Shoal's nodes as Docker's swarm nodes (`node ls|inspect|update|promote|demote|rm`).

use crate::error::{DockerError, DockerResult};
use crate::filters::{bool_param, Filters};
use crate::Ctx;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bollard::models::{
    EngineDescription, GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec, ManagerStatus, Node,
    NodeDescription, NodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, NodeStatus,
    ObjectVersion, Platform, Reachability, ResourceObject,
};
use shoal_api::app::{Lookup, NodeUpdate};
use shoal_manager::Consistency;
use shoal_types as st;
use std::collections::HashMap;

/// The address part of `host:port` (Docker shows nodes' IP addresses).
pub(crate) fn addr_ip(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']').to_string()
        }
        _ => addr.to_string(),
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn generic(g: &std::collections::BTreeMap<String, u64>) -> Option<Vec<GenericResourcesInner>> {
    (!g.is_empty()).then(|| {
        g.iter()
            .map(|(k, v)| GenericResourcesInner {
                discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                    kind: Some(k.clone()),
                    value: Some(i64_of(*v)),
                }),
                named_resource_spec: None,
            })
            .collect()
    })
}

/// A Shoal node as Docker's `Node`.
pub(crate) fn render(n: &st::Node) -> Node {
    let d = &n.description;
    Node {
        id: Some(n.id.to_string()),
        version: Some(ObjectVersion { index: Some(n.version) }),
        created_at: Some(n.created_at.to_string()),
        updated_at: Some(n.updated_at.to_string()),
        spec: Some(NodeSpec {
            name: None,
            labels: Some(n.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            role: Some(match n.spec.role {
                st::NodeRole::Manager => NodeSpecRoleEnum::MANAGER,
                st::NodeRole::Worker => NodeSpecRoleEnum::WORKER,
            }),
            availability: Some(match n.spec.availability {
                st::Availability::Active => NodeSpecAvailabilityEnum::ACTIVE,
                st::Availability::Pause => NodeSpecAvailabilityEnum::PAUSE,
                st::Availability::Drain => NodeSpecAvailabilityEnum::DRAIN,
            }),
        }),
        description: Some(NodeDescription {
            hostname: Some(d.hostname.clone()),
            platform: Some(Platform {
                architecture: Some(d.platform.arch.clone()),
                os: Some(d.platform.os.clone()),
            }),
            resources: Some(ResourceObject {
                nano_cpus: Some(i64_of(d.resources.nano_cpus)),
                memory_bytes: Some(i64_of(d.resources.memory_bytes)),
                generic_resources: generic(&d.resources.generic),
            }),
            engine: Some(EngineDescription {
                engine_version: Some(d.engine_version.clone()),
                labels: Some(d.engine_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                plugins: None,
            }),
            tls_info: None,
        }),
        status: Some(NodeStatus {
            state: Some(match n.status.state {
                st::NodeState::Unknown => NodeState::UNKNOWN,
                st::NodeState::Ready => NodeState::READY,
                st::NodeState::Down => NodeState::DOWN,
                st::NodeState::Disconnected => NodeState::DISCONNECTED,
            }),
            message: Some(n.status.message.clone()),
            addr: Some(addr_ip(&n.status.addr)),
        }),
        manager_status: n.manager_status.as_ref().map(|m| ManagerStatus {
            leader: Some(m.leader),
            reachability: Some(match m.reachability {
                st::Reachability::Unknown => Reachability::UNKNOWN,
                st::Reachability::Reachable => Reachability::REACHABLE,
                st::Reachability::Unreachable => Reachability::UNREACHABLE,
            }),
            addr: Some(m.addr.clone()),
        }),
    }
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Json<Vec<Node>>> {
    let f = Filters::from_query(&q, &["id", "name", "label", "node.label", "role", "membership"])?;
    for r in f.get("role") {
        if r != "manager" && r != "worker" {
            return Err(DockerError::invalid(format!("Invalid role filter: '{r}'")));
        }
    }
    for m in f.get("membership") {
        if m != "accepted" && m != "pending" {
            return Err(DockerError::invalid(format!("Invalid membership filter: '{m}'")));
        }
    }
    let nodes = ctx.app.nodes(Consistency::Linearizable).await?;
    let out = nodes
        .iter()
        .filter(|n| {
            f.any("id", |p| n.id.as_str().starts_with(p))
                && f.any("name", |p| n.description.hostname.starts_with(p))
                && f.any("role", |r| r == n.spec.role.as_str())
                // Every node in Shoal's state has been accepted.
                && f.any("membership", |m| m == "accepted")
                && f.labels_match("label", |k| n.description.engine_labels.get(k).map(String::as_str))
                && f.labels_match("node.label", |k| n.spec.labels.get(k).map(String::as_str))
        })
        .map(render)
        .collect();
    Ok(Json(out))
}

pub(crate) async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> DockerResult<Json<Node>> {
    let id = crate::resolve(&ctx, Lookup::Node, &id).await?;
    Ok(Json(render(&ctx.app.node(&id, Consistency::Linearizable).await?)))
}

/// `node update|promote|demote`: Docker sends the whole spec with the version it read; Shoal
/// applies the difference to the node at that version (a race is a conflict, as in Docker).
pub(crate) async fn update(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> DockerResult<StatusCode> {
    let version = match q.get("version") {
        None => None,
        Some(v) => {
            Some(v.parse::<u64>().map_err(|_| DockerError::invalid(format!("invalid node version {v:?}")))?)
        }
    };
    let spec: NodeSpec =
        serde_json::from_slice(&body).map_err(|e| DockerError::invalid(format!("invalid node spec: {e}")))?;
    if spec.name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(DockerError::invalid(
            "Spec.Name: not supported by Shoal (nodes are named by their hostname)",
        ));
    }
    let id = crate::resolve(&ctx, Lookup::Node, &id).await?;
    let node = ctx.app.node(&id, Consistency::Linearizable).await?;
    let labels = spec.labels.unwrap_or_default();
    let u = NodeUpdate {
        version,
        availability: match spec.availability {
            None | Some(NodeSpecAvailabilityEnum::EMPTY) => None,
            Some(NodeSpecAvailabilityEnum::ACTIVE) => Some(st::Availability::Active),
            Some(NodeSpecAvailabilityEnum::PAUSE) => Some(st::Availability::Pause),
            Some(NodeSpecAvailabilityEnum::DRAIN) => Some(st::Availability::Drain),
        },
        role: match spec.role {
            None | Some(NodeSpecRoleEnum::EMPTY) => None,
            Some(NodeSpecRoleEnum::MANAGER) => Some(st::NodeRole::Manager),
            Some(NodeSpecRoleEnum::WORKER) => Some(st::NodeRole::Worker),
        },
        label_add: labels
            .iter()
            .filter(|(k, v)| node.spec.labels.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        label_rm: node.spec.labels.keys().filter(|k| !labels.contains_key(*k)).cloned().collect(),
        migrate: false,
    };
    // The node's id: a hostname must not name another node by the time the update applies.
    ctx.app.update_node(node.id.as_str(), &u).await?;
    Ok(StatusCode::OK)
}

pub(crate) async fn remove(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<StatusCode> {
    let id = crate::resolve(&ctx, Lookup::Node, &id).await?;
    ctx.app.remove_node(&id, bool_param(&q, "force")).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_render_as_docker_shows_them() {
        let mut n = st::Node::test("n1", "host1");
        n.status.addr = "10.0.0.5:4242".into();
        n.spec.role = st::NodeRole::Manager;
        n.manager_status = Some(st::ManagerStatus {
            leader: true,
            reachability: st::Reachability::Reachable,
            addr: "10.0.0.5:4242".into(),
        });
        let v = serde_json::to_value(render(&n)).expect("json");
        assert_eq!(v["ID"], "n1");
        assert_eq!(v["Version"]["Index"], 1);
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "active");
        assert_eq!(v["Description"]["Hostname"], "host1");
        assert_eq!(v["Status"]["State"], "ready");
        assert_eq!(v["Status"]["Addr"], "10.0.0.5");
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Reachability"], "reachable");
        assert_eq!(addr_ip("[::1]:4242"), "::1");
        assert_eq!(addr_ip("host"), "host");
    }
}
