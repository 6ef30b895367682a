//! `depends_on`: a task of a service with dependencies is placed only while each dependency has
//! at least one task up (as compose waits for one container): running for `started`, running
//! and healthy (when it has a health check) for `healthy`. A job counts once a run completed.
//!
//! The gate is on placement, not on the service: the orchestrators create tasks as always, and a
//! task that must wait stays `pending` with the reason in `status.err` (`waiting for db to be
//! healthy`), which `service ps` shows, like any task the scheduler cannot place. Once the
//! dependencies are up the next pass places it (a dependency's status report is a state change,
//! so it ticks at once). Tasks already placed are never stopped for a dependency that fails later
//! (compose's semantics); a replacement (restart, update, rescheduling) waits again. Swarm
//! ignores `depends_on`.

use shoal_state::ClusterState;
use shoal_types::{Dependency, DependencyCondition, Service, ServiceId, Task, TaskState};
use std::collections::BTreeMap;

/// The services whose new tasks must wait, each with why.
pub(crate) fn blocked(state: &ClusterState) -> BTreeMap<ServiceId, String> {
    let mut out = BTreeMap::new();
    for svc in state.services().filter(|s| !s.spec.depends_on.is_empty()) {
        let unmet: Vec<String> = svc.spec.depends_on.iter().filter_map(|d| unmet(state, d)).collect();
        if !unmet.is_empty() {
            out.insert(svc.id.clone(), format!("waiting for {}", unmet.join(", ")));
        }
    }
    out
}

/// What is missing for `d`, if anything (`db to be healthy`).
fn unmet(state: &ClusterState, d: &Dependency) -> Option<String> {
    let Some(dep) = state.service_by_name(&d.service) else {
        return Some(format!("service {}, which does not exist", d.service));
    };
    if state.tasks_of_service(&dep.id).any(|t| satisfies(dep, t, d.condition)) {
        return None;
    }
    let what = match d.condition {
        DependencyCondition::Started => "running",
        DependencyCondition::Healthy => "healthy",
    };
    Some(format!("{} to be {what}", d.service))
}

/// Whether task `t` of `dep` satisfies the condition.
fn satisfies(dep: &Service, t: &Task, c: DependencyCondition) -> bool {
    // A job's run that completed has done what it was started for.
    if dep.spec.mode.is_job() && t.status.state == TaskState::Complete {
        return true;
    }
    t.desired_state == TaskState::Running
        && match c {
            DependencyCondition::Started => t.status.state == TaskState::Running,
            DependencyCondition::Healthy => t.is_up(),
        }
}

#[cfg(test)]
mod tests {
    use crate::tests::{spec, World};
    use shoal_state::{Command, TaskStatusReport};
    use shoal_types::{Dependency, DependencyCondition, Health, ServiceId, Task, TaskState, TaskStatus};

    fn depends(name: &str, on: &[(&str, DependencyCondition)]) -> shoal_types::ServiceSpec {
        let mut s = spec(name, 2);
        s.depends_on = on
            .iter()
            .map(|(service, condition)| Dependency { service: service.to_string(), condition: *condition })
            .collect();
        s
    }

    fn tasks(w: &World, svc: &ServiceId) -> Vec<Task> {
        w.state.tasks_of_service(svc).cloned().collect()
    }

    /// One controller pass without the agents.
    fn pass(w: &mut World) {
        w.step();
    }

    /// Sets the health of every running task of `svc`.
    fn set_health(w: &mut World, svc: &ServiceId, health: Option<Health>) {
        for t in tasks(w, svc).into_iter().filter(|t| t.status.state == TaskState::Running) {
            let status = TaskStatus { health, ..t.status.clone() };
            let node_id = t.node_id.clone().expect("placed");
            w.cmd(Command::ReportTaskStatus {
                node_id,
                reports: vec![TaskStatusReport { task_id: t.id.clone(), status }],
            });
        }
    }

    #[test]
    fn a_dependent_waits_pending_and_explained_until_its_dependency_runs() {
        let mut w = World::new(2);
        let web = w.service(depends("web", &[("db", DependencyCondition::Started)]));
        let db = w.service(spec("db", 1));
        pass(&mut w);
        // db's task is placed; web's tasks exist, pending, and say why.
        let t = tasks(&w, &web);
        assert_eq!(t.len(), 2);
        for t in &t {
            assert_eq!(t.status.state, TaskState::Pending);
            assert!(t.node_id.is_none());
            assert_eq!(t.status.err, "waiting for db to be running");
        }
        assert_eq!(tasks(&w, &db)[0].status.state, TaskState::Assigned);
        // Assigned is not running: still waiting.
        pass(&mut w);
        assert!(tasks(&w, &web).iter().all(|t| t.status.state == TaskState::Pending));
        w.agents();
        assert_eq!(w.running(&db).len(), 1);
        pass(&mut w);
        for t in tasks(&w, &web) {
            assert_eq!(t.status.state, TaskState::Assigned, "{t:?}");
            assert!(t.status.err.is_empty(), "{:?}", t.status.err);
        }
    }

