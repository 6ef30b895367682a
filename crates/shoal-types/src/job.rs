//! Scheduled jobs (Chronos, Kubernetes CronJob, Nomad periodic): a service in mode `scheduled`
//! whose runs start on a schedule (cron or ISO 8601 repeating interval, in an IANA time zone),
//! when their parent jobs have finished (a dependency graph, Chronos's `parents`), or on demand.
//! Each run is an ordinary task in the slot numbered after the run.
//!
//! [`ScheduledJob`] is the user's (inside [`crate::ServiceMode::Scheduled`]); [`JobStatus`] on
//! the service is the system's record: the next occurrence, the runs kept, the parents' rounds
//! already consumed and the counters Chronos shows. The brain (`shoal_core`) decides every run
//! from this record and `now`; the run is recorded in the same Raft entry that creates its task.

use crate::id::{ServiceId, TaskId};
use crate::time::{duration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Runs kept in a job's status (and their tasks) unless `history` says otherwise.
pub const DEFAULT_JOB_HISTORY: u32 = 10;
/// At most this many runs are kept per job.
pub const MAX_JOB_HISTORY: u32 = 1000;
/// At most this many retries per run.
pub const MAX_JOB_RETRIES: u32 = 100;
/// At most this many parents per job.
pub const MAX_JOB_PARENTS: usize = 64;

/// What starts a job's runs, and how they behave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ScheduledJob {
    /// A cron expression (`0 3 * * *`, `@daily`) or an ISO 8601 repeating interval
    /// (`R/2026-01-01T03:00:00Z/P1D`, Chronos's format). Empty for a job started by its parents
    /// (`after`) or only by hand.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schedule: String,
    /// Parent jobs (by name): this job runs when they have finished a round (see `trigger`).
    /// Exclusive with `schedule`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// IANA time zone the schedule is evaluated in (`Europe/Berlin`); empty: UTC.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    /// What an occurrence does while a run is still going: `forbid` (default, Chronos's
    /// `concurrent: false`) skips it (a dependent job waits instead), `allow` starts another,
    /// `replace` stops the running one first.
    pub concurrency: ConcurrencyPolicy,
    /// An occurrence that cannot start within this long of its time is skipped and recorded
    /// (Chronos's epsilon, Kubernetes' startingDeadlineSeconds). None: a late occurrence still
    /// runs, but only the latest one missed, never a burst.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_duration")]
    #[schemars(with = "Option<crate::schema::DurationString>")]
    pub starting_deadline: Option<Duration>,
    /// Times a failed run is tried again.
    pub retries: u32,
    /// Wait before each retry.
    #[serde(with = "duration")]
    #[schemars(with = "crate::schema::DurationString")]
    pub retry_delay: Duration,
    /// When a job with parents runs.
    pub trigger: Trigger,
    /// A failed run still counts as success for this job's children (Chronos's `softError`).
    pub soft_error: bool,
    /// No scheduled or parent-triggered runs while set (manual runs still start); resuming does
    /// not catch up on what was missed meanwhile.
    pub suspend: bool,
    /// Runs kept in the status, with their tasks (default 10).
    pub history: u32,
}

impl Default for ScheduledJob {
    fn default() -> Self {
        ScheduledJob {
            schedule: String::new(),
            after: Vec::new(),
            time_zone: String::new(),
            concurrency: ConcurrencyPolicy::Forbid,
            starting_deadline: None,
            retries: 0,
            retry_delay: Duration::ZERO,
            trigger: Trigger::AllSucceeded,
            soft_error: false,
            suspend: false,
            history: DEFAULT_JOB_HISTORY,
        }
    }
}

/// See [`ScheduledJob::concurrency`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum ConcurrencyPolicy {
    Allow,
    #[default]
    Forbid,
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Allow => "allow",
            ConcurrencyPolicy::Forbid => "forbid",
            ConcurrencyPolicy::Replace => "replace",
        }
    }
}

/// When a job with parents runs, judged once per round: a round is complete when every parent
/// has finished a run since this job last ran (or was skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(schemars::JsonSchema)]
pub enum Trigger {
    /// Every parent's latest run succeeded (a failure of a `soft_error` parent counts as
    /// success). Chronos's rule. Otherwise the round is skipped, naming the parent that failed.
    #[default]
    #[serde(alias = "all_succeeded")]
    AllSucceeded,
    /// Every parent finished, whatever the outcome.
    #[serde(alias = "all_done")]
    AllDone,
    /// As soon as one parent's new run succeeded (without waiting for the others).
    #[serde(alias = "any_succeeded")]
    AnySucceeded,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::AllSucceeded => "all-succeeded",
            Trigger::AllDone => "all-done",
            Trigger::AnySucceeded => "any-succeeded",
        }
    }
}

