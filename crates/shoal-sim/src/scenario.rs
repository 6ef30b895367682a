//! Generated workloads for `shoal simulate` and the benchmarks: a cluster, a mix of services, an
//! optional loss of nodes, and a report of what the brain did.

use crate::{Fault, Sim, SimConfig, SimStats, Violation};
use serde::Serialize;
use shoal_core::rng::Rng;
use shoal_types::{
    NodeId, PlacementPreference, ServiceMode, ServiceSpec, Strategy, TaskState, NANO_CPUS_PER_CPU,
};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub nodes: usize,
    pub services: usize,
    pub seed: u64,
    /// Average replicas per replicated service.
    pub replicas: u64,
    /// Percentage of nodes taken down after the first convergence (0 = none).
    pub fail_nodes_pct: u64,
    pub max_steps: usize,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig { nodes: 100, services: 10, seed: 1, replicas: 20, fail_nodes_pct: 0, max_steps: 200 }
    }
}

/// A reproducible mix: mostly replicated services (spread, binpack, random; some constrained to a
/// zone, some spread over zones, some capped per node, most with reservations), a few global
/// services and replicated jobs.
pub fn services(cfg: &ScenarioConfig, rng: &mut Rng) -> Vec<ServiceSpec> {
    (0..cfg.services)
        .map(|i| {
            let mut s = ServiceSpec { name: format!("svc-{i:04}"), ..Default::default() };
            let t = &mut s.task_template;
            t.command = vec!["/bin/app".into(), format!("--id={i}")];
            t.restart_policy.delay = Duration::from_secs(1);
            let kind = rng.below(20);
            s.mode = match kind {
                0 => ServiceMode::Global,
                1 => ServiceMode::ReplicatedJob {
                    max_concurrent: 1 + rng.below(5) as u64,
                    total_completions: 1 + rng.below(20) as u64,
                },
                _ => ServiceMode::Replicated {
                    replicas: 1 + rng.below(usize::try_from(cfg.replicas.clamp(1, 100_000) * 2).unwrap_or(2))
                        as u64,
                },
            };
            t.resources.reservations.memory_bytes = (rng.below(8) as u64) * (64 << 20);
            t.resources.reservations.nano_cpus = (rng.below(5) as u64) * NANO_CPUS_PER_CPU / 10;
            t.placement.strategy = match rng.below(10) {
                0 => Strategy::Binpack,
                1 => Strategy::Random,
                _ => Strategy::Spread,
            };
            match rng.below(10) {
                0 => t.placement.constraints.push("node.labels.zone==z0".into()),
                1 => t.placement.constraints.push("node.labels.zone!=z1".into()),
                2 => t.placement.preferences.push(PlacementPreference { spread: "node.labels.zone".into() }),
                3 => t.placement.max_replicas_per_node = 1 + rng.below(3) as u64,
                _ => {}
            }
            s
        })
        .collect()
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// Virtual seconds until the cluster settled.
    pub settle_seconds: u64,
    pub tasks_desired: u64,
    pub tasks_running: u64,
    pub tasks_unplaced: u64,
    /// Most frequent scheduler explanations, with how many tasks carry each.
    pub explanations: Vec<(String, u64)>,
    /// Largest (max - min) running tasks per node among unconstrained spread services.
    pub worst_spread_skew: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub services: usize,
    pub seed: u64,
    pub phases: Vec<Phase>,
    pub stats: SimStats,
    pub violations: Vec<Violation>,
    /// Digest of the final state: equal for equal inputs.
    pub fingerprint: String,
}