    #[test]
    fn healthy_waits_for_a_healthy_task_and_a_running_dependent_stays_when_the_dependency_fails() {
        let mut w = World::new(2);
        let mut db_spec = spec("db", 1);
        db_spec.task_template.health_check =
            Some(shoal_types::HealthCheck { test: vec!["CMD".into(), "true".into()], ..Default::default() });
        let db = w.service(db_spec);
        w.converge(2);
        // Running, health starting (as the agent reports a checked task): not yet.
        set_health(&mut w, &db, Some(Health::Starting));
        let web = w.service(depends("web", &[("db", DependencyCondition::Healthy)]));
        pass(&mut w);
        assert_eq!(w.running(&db).len(), 1);
        let t = tasks(&w, &web);
        assert!(t.iter().all(|t| t.status.err == "waiting for db to be healthy"), "{t:?}");
        set_health(&mut w, &db, Some(Health::Healthy));
        w.converge(2);
        assert_eq!(w.running(&web).len(), 2);
        // db fails: web keeps running (nothing is stopped for a dependency).
        let db_task = w.running(&db)[0].id.clone();
        w.fail(&db_task, TaskState::Failed);
        pass(&mut w);
        assert_eq!(w.running(&web).len(), 2);
        assert!(tasks(&w, &web).iter().all(|t| t.desired_state == TaskState::Running));
        // A web task that fails now is replaced, and its replacement waits for db again.
        let web_task = w.running(&web)[0].id.clone();
        w.fail(&web_task, TaskState::Failed);
        pass(&mut w);
        let waiting: Vec<Task> =
            tasks(&w, &web).into_iter().filter(|t| t.status.state == TaskState::Pending).collect();
        assert_eq!(waiting.len(), 1, "{:?}", tasks(&w, &web));
        assert!(waiting[0].status.err.starts_with("waiting for db to be healthy"));
    }

    #[test]
    fn every_dependency_is_named_and_a_missing_one_is_explained() {
        let mut w = World::new(1);
        let a = w.service(spec("a", 1));
        let web = w.service(depends(
            "web",
            &[("a", DependencyCondition::Started), ("gone", DependencyCondition::Started)],
        ));
        pass(&mut w);
        assert_eq!(
            tasks(&w, &web)[0].status.err,
            "waiting for a to be running, service gone, which does not exist"
        );
        w.agents();
        assert_eq!(w.running(&a).len(), 1);
        pass(&mut w);
        assert_eq!(tasks(&w, &web)[0].status.err, "waiting for service gone, which does not exist");
        // The explanation is written once: a pass with nothing new changes nothing.
        let before = w.state.index();
        let t = crate::tick(&w.state, w.now, 99);
        assert!(t.plan.set_status.is_empty() && t.plan.assign.is_empty(), "{:?}", t.plan);
        assert_eq!(t.unplaced, 2);
        assert_eq!(w.state.index(), before);
    }

    #[test]
    fn global_dependents_and_completed_jobs() {
        let mut w = World::new(2);
        let mut job = spec("migrate", 1);
        job.mode = shoal_types::ServiceMode::ReplicatedJob { max_concurrent: 1, total_completions: 1 };
        let job = w.service(job);
        let mut g = depends("agent", &[("migrate", DependencyCondition::Started)]);
        g.mode = shoal_types::ServiceMode::Global;
        let g = w.service(g);
        pass(&mut w);
        let t = tasks(&w, &g);
        assert_eq!(t.len(), 2, "one per node, bound to it");
        assert!(t.iter().all(|t| t.node_id.is_some() && t.status.state == TaskState::Pending));
        assert!(t.iter().all(|t| t.status.err == "waiting for migrate to be running"));
        // The job's run completes (before anyone saw it running): that satisfies its dependents.
        let run = tasks(&w, &job)[0].clone();
        let status = TaskStatus { state: TaskState::Complete, exit_code: Some(0), ..run.status.clone() };
        w.cmd(Command::ReportTaskStatus {
            node_id: run.node_id.clone().expect("placed"),
            reports: vec![TaskStatusReport { task_id: run.id.clone(), status }],
        });
        w.converge(2);
        assert_eq!(w.running(&g).len(), 2);
    }

    #[test]
    fn the_same_state_gives_the_same_plan() {
        let mut w = World::new(3);
        w.service(depends("web", &[("db", DependencyCondition::Healthy)]));
        w.service(spec("db", 3));
        let a = crate::tick(&w.state, w.now, 7);
        let b = crate::tick(&w.state, w.now, 7);
        assert_eq!(a, b);
    }
}
