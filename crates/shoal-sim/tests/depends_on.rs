//! `depends_on` over virtual time: a dependent's tasks are placed only once a task of its
//! dependency runs, are explained meanwhile (so the settled cluster passes `check_converged`),
//! and keep running when the dependency later loses its tasks; the invariants hold throughout.

use shoal_sim::{check_converged, Fault, Sim, SimConfig};
use shoal_types::{Dependency, DependencyCondition, ServiceMode, ServiceSpec, TaskState};

fn svc(name: &str, replicas: u64, deps: &[&str]) -> ServiceSpec {
    let mut s = ServiceSpec { name: name.into(), ..Default::default() };
    s.task_template.command = vec!["app".into()];
    s.mode = ServiceMode::Replicated { replicas };
    s.depends_on = deps
        .iter()
        .map(|d| Dependency { service: d.to_string(), condition: DependencyCondition::Started })
        .collect();
    s
}

#[test]
fn a_chain_of_dependencies_starts_in_order_and_survives_a_lost_dependency() {
    let mut sim = Sim::new(SimConfig { nodes: 12, ..Default::default() });
    // Created dependents first: the order comes from depends_on, not from creation.
    let web = sim.create_service(svc("web", 6, &["api"])).expect("valid");
    let api = sim.create_service(svc("api", 4, &["db"])).expect("valid");
    let db = sim.create_service(svc("db", 1, &[])).expect("valid");
    let placed = |sim: &Sim, id| {
        sim.state.tasks_of_service(id).filter(|t| t.status.state >= TaskState::Assigned).count()
    };
    let mut order = Vec::new();
    for _ in 0..40 {
        // Never a placed task without a running dependency.
        if sim.running(&db) == 0 {
            assert_eq!(placed(&sim, &api), 0, "api placed before db ran");
        }
        if sim.running(&api) == 0 {
            assert_eq!(placed(&sim, &web), 0, "web placed before api ran");
        }
        for (name, id) in [("db", &db), ("api", &api), ("web", &web)] {
            if sim.running(id) > 0 && !order.contains(&name) {
                order.push(name);
            }
        }
        sim.step();
    }
    assert_eq!(order, ["db", "api", "web"]);
    assert_eq!((sim.running(&db), sim.running(&api), sim.running(&web)), (1, 4, 6));
    assert!(check_converged(&sim.state).is_empty(), "{:?}", check_converged(&sim.state));

    // db's node goes down: db is replaced elsewhere, and the api and web tasks on other nodes
    // are never stopped for it (tasks on the lost node move, and their replacements wait for
    // their dependencies again).
    let db_node = sim.running_per_node(&db).keys().next().cloned().expect("db runs");
    let elsewhere: Vec<_> = sim
        .state
        .tasks()
        .filter(|t| {
            t.service_id != db && t.status.state == TaskState::Running && t.node_id.as_ref() != Some(&db_node)
        })
        .map(|t| t.id.clone())
        .collect();
    sim.fault(Fault::NodeDown(db_node.clone()));
    for _ in 0..2 {
        sim.step();
        for id in &elsewhere {
            let t = sim.state.task(id).expect("kept");
            assert_eq!((t.status.state, t.desired_state), (TaskState::Running, TaskState::Running), "{t:?}");
        }
    }
    sim.settle(40);
    assert_eq!((sim.running(&db), sim.running(&api), sim.running(&web)), (1, 4, 6));
    sim.fault(Fault::NodeUp(db_node));
    sim.settle(40);
    assert_eq!((sim.running(&db), sim.running(&api), sim.running(&web)), (1, 4, 6));
    assert!(check_converged(&sim.state).is_empty(), "{:?}", check_converged(&sim.state));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}
