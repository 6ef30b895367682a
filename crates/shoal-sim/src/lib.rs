//! A simulated Shoal cluster: the real state machine and the real brain, with simulated agents, a
//! virtual clock and seeded faults. Every run is a pure function of its configuration and seed,
//! so a failing run can be replayed exactly.
//!
//! Each [`Sim::step`]: the controllers compute a plan on the state, the plan is verified and
//! applied (as the leader will do through Raft), the simulated agents move their tasks along
//! (assigned → running, told to stop → shutdown, jobs complete after a while), random failures are
//! injected if configured, the clock advances, and the invariants are checked.

pub mod invariants;
pub mod scenario;

pub use invariants::{check, check_converged, Violation};

use serde::Serialize;
use shoal_core::rng::Rng;
use shoal_state::{Applied, ClusterState, Command, StateError, TaskStatusReport};
use shoal_types::{
    Availability, Node, NodeId, NodeState, Resources, Service, ServiceId, ServiceSpec, TaskId, TaskState,
    TaskStatus, Timestamp, NANO_CPUS_PER_CPU,
};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub node_cpus: u64,
    pub node_memory: u64,
    /// Nodes get `zone=z{i % zones}` labels (0 = no labels).
    pub zones: usize,
    /// Virtual time per step.
    pub step: Duration,
    /// How long a job task runs before it completes.
    pub job_runtime: Duration,
    /// Chance per step that a running task fails (0.0 = never).
    pub task_failure_rate: f64,
    /// Check the invariants after every plan and agent round (O(tasks) each; turn off for very
    /// large runs and call [`Sim::check_now`] at the points that matter).
    pub check_every_step: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 10,
            seed: 1,
            node_cpus: 8,
            node_memory: 16 << 30,
            zones: 3,
            step: Duration::from_secs(1),
            job_runtime: Duration::from_secs(3),
            task_failure_rate: 0.0,
            check_every_step: true,
        }
    }
}

/// A fault or operator action injected between steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    NodeDown(NodeId),
    NodeUp(NodeId),
    Drain(NodeId),
    Pause(NodeId),
    Activate(NodeId),
    SetLabel { node: NodeId, key: String, value: String },
    AddNode(NodeId),
    RemoveNode(NodeId),
    FailTask(TaskId),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub steps: u64,
    pub tasks_created: u64,
    pub placements: u64,
    pub plan_items_rejected: u64,
    pub unplaced_last_step: u64,
    /// Passes over some services only (the rest were full passes).
    pub scoped_passes: u64,
}

