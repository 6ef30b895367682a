//! Property tests of the brain's invariants over random clusters, workloads and fault sequences,
//! driven through the simulator (real state machine, real core, simulated agents).

use proptest::prelude::*;
use shoal_sim::{check_converged, Fault, Sim, SimConfig};
use shoal_types::{
    Node, NodeId, PlacementPreference, PortConfig, ServiceId, ServiceMode, ServiceSpec, TaskId, TaskState,
    UpdateOrder, NANO_CPUS_PER_CPU,
};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
struct NodeGen {
    cpus: u64,
    mem_gb: u64,
    zone: u8,
    gpus: u64,
}

#[derive(Clone, Debug)]
struct SvcGen {
    mode: u8,
    replicas: u64,
    mem_mb: u64,
    cpu_tenths: u64,
    gpu: bool,
    constraint: u8,
    max_per_node: u64,
    strategy: u8,
    pref: bool,
    port: Option<u16>,
    start_first: bool,
}

#[derive(Clone, Debug)]
enum FaultGen {
    Down(usize),
    Up(usize),
    Drain(usize),
    Pause(usize),
    Activate(usize),
    Label(usize, u8),
    FailTask(usize),
    Scale(usize, u64),
    Update(usize),
    Remove(usize),
    AddNode,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (1u64..8, 1u64..16, 0u8..3, 0u64..3).prop_map(|(cpus, mem_gb, zone, gpus)| NodeGen {
        cpus,
        mem_gb,
        zone,
        gpus,
    })
}

fn svc_gen() -> impl Strategy<Value = SvcGen> {
    (
        (0u8..8, 0u64..20, 0u64..6, 0u64..12, any::<bool>()),
        (0u8..6, 0u64..4, 0u8..3, any::<bool>(), prop::option::weighted(0.2, 8000u16..8003), any::<bool>()),
    )
        .prop_map(
            |(
                (mode, replicas, mem, cpu, gpu),
                (constraint, max_per_node, strategy, pref, port, start_first),
            )| SvcGen {
                mode,
                replicas,
                mem_mb: mem * 512,
                cpu_tenths: cpu * 2,
                gpu: gpu && mode == 0,
                constraint,
                max_per_node,
                strategy,
                pref,
                port,
                start_first,
            },
        )
}

fn fault_gen() -> impl Strategy<Value = FaultGen> {
    prop_oneof![
        (0usize..64).prop_map(FaultGen::Down),
        (0usize..64).prop_map(FaultGen::Up),
        (0usize..64).prop_map(FaultGen::Drain),
        (0usize..64).prop_map(FaultGen::Pause),
        (0usize..64).prop_map(FaultGen::Activate),
        (0usize..64, 0u8..3).prop_map(|(n, z)| FaultGen::Label(n, z)),
        (0usize..1000).prop_map(FaultGen::FailTask),
        (0usize..16, 0u64..25).prop_map(|(s, r)| FaultGen::Scale(s, r)),
        (0usize..16).prop_map(FaultGen::Update),
        (0usize..16).prop_map(FaultGen::Remove),
        Just(FaultGen::AddNode),
    ]
}

