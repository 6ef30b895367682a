//! Memory of the replicated state per task: a state with 1,000 nodes and one service of N tasks
//! (the load test's template: `--driver process --env ROUND=1 sleep 1d`), each plan going through
//! JSON as it does through the Raft log. Prints the live heap bytes per task (counted by a
//! wrapping allocator) and the JSON size of one task. Recorded in BENCHMARKS.md:
//! `cargo run --release -p shoal-sim --example state_memory [TASKS]`.

use shoal_core::tick;
use shoal_state::{ClusterState, Command, Plan};
use shoal_types::{
    Node, Resources, Service, ServiceId, ServiceMode, ServiceSpec, Timestamp, NANO_CPUS_PER_CPU,
};

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

const NOW: Timestamp = Timestamp(1_700_000_000_000_000_000);

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Applies `tasks` as the log delivers them: encoded, then decoded into fresh objects, in the
/// manager's parts of 2,048.
fn create_through_the_log(s: &mut ClusterState, tasks: &[shoal_types::Task]) {
    for part in tasks.chunks(2_048) {
        let plan = Plan { create_tasks: part.to_vec(), ..Default::default() };
        let json = serde_json::to_vec(&Command::ApplyPlan { plan }).expect("json");
        s.apply(NOW, serde_json::from_slice(&json).expect("decode")).expect("apply");
    }
}

/// A service like the load test's (`--driver process --env ROUND=1 sleep 1d`), created through
/// the log.
fn create_service(s: &mut ClusterState, id: String, name: String, replicas: u64) {
    let mut spec = ServiceSpec { name, ..Default::default() };
    spec.task_template.driver = Some("process".into());
    spec.task_template.command = vec!["sleep".into(), "1d".into()];
    spec.task_template.env.insert("ROUND".into(), "1".into());
    spec.mode = ServiceMode::Replicated { replicas };
    let svc = Service::new(ServiceId::new(id), spec);
    let json = serde_json::to_vec(&Command::CreateService { service: Box::new(svc) }).expect("json");
    s.apply(NOW, serde_json::from_slice(&json).expect("decode")).expect("service");
}

/// The live heap's growth since `region` began.
fn heap_grown(region: &Region<'_, System>) -> i64 {
    let st = region.change();
    st.bytes_allocated as i64 - st.bytes_deallocated as i64
}

fn main() {
    let tasks: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut s = ClusterState::new();
    for i in 0..1_000 {
        let mut n = Node::test(&format!("node-{i:06}"), &format!("host-{i}"));
        n.description.resources =
            Resources { nano_cpus: 64 * NANO_CPUS_PER_CPU, memory_bytes: 256 << 30, ..Default::default() };
        s.apply(NOW, Command::RegisterNode { node: Box::new(n) }).expect("register");
    }
    create_service(&mut s, "load-service".into(), "load".into(), tasks);
    let region = Region::new(GLOBAL);
    let t = tick(&s, NOW, 1);
    let created = t.plan.create_tasks.len();
    let one = serde_json::to_vec(&t.plan.create_tasks[0]).expect("json").len();
    create_through_the_log(&mut s, &t.plan.create_tasks);
    drop(t);
    let grown = heap_grown(&region);
    println!(
        "{created} tasks: heap +{:.1} MiB, {:.0} bytes per task; one task is {one} bytes of JSON; size_of Task {} bytes, TaskTemplate {} bytes",
        grown as f64 / (1 << 20) as f64,
        grown as f64 / created as f64,
        std::mem::size_of::<shoal_types::Task>(),
        std::mem::size_of::<shoal_types::TaskTemplate>(),
    );

    // Per service: 10,000 services of one task each, created through the log the same way.
    let region = Region::new(GLOBAL);
    let services = 10_000;
    for i in 0..services {
        create_service(&mut s, format!("service-{i:06}"), format!("svc-{i}"), 1);
    }
    let t = tick(&s, NOW, 2);
    create_through_the_log(&mut s, &t.plan.create_tasks);
    drop(t);
    let grown = heap_grown(&region);
    println!(
        "{services} services of one task each: heap +{:.1} MiB, {:.0} bytes per service and its task",
        grown as f64 / (1 << 20) as f64,
        grown as f64 / services as f64
    );
}
