//! Orchestrators: for each service, decide which tasks must exist.
//!
//! - replicated: keep `replicas` slots, each with one task; replace tasks that stop (restart
//!   policy) or whose node is down, drained or removed; on scale-down remove slots from the nodes
//!   with the most replicas first.
//! - global: one task per eligible node; follow joins, drains, constraint changes and removals.
//! - replicated_job / global_job: run to completion, at most `max_concurrent` at a time.
//! - the reaper: stop tasks that were never placed, orphan tasks of removed nodes, delete tasks
//!   marked for removal once stopped, and keep `task_history_limit` old tasks per slot.
//!
//! A "slot" is a replica number (replicated) or a node (global). Its *current* tasks are those
//! whose desired state is running or complete; the rest are its history.

use crate::restart::{self, Restart};
use crate::{updater, Ctx};
use shoal_types::{
    Availability, Constraint, Node, NodeId, NodeState, Service, ServiceId, ServiceMode, Task, TaskState,
    UpdateState,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SlotKey {
    Replica(u64),
    Node(NodeId),
}

pub(crate) struct Slot<'s> {
    pub key: SlotKey,
    /// Oldest first.
    pub tasks: Vec<&'s Task>,
}

impl<'s> Slot<'s> {
    pub fn current(&self) -> Vec<&'s Task> {
        self.tasks.iter().copied().filter(|t| t.desired_state <= TaskState::Complete).collect()
    }
}

fn group<'s>(tasks: impl Iterator<Item = &'s Task>) -> BTreeMap<SlotKey, Slot<'s>> {
    let mut slots: BTreeMap<SlotKey, Slot<'s>> = BTreeMap::new();
    for t in tasks {
        let key = match (t.slot, &t.node_id) {
            (Some(s), _) => SlotKey::Replica(s),
            (None, Some(n)) => SlotKey::Node(n.clone()),
            (None, None) => continue,
        };
        slots.entry(key.clone()).or_insert_with(|| Slot { key, tasks: Vec::new() }).tasks.push(t);
    }
    for s in slots.values_mut() {
        s.tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    }
    slots
}

pub(crate) fn run(ctx: &mut Ctx<'_>, scope: &crate::Scope) {
    let state = ctx.state;
    let in_scope = |id: &ServiceId| match scope {
        crate::Scope::All => true,
        crate::Scope::Services(ids) => ids.contains(id),
    };
    let services: Vec<&Service> = match scope {
        crate::Scope::All => state.services().collect(),
        // Id order, as a full pass: the named ones and those that depend on others.
        crate::Scope::Services(ids) => state
            .services()
            .filter(|s| crate::refers_to_others(s))
            .map(|s| &s.id)
            .chain(ids)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|id| state.service(id))
            .collect(),
    };
    for svc in services {
        let slots = group(state.tasks_of_service(&svc.id));
        match svc.spec.mode {
            ServiceMode::Replicated { replicas } => replicated(ctx, svc, &slots, replicas),
            ServiceMode::Global => global(ctx, svc, &slots, false),
            ServiceMode::GlobalJob => global(ctx, svc, &slots, true),
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
                replicated_job(ctx, svc, &slots, max_concurrent, total_completions)
            }
            ServiceMode::Scheduled(ref job) => crate::cron::scheduled(ctx, svc, job, &slots),
        }
        for slot in slots.values() {
            // History of a global task whose node is gone has nothing left to tell.
            let node_gone = matches!(&slot.key, SlotKey::Node(n) if state.node(n).is_none());
            reap(ctx, &slot.tasks, node_gone);
        }
    }
    // Tasks of removed services were told to stop and be removed; delete them once stopped.
    for sid in state.task_service_ids() {
        if state.service(sid).is_none() && in_scope(sid) {
            let tasks: Vec<&Task> = state.tasks_of_service(sid).collect();
            reap(ctx, &tasks, false);
        }
    }
}

