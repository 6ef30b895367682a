//! Plan verification (Nomad's plan-apply): the leader computes plans optimistically on a
//! snapshot; before committing, `verify` re-checks every placement against the latest state and
//! refuses the parts that newer state invalidated — the node went down or was drained, its
//! resources or ports were taken, the service changed, or the slot was filled meanwhile.
//! It is deterministic, so it can also run inside the replicated state machine.

use shoal_state::{ClusterState, Plan, PlanItem};
use shoal_types::{Constraint, NodeId, Protocol, Resources, ServiceId, Task, TaskState};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verified {
    /// What may be committed.
    pub plan: Plan,
    /// What was refused, and why.
    pub rejected: Vec<(PlanItem, String)>,
}

#[derive(Default)]
struct Added {
    reserved: Resources,
    by_service: BTreeMap<ServiceId, u64>,
    ports: BTreeSet<(Protocol, u16)>,
}

struct Checker<'s> {
    state: &'s ClusterState,
    added: BTreeMap<NodeId, Added>,
    /// Whether some service has placement conflicts (computed once).
    anyone_conflicts: bool,
}

impl Checker<'_> {
    /// Can `t` go on `node` given the latest state and what this plan already put there?
    fn place(&mut self, t: &Task, node: &NodeId) -> Result<(), String> {
        let n = self.state.node(node).ok_or_else(|| format!("node {node} no longer exists"))?;
        if !n.is_schedulable() {
            return Err(format!(
                "node {node} is no longer schedulable ({:?}, {:?})",
                n.status.state, n.spec.availability
            )
            .to_lowercase());
        }
        let constraints = Constraint::parse_all(&t.spec.placement.constraints).map_err(|e| e.to_string())?;
        if let Some(c) = constraints.iter().find(|c| !c.matches(n)) {
            return Err(format!("constraint {c} no longer satisfied on node {node}"));
        }
        if !t.spec.driver_candidates().iter().any(|d| n.description.driver(d).is_some()) {
            return Err(format!("node {node} no longer offers the task's driver"));
        }
        let usage = self.state.usage(node);
        let added = self.added.entry(node.clone()).or_default();
        let mut reserved = usage.reserved.clone();
        reserved.add(&added.reserved);
        let available = n.description.resources.minus(&reserved);
        available.fits(&t.spec.resources.reservations).map_err(|s| format!("{s} on node {node}"))?;
        for p in t.endpoint.host_ports() {
            if usage.host_ports.contains_key(&p) || added.ports.contains(&p) {
                return Err(format!("host port {} already in use on node {node}", p.1));
            }
        }
        if !t.spec.placement.colocate.is_empty() || self.anyone_conflicts {
            let present = usage.by_service.keys().chain(added.by_service.keys());
            crate::affinity::check(
                self.state,
                &t.service_id,
                &t.spec.placement,
                self.anyone_conflicts,
                present,
            )
            .map_err(|r| format!("{} on node {node}", r.describe()))?;
        }
        let max = t.spec.placement.max_replicas_per_node;
        let count =
            usage.of_service(&t.service_id) + added.by_service.get(&t.service_id).copied().unwrap_or(0);
        if max > 0 && count >= max {
            return Err(format!("max replicas per node ({max}) reached on node {node}"));
        }
        added.reserved.add(&t.spec.resources.reservations);
        *added.by_service.entry(t.service_id.clone()).or_insert(0) += 1;
        added.ports.extend(t.endpoint.host_ports());
        Ok(())
    }
}

/// Splits `plan` into what can be committed on `state` and what cannot.
pub fn verify(state: &ClusterState, plan: Plan) -> Verified {
    let base = plan.base_index;
    let mut out = Verified::default();
    let anyone_conflicts = crate::affinity::anyone_conflicts(state);
    let mut checker = Checker { state, added: BTreeMap::new(), anyone_conflicts };

    // Slots written after the plan's snapshot: creating a task there could duplicate one.
    let mut changed_slots: BTreeSet<(ServiceId, Option<u64>, Option<NodeId>)> = BTreeSet::new();
    let services: BTreeSet<&ServiceId> = plan.create_tasks.iter().map(|t| &t.service_id).collect();
    for sid in services {
        for t in state.tasks_of_service(sid).filter(|t| t.version > base) {
            let node = if t.slot.is_some() { None } else { t.node_id.clone() };
            changed_slots.insert((sid.clone(), t.slot, node));
        }
    }

    let Plan {
        base_index,
        create_tasks,
        assign,
        set_desired,
        set_status,
        delete_tasks,
        service_updates,
        job_updates,
    } = plan;
    out.plan.base_index = base_index;
    // A job's record and the tasks of its runs commit together: a job that changed since the
    // plan (another plan started a run meanwhile) gets neither.
    let mut stale_jobs: BTreeSet<ServiceId> = BTreeSet::new();
    for ju in job_updates {
        match state.service(&ju.service_id) {
            Some(svc) if svc.version == ju.service_version && svc.version <= base => {
                out.plan.job_updates.push(ju)
            }
            _ => {
                out.rejected.push((
                    PlanItem::Service(ju.service_id.clone()),
                    "job changed since the plan was computed".into(),
                ));
                stale_jobs.insert(ju.service_id);
            }
        }
    }
    for mut t in create_tasks {
        let item = PlanItem::Create(t.id.clone());
        if stale_jobs.contains(&t.service_id) {
            out.rejected.push((item, "job changed since the plan was computed".into()));
            continue;
        }
        let Some(svc) = state.service(&t.service_id) else {
            out.rejected.push((item, "service no longer exists".into()));
            continue;
        };
        if svc.version > base || svc.spec_version != t.spec_version {
            out.rejected.push((item, "service changed since the plan was computed".into()));
            continue;
        }
        let node_key = if t.slot.is_some() { None } else { t.node_id.clone() };
        if changed_slots.contains(&(t.service_id.clone(), t.slot, node_key)) {
            out.rejected.push((item, "slot changed since the plan was computed".into()));
            continue;
        }
        if t.status.state == TaskState::Assigned {
            let node = t.node_id.clone().unwrap_or_default();
            if let Err(why) = checker.place(&t, &node) {
                // Keep the task (its slot needs it) but let the next pass place it again.
                t.status.state = TaskState::Pending;
                t.status.message = "pending task scheduling".into();
                t.status.err = format!("placement rejected: {why}");
                if t.slot.is_some() {
                    t.node_id = None;
                }
                out.rejected.push((PlanItem::Assign(t.id.clone()), why));
            }
        }
        out.plan.create_tasks.push(t);
    }
    for a in assign {
        let item = PlanItem::Assign(a.task_id.clone());
        let Some(t) = state.task(&a.task_id) else {
            out.rejected.push((item, "task no longer exists".into()));
            continue;
        };
        if t.version != a.task_version || !t.needs_placement() {
            out.rejected.push((item, "task changed since the plan was computed".into()));
            continue;
        }
        match checker.place(t, &a.node_id) {
            Ok(()) => out.plan.assign.push(a),
            Err(why) => out.rejected.push((item, why)),
        }
    }
    out.plan.set_desired = set_desired;
    out.plan.set_status = set_status;
    out.plan.delete_tasks = delete_tasks;
    out.plan.service_updates = service_updates;
    out
}
