//! Shoal's brain: orchestrators, scheduler, rolling-update planner and plan verification.
//!
//! Pure and deterministic: no async runtime, no I/O, no clock reads, no unseeded randomness, and
//! iteration in sorted order. [`tick`] takes a state snapshot, `now` and a `seed`, and returns
//! the [`Plan`] that moves the cluster towards what its services declare, plus when to look
//! again. The same inputs give the same plan, byte for byte. The leader (or the simulator)
//! verifies the plan against the latest state with [`verify`] and commits it.

mod affinity;
mod cron;
pub use cron::NODE_LOSS_GRACE;
mod depends;
pub mod migrate;
mod orchestrator;
mod passes;
pub use passes::{NextPass, FULL_PASS_INTERVAL};
mod restart;
pub mod rng;
pub mod scheduler;
mod updater;
mod verify;

pub use scheduler::{Decision, Scheduler};
pub use verify::{verify, Verified};

use rng::Rng;
use shoal_state::{Assignment, ClusterState, DesiredChange, Plan, StatusChange};
use shoal_types::{NodeId, Service, ServiceId, Task, TaskId, TaskState, TaskStatus, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// The result of one pass of the controllers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tick {
    pub plan: Plan,
    /// The earliest time something scheduled (a restart delay, an update delay, a monitor
    /// window) becomes due; the caller should tick again then even if nothing else happens.
    pub wake_at: Option<Timestamp>,
    /// Tasks the scheduler could not place this pass.
    pub unplaced: usize,
}

/// Runs the orchestrators, the updater, the reaper and the scheduler on `state`.
pub fn tick(state: &ClusterState, now: Timestamp, seed: u64) -> Tick {
    tick_scoped(state, now, seed, &Scope::All)
}

/// Which services a pass looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every service (after a change to nodes, networks, secrets or the cluster's settings,
    /// when something scheduled falls due, and as the periodic safety net).
    #[default]
    All,
    /// These services (changed, or with a task that changed since the last pass), plus every
    /// service whose spec names another service (`depends_on`, `colocate`, a job's parents):
    /// what those do depends on services that may have changed. The scheduler still places
    /// every pending task of the cluster.
    Services(BTreeSet<ServiceId>),
}

impl Scope {
    /// Adds what `event` may make a pass do: its service for a task or service, everything
    /// for anything else (a node, a network, a secret).
    pub fn add(&mut self, object: &shoal_state::Object) {
        let Scope::Services(ids) = self else { return };
        match object {
            shoal_state::Object::Task(t) => {
                ids.insert(t.service_id.clone());
            }
            shoal_state::Object::Service(s) => {
                ids.insert(s.id.clone());
            }
            _ => *self = Scope::All,
        }
    }

    /// No service at all (nothing changed).
    pub fn none() -> Self {
        Scope::Services(BTreeSet::new())
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Services(ids) if ids.is_empty())
    }
}

/// Whether what `svc`'s orchestrator decides depends on other services: it names them
/// (`depends_on`, `colocate`, a job's parents), or it rebalances, which waits for room that
/// other services' tasks leave on the nodes.
pub(crate) fn refers_to_others(svc: &Service) -> bool {
    !svc.spec.depends_on.is_empty()
        || !svc.spec.task_template.placement.colocate.is_empty()
        || svc.spec.mode.scheduled().is_some_and(|j| !j.after.is_empty())
        || svc.spec.rebalance == shoal_types::RebalanceMode::Auto
        || svc.rebalance_requested_at.is_some()
}

/// [`tick`] on the services in `scope` only. For a scope built from every change since the last
/// pass (whose plan was committed), the plan is the one a full pass would make, item for item:
/// a service nothing happened to has nothing to do, except what falls due in time, which a
/// full pass at `wake_at` does (the property test `scoped_passes_plan_what_full_passes_plan`).
pub fn tick_scoped(state: &ClusterState, now: Timestamp, seed: u64, scope: &Scope) -> Tick {
    let mut ctx = Ctx::new(state, now, seed);
    orchestrator::run(&mut ctx, scope);
    let unplaced = schedule(&mut ctx);
    Tick { plan: ctx.plan, wake_at: ctx.wake_at, unplaced }
}