/// Why a task must leave its node, if it must: the node is gone, down or drained, or no longer
/// satisfies the service's constraints (labels changed; SwarmKit's constraint enforcer).
pub(crate) fn node_problem(ctx: &Ctx<'_>, t: &Task, constraints: &[Constraint]) -> Option<&'static str> {
    let id = t.node_id.as_ref()?;
    match ctx.state.node(id) {
        None => Some("node removed"),
        Some(n) if n.status.state == NodeState::Down => Some("node down"),
        Some(n) if n.spec.availability == Availability::Drain => Some("node drained"),
        Some(n) if !constraints.iter().all(|c| c.matches(n)) => Some("constraints no longer satisfied"),
        Some(_) if colocated_elsewhere(ctx, t, id) => Some("the service it runs next to moved"),
        Some(_) => None,
    }
}

/// Whether a service this task must run next to (`colocate`) now runs elsewhere and no longer
/// here (a target that is only restarting in place keeps its followers).
fn colocated_elsewhere(ctx: &Ctx<'_>, t: &Task, node: &NodeId) -> bool {
    let state = ctx.state;
    t.spec.placement.colocate.iter().any(|target| {
        let targets: Vec<&ServiceId> = state
            .services()
            .filter(|s| s.spec.placement_names().any(|n| n == target))
            .map(|s| &s.id)
            .collect();
        let here = targets.iter().any(|s| state.usage(node).of_service(s) > 0);
        let elsewhere = state
            .nodes()
            .filter(|n| n.id != *node)
            .any(|n| targets.iter().any(|s| state.usage(&n.id).of_service(s) > 0));
        !here && elsewhere
    })
}

/// What `supervise` did to a slot.
#[derive(Default)]
struct Supervised {
    /// A replacement task was created.
    replaced: bool,
    /// A stopped task waits for its restart delay.
    waiting: bool,
    /// A stopped task will not be restarted.
    given_up: bool,
}

impl Supervised {
    /// The updater leaves busy slots alone this pass.
    fn busy(&self) -> bool {
        self.replaced || self.waiting
    }
}

/// Handles the current tasks of one slot that should run: moves them off lost nodes and applies
/// the restart policy to those that stopped.
fn supervise(
    ctx: &mut Ctx<'_>,
    svc: &Service,
    slot: &Slot<'_>,
    current: &[&Task],
    is_job: bool,
) -> Supervised {
    let mut out = Supervised::default();
    let (slot_no, node) = match &slot.key {
        SlotKey::Replica(s) => (Some(*s), None),
        SlotKey::Node(n) => (None, Some(n.clone())),
    };
    let policy = &svc.spec.task_template.restart_policy;
    let alone = current.len() == 1;
    for t in current.iter().copied().filter(|t| t.desired_state == TaskState::Running) {
        // A task that already stopped is judged by its restart policy wherever it ran; one that
        // still runs on a lost node is moved. Constraints are the task's own (those it was placed
        // with): a service whose constraints change is replaced by the updater at its pace.
        let own = Constraint::parse_all(&t.spec.placement.constraints).unwrap_or_default();
        if slot_no.is_some() && !t.status.state.is_terminal() && node_problem(ctx, t, &own).is_some() {
            // Not the task's fault: move it without counting a restart attempt.
            ctx.set_desired(t, TaskState::Shutdown);
            if alone {
                ctx.new_task(svc, slot_no, None, t.restart_history.clone());
            }
            out.replaced = true;
            continue;
        }
        if !t.status.state.is_terminal() {
            continue;
        }
        match restart::decide(policy, is_job, t, ctx.now) {
            Restart::Now(history) => {
                ctx.set_desired(t, TaskState::Shutdown);
                if alone {
                    ctx.new_task(svc, slot_no, node.clone(), history);
                }
                out.replaced = true;
            }
            Restart::At(when) => {
                ctx.wake(when);
                out.waiting = true;
            }
            Restart::Never(_) => {
                ctx.set_desired(t, TaskState::Complete);
                out.given_up = true;
            }
        }
    }
    out
}

fn replicated(ctx: &mut Ctx<'_>, svc: &Service, slots: &BTreeMap<SlotKey, Slot<'_>>, replicas: u64) {
    let mut active: Vec<(&Slot<'_>, Vec<&Task>)> = Vec::new();
    let mut busy: BTreeSet<SlotKey> = BTreeSet::new();
    let mut removed: BTreeSet<SlotKey> = BTreeSet::new();
    for slot in slots.values() {
        let current = slot.current();
        if !current.is_empty() {
            active.push((slot, current));
        }
    }
    let n = active.len() as u64;
    // Scale-down is decided first, so a slot being removed is not also restarted or replaced.
    if n > replicas {
        for key in scale_down_order(&active, (n - replicas) as usize) {
            if let Some((_, current)) = active.iter().find(|(s, _)| s.key == key) {
                for t in current {
                    ctx.set_desired(t, TaskState::Remove);
                }
            }
            removed.insert(key);
        }
    }
    for (slot, current) in &active {
        if !removed.contains(&slot.key) && supervise(ctx, svc, slot, current, false).busy() {
            busy.insert(slot.key.clone());
        }
    }

    if n < replicas {
        let mut used: BTreeSet<u64> = active
            .iter()
            .filter_map(|(s, _)| match s.key {
                SlotKey::Replica(r) => Some(r),
                SlotKey::Node(_) => None,
            })
            .collect();
        let mut next = 1;
        for _ in n..replicas {
            while used.contains(&next) {
                next += 1;
            }
            used.insert(next);
            ctx.new_task(svc, Some(next), None, Vec::new());
        }
    }

    let keep: Vec<(&Slot<'_>, bool)> = active
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| !removed.contains(&s.key))
        .map(|s| (s, busy.contains(&s.key)))
        .collect();
    updater::run(ctx, svc, &keep);
    if n == replicas && removed.is_empty() && busy.is_empty() {
        rebalance(ctx, svc, &active);
    }
}

/// Evens out a replicated service's spread over the nodes that may run it, when asked
/// (`service rebalance`) or always (`rebalance: auto`): one task at a time, only while every
/// task is up and no update runs, from the node with the most tasks to the one with the fewest
/// (the spread strategy places the replacement), until they differ by at most one. A move only
/// goes to a node with room for the task's reservations and host ports; services with placement
/// preferences are left to them.
fn rebalance(ctx: &mut Ctx<'_>, svc: &Service, active: &[(&Slot<'_>, Vec<&Task>)]) {
    use shoal_types::RebalanceMode;
    let requested = svc.rebalance_requested_at.is_some();
    if !requested && svc.spec.rebalance != RebalanceMode::Auto {
        return;
    }
    let updating = svc.update_status.as_ref().is_some_and(|u| {
        u.state.is_active() || matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused)
    });
    // Moves in flight (or anything not up) wait for the next pass.
    let settled = active.iter().all(|(_, current)| {
        current.len() == 1 && current.iter().all(|t| t.desired_state == TaskState::Running && t.is_up())
    });
    if updating || !settled {
        return;
    }
    let state = ctx.state;
    let constraints =
        Constraint::parse_all(&svc.spec.task_template.placement.constraints).unwrap_or_default();
    let eligible: Vec<&Node> =
        state.nodes().filter(|n| n.is_schedulable() && node_fits_service(n, &constraints, svc)).collect();
    let mut on: BTreeMap<&NodeId, Vec<(u64, &Task)>> = eligible.iter().map(|n| (&n.id, Vec::new())).collect();
    for (slot, current) in active {
        let (SlotKey::Replica(no), Some(t)) = (&slot.key, current.first()) else { continue };
        if let Some(v) = t.node_id.as_ref().and_then(|n| on.get_mut(n)) {
            v.push((*no, t));
        }
    }
    let most = on.iter().max_by_key(|(id, v)| (v.len(), Reverse(*id)));
    let fewest = on.iter().min_by_key(|(id, v)| (v.len(), *id));
    let balanced = !svc.spec.task_template.placement.preferences.is_empty()
        || match (most, fewest) {
            (Some((_, hi)), Some((_, lo))) => hi.len() <= lo.len() + 1,
            _ => true,
        };
    if balanced {
        if requested {
            ctx.plan.service_updates.push(shoal_state::ServiceStatusChange {
                service_id: svc.id.clone(),
                service_version: svc.version,
                update_status: svc.update_status.clone(),
                rollback: false,
                rebalance_done: true,
            });
        }
        return;
    }
    let (Some((_, from)), Some((to, _))) = (most, fewest) else { return };
    let Some(&(slot, t)) = from.iter().max_by_key(|(no, _)| *no) else { return };
    // Room on the target: reservations and host ports.
    let Some(target) = state.node(to) else { return };
    let usage = state.usage(to);
    let mut want = usage.reserved.clone();
    want.add(&t.spec.resources.reservations);
    let ports_free = t.endpoint.host_ports().all(|p| !usage.host_ports.contains_key(&p));
    if target.description.resources.fits(&want).is_err() || !ports_free {
        return;
    }
    ctx.set_desired(t, TaskState::Shutdown);
    ctx.new_task(svc, Some(slot), None, t.restart_history.clone());
}

