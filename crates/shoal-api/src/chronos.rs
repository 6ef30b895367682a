//! Chronos's REST API (Mesos's cluster cron, `mesos/chronos` 2.x/3.x) over Shoal's scheduled jobs,
//! so existing job definitions and clients (`chronos-python`) work unchanged. Served on the web
//! UI's listener and, with `--chronos-addr`, on its own (both under `/v1/scheduler/…`, Chronos
//! 3.x, and `/scheduler/…`, 2.x). It only translates: every call is an [`App`] call. Over TLS
//! the caller's client role applies ([`crate::roles`]): a read-only certificate may only `GET`.
//!
//! | Chronos | Shoal |
//! |---|---|
//! | `name` | the job's (service's) name; Chronos allows spaces, `.` and `#`, Shoal names do not |
//! | `command` + `shell` (default true) + `arguments` | `sh -c COMMAND`, or COMMAND ARGUMENTS… |
//! | `container {type DOCKER\|MESOS, image, volumes, network}` | docker / oci driver, image, bind mounts |
//! | `schedule` `R[n]/START/PERIOD`, `scheduleTimeZone` | the schedule and time zone |
//! | `parents` | `after` (all succeeded, Chronos's rule) |
//! | `epsilon` | `starting_deadline` |
//! | `retries` (default 2) | `retries` (no delay, as Chronos) |
//! | `concurrent` (default false) | concurrency allow / forbid |
//! | `softError`, `disabled` | `soft_error`, `suspend` |
//! | `cpus` (0.1), `mem` (128 MB) | reservations |
//! | `environmentVariables`, `runAsUser` | env, user |
//! | `constraints [[attr, EQUALS, value]]` | `node.labels.attr==value` (`hostname`: `node.hostname`) |
//! | `owner`, `ownerName`, `description`, `disk` | labels `chronos.*` (disk is not reserved) |
//!
//! What Shoal cannot honour is refused with the field named: `async` jobs, `executor`, `uris`
//! and `fetch`, `LIKE`/`UNLIKE` constraints, docker `parameters`, `forcePullImage`, `highPriority`.
//! Statistics (`successCount`, `lastError`, …) are answered and ignored on input.

use crate::app::{find_service, App, AppError};
use crate::jobs::JobGraph;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_manager::{Consistency, Manager};
use shoal_types::job::{format_iso_duration, parse_iso_duration};
use shoal_types::{
    ConcurrencyPolicy, Mount, MountType, RunState, ScheduledJob, Service, ServiceMode, ServiceSpec,
    NANO_CPUS_PER_CPU,
};
use std::collections::BTreeMap;
use std::sync::Arc;

type AppState = Arc<Manager>;

const LABEL_OWNER: &str = "chronos.owner";
const LABEL_OWNER_NAME: &str = "chronos.owner_name";
const LABEL_DESCRIPTION: &str = "chronos.description";
const LABEL_DISK: &str = "chronos.disk";

/// Chronos's defaults for what a job leaves out.
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_CPUS: f64 = 0.1;
const DEFAULT_MEM_MB: f64 = 128.0;
const DEFAULT_DISK_MB: f64 = 256.0;

/// The routes under both prefixes.
pub fn router(m: Arc<Manager>) -> Router {
    let mut r = Router::new();
    for prefix in ["/v1/scheduler", "/scheduler"] {
        r = r
            .route(&format!("{prefix}/jobs"), get(list))
            .route(&format!("{prefix}/jobs/search"), get(search))
            .route(&format!("{prefix}/iso8601"), post(add).put(add))
            .route(&format!("{prefix}/dependency"), post(add).put(add))
            .route(&format!("{prefix}/job/{{name}}"), get(job).put(run).delete(remove))
            .route(&format!("{prefix}/graph/dot"), get(graph_dot))
            .route(&format!("{prefix}/graph/csv"), get(graph_csv))
            .route(&format!("{prefix}/leader"), get(leader));
    }
    r.with_state(m).layer(axum::middleware::from_fn(no_browsers))
}

/// Is this one of Chronos's paths (they skip the web UI's header rule: Chronos clients do not
/// send it; [`no_browsers`] closes the same hole)?
pub fn is_chronos_path(path: &str) -> bool {
    path.starts_with("/v1/scheduler/") || path.starts_with("/scheduler/")
}