fn spec_of(i: usize, g: &SvcGen) -> ServiceSpec {
    let mut s = ServiceSpec { name: format!("svc{i}"), ..Default::default() };
    let t = &mut s.task_template;
    t.command = vec!["app".into()];
    t.restart_policy.delay = Duration::from_secs(2);
    s.mode = match g.mode {
        0..=4 => ServiceMode::Replicated { replicas: g.replicas },
        5 => ServiceMode::Global,
        6 => ServiceMode::ReplicatedJob {
            max_concurrent: 1 + g.replicas % 4,
            total_completions: 1 + g.replicas,
        },
        _ => ServiceMode::GlobalJob,
    };
    t.resources.reservations.memory_bytes = g.mem_mb << 20;
    t.resources.reservations.nano_cpus = g.cpu_tenths * NANO_CPUS_PER_CPU / 10;
    if g.gpu {
        t.resources.reservations.generic.insert("gpu".into(), 1);
    }
    match g.constraint {
        0 => t.placement.constraints.push("node.labels.zone==z0".into()),
        1 => t.placement.constraints.push("node.labels.zone!=z1".into()),
        _ => {}
    }
    t.placement.max_replicas_per_node = g.max_per_node;
    t.placement.strategy =
        [shoal_types::Strategy::Spread, shoal_types::Strategy::Binpack, shoal_types::Strategy::Random]
            [g.strategy as usize % 3];
    if g.pref {
        t.placement.preferences.push(PlacementPreference { spread: "node.labels.zone".into() });
    }
    if let Some(p) = g.port {
        s.endpoint.ports.push(PortConfig { published: p, target: p, ..Default::default() });
    }
    if g.start_first && !(s.mode.is_global() && g.port.is_some()) {
        s.update_config.order = UpdateOrder::StartFirst;
    }
    s.update_config.monitor = Duration::from_secs(1);
    s
}

fn build(seed: u64, nodes: &[NodeGen], services: &[SvcGen]) -> (Sim, Vec<ServiceId>) {
    let mut sim = Sim::new(SimConfig { nodes: 0, seed, zones: 0, ..Default::default() });
    for (i, g) in nodes.iter().enumerate() {
        let mut n = Node::test(&format!("n{i:02}"), &format!("h{i}"));
        n.description.resources.nano_cpus = g.cpus * NANO_CPUS_PER_CPU;
        n.description.resources.memory_bytes = g.mem_gb << 30;
        if g.gpus > 0 {
            n.description.resources.generic.insert("gpu".into(), g.gpus);
        }
        n.spec.labels.insert("zone".into(), format!("z{}", g.zone));
        sim.add_custom_node(n);
    }
    let ids = services
        .iter()
        .enumerate()
        .map(|(i, g)| sim.create_service(spec_of(i, g)).expect("generated spec is valid"))
        .collect();
    (sim, ids)
}

fn apply_fault(sim: &mut Sim, ids: &[ServiceId], f: &FaultGen) {
    let nodes: Vec<NodeId> = sim.state.nodes().map(|n| n.id.clone()).collect();
    let node = |i: usize| nodes.get(i % nodes.len().max(1)).cloned();
    match f {
        FaultGen::Down(i) => node(*i).into_iter().for_each(|n| sim.fault(Fault::NodeDown(n))),
        FaultGen::Up(i) => node(*i).into_iter().for_each(|n| sim.fault(Fault::NodeUp(n))),
        FaultGen::Drain(i) => node(*i).into_iter().for_each(|n| sim.fault(Fault::Drain(n))),
        FaultGen::Pause(i) => node(*i).into_iter().for_each(|n| sim.fault(Fault::Pause(n))),
        FaultGen::Activate(i) => node(*i).into_iter().for_each(|n| sim.fault(Fault::Activate(n))),
        FaultGen::Label(i, z) => node(*i)
            .into_iter()
            .for_each(|n| sim.fault(Fault::SetLabel { node: n, key: "zone".into(), value: format!("z{z}") })),
        FaultGen::FailTask(i) => {
            let running: Vec<TaskId> = sim
                .state
                .tasks()
                .filter(|t| t.status.state == TaskState::Running)
                .map(|t| t.id.clone())
                .collect();
            if !running.is_empty() {
                sim.fault(Fault::FailTask(running[i % running.len()].clone()));
            }
        }
        FaultGen::Scale(s, r) => {
            if let Some(id) = ids.get(s % ids.len().max(1)) {
                let _ = sim.update_service(id, |spec| {
                    if let ServiceMode::Replicated { replicas } = &mut spec.mode {
                        *replicas = *r;
                    }
                });
            }
        }
        FaultGen::Update(s) => {
            if let Some(id) = ids.get(s % ids.len().max(1)) {
                let _ = sim.update_service(id, |spec| spec.task_template.force_update += 1);
            }
        }
        FaultGen::Remove(s) => {
            if let Some(id) = ids.get(s % ids.len().max(1)) {
                let _ = sim.remove_service(id);
            }
        }
        FaultGen::AddNode => {
            let id = NodeId::new(format!("extra{}", nodes.len()));
            sim.fault(Fault::AddNode(id));
        }
    }
}

