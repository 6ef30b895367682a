//! fleet's placement rules over virtual time: `conflicts` (anti-affinity by name glob) keeps
//! instances of a template unit one per node and explains what cannot be placed; `colocate`
//! places a follower only next to its target and moves it when the target moves; a set
//! constraint (`in`) admits any of its values.

use shoal_sim::{Fault, Sim, SimConfig};
use shoal_types::{ServiceId, ServiceMode, ServiceSpec, TaskState};
use std::collections::BTreeSet;

fn svc(name: &str, replicas: u64, unit: Option<&str>) -> ServiceSpec {
    let mut s = ServiceSpec { name: name.into(), ..Default::default() };
    s.task_template.command = vec!["app".into()];
    s.mode = ServiceMode::Replicated { replicas };
    if let Some(u) = unit {
        s.labels.insert(shoal_types::FLEET_UNIT_LABEL.into(), u.into());
    }
    s
}

fn nodes_of(sim: &Sim, id: &ServiceId) -> Vec<String> {
    sim.running_per_node(id).keys().map(|n| n.to_string()).collect()
}

fn pending_err(sim: &Sim, id: &ServiceId) -> Vec<String> {
    sim.state
        .tasks_of_service(id)
        .filter(|t| t.status.state == TaskState::Pending && t.desired_state == TaskState::Running)
        .map(|t| t.status.err.clone())
        .collect()
}

#[test]
fn instances_that_conflict_run_one_per_node_and_the_rest_is_explained() {
    let mut sim = Sim::new(SimConfig { nodes: 3, zones: 0, ..Default::default() });
    let mut ids = Vec::new();
    for i in 1..=4 {
        let mut s = svc(&format!("web-{i}"), 1, Some(&format!("web@{i}.service")));
        s.task_template.placement.conflicts = vec!["web@*.service".into()];
        ids.push(sim.create_service(s).expect("valid"));
    }
    // Another service without rules lands anywhere; its name matches no glob.
    let other = sim.create_service(svc("db", 3, Some("db.service"))).expect("valid");
    sim.settle(50);
    let placed: Vec<String> = ids.iter().flat_map(|id| nodes_of(&sim, id)).collect();
    assert_eq!(placed.len(), 3, "three instances run");
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 3, "on three different nodes: {placed:?}");
    let unplaced: Vec<String> = ids.iter().flat_map(|id| pending_err(&sim, id)).collect();
    assert_eq!(unplaced.len(), 1, "{unplaced:?}");
    assert!(unplaced[0].starts_with("no suitable node (conflicts with web-"), "{}", unplaced[0]);
    assert_eq!(sim.running(&other), 3);
    // A node leaves: still never two on one node.
    let victim = sim.pick_node().expect("a node");
    sim.fault(Fault::NodeDown(victim));
    sim.settle(50);
    let placed: Vec<String> = ids.iter().flat_map(|id| nodes_of(&sim, id)).collect();
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), placed.len(), "{placed:?}");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_service_that_conflicts_with_itself_spreads_one_per_node() {
    let mut sim = Sim::new(SimConfig { nodes: 3, zones: 0, ..Default::default() });
    let mut s = svc("cache", 5, None);
    s.task_template.placement.conflicts = vec!["cache".into()];
    let id = sim.create_service(s).expect("valid");
    sim.settle(50);
    assert_eq!(sim.running(&id), 3);
    assert!(sim.running_per_node(&id).values().all(|n| *n == 1));
    let errs = pending_err(&sim, &id);
    assert_eq!(errs.len(), 2);
    assert!(errs.iter().all(|e| e.contains("conflicts with cache on 3 nodes")), "{errs:?}");
}

#[test]
fn a_colocated_service_follows_its_target() {
    let mut sim = Sim::new(SimConfig { nodes: 4, zones: 0, ..Default::default() });
    let mut side = svc("sidecar", 1, Some("sidecar.service"));
    side.task_template.placement.colocate = vec!["api.service".into()];
    // Created first: it waits, explained, until its target runs.
    let sidecar = sim.create_service(side).expect("valid");
    sim.settle(10);
    let errs = pending_err(&sim, &sidecar);
    assert!(errs.iter().any(|e| e.contains("api.service not running there on 4 nodes")), "{errs:?}");
    let api = sim.create_service(svc("api", 1, Some("api.service"))).expect("valid");
    sim.settle(50);
    assert_eq!(nodes_of(&sim, &sidecar), nodes_of(&sim, &api));
    // The target's node drains: the target moves and the follower with it.
    let node = sim.running_per_node(&api).keys().next().cloned().expect("api runs");
    sim.fault(Fault::Drain(node.clone()));
    sim.settle(80);
    let now = nodes_of(&sim, &api);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], node.to_string());
    assert_eq!(nodes_of(&sim, &sidecar), now, "the sidecar followed");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_set_constraint_admits_any_of_its_values() {
    let mut sim = Sim::new(SimConfig { nodes: 6, zones: 3, ..Default::default() });
    let mut s = svc("edge", 4, None);
    s.task_template.placement.constraints = vec!["node.labels.zone in (z0, z2)".into()];
    let id = sim.create_service(s).expect("valid");
    sim.settle(50);
    assert_eq!(sim.running(&id), 4);
    for n in sim.running_per_node(&id).keys() {
        let zone = sim.state.node(n).and_then(|n| n.spec.labels.get("zone").cloned()).unwrap_or_default();
        assert!(zone == "z0" || zone == "z2", "{n} is in {zone}");
    }
}