/// The system's record of a scheduled job (on its [`crate::Service`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct JobStatus {
    /// The next occurrence of the schedule not yet handled (None: no schedule, or no more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Timestamp>,
    /// The last occurrence handled (run or skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scheduled_at: Option<Timestamp>,
    /// Manual runs asked for (`job run`) and not started yet.
    #[serde(skip_serializing_if = "is_zero")]
    pub pending_manual: u32,
    /// The runs kept, oldest first.
    pub runs: Vec<JobRun>,
    /// The number the next run gets (runs are numbered from 1; the number is its task slot).
    pub next_number: u64,
    /// Runs that finished (succeeded or failed), ever: children count rounds by it.
    pub finished: u64,
    /// The outcome of the run that finished last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<RunOutcome>,
    /// Per parent, its `finished` count when this job last ran or skipped a round.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumed: BTreeMap<ServiceId, u64>,
    pub success_count: u64,
    pub error_count: u64,
    pub skipped_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Timestamp>,
}

impl JobStatus {
    /// Runs not finished yet.
    pub fn active_runs(&self) -> impl Iterator<Item = &JobRun> + '_ {
        self.runs.iter().filter(|r| r.state == RunState::Running)
    }
    pub fn run(&self, number: u64) -> Option<&JobRun> {
        self.runs.iter().find(|r| r.number == number)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a run finished, as its children see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunOutcome {
    pub number: u64,
    pub succeeded: bool,
    pub at: Timestamp,
}

/// One run of a job: a task, retried up to `retries` times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobRun {
    pub number: u64,
    pub cause: RunCause,
    /// The schedule's occurrence this run is for (scheduled runs and skips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Timestamp>,
    /// When it was started (its first task created) or skipped.
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    pub state: RunState,
    /// Tasks started for it (1 + retries so far); 0 for a skipped occurrence.
    #[serde(default)]
    pub attempts: u32,
    /// The task of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// When the latest attempt failed and a retry waits for its delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What happened (why it failed, what it skipped), for `job history`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// For a run started by its parents: each parent's run it followed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parents: BTreeMap<String, u64>,
    /// For a skip record: how many occurrences it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum RunCause {
    Schedule,
    Parents,
    Manual,
}

impl RunCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RunCause::Schedule => "schedule",
            RunCause::Parents => "parents",
            RunCause::Manual => "manual",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// The occurrence (or round) did not run: missed past its deadline, overlap forbidden, a
    /// parent failed. The message says which.
    Skipped,
    /// Stopped for a newer run (`concurrency: replace`), or because the job was removed.
    Replaced,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
            RunState::Replaced => "replaced",
        }
    }
}

/// Serde for `Option<Duration>` as a human string, like [`duration`].
pub mod opt_duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "duration")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// An ISO 8601 duration (`PT15M`, `P1DT2H`, Chronos's `epsilon`) with days and weeks taken as
/// 24 hours; years and months are refused (their length depends on the date).
pub fn parse_iso_duration(text: &str) -> Result<Duration, String> {
    if !text.trim().starts_with(['P', 'p']) {
        return Err(format!("{text:?} is not an ISO 8601 duration such as PT15M"));
    }
    let span: jiff::Span = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not an ISO 8601 duration such as PT15M: {e}"))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!("{text:?}: years and months have no fixed length; use days or hours"));
    }
    let d =
        span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|e| format!("{text:?}: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?} must not be negative"))
}

/// `PT900S`-style text for a duration (whole seconds, or milliseconds as a fraction).
pub fn format_iso_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("PT{}S", d.as_secs())
    } else {
        format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
    }
}

/// The job's next scheduled occurrence strictly after `after` (None for a job without a
/// schedule, or with no more occurrences).
pub fn next_occurrence(job: &ScheduledJob, after: Timestamp) -> Option<Timestamp> {
    if job.schedule.trim().is_empty() {
        return None;
    }
    let s = crate::schedule::Schedule::parse(&job.schedule).ok()?;
    s.next_after(after, &job.time_zone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("PT15M"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_iso_duration("P1DT2H"), Ok(Duration::from_secs(26 * 3600)));
        assert_eq!(parse_iso_duration("PT0.5S"), Ok(Duration::from_millis(500)));
        assert!(parse_iso_duration("P1M").expect_err("months").contains("months"));
        assert!(parse_iso_duration("15m").is_err());
        assert_eq!(format_iso_duration(Duration::from_secs(900)), "PT900S");
        assert_eq!(
            parse_iso_duration(&format_iso_duration(Duration::from_millis(1500))),
            Ok(Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_job_spec_reads_back_as_written() {
        let j = ScheduledJob {
            schedule: "0 3 * * *".into(),
            starting_deadline: Some(Duration::from_secs(300)),
            retries: 2,
            retry_delay: Duration::from_secs(30),
            ..Default::default()
        };
        let text = serde_json::to_string(&j).expect("json");
        assert!(text.contains("\"starting_deadline\":\"5m\""), "{text}");
        assert_eq!(serde_json::from_str::<ScheduledJob>(&text).expect("read back"), j);
        let e = serde_json::from_str::<ScheduledJob>(r#"{"schedul": "x"}"#).expect_err("unknown field");
        assert!(e.to_string().contains("schedul"), "{e}");
    }
}