/// Chronos clients are programs. A request a browser sends (it carries `Origin` on every
/// cross-site request and on same-site writes) is refused, so no web page can create or run
/// jobs through a local listener; and a job body must be JSON (no cross-site form can send it).
async fn no_browsers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.headers().contains_key(header::ORIGIN) {
        return ChronosError(StatusCode::FORBIDDEN, "requests from web pages are refused".into())
            .into_response();
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"));
    if req.method() == axum::http::Method::POST && !json {
        return bad("a job is sent as JSON (Content-Type: application/json)").into_response();
    }
    next.run(req).await
}

/// Chronos's error shape: a status and `{"message": …}` (what `chronos-python` reads).
struct ChronosError(StatusCode, String);

impl From<AppError> for ChronosError {
    fn from(e: AppError) -> Self {
        let status = e.kind.http_status();
        ChronosError(status, e.message)
    }
}

impl IntoResponse for ChronosError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ChronosError {
    ChronosError(StatusCode::BAD_REQUEST, msg.into())
}

/// A Chronos job definition as clients send it and as Shoal answers it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChronosJob {
    pub name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default)]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub owner_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub soft_error: bool,
    #[serde(default, rename = "async")]
    pub is_async: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub environment_variables: Vec<EnvVar>,
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_as_user: String,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    pub fetch: Vec<Value>,
    #[serde(default)]
    pub executor: String,
    #[serde(default)]
    pub executor_flags: String,
    #[serde(default)]
    pub task_info_data: String,
    #[serde(default)]
    pub high_priority: bool,
    #[serde(default)]
    pub data_job: bool,
    // Statistics: answered, ignored on input.
    #[serde(default)]
    pub success_count: u64,
    #[serde(default)]
    pub error_count: u64,
    #[serde(default)]
    pub last_success: String,
    #[serde(default)]
    pub last_error: String,
    #[serde(default)]
    pub errors_since_last_success: u64,
    /// Anything else: refused unless empty (null, false, 0, "" or []).
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub parameters: Vec<Value>,
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_path: String,
    #[serde(default)]
    pub mode: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Chronos's job → a Shoal spec. `base` is the job being replaced: what Chronos cannot express
