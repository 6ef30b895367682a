//! Scenario tests: whole-cluster stories run through the simulator, asserting placement and
//! states over virtual time.

use shoal_sim::scenario::{self, ScenarioConfig};
use shoal_sim::{check_converged, Fault, Sim, SimConfig};
use shoal_types::{NodeId, ServiceMode, ServiceSpec, TaskState, UpdateOrder, UpdateState};
use std::time::Duration;

fn web(replicas: u64) -> ServiceSpec {
    let mut s = ServiceSpec { name: "web".into(), ..Default::default() };
    s.task_template.command = vec!["app".into()];
    s.mode = ServiceMode::Replicated { replicas };
    s
}

#[test]
fn generated_scenario_is_reproducible_and_clean() {
    let cfg = ScenarioConfig { nodes: 200, services: 30, seed: 7, fail_nodes_pct: 10, ..Default::default() };
    let a = scenario::run(&cfg);
    let b = scenario::run(&cfg);
    assert!(a.violations.is_empty(), "{a}");
    assert_eq!(a.fingerprint, b.fingerprint, "same seed, same final state");
    let c = scenario::run(&ScenarioConfig { seed: 8, ..cfg });
    assert_ne!(a.fingerprint, c.fingerprint);
    let lost = &a.phases[1];
    assert!(lost.tasks_running > 0 && lost.settle_seconds < 10, "{a}");
}

#[test]
fn node_loss_replaces_replicas_on_the_next_pass() {
    let mut sim = Sim::new(SimConfig { nodes: 10, ..Default::default() });
    let id = sim.create_service(web(30)).expect("valid");
    sim.settle(20);
    assert_eq!(sim.running(&id), 30);
    let victim = NodeId::new("node-00003");
    let on_victim = sim.running_per_node(&id).get(&victim).copied().unwrap_or(0);
    assert_eq!(on_victim, 3);
    sim.fault(Fault::NodeDown(victim.clone()));
    // One controller pass places the replacements; the next agent round starts them.
    sim.step();
    sim.step();
    assert_eq!(sim.running(&id), 30);
    assert!(!sim.running_per_node(&id).contains_key(&victim));
    // The node returns: its stale tasks stop, nothing is duplicated.
    sim.fault(Fault::NodeUp(victim.clone()));
    sim.settle(20);
    let live = sim.state.tasks_of_service(&id).filter(|t| !t.status.state.is_terminal()).count();
    assert_eq!(live, 30);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn drain_moves_everything_and_pause_keeps_tasks() {
    let mut sim = Sim::new(SimConfig { nodes: 4, ..Default::default() });
    let id = sim.create_service(web(8)).expect("valid");
    sim.settle(20);
    sim.fault(Fault::Pause(NodeId::new("node-00000")));
    sim.settle(20);
    assert_eq!(sim.running_per_node(&id).get(&NodeId::new("node-00000")), Some(&2), "pause keeps tasks");
    sim.fault(Fault::Drain(NodeId::new("node-00001")));
    sim.settle(20);
    let per = sim.running_per_node(&id);
    assert_eq!(sim.running(&id), 8);
    assert!(!per.contains_key(&NodeId::new("node-00001")));
    // Scale up while n0 is paused and n1 drained: only n2 and n3 take new tasks.
    sim.update_service(&id, |s| s.mode = ServiceMode::Replicated { replicas: 12 }).expect("scale");
    sim.settle(20);
    let per = sim.running_per_node(&id);
    assert_eq!(per.get(&NodeId::new("node-00000")), Some(&2));
    assert_eq!(
        per.get(&NodeId::new("node-00002")).copied().unwrap_or(0)
            + per.get(&NodeId::new("node-00003")).copied().unwrap_or(0),
        10
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn start_first_update_never_drops_below_desired() {
    let mut sim = Sim::new(SimConfig { nodes: 5, ..Default::default() });
    let mut spec = web(10);
    spec.update_config.order = UpdateOrder::StartFirst;
    spec.update_config.parallelism = 3;
    spec.update_config.monitor = Duration::from_secs(1);
    let id = sim.create_service(spec).expect("valid");
    sim.settle(20);
    sim.update_service(&id, |s| {
        s.task_template.env.insert("VERSION".into(), "2".into());
    })
    .expect("update");
    let mut min_running = u64::MAX;
    for _ in 0..60 {
        sim.step();
        min_running = min_running.min(sim.running(&id));
    }
    assert!(min_running >= 10, "availability dropped to {min_running}");
    let svc = sim.state.service(&id).expect("svc");
    assert_eq!(svc.update_status.as_ref().map(|u| u.state), Some(UpdateState::Completed));
    let running_v2 = sim
        .state
        .tasks_of_service(&id)
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .all(|t| t.spec_version == 2);
    assert!(running_v2);
}

#[test]
fn label_change_moves_tasks_off_nodes_that_no_longer_match() {
    let mut sim = Sim::new(SimConfig { nodes: 6, zones: 2, ..Default::default() });
    let mut spec = web(6);
    spec.task_template.placement.constraints.push("node.labels.zone==z0".into());
    let id = sim.create_service(spec).expect("valid");
    sim.settle(20);
    let z0: Vec<NodeId> = sim.running_per_node(&id).keys().cloned().collect();
    assert_eq!(z0.len(), 3);
    sim.fault(Fault::SetLabel { node: z0[0].clone(), key: "zone".into(), value: "z1".into() });
    sim.settle(20);
    assert_eq!(sim.running(&id), 6);
    assert!(!sim.running_per_node(&id).contains_key(&z0[0]));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn removing_a_service_stops_and_deletes_every_task() {
    let mut sim = Sim::new(SimConfig { nodes: 3, ..Default::default() });
    let id = sim.create_service(web(9)).expect("valid");
    sim.settle(20);
    sim.remove_service(&id).expect("rm");
    sim.settle(20);
    assert_eq!(sim.state.tasks().len(), 0);
    assert!(sim.state.service_by_name("web").is_none());
}

#[test]
fn random_task_failures_are_always_repaired() {
    let mut sim = Sim::new(SimConfig { nodes: 20, task_failure_rate: 0.02, seed: 3, ..Default::default() });
    let mut spec = web(50);
    spec.task_template.restart_policy.delay = Duration::from_secs(1);
    let id = sim.create_service(spec).expect("valid");
    for _ in 0..200 {
        sim.step();
    }
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    sim.config.task_failure_rate = 0.0;
    sim.settle(50);
    assert_eq!(sim.running(&id), 50);
    assert!(check_converged(&sim.state).is_empty());
    // History is bounded: at most 5 old tasks per slot plus the running one.
    assert!(sim.state.tasks_of_service(&id).count() <= 50 * 6);
}
