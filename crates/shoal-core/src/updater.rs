//! The rolling-update planner. It infers where an update stands from the tasks themselves (which
//! slots still run the old spec version, which new tasks are up, which failed), so it keeps no
//! memory between passes and a new leader continues exactly where the old one stopped.
//!
//! Each pass: count failures of this update's tasks and apply `failure_action` when their ratio
//! exceeds `max_failure_ratio`; stop the old task of start-first slots whose new task is up; start
//! up to `parallelism - in_flight` dirty slots once `delay` has passed since the last new task came
//! up; mark the update completed when no slot is dirty or in flight and `monitor` has passed.
//!
//! A new task counts as failed when it fails, is rejected, exits (services), turns unhealthy, or
//! runs without becoming healthy within `monitor`.

use crate::orchestrator::{Slot, SlotKey};
use crate::Ctx;
use shoal_state::ServiceStatusChange;
use shoal_types::{
    FailureAction, Health, Service, Task, TaskId, TaskState, Timestamp, UpdateOrder, UpdateState,
    UpdateStatus,
};

/// `slots` are the service's active slots; a busy one (its task is being replaced or waits for a
/// restart) counts as in flight and is not touched this pass.
pub(crate) fn run(ctx: &mut Ctx<'_>, svc: &Service, slots: &[(&Slot<'_>, bool)]) {
    let Some(us) = svc.update_status.as_ref().filter(|u| u.state.is_active()) else { return };
    let cfg = svc.active_update_config();
    let rollback = us.state.is_rollback();
    let v = svc.spec_version;
    let now = ctx.now;

    let mut dirty: Vec<&Slot<'_>> = Vec::new();
    let mut in_flight = 0u64;
    let mut last_up: Option<Timestamp> = None;
    let mut failed: Option<&TaskId> = None;
    let mut failures = 0u64;
    for &(slot, busy) in slots {
        let current = slot.current();
        for t in slot.tasks.iter().filter(|t| t.spec_version == v && t.created_at >= us.started_at) {
            if is_failure(t, svc.spec.mode.is_job(), cfg.monitor, now) {
                failures += 1;
                failed.get_or_insert(&t.id);
            } else if t.status.state == TaskState::Running {
                if t.is_up() {
                    last_up = Some(last_up.map_or(t.status.timestamp, |u| u.max(t.status.timestamp)));
                } else {
                    ctx.wake(t.status.timestamp.saturating_add(cfg.monitor));
                }
            }
        }
        if busy {
            in_flight += 1;
            continue;
        }
        let new = current.iter().find(|t| t.spec_version == v);
        let old: Vec<&Task> = current.iter().copied().filter(|t| t.spec_version != v).collect();
        match new {
            None if !old.is_empty() => dirty.push(slot),
            None => {}
            Some(n) if n.is_up() => {
                // start-first: the new task is up, so the old one can go.
                for o in &old {
                    ctx.set_desired(o, TaskState::Shutdown);
                }
            }
            Some(n) if !n.status.state.is_terminal() => in_flight += 1,
            // The new task stopped for good while an old one still serves: try the slot again.
            Some(_) if !old.is_empty() => dirty.push(slot),
            Some(_) => {}
        }
    }

    let total = slots.len().max(1) as f64;
    if failures > 0 && failures as f64 / total > cfg.max_failure_ratio {
        let which = failed.map(|id| id.to_string()).unwrap_or_default();
        let action = if rollback && cfg.failure_action == FailureAction::Rollback {
            FailureAction::Pause // a failing rollback pauses; it never rolls back the rollback
        } else {
            cfg.failure_action
        };
        match action {
            FailureAction::Continue => {}
            FailureAction::Pause => {
                let state = if rollback { UpdateState::RollbackPaused } else { UpdateState::Paused };
                let what = if rollback { "rollback" } else { "update" };
                let message = format!("{what} paused due to failure or early termination of task {which}");
                set_status(ctx, svc, us, state, None, message, false);
                return;
            }
            FailureAction::Rollback => {
                let message =
                    format!("update rolled back due to failure or early termination of task {which}");
                set_status(ctx, svc, us, UpdateState::RollbackStarted, None, message, true);
                return;
            }
        }
    }

    if dirty.is_empty() && in_flight == 0 {
        let done_at = last_up.map_or(now, |u| u.saturating_add(cfg.monitor));
        if now >= done_at {
            let (state, message) = if rollback {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            set_status(ctx, svc, us, state, Some(now), message.into(), false);
        } else {
            ctx.wake(done_at);
        }
        return;
    }

    let room = cfg.parallelism.saturating_sub(in_flight);
    if room == 0 || dirty.is_empty() {
        return;
    }
    if let Some(up) = last_up {
        let next = up.saturating_add(cfg.delay);
        if now < next {
            ctx.wake(next);
            return;
        }
    }
    for slot in dirty.into_iter().take(room as usize) {
        // start-first keeps one old task serving (the newest that is up) until the new one is
        // up; old tasks that are not up serve nobody, so they go first either way.
        let current = slot.current();
        let keep = match cfg.order {
            UpdateOrder::StartFirst => current.iter().rev().find(|t| t.is_up()).map(|t| &t.id),
            UpdateOrder::StopFirst => None,
        };
        for o in &current {
            if Some(&o.id) != keep {
                ctx.set_desired(o, TaskState::Shutdown);
            }
        }
        match &slot.key {
            SlotKey::Replica(n) => ctx.new_task(svc, Some(*n), None, Vec::new()),
            SlotKey::Node(n) => ctx.new_task(svc, None, Some(n.clone()), Vec::new()),
        };
    }
}

fn is_failure(t: &Task, is_job: bool, monitor: std::time::Duration, now: Timestamp) -> bool {
    match t.status.state {
        TaskState::Failed | TaskState::Rejected | TaskState::Orphaned => true,
        TaskState::Complete => !is_job,
        TaskState::Running => match t.status.health {
            Some(Health::Unhealthy) => true,
            // Still starting: give it the time its health check needs to pass at least once
            // (start period, then `retries + 1` probes), or `monitor`, whichever is longer.
            Some(Health::Starting) => {
                let grace = t
                    .spec
                    .health_check
                    .as_ref()
                    .map(|h| h.start_period + (h.interval + h.timeout) * (h.retries + 1))
                    .unwrap_or_default()
                    .max(monitor);
                now >= t.status.timestamp.saturating_add(grace)
            }
            _ => false,
        },
        _ => false,
    }
}

fn set_status(
    ctx: &mut Ctx<'_>,
    svc: &Service,
    us: &UpdateStatus,
    state: UpdateState,
    completed_at: Option<Timestamp>,
    message: String,
    rollback: bool,
) {
    ctx.plan.service_updates.push(ServiceStatusChange {
        service_id: svc.id.clone(),
        service_version: svc.version,
        update_status: Some(UpdateStatus { state, started_at: us.started_at, completed_at, message }),
        rollback,
        rebalance_done: false,
    });
}
