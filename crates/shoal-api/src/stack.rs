//! Stacks (`/v1/stacks`, `shoal stack`): services, networks, secrets and configs deployed
//! together, as Swarm's `docker stack`. A stack is no object of its own: its objects are named
//! `STACK_NAME` and carry the label `com.docker.stack.namespace=STACK`
//! ([`shoal_types::stack`]), so stacks deployed by the docker CLI through the Engine API are
//! stacks here too.
//!
//! The client turns compose files into a [`StackSpec`] (interpolation and `env_file` need the
//! client's environment and files); [`App::deploy_stack`] puts it in the stack's namespace,
//! checks everything before anything changes, creates the networks, secrets and configs, then
//! creates or updates the services in dependency order (a dependency exists before its dependents
//! name it), leaves unchanged ones alone, and removes what the files no longer name only with
//! `prune`. Networks cannot change in place, nor can secrets and configs (immutable): one whose
//! spec (data, labels) differs is refused, naming it; external secrets (not the stack's) must
//! exist. `remove_stack` removes services, then secrets and configs, then networks.

use crate::app::{find_network, find_service, App, AppError, AppResult, Kind};
use crate::server::{ApiError, JsonBody, ReadQuery};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_manager::{Consistency, Manager};
use shoal_state::ClusterState;
use shoal_types::stack::{in_stack, StackSpec};
use shoal_types::{
    DependencyCondition, Network, NetworkId, Secret, SecretId, SecretKind, SecretSpec, Service, ServiceId,
    ServiceSpec, Task,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// `POST /v1/stacks/{name}/deploy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct DeployRequest {
    pub spec: StackSpec,
    /// Remove the stack's services, networks, secrets and configs that `spec` no longer names.
    #[serde(default)]
    pub prune: bool,
}

/// What a deploy or a removal did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StackChange {
    /// `service`, `network`, `secret` or `config`.
    pub object: String,
    pub name: String,
    pub id: String,
    pub change: Change,
}

/// The answer of a deploy or a removal: every object it looked at, in the order it acted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StackReport {
    pub stack: String,
    pub changes: Vec<StackChange>,
}

/// A row of `stack ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StackInfo {
    pub name: String,
    pub services: usize,
    pub networks: usize,
}

/// The managers' rules for a service's `depends_on`, on the state it is written to: every
/// dependency exists, a `healthy` one has a health check (else it could never be healthy), and
/// the dependencies form no cycle. `id` is the service being updated (none for a create).
pub(crate) fn check_dependencies(
    s: &ClusterState,
    spec: &ServiceSpec,
    id: Option<&ServiceId>,
) -> AppResult<()> {
    for d in &spec.depends_on {
        let Some(dep) = s.service_by_name(&d.service).filter(|dep| Some(&dep.id) != id) else {
            return Err(AppError::new(
                Kind::NotFound,
                format!("depends_on: service {} not found", d.service),
            ));
        };
        let checked = dep
            .spec
            .task_template
            .health_check
            .as_ref()
            .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
        if d.condition == DependencyCondition::Healthy && !checked {
            return Err(AppError::invalid(format!(
                "depends_on: {} has no health check, so it is never healthy: depend on it with condition \
                 started, or give it a health check",
                d.service
            )));
        }
    }
    // The dependency graph by name, with this spec in place of the service it replaces.
    let mut graph: BTreeMap<&str, Vec<&str>> = s
        .services()
        .filter(|x| Some(&x.id) != id)
        .map(|x| (x.spec.name.as_str(), x.spec.depends_on.iter().map(|d| d.service.as_str()).collect()))
        .collect();
    graph.insert(&spec.name, spec.depends_on.iter().map(|d| d.service.as_str()).collect());
    if let Some(cycle) = cycle_through(&graph, &spec.name) {
        return Err(AppError::invalid(format!("depends_on: a dependency cycle: {}", cycle.join(" → "))));
    }
    Ok(())
}

