//! Scheduler and reconciliation benchmarks (criterion). Results and the reproduce command are
//! recorded in BENCHMARKS.md.
//!
//! - spread: place 100,000 tasks on 10,000 nodes with spread, one constraint and reservations
//!   (scheduler alone, and a whole controller pass that also creates the tasks);
//! - binpack: place 100,000 tasks on 1,000 nodes;
//! - reconcile: a 10,000-task service on 1,000 nodes loses 10% of its nodes; one controller pass
//!   moves their tasks;
//! - incremental: 100,000 running tasks in 1,000 services; a full pass against the pass over the
//!   one service whose task failed.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal_core::rng::Rng;
use shoal_core::{tick, tick_scoped, verify, Scheduler, Scope};
use shoal_state::{ClusterState, Command, Plan, TaskStatusReport};
use shoal_types::{
    Node, NodeId, NodeState, Resources, Service, ServiceId, ServiceMode, ServiceSpec, Strategy, TaskState,
    TaskStatus, Timestamp, NANO_CPUS_PER_CPU,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

const NOW: Timestamp = Timestamp(1_700_000_000_000_000_000);

fn cluster(nodes: usize, zones: usize) -> ClusterState {
    let mut s = ClusterState::new();
    for i in 0..nodes {
        let mut n = Node::test(&format!("node-{i:06}"), &format!("host-{i}"));
        n.description.resources =
            Resources { nano_cpus: 8 * NANO_CPUS_PER_CPU, memory_bytes: 16 << 30, ..Default::default() };
        let id = n.id.clone();
        let mut spec = n.spec.clone();
        spec.labels.insert("zone".into(), format!("z{}", i % zones));
        s.apply(NOW, Command::RegisterNode { node: Box::new(n) }).expect("register");
        s.apply(NOW, Command::UpdateNodeSpec { id, expected_version: None, spec }).expect("spec");
    }
    s
}

fn service(
    s: &mut ClusterState,
    replicas: u64,
    strategy: Strategy,
    constraint: Option<&str>,
    mem: u64,
) -> ServiceId {
    let mut spec = ServiceSpec { name: "bench".into(), ..Default::default() };
    spec.task_template.command = vec!["app".into()];
    spec.task_template.resources.reservations.memory_bytes = mem;
    spec.task_template.resources.reservations.nano_cpus = NANO_CPUS_PER_CPU / 20;
    spec.task_template.placement.strategy = strategy;
    spec.task_template.placement.constraints.extend(constraint.map(str::to_string));
    spec.mode = ServiceMode::Replicated { replicas };
    let id = ServiceId::new("bench-service");
    let svc = Service::new(id.clone(), spec);
    s.apply(NOW, Command::CreateService { service: Box::new(svc) }).expect("service");
    id
}

/// Commits the orchestrator's new tasks unplaced, so the scheduler can be measured alone.
fn with_pending_tasks(mut s: ClusterState) -> ClusterState {
    let t = tick(&s, NOW, 1);
    let mut tasks = t.plan.create_tasks;
    for task in &mut tasks {
        task.node_id = None;
        task.status.state = TaskState::Pending;
    }
    s.apply(NOW, Command::ApplyPlan { plan: Plan { create_tasks: tasks, ..Default::default() } })
        .expect("plan");
    s
}

fn schedule_all(s: &ClusterState) -> usize {
    let mut sched = Scheduler::new(s);
    let mut rng = Rng::new(42);
    let d = sched.schedule(s.tasks_needing_placement(), &mut rng);
    d.iter().filter(|d| d.outcome.is_ok()).count()
}

fn spread(c: &mut Criterion) {
    let mut base = cluster(10_000, 10);
    service(&mut base, 100_000, Strategy::Spread, Some("node.labels.zone!=z9"), 64 << 20);
    let pending = with_pending_tasks(base.clone());
    assert_eq!(schedule_all(&pending), 100_000);

    let mut g = c.benchmark_group("spread_100k_tasks_10k_nodes");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("scheduler", |b| b.iter(|| black_box(schedule_all(&pending))));
    g.bench_function("controller_pass", |b| {
        b.iter(|| black_box(tick(&base, NOW, 7).plan.create_tasks.len()))
    });
    g.finish();
}

fn binpack(c: &mut Criterion) {
    let mut base = cluster(1_000, 1);
    service(&mut base, 100_000, Strategy::Binpack, None, 100 << 20);
    let pending = with_pending_tasks(base);
    assert_eq!(schedule_all(&pending), 100_000);
    let mut g = c.benchmark_group("binpack_100k_tasks_1k_nodes");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("scheduler", |b| b.iter(|| black_box(schedule_all(&pending))));
    g.finish();
}

/// A 10,000-task service running on 1,000 nodes, then 100 nodes down.
fn after_node_loss() -> ClusterState {
    let mut s = cluster(1_000, 1);
    service(&mut s, 10_000, Strategy::Spread, None, 64 << 20);
    let t = tick(&s, NOW, 1);
    let v = verify(&s, t.plan);
    s.apply(NOW, Command::ApplyPlan { plan: v.plan }).expect("plan");
    let mut by_node: BTreeMap<NodeId, Vec<TaskStatusReport>> = BTreeMap::new();
    for t in s.tasks() {
        if let Some(n) = &t.node_id {
            let status = TaskStatus { state: TaskState::Running, ..t.status.clone() };
            by_node.entry(n.clone()).or_default().push(TaskStatusReport { task_id: t.id.clone(), status });
        }
    }
    for (node_id, reports) in by_node {
        s.apply(NOW, Command::ReportTaskStatus { node_id, reports }).expect("report");
    }
    for i in (0..1_000).step_by(10) {
        let id = NodeId::new(format!("node-{i:06}"));
        s.apply(NOW, Command::SetNodeStatus { id, state: NodeState::Down, message: String::new() })
            .expect("down");
    }
    s
}

fn reconcile(c: &mut Criterion) {
    let s = after_node_loss();
    let moved = tick(&s, NOW, 3).plan.create_tasks.len();
    assert_eq!(moved, 1_000);
    let mut g = c.benchmark_group("reconcile_10k_tasks_lose_10pct_of_1k_nodes");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("controller_pass", |b| {
        b.iter_batched(|| (), |()| black_box(tick(&s, NOW, 3).plan.len()), BatchSize::SmallInput)
    });
    g.finish();
}

/// 1,000 replicated services of 100 tasks each, all running on 1,000 nodes.
fn steady_100k() -> ClusterState {
    let mut s = cluster(1_000, 1);
    for i in 0..1_000 {
        let mut spec = ServiceSpec { name: format!("svc-{i:04}"), ..Default::default() };
        spec.task_template.command = vec!["app".into()];
        spec.task_template.resources.reservations.memory_bytes = 16 << 20;
        spec.mode = ServiceMode::Replicated { replicas: 100 };
        let svc = Service::new(ServiceId::new(format!("svc-{i:04}")), spec);
        s.apply(NOW, Command::CreateService { service: Box::new(svc) }).expect("service");
    }
    let t = tick(&s, NOW, 1);
    let v = verify(&s, t.plan);
    s.apply(NOW, Command::ApplyPlan { plan: v.plan }).expect("plan");
    report_running(&mut s);
    s
}

fn report_running(s: &mut ClusterState) {
    let mut by_node: BTreeMap<NodeId, Vec<TaskStatusReport>> = BTreeMap::new();
    for t in s.tasks() {
        if let (Some(n), false) = (&t.node_id, t.status.state == TaskState::Running) {
            let status = TaskStatus { state: TaskState::Running, ..t.status.clone() };
            by_node.entry(n.clone()).or_default().push(TaskStatusReport { task_id: t.id.clone(), status });
        }
    }
    for (node_id, reports) in by_node {
        s.apply(NOW, Command::ReportTaskStatus { node_id, reports }).expect("report");
    }
}

/// A pass with nothing to do, a full one and one over the single service whose task just failed
/// (the leader's incremental pass), at 100,000 running tasks.
fn incremental(c: &mut Criterion) {
    let mut s = steady_100k();
    assert_eq!(s.tasks().filter(|t| t.status.state == TaskState::Running).count(), 100_000);
    assert!(tick(&s, NOW, 5).plan.is_empty(), "a settled cluster has nothing to do");
    // One task fails: its service, and only it, is in the next pass's scope.
    let failed = s.tasks().next().expect("a task").clone();
    let node_id = failed.node_id.clone().expect("placed");
    let status = TaskStatus { state: TaskState::Failed, exit_code: Some(1), ..failed.status.clone() };
    let applied = s
        .apply(
            NOW,
            Command::ReportTaskStatus {
                node_id,
                reports: vec![TaskStatusReport { task_id: failed.id, status }],
            },
        )
        .expect("report");
    let mut scope = Scope::none();
    for e in &applied.events {
        scope.add(&e.object);
    }
    assert_eq!(scope, Scope::Services([failed.service_id].into_iter().collect()));
    let later = NOW.saturating_add(Duration::from_secs(60));
    let full = tick(&s, later, 9);
    assert_eq!(full.plan.create_tasks.len(), 1, "the failed task is replaced");
    assert_eq!(tick_scoped(&s, later, 9, &scope).plan, full.plan);
    let mut g = c.benchmark_group("steady_100k_tasks_1k_services_1k_nodes");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    g.bench_function("full_pass", |b| b.iter(|| black_box(tick(&s, later, 9).plan.len())));
    g.bench_function("scoped_pass_one_failed_task", |b| {
        b.iter(|| black_box(tick_scoped(&s, later, 9, &scope).plan.len()))
    });
    g.finish();
}

criterion_group!(benches, spread, binpack, reconcile, incremental);
criterion_main!(benches);