/// Places every task waiting for a node (existing pending tasks and the ones this pass created).
fn schedule(ctx: &mut Ctx<'_>) -> usize {
    let state = ctx.state;
    let existing: Vec<&Task> = state
        .tasks_needing_placement()
        .filter(|t| !ctx.touched.contains(&t.id) && state.service(&t.service_id).is_some())
        .collect();
    let created = std::mem::take(&mut ctx.plan.create_tasks);
    // Tasks of services whose dependencies are not up yet wait, explained (`depends_on`).
    let blocked = depends::blocked(state);
    let (waiting, ready): (Vec<&Task>, Vec<&Task>) =
        existing.iter().copied().chain(created.iter()).partition(|t| blocked.contains_key(&t.service_id));
    let mut sched = Scheduler::new(state);
    let mut decisions = sched.schedule(ready, &mut ctx.rng);
    decisions.extend(waiting.into_iter().filter_map(|t| {
        let why = blocked.get(&t.service_id)?;
        Some(Decision { task_id: t.id.clone(), outcome: Err(why.clone()) })
    }));
    // Decisions come back grouped; index them by task for the two passes below.
    decisions.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let find = |id: &TaskId| decisions.binary_search_by(|d| d.task_id.cmp(id)).ok().map(|i| &decisions[i]);
    let mut unplaced = 0;
    for t in &existing {
        match find(&t.id).map(|d| &d.outcome) {
            Some(Ok(node)) => ctx.plan.assign.push(Assignment {
                task_id: t.id.clone(),
                task_version: t.version,
                node_id: node.clone(),
            }),
            Some(Err(why)) => {
                unplaced += 1;
                if t.status.err != *why || t.status.state != TaskState::Pending {
                    let status = TaskStatus {
                        state: TaskState::Pending,
                        message: "pending task scheduling".into(),
                        err: why.clone(),
                        ..t.status.clone()
                    };
                    ctx.plan.set_status.push(StatusChange {
                        task_id: t.id.clone(),
                        task_version: t.version,
                        status,
                    });
                }
            }
            None => {}
        }
    }
    let mut created = created;
    for t in &mut created {
        match find(&t.id).map(|d| &d.outcome) {
            Some(Ok(node)) => {
                t.node_id = Some(node.clone());
                t.status.state = TaskState::Assigned;
                t.status.message = "scheduled".into();
            }
            Some(Err(why)) => {
                unplaced += 1;
                t.status.err = why.clone();
            }
            None => {}
        }
    }
    ctx.plan.create_tasks = created;
    unplaced
}

/// Shared state of one pass: the snapshot, the plan being built and the bookkeeping that keeps
/// the controllers from issuing two contradictory changes to one task.
pub(crate) struct Ctx<'s> {
    pub state: &'s ClusterState,
    pub now: Timestamp,
    pub rng: Rng,
    pub plan: Plan,
    pub wake_at: Option<Timestamp>,
    /// Tasks whose desired state this pass changed.
    pub touched: BTreeSet<TaskId>,
    /// The template each service's new tasks share in this pass (with its spec version).
    templates: BTreeMap<ServiceId, (u64, std::sync::Arc<shoal_types::TaskTemplate>)>,
}

impl<'s> Ctx<'s> {
    fn new(state: &'s ClusterState, now: Timestamp, seed: u64) -> Self {
        let plan = Plan { base_index: state.index(), ..Default::default() };
        Ctx {
            state,
            now,
            rng: Rng::new(seed),
            plan,
            wake_at: None,
            touched: BTreeSet::new(),
            templates: BTreeMap::new(),
        }
    }

    pub fn wake(&mut self, at: Timestamp) {
        if at > self.now {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    /// Moves a task's desired state forward (once per pass per task).
    pub fn set_desired(&mut self, t: &Task, desired: TaskState) {
        if desired > t.desired_state && self.touched.insert(t.id.clone()) {
            self.plan.set_desired.push(DesiredChange {
                task_id: t.id.clone(),
                task_version: t.version,
                desired_state: desired,
            });
        }
    }

    pub fn set_status(&mut self, t: &Task, state: TaskState, message: &str) {
        if t.status.state.can_transition_to(state) && t.status.state != state {
            let status = TaskStatus { state, message: message.into(), ..t.status.clone() };
            self.plan.set_status.push(StatusChange {
                task_id: t.id.clone(),
                task_version: t.version,
                status,
            });
        }
    }

    pub fn delete(&mut self, t: &Task) {
        self.plan.delete_tasks.push((t.id.clone(), t.version));
    }

    /// A new task for `svc`, in `slot` (replicated) or bound to `node` (global).
    pub fn new_task(
        &mut self,
        svc: &Service,
        slot: Option<u64>,
        node: Option<NodeId>,
        restart_history: Vec<Timestamp>,
    ) -> TaskId {
        let id = TaskId::new(self.rng.new_id());
        let spec = match self.templates.get(&svc.id) {
            Some((v, t)) if *v == svc.spec_version => t.clone(),
            _ => {
                let t = std::sync::Arc::new(svc.spec.task_template.clone());
                self.templates.insert(svc.id.clone(), (svc.spec_version, t.clone()));
                t
            }
        };
        self.plan.create_tasks.push(Task {
            id: id.clone(),
            version: 0,
            created_at: self.now,
            updated_at: self.now,
            service_id: svc.id.clone(),
            slot,
            node_id: node,
            spec,
            endpoint: svc.spec.endpoint.clone(),
            spec_version: svc.spec_version,
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Pending,
                timestamp: self.now,
                message: "pending task scheduling".into(),
                ..Default::default()
            },
            restart_history,
            restore: None,
            networks: Vec::new(),
        });
        id
    }
}

#[cfg(test)]
mod tests;
