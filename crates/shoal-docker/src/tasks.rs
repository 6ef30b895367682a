//! `/tasks`: Shoal's tasks as Docker's (`service ps`, `node ps`, the CLI's progress polling),
//! with Docker's filters: service and node (id or name), id and name prefixes, desired-state,
//! and the CLI's internal `_up-to-date`.

use crate::error::{DockerError, DockerResult};
use crate::filters::Filters;
use crate::spec;
use crate::Ctx;
use axum::extract::{Path, Query, State};
use axum::Json;
use bollard::models::{ContainerStatus, ObjectVersion, TaskState, TaskStatus};
use serde::Serialize;
use shoal_api::app::{find_node, find_service, resolve_prefix, AppError, Lookup};
use shoal_manager::Consistency;
use shoal_state::ClusterState;
use shoal_types as st;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Serialize)]
pub(crate) struct Task {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Version")]
    version: ObjectVersion,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "UpdatedAt")]
    updated_at: String,
    #[serde(rename = "Labels")]
    labels: HashMap<String, String>,
    #[serde(rename = "Spec")]
    spec: spec::TaskSpec,
    #[serde(rename = "ServiceID")]
    service_id: String,
    #[serde(rename = "Slot", skip_serializing_if = "Option::is_none")]
    slot: Option<u64>,
    #[serde(rename = "NodeID", skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    #[serde(rename = "Status")]
    status: TaskStatus,
    #[serde(rename = "DesiredState")]
    desired_state: TaskState,
    #[serde(rename = "NetworksAttachments", skip_serializing_if = "Vec::is_empty")]
    networks_attachments: Vec<NetworkAttachment>,
    #[serde(rename = "JobIteration", skip_serializing_if = "Option::is_none")]
    job_iteration: Option<ObjectVersion>,
}

#[derive(Debug, Serialize)]
struct NetworkAttachment {
    #[serde(rename = "Network")]
    network: AttachedNetwork,
    #[serde(rename = "Addresses")]
    addresses: Vec<String>,
}

#[derive(Debug, Serialize)]
struct AttachedNetwork {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Spec")]
    spec: AttachedNetworkSpec,
}

#[derive(Debug, Serialize)]
struct AttachedNetworkSpec {
    #[serde(rename = "Name")]
    name: String,
}

pub(crate) fn state(s: st::TaskState) -> TaskState {
    match s {
        st::TaskState::New => TaskState::NEW,
        st::TaskState::Pending => TaskState::PENDING,
        st::TaskState::Assigned => TaskState::ASSIGNED,
        st::TaskState::Accepted => TaskState::ACCEPTED,
        st::TaskState::Preparing => TaskState::PREPARING,
        st::TaskState::Starting => TaskState::STARTING,
        st::TaskState::Running => TaskState::RUNNING,
        st::TaskState::Complete => TaskState::COMPLETE,
        st::TaskState::Shutdown => TaskState::SHUTDOWN,
        st::TaskState::Failed => TaskState::FAILED,
        st::TaskState::Rejected => TaskState::REJECTED,
        st::TaskState::Remove => TaskState::REMOVE,
        st::TaskState::Orphaned => TaskState::ORPHANED,
    }
}

/// A task's slot as Docker numbers it: from 1 for replicated services, from 0 for replicated
/// jobs (the CLI's job progress counts slots from 0); Shoal counts both from 1.
fn docker_slot(t: &st::Task, svc: Option<&st::Service>) -> Option<u64> {
    let job = svc.is_some_and(|v| matches!(v.spec.mode, st::ServiceMode::ReplicatedJob { .. }));
    t.slot.map(|s| if job { s.saturating_sub(1) } else { s })
}

/// Docker's task name: `<service>.<slot or node id>.<task id>` (what the `name` filter matches).
fn task_name(t: &st::Task, svc: Option<&st::Service>) -> String {
    let service_name = svc.map_or("", |v| v.spec.name.as_str());
    let middle = match (docker_slot(t, svc), &t.node_id) {
        (Some(slot), _) => slot.to_string(),
        (None, Some(n)) => n.to_string(),
        (None, None) => String::new(),
    };
    format!("{service_name}.{middle}.{}", t.id)
}

