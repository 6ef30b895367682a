//! `/services`: create, list (with `ServiceStatus`), inspect, update (also `rollback=previous`
//! and the CLI's `scale`), remove.

use crate::error::{DockerError, DockerResult};
use crate::filters::Filters;
use crate::spec::{self, wire_port};
use crate::Ctx;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bollard::models::{
    ObjectVersion, ServiceEndpointVirtualIps, ServiceJobStatus, ServiceServiceStatus, ServiceUpdateStatus,
    ServiceUpdateStatusStateEnum,
};
use serde::Serialize;
use shoal_api::app::Lookup;
use shoal_manager::Consistency;
use shoal_state::ClusterState;
use shoal_types as st;
use std::collections::HashMap;

/// Docker's `Service`, with Shoal's translation of the spec (see [`spec`]).
#[derive(Debug, Serialize)]
pub(crate) struct Service {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Version")]
    version: ObjectVersion,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "UpdatedAt")]
    updated_at: String,
    #[serde(rename = "Spec")]
    spec: spec::ServiceSpec,
    #[serde(rename = "PreviousSpec", skip_serializing_if = "Option::is_none")]
    previous_spec: Option<spec::ServiceSpec>,
    #[serde(rename = "Endpoint")]
    endpoint: Endpoint,
    #[serde(rename = "UpdateStatus", skip_serializing_if = "Option::is_none")]
    update_status: Option<ServiceUpdateStatus>,
    #[serde(rename = "ServiceStatus", skip_serializing_if = "Option::is_none")]
    service_status: Option<ServiceServiceStatus>,
    #[serde(rename = "JobStatus", skip_serializing_if = "Option::is_none")]
    job_status: Option<ServiceJobStatus>,
}

#[derive(Debug, Serialize)]
struct Endpoint {
    #[serde(rename = "Spec")]
    spec: spec::EndpointSpec,
    #[serde(rename = "Ports", skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<spec::PortConfig>>,
    #[serde(rename = "VirtualIPs", skip_serializing_if = "Option::is_none")]
    virtual_ips: Option<Vec<ServiceEndpointVirtualIps>>,
}

/// Whether a spec change replaces tasks (Shoal's `spec_version` moves on exactly then).
fn changes_tasks(a: &st::ServiceSpec, b: &st::ServiceSpec) -> bool {
    a.task_template != b.task_template || a.endpoint != b.endpoint || a.networks != b.networks
}

/// Docker resets a service's update status on every update and sets it again only when tasks
/// are replaced; Shoal keeps the last one. So a completed update followed by a change that
/// replaces no task (a scale) is shown as no update status, which is what the docker CLI's
/// progress expects (else it would stop at once, thinking the scale complete).
fn update_status(svc: &st::Service) -> Option<ServiceUpdateStatus> {
    let u = svc.update_status.as_ref()?;
    if u.state == st::UpdateState::Completed
        && svc.previous_spec.as_ref().is_some_and(|prev| !changes_tasks(prev, &svc.spec))
    {
        return None;
    }
    Some(ServiceUpdateStatus {
        state: Some(match u.state {
            st::UpdateState::Updating => ServiceUpdateStatusStateEnum::UPDATING,
            st::UpdateState::Paused => ServiceUpdateStatusStateEnum::PAUSED,
            st::UpdateState::Completed => ServiceUpdateStatusStateEnum::COMPLETED,
            st::UpdateState::RollbackStarted => ServiceUpdateStatusStateEnum::ROLLBACK_STARTED,
            st::UpdateState::RollbackPaused => ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
            st::UpdateState::RollbackCompleted => ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED,
        }),
        started_at: Some(u.started_at.to_string()),
        completed_at: u.completed_at.map(|t| t.to_string()),
        message: Some(u.message.clone()),
    })
}

/// Running and desired tasks, as `service ls` shows them (`ServiceStatus`): running counts
/// tasks that run, are meant to and whose node is not down.
fn service_status(s: &ClusterState, svc: &st::Service) -> ServiceServiceStatus {
    let tasks: Vec<&st::Task> = s.tasks_of_service(&svc.id).collect();
    let node_up = |t: &st::Task| {
        t.node_id.as_ref().and_then(|n| s.node(n)).is_some_and(|n| n.status.state != st::NodeState::Down)
    };
    let running = tasks
        .iter()
        .filter(|t| {
            t.status.state == st::TaskState::Running
                && t.desired_state == st::TaskState::Running
                && node_up(t)
        })
        .count() as u64;
    let desired_running = tasks.iter().filter(|t| t.desired_state == st::TaskState::Running).count() as u64;
    let completed = tasks.iter().filter(|t| t.status.state == st::TaskState::Complete).count() as u64;
    let desired = match svc.spec.mode {
        st::ServiceMode::Replicated { replicas } => replicas,
        _ => desired_running,
    };
    ServiceServiceStatus {
        running_tasks: Some(running),
        desired_tasks: Some(desired),
        completed_tasks: Some(if svc.spec.mode.is_job() { completed } else { 0 }),
    }
}