/// A path of dependencies from `start` back to itself, if there is one.
fn cycle_through<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>, start: &'a str) -> Option<Vec<&'a str>> {
    fn dfs<'a>(
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        start: &'a str,
        at: &'a str,
        path: &mut Vec<&'a str>,
        seen: &mut BTreeSet<&'a str>,
    ) -> bool {
        for &next in graph.get(at).into_iter().flatten() {
            if next == start {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if dfs(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    dfs(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// The services, networks, secrets and configs (without their data) of a stack, by name.
#[derive(Default)]
struct Current {
    services: BTreeMap<String, Service>,
    networks: BTreeMap<String, Network>,
    secrets: BTreeMap<(SecretKind, String), Secret>,
}

impl Current {
    fn is_empty(&self) -> bool {
        self.services.is_empty() && self.networks.is_empty() && self.secrets.is_empty()
    }
}

fn current(s: &ClusterState, stack: &str) -> Current {
    Current {
        services: s
            .services()
            .filter(|x| in_stack(&x.spec.labels, stack))
            .map(|x| (x.spec.name.clone(), x.clone()))
            .collect(),
        networks: s
            .networks()
            .filter(|n| in_stack(&n.spec.labels, stack))
            .map(|n| (n.spec.name.clone(), n.clone()))
            .collect(),
        secrets: s
            .secrets()
            .filter(|x| in_stack(&x.spec.labels, stack))
            .map(|x| ((x.kind, x.spec.name.clone()), x.without_data()))
            .collect(),
    }
}

/// An error on the way, with what was done before it (a deploy is not a transaction).
fn partial(e: AppError, doing: &str, report: &StackReport) -> AppError {
    let done: Vec<String> = report
        .changes
        .iter()
        .filter(|c| c.change != Change::Unchanged)
        .map(|c| format!("{} {} {}", c.change.verb(), c.object, c.name))
        .collect();
    let done = if done.is_empty() { String::new() } else { format!(" (done before: {})", done.join(", ")) };
    AppError { message: format!("{doing}: {}{done}", e.message), ..e }
}

impl Change {
    pub fn verb(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
            Change::Removed => "removed",
        }
    }
}

impl App {
    /// Every stack: the names that services or networks carry in their namespace label.
    pub async fn stacks(&self, c: Consistency) -> AppResult<Vec<StackInfo>> {
        self.read(c, |s| {
            use shoal_types::stack::NAMESPACE_LABEL;
            let mut by: BTreeMap<String, StackInfo> = BTreeMap::new();
            let empty = |name: &String| StackInfo { name: name.clone(), services: 0, networks: 0 };
            for name in s.services().filter_map(|x| x.spec.labels.get(NAMESPACE_LABEL)) {
                by.entry(name.clone()).or_insert_with(|| empty(name)).services += 1;
            }
            for name in s.networks().filter_map(|n| n.spec.labels.get(NAMESPACE_LABEL)) {
                by.entry(name.clone()).or_insert_with(|| empty(name)).networks += 1;
            }
            by.into_values().collect()
        })
        .await
    }

    /// The services of a stack, by name; a stack with nothing in it is not found.
    pub async fn stack_services(&self, stack: &str, c: Consistency) -> AppResult<Vec<Service>> {
        let cur = self.read(c, |s| current(s, stack)).await?;
        if cur.is_empty() {
            return Err(nothing_in(stack));
        }
        Ok(cur.services.into_values().collect())
    }

    /// The tasks of a stack's services.
    pub async fn stack_tasks(&self, stack: &str, c: Consistency) -> AppResult<Vec<Task>> {
        let tasks = self
            .read(c, |s| {
                let cur = current(s, stack);
                let found = !cur.is_empty();
                let tasks: Vec<Task> =
                    cur.services.values().flat_map(|svc| s.tasks_of_service(&svc.id).cloned()).collect();
                found.then_some(tasks)
            })
            .await?;
        tasks.ok_or_else(|| nothing_in(stack))
    }

    /// Deploys (creates or updates) stack `stack`: see the module's documentation.
    pub async fn deploy_stack(&self, stack: &str, req: DeployRequest) -> AppResult<StackReport> {
        let spec = req.spec.scoped(stack).map_err(|e| AppError::invalid(format!("invalid stack: {e}")))?;
        // Everything is checked before anything changes.
        let mut problems = Vec::new();
        for s in &spec.services {
            if let Err(e) = s.validate() {
                problems.push(format!("service {}: {e}", s.name));
            }
        }
        for n in &spec.networks {
            if let Err(e) = n.validate() {
                problems.push(format!("network {}: {e}", n.name));
            }
        }
        // The stack's own secrets and configs, as they are to be created (scoped: named and
        // labelled in the stack's namespace).
        let own: Vec<(SecretKind, SecretSpec)> = spec
            .secrets
            .iter()
            .map(|x| (SecretKind::Secret, x.spec()))
            .chain(spec.configs.iter().map(|x| (SecretKind::Config, x.spec())))
            .collect();
        for (kind, x) in &own {
            if let Err(e) = x.validate(*kind) {
                problems.push(format!("{kind} {}: {e}", x.name));
            }
        }
        if !problems.is_empty() {
            return Err(AppError::invalid(format!("invalid stack: {}", problems.join("; "))));
        }
        let order = spec
            .deploy_order()
            .map_err(|cycle| AppError::invalid(format!("invalid stack: a dependency cycle: {cycle}")))?;
        let wanted_services: BTreeSet<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        let wanted_networks: BTreeSet<&str> = spec.networks.iter().map(|n| n.name.as_str()).collect();
        let own_names: BTreeSet<(SecretKind, &str)> =
            own.iter().map(|(k, x)| (*k, x.name.as_str())).collect();
        let (cur, foreign, changed, missing) = self
            .read(Consistency::Linearizable, |s| {
                let cur = current(s, stack);
                // The stack's secrets that exist must be as the files say (they are immutable);
                // the others a service names must exist (external ones).
                let mut changed = Vec::new();
                let mut missing = Vec::new();
                let mut foreign = Vec::new();
                for (kind, want) in &own {
                    match s.secret_by_name(*kind, &want.name) {
                        Some(have) if in_stack(&have.spec.labels, stack) => {
                            if let Err(e) = crate::secrets::unchanged(have, want) {
                                changed.push(e.message);
                            }
                        }
                        Some(_) => foreign.push(format!("{kind} {}", want.name)),
                        None => {}
                    }
                }
                for svc in &spec.services {
                    let t = &svc.task_template;
                    for (kind, refs) in [(SecretKind::Secret, &t.secrets), (SecretKind::Config, &t.configs)] {
                        for r in refs {
                            let known = own_names.contains(&(kind, r.source.as_str()))
                                || s.secret_by_name(kind, &r.source).is_some();
                            if !known {
                                missing.push(format!(
                                    "service {}: {kind} {} not found: it is not one of the stack's, and an \
                                     external {kind} must exist (shoal {kind} create)",
                                    svc.name, r.source
                                ));
                            }
                        }
                    }
                }
                // Objects of these names outside the stack.
                for name in &wanted_services {
                    if !cur.services.contains_key(*name) && find_service(s, name).is_some() {
                        foreign.push(format!("service {name}"));
                    }
                }
                for name in &wanted_networks {
                    if !cur.networks.contains_key(*name) && s.network_by_name(name).is_some() {
                        foreign.push(format!("network {name}"));
                    }
                }
                (cur, foreign, changed, missing)
            })
            .await?;
        if !foreign.is_empty() {
            return Err(AppError::conflict(format!(
                "{} already exist{} outside stack {stack}: remove or rename {}",
                foreign.join(", "),
                if foreign.len() == 1 { "s" } else { "" },
                if foreign.len() == 1 { "it" } else { "them" },
            )));
        }
        if !changed.is_empty() {
            return Err(AppError::conflict(changed.join("; ")));
        }
        if !missing.is_empty() {
            return Err(AppError::new(Kind::NotFound, missing.join("; ")));
        }
        for n in &spec.networks {
            if let Some(have) = cur.networks.get(&n.name) {
                if have.spec != *n {
                    return Err(AppError::conflict(format!(
                        "network {} exists with another spec, and networks cannot change in place: remove the \
                         services that use it and the network first (e.g. `shoal stack rm {stack}`)",
                        n.name
                    )));
                }
            }
        }

        let mut report = StackReport { stack: stack.to_string(), changes: Vec::new() };
        let change = |object: &str, name: &str, id: String, change: Change| StackChange {
            object: object.into(),
            name: name.into(),
            id,
            change,
        };
        for n in &spec.networks {
            let c = match cur.networks.get(&n.name) {
                Some(have) => change("network", &n.name, have.id.to_string(), Change::Unchanged),
                None => {
                    let id = self
                        .create_network(n.clone())
                        .await
                        .map_err(|e| partial(e, &format!("creating network {}", n.name), &report))?;
                    change("network", &n.name, id.to_string(), Change::Created)
                }
            };
            report.changes.push(c);
        }
        for (kind, want) in &own {
            let c = match cur.secrets.get(&(*kind, want.name.clone())) {
                Some(have) => change(kind.as_str(), &want.name, have.id.to_string(), Change::Unchanged),
                None => {
                    let id = self
                        .create_secret(*kind, want.clone())
                        .await
                        .map_err(|e| partial(e, &format!("creating {kind} {}", want.name), &report))?;
                    change(kind.as_str(), &want.name, id.to_string(), Change::Created)
                }
            };
            report.changes.push(c);
        }
        // Network names as the state stores them (ids), and the ids `apply` records for secrets
        // and configs, to compare specs with what is stored.
        let targets: BTreeSet<String> =
            spec.services.iter().flat_map(|s| s.networks.iter().map(|n| n.target.clone())).collect();
        let (ids, secret_ids): (BTreeMap<String, NetworkId>, BTreeMap<(SecretKind, String), SecretId>) = self
            .read(Consistency::Linearizable, |s| {
                let nets = targets
                    .iter()
                    .filter_map(|t| find_network(s, t).map(|n| (t.clone(), n.id.clone())))
                    .collect();
                let secrets = s.secrets().map(|x| ((x.kind, x.spec.name.clone()), x.id.clone())).collect();
                (nets, secrets)
            })
            .await?;
        for want in order {
            let mut want = want.clone();
            let t = &mut want.task_template;
            for (kind, refs) in [(SecretKind::Secret, &mut t.secrets), (SecretKind::Config, &mut t.configs)] {
                for r in refs.iter_mut() {
                    r.id = secret_ids.get(&(kind, r.source.clone())).cloned();
                }
            }
            let c = match cur.services.get(&want.name) {
                Some(have) => {
                    for n in &mut want.networks {
                        if let Some(id) = ids.get(&n.target) {
                            n.target = id.to_string();
                        }
                    }
                    // `service update --force` counts are the cluster's, not the file's.
                    want.task_template.force_update = have.spec.task_template.force_update;
                    if want == have.spec {
                        change("service", &want.name, have.id.to_string(), Change::Unchanged)
                    } else {
                        let svc = self
                            .update_service(have.id.as_str(), Some(have.version), want.clone())
                            .await
                            .map_err(|e| partial(e, &format!("updating service {}", want.name), &report))?;
                        change("service", &want.name, svc.id.to_string(), Change::Updated)
                    }
                }
                None => {
                    let id = self
                        .create_service(want.clone())
                        .await
                        .map_err(|e| partial(e, &format!("creating service {}", want.name), &report))?;
                    change("service", &want.name, id.to_string(), Change::Created)
                }
            };
            report.changes.push(c);
        }
        if req.prune {
            let services: Vec<&Service> =
                cur.services.values().filter(|s| !wanted_services.contains(s.spec.name.as_str())).collect();
            let networks: Vec<&Network> =
                cur.networks.values().filter(|n| !wanted_networks.contains(n.spec.name.as_str())).collect();
            let secrets: Vec<&Secret> = cur
                .secrets
                .values()
                .filter(|x| !own_names.contains(&(x.kind, x.spec.name.as_str())))
                .collect();
            self.remove_objects(&services, &secrets, &networks, &mut report).await?;
        }
        Ok(report)
    }

    /// Removes a stack: its services, then its secrets and configs (not external ones: they
    /// carry no stack label), then its networks once their tasks have stopped.
    pub async fn remove_stack(&self, stack: &str) -> AppResult<StackReport> {
        let cur = self.read(Consistency::Linearizable, |s| current(s, stack)).await?;
        if cur.is_empty() {
            return Err(nothing_in(stack));
        }
        let mut report = StackReport { stack: stack.to_string(), changes: Vec::new() };
        let services: Vec<&Service> = cur.services.values().collect();
        let secrets: Vec<&Secret> = cur.secrets.values().collect();
        let networks: Vec<&Network> = cur.networks.values().collect();
        self.remove_objects(&services, &secrets, &networks, &mut report).await?;
        Ok(report)
    }

    async fn remove_objects(
        &self,
        services: &[&Service],
        secrets: &[&Secret],
        networks: &[&Network],
        report: &mut StackReport,
    ) -> AppResult<()> {
        for s in services {
            match self.remove_service(s.id.as_str()).await {
                Ok(()) => {}
                Err(e) if e.kind == Kind::NotFound => {}
                Err(e) => return Err(partial(e, &format!("removing service {}", s.spec.name), report)),
            }
            report.changes.push(StackChange {
                object: "service".into(),
                name: s.spec.name.clone(),
                id: s.id.to_string(),
                change: Change::Removed,
            });
        }
        // A removed service's tasks no longer hold its secrets (they are not live).
        for x in secrets {
            match self.remove_secret(x.kind, x.id.as_str()).await {
                Ok(()) => {}
                Err(e) if e.kind == Kind::NotFound => {}
                Err(e) => return Err(partial(e, &format!("removing {} {}", x.kind, x.spec.name), report)),
            }
            report.changes.push(StackChange {
                object: x.kind.as_str().into(),
                name: x.spec.name.clone(),
                id: x.id.to_string(),
                change: Change::Removed,
            });
        }
        // A network is refused while tasks of the removed services still stop on it.
        for n in networks {
            match self.remove_network_when_stopped(n.id.as_str()).await {
                Ok(()) => {}
                Err(e) if e.kind == Kind::NotFound => {}
                Err(e) => return Err(partial(e, &format!("removing network {}", n.spec.name), report)),
            }
            report.changes.push(StackChange {
                object: "network".into(),
                name: n.spec.name.clone(),
                id: n.id.to_string(),
                change: Change::Removed,
            });
        }
        Ok(())
    }
}

fn nothing_in(stack: &str) -> AppError {
    AppError::new(Kind::NotFound, format!("nothing found in stack {stack}"))
}

// ---- /v1 ----

type AppState = Arc<Manager>;

/// The `/v1/stacks` routes (merged into the `/v1` router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/stacks", get(list))
        .route("/v1/stacks/{name}", axum::routing::delete(remove))
        .route("/v1/stacks/{name}/deploy", post(deploy))
        .route("/v1/stacks/{name}/services", get(services))
        .route("/v1/stacks/{name}/tasks", get(tasks))
}

async fn list(
    State(m): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<StackInfo>>, ApiError> {
    Ok(Json(App::new(m).stacks(q.consistency()).await?))
}

async fn services(
    State(m): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Service>>, ApiError> {
    Ok(Json(App::new(m).stack_services(&name, q.consistency()).await?))
}

async fn tasks(
    State(m): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Task>>, ApiError> {
    Ok(Json(App::new(m).stack_tasks(&name, q.consistency()).await?))
}

async fn deploy(
    State(m): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<DeployRequest>,
) -> Result<Json<StackReport>, ApiError> {
    Ok(Json(App::new(m).deploy_stack(&name, req).await?))
}

async fn remove(State(m): State<AppState>, Path(name): Path<String>) -> Result<Json<StackReport>, ApiError> {
    Ok(Json(App::new(m).remove_stack(&name).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_state::Command;
    use shoal_types::{Dependency, HealthCheck, Timestamp};

    fn state(services: &[(&str, &[&str], bool)]) -> ClusterState {
        let mut s = ClusterState::new();
        for (name, deps, checked) in services {
            let mut spec = ServiceSpec { name: name.to_string(), ..Default::default() };
            spec.task_template.command = vec!["true".into()];
            spec.depends_on = deps
                .iter()
                .map(|d| Dependency { service: d.to_string(), condition: DependencyCondition::Started })
                .collect();
            if *checked {
                spec.task_template.health_check =
                    Some(HealthCheck { test: vec!["CMD".into(), "true".into()], ..Default::default() });
            }
            let svc = Service::new(ServiceId::new(format!("id-{name}")), spec);
            s.apply(Timestamp::from_secs(1), Command::CreateService { service: Box::new(svc) })
                .expect("create");
        }
        s
    }

    fn spec(name: &str, deps: &[(&str, DependencyCondition)]) -> ServiceSpec {
        let mut spec = ServiceSpec { name: name.to_string(), ..Default::default() };
        spec.depends_on =
            deps.iter().map(|(d, c)| Dependency { service: d.to_string(), condition: *c }).collect();
        spec
    }

    #[test]
    fn dependencies_must_exist_be_checkable_and_acyclic() {
        use DependencyCondition::{Healthy, Started};
        let s = state(&[("db", &[], true), ("cache", &[], false), ("api", &["web"], false)]);
        assert!(check_dependencies(&s, &spec("web", &[("db", Healthy), ("cache", Started)]), None).is_ok());
        let e = check_dependencies(&s, &spec("web", &[("nope", Started)]), None).expect_err("unknown");
        assert_eq!((e.kind, e.message.as_str()), (Kind::NotFound, "depends_on: service nope not found"));
        let e = check_dependencies(&s, &spec("web", &[("cache", Healthy)]), None).expect_err("no check");
        assert!(e.message.starts_with("depends_on: cache has no health check"), "{}", e.message);
        // api → web exists; web → api closes the cycle.
        let e = check_dependencies(&s, &spec("web", &[("api", Started)]), None).expect_err("cycle");
        assert_eq!(e.message, "depends_on: a dependency cycle: web → api → web");
        // An update replaces the service's own edges: db → api → web is fine until web → db.
        let db = ServiceId::new("id-db");
        assert!(check_dependencies(&s, &spec("db", &[("api", Started)]), Some(&db)).is_ok());
        let e = check_dependencies(&s, &spec("db", &[("db", Started)]), Some(&db)).expect_err("itself");
        assert_eq!(e.kind, Kind::NotFound, "a service is no dependency of itself: {}", e.message);
    }
}