/// (networks, retry delay, history, other constraints…) stays as it was.
pub fn to_spec(
    j: &ChronosJob,
    parents_endpoint: bool,
    base: Option<&ServiceSpec>,
) -> Result<ServiceSpec, String> {
    let mut problems: Vec<String> = Vec::new();
    for (k, v) in &j.other {
        if !is_empty_value(v) {
            problems.push(format!("{k}: not supported by Shoal"));
        }
    }
    let refuse = |p: &mut Vec<String>, on: bool, what: &str| {
        if on {
            p.push(what.to_string());
        }
    };
    refuse(&mut problems, j.is_async, "async: asynchronous jobs are not supported");
    refuse(&mut problems, !j.executor.is_empty(), "executor: custom Mesos executors are not supported");
    refuse(
        &mut problems,
        !j.executor_flags.is_empty(),
        "executorFlags: custom Mesos executors are not supported",
    );
    refuse(
        &mut problems,
        !j.task_info_data.is_empty(),
        "taskInfoData: custom Mesos executors are not supported",
    );
    refuse(
        &mut problems,
        !j.uris.is_empty() || !j.fetch.is_empty(),
        "uris/fetch: fetching files is not supported",
    );
    refuse(&mut problems, j.high_priority, "highPriority: not supported");
    refuse(&mut problems, j.data_job, "dataJob: not supported");
    if j.command.trim().is_empty() && j.container.is_none() {
        problems.push("command: required".into());
    }
    let mut spec = base.cloned().unwrap_or_default();
    spec.name = j.name.clone();
    let mut job = spec
        .mode
        .scheduled()
        .cloned()
        .unwrap_or_else(|| ScheduledJob { retries: DEFAULT_RETRIES, ..Default::default() });
    match (&j.schedule, &j.parents) {
        (Some(_), Some(_)) => problems.push("a job has a schedule or parents, not both".into()),
        (Some(s), None) => {
            if parents_endpoint {
                problems.push("/dependency takes jobs with parents (use /iso8601 for a schedule)".into());
            }
            job.schedule = s.clone();
            job.after.clear();
            job.time_zone = j.schedule_time_zone.clone().unwrap_or_default();
        }
        (None, Some(p)) => {
            job.after = p.clone();
            job.schedule.clear();
            job.time_zone.clear();
            job.starting_deadline = None;
        }
        (None, None) => problems.push("schedule or parents: one is required".into()),
    }
    job.retries = j.retries.unwrap_or(DEFAULT_RETRIES);
    job.suspend = j.disabled;
    job.soft_error = j.soft_error;
    job.concurrency = if j.concurrent { ConcurrencyPolicy::Allow } else { ConcurrencyPolicy::Forbid };
    if j.schedule.is_some() {
        job.starting_deadline = match j.epsilon.as_deref().filter(|e| !e.is_empty()) {
            None => None,
            Some(e) => match parse_iso_duration(e) {
                Ok(d) if d.is_zero() => None,
                Ok(d) => Some(d),
                Err(m) => {
                    problems.push(format!("epsilon: {m}"));
                    None
                }
            },
        };
    }
    spec.mode = ServiceMode::Scheduled(Box::new(job));

    let t = &mut spec.task_template;
    t.command.clear();
    t.args.clear();
    t.image = None;
    t.driver = None;
    t.mounts.clear();
    let shell = j.shell.unwrap_or(true);
    let argv: Vec<String> = if j.command.trim().is_empty() {
        Vec::new()
    } else if shell {
        vec!["sh".into(), "-c".into(), j.command.clone()]
    } else {
        let mut v = vec![j.command.clone()];
        v.extend(j.arguments.iter().cloned());
        v
    };
    if shell && !j.arguments.is_empty() {
        problems.push("arguments: only with shell false (the command is then the program)".into());
    }
    match &j.container {
        None => {
            t.driver = Some("process".into());
            t.command = argv;
        }
        Some(c) => {
            for (k, v) in &c.other {
                if !is_empty_value(v) {
                    problems.push(format!("container.{k}: not supported by Shoal"));
                }
            }
            t.driver = Some(match c.kind.to_ascii_uppercase().as_str() {
                "DOCKER" | "" => "docker".into(),
                "MESOS" => "oci".into(),
                other => {
                    problems.push(format!("container.type {other:?}: use DOCKER or MESOS"));
                    "docker".into()
                }
            });
            t.image = Some(c.image.clone());
            t.command = argv;
            refuse(
                &mut problems,
                c.force_pull_image,
                "container.forcePullImage: not supported (images are pulled when missing)",
            );
            refuse(
                &mut problems,
                !c.parameters.is_empty(),
                "container.parameters: docker run parameters are not supported",
            );
            match c.network.to_ascii_uppercase().as_str() {
                "" | "BRIDGE" | "HOST" => {}
                other => problems.push(format!("container.network {other:?}: use BRIDGE or HOST")),
            }
            for (i, v) in c.volumes.iter().enumerate() {
                let readonly = match v.mode.to_ascii_uppercase().as_str() {
                    "RO" => true,
                    "RW" | "" => false,
                    other => {
                        problems.push(format!("container.volumes[{i}].mode {other:?}: use RO or RW"));
                        false
                    }
                };
                if v.host_path.is_empty() {
                    problems.push(format!("container.volumes[{i}].hostPath: required"));
                }
                t.mounts.push(Mount {
                    kind: MountType::Bind,
                    source: v.host_path.clone(),
                    target: v.container_path.clone(),
                    readonly,
                });
            }
        }
    }
    t.env = j.environment_variables.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    t.user = j.run_as_user.clone();
    let cpus = j.cpus.unwrap_or(DEFAULT_CPUS);
    let mem = j.mem.unwrap_or(DEFAULT_MEM_MB);
    if !(0.0..=1e6).contains(&cpus) || !(0.0..=1e9).contains(&mem) {
        problems.push("cpus and mem must be positive".into());
    }
    t.resources.reservations.nano_cpus = (cpus * NANO_CPUS_PER_CPU as f64).round() as u64;
    t.resources.reservations.memory_bytes = (mem * 1024.0 * 1024.0).round() as u64;
    // Constraints Chronos set earlier are replaced; the job's other constraints stay.
    t.placement.constraints.retain(|c| !c.starts_with("node.labels.") && !c.starts_with("node.hostname"));
    for (i, c) in j.constraints.iter().enumerate() {
        match c.as_slice() {
            [attr, op, value] if op.eq_ignore_ascii_case("EQUALS") => {
                let key = if attr == "hostname" { "node.hostname".to_string() } else { format!("node.labels.{attr}") };
                t.placement.constraints.push(format!("{key}=={value}"));
            }
            [_, op, _] => problems.push(format!(
                "constraints[{i}]: operator {op} is not supported (EQUALS is; LIKE and UNLIKE take regular expressions)"
            )),
            _ => problems.push(format!("constraints[{i}]: expected [attribute, operator, value]")),
        }
    }
    let mut set_label = |k: &str, v: String| {
        if v.is_empty() {
            spec.labels.remove(k);
        } else {
            spec.labels.insert(k.to_string(), v);
        }
    };
    set_label(LABEL_OWNER, j.owner.clone());
    set_label(LABEL_OWNER_NAME, j.owner_name.clone());
    set_label(LABEL_DESCRIPTION, j.description.clone());
    let disk = j.disk.unwrap_or(DEFAULT_DISK_MB);
    set_label(LABEL_DISK, if disk == DEFAULT_DISK_MB { String::new() } else { disk.to_string() });
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(spec)
}

