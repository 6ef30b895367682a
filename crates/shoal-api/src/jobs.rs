//! Scheduled jobs in the application layer: run now, suspend and resume, and the dependency
//! graph, for every front end (`/v1`, the CLI, the UI and the Chronos API). A job is a service
//! in mode `scheduled`, so creating, updating, listing and removing one are the service calls.

use crate::app::{find_service, App, AppError, AppResult};
use crate::server::{ApiError, ReadQuery};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_manager::Consistency;
use shoal_state::{ClusterState, Command};
use shoal_types::{Service, ServiceMode, Timestamp};

/// The dependency graph of the scheduled jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobGraph {
    pub jobs: Vec<GraphJob>,
    /// `(parent, child)` by name: the child runs after the parent.
    pub edges: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GraphJob {
    pub name: String,
    /// The schedule, empty for a job started by its parents.
    pub schedule: String,
    /// `running`, `succeeded`, `failed`, `skipped`, `replaced`, or `fresh` (never ran).
    pub state: String,
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Timestamp>,
}

impl JobGraph {
    pub fn of(s: &ClusterState) -> JobGraph {
        let mut g = JobGraph::default();
        for svc in s.services() {
            let Some(job) = svc.spec.mode.scheduled() else { continue };
            g.jobs.push(GraphJob {
                name: svc.spec.name.clone(),
                schedule: job.schedule.clone(),
                state: job_state(svc).to_string(),
                suspended: job.suspend,
                next_run_at: svc.job.as_ref().and_then(|j| j.next_run_at),
            });
            for p in &job.after {
                g.edges.push((p.clone(), svc.spec.name.clone()));
            }
        }
        g.jobs.sort_by(|a, b| a.name.cmp(&b.name));
        g.edges.sort();
        g
    }

    /// Graphviz dot: one node per job (coloured by its last run), an edge from each parent to
    /// its children.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph jobs {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n");
        for j in &self.jobs {
            let color = match j.state.as_str() {
                "succeeded" => "palegreen",
                "failed" => "salmon",
                "running" => "lightblue",
                "skipped" | "replaced" => "khaki",
                _ => "white",
            };
            let mut label = j.name.clone();
            if !j.schedule.is_empty() {
                label.push('\n');
                label.push_str(&j.schedule);
            }
            if j.suspended {
                label.push_str("\n(suspended)");
            }
            out.push_str(&format!("  {} [label={}, fillcolor={color}];\n", dot_id(&j.name), dot_id(&label)));
        }
        for (p, c) in &self.edges {
            out.push_str(&format!("  {} -> {};\n", dot_id(p), dot_id(c)));
        }
        out.push_str("}\n");
        out
    }

    /// Chronos's `/graph/csv`: `node,NAME,STATE,STATUS` lines then `link,PARENT,CHILD` lines
    /// (STATE success/failure/fresh, STATUS running/idle/queued).
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for j in &self.jobs {
            let (last, status) = match j.state.as_str() {
                "succeeded" => ("success", "idle"),
                "failed" => ("failure", "idle"),
                "running" => ("fresh", "running"),
                _ => ("fresh", "idle"),
            };
            out.push_str(&format!("node,{},{last},{status}\n", j.name));
        }
        for (p, c) in &self.edges {
            out.push_str(&format!("link,{p},{c}\n"));
        }
        out
    }
}

/// A dot string: quoted, with quotes and backslashes escaped and line breaks as `\n`.
fn dot_id(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// The state of a job's latest run, or `fresh`.
pub fn job_state(svc: &Service) -> &'static str {
    let Some(st) = &svc.job else { return "fresh" };
    if st.active_runs().next().is_some() {
        return "running";
    }
    st.runs.last().map_or("fresh", |r| r.state.as_str())
}

impl App {
    /// Scheduled jobs (services in mode `scheduled`).
    pub async fn jobs(&self, c: Consistency) -> AppResult<Vec<Service>> {
        self.read(c, |s| s.services().filter(|s| s.spec.mode.scheduled().is_some()).cloned().collect()).await
    }

    pub async fn job_graph(&self, c: Consistency) -> AppResult<JobGraph> {
        self.read(c, JobGraph::of).await
    }

    /// Starts a run now (`job run`, Chronos's `PUT /job/NAME`); the controllers start it on
    /// their next pass. Returns the job as committed.
    pub async fn run_job(&self, key: &str) -> AppResult<Service> {
        let id = self.job_id(key).await?;
        self.write(Command::RunJob { id: id.clone() }).await?;
        self.read(Consistency::Stale, |s| s.service(&id).cloned())
            .await?
            .ok_or_else(|| AppError::not_found("job", key))
    }