/// A Shoal task as Docker's; network names come from the state.
pub(crate) fn render(s: &ClusterState, t: &st::Task) -> Task {
    let svc = s.service(&t.service_id);
    let template = st::ServiceSpec {
        task_template: (*t.spec).clone(),
        networks: t
            .networks
            .iter()
            .map(|n| st::NetworkAttachmentConfig { target: n.network_id.to_string(), aliases: vec![] })
            .collect(),
        ..Default::default()
    };
    let networks_attachments = t
        .networks
        .iter()
        .map(|n| NetworkAttachment {
            network: AttachedNetwork {
                id: n.network_id.to_string(),
                spec: AttachedNetworkSpec {
                    name: s.network(&n.network_id).map(|x| x.spec.name.clone()).unwrap_or_default(),
                },
            },
            addresses: n.addrs.clone(),
        })
        .collect();
    Task {
        id: t.id.to_string(),
        version: ObjectVersion { index: Some(t.version) },
        created_at: t.created_at.to_string(),
        updated_at: t.updated_at.to_string(),
        labels: HashMap::new(),
        spec: spec::from_shoal(&template).task_template.unwrap_or_default(),
        service_id: t.service_id.to_string(),
        slot: docker_slot(t, svc),
        node_id: t.node_id.as_ref().map(|n| n.to_string()),
        status: TaskStatus {
            timestamp: Some(t.status.timestamp.to_string()),
            state: Some(state(t.status.state)),
            message: Some(t.status.message.clone()),
            err: (!t.status.err.is_empty()).then(|| t.status.err.clone()),
            container_status: Some(ContainerStatus {
                container_id: (!t.status.runtime_id.is_empty()).then(|| t.status.runtime_id.clone()),
                pid: None,
                exit_code: t.status.exit_code.map(i64::from),
            }),
            port_status: None,
        },
        desired_state: state(t.desired_state),
        networks_attachments,
        job_iteration: svc
            .filter(|v| v.spec.mode.is_job())
            .map(|_| ObjectVersion { index: Some(t.spec_version) }),
    }
}