/// A Shoal job as Chronos shows it.
pub fn from_service(svc: &Service) -> ChronosJob {
    let job = svc.spec.mode.scheduled().cloned().unwrap_or_default();
    let st = svc.job.clone().unwrap_or_default();
    let t = &svc.spec.task_template;
    let (command, shell, arguments) = match t.command.as_slice() {
        [sh, c, cmd] if sh == "sh" && c == "-c" => (cmd.clone(), true, Vec::new()),
        [prog, rest @ ..] => (prog.clone(), false, rest.to_vec()),
        [] => (String::new(), true, Vec::new()),
    };
    let container = t.image.as_ref().map(|image| Container {
        kind: if t.driver.as_deref() == Some("oci") { "MESOS".into() } else { "DOCKER".into() },
        image: image.clone(),
        network: String::new(),
        volumes: t
            .mounts
            .iter()
            .map(|m| Volume {
                container_path: m.target.clone(),
                host_path: m.source.clone(),
                mode: if m.readonly { "RO".into() } else { "RW".into() },
            })
            .collect(),
        ..Default::default()
    });
    let constraints = t
        .placement
        .constraints
        .iter()
        .filter_map(|c| {
            let (k, v) = c.split_once("==")?;
            let attr = if k.trim() == "node.hostname" {
                "hostname"
            } else {
                k.trim().strip_prefix("node.labels.")?
            };
            Some(vec![attr.to_string(), "EQUALS".to_string(), v.trim().to_string()])
        })
        .collect();
    let errors_since = st
        .runs
        .iter()
        .rev()
        .take_while(|r| r.state != RunState::Succeeded)
        .filter(|r| r.state == RunState::Failed)
        .count() as u64;
    let label = |k: &str| svc.spec.labels.get(k).cloned().unwrap_or_default();
    ChronosJob {
        name: svc.spec.name.clone(),
        command,
        shell: Some(shell),
        arguments,
        schedule: (!job.schedule.is_empty()).then(|| job.schedule.clone()),
        schedule_time_zone: (!job.schedule.is_empty()).then(|| job.time_zone.clone()),
        parents: (!job.after.is_empty()).then(|| job.after.clone()),
        epsilon: Some(job.starting_deadline.map_or_else(|| "PT0S".to_string(), format_iso_duration)),
        retries: Some(job.retries),
        owner: label(LABEL_OWNER),
        owner_name: label(LABEL_OWNER_NAME),
        description: label(LABEL_DESCRIPTION),
        disabled: job.suspend,
        concurrent: job.concurrency == ConcurrencyPolicy::Allow,
        soft_error: job.soft_error,
        is_async: false,
        cpus: Some(t.resources.reservations.nano_cpus as f64 / NANO_CPUS_PER_CPU as f64),
        mem: Some(t.resources.reservations.memory_bytes as f64 / (1024.0 * 1024.0)),
        disk: Some(label(LABEL_DISK).parse().unwrap_or(DEFAULT_DISK_MB)),
        container,
        environment_variables: t
            .env
            .iter()
            .map(|(k, v)| EnvVar { name: k.clone(), value: v.clone() })
            .collect(),
        constraints,
        run_as_user: t.user.clone(),
        success_count: st.success_count,
        error_count: st.error_count,
        last_success: st.last_success.map(|t| t.to_string()).unwrap_or_default(),
        last_error: st.last_error.map(|t| t.to_string()).unwrap_or_default(),
        errors_since_last_success: errors_since,
        ..Default::default()
    }
}

