//! Restart policy: should a stopped task be replaced, and when.

use shoal_types::{RestartCondition, RestartPolicy, Task, TaskState, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Restart {
    /// Replace it now; the replacement carries this restart history.
    Now(Vec<Timestamp>),
    /// Replace it at this time (restart delay).
    At(Timestamp),
    /// Leave the slot as it is, with this reason.
    Never(&'static str),
}

/// Restarts kept in a task's history (enough to count any sane max_attempts).
const HISTORY_CAP: usize = 64;

/// Decides for a task whose desired state is running but which has stopped. Jobs treat a clean
/// exit as done whatever the condition says.
pub(crate) fn decide(policy: &RestartPolicy, is_job: bool, t: &Task, now: Timestamp) -> Restart {
    let clean_exit = t.status.state == TaskState::Complete;
    match policy.condition {
        RestartCondition::None => return Restart::Never("restart condition is none"),
        RestartCondition::OnFailure if clean_exit => return Restart::Never("exited cleanly"),
        RestartCondition::Any if clean_exit && is_job => return Restart::Never("job completed"),
        _ => {}
    }
    let recent: Vec<Timestamp> = t
        .restart_history
        .iter()
        .copied()
        .filter(|&r| policy.window.is_zero() || now.since(r) <= policy.window)
        .collect();
    if policy.max_attempts > 0 && recent.len() as u64 >= policy.max_attempts {
        return Restart::Never("restart attempts exhausted");
    }
    let due = t.status.timestamp.saturating_add(policy.delay);
    if now < due {
        return Restart::At(due);
    }
    let mut history = recent;
    history.push(now);
    let cap = HISTORY_CAP.max(usize::try_from(policy.max_attempts).unwrap_or(usize::MAX));
    if history.len() > cap {
        history.drain(..history.len() - cap);
    }
    Restart::Now(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failed_at(secs: u64, state: TaskState, history: &[u64]) -> Task {
        let mut t = crate::tests::task_fixture();
        t.status.state = state;
        t.status.timestamp = Timestamp::from_secs(secs);
        t.restart_history = history.iter().map(|&s| Timestamp::from_secs(s)).collect();
        t
    }

    #[test]
    fn table() {
        let s = Timestamp::from_secs;
        let pol = |condition, delay, max, window| RestartPolicy {
            condition,
            delay: Duration::from_secs(delay),
            max_attempts: max,
            window: Duration::from_secs(window),
        };
        use RestartCondition::*;
        use TaskState::*;
        let cases: Vec<(&str, RestartPolicy, bool, Task, u64, Restart)> = vec![
            (
                "none never",
                pol(None, 0, 0, 0),
                false,
                failed_at(10, Failed, &[]),
                10,
                Restart::Never("restart condition is none"),
            ),
            (
                "on-failure skips clean exit",
                pol(OnFailure, 0, 0, 0),
                false,
                failed_at(10, Complete, &[]),
                10,
                Restart::Never("exited cleanly"),
            ),
            (
                "on-failure restarts failure",
                pol(OnFailure, 0, 0, 0),
                false,
                failed_at(10, Failed, &[]),
                10,
                Restart::Now(vec![s(10)]),
            ),
            (
                "any restarts clean exit of a service",
                pol(Any, 0, 0, 0),
                false,
                failed_at(10, Complete, &[]),
                10,
                Restart::Now(vec![s(10)]),
            ),
            (
                "any does not rerun a finished job",
                pol(Any, 0, 0, 0),
                true,
                failed_at(10, Complete, &[]),
                10,
                Restart::Never("job completed"),
            ),
            ("delay", pol(Any, 5, 0, 0), false, failed_at(10, Failed, &[]), 12, Restart::At(s(15))),
            (
                "after delay",
                pol(Any, 5, 0, 0),
                false,
                failed_at(10, Failed, &[3]),
                15,
                Restart::Now(vec![s(3), s(15)]),
            ),
            (
                "attempts exhausted",
                pol(Any, 0, 2, 0),
                false,
                failed_at(10, Failed, &[1, 2]),
                10,
                Restart::Never("restart attempts exhausted"),
            ),
            (
                "window forgets old attempts",
                pol(Any, 0, 2, 5),
                false,
                failed_at(10, Failed, &[1, 8]),
                10,
                Restart::Now(vec![s(8), s(10)]),
            ),
            (
                "rejected restarts",
                pol(OnFailure, 0, 0, 0),
                false,
                failed_at(1, Rejected, &[]),
                1,
                Restart::Now(vec![s(1)]),
            ),
        ];
        for (name, policy, job, task, now, want) in cases {
            assert_eq!(decide(&policy, job, &task, s(now)), want, "{name}");
        }
    }
}