/// Which slots to remove on scale-down: slots not serving (unplaced, starting, stopped or
/// waiting to restart) first, then one at a time from the node that has the most replicas of the
/// service, highest slot number first.
fn scale_down_order(active: &[(&Slot<'_>, Vec<&Task>)], count: usize) -> Vec<SlotKey> {
    let mut unplaced: Vec<u64> = Vec::new();
    let mut by_node: BTreeMap<&NodeId, Vec<u64>> = BTreeMap::new();
    for (slot, current) in active {
        let SlotKey::Replica(no) = slot.key else { continue };
        let newest = current.last();
        match newest.and_then(|t| t.node_id.as_ref()) {
            Some(node) if newest.is_some_and(|t| t.status.state == TaskState::Running) => {
                by_node.entry(node).or_default().push(no)
            }
            _ => unplaced.push(no),
        }
    }
    let mut out: Vec<SlotKey> = Vec::with_capacity(count);
    unplaced.sort_unstable_by_key(|&s| Reverse(s));
    out.extend(unplaced.into_iter().take(count).map(SlotKey::Replica));
    let mut heap: BTreeSet<(Reverse<usize>, &NodeId)> = BTreeSet::new();
    for (node, v) in by_node.iter_mut() {
        v.sort_unstable(); // pop() takes the highest slot number
        heap.insert((Reverse(v.len()), node));
    }
    while out.len() < count {
        let Some((_, node)) = heap.pop_first() else { break };
        let Some(v) = by_node.get_mut(node) else { break };
        if let Some(s) = v.pop() {
            out.push(SlotKey::Replica(s));
        }
        if !v.is_empty() {
            heap.insert((Reverse(v.len()), node));
        }
    }
    out
}

/// Whether `node` may run tasks of `svc` at all (ignoring readiness and resources).
fn node_fits_service(node: &Node, constraints: &[Constraint], svc: &Service) -> bool {
    constraints.iter().all(|c| c.matches(node))
        && svc.spec.task_template.driver_candidates().iter().any(|d| node.description.driver(d).is_some())
}

fn global(ctx: &mut Ctx<'_>, svc: &Service, slots: &BTreeMap<SlotKey, Slot<'_>>, is_job: bool) {
    let state = ctx.state;
    let Ok(constraints) = Constraint::parse_all(&svc.spec.task_template.placement.constraints) else {
        return; // validated on write; nothing sensible to do with a corrupt spec
    };
    let mut keep: Vec<(&Slot<'_>, bool)> = Vec::new();
    // While an update runs or is paused, the updater (or the operator) decides about old tasks.
    let update_active = svc.update_status.as_ref().is_some_and(|u| {
        u.state.is_active() || matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused)
    });
    for node in state.nodes() {
        let key = SlotKey::Node(node.id.clone());
        let slot = slots.get(&key);
        let mut current = slot.map(Slot::current).unwrap_or_default();
        let fits = node_fits_service(node, &constraints, svc);
        if !fits || node.spec.availability == Availability::Drain {
            // A finished job run stays finished: only what is meant to run is stopped.
            for t in current.iter().filter(|t| t.desired_state == TaskState::Running) {
                ctx.set_desired(t, TaskState::Shutdown);
            }
            continue;
        }
        if is_job {
            // A new iteration (the job was updated): retire the tasks of the previous one.
            for t in current.iter().filter(|t| t.spec_version != svc.spec_version) {
                ctx.set_desired(t, TaskState::Shutdown);
            }
            current.retain(|t| t.spec_version == svc.spec_version);
        }
        if node.status.state == NodeState::Down {
            continue; // global tasks cannot move; they come back with the node
        }
        let mut busy = false;
        if !is_job && !update_active && node.is_schedulable() && !current.is_empty() {
            // A node that was down or paused while an update ran still runs the old version:
            // bring it up to date now (stop-first; there is no update to pace it).
            if current
                .iter()
                .all(|t| t.spec_version != svc.spec_version && t.desired_state == TaskState::Running)
            {
                for t in &current {
                    ctx.set_desired(t, TaskState::Shutdown);
                }
                ctx.new_task(svc, None, Some(node.id.clone()), Vec::new());
                continue;
            }
        }
        if let Some(slot) = slot {
            busy = supervise(ctx, svc, slot, &current, is_job).busy();
            if !current.is_empty() && !is_job && node.is_schedulable() {
                keep.push((slot, busy));
            }
        }
        if current.is_empty() && !busy && node.is_schedulable() {
            ctx.new_task(svc, None, Some(node.id.clone()), Vec::new());
        }
    }
    // Tasks left on nodes that no longer exist.
    for (key, slot) in slots {
        if let SlotKey::Node(n) = key {
            if state.node(n).is_none() {
                for t in slot.current() {
                    ctx.set_desired(t, TaskState::Remove);
                }
            }
        }
    }
    if !is_job {
        updater::run(ctx, svc, &keep);
    }
}

fn replicated_job(
    ctx: &mut Ctx<'_>,
    svc: &Service,
    slots: &BTreeMap<SlotKey, Slot<'_>>,
    max_concurrent: u64,
    total: u64,
) {
    let mut done = 0u64;
    let mut running = 0u64;
    let mut used: BTreeSet<u64> = BTreeSet::new();
    for slot in slots.values() {
        let SlotKey::Replica(no) = slot.key else { continue };
        let mut current = slot.current();
        for t in current.iter().filter(|t| t.spec_version != svc.spec_version) {
            ctx.set_desired(t, TaskState::Shutdown);
        }
        current.retain(|t| t.spec_version == svc.spec_version);
        let Some(last) = current.last().copied() else { continue };
        used.insert(no);
        if last.desired_state == TaskState::Complete {
            done += 1;
            continue;
        }
        // A slot is a run in progress (running, replaced or waiting to restart) unless its
        // task was given up.
        if supervise(ctx, svc, slot, &current, true).given_up {
            done += 1;
        } else {
            running += 1;
        }
    }
    let want = max_concurrent.saturating_sub(running).min(total.saturating_sub(done + running));
    let mut next = 1;
    for _ in 0..want {
        while used.contains(&next) {
            next += 1;
        }
        used.insert(next);
        ctx.new_task(svc, Some(next), None, Vec::new());
    }
}

/// Cleans up after tasks that are stopping or stopped, and trims the slot's history.
fn reap(ctx: &mut Ctx<'_>, tasks: &[&Task], drop_history: bool) {
    let limit = if drop_history { 0 } else { ctx.state.config().task_history_limit as usize };
    let mut history: Vec<&Task> = Vec::new();
    for t in tasks.iter().copied() {
        if t.desired_state <= TaskState::Complete || ctx.touched.contains(&t.id) {
            continue;
        }
        let removing = t.desired_state == TaskState::Remove;
        let never_placed = t.status.state < TaskState::Assigned;
        let node_gone = t.node_id.as_ref().is_some_and(|n| ctx.state.node(n).is_none());
        if !t.status.state.is_terminal() {
            if removing && (never_placed || node_gone) {
                ctx.delete(t);
            } else if never_placed {
                ctx.set_status(t, TaskState::Shutdown, "stopped before it was scheduled");
            } else if node_gone {
                ctx.set_status(t, TaskState::Orphaned, "node removed");
            }
            continue;
        }
        if removing {
            ctx.delete(t);
        } else {
            history.push(t);
        }
    }
    if history.len() > limit {
        // `tasks` is oldest first, so the first ones are the oldest history.
        for t in &history[..history.len() - limit] {
            ctx.delete(t);
        }
    }
}