async fn list(State(m): State<AppState>) -> Result<Json<Vec<ChronosJob>>, ChronosError> {
    let jobs = App::new(m).jobs(Consistency::Linearizable).await?;
    Ok(Json(jobs.iter().map(from_service).collect()))
}

#[derive(Debug, Default, Deserialize)]
struct SearchQuery {
    name: Option<String>,
    command: Option<String>,
    any: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn search(
    State(m): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<ChronosJob>>, ChronosError> {
    let jobs = App::new(m).jobs(Consistency::Linearizable).await?;
    let has = |hay: &str, needle: &Option<String>| {
        needle.as_ref().is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
    };
    let found: Vec<ChronosJob> = jobs
        .iter()
        .map(from_service)
        .filter(|j| has(&j.name, &q.name) && has(&j.command, &q.command))
        .filter(|j| {
            q.any.as_ref().is_none_or(|a| {
                let a = Some(a.clone());
                has(&j.name, &a) || has(&j.command, &a) || has(&j.description, &a) || has(&j.owner, &a)
            })
        })
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    Ok(Json(found))
}

/// `POST /iso8601` and `/dependency`: add, or replace a job of the same name.
async fn add(
    State(m): State<AppState>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Result<StatusCode, ChronosError> {
    let j: ChronosJob = serde_json::from_slice(&body).map_err(|e| bad(format!("invalid job: {e}")))?;
    let parents_endpoint = uri.path().ends_with("/dependency");
    if parents_endpoint && j.parents.is_none() {
        return Err(bad("/dependency takes a job with parents"));
    }
    let app = App::new(m);
    let existing = app
        .read(Consistency::Linearizable, |s| {
            find_service(s, &j.name).filter(|s| s.spec.name == j.name).cloned()
        })
        .await?;
    if let Some(svc) = &existing {
        if svc.spec.mode.scheduled().is_none() {
            return Err(ChronosError(
                StatusCode::CONFLICT,
                format!("{} is a {} service, not a scheduled job", svc.spec.name, svc.spec.mode.name()),
            ));
        }
    }
    let spec = to_spec(&j, parents_endpoint, existing.as_ref().map(|s| &s.spec))
        .map_err(|e| bad(format!("job {:?}: {e}", j.name)))?;
    match existing {
        None => {
            app.create_service(spec).await?;
        }
        Some(svc) => {
            app.update_service(svc.id.as_str(), Some(svc.version), spec).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn job(State(m): State<AppState>, Path(name): Path<String>) -> Result<Json<ChronosJob>, ChronosError> {
    let svc = App::new(m).service(&name, Consistency::Linearizable).await?;
    if svc.spec.mode.scheduled().is_none() {
        return Err(ChronosError(StatusCode::NOT_FOUND, format!("job {name} not found")));
    }
    Ok(Json(from_service(&svc)))
}

/// `PUT /job/NAME`: run now.
async fn run(
    State(m): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<StatusCode, ChronosError> {
    if q.contains_key("arguments") {
        return Err(bad("arguments: running a job with other arguments is not supported"));
    }
    App::new(m).run_job(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(State(m): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ChronosError> {
    let app = App::new(m);
    let svc = app.service(&name, Consistency::Linearizable).await?;
    if svc.spec.mode.scheduled().is_none() {
        return Err(ChronosError(StatusCode::NOT_FOUND, format!("job {name} not found")));
    }
    app.remove_service(svc.id.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn graph_dot(State(m): State<AppState>) -> Result<Response, ChronosError> {
    let g: JobGraph = App::new(m).job_graph(Consistency::Linearizable).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], g.to_dot()).into_response())
}

async fn graph_csv(State(m): State<AppState>) -> Result<Response, ChronosError> {
    let g: JobGraph = App::new(m).job_graph(Consistency::Linearizable).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], g.to_csv()).into_response())
}

async fn leader(State(m): State<AppState>) -> Json<Value> {
    let s = m.node.status();
    Json(json!({ "leader": s.leader_node.map(|n| n.addr).unwrap_or_default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> ChronosJob {
        serde_json::from_value(v).expect("job json")
    }

    #[test]
    fn the_documented_sample_job_maps_and_reads_back() {
        let j = parse(json!({
            "name": "SAMPLE_JOB1", "command": "echo 'FOO' >> /tmp/JOB1_OUT",
            "schedule": "R10/2012-10-01T05:52:00Z/PT2S", "scheduleTimeZone": "Europe/Berlin",
            "epsilon": "PT15M", "owner": "bob@airbnb.com", "async": false,
            "successCount": 3, "lastError": ""
        }));
        let spec = to_spec(&j, false, None).expect("maps");
        let job = spec.mode.scheduled().expect("scheduled");
        assert_eq!(job.schedule, "R10/2012-10-01T05:52:00Z/PT2S");
        assert_eq!(job.time_zone, "Europe/Berlin");
        assert_eq!(job.starting_deadline, Some(std::time::Duration::from_secs(900)));
        assert_eq!((job.retries, job.concurrency), (2, ConcurrencyPolicy::Forbid));
        assert_eq!(spec.task_template.command, ["sh", "-c", "echo 'FOO' >> /tmp/JOB1_OUT"]);
        assert_eq!(spec.task_template.driver.as_deref(), Some("process"));
        assert_eq!(spec.task_template.resources.reservations.memory_bytes, 128 << 20);
        assert_eq!(spec.labels.get(LABEL_OWNER).map(String::as_str), Some("bob@airbnb.com"));
        spec.validate().expect("valid");
        let mut svc = Service::new(shoal_types::ServiceId::new("x".to_string()), spec);
        svc.job = Some(Default::default());
        let back = from_service(&svc);
        assert_eq!(back.command, "echo 'FOO' >> /tmp/JOB1_OUT");
        assert_eq!(back.epsilon.as_deref(), Some("PT900S"));
        assert_eq!((back.cpus, back.mem, back.disk), (Some(0.1), Some(128.0), Some(256.0)));
        // And what comes back maps to the same spec again.
        let again = to_spec(&parse(serde_json::to_value(&back).expect("json")), false, None).expect("maps");
        assert_eq!(again, svc.spec);
    }

    #[test]
    fn what_shoal_cannot_honour_is_refused_by_name() {
        let j = parse(json!({
            "name": "x", "command": "true", "parents": ["a"], "async": true,
            "uris": ["http://x/y.tgz"], "constraints": [["rack", "LIKE", "r[12]"]],
            "container": {"type": "DOCKER", "image": "busybox", "parameters": [{"key": "privileged", "value": "true"}]},
            "maxCompletionTime": 30
        }));
        let e = to_spec(&j, true, None).expect_err("refused");
        for want in ["async", "uris/fetch", "LIKE", "container.parameters", "maxCompletionTime"] {
            assert!(e.contains(want), "{want} not named in: {e}");
        }
        // Empty extras are fine (clients send defaults).
        let j = parse(
            json!({"name": "x", "command": "true", "parents": ["a"], "maxCompletionTime": 0, "fetch": []}),
        );
        to_spec(&j, true, None).expect("defaults are fine");
        let j = parse(json!({"name": "x", "command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1H"}));
        assert!(to_spec(&j, true, None).expect_err("wrong endpoint").contains("/dependency"));
    }

    #[test]
    fn containers_and_constraints() {
        let j = parse(json!({
            "name": "c", "command": "ls /data", "schedule": "R/2026-01-01T00:00:00Z/PT1H",
            "container": {"type": "MESOS", "image": "busybox", "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}]},
            "constraints": [["zone", "EQUALS", "a"], ["hostname", "EQUALS", "n1"]],
            "environmentVariables": [{"name": "A", "value": "1"}], "concurrent": true, "retries": 0
        }));
        let spec = to_spec(&j, false, None).expect("maps");
        let t = &spec.task_template;
        assert_eq!((t.driver.as_deref(), t.image.as_deref()), (Some("oci"), Some("busybox")));
        assert_eq!(t.mounts[0].source, "/srv");
        assert!(t.mounts[0].readonly);
        assert_eq!(t.placement.constraints, ["node.labels.zone==a", "node.hostname==n1"]);
        assert_eq!(t.env.get("A").map(String::as_str), Some("1"));
        let job = spec.mode.scheduled().expect("scheduled");
        assert_eq!((job.retries, job.concurrency), (0, ConcurrencyPolicy::Allow));
    }
}
