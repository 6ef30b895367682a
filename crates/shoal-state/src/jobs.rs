//! Scheduled jobs in the state: the rules that need the whole cluster (parents exist and form no
//! cycle, a parent cannot go while children follow it) and the job's record as specs change.
//! Checked inside `apply`, so two concurrent writes can never close a cycle between them.

use crate::{ClusterState, StateError};
use shoal_types::{JobStatus, ScheduledJob, Service, ServiceId, ServiceSpec, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// The most manual runs that may wait to start per job.
pub const MAX_PENDING_MANUAL_RUNS: u32 = 100;

impl ClusterState {
    /// Scheduled jobs that run after `name`, by name.
    pub fn job_children(&self, name: &str) -> Vec<&Service> {
        self.services()
            .filter(|s| s.spec.mode.scheduled().is_some_and(|j| j.after.iter().any(|p| p == name)))
            .collect()
    }

    /// Checks a job spec against the others: every parent exists and is a scheduled job, and
    /// following parents never leads back to this job. `id` is the job's own id (None on create).
    pub(crate) fn check_job_graph(
        &self,
        id: Option<&ServiceId>,
        spec: &ServiceSpec,
    ) -> Result<(), StateError> {
        let Some(job) = spec.mode.scheduled() else { return Ok(()) };
        for p in &job.after {
            match self.service_by_name(p) {
                None => return Err(invalid_after(format!("unknown parent job {p:?}"))),
                Some(s) if s.spec.mode.scheduled().is_none() => {
                    return Err(invalid_after(format!(
                        "{p:?} is a {} service, not a scheduled job",
                        s.spec.mode.name()
                    )))
                }
                Some(s) if Some(&s.id) == id => {
                    return Err(invalid_after(format!("job {p:?} cannot run after itself")))
                }
                Some(_) => {}
            }
        }
        // A cycle through this job must leave it by one of its parents: walk from them (only what
        // is reachable, so creating jobs without parents costs nothing).
        if job.after.is_empty() {
            return Ok(());
        }
        let parents_of = |name: &str| -> Vec<String> {
            if name == spec.name {
                return job.after.clone();
            }
            match self.service_by_name(name) {
                Some(s) if Some(&s.id) != id => {
                    s.spec.mode.scheduled().map(|j| j.after.clone()).unwrap_or_default()
                }
                _ => Vec::new(),
            }
        };
        if let Some(cycle) = find_cycle(&parents_of, &spec.name) {
            return Err(invalid_after(format!(
                "the parents would form a cycle: {} (each runs after the next)",
                cycle.join(" -> ")
            )));
        }
        Ok(())
    }

    /// Refuses to remove or rename a job that others run after.
    pub(crate) fn check_no_children(&self, svc: &Service, doing: &str) -> Result<(), StateError> {
        if svc.spec.mode.scheduled().is_none() {
            return Ok(());
        }
        let children: Vec<&str> =
            self.job_children(&svc.spec.name).iter().map(|s| s.spec.name.as_str()).collect();
        if children.is_empty() {
            return Ok(());
        }
        Err(StateError::Conflict(format!(
            "cannot {doing} job {:?}: {} run{} after it ({}); remove {} or change {} parents first",
            svc.spec.name,
            if children.len() == 1 { "job" } else { "jobs" },
            if children.len() == 1 { "s" } else { "" },
            children.join(", "),
            if children.len() == 1 { "that job" } else { "those jobs" },
            if children.len() == 1 { "its" } else { "their" },
        )))
    }

    /// The record of a job created at `at`.
    pub(crate) fn new_job_status(&self, job: &ScheduledJob, at: Timestamp) -> JobStatus {
        JobStatus {
            next_run_at: shoal_types::job::next_occurrence(job, at),
            next_number: 1,
            consumed: self.parents_finished(job),
            ..Default::default()
        }
    }

    /// A job's record after its spec changed from `old` to `new` at `at`: a new schedule (or
    /// time zone) starts counting from now; resuming does not catch up on what was missed while
    /// suspended; new parents count from their next round.
    pub(crate) fn updated_job_status(
        &self,
        status: Option<JobStatus>,
        old: Option<&ScheduledJob>,
        new: &ScheduledJob,
        at: Timestamp,
    ) -> JobStatus {
        let mut st = status.unwrap_or_else(|| JobStatus { next_number: 1, ..Default::default() });
        let resumed = old.is_some_and(|o| o.suspend) && !new.suspend;
        let rescheduled = old.is_none_or(|o| o.schedule != new.schedule || o.time_zone != new.time_zone);
        if rescheduled || resumed {
            st.next_run_at = shoal_types::job::next_occurrence(new, at);
        }
        if resumed || old.is_none_or(|o| o.after != new.after) {
            st.consumed = self.parents_finished(new);
        }
        st
    }

    /// Each parent's finished-run count now.
    fn parents_finished(&self, job: &ScheduledJob) -> BTreeMap<ServiceId, u64> {
        job.after
            .iter()
            .filter_map(|p| self.service_by_name(p))
            .map(|s| (s.id.clone(), s.job.as_ref().map_or(0, |j| j.finished)))
            .collect()
    }
}

fn invalid_after(message: String) -> StateError {
    StateError::Invalid(shoal_types::ValidationError::single("mode.scheduled.after", message))
}

/// A path from `start` back to itself following `parents_of` (job → its parents), if there is
/// one. Each job is visited once.
fn find_cycle(parents_of: &dyn Fn(&str) -> Vec<String>, start: &str) -> Option<Vec<String>> {
    fn walk(
        parents_of: &dyn Fn(&str) -> Vec<String>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for p in parents_of(at) {
            if p == start {
                path.push(p);
                return true;
            }
            if seen.insert(p.clone()) {
                path.push(p.clone());
                if walk(parents_of, &p, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(parents_of, start, start, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_and_named() {
        let graph = |edges: &'static [(&'static str, &'static [&'static str])]| {
            move |name: &str| -> Vec<String> {
                edges
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, ps)| ps.iter().map(|p| p.to_string()).collect())
                    .unwrap_or_default()
            }
        };
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(find_cycle(&g, "a"), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
        assert_eq!(find_cycle(&g, "d"), None);
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["d"]), ("d", &[])]);
        assert_eq!(find_cycle(&g, "a"), None);
    }
}
