//! Scheduled jobs over virtual time: the real state machine and brain with the simulator's clock.
//! Schedules fire on time and never in a burst after an outage; retries, overlap policies,
//! dependency rounds and manual runs behave as documented; and under random plan losses and
//! stale plans from a "previous leader" no run is lost, doubled, or started before its parents.

use proptest::prelude::*;
use shoal_sim::{Fault, Sim, SimConfig};
use shoal_state::{ClusterState, Command, StateError};
use shoal_types::{
    ConcurrencyPolicy, JobRun, JobStatus, RunCause, RunState, ScheduledJob, ServiceId, ServiceMode,
    ServiceSpec, TaskState, Timestamp, Trigger,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The simulator starts at 2023-11-14T22:13:20Z; this is the next whole minute.
const FIRST_MINUTE: u64 = 1_700_000_040;

fn job(name: &str, j: ScheduledJob, exits: &str) -> ServiceSpec {
    let mut s = ServiceSpec { name: name.into(), ..Default::default() };
    s.task_template.command = vec!["sim-exit".into(), exits.into()];
    s.mode = ServiceMode::Scheduled(Box::new(j));
    s
}

fn every(schedule: &str) -> ScheduledJob {
    ScheduledJob { schedule: schedule.into(), history: 1000, ..Default::default() }
}

fn after(parents: &[&str]) -> ScheduledJob {
    ScheduledJob {
        after: parents.iter().map(|p| p.to_string()).collect(),
        history: 1000,
        ..Default::default()
    }
}

fn status(sim: &Sim, id: &ServiceId) -> JobStatus {
    sim.state.service(id).and_then(|s| s.job.clone()).unwrap_or_default()
}

fn runs(sim: &Sim, id: &ServiceId, state: RunState) -> Vec<JobRun> {
    status(sim, id).runs.into_iter().filter(|r| r.state == state).collect()
}

fn sim() -> Sim {
    Sim::new(SimConfig { nodes: 3, ..Default::default() })
}

/// Steps the simulator for `secs` virtual seconds.
fn run_for(sim: &mut Sim, secs: u64) {
    for _ in 0..secs {
        sim.step();
    }
}

#[test]
fn a_cron_job_runs_once_per_minute_on_time() {
    let mut sim = sim();
    let id = sim.create_service(job("tick", every("* * * * *"), "0")).expect("valid");
    assert_eq!(status(&sim, &id).next_run_at, Some(Timestamp::from_secs(FIRST_MINUTE)));
    run_for(&mut sim, 10 * 60 + 30);
    let done = runs(&sim, &id, RunState::Succeeded);
    assert_eq!(done.len(), 10 + usize::from(false), "{:#?}", status(&sim, &id).runs);
    for (i, r) in done.iter().enumerate() {
        let due = Timestamp::from_secs(FIRST_MINUTE + 60 * i as u64);
        assert_eq!(r.scheduled_at, Some(due));
        // The simulator ticks once a virtual second: a run starts within it.
        assert!(r.started_at >= due && r.started_at.since(due) <= Duration::from_secs(1), "{r:?}");
        assert_eq!((r.cause, r.attempts, r.exit_code), (RunCause::Schedule, 1, Some(0)));
    }
    let st = status(&sim, &id);
    assert_eq!((st.success_count, st.error_count, st.skipped_count), (10, 0, 0));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn an_outage_skips_what_it_missed_and_runs_only_the_latest() {
    let mut sim = sim();
    let id = sim.create_service(job("tick", every("* * * * *"), "0")).expect("valid");
    let late = ScheduledJob { starting_deadline: Some(Duration::from_secs(20)), ..every("* * * * *") };
    let strict = sim.create_service(job("strict", late, "0")).expect("valid");
    // No manager for an hour and 70 s (the clock moves, nothing ticks): 61 occurrences fall due,
    // the latest 30 s ago.
    sim.now = sim.now.saturating_add(Duration::from_secs(3600 + 70));
    sim.step();
    let st = status(&sim, &id);
    assert_eq!(st.runs.len(), 2, "{:#?}", st.runs);
    assert_eq!(st.runs[0].state, RunState::Skipped);
    assert_eq!(st.runs[0].skipped, Some(60), "{:?}", st.runs[0]);
    assert!(st.runs[0].message.contains("missed 60"), "{}", st.runs[0].message);
    assert_eq!(st.runs[1].state, RunState::Running, "only the latest occurrence runs");
    // The latest is 30 s late: with a 20 s deadline it is skipped too.
    let st = status(&sim, &strict);
    assert_eq!(st.runs.iter().filter(|r| r.state == RunState::Running).count(), 0, "{:#?}", st.runs);
    let last = st.runs.last().expect("a record");
    assert!(last.message.contains("past the starting deadline of 20s"), "{}", last.message);
    assert_eq!(st.skipped_count, 61);
    // Afterwards both run on time again.
    let next = st.next_run_at.expect("next occurrence");
    run_for(&mut sim, 70);
    let st = status(&sim, &strict);
    assert!(
        st.runs.iter().any(|r| r.scheduled_at == Some(next) && r.state == RunState::Succeeded),
        "{:#?}",
        st.runs
    );
}

#[test]
fn failed_runs_are_retried_after_the_delay_then_given_up() {
    let mut sim = sim();
    let j = ScheduledJob { retries: 2, retry_delay: Duration::from_secs(10), ..every("*/5 * * * *") };
    let id = sim.create_service(job("flaky", j, "1")).expect("valid");
    run_for(&mut sim, 5 * 60 + 60);
    let failed = runs(&sim, &id, RunState::Failed);
    assert_eq!(failed.len(), 1, "{:#?}", status(&sim, &id).runs);
    let r = &failed[0];
    assert_eq!((r.attempts, r.exit_code), (3, Some(1)));
    assert!(r.message.contains("failed after 3 attempts: exit code 1"), "{}", r.message);
    // Three tasks in the run's slot, each started at least the delay after the previous ended.
    let mut tasks: Vec<_> = sim.state.tasks_of_service(&id).filter(|t| t.slot == Some(r.number)).collect();
    tasks.sort_by_key(|t| t.created_at);
    assert_eq!(tasks.len(), 3);
    for w in tasks.windows(2) {
        assert!(w[1].created_at.since(w[0].status.timestamp) >= Duration::from_secs(10));
        assert_eq!(w[0].desired_state, TaskState::Shutdown);
    }
    assert_eq!(status(&sim, &id).error_count, 1);
}

#[test]
fn overlap_is_forbidden_by_default_replaced_or_allowed_on_request() {
    // Runs take 90 s (the simulator's job runtime), the schedule fires every minute.
    let cfg = SimConfig { nodes: 3, job_runtime: Duration::from_secs(90), ..Default::default() };
    let mut sim = Sim::new(cfg);
    let forbid = sim.create_service(job("forbid", every("* * * * *"), "0")).expect("valid");
    let replace = ScheduledJob { concurrency: ConcurrencyPolicy::Replace, ..every("* * * * *") };
    let replace = sim.create_service(job("replace", replace, "0")).expect("valid");
    let allow = ScheduledJob { concurrency: ConcurrencyPolicy::Allow, ..every("* * * * *") };
    let allow = sim.create_service(job("allow", allow, "0")).expect("valid");
    run_for(&mut sim, 6 * 60 + 5);

    let st = status(&sim, &forbid);
    assert!(st.active_runs().count() <= 1);
    assert!(st.skipped_count >= 2, "{:#?}", st.runs);
    assert!(st.runs.iter().any(|r| r.state == RunState::Skipped && r.message.contains("concurrency forbid")));

    let st = status(&sim, &replace);
    assert!(st.runs.iter().filter(|r| r.state == RunState::Replaced).count() >= 4, "{:#?}", st.runs);
    assert_eq!(st.active_runs().count(), 1);
    assert_eq!(st.success_count, 0, "every run was replaced before it finished");

    let st = status(&sim, &allow);
    assert_eq!(st.active_runs().count(), 2, "{:#?}", st.runs);
    assert!(st.success_count >= 4);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_pipeline_runs_in_dependency_order() {
    let mut sim = sim();
    let extract = sim.create_service(job("extract", every("*/10 * * * *"), "0")).expect("valid");
    let t1 = sim.create_service(job("t1", after(&["extract"]), "0")).expect("valid");
    let t2 = sim.create_service(job("t2", after(&["extract"]), "0")).expect("valid");
    let load = sim.create_service(job("load", after(&["t1", "t2"]), "0")).expect("valid");
    run_for(&mut sim, 35 * 60);
    for id in [&extract, &t1, &t2, &load] {
        assert_eq!(status(&sim, id).success_count, 3, "{:#?}", status(&sim, id).runs);
    }
    let ended = |id: &ServiceId, n: u64| {
        status(&sim, id).runs.iter().find(|r| r.number == n).and_then(|r| r.finished_at).expect("finished")
    };
    for r in runs(&sim, &load, RunState::Succeeded) {
        assert_eq!(r.cause, RunCause::Parents);
        for (parent, id) in [("t1", &t1), ("t2", &t2)] {
            let n = r.parents[parent];
            assert!(
                ended(id, n) <= r.started_at,
                "load run {} started before {parent} run {n} ended",
                r.number
            );
        }
    }
    // The graph: every edge, no cycle.
    let mut children: Vec<_> =
        sim.state.job_children("extract").iter().map(|s| s.spec.name.clone()).collect();
    children.sort();
    assert_eq!(children, ["t1", "t2"]);
}

#[test]
fn a_failed_parent_skips_the_round_unless_soft_error_or_the_trigger_allows() {
    let mut sim = sim();
    sim.create_service(job("ok", every("*/5 * * * *"), "0")).expect("valid");
    sim.create_service(job("bad", every("*/5 * * * *"), "1")).expect("valid");
    let soft = ScheduledJob { soft_error: true, ..every("*/5 * * * *") };
    sim.create_service(job("soft", soft, "1")).expect("valid");
    let strict = sim.create_service(job("strict", after(&["ok", "bad"]), "0")).expect("valid");
    let tolerant = sim.create_service(job("tolerant", after(&["ok", "soft"]), "0")).expect("valid");
    let done = ScheduledJob { trigger: Trigger::AllDone, ..after(&["ok", "bad"]) };
    let all_done = sim.create_service(job("all-done", done, "0")).expect("valid");
    let any = ScheduledJob { trigger: Trigger::AnySucceeded, ..after(&["bad", "ok"]) };
    let any = sim.create_service(job("any", any, "0")).expect("valid");
    run_for(&mut sim, 11 * 60);

    let st = status(&sim, &strict);
    assert_eq!(st.success_count, 0, "{:#?}", st.runs);
    assert_eq!(st.skipped_count, 2);
    assert!(st.runs.iter().all(|r| r.message.starts_with("parent failed: bad (run")), "{:#?}", st.runs);
    for id in [&tolerant, &all_done, &any] {
        let st = status(&sim, id);
        assert_eq!((st.success_count, st.skipped_count), (2, 0), "{:#?}", st.runs);
    }
}

#[test]
fn manual_runs_start_at_once_and_suspend_stops_the_schedule() {
    let mut sim = sim();
    let id = sim.create_service(job("nightly", every("0 3 * * *"), "0")).expect("valid");
    let child = sim.create_service(job("report", after(&["nightly"]), "0")).expect("valid");
    sim.apply_command(Command::RunJob { id: id.clone() }).expect("run");
    run_for(&mut sim, 10);
    let st = status(&sim, &id);
    assert_eq!(st.runs.len(), 1);
    assert_eq!((st.runs[0].cause, st.runs[0].state), (RunCause::Manual, RunState::Succeeded));
    assert_eq!(runs(&sim, &child, RunState::Succeeded).len(), 1, "a manual run is a round for the children");
    // Suspended: neither the schedule nor the parents start runs; resuming does not catch up.
    sim.update_service(&id, |s| {
        if let ServiceMode::Scheduled(j) = &mut s.mode {
            j.schedule = "* * * * *".into();
            j.suspend = true;
        }
    })
    .expect("suspend");
    run_for(&mut sim, 5 * 60);
    assert_eq!(status(&sim, &id).runs.len(), 1);
    sim.update_service(&id, |s| {
        if let ServiceMode::Scheduled(j) = &mut s.mode {
            j.suspend = false;
        }
    })
    .expect("resume");
    let st = status(&sim, &id);
    assert!(st.next_run_at.expect("next") > sim.now, "resuming starts from now");
    run_for(&mut sim, 61);
    assert_eq!(status(&sim, &id).runs.len(), 2, "{:#?}", status(&sim, &id).runs);
    assert_eq!(status(&sim, &id).skipped_count, 0);
}

#[test]
fn the_graph_is_checked_when_it_changes() {
    let mut sim = sim();
    sim.create_service(job("a", every("@hourly"), "0")).expect("valid");
    let b = sim.create_service(job("b", after(&["a"]), "0")).expect("valid");
    let c = sim.create_service(job("c", after(&["b"]), "0")).expect("valid");
    let e = sim.create_service(job("x", after(&["nope"]), "0")).expect_err("unknown parent");
    assert!(e.to_string().contains("unknown parent job \"nope\""), "{e}");
    let mut svc = ServiceSpec { name: "web".into(), ..Default::default() };
    svc.task_template.command = vec!["app".into()];
    sim.create_service(svc).expect("a service");
    let e = sim.create_service(job("y", after(&["web"]), "0")).expect_err("not a job");
    assert!(e.to_string().contains("\"web\" is a replicated service, not a scheduled job"), "{e}");
    // b after c closes b -> c -> b.
    let e = sim
        .update_service(&b, |s| {
            if let ServiceMode::Scheduled(j) = &mut s.mode {
                j.after = vec!["a".into(), "c".into()];
            }
        })
        .expect_err("cycle");
    assert!(e.to_string().contains("cycle: b -> c -> b"), "{e}");
    // A parent cannot go (or be renamed) while children run after it.
    let e = sim.remove_service(&b).expect_err("has children");
    assert!(matches!(e, StateError::Conflict(_)) && e.to_string().contains("(c)"), "{e}");
    let e = sim.update_service(&b, |s| s.name = "b2".into()).expect_err("rename");
    assert!(e.to_string().contains("cannot rename job \"b\""), "{e}");
    sim.remove_service(&c).expect("a leaf goes");
    sim.remove_service(&b).expect("then its parent");
    // Schedules and time zones are checked too.
    for (sched, tz, want) in [
        ("61 * * * *", "", "minute"),
        ("0 0 30 2 *", "", "never"),
        ("@daily", "Mars/Base", "Mars/Base"),
        ("R5/2026-01-01T00:00:00Z", "", "R[n]/START/PERIOD"),
    ] {
        let j = ScheduledJob { schedule: sched.into(), time_zone: tz.into(), ..Default::default() };
        let e = sim.create_service(job("bad", j, "0")).expect_err(sched);
        assert!(e.to_string().contains(want), "{sched}: {e}");
    }
}

// ---- under a changing leadership ------------------------------------------------------------

/// Checks what must hold whatever happened: run numbers unique and each run's tasks in its slot,
/// never two live tasks for one run, a child's run only after the parent runs it names ended (and,
/// for all-succeeded, succeeded), and each parent round consumed once.
fn check_runs(state: &ClusterState) -> Result<(), String> {
    for svc in state.services() {
        let Some(job) = svc.spec.mode.scheduled() else { continue };
        let st = svc.job.clone().unwrap_or_default();
        let numbers: BTreeSet<u64> = st.runs.iter().map(|r| r.number).collect();
        if numbers.len() != st.runs.len() {
            return Err(format!("{}: duplicate run numbers", svc.spec.name));
        }
        let mut live: BTreeMap<u64, usize> = BTreeMap::new();
        for t in state.tasks_of_service(&svc.id) {
            let slot = t.slot.ok_or("job task without a slot")?;
            if t.is_live() {
                *live.entry(slot).or_default() += 1;
            }
            if slot >= st.next_number {
                return Err(format!(
                    "{}: task in slot {slot} beyond next run {}",
                    svc.spec.name, st.next_number
                ));
            }
        }
        if let Some((slot, n)) = live.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{}: run {slot} has {n} live tasks", svc.spec.name));
        }
        // Every live task is the current attempt of a run in progress.
        for t in
            state.tasks_of_service(&svc.id).filter(|t| t.is_live() && t.desired_state == TaskState::Running)
        {
            let owner = st.runs.iter().find(|r| r.task_id.as_ref() == Some(&t.id));
            if owner.is_none_or(|r| r.state != RunState::Running) {
                return Err(format!(
                    "{}: live task {} in slot {:?} belongs to no run in progress",
                    svc.spec.name, t.id, t.slot
                ));
            }
        }
        let mut last_seen: BTreeMap<&str, u64> = BTreeMap::new();
        for r in st.runs.iter().filter(|r| r.cause == RunCause::Parents && r.state != RunState::Skipped) {
            for (p, n) in &r.parents {
                let parent = state.service_by_name(p).ok_or("parent gone")?;
                let pr =
                    parent.job.as_ref().and_then(|j| j.run(*n)).ok_or(format!("{p} run {n} not kept"))?;
                let ended = pr.finished_at.ok_or(format!(
                    "{} run {} follows {p} run {n}, still running",
                    svc.spec.name, r.number
                ))?;
                if ended > r.started_at {
                    return Err(format!(
                        "{} run {} started before {p} run {n} ended",
                        svc.spec.name, r.number
                    ));
                }
                if job.trigger == Trigger::AllSucceeded && pr.state != RunState::Succeeded {
                    return Err(format!("{} run {} follows failed {p} run {n}", svc.spec.name, r.number));
                }
                if last_seen.get(p.as_str()).is_some_and(|prev| prev >= n) {
                    return Err(format!("{} ran twice for {p} run {n}", svc.spec.name));
                }
                last_seen.insert(p, *n);
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Disruption {
    /// The leader computed a plan and died before committing it.
    LostPlan,
    /// An old leader's plan, computed `age` steps ago, arrives late.
    StalePlan { age: usize },
    /// No leader for a while (the clock moves on).
    Outage { secs: u64 },
}

fn disruption() -> impl Strategy<Value = Disruption> {
    prop_oneof![
        Just(Disruption::LostPlan),
        (1usize..6).prop_map(|age| Disruption::StalePlan { age }),
        (1u64..400).prop_map(|secs| Disruption::Outage { secs }),
    ]
}

/// A random DAG of up to 8 jobs: job i > 0 runs after up to 3 earlier jobs, or on a schedule.
fn dag() -> impl Strategy<Value = Vec<(Vec<usize>, u8, String)>> {
    prop::collection::vec(
        (
            prop::collection::vec(0usize..8, 0..3),
            0u8..4,
            prop::sample::select(vec!["0", "1", "0,1", "0,0,1"]).prop_map(String::from),
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_run_is_lost_doubled_or_early_under_leader_changes(
        seed in any::<u64>(),
        jobs in dag(),
        disruptions in prop::collection::vec((5usize..90, disruption()), 0..12),
    ) {
        let mut sim = Sim::new(SimConfig { nodes: 3, seed, job_runtime: Duration::from_secs(7), ..Default::default() });
        let schedules = ["* * * * *", "*/2 * * * *", "R/2023-11-14T22:13:30Z/PT45S", "*/3 * * * *"];
        let mut ids = Vec::new();
        for (i, (parents, sched, exits)) in jobs.iter().enumerate() {
            let mut parents: Vec<String> = parents.iter().filter(|p| **p < i).map(|p| format!("j{p}")).collect();
            parents.sort();
            parents.dedup();
            let mut j = if parents.is_empty() {
                every(schedules[*sched as usize % schedules.len()])
            } else {
                ScheduledJob { after: parents, history: 1000, ..Default::default() }
            };
            j.retries = u32::from(*sched % 2);
            j.trigger = [Trigger::AllSucceeded, Trigger::AllDone, Trigger::AnySucceeded][*sched as usize % 3];
            if j.after.is_empty() { j.trigger = Trigger::AllSucceeded; }
            ids.push(sim.create_service(job(&format!("j{i}"), j, exits)).expect("valid"));
        }
        let created = sim.now;
        // Counters only move forward, whatever plan arrives late.
        let mut seen: BTreeMap<ServiceId, (u64, u64, u64)> = BTreeMap::new();
        let mut monotonic = |state: &ClusterState| -> Result<(), String> {
            for svc in state.services() {
                let st = svc.job.clone().unwrap_or_default();
                let now = (st.next_number, st.finished, st.success_count + st.error_count + st.skipped_count);
                let before = seen.insert(svc.id.clone(), now).unwrap_or_default();
                if now.0 < before.0 || now.1 < before.1 || now.2 < before.2 {
                    return Err(format!("{}: record went back from {before:?} to {now:?}", svc.spec.name));
                }
            }
            Ok(())
        };
        let mut old_plans: Vec<(usize, shoal_core::Tick)> = Vec::new();
        let mut other_leader = seed;
        for (gap, d) in &disruptions {
            for _ in 0..*gap {
                other_leader = other_leader.wrapping_add(0x9e37_79b9_7f4a_7c15);
                old_plans.push((0, shoal_core::tick(&sim.state, sim.now, other_leader)));
                sim.step();
                prop_assert!(check_runs(&sim.state).is_ok(), "{:?}", check_runs(&sim.state));
                prop_assert!(monotonic(&sim.state).is_ok(), "{:?}", monotonic(&sim.state));
            }
            match d {
                Disruption::LostPlan => {
                    let _ = shoal_core::tick(&sim.state, sim.now, seed);
                    sim.now = sim.now.saturating_add(Duration::from_secs(1));
                }
                Disruption::StalePlan { age } => {
                    if let Some((_, old)) = old_plans.iter().rev().nth(*age).cloned() {
                        let v = shoal_core::verify(&sim.state, old.plan);
                        sim.apply_command(Command::ApplyPlan { plan: v.plan }).expect("apply");
                    }
                }
                Disruption::Outage { secs } => sim.now = sim.now.saturating_add(Duration::from_secs(*secs)),
            }
            prop_assert!(check_runs(&sim.state).is_ok(), "{:?}", check_runs(&sim.state));
            prop_assert!(monotonic(&sim.state).is_ok(), "{:?}", monotonic(&sim.state));
            if old_plans.len() > 10 { old_plans.drain(..old_plans.len() - 10); }
        }
        run_for(&mut sim, 120);
        prop_assert!(check_runs(&sim.state).is_ok(), "{:?}", check_runs(&sim.state));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        // No lost occurrence: every occurrence of a root's schedule up to the last one handled
        // was either run or recorded as skipped.
        for (i, id) in ids.iter().enumerate() {
            let svc = sim.state.service(id).expect("job");
            let j = svc.spec.mode.scheduled().expect("scheduled");
            if j.schedule.is_empty() { continue; }
            let st = svc.job.clone().expect("status");
            let Some(last) = st.last_scheduled_at else { continue };
            let s = shoal_types::schedule::Schedule::parse(&j.schedule).expect("schedule");
            let (_, count) = s.occurrences_between(created, last, "", 1_000_000).expect("count");
            let accounted: u64 = st.runs.iter().filter(|r| r.cause == RunCause::Schedule)
                .map(|r| if r.state == RunState::Skipped { r.skipped.unwrap_or(1) } else { 1 }).sum();
            prop_assert_eq!(accounted, count, "job j{}: {:#?}", i, st.runs);
            // And nothing is overdue by more than a tick after the last step.
            prop_assert!(st.next_run_at.is_none_or(|n| n > sim.now.saturating_sub(Duration::from_secs(2))));
        }
    }
}

#[test]
fn a_node_that_is_down_briefly_keeps_its_run_a_lost_one_is_retried_elsewhere() {
    // Runs take 20 s; the job may retry once.
    let cfg = SimConfig { nodes: 3, zones: 0, job_runtime: Duration::from_secs(20), ..Default::default() };
    let mut sim = Sim::new(cfg);
    let j = ScheduledJob { retries: 1, ..every("*/5 * * * *") };
    let id = sim.create_service(job("backup", j, "0")).expect("valid");
    let running_node = |sim: &Sim| {
        sim.state
            .tasks_of_service(&id)
            .find(|t| t.status.state == TaskState::Running)
            .and_then(|t| t.node_id.clone())
    };
    let first = loop {
        sim.step();
        if let Some(n) = running_node(&sim) {
            break n;
        }
    };
    // Down for 10 s (a busy node that missed its heartbeats), then back: the run goes on and
    // succeeds with its one attempt.
    sim.fault(Fault::NodeDown(first.clone()));
    run_for(&mut sim, 10);
    sim.fault(Fault::NodeUp(first.clone()));
    run_for(&mut sim, 30);
    let st = status(&sim, &id);
    assert_eq!(st.runs.len(), 1, "{:#?}", st.runs);
    assert_eq!((st.runs[0].state, st.runs[0].attempts), (RunState::Succeeded, 1), "{:#?}", st.runs);

    // The next run's node stays down: after the grace the attempt fails and runs elsewhere.
    let second = loop {
        sim.step();
        if status(&sim, &id).runs.len() == 2 {
            if let Some(n) = running_node(&sim) {
                break n;
            }
        }
    };
    sim.fault(Fault::NodeDown(second.clone()));
    run_for(&mut sim, shoal_core::NODE_LOSS_GRACE.as_secs() - 5);
    assert_eq!(status(&sim, &id).runs[1].attempts, 1, "not yet: within the grace");
    run_for(&mut sim, 40);
    let r = status(&sim, &id).runs[1].clone();
    assert_eq!((r.state, r.attempts), (RunState::Succeeded, 2), "{r:#?}");
    let retried_on = sim
        .state
        .tasks_of_service(&id)
        .filter(|t| t.slot == Some(r.number) && t.status.state == TaskState::Complete)
        .filter_map(|t| t.node_id.clone())
        .next();
    assert!(retried_on.is_some_and(|n| n != second), "retried on another node");
}
