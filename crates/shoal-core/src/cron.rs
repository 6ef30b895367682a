//! Scheduled jobs: when a run starts, how it is retried, what its children do.
//!
//! Everything is decided from the job's record ([`JobStatus`]), its tasks and `now`, and the new
//! record goes into the plan next to the tasks it creates (`Plan::job_updates`); verification
//! commits both or neither. So a manager that takes over continues from the record: a run is
//! never lost (its occurrence is still due in the record) nor doubled (the record that started
//! it commits with its task).
//!
//! - **Schedule**: when `next_run_at` is due, every occurrence up to `now` is handled at once:
//!   the latest starts (unless it is later than `starting_deadline`), the earlier ones are
//!   recorded as one skip — an outage never causes a burst.
//! - **Concurrency**: `forbid` skips an occurrence while a run is active (a dependent job waits
//!   instead), `replace` stops the active runs first, `allow` starts another.
//! - **Retries**: a failed attempt (non-zero exit, rejected, a node down for longer than
//!   [`NODE_LOSS_GRACE`], drained or removed) is retried after `retry_delay` while attempts ≤
//!   `retries`, in the same slot.
//! - **Parents** (`after`): a round is complete when every parent finished a run since this job
//!   last ran or skipped; `trigger` decides whether the round runs (all succeeded, all done) or
//!   is skipped naming the failed parent; `any-succeeded` runs as soon as one parent succeeded.
//!   A failure of a `soft_error` parent counts as success.
//! - **Manual** runs (`job run`) start at once, whatever the concurrency policy.
//! - **History**: `history` runs are kept with their tasks; older runs' tasks are removed.

use crate::orchestrator::{node_problem, Slot, SlotKey};
use crate::Ctx;
use shoal_types::{
    job::next_occurrence, schedule::Schedule, ConcurrencyPolicy, Constraint, JobRun, JobStatus, NodeState,
    RunCause, RunOutcome, RunState, ScheduledJob, Service, ServiceId, Task, TaskState, Timestamp, Trigger,
};
use std::collections::{BTreeMap, BTreeSet};

/// Occurrences counted one by one when a job catches up (beyond this, "at least").
const MISSED_COUNT_CAP: u64 = 10_000;

/// How long a run's node may be down before its attempt counts as failed (and is retried
/// elsewhere). Shorter outages (a node too busy to heartbeat, a brief partition) end with the
/// task's own outcome instead of a second execution.
pub const NODE_LOSS_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn scheduled(
    ctx: &mut Ctx<'_>,
    svc: &Service,
    job: &ScheduledJob,
    slots: &BTreeMap<SlotKey, Slot<'_>>,
) {
    let before = svc.job.clone().unwrap_or_else(|| JobStatus {
        next_run_at: next_occurrence(job, svc.created_at),
        next_number: 1,
        ..Default::default()
    });
    let mut st = before.clone();
    st.next_number = st.next_number.max(1);
    let mut run = Runner { svc, job, st: &mut st };

    run.follow_runs(ctx);
    run.manual(ctx);
    if !job.suspend {
        if !job.schedule.is_empty() {
            run.schedule(ctx);
        }
        if !job.after.is_empty() {
            run.parents(ctx);
        }
    }
    run.trim(ctx, slots);
    if st != before {
        ctx.plan.job_updates.push(shoal_state::JobUpdate {
            service_id: svc.id.clone(),
            service_version: svc.version,
            status: st,
        });
    }
}

struct Runner<'a> {
    svc: &'a Service,
    job: &'a ScheduledJob,
    st: &'a mut JobStatus,
}