/// The tasks of every service, for failure messages.
fn dump(sim: &Sim) -> String {
    let mut out = String::new();
    for svc in sim.state.services() {
        out += &format!(
            "service {} v{} {:?} {:?}\n",
            svc.spec.name, svc.spec_version, svc.spec.mode, svc.update_status
        );
        for t in sim.state.tasks_of_service(&svc.id) {
            out += &format!(
                "  task {} slot {:?} node {:?} v{} desired {} state {} created {} err {:?}\n",
                t.id.short(),
                t.slot,
                t.node_id.as_ref().map(|n| n.as_str()),
                t.spec_version,
                t.desired_state,
                t.status.state,
                t.created_at.as_nanos() / 1_000_000_000,
                t.status.err
            );
        }
    }
    for n in sim.state.nodes() {
        out += &format!("node {} {:?} {:?}\n", n.id, n.status.state, n.spec.availability);
    }
    let tick = shoal_core::tick(&sim.state, sim.now, 1);
    let v = shoal_core::verify(&sim.state, tick.plan.clone());
    out += &format!("next plan: {:?}, wake {:?}, rejected {:?}\n", tick.plan, tick.wake_at, v.rejected);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Never overcommit; constraints, drains, ports and max-replicas hold at every step; no slot
    /// runs twice; and once faults stop, every service converges or explains why not.
    #[test]
    fn invariants_hold_under_faults(
        seed in any::<u64>(),
        nodes in prop::collection::vec(node_gen(), 1..10),
        services in prop::collection::vec(svc_gen(), 1..6),
        faults in prop::collection::vec((0usize..3, fault_gen()), 0..25),
    ) {
        let (mut sim, ids) = build(seed, &nodes, &services);
        for (gap, f) in &faults {
            for _ in 0..*gap {
                sim.step();
            }
            apply_fault(&mut sim, &ids, f);
        }
        let steps = sim.settle(600);
        prop_assert!(steps < 600, "did not settle");
        prop_assert!(sim.violations.is_empty(), "violations: {:?}", sim.violations);
        let converged = check_converged(&sim.state);
        prop_assert!(converged.is_empty(), "not converged: {:?}\n{}", converged, dump(&sim));
    }

    /// Incremental passes: the leader looks only at the services with a change since its last
    /// pass (and at everything when something scheduled falls due). On random clusters,
    /// workloads and faults — scaling, updates, removals, failing tasks, nodes going down,
    /// drained, relabelled, added — every such pass plans exactly what a full pass on the same
    /// state and seed plans (the simulator compares the two at each step and records a
    /// difference as a violation), and the comparison is not vacuous: scoped passes happen.
    #[test]
    fn scoped_passes_plan_what_full_passes_plan(
        seed in any::<u64>(),
        nodes in prop::collection::vec(node_gen(), 1..8),
        services in prop::collection::vec(svc_gen(), 2..8),
        faults in prop::collection::vec((0usize..4, fault_gen()), 1..25),
    ) {
        let (mut sim, ids) = build(seed, &nodes, &services);
        for (gap, f) in &faults {
            for _ in 0..*gap {
                sim.step();
            }
            apply_fault(&mut sim, &ids, f);
        }
        sim.settle(600);
        prop_assert!(sim.violations.is_empty(), "violations: {:?}", sim.violations);
        prop_assert!(
            sim.stats.steps < 10 || sim.stats.scoped_passes > 0,
            "{} of {} passes scoped", sim.stats.scoped_passes, sim.stats.steps
        );
    }

    /// Same inputs and seed give the same final state, byte for byte.
    #[test]
    fn same_seed_same_run(
        seed in any::<u64>(),
        nodes in prop::collection::vec(node_gen(), 1..8),
        services in prop::collection::vec(svc_gen(), 1..5),
        faults in prop::collection::vec((0usize..3, fault_gen()), 0..10),
    ) {
        let run = || {
            let (mut sim, ids) = build(seed, &nodes, &services);
            for (gap, f) in &faults {
                for _ in 0..*gap {
                    sim.step();
                }
                apply_fault(&mut sim, &ids, f);
            }
            sim.settle(60);
            sim.fingerprint()
        };
        prop_assert_eq!(run(), run());
    }

    /// Spread keeps equal nodes within one task of each other.
    #[test]
    fn spread_is_even_on_equal_nodes(seed in any::<u64>(), nodes in 1usize..30, replicas in 0u64..200) {
        let mut sim = Sim::new(SimConfig { nodes, seed, ..Default::default() });
        let mut spec = ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.command = vec!["app".into()];
        spec.mode = ServiceMode::Replicated { replicas };
        let id = sim.create_service(spec).expect("valid");
        sim.settle(20);
        let per = sim.running_per_node(&id);
        let counts: Vec<u64> = sim.state.nodes().map(|n| per.get(&n.id).copied().unwrap_or(0)).collect();
        let (max, min) = (counts.iter().max().copied().unwrap_or(0), counts.iter().min().copied().unwrap_or(0));
        prop_assert!(max - min <= 1, "counts {:?}", counts);
        prop_assert_eq!(counts.iter().sum::<u64>(), replicas);
    }

    /// A replicated service converges to exactly N running when capacity allows, and explains
    /// every missing replica when it does not.
    #[test]
    fn replicated_converges_or_explains(
        seed in any::<u64>(),
        nodes in 1usize..12,
        replicas in 0u64..60,
        mem_gb in 0u64..6,
    ) {
        let mut sim = Sim::new(SimConfig { nodes, seed, node_memory: 16 << 30, ..Default::default() });
        let mut spec = ServiceSpec { name: "web".into(), ..Default::default() };
        spec.task_template.command = vec!["app".into()];
        spec.task_template.resources.reservations.memory_bytes = mem_gb << 30;
        spec.mode = ServiceMode::Replicated { replicas };
        let id = sim.create_service(spec).expect("valid");
        sim.settle(20);
        let capacity = 16u64.checked_div(mem_gb).map_or(u64::MAX, |per_node| nodes as u64 * per_node);
        let want = replicas.min(capacity);
        prop_assert_eq!(sim.running(&id), want);
        let pending: Vec<String> = sim.state.tasks_of_service(&id)
            .filter(|t| t.status.state == TaskState::Pending)
            .map(|t| t.status.err.clone())
            .collect();
        prop_assert_eq!(pending.len() as u64, replicas - want);
        let expected = format!("no suitable node (insufficient memory on {nodes} node{})", if nodes == 1 { "" } else { "s" });
        prop_assert!(pending.iter().all(|e| *e == expected), "{:?}", pending);
    }
}

#[test]
fn global_is_exactly_one_per_eligible_node() {
    let mut sim = Sim::new(SimConfig { nodes: 12, zones: 3, ..Default::default() });
    let mut spec = ServiceSpec { name: "mon".into(), ..Default::default() };
    spec.task_template.command = vec!["mon".into()];
    spec.mode = ServiceMode::Global;
    spec.task_template.placement.constraints.push("node.labels.zone!=z2".into());
    let id = sim.create_service(spec).expect("valid");
    sim.settle(10);
    let per: BTreeMap<NodeId, u64> = sim.running_per_node(&id);
    assert_eq!(per.len(), 8);
    assert!(per.values().all(|&c| c == 1));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}
