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
        // Parents by name, with this job's new list in place of its stored one.
        let mut edges: BTreeMap<&str, &[String]> = BTreeMap::new();
        for s in self.services() {
            if Some(&s.id) == id {
                continue;
            }
            if let Some(j) = s.spec.mode.scheduled() {
                edges.insert(s.spec.name.as_str(), &j.after);
            }
        }
        edges.insert(spec.name.as_str(), &job.after);
        if let Some(cycle) = find_cycle(&edges, &spec.name) {
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

/// A path from `start` back to itself following `edges` (job → its parents), if there is one.
fn find_cycle(edges: &BTreeMap<&str, &[String]>, start: &str) -> Option<Vec<String>> {
    fn walk<'a>(
        edges: &BTreeMap<&'a str, &'a [String]>,
        at: &'a str,
        start: &str,
        path: &mut Vec<&'a str>,
        seen: &mut BTreeSet<&'a str>,
    ) -> bool {
        for p in edges.get(at).copied().unwrap_or_default() {
            if p == start {
                path.push(p);
                return true;
            }
            if seen.insert(p.as_str()) {
                path.push(p);
                if walk(edges, p, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let (&start_key, _) = edges.get_key_value(start)?;
    let mut path = vec![start_key];
    let mut seen = BTreeSet::new();
    walk(edges, start_key, start, &mut path, &mut seen).then(|| path.into_iter().map(String::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_and_named() {
        let a = ["b".to_string()];
        let b = ["c".to_string()];
        let c = ["a".to_string()];
        let d: Vec<String> = vec![];
        let edges: BTreeMap<&str, &[String]> =
            [("a", &a[..]), ("b", &b[..]), ("c", &c[..]), ("d", &d[..])].into();
        assert_eq!(find_cycle(&edges, "a"), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
        assert_eq!(find_cycle(&edges, "d"), None);
        let c2 = ["d".to_string()];
        let edges: BTreeMap<&str, &[String]> =
            [("a", &a[..]), ("b", &b[..]), ("c", &c2[..]), ("d", &d[..])].into();
        assert_eq!(find_cycle(&edges, "a"), None);
    }
}