fn parse_state(name: &str) -> Option<st::TaskState> {
    st::ALL_TASK_STATES.into_iter().find(|s| s.as_str() == name.to_ascii_lowercase())
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Json<Vec<Task>>> {
    let f = Filters::from_query(
        &q,
        &["id", "name", "label", "service", "node", "desired-state", "_up-to-date", "runtime"],
    )?;
    let mut desired = BTreeSet::new();
    for d in f.get("desired-state") {
        desired.insert(
            parse_state(d)
                .ok_or_else(|| DockerError::invalid(format!("Invalid desired-state filter: '{d}'")))?,
        );
    }
    let up_to_date = f.contains("_up-to-date");
    let out = ctx
        .app
        .read(Consistency::Linearizable, |s| -> Result<Vec<Task>, AppError> {
            // Services and nodes by id or name, as Docker resolves them (unknown: 404).
            let mut services = BTreeSet::new();
            for key in f.get("service") {
                let id = resolve_prefix(s, Lookup::Service, key)?.unwrap_or_default();
                let svc = find_service(s, &id).ok_or_else(|| AppError::not_found("service", key))?;
                services.insert(svc.id.clone());
            }
            let mut nodes = BTreeSet::new();
            for key in f.get("node") {
                let id = resolve_prefix(s, Lookup::Node, key)?.unwrap_or_default();
                let n = find_node(s, &id)?.ok_or_else(|| AppError::not_found("node", key))?;
                nodes.insert(n.id.clone());
            }
            let candidates: Vec<&st::Task> = if services.is_empty() {
                s.tasks().collect()
            } else {
                services.iter().flat_map(|id| s.tasks_of_service(id)).collect()
            };
            Ok(candidates
                .into_iter()
                .filter(|t| {
                    let svc = s.service(&t.service_id);
                    let name = task_name(t, svc);
                    (nodes.is_empty() || t.node_id.as_ref().is_some_and(|n| nodes.contains(n)))
                        && (desired.is_empty() || desired.contains(&t.desired_state))
                        && (!up_to_date || svc.is_some_and(|v| v.spec_version == t.spec_version))
                        && f.any("id", |p| t.id.as_str().starts_with(p))
                        && f.any("name", |p| name.starts_with(p))
                        && f.any("runtime", |r| r == "container")
                        // Like swarmkit: a task's labels are its service's (`docker stack ps`
                        // lists a stack's tasks by the namespace label).
                        && f.labels_match("label", |k| svc.and_then(|v| v.spec.labels.get(k)).map(String::as_str))
                })
                .map(|t| render(s, t))
                .collect())
        })
        .await??;
    Ok(Json(out))
}

pub(crate) async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> DockerResult<Json<Task>> {
    let key = crate::resolve(&ctx, Lookup::Task, &id).await?;
    let found = ctx
        .app
        .read(Consistency::Linearizable, |s| s.task(&st::TaskId::new(key)).map(|t| render(s, t)))
        .await?;
    found.map(Json).ok_or_else(|| DockerError::not_found(format!("task {id} not found")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_resolve_as_in_docker() {
        let mut s = ClusterState::new();
        for (id, name) in [("abc111", "web"), ("abc222", "db")] {
            let mut spec = st::ServiceSpec { name: name.into(), ..Default::default() };
            spec.task_template.image = Some("busybox".into());
            let cmd = shoal_state::Command::CreateService {
                service: Box::new(st::Service::new(st::ServiceId::new(id), spec)),
            };
            s.apply(st::Timestamp::from_secs(1), cmd).expect("create");
        }
        let r = |k: &str| resolve_prefix(&s, Lookup::Service, k);
        assert_eq!(r("web").expect("name"), Some("web".into()));
        assert_eq!(r("abc111").expect("id"), Some("abc111".into()));
        assert_eq!(r("abc2").expect("prefix"), Some("abc222".into()));
        assert_eq!(r("zzz").expect("none"), None);
        let e = r("abc").expect_err("two services start so");
        assert_eq!(e.message, "service abc is ambiguous (2 matches found)");
    }

    #[test]
    fn names_and_states_read_as_docker_writes_them() {
        let mut s = ClusterState::new();
        let mut spec = st::ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.image = Some("busybox".into());
        let cmd = shoal_state::Command::CreateService {
            service: Box::new(st::Service::new(st::ServiceId::new("s1"), spec)),
        };
        s.apply(st::Timestamp::from_secs(1), cmd).expect("create");
        let mut t = st::Task {
            id: st::TaskId::new("t1"),
            version: 3,
            created_at: st::Timestamp::ZERO,
            updated_at: st::Timestamp::ZERO,
            service_id: st::ServiceId::new("s1"),
            slot: Some(2),
            node_id: Some(st::NodeId::new("n1")),
            spec: Default::default(),
            endpoint: Default::default(),
            spec_version: 1,
            desired_state: st::TaskState::Running,
            status: Default::default(),
            restart_history: vec![],
            restore: None,
            networks: vec![],
        };
        t.status.state = st::TaskState::Running;
        t.status.err = String::new();
        let web = s.service(&st::ServiceId::new("s1")).cloned();
        assert_eq!(task_name(&t, web.as_ref()), "web.2.t1");
        let v = serde_json::to_value(render(&s, &t)).expect("json");
        assert_eq!(v["Slot"], 2);
        // A replicated job's slots count from 0 in Docker.
        let mut job = web.clone().expect("service");
        job.spec.mode = st::ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 2 };
        assert_eq!(docker_slot(&t, Some(&job)), Some(1));
        assert_eq!(task_name(&t, Some(&job)), "web.1.t1");
        assert_eq!(v["DesiredState"], "running");
        assert_eq!(v["Status"]["State"], "running");
        assert!(v["Status"].get("Err").is_none());
        assert_eq!(parse_state("Shutdown"), Some(st::TaskState::Shutdown));
        assert_eq!(parse_state("sleeping"), None);
    }
}