pub fn run(cfg: &ScenarioConfig) -> Report {
    // Per-step checks cost O(tasks) twice a step; above a few thousand nodes check at phase ends.
    let check_every_step = cfg.nodes <= 2_000;
    let mut sim =
        Sim::new(SimConfig { nodes: cfg.nodes, seed: cfg.seed, check_every_step, ..Default::default() });
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    for spec in services(cfg, &mut rng) {
        if let Err(e) = sim.create_service(spec) {
            sim.violations.push(Violation { step: 0, what: format!("generated spec rejected: {e}") });
        }
    }
    let mut report =
        Report { nodes: cfg.nodes, services: cfg.services, seed: cfg.seed, ..Default::default() };
    let start = sim.now;
    sim.settle(cfg.max_steps);
    sim.check_now("checkpoint");
    report.phases.push(phase("create", &sim, start));

    if cfg.fail_nodes_pct > 0 {
        let n = (cfg.nodes as u64 * cfg.fail_nodes_pct / 100).max(1) as usize;
        let ids: Vec<NodeId> = sim.state.nodes().map(|n| n.id.clone()).collect();
        let mut down = Vec::new();
        while down.len() < n.min(ids.len()) {
            let id = ids[rng.below(ids.len())].clone();
            if !down.contains(&id) {
                down.push(id);
            }
        }
        for id in down {
            sim.fault(Fault::NodeDown(id));
        }
        let start = sim.now;
        sim.settle(cfg.max_steps);
        sim.check_now("checkpoint");
        report.phases.push(phase(&format!("lose {n} nodes"), &sim, start));
    }
    for v in crate::check_converged(&sim.state) {
        sim.violations.push(Violation { step: sim.stats.steps, what: format!("converged: {}", v.what) });
    }
    report.stats = sim.stats.clone();
    report.violations = sim.violations.clone();
    let fp = sim.fingerprint();
    report.fingerprint = format!("{:016x}", fnv1a(fp.as_bytes()));
    report
}

fn phase(name: &str, sim: &Sim, start: shoal_types::Timestamp) -> Phase {
    let state = &sim.state;
    let mut p =
        Phase { name: name.into(), settle_seconds: sim.now.since(start).as_secs(), ..Default::default() };
    let mut why: BTreeMap<String, u64> = BTreeMap::new();
    for t in state.tasks() {
        if t.desired_state != TaskState::Running || t.status.state.is_terminal() {
            continue;
        }
        p.tasks_desired += 1;
        if t.status.state == TaskState::Running {
            p.tasks_running += 1;
        } else if !t.status.err.is_empty() {
            p.tasks_unplaced += 1;
            *why.entry(t.status.err.clone()).or_insert(0) += 1;
        }
    }
    let mut why: Vec<(String, u64)> = why.into_iter().collect();
    why.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    why.truncate(5);
    p.explanations = why;
    let ready: Vec<&NodeId> = state.ready_nodes().map(|n| &n.id).collect();
    for svc in state.services() {
        let pl = &svc.spec.task_template.placement;
        let plain = pl.constraints.is_empty()
            && pl.preferences.is_empty()
            && pl.strategy == Strategy::Spread
            && matches!(svc.spec.mode, ServiceMode::Replicated { .. });
        if !plain {
            continue;
        }
        let per = sim.running_per_node(&svc.id);
        let counts: Vec<u64> = ready.iter().map(|n| per.get(*n).copied().unwrap_or(0)).collect();
        if let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min()) {
            p.worst_spread_skew = p.worst_spread_skew.max(max - min);
        }
    }
    p
}

/// FNV-1a: a short, stable digest for reports (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulated cluster: {} nodes, {} services, seed {}",
            self.nodes, self.services, self.seed
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:<16} settled in {:>4}s virtual: {} of {} tasks running, {} unplaced, worst spread skew {}",
                p.name, p.settle_seconds, p.tasks_running, p.tasks_desired, p.tasks_unplaced, p.worst_spread_skew
            )?;
            for (why, n) in &p.explanations {
                writeln!(f, "      {n:>6} × {why}")?;
            }
        }
        let s = &self.stats;
        writeln!(
            f,
            "  steps {}, tasks created {}, placements {}, plan items refused {}",
            s.steps, s.tasks_created, s.placements, s.plan_items_rejected
        )?;
        if self.violations.is_empty() {
            writeln!(f, "  invariants: all held")?;
        } else {
            writeln!(f, "  invariants: {} VIOLATIONS", self.violations.len())?;
            for v in self.violations.iter().take(10) {
                writeln!(f, "    step {}: {}", v.step, v.what)?;
            }
        }
        write!(f, "  state fingerprint {}", self.fingerprint)
    }
}