    /// Suspends or resumes a job's scheduled and parent-triggered runs (a spec change, retried
    /// on a version race like `scale`).
    pub async fn set_job_suspended(&self, key: &str, suspend: bool) -> AppResult<Service> {
        let id = self.job_id(key).await?;
        self.edit_spec(&id, key, |svc, spec| {
            let ServiceMode::Scheduled(job) = &mut spec.mode else { return Err(not_a_job(svc)) };
            let change = job.suspend != suspend;
            job.suspend = suspend;
            Ok(change)
        })
        .await
    }

    /// The id of the scheduled job `key` names (committed state).
    async fn job_id(&self, key: &str) -> AppResult<shoal_types::ServiceId> {
        self.read(Consistency::Linearizable, |s| match find_service(s, key) {
            None => Err(AppError::not_found("job", key)),
            Some(svc) if svc.spec.mode.scheduled().is_none() => Err(not_a_job(svc)),
            Some(svc) => Ok(svc.id.clone()),
        })
        .await?
    }
}

fn not_a_job(svc: &Service) -> AppError {
    AppError::invalid(format!("{} is a {} service, not a scheduled job", svc.spec.name, svc.spec.mode.name()))
}

// ---- /v1 ----

type AppState = std::sync::Arc<shoal_manager::Manager>;

/// `/v1/jobs` (the scheduled jobs, as services), `/v1/jobs/graph`, and run/suspend/resume.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/graph", get(graph))
        .route("/v1/jobs/{id}/run", post(run))
        .route("/v1/jobs/{id}/suspend", post(suspend))
        .route("/v1/jobs/{id}/resume", post(resume))
}

async fn list(State(m): State<AppState>, Query(q): Query<ReadQuery>) -> Result<Json<Vec<Service>>, ApiError> {
    Ok(Json(App::new(m).jobs(q.consistency()).await?))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub(crate) struct GraphQuery {
    /// `json` (the default), `dot` (Graphviz) or `csv`.
    #[serde(default)]
    #[schemars(extend("enum" = ["json", "dot", "csv"]))]
    format: Option<String>,
    #[serde(default)]
    stale: bool,
}

async fn graph(State(m): State<AppState>, Query(q): Query<GraphQuery>) -> Result<Response, ApiError> {
    let c = if q.stale { Consistency::Stale } else { Consistency::Linearizable };
    let g = App::new(m).job_graph(c).await?;
    Ok(match q.format.as_deref().unwrap_or("json") {
        "json" => Json(g).into_response(),
        "dot" => ([(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], g.to_dot()).into_response(),
        "csv" => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], g.to_csv()).into_response(),
        other => {
            return Err(
                AppError::invalid(format!("unknown graph format {other:?}: use json, dot or csv")).into()
            )
        }
    })
}

async fn run(State(m): State<AppState>, Path(key): Path<String>) -> Result<Json<Service>, ApiError> {
    Ok(Json(App::new(m).run_job(&key).await?))
}

async fn suspend(State(m): State<AppState>, Path(key): Path<String>) -> Result<Json<Service>, ApiError> {
    Ok(Json(App::new(m).set_job_suspended(&key, true).await?))
}

async fn resume(State(m): State<AppState>, Path(key): Path<String>) -> Result<Json<Service>, ApiError> {
    Ok(Json(App::new(m).set_job_suspended(&key, false).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_csv_name_every_job_and_edge() {
        let g = JobGraph {
            jobs: vec![
                GraphJob {
                    name: "extract".into(),
                    schedule: "0 3 * * *".into(),
                    state: "succeeded".into(),
                    suspended: false,
                    next_run_at: None,
                },
                GraphJob {
                    name: "load".into(),
                    schedule: String::new(),
                    state: "failed".into(),
                    suspended: true,
                    next_run_at: None,
                },
            ],
            edges: vec![("extract".into(), "load".into())],
        };
        let dot = g.to_dot();
        assert!(dot.starts_with("digraph jobs {"), "{dot}");
        assert!(dot.contains("\"extract\" [label=\"extract\\n0 3 * * *\", fillcolor=palegreen];"), "{dot}");
        assert!(dot.contains("\"load\" [label=\"load\\n(suspended)\", fillcolor=salmon];"), "{dot}");
        assert!(dot.contains("\"extract\" -> \"load\";"), "{dot}");
        assert_eq!(g.to_csv(), "node,extract,success,idle\nnode,load,failure,idle\nlink,extract,load\n");
    }
}