/// A Shoal service as Docker's.
pub(crate) fn render(svc: &st::Service, status: Option<ServiceServiceStatus>) -> Service {
    let published: Vec<spec::PortConfig> =
        svc.spec.endpoint.ports.iter().filter(|p| p.published != 0).map(wire_port).collect();
    let vips: Vec<ServiceEndpointVirtualIps> = svc
        .endpoint
        .vips
        .iter()
        .map(|v| ServiceEndpointVirtualIps {
            network_id: Some(v.network_id.to_string()),
            addr: Some(v.addr.clone()),
        })
        .collect();
    Service {
        id: svc.id.to_string(),
        version: ObjectVersion { index: Some(svc.version) },
        created_at: svc.created_at.to_string(),
        updated_at: svc.updated_at.to_string(),
        spec: spec::from_shoal(&svc.spec),
        previous_spec: svc.previous_spec.as_ref().map(spec::from_shoal),
        endpoint: Endpoint {
            spec: spec::wire_endpoint(&svc.spec.endpoint),
            ports: (!published.is_empty()).then_some(published),
            virtual_ips: (!vips.is_empty()).then_some(vips),
        },
        update_status: update_status(svc),
        service_status: status,
        job_status: svc.spec.mode.is_job().then(|| ServiceJobStatus {
            job_iteration: Some(ObjectVersion { index: Some(svc.spec_version) }),
            last_execution: Some(svc.updated_at.to_string()),
        }),
    }
}

fn mode_name(m: &st::ServiceMode) -> &'static str {
    m.name()
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Json<Vec<Service>>> {
    let f = Filters::from_query(&q, &["id", "name", "label", "mode", "runtime"])?;
    let with_status = crate::filters::bool_param(&q, "status");
    let out = ctx
        .app
        .read(Consistency::Linearizable, |s| {
            s.services()
                .filter(|svc| {
                    f.any("id", |p| svc.id.as_str().starts_with(p))
                        && f.any("name", |p| svc.spec.name.starts_with(p))
                        && f.any("mode", |m| m == mode_name(&svc.spec.mode))
                        && f.any("runtime", |r| r == "container")
                        && f.labels_match("label", |k| svc.spec.labels.get(k).map(String::as_str))
                })
                .map(|svc| render(svc, with_status.then(|| service_status(s, svc))))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(out))
}

pub(crate) async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> DockerResult<Json<Service>> {
    let id = crate::resolve(&ctx, Lookup::Service, &id).await?;
    let svc = ctx.app.service(&id, Consistency::Linearizable).await?;
    Ok(Json(render(&svc, None)))
}

#[derive(Serialize)]
pub(crate) struct Created {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Warnings")]
    warnings: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct Updated {
    #[serde(rename = "Warnings")]
    warnings: Vec<String>,
}

fn parse_spec(body: &[u8]) -> DockerResult<spec::ServiceSpec> {
    serde_json::from_slice(body).map_err(|e| DockerError::invalid(format!("invalid service spec: {e}")))
}

/// The spec's secret and config references by name, their ids checked against the state (see
/// [`spec::name_references`]).
async fn named_references(ctx: &Ctx, d: spec::ServiceSpec) -> DockerResult<spec::ServiceSpec> {
    let (d, checked) = ctx
        .app
        .read(Consistency::Linearizable, move |s| {
            let mut d = d;
            let checked = spec::name_references(&mut d, |kind, id| {
                s.secret(&st::SecretId::new(id)).filter(|x| x.kind == kind).map(|x| x.spec.name.clone())
            });
            (d, checked)
        })
        .await?;
    checked.map_err(DockerError::invalid)?;
    Ok(d)
}

/// A name for a service created without one, as Docker's daemon makes one up: the image's
/// name and a random suffix (`busybox-3k9x0a`).
fn generated_name(image: Option<&str>) -> String {
    let base = image
        .and_then(|i| i.split('@').next())
        .and_then(|i| i.rsplit('/').next())
        .map(|i| i.split(':').next().unwrap_or(i))
        .map(|i| {
            i.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect::<String>()
        })
        .filter(|b| b.starts_with(|c: char| c.is_ascii_alphanumeric()) && b.len() <= 50)
        .unwrap_or_else(|| "service".into());
    let id = shoal_api::app::new_id();
    format!("{base}-{}", &id[id.len().saturating_sub(6)..])
}

/// Docker's `X-Registry-Auth` header (`--with-registry-auth`): the credentials the managers seal.
fn registry_auth(
    headers: &axum::http::HeaderMap,
) -> DockerResult<Option<shoal_api::registry_auth::RegistryAuth>> {
    let Some(h) = headers.get("x-registry-auth") else { return Ok(None) };
    let text = h.to_str().map_err(|_| DockerError::invalid("X-Registry-Auth: not text"))?;
    shoal_api::registry_auth::from_x_registry_auth(text).map_err(|e| DockerError::invalid(e.to_string()))
}

pub(crate) async fn create(
    State(ctx): State<Ctx>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> DockerResult<(StatusCode, Json<Created>)> {
    let auth = registry_auth(&headers)?;
    let mut d = parse_spec(&body)?;
    if d.name.as_deref().unwrap_or("").is_empty() {
        let image =
            d.task_template.as_ref().and_then(|t| t.container_spec.as_ref()).and_then(|c| c.image.clone());
        d.name = Some(generated_name(image.as_deref()));
    }
    let d = named_references(&ctx, d).await?;
    let s = spec::to_shoal(&d, None).map_err(DockerError::invalid)?;
    let id = ctx.app.create_service_with_auth(s, auth).await?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string(), warnings: Vec::new() })))
}

