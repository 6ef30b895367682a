//! `shoal job …`: scheduled jobs (cron or ISO 8601 schedules, dependency graphs, manual runs).
//! A job is a service in mode `scheduled`: `job create` takes the task options of
//! `service create`, and `service ps|logs` work on a job's runs (run N is slot N).

use crate::cli::{print_json, Format, ListOpts};
use crate::service_cli::{self, enc, CreateArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use shoal_api::jobs::{job_state, JobGraph};
use shoal_api::{Client, Created};
use shoal_types::{ConcurrencyPolicy, JobRun, ScheduledJob, Service, ServiceMode, Timestamp, Trigger};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Subcommand)]
pub enum JobCmd {
    /// Create a scheduled job: --schedule "CRON" | "R[n]/START/PERIOD", or --after PARENT[,…];
    /// then the task as for `service create` (IMAGE [COMMAND…], or --driver process COMMAND…).
    Create(Box<JobCreateArgs>),
    /// List scheduled jobs with their next run and last result.
    Ls(ListOpts),
    /// Show jobs (JSON, or a readable summary with --format table).
    Inspect {
        #[arg(required = true)]
        jobs: Vec<String>,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "json")]
        format: Format,
    },
    /// Start a run now (whatever the schedule or the concurrency policy).
    Run { job: String },
    /// Stop starting scheduled and parent-triggered runs (manual runs still start).
    Suspend {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Start scheduling again, from now on (what was missed while suspended does not run).
    Resume {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Remove jobs (refused while other jobs run after them); their running tasks stop.
    Rm {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// The runs kept for a job: number, cause, state, attempts, exit code, times, message.
    History {
        job: String,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// The dependency graph: Graphviz dot (default), csv (Chronos's) or json.
    Graph {
        #[arg(long, default_value = "dot", value_parser = ["dot", "csv", "json"])]
        format: String,
    },
}

#[derive(Args, Clone, Debug)]
pub struct JobCreateArgs {
    /// A cron expression (5 fields: minute hour day-of-month month day-of-week, or @daily…) or an
    /// ISO 8601 repeating interval R[n]/START/PERIOD (Chronos's), evaluated in --time-zone.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Parent jobs (comma-separated or repeated): this job runs when they have finished a
    /// round (see --trigger).
    #[arg(long, value_delimiter = ',')]
    pub after: Vec<String>,
    /// IANA time zone of the schedule (Europe/Berlin); default UTC.
    #[arg(long)]
    pub time_zone: Option<String>,
    /// A run due while another runs: forbid (skip it; a dependent job waits), allow, or
    /// replace (stop the running one).
    #[arg(long, value_parser = parse_concurrency, default_value = "forbid")]
    pub concurrency: ConcurrencyPolicy,
    /// Skip an occurrence that cannot start within this long of its time (e.g. 5m).
    #[arg(long, value_parser = service_cli::parse_duration)]
    pub starting_deadline: Option<Duration>,
    /// Times a failed run is tried again.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Wait before each retry (e.g. 30s).
    #[arg(long, value_parser = service_cli::parse_duration)]
    pub retry_delay: Option<Duration>,
    /// With --after: all-succeeded (default), all-done, or any-succeeded.
    #[arg(long, value_parser = parse_trigger)]
    pub trigger: Option<Trigger>,
    /// A failed run still counts as success for this job's children.
    #[arg(long)]
    pub soft_error: bool,
    /// Create it suspended.
    #[arg(long)]
    pub suspend: bool,
    /// Runs kept (with their tasks), default 10.
    #[arg(long)]
    pub history: Option<u32>,
    #[command(flatten)]
    pub task: CreateArgs,
}

fn parse_concurrency(s: &str) -> Result<ConcurrencyPolicy, String> {
    match s {
        "allow" => Ok(ConcurrencyPolicy::Allow),
        "forbid" => Ok(ConcurrencyPolicy::Forbid),
        "replace" => Ok(ConcurrencyPolicy::Replace),
        _ => Err(format!("{s:?}: use allow, forbid or replace")),
    }
}

fn parse_trigger(s: &str) -> Result<Trigger, String> {
    match s {
        "all-succeeded" | "all_succeeded" => Ok(Trigger::AllSucceeded),
        "all-done" | "all_done" => Ok(Trigger::AllDone),
        "any-succeeded" | "any_succeeded" => Ok(Trigger::AnySucceeded),
        _ => Err(format!("{s:?}: use all-succeeded, all-done or any-succeeded")),
    }
}

/// The spec `job create` sends. Flags of `service create` that make no sense for a job (mode,
/// replicas, restart and update settings) are refused, not ignored.
pub fn create_spec(a: &JobCreateArgs) -> Result<shoal_types::ServiceSpec> {
    let t = &a.task;
    if t.mode != "replicated" || t.replicas.is_some() || t.max_concurrent.is_some() {
        bail!("job create takes no --mode, --replicas or --max-concurrent: each run is one task");
    }
    let f = &t.spec;
    let refused = [
        ("--restart-condition", f.restart_condition.is_some()),
        ("--restart-delay", f.restart_delay.is_some()),
        ("--restart-max-attempts", f.restart_max_attempts.is_some()),
        ("--restart-window", f.restart_window.is_some()),
        (
            "--update-*",
            f.update_parallelism.is_some() || f.update_delay.is_some() || f.update_monitor.is_some(),
        ),
        (
            "--update-*",
            f.update_failure_action.is_some()
                || f.update_max_failure_ratio.is_some()
                || f.update_order.is_some(),
        ),
        (
            "--rollback-*",
            f.rollback_parallelism.is_some() || f.rollback_delay.is_some() || f.rollback_monitor.is_some(),
        ),
        (
            "--rollback-*",
            f.rollback_failure_action.is_some()
                || f.rollback_max_failure_ratio.is_some()
                || f.rollback_order.is_some(),
        ),
        ("--rebalance", f.rebalance.is_some()),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        bail!("job create does not take {flag}: a job's runs are retried with --retries and --retry-delay");
    }
    let mut spec = service_cli::create_spec(t)?;
    let job = ScheduledJob {
        schedule: a.schedule.clone().unwrap_or_default(),
        after: a.after.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        time_zone: a.time_zone.clone().unwrap_or_default(),
        concurrency: a.concurrency,
        starting_deadline: a.starting_deadline,
        retries: a.retries,
        retry_delay: a.retry_delay.unwrap_or_default(),
        trigger: a.trigger.unwrap_or_default(),
        soft_error: a.soft_error,
        suspend: a.suspend,
        history: a.history.unwrap_or(shoal_types::job::DEFAULT_JOB_HISTORY),
    };
    if job.schedule.is_empty() && job.after.is_empty() {
        bail!("give --schedule \"CRON\" (or \"R[n]/START/PERIOD\") or --after PARENT");
    }
    spec.mode = ServiceMode::Scheduled(Box::new(job));
    Ok(spec)
}

pub async fn run(c: &Client, cmd: JobCmd) -> Result<()> {
    match cmd {
        JobCmd::Create(a) => {
            let spec = create_spec(&a)?;
            let created: Created = c.post("/v1/services", &spec).await?;
            println!("{}", created.id);
        }
        JobCmd::Ls(o) => ls(c, &o).await?,
        JobCmd::Inspect { jobs, format } => {
            let mut found = Vec::new();
            for j in &jobs {
                found.push(get_job(c, j).await?);
            }
            if crate::format::print_inspect(&format, &found)? {
                return Ok(());
            }
            for (i, j) in found.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", pretty(j));
            }
        }
        JobCmd::Run { job } => {
            let svc: Service = c.post(&format!("/v1/jobs/{}/run", enc(&job)), &serde_json::json!({})).await?;
            println!("{}", svc.spec.name);
        }
        JobCmd::Suspend { jobs } => {
            each(&jobs, |j| async move {
                c.post::<_, Service>(&format!("/v1/jobs/{}/suspend", enc(&j)), &serde_json::json!({}))
                    .await?;
                Ok(())
            })
            .await?
        }
        JobCmd::Resume { jobs } => {
            each(&jobs, |j| async move {
                c.post::<_, Service>(&format!("/v1/jobs/{}/resume", enc(&j)), &serde_json::json!({})).await?;
                Ok(())
            })
            .await?
        }
        JobCmd::Rm { jobs } => {
            each(&jobs, |j| async move {
                // Only jobs: `job rm` never removes a long-running service by mistake.
                let svc = get_job(c, &j).await?;
                c.delete(&format!("/v1/services/{}", svc.id)).await?;
                Ok(())
            })
            .await?
        }
        JobCmd::History { job, format } => {
            let svc = get_job(c, &job).await?;
            let runs: Vec<JobRun> = svc.job.map(|j| j.runs).unwrap_or_default();
            let rows = runs.iter().map(history_row).collect();
            let columns = [
                ("Run", "RUN"),
                ("Cause", "CAUSE"),
                ("State", "STATE"),
                ("Attempts", "ATTEMPTS"),
                ("Exit", "EXIT"),
                ("Scheduled", "SCHEDULED"),
                ("Started", "STARTED"),
                ("Duration", "DURATION"),
                ("Message", "MESSAGE"),
            ];
            crate::format::print_listing(&format, &columns, rows, || print_json(&runs))?;
        }
        JobCmd::Graph { format } => {
            let g: JobGraph = c.get("/v1/jobs/graph").await?;
            match format.as_str() {
                "json" => print_json(&g)?,
                "csv" => print!("{}", g.to_csv()),
                _ => print!("{}", g.to_dot()),
            }
        }
    }
    Ok(())
}

/// Runs `f` for each name, printing the names that worked and failing with the others' errors.
async fn each<F, Fut>(names: &[String], f: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut errors = Vec::new();
    for n in names {
        match f(n.clone()).await {
            Ok(()) => println!("{n}"),
            Err(e) => errors.push(format!("{n}: {e}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

async fn get_job(c: &Client, key: &str) -> Result<Service> {
    let svc: Service = c.get(&format!("/v1/services/{}", enc(key))).await?;
    if svc.spec.mode.scheduled().is_none() {
        bail!("{} is a {} service, not a scheduled job", svc.spec.name, svc.spec.mode.name());
    }
    Ok(svc)
}

async fn ls(c: &Client, o: &ListOpts) -> Result<()> {
    let q = if o.stale { "?stale=true" } else { "" };
    let f = crate::filter::Filters::parse(&o.filter, &["id", "name", "label", "state"])?;
    let mut jobs: Vec<Service> = c.get(&format!("/v1/jobs{q}")).await.context("list jobs")?;
    jobs.retain(|j| {
        f.prefix("id", &[j.id.as_str()])
            && f.prefix("name", &[j.spec.name.as_str()])
            && f.labels("label", &j.spec.labels)
            && f.exact("state", &[job_state(j)])
    });
    jobs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    if o.quiet {
        jobs.iter().for_each(|j| println!("{}", j.id));
        return Ok(());
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let job = j.spec.mode.scheduled().cloned().unwrap_or_default();
            let st = j.job.clone().unwrap_or_default();
            let when = if !job.schedule.is_empty() {
                job.schedule.clone()
            } else {
                format!("after {}", job.after.join(","))
            };
            let next = if job.suspend {
                "suspended".to_string()
            } else {
                st.next_run_at.map_or_else(|| "-".to_string(), |t| t.to_string())
            };
            let last = st.runs.iter().rev().find(|r| r.state != shoal_types::RunState::Running);
            vec![
                j.id.short().to_string(),
                j.spec.name.clone(),
                when,
                next,
                job_state(j).to_string(),
                last.map_or_else(|| "-".into(), |r| format!("{} (run {})", r.state.as_str(), r.number)),
                format!("{}/{}", st.success_count, st.error_count),
            ]
        })
        .collect();
    let columns = [
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Schedule", "SCHEDULE"),
        ("Next", "NEXT RUN"),
        ("State", "STATE"),
        ("Last", "LAST RESULT"),
        ("Counts", "OK/FAILED"),
    ];
    crate::format::print_listing(&o.format, &columns, rows, || print_json(&jobs))
}

fn history_row(r: &JobRun) -> Vec<String> {
    let time = |t: Option<Timestamp>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
    let duration = match r.finished_at {
        Some(end) if r.attempts > 0 => service_cli::fmt_duration(end.since(r.started_at)),
        _ => "-".into(),
    };
    let state = match r.skipped {
        Some(n) if n > 1 => format!("{} ×{n}", r.state.as_str()),
        _ => r.state.as_str().to_string(),
    };
    vec![
        r.number.to_string(),
        r.cause.as_str().to_string(),
        state,
        r.attempts.to_string(),
        r.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
        time(r.scheduled_at),
        r.started_at.to_string(),
        duration,
        r.message.clone(),
    ]
}

fn pretty(svc: &Service) -> String {
    let mut o = String::new();
    let job = svc.spec.mode.scheduled().cloned().unwrap_or_default();
    let st = svc.job.clone().unwrap_or_default();
    let _ = writeln!(o, "ID:\t\t{}", svc.id);
    let _ = writeln!(o, "Name:\t\t{}", svc.spec.name);
    if !job.schedule.is_empty() {
        let tz = if job.time_zone.is_empty() { "UTC" } else { job.time_zone.as_str() };
        let _ = writeln!(o, "Schedule:\t{} ({tz})", job.schedule);
    }
    if !job.after.is_empty() {
        let _ = writeln!(o, "After:\t\t{} ({})", job.after.join(", "), job.trigger.as_str());
    }
    let _ = writeln!(o, "Concurrency:\t{}", job.concurrency.as_str());
    if let Some(d) = job.starting_deadline {
        let _ = writeln!(o, "Deadline:\t{}", service_cli::fmt_duration(d));
    }
    let _ = writeln!(o, "Retries:\t{} (delay {})", job.retries, service_cli::fmt_duration(job.retry_delay));
    if job.soft_error {
        let _ = writeln!(o, "Soft error:\ttrue");
    }
    let _ = writeln!(o, "Suspended:\t{}", job.suspend);
    if let Some(next) = st.next_run_at {
        let _ = writeln!(o, "Next run:\t{next}");
    }
    let _ = writeln!(o, "State:\t\t{}", job_state(svc));
    let _ = writeln!(
        o,
        "Runs:\t\t{} succeeded, {} failed, {} skipped",
        st.success_count, st.error_count, st.skipped_count
    );
    let t = &svc.spec.task_template;
    match (&t.image, t.driver.as_deref()) {
        (Some(i), d) => {
            let _ = writeln!(o, "Image:\t\t{i} ({})", d.unwrap_or("any image driver"));
        }
        (None, _) => {
            let _ = writeln!(o, "Command:\t{}", t.command.join(" "));
        }
    }
    if let Some(r) = st.runs.last() {
        let _ = writeln!(o, "Last run:\t{} {} — {}", r.number, r.state.as_str(), r.message);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> JobCreateArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: JobCreateArgs,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(extra);
        <P as clap::Parser>::try_parse_from(argv).map(|p| p.a).expect("flags")
    }

    #[test]
    fn create_flags_build_a_scheduled_job() {
        let a = args(&[
            "--name",
            "nightly",
            "--schedule",
            "0 3 * * *",
            "--time-zone",
            "Europe/Berlin",
            "--retries",
            "2",
            "--retry-delay",
            "30s",
            "--starting-deadline",
            "5m",
            "--concurrency",
            "replace",
            "--driver",
            "process",
            "sh",
            "-c",
            "exit 0",
        ]);
        let spec = create_spec(&a).expect("spec");
        let job = spec.mode.scheduled().expect("scheduled");
        assert_eq!(job.schedule, "0 3 * * *");
        assert_eq!(job.time_zone, "Europe/Berlin");
        assert_eq!((job.retries, job.retry_delay), (2, Duration::from_secs(30)));
        assert_eq!(job.starting_deadline, Some(Duration::from_secs(300)));
        assert_eq!(job.concurrency, ConcurrencyPolicy::Replace);
        assert_eq!(spec.task_template.command, vec!["sh", "-c", "exit 0"]);

        let a = args(&[
            "--name",
            "load",
            "--after",
            "t1,t2",
            "--trigger",
            "all-done",
            "--driver",
            "process",
            "true",
        ]);
        let spec = create_spec(&a).expect("spec");
        let job = spec.mode.scheduled().expect("scheduled");
        assert_eq!(job.after, vec!["t1", "t2"]);
        assert_eq!(job.trigger, Trigger::AllDone);
    }

    #[test]
    fn flags_a_job_cannot_honour_are_refused() {
        for extra in [
            &["--replicas", "3"][..],
            &["--restart-condition", "none"][..],
            &["--update-parallelism", "2"][..],
            &["--mode", "global"][..],
        ] {
            let mut argv = vec!["--name", "j", "--schedule", "@daily"];
            argv.extend_from_slice(extra);
            argv.extend_from_slice(&["--driver", "process", "true"]);
            let e = create_spec(&args(&argv)).expect_err("refused");
            assert!(e.to_string().contains("job create"), "{e}");
        }
        let e = create_spec(&args(&["--name", "j", "--driver", "process", "true"])).expect_err("no schedule");
        assert!(e.to_string().contains("--schedule"), "{e}");
    }
}
