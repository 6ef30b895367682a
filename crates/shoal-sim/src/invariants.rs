//! The invariants the brain must keep, checked from the raw tasks (not the indexes the brain
//! itself uses), so a bug in the bookkeeping cannot hide a bug in the decisions.

use serde::Serialize;
use shoal_state::ClusterState;
use shoal_types::{
    Availability, Constraint, NodeId, NodeState, Protocol, Resources, ServiceId, ServiceMode, Task,
    TaskState, UpdateOrder,
};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub step: u64,
    pub what: String,
}

fn v(what: String) -> Violation {
    Violation { step: 0, what }
}

/// Invariants that hold after every plan and every agent round.
pub fn check(state: &ClusterState) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Err(e) = state.check_indexes() {
        out.push(v(format!("indexes: {e}")));
    }
    let mut reserved: BTreeMap<&NodeId, Resources> = BTreeMap::new();
    let mut ports: BTreeMap<(&NodeId, Protocol, u16), u32> = BTreeMap::new();
    let mut per_node_service: BTreeMap<(&NodeId, &ServiceId), (u64, u64)> = BTreeMap::new();
    let mut per_slot: BTreeMap<(&ServiceId, Option<u64>, Option<&NodeId>), u64> = BTreeMap::new();
    for t in state.tasks() {
        if t.holds_resources() {
            let Some(node) = t.node_id.as_ref() else { continue };
            reserved.entry(node).or_default().add(&t.spec.resources.reservations);
            for (p, n) in t.endpoint.host_ports() {
                *ports.entry((node, p, n)).or_insert(0) += 1;
            }
            let e = per_node_service.entry((node, &t.service_id)).or_insert((0, 0));
            e.0 += 1;
            e.1 = t.spec.placement.max_replicas_per_node;
            if t.desired_state == TaskState::Running {
                check_placement(state, t, &mut out);
            }
        }
        if t.desired_state == TaskState::Running && !t.status.state.is_terminal() {
            let node_key = if t.slot.is_some() { None } else { t.node_id.as_ref() };
            *per_slot.entry((&t.service_id, t.slot, node_key)).or_insert(0) += 1;
        }
        if state.service(&t.service_id).is_none() && t.desired_state != TaskState::Remove {
            out.push(v(format!("task {} of removed service is not being removed", t.id)));
        }
    }
    for (node, used) in reserved {
        let total = state.node(node).map(|n| n.description.resources.clone()).unwrap_or_default();
        if state.node(node).is_some() {
            if let Err(s) = total.fits(&used) {
                out.push(v(format!("node {node} overcommitted: {s} ({used:?} > {total:?})")));
            }
        }
    }
    for ((node, _, port), n) in ports {
        if n > 1 {
            out.push(v(format!("host port {port} bound {n} times on node {node}")));
        }
    }
    for ((node, svc), (count, max)) in per_node_service {
        if max > 0 && count > max {
            out.push(v(format!("service {svc} has {count} tasks on node {node}, max {max}")));
        }
    }
    for ((svc, slot, node), n) in per_slot {
        let start_first = state.service(svc).is_some_and(|s| {
            s.active_update_config().order == UpdateOrder::StartFirst
                || s.spec.update_config.order == UpdateOrder::StartFirst
        });
        let allowed = if start_first { 2 } else { 1 };
        if n > allowed {
            out.push(v(format!("service {svc} slot {slot:?} node {node:?} has {n} live tasks")));
        }
    }
    out
}

fn check_placement(state: &ClusterState, t: &Task, out: &mut Vec<Violation>) {
    let Some(node) = t.node_id.as_ref().and_then(|n| state.node(n)) else { return };
    if node.status.state != NodeState::Ready {
        return; // tasks on a lost node keep their state until it returns
    }
    if let Ok(cs) = Constraint::parse_all(&t.spec.placement.constraints) {
        if let Some(c) = cs.iter().find(|c| !c.matches(node)) {
            out.push(v(format!("task {} runs on {} against constraint {c}", t.id, node.id)));
        }
    }
    if node.spec.availability == Availability::Drain {
        out.push(v(format!("task {} should run on drained node {}", t.id, node.id)));
    }
}

/// Invariants that hold once a cluster without faults has settled.
pub fn check_converged(state: &ClusterState) -> Vec<Violation> {
    let mut out = Vec::new();
    for svc in state.services() {
        let tasks: Vec<&Task> = state.tasks_of_service(&svc.id).collect();
        let live: Vec<&&Task> = tasks
            .iter()
            .filter(|t| t.desired_state == TaskState::Running && !t.status.state.is_terminal())
            .collect();
        let running = live.iter().filter(|t| t.status.state == TaskState::Running).count() as u64;
        let unexplained =
            live.iter().filter(|t| t.status.state != TaskState::Running && t.status.err.is_empty()).count();
        let name = &svc.spec.name;
        if unexplained > 0 {
            out.push(v(format!("service {name}: {unexplained} tasks neither running nor explained")));
        }
        match svc.spec.mode {
            ServiceMode::Replicated { replicas } => {
                // Slots, not tasks: a start-first update may hold an old and a new task in one.
                let slots: std::collections::BTreeSet<Option<u64>> = live.iter().map(|t| t.slot).collect();
                if slots.len() as u64 != replicas {
                    out.push(v(format!("service {name}: {} live slots, want {replicas}", slots.len())));
                }
            }
            ServiceMode::Global => {
                let constraints =
                    Constraint::parse_all(&svc.spec.task_template.placement.constraints).unwrap_or_default();
                for node in state.nodes() {
                    let eligible = node.is_schedulable() && constraints.iter().all(|c| c.matches(node));
                    let here = live.iter().filter(|t| t.node_id.as_ref() == Some(&node.id)).count();
                    // A start-first update that cannot place its new task keeps the old one.
                    let start_first = svc.active_update_config().order == UpdateOrder::StartFirst;
                    if eligible && (here == 0 || here > 1 + usize::from(start_first)) {
                        out.push(v(format!(
                            "global service {name}: {here} tasks on eligible node {}",
                            node.id
                        )));
                    }
                    if !eligible
                        && here > 0
                        && node.spec.availability != Availability::Pause
                        && node.status.state == NodeState::Ready
                    {
                        out.push(v(format!(
                            "global service {name}: {here} tasks on ineligible node {}",
                            node.id
                        )));
                    }
                }
            }
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
                let complete = tasks
                    .iter()
                    .filter(|t| t.spec_version == svc.spec_version && t.status.state == TaskState::Complete)
                    .count() as u64;
                if running > max_concurrent {
                    out.push(v(format!("job {name}: {running} running, max_concurrent {max_concurrent}")));
                }
                if complete != total_completions
                    && unexplained == 0
                    && live.iter().all(|t| t.status.err.is_empty())
                {
                    out.push(v(format!("job {name}: {complete} of {total_completions} completions")));
                }
            }
            ServiceMode::GlobalJob => {}
            ServiceMode::Scheduled(_) => {}
        }
    }
    out
}