pub(crate) async fn update(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> DockerResult<Json<Updated>> {
    let auth = registry_auth(&headers)?;
    let version = match q.get("version") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>().map_err(|_| DockerError::invalid(format!("invalid service version {v:?}")))?,
        ),
    };
    let id = crate::resolve(&ctx, Lookup::Service, &id).await?;
    match q.get("rollback").map(String::as_str) {
        None | Some("") => {}
        // The previous spec, as Shoal keeps it (the spec sent along is not used, as in Docker).
        Some("previous") => {
            ctx.app.rollback_service(&id).await?;
            return Ok(Json(Updated { warnings: Vec::new() }));
        }
        Some(other) => return Err(DockerError::invalid(format!("unrecognized rollback option {other}"))),
    }
    let d = named_references(&ctx, parse_spec(&body)?).await?;
    let base = ctx.app.service(&id, Consistency::Linearizable).await?;
    let s = spec::to_shoal(&d, Some(&base.spec)).map_err(DockerError::invalid)?;
    ctx.app.update_service_with_auth(base.id.as_str(), version, s, auth).await?;
    Ok(Json(Updated { warnings: Vec::new() }))
}

pub(crate) async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>) -> DockerResult<StatusCode> {
    let id = crate::resolve(&ctx, Lookup::Service, &id).await?;
    ctx.app.remove_service(&id).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> st::Service {
        let mut spec = st::ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.image = Some("busybox".into());
        let mut s = st::Service::new(st::ServiceId::new("s1"), spec);
        s.version = 7;
        s
    }

    #[test]
    fn a_completed_update_is_hidden_after_a_change_that_replaces_no_task() {
        let mut s = svc();
        s.update_status = Some(st::UpdateStatus {
            state: st::UpdateState::Completed,
            started_at: st::Timestamp::ZERO,
            completed_at: Some(st::Timestamp::ZERO),
            message: "update completed".into(),
        });
        let mut prev = s.spec.clone();
        prev.task_template.image = Some("busybox:old".into());
        s.previous_spec = Some(prev.clone());
        assert!(update_status(&s).is_some(), "the update that replaced tasks shows");
        prev.task_template.image = s.spec.task_template.image.clone();
        prev.mode = st::ServiceMode::Replicated { replicas: 5 };
        s.previous_spec = Some(prev);
        assert!(update_status(&s).is_none(), "after a scale, as Docker: none");
        let v = serde_json::to_value(render(&s, None)).expect("json");
        assert_eq!(v["ID"], "s1");
        assert_eq!(v["Version"]["Index"], 7);
        assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
        assert!(v.get("UpdateStatus").is_none());
    }

    #[test]
    fn generated_names_follow_the_image() {
        assert!(generated_name(Some("docker.io/library/busybox:latest@sha256:ab")).starts_with("busybox-"));
        assert!(generated_name(None).starts_with("service-"));
        st::validate::validate_name(&generated_name(Some("registry:5000/team/app:1"))).expect("valid");
    }
}
