//! Scheduled-job benchmarks (criterion); results and the command in BENCHMARKS.md.
//!
//! - schedule_eval: the next occurrence of 100,000 schedules (cron and ISO 8601, in UTC and
//!   DST zones), parsed once;
//! - tick_idle: a controller pass over 100,000 jobs of which none is due (the steady state);
//! - tick_due: the pass in which 1,000 of 100,000 jobs fall due (runs and tasks created).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal_core::tick;
use shoal_state::{ClusterState, Command};
use shoal_types::schedule::Schedule;
use shoal_types::{
    Node, Resources, ScheduledJob, Service, ServiceId, ServiceMode, ServiceSpec, Timestamp, NANO_CPUS_PER_CPU,
};
use std::hint::black_box;
use std::time::Duration;

/// 2023-11-14T22:13:20Z.
const NOW: Timestamp = Timestamp(1_700_000_000_000_000_000);

const SCHEDULES: [(&str, &str); 8] = [
    ("*/5 * * * *", ""),
    ("0 3 * * *", "Europe/Berlin"),
    ("30 2 * * 1-5", "America/New_York"),
    ("@hourly", ""),
    ("15,45 */2 1-15 * *", "Asia/Kolkata"),
    ("0 0 29 2 *", ""),
    ("R/2023-01-01T00:00:00Z/PT1H", ""),
    ("R/2023-03-26T01:30:00/P1D", "Europe/Berlin"),
];

fn schedule_eval(c: &mut Criterion) {
    let parsed: Vec<(Schedule, &str)> = (0..100_000)
        .map(|i| {
            let (s, tz) = SCHEDULES[i % SCHEDULES.len()];
            (Schedule::parse(s).expect("schedule"), tz)
        })
        .collect();
    let mut g = c.benchmark_group("jobs");
    g.sample_size(10);
    g.throughput(Throughput::Elements(parsed.len() as u64));
    g.bench_function("schedule_eval_100k", |b| {
        b.iter(|| {
            for (i, (s, tz)) in parsed.iter().enumerate() {
                let after = Timestamp(NOW.0 + (i as u64 % 3600) * 1_000_000_000);
                black_box(s.next_after(after, tz).expect("evaluates"));
            }
        })
    });
    g.finish();
}

/// 3 nodes and `jobs` scheduled jobs, `due` of which fall due one minute after NOW.
fn cluster(jobs: usize, due: usize) -> ClusterState {
    let mut s = ClusterState::new();
    for i in 0..3 {
        let mut n = Node::test(&format!("node-{i}"), &format!("host-{i}"));
        n.description.resources =
            Resources { nano_cpus: 64 * NANO_CPUS_PER_CPU, memory_bytes: 256 << 30, ..Default::default() };
        s.apply(NOW, Command::RegisterNode { node: Box::new(n) }).expect("register");
    }
    for i in 0..jobs {
        let schedule = if i < due { "14 22 * * *" } else { "0 3 * * *" };
        let mut spec = ServiceSpec { name: format!("job-{i:06}"), ..Default::default() };
        spec.task_template.command = vec!["true".into()];
        spec.mode = ServiceMode::Scheduled(Box::new(ScheduledJob {
            schedule: schedule.into(),
            ..Default::default()
        }));
        let svc = Service::new(ServiceId::new(format!("j{i:024}")), spec);
        s.apply(NOW, Command::CreateService { service: Box::new(svc) }).expect("create");
    }
    s
}

fn ticks(c: &mut Criterion) {
    let mut g = c.benchmark_group("jobs");
    g.sample_size(10);
    let idle = cluster(100_000, 0);
    g.bench_function("tick_idle_100k_jobs", |b| b.iter(|| black_box(tick(&idle, NOW, 7))));
    let due = cluster(100_000, 1_000);
    let at = NOW.saturating_add(Duration::from_secs(60));
    g.bench_function("tick_1k_due_of_100k_jobs", |b| {
        b.iter_batched(|| (), |()| black_box(tick(&due, at, 7)), BatchSize::SmallInput)
    });
    let t = tick(&due, at, 7);
    assert_eq!(t.plan.create_tasks.len(), 1_000, "every due job starts a run");
    g.finish();
}

criterion_group!(benches, schedule_eval, ticks);
criterion_main!(benches);