impl Runner<'_> {
    /// Moves each running run on from what its task did.
    fn follow_runs(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        for i in 0..self.st.runs.len() {
            if self.st.runs[i].state != RunState::Running {
                continue;
            }
            if let Some(at) = self.st.runs[i].retry_at {
                if now >= at {
                    let task = ctx.new_task(self.svc, Some(self.st.runs[i].number), None, Vec::new());
                    let r = &mut self.st.runs[i];
                    r.attempts += 1;
                    r.task_id = Some(task);
                    r.retry_at = None;
                } else {
                    ctx.wake(at);
                }
                continue;
            }
            let task = self.st.runs[i].task_id.as_ref().and_then(|id| ctx.state.task(id));
            let Some(t) = task else {
                // Its task is gone (removed by hand): the attempt is lost.
                self.attempt_failed(ctx, i, None, "its task was removed".into(), now);
                continue;
            };
            if !t.status.state.is_terminal() {
                let own = Constraint::parse_all(&t.spec.placement.constraints).unwrap_or_default();
                if let Some(why) = node_problem(ctx, t, &own) {
                    // A node that stopped heartbeating may only be busy or cut off: its task may
                    // still be running and report. Give it the grace before calling the attempt
                    // failed (and maybe running it twice), as Mesos waits before TASK_LOST.
                    let down_since = t
                        .node_id
                        .as_ref()
                        .and_then(|n| ctx.state.node(n))
                        .filter(|n| n.status.state == NodeState::Down)
                        .map(|n| n.updated_at);
                    match down_since.map(|d| d.saturating_add(NODE_LOSS_GRACE)) {
                        Some(until) if now < until => ctx.wake(until),
                        _ => {
                            ctx.set_desired(t, TaskState::Shutdown);
                            self.attempt_failed(ctx, i, None, format!("{why} while it ran"), now);
                        }
                    }
                } else if let (Some(deadline), Some(due), true) = (
                    self.job.starting_deadline,
                    self.st.runs[i].scheduled_at,
                    t.status.state < TaskState::Assigned,
                ) {
                    // Chronos's epsilon: a run that cannot start within the deadline is skipped.
                    let limit = due.saturating_add(deadline);
                    if now > limit && self.st.runs[i].attempts <= 1 {
                        ctx.set_desired(t, TaskState::Shutdown);
                        let why = if t.status.err.is_empty() { "not placed" } else { t.status.err.as_str() };
                        let r = &mut self.st.runs[i];
                        r.state = RunState::Skipped;
                        r.finished_at = Some(now);
                        r.skipped = Some(1);
                        r.message = format!("could not start within the starting deadline: {why}");
                        self.st.skipped_count += 1;
                    } else {
                        ctx.wake(limit.saturating_add(std::time::Duration::from_nanos(1)));
                    }
                }
                continue;
            }
            if t.status.state == TaskState::Complete {
                ctx.set_desired(t, TaskState::Complete);
                let at = t.status.timestamp;
                let r = &mut self.st.runs[i];
                r.state = RunState::Succeeded;
                r.finished_at = Some(at);
                r.exit_code = t.status.exit_code.or(Some(0));
                r.message = "succeeded".into();
                let number = r.number;
                self.finished(number, true, at);
                continue;
            }
            ctx.set_desired(t, TaskState::Shutdown);
            let why = describe_failure(t);
            self.attempt_failed(ctx, i, t.status.exit_code, why, t.status.timestamp.max(t.created_at));
        }
    }

    /// The latest attempt of run `i` failed at `at`: retry it (now or after the delay) or give up.
    fn attempt_failed(&mut self, ctx: &mut Ctx<'_>, i: usize, exit: Option<i32>, why: String, at: Timestamp) {
        let retries = self.job.retries;
        let delay = self.job.retry_delay;
        let r = &mut self.st.runs[i];
        r.exit_code = exit;
        if r.attempts <= retries {
            let when = at.saturating_add(delay);
            r.message =
                format!("attempt {} failed: {why}; retrying ({} of {retries})", r.attempts, r.attempts);
            if ctx.now >= when {
                let task = ctx.new_task(self.svc, Some(r.number), None, Vec::new());
                let r = &mut self.st.runs[i];
                r.attempts += 1;
                r.task_id = Some(task);
                r.retry_at = None;
            } else {
                r.retry_at = Some(when);
                ctx.wake(when);
            }
            return;
        }
        r.state = RunState::Failed;
        r.finished_at = Some(at);
        r.message = if r.attempts > 1 {
            format!("failed after {} attempts: {why}", r.attempts)
        } else {
            format!("failed: {why}")
        };
        let number = r.number;
        self.finished(number, false, at);
    }

    fn finished(&mut self, number: u64, succeeded: bool, at: Timestamp) {
        let st = &mut *self.st;
        st.finished += 1;
        st.last_outcome = Some(RunOutcome { number, succeeded, at });
        if succeeded {
            st.success_count += 1;
            st.last_success = Some(at);
        } else {
            st.error_count += 1;
            st.last_error = Some(at);
        }
    }

    fn manual(&mut self, ctx: &mut Ctx<'_>) {
        while self.st.pending_manual > 0 {
            self.st.pending_manual -= 1;
            self.start(ctx, RunCause::Manual, None, BTreeMap::new());
        }
    }

    /// Handles every occurrence of the schedule up to now.
    fn schedule(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let Some(due) = self.st.next_run_at else { return };
        if due > now {
            ctx.wake(due);
            return;
        }
        let Ok(schedule) = Schedule::parse(&self.job.schedule) else { return };
        let tz = self.job.time_zone.as_str();
        let (later, more) = schedule.occurrences_between(due, now, tz, MISSED_COUNT_CAP).unwrap_or((None, 0));
        let latest = later.unwrap_or(due);
        if more > 0 {
            let n = if more >= MISSED_COUNT_CAP { format!("at least {more}") } else { more.to_string() };
            self.skip(
                ctx,
                RunCause::Schedule,
                Some(due),
                more,
                format!("missed {n} occurrence(s) from {due} on: no manager could start them in time; only the latest runs"),
            );
        }
        self.st.last_scheduled_at = Some(latest);
        self.st.next_run_at = schedule.next_after(latest, tz).ok().flatten();
        if let Some(next) = self.st.next_run_at {
            ctx.wake(next);
        }
        let late = now.since(latest);
        if let Some(deadline) = self.job.starting_deadline.filter(|d| late > *d) {
            self.skip(
                ctx,
                RunCause::Schedule,
                Some(latest),
                1,
                format!(
                    "started too late: {} after its time, past the starting deadline of {}",
                    humantime_short(late),
                    humantime_short(deadline)
                ),
            );
            return;
        }
        if self.st.active_runs().next().is_some() {
            match self.job.concurrency {
                ConcurrencyPolicy::Forbid => {
                    let running: Vec<String> = self.st.active_runs().map(|r| r.number.to_string()).collect();
                    self.skip(
                        ctx,
                        RunCause::Schedule,
                        Some(latest),
                        1,
                        format!("run {} still running (concurrency forbid)", running.join(", ")),
                    );
                    return;
                }
                ConcurrencyPolicy::Replace => self.replace_active(ctx),
                ConcurrencyPolicy::Allow => {}
            }
        }
        self.start(ctx, RunCause::Schedule, Some(latest), BTreeMap::new());
    }

    /// Runs (or skips) a round of the parents.
    fn parents(&mut self, ctx: &mut Ctx<'_>) {
        struct Parent<'p> {
            name: &'p str,
            id: &'p ServiceId,
            finished: u64,
            outcome: Option<RunOutcome>,
            /// Finished a run since this job last ran or skipped a round.
            new: bool,
            /// ... and that run counts as a success.
            ok: bool,
        }
        let mut parents = Vec::new();
        for name in &self.job.after {
            let Some(p) = ctx.state.service_by_name(name) else { return };
            let Some(pj) = p.spec.mode.scheduled() else { return };
            let finished = p.job.as_ref().map_or(0, |s| s.finished);
            let outcome = p.job.as_ref().and_then(|s| s.last_outcome);
            let new = finished > self.st.consumed.get(&p.id).copied().unwrap_or(0);
            let ok = new && outcome.is_some_and(|o| o.succeeded || pj.soft_error);
            parents.push(Parent { name, id: &p.id, finished, outcome, new, ok });
        }
        let all_new = parents.iter().all(|p| p.new);
        let failed: Vec<String> = parents
            .iter()
            .filter(|p| p.new && !p.ok)
            .map(|p| match p.outcome {
                Some(o) => format!("{} (run {})", p.name, o.number),
                None => p.name.to_string(),
            })
            .collect();
        let fire = match self.job.trigger {
            Trigger::AllSucceeded => all_new && failed.is_empty(),
            Trigger::AllDone => all_new,
            Trigger::AnySucceeded => parents.iter().any(|p| p.ok),
        };
        let consume_all = |st: &mut JobStatus| {
            for p in &parents {
                st.consumed.insert(p.id.clone(), p.finished);
            }
        };
        if !fire {
            if all_new {
                let why = format!("parent failed: {}", failed.join(", "));
                self.skip(ctx, RunCause::Parents, None, 1, why);
                consume_all(self.st);
            }
            return;
        }
        if self.st.active_runs().next().is_some() {
            match self.job.concurrency {
                // A round is not an occurrence: it waits for the run in progress.
                ConcurrencyPolicy::Forbid => return,
                ConcurrencyPolicy::Replace => self.replace_active(ctx),
                ConcurrencyPolicy::Allow => {}
            }
        }
        let followed: BTreeMap<String, u64> = parents
            .iter()
            .filter(|p| p.new)
            .filter_map(|p| Some((p.name.to_string(), p.outcome?.number)))
            .collect();
        consume_all(self.st);
        self.start(ctx, RunCause::Parents, None, followed);
    }

    fn replace_active(&mut self, ctx: &mut Ctx<'_>) {
        let next = self.st.next_number;
        for r in self.st.runs.iter_mut().filter(|r| r.state == RunState::Running) {
            if let Some(t) = r.task_id.as_ref().and_then(|id| ctx.state.task(id)) {
                ctx.set_desired(t, TaskState::Shutdown);
            }
            r.state = RunState::Replaced;
            r.finished_at = Some(ctx.now);
            r.retry_at = None;
            r.message = format!("stopped for run {next} (concurrency replace)");
        }
    }

    fn start(
        &mut self,
        ctx: &mut Ctx<'_>,
        cause: RunCause,
        scheduled_at: Option<Timestamp>,
        parents: BTreeMap<String, u64>,
    ) {
        let number = self.st.next_number;
        self.st.next_number += 1;
        let task = ctx.new_task(self.svc, Some(number), None, Vec::new());
        self.st.runs.push(JobRun {
            number,
            cause,
            scheduled_at,
            started_at: ctx.now,
            finished_at: None,
            state: RunState::Running,
            attempts: 1,
            task_id: Some(task),
            retry_at: None,
            exit_code: None,
            message: String::new(),
            parents,
            skipped: None,
        });
    }

    /// Records `count` occurrences (or a round) that did not run. Repeated skips for the same
    /// reason fold into one record.
    fn skip(&mut self, ctx: &Ctx<'_>, cause: RunCause, at: Option<Timestamp>, count: u64, message: String) {
        self.st.skipped_count += count;
        if let Some(last) = self.st.runs.last_mut() {
            if last.state == RunState::Skipped && last.cause == cause && last.message == message {
                last.skipped = Some(last.skipped.unwrap_or(1) + count);
                last.scheduled_at = at.or(last.scheduled_at);
                last.finished_at = Some(ctx.now);
                return;
            }
        }
        let number = self.st.next_number;
        self.st.next_number += 1;
        self.st.runs.push(JobRun {
            number,
            cause,
            scheduled_at: at,
            started_at: ctx.now,
            finished_at: Some(ctx.now),
            state: RunState::Skipped,
            attempts: 0,
            task_id: None,
            retry_at: None,
            exit_code: None,
            message,
            parents: BTreeMap::new(),
            skipped: Some(count),
        });
    }

    /// Keeps `history` runs (never dropping one in progress) and removes the tasks of runs no
    /// longer kept.
    fn trim(&mut self, ctx: &mut Ctx<'_>, slots: &BTreeMap<SlotKey, Slot<'_>>) {
        let keep = self.job.history.max(1) as usize;
        while self.st.runs.len() > keep {
            match self.st.runs.iter().position(|r| r.state != RunState::Running) {
                Some(i) => {
                    self.st.runs.remove(i);
                }
                None => break,
            }
        }
        let kept: BTreeSet<u64> = self.st.runs.iter().map(|r| r.number).collect();
        for (key, slot) in slots {
            let SlotKey::Replica(no) = key else { continue };
            if kept.contains(no) {
                continue;
            }
            for t in &slot.tasks {
                let t: &Task = t;
                if t.desired_state < TaskState::Remove {
                    ctx.set_desired(t, TaskState::Remove);
                }
            }
        }
    }
}

fn describe_failure(t: &Task) -> String {
    let mut why = match (t.status.state, t.status.exit_code) {
        (TaskState::Failed, Some(code)) => format!("exit code {code}"),
        (state, _) => state.to_string(),
    };
    let detail = if t.status.err.is_empty() { &t.status.message } else { &t.status.err };
    if !detail.is_empty() && !why.contains(detail.as_str()) {
        why.push_str(": ");
        why.push_str(detail);
    }
    why
}

/// `1h2m3s`, `45s`, `250ms`: whole seconds, or milliseconds under a second.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
