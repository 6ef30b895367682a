//! fleet units (CoreOS's `fleetctl`): systemd unit files with `[X-Fleet]` options, submitted to the
//! cluster and started as services (`shoal_fleet` does the mapping). As fleet kept its units in
//! etcd, Shoal keeps the submitted files in the cluster's key-value store, under
//! [`UNITS_PREFIX`]: a unit is `inactive` while only its file is there and `launched` while its
//! service exists. `stop` removes the service and keeps the file; `destroy` removes both. An
//! instance (`web@1.service`) starts from its own file or, without one, from its template's
//! (`web@.service`), with `%i` and the other specifiers expanded for it.

use crate::app::{App, AppError, AppResult};
use crate::kv::KvApp;
use crate::server::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_fleet::{UnitFile, UnitName};
use shoal_kv::{DeleteRangeRequest, Op, PutRequest, RangeRequest};
use shoal_manager::{Consistency, Manager};
use shoal_state::ClusterState;
use shoal_types::{Service, TaskState, FLEET_UNIT_LABEL};
use std::sync::Arc;

/// Where submitted unit files live in the key-value store (`NAME` → the file's text).
pub const UNITS_PREFIX: &str = "/_shoal/fleet/units/";
/// The largest unit file accepted.
pub const MAX_UNIT_BYTES: usize = 64 * 1024;

/// A unit as `list-unit-files` and `list-units` show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnitInfo {
    pub name: String,
    /// `inactive` (submitted) or `launched` (its service exists).
    pub state: String,
    /// Whether its file is stored (an instance may run from its template's).
    pub file: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its service's current tasks: node hostname, observed and desired state.
    #[serde(default)]
    pub tasks: Vec<UnitTask>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnitTask {
    pub node: String,
    pub state: String,
    pub desired: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub err: String,
}

/// What `submit` and `start` answer: the unit, its service's name and what the mapping reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnitResult {
    pub name: String,
    pub service: String,
    pub state: String,
    pub warnings: Vec<String>,
}

/// `PUT /v1/units/NAME`: submit the file and, with `start`, launch it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct UnitRequest {
    pub text: String,
    #[serde(default)]
    pub start: bool,
}

#[derive(Clone)]
pub struct Units {
    app: App,
    kv: Arc<KvApp>,
}

fn kv_error(e: crate::kv::KvFailure) -> AppError {
    AppError::new(crate::app::Kind::Unavailable, format!("the key-value store: {e}"))
}

fn parse_name(name: &str) -> AppResult<UnitName> {
    UnitName::parse(name).map_err(|e| AppError::invalid(e.to_string()))
}

impl Units {
    pub fn new(m: Arc<Manager>, kv: Arc<KvApp>) -> Self {
        Units { app: App::new(m), kv }
    }

    async fn stored(&self, name: &str) -> AppResult<Option<String>> {
        let key = format!("{UNITS_PREFIX}{name}");
        let r = self.kv.range(RangeRequest::key(key), false).await.map_err(kv_error)?;
        Ok(r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).to_string()))
    }

    /// The file a unit starts from: its own, or its template's.
    async fn file_for(&self, unit: &UnitName) -> AppResult<String> {
        if let Some(text) = self.stored(&unit.full).await? {
            return Ok(text);
        }
        if let Some(template) = template_of(unit) {
            if let Some(text) = self.stored(&template).await? {
                return Ok(text);
            }
        }
        Err(AppError::not_found("unit", &unit.full))
    }

    /// Checks and stores a unit file (inactive). A template's file is checked with a sample
    /// instance.
    pub async fn submit(&self, name: &str, text: &str) -> AppResult<UnitResult> {
        let unit = parse_name(name)?;
        if text.len() > MAX_UNIT_BYTES {
            return Err(AppError::invalid(format!("unit {name}: larger than {MAX_UNIT_BYTES} bytes")));
        }
        let mapped = map(&unit, text)?;
        let put = PutRequest {
            key: format!("{UNITS_PREFIX}{name}").into_bytes(),
            value: text.as_bytes().to_vec(),
            ..Default::default()
        };
        self.kv.write(Op::Put(put)).await.map_err(kv_error)?;
        let launched = self.service_of(name).await?.is_some();
        Ok(UnitResult {
            name: name.to_string(),
            service: mapped.spec.name,
            state: if launched { "launched" } else { "inactive" }.into(),
            warnings: mapped.warnings,
        })
    }

    /// Launches a submitted unit (or an instance of a submitted template): creates its service,
    /// or replaces the service's spec with what the file says now.
    pub async fn start(&self, name: &str) -> AppResult<UnitResult> {
        let unit = parse_name(name)?;
        if unit.is_template() {
            return Err(AppError::invalid(format!(
                "{name} is a template: start an instance of it, such as {}",
                name.replacen("@.", "@1.", 1)
            )));
        }
        let text = self.file_for(&unit).await?;
        let mapped = map(&unit, &text)?;
        match self.service_of(name).await? {
            Some(svc) => {
                self.app.update_service(svc.id.as_str(), Some(svc.version), mapped.spec.clone()).await?;
            }
            None => {
                self.app.create_service(mapped.spec.clone()).await?;
            }
        }
        Ok(UnitResult {
            name: name.into(),
            service: mapped.spec.name,
            state: "launched".into(),
            warnings: mapped.warnings,
        })
    }

    /// Removes a unit's service (its tasks stop); the file stays.
    pub async fn stop(&self, name: &str) -> AppResult<()> {
        parse_name(name)?;
        match self.service_of(name).await? {
            Some(svc) => self.app.remove_service(svc.id.as_str()).await,
            None if self.stored(name).await?.is_some() => Ok(()),
            None => Err(AppError::not_found("unit", name)),
        }
    }

    /// Stops a unit and forgets its file.
    pub async fn destroy(&self, name: &str) -> AppResult<()> {
        parse_name(name)?;
        let svc = self.service_of(name).await?;
        let had_file = self.stored(name).await?.is_some();
        if svc.is_none() && !had_file {
            return Err(AppError::not_found("unit", name));
        }
        if let Some(svc) = svc {
            self.app.remove_service(svc.id.as_str()).await?;
        }
        let del = DeleteRangeRequest::key(format!("{UNITS_PREFIX}{name}").into_bytes());
        self.kv.write(Op::DeleteRange(del)).await.map_err(kv_error)?;
        Ok(())
    }

    async fn service_of(&self, name: &str) -> AppResult<Option<Service>> {
        let name = name.to_string();
        self.app.read(Consistency::Linearizable, move |s| unit_service(s, &name).cloned()).await
    }

    /// Every unit: submitted files and the services started from units.
    pub async fn list(&self) -> AppResult<Vec<UnitInfo>> {
        let files = self
            .kv
            .range(RangeRequest::prefix(UNITS_PREFIX.as_bytes().to_vec()), false)
            .await
            .map_err(kv_error)?;
        let names: Vec<String> = files
            .kvs
            .iter()
            .filter_map(|kv| String::from_utf8(kv.key.get(UNITS_PREFIX.len()..)?.to_vec()).ok())
            .collect();
        self.app
            .read(Consistency::Linearizable, move |s| {
                let mut out: Vec<UnitInfo> = Vec::new();
                let launched: Vec<(&str, &Service)> = s
                    .services()
                    .filter_map(|svc| Some((svc.spec.labels.get(FLEET_UNIT_LABEL)?.as_str(), svc)))
                    .collect();
                let mut all: Vec<&str> =
                    names.iter().map(String::as_str).chain(launched.iter().map(|(n, _)| *n)).collect();
                all.sort_unstable();
                all.dedup();
                for name in all {
                    let svc = launched.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
                    out.push(UnitInfo {
                        name: name.to_string(),
                        state: if svc.is_some() { "launched" } else { "inactive" }.into(),
                        file: names.iter().any(|n| n == name),
                        service: svc.map(|s| s.spec.name.clone()),
                        tasks: svc.map(|svc| tasks_of(s, svc)).unwrap_or_default(),
                    });
                }
                out
            })
            .await
    }
}