pub struct Sim {
    pub config: SimConfig,
    pub state: ClusterState,
    pub now: Timestamp,
    rng: Rng,
    pub stats: SimStats,
    /// Violations found so far (checked after every step).
    pub violations: Vec<Violation>,
    /// When the controllers last asked to be woken (restart delays, update monitors).
    pub wake_at: Option<Timestamp>,
    /// Whether the last step changed nothing (empty plan, no agent reports).
    pub quiet: bool,
    /// What the next pass looks at (from the state machine's events), decided as in the
    /// leader's control loop.
    next: shoal_core::NextPass,
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let mut sim = Sim {
            rng: Rng::new(config.seed),
            state: ClusterState::new(),
            now: Timestamp::from_secs(1_700_000_000),
            stats: SimStats::default(),
            violations: Vec::new(),
            wake_at: None,
            quiet: false,
            next: shoal_core::NextPass::default(),
            config,
        };
        for i in 0..sim.config.nodes {
            sim.add_node(NodeId::new(format!("node-{i:05}")));
        }
        sim
    }

    /// Adds a node as given (description, labels, availability, state).
    pub fn add_custom_node(&mut self, node: Node) {
        let (id, spec, state) = (node.id.clone(), node.spec.clone(), node.status.state);
        self.apply(Command::RegisterNode { node: Box::new(node) });
        self.apply(Command::UpdateNodeSpec { id: id.clone(), expected_version: None, spec });
        self.apply(Command::SetNodeStatus { id, state, message: String::new() });
    }

    fn add_node(&mut self, id: NodeId) {
        let i = self.state.nodes().len();
        let mut n = Node::test(id.as_str(), &format!("host-{}", id.as_str()));
        n.description.resources = Resources {
            nano_cpus: self.config.node_cpus * NANO_CPUS_PER_CPU,
            memory_bytes: self.config.node_memory,
            ..Default::default()
        };
        if self.config.zones > 0 {
            n.spec.labels.insert("zone".into(), format!("z{}", i % self.config.zones));
        }
        let spec = n.spec.clone();
        self.apply(Command::RegisterNode { node: Box::new(n) });
        self.apply(Command::UpdateNodeSpec { id, expected_version: None, spec });
    }

    /// Applies a command that the simulation itself issues; those never fail by construction,
    /// and a failure is recorded as a violation rather than a panic.
    fn apply(&mut self, cmd: Command) -> Option<Applied> {
        match self.apply_noting(cmd) {
            Ok(a) => Some(a),
            Err(e) => {
                self.violations
                    .push(Violation { step: self.stats.steps, what: format!("command failed: {e}") });
                None
            }
        }
    }

    /// Applies `cmd` as an operator or another leader would, noting what its events make the
    /// next pass look at (change the state only through here or the methods above).
    pub fn apply_command(&mut self, cmd: Command) -> Result<Applied, StateError> {
        self.apply_noting(cmd)
    }

    fn apply_noting(&mut self, cmd: Command) -> Result<Applied, StateError> {
        let applied = self.state.apply(self.now, cmd)?;
        for e in &applied.events {
            self.next.note(&e.object);
        }
        Ok(applied)
    }

    pub fn create_service(&mut self, spec: ServiceSpec) -> Result<ServiceId, StateError> {
        let id = ServiceId::new(self.rng.new_id());
        let svc = Service::new(id.clone(), spec);
        self.apply_noting(Command::CreateService { service: Box::new(svc) })?;
        Ok(id)
    }

    pub fn update_service(
        &mut self,
        id: &ServiceId,
        edit: impl FnOnce(&mut ServiceSpec),
    ) -> Result<(), StateError> {
        let svc = self
            .state
            .service(id)
            .ok_or_else(|| StateError::NotFound { kind: "service", id: id.to_string() })?;
        let mut spec = svc.spec.clone();
        edit(&mut spec);
        let cmd = Command::UpdateService {
            id: id.clone(),
            expected_version: Some(svc.version),
            spec: Box::new(spec),
        };
        self.apply_noting(cmd).map(|_| ())
    }

    pub fn remove_service(&mut self, id: &ServiceId) -> Result<(), StateError> {
        self.apply_noting(Command::RemoveService { id: id.clone() }).map(|_| ())
    }

    pub fn fault(&mut self, f: Fault) {
        let set_avail = |sim: &mut Sim, id: &NodeId, a: Availability| {
            if let Some(n) = sim.state.node(id) {
                let mut spec = n.spec.clone();
                spec.availability = a;
                sim.apply(Command::UpdateNodeSpec { id: id.clone(), expected_version: None, spec });
            }
        };
        match f {
            Fault::NodeDown(id) | Fault::NodeUp(id) if self.state.node(&id).is_none() => {}
            Fault::NodeDown(id) => {
                self.apply(Command::SetNodeStatus {
                    id,
                    state: NodeState::Down,
                    message: "heartbeat missed".into(),
                });
            }
            Fault::NodeUp(id) => {
                self.apply(Command::SetNodeStatus { id, state: NodeState::Ready, message: String::new() });
            }
            Fault::Drain(id) => set_avail(self, &id, Availability::Drain),
            Fault::Pause(id) => set_avail(self, &id, Availability::Pause),
            Fault::Activate(id) => set_avail(self, &id, Availability::Active),
            Fault::SetLabel { node, key, value } => {
                if let Some(n) = self.state.node(&node) {
                    let mut spec = n.spec.clone();
                    spec.labels.insert(key, value);
                    self.apply(Command::UpdateNodeSpec { id: node, expected_version: None, spec });
                }
            }
            Fault::AddNode(id) => {
                if self.state.node(&id).is_none() {
                    self.add_node(id)
                }
            }
            Fault::RemoveNode(id) => {
                if self.state.node(&id).is_some() {
                    self.apply(Command::RemoveNode { id });
                }
            }
            Fault::FailTask(id) => {
                if let Some(t) = self.state.task(&id) {
                    if let (Some(node), false) = (t.node_id.clone(), t.status.state.is_terminal()) {
                        let status = TaskStatus {
                            state: TaskState::Failed,
                            exit_code: Some(1),
                            err: "simulated failure".into(),
                            ..t.status.clone()
                        };
                        self.apply(Command::ReportTaskStatus {
                            node_id: node,
                            reports: vec![TaskStatusReport { task_id: id, status }],
                        });
                    }
                }
            }
        }
    }

    /// One round: controllers, agents, random failures, clock, invariants.
    pub fn step(&mut self) {
        self.stats.steps += 1;
        let seed = self.rng.next_u64();
        // As the leader's loop: a pass over the services that changed since the last one, or
        // over all of them when one is owed.
        let scope = self.next.take(&self.state, 0, self.now);
        // Nothing changed: the leader makes no pass at all.
        let tick = if scope.is_empty() {
            let plan = shoal_state::Plan { base_index: self.state.index(), ..Default::default() };
            shoal_core::Tick { plan, ..Default::default() }
        } else {
            shoal_core::tick_scoped(&self.state, self.now, seed, &scope)
        };
        if scope != shoal_core::Scope::All {
            self.stats.scoped_passes += 1;
        }
        // With the step checks on, the scoped pass must plan exactly what a full pass plans.
        if self.config.check_every_step && scope != shoal_core::Scope::All {
            let full = shoal_core::tick(&self.state, self.now, seed);
            if full.plan != tick.plan {
                self.violations.push(Violation {
                    step: self.stats.steps,
                    what: format!(
                        "a pass over {scope:?} planned {:?}, a full pass {:?}",
                        tick.plan, full.plan
                    ),
                });
            }
        }
        self.next.passed(&scope, tick.wake_at);
        self.stats.tasks_created += tick.plan.create_tasks.len() as u64;
        self.stats.placements += (tick.plan.assign.len()
            + tick.plan.create_tasks.iter().filter(|t| t.status.state == TaskState::Assigned).count())
            as u64;
        self.stats.unplaced_last_step = tick.unplaced as u64;
        self.wake_at = self.next.wake_at();
        let verified = shoal_core::verify(&self.state, tick.plan);
        self.quiet = verified.plan.is_empty();
        self.stats.plan_items_rejected += verified.rejected.len() as u64;
        let mut whole = verified.rejected.is_empty();
        if let Some(applied) = self.apply(Command::ApplyPlan { plan: verified.plan }) {
            self.stats.plan_items_rejected += applied.skipped.len() as u64;
            whole &= applied.skipped.is_empty();
        }
        if !whole {
            // As the leader: what did not commit is planned again from the whole state.
            self.next.look_at_everything();
        }
        self.check_now("after plan");
        self.agents();
        self.random_failures();
        self.now = self.now.saturating_add(self.config.step);
        self.check_now("after agents");
    }

    /// Checks the step invariants now, recording violations.
    pub fn check_now(&mut self, when: &str) {
        if !self.config.check_every_step && when != "checkpoint" {
            return;
        }
        for v in invariants::check(&self.state) {
            self.violations.push(Violation { step: self.stats.steps, what: format!("{when}: {}", v.what) });
        }
    }

    /// Runs steps until `done` holds or `max_steps` pass. Returns whether `done` held.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Steps until a step changes nothing (or `max_steps`); returns the steps taken.
    pub fn settle(&mut self, max_steps: usize) -> usize {
        for i in 0..max_steps {
            self.step();
            // A quiet step applies an empty plan and no reports, leaves nothing in motion and
            // has nothing scheduled for later.
            if self.quiet && self.pending_work() == 0 && self.wake_at.is_none() {
                return i + 1;
            }
        }
        max_steps
    }

    /// Tasks that are still moving (placed but not yet running, told to stop but running, or
    /// job tasks that have yet to complete).
    pub fn pending_work(&self) -> usize {
        self.state
            .tasks()
            .filter(|t| {
                let on_ready = t
                    .node_id
                    .as_ref()
                    .and_then(|n| self.state.node(n))
                    .is_some_and(|n| n.status.state == NodeState::Ready);
                let running_job = t.status.state == TaskState::Running
                    && t.desired_state == TaskState::Running
                    && self.state.service(&t.service_id).is_some_and(|s| s.spec.mode.is_job());
                on_ready
                    && (running_job
                        || (t.desired_state == TaskState::Running
                            && t.status.state >= TaskState::Assigned
                            && t.status.state < TaskState::Running)
                        || (t.desired_state > TaskState::Complete && !t.status.state.is_terminal()))
            })
            .count()
    }

    /// Simulated agents on ready nodes: start what is assigned, stop what is told to stop, and
    /// complete job tasks after `job_runtime`.
    fn agents(&mut self) {
        let mut reports: BTreeMap<NodeId, Vec<TaskStatusReport>> = BTreeMap::new();
        for t in self.state.tasks() {
            let Some(node) = &t.node_id else { continue };
            if self.state.node(node).map(|n| n.status.state) != Some(NodeState::Ready) {
                continue;
            }
            let is_job = self.state.service(&t.service_id).is_some_and(|s| s.spec.mode.is_job());
            let next = if t.desired_state > TaskState::Running && !t.status.state.is_terminal() {
                Some((TaskState::Shutdown, None))
            } else if t.desired_state != TaskState::Running {
                None
            } else if t.status.state >= TaskState::Assigned && t.status.state < TaskState::Running {
                Some((TaskState::Running, None))
            } else if is_job
                && t.status.state == TaskState::Running
                && self.now.since(t.status.timestamp) >= self.config.job_runtime
            {
                match sim_exit_code(t) {
                    0 => Some((TaskState::Complete, Some(0))),
                    code => Some((TaskState::Failed, Some(code))),
                }
            } else {
                None
            };
            if let Some((state, exit_code)) = next {
                let status = TaskStatus {
                    state,
                    timestamp: self.now,
                    exit_code,
                    message: state.as_str().into(),
                    ..t.status.clone()
                };
                reports
                    .entry(node.clone())
                    .or_default()
                    .push(TaskStatusReport { task_id: t.id.clone(), status });
            }
        }
        if !reports.is_empty() {
            self.quiet = false;
        }
        for (node_id, reports) in reports {
            self.apply(Command::ReportTaskStatus { node_id, reports });
        }
    }

    fn random_failures(&mut self) {
        let rate = self.config.task_failure_rate;
        if rate <= 0.0 {
            return;
        }
        let threshold = (rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
        let running: Vec<TaskId> = self
            .state
            .tasks()
            .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        for id in running {
            if self.rng.next_u64() < threshold {
                self.quiet = false;
                self.fault(Fault::FailTask(id));
            }
        }
    }

    /// A random node id (for fault injection by scenarios and property tests).
    pub fn pick_node(&mut self) -> Option<NodeId> {
        let n = self.state.nodes().len();
        if n == 0 {
            return None;
        }
        let i = self.rng.below(n);
        self.state.nodes().nth(i).map(|n| n.id.clone())
    }

    /// Running tasks (desired and observed) of a service, per node.
    pub fn running_per_node(&self, svc: &ServiceId) -> BTreeMap<NodeId, u64> {
        let mut m = BTreeMap::new();
        for t in self.state.tasks_of_service(svc) {
            if t.status.state == TaskState::Running && t.desired_state == TaskState::Running {
                if let Some(n) = &t.node_id {
                    *m.entry(n.clone()).or_insert(0) += 1;
                }
            }
        }
        m
    }

    pub fn running(&self, svc: &ServiceId) -> u64 {
        self.running_per_node(svc).values().sum()
    }

    /// A digest of the whole state, to compare runs (same seed → same digest).
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(&self.state.snapshot()).unwrap_or_default()
    }
}

/// How a simulated job task exits: `0` unless its command is `sim-exit CODES`, a
/// comma-separated list of exit codes picked by the task's slot (run number) in turn, so a test
/// can make chosen runs of a job fail.
pub fn sim_exit_code(t: &shoal_types::Task) -> i32 {
    match t.spec.command.as_slice() {
        [prog, codes, ..] if prog == "sim-exit" => {
            let codes: Vec<i32> = codes.split(',').filter_map(|c| c.trim().parse().ok()).collect();
            if codes.is_empty() {
                return 0;
            }
            let i = t.slot.unwrap_or(0) as usize % codes.len();
            codes[i]
        }
        _ => 0,
    }
}