/// `web@.service` for the instance `web@1.service`.
fn template_of(unit: &UnitName) -> Option<String> {
    unit.instance.as_ref().filter(|i| !i.is_empty()).map(|_| format!("{}@.service", unit.prefix))
}

fn map(unit: &UnitName, text: &str) -> AppResult<shoal_fleet::Mapped> {
    let name = &unit.full;
    let file = UnitFile::parse(text).map_err(|e| AppError::invalid(format!("unit {name}: {e}")))?;
    // A template is checked as its first instance would be.
    let as_name = if unit.is_template() { name.replacen("@.", "@1.", 1) } else { name.clone() };
    let mapped = shoal_fleet::to_service(&file, &as_name).map_err(|e| AppError::invalid(e.to_string()))?;
    mapped.spec.validate().map_err(|e| AppError::invalid(format!("unit {name}: {e}")))?;
    Ok(mapped)
}

/// The service started from unit `name`.
fn unit_service<'s>(s: &'s ClusterState, name: &str) -> Option<&'s Service> {
    s.services().find(|svc| svc.spec.labels.get(FLEET_UNIT_LABEL).is_some_and(|u| u == name))
}

fn tasks_of(s: &ClusterState, svc: &Service) -> Vec<UnitTask> {
    s.tasks_of_service(&svc.id)
        .filter(|t| t.desired_state <= TaskState::Running || !t.status.state.is_terminal())
        .map(|t| UnitTask {
            node: t
                .node_id
                .as_ref()
                .and_then(|n| s.node(n))
                .map(|n| n.description.hostname.clone())
                .unwrap_or_else(|| "-".into()),
            state: t.status.state.to_string(),
            desired: t.desired_state.to_string(),
            err: t.status.err.clone(),
        })
        .collect()
}

// ---- /v1 ----

/// `/v1/units`: list; `PUT /v1/units/NAME` submit (and start); start, stop; `DELETE` destroy.
pub fn router(m: Arc<Manager>, kv: Arc<KvApp>) -> Router {
    Router::new()
        .route("/v1/units", get(list))
        .route("/v1/units/{name}", put(submit).delete(destroy))
        .route("/v1/units/{name}/start", post(start))
        .route("/v1/units/{name}/stop", post(stop))
        .with_state(Units::new(m, kv))
}

async fn list(State(u): State<Units>) -> Result<Json<Vec<UnitInfo>>, ApiError> {
    Ok(Json(u.list().await?))
}

async fn submit(
    State(u): State<Units>,
    Path(name): Path<String>,
    crate::server::JsonBody(req): crate::server::JsonBody<UnitRequest>,
) -> Result<Json<UnitResult>, ApiError> {
    let mut r = u.submit(&name, &req.text).await?;
    if req.start {
        let started = u.start(&name).await?;
        r.state = started.state;
    }
    Ok(Json(r))
}

async fn start(State(u): State<Units>, Path(name): Path<String>) -> Result<Json<UnitResult>, ApiError> {
    Ok(Json(u.start(&name).await?))
}

async fn stop(State(u): State<Units>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    u.stop(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn destroy(State(u): State<Units>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    u.destroy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
