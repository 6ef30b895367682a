//! `shoal service logs [-f] [-n N] [--since 10m|RFC3339] [-t] SERVICE|TASK`: the lines of every
//! task of a service, from whichever nodes ran them, or of one task (an id or an id's unique
//! prefix; the service is looked for first), prefixed like `docker service logs`:
//! `web.1.abcdefghijkl@node1    | line`. `--no-task-ids` leaves the task id out (`web.1@node1`),
//! `--no-trunc` shows it whole, `--no-resolve` shows the service's and the node's ids instead of
//! their names, `--raw` no prefix at all. A global service's task is named by its node's id where
//! a replicated one has its slot. With more than nine replicas the prefixes are padded so that
//! the bars line up, as docker's are.

use anyhow::{bail, Context, Result};
use shoal_api::logs::{LogOrigin, LogRecord};
use shoal_api::{Client, ClientError};
use std::io::Write;
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The service (name, id or id prefix), or one task (id or id prefix).
    #[arg(value_name = "SERVICE|TASK")]
    pub target: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task (`all`: every line).
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Only lines since a time: a duration ago (`10m`, `2h`) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Show each line's timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print the lines without the task prefix.
    #[arg(long)]
    pub raw: bool,
    /// Leave the task ids out of the prefix (`web.1@node1`).
    #[arg(long)]
    pub no_task_ids: bool,
    /// Show the task ids in the prefix whole.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the service's and the node's ids instead of their names.
    #[arg(long)]
    pub no_resolve: bool,
    /// docker's extra log attributes: Shoal's task logs have none (refused).
    #[arg(long)]
    pub details: bool,
}

fn since_nanos(s: &str) -> Result<u64> {
    let t = match shoal_types::time::duration::parse(s) {
        Ok(d) => SystemTime::now().checked_sub(d).context("--since is too far back")?,
        Err(_) => humantime::parse_rfc3339_weak(s)
            .with_context(|| format!("--since {s:?}: give a duration (10m) or an RFC 3339 time"))?,
    };
    Ok(shoal_types::Timestamp::from_system_time(t).as_nanos())
}

/// `--tail`: a number of lines, or `all` (docker's default).
fn tail_lines(s: &str) -> Result<Option<usize>> {
    if s == "all" {
        return Ok(None);
    }
    s.parse().map(Some).with_context(|| format!("--tail {s:?}: give a number of lines or `all`"))
}

/// How the prefix names a task.
#[derive(Clone, Copy, Debug, Default)]
struct Naming {
    task_ids: bool,
    trunc: bool,
    resolve: bool,
    /// Digits of the highest slot (the replica count): shorter slots are padded to it.
    slot_digits: usize,
}

/// `web.1.abcdefghijkl@node1`, as `naming` says; a line without its origin (from an older
/// daemon) keeps the prefix the daemon made.
fn prefix(r: &LogRecord, naming: &Naming) -> String {
    let Some(o) = &r.origin else { return r.source.clone() };
    let LogOrigin { service_id, service_name, slot, node_id, node_name } = o;
    let pick = |name: &str, id: &str| {
        if naming.resolve && !name.is_empty() {
            name.to_string()
        } else {
            id.to_string()
        }
    };
    let slot_text = slot.map_or_else(|| node_id.clone(), |s| s.to_string());
    let mut p = format!("{}.{slot_text}", pick(service_name, service_id));
    if naming.task_ids {
        p.push('.');
        if naming.trunc {
            p.extend(r.task_id.chars().take(12));
        } else {
            p.push_str(&r.task_id);
        }
    }
    p.push('@');
    p.push_str(&pick(node_name, node_id));
    if slot.is_some() {
        p.extend(std::iter::repeat_n(' ', naming.slot_digits.saturating_sub(slot_text.len())));
    }
    p
}

/// Whether the daemon said that there is no such service (or task).
fn not_found(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<ClientError>(), Some(ClientError::Api { status: 404, .. }))
}

pub async fn run(c: &Client, a: LogsArgs) -> Result<()> {
    if a.details {
        bail!("--details: Shoal's task logs carry no extra attributes (docker's log-driver labels and env)");
    }
    let mut q = format!("follow={}", a.follow);
    if let Some(t) = a.tail.as_deref().map(tail_lines).transpose()?.flatten() {
        q.push_str(&format!("&tail={t}"));
    }
    if let Some(s) = &a.since {
        q.push_str(&format!("&since={}", since_nanos(s)?));
    }
    let target = crate::service_cli::enc(&a.target);
    let mut naming =
        Naming { task_ids: !a.no_task_ids, trunc: !a.no_trunc, resolve: !a.no_resolve, slot_digits: 0 };
    let render = |naming: Naming| {
        move |line: &[u8]| {
            let r = serde_json::from_slice::<LogRecord>(line).ok()?;
            // docker's order: time, then the task, then the line.
            let mut text = String::new();
            if a.timestamps {
                text.push_str(&shoal_api::logs::record_time(&r).to_string());
                text.push(' ');
            }
            if !a.raw {
                text.push_str(&prefix(&r, &naming));
                text.push_str("    | ");
            }
            text.push_str(&r.line);
            Some(text)
        }
    };
    // A service first (its replica count pads the slots, as docker's do), else a task.
    let service = match c.get::<shoal_types::Service>(&format!("/v1/services/{target}")).await {
        Ok(s) => Some(s),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(s) = &service {
        if let shoal_types::ServiceMode::Replicated { replicas } = s.spec.mode {
            naming.slot_digits = replicas.max(1).to_string().len();
        }
        return print_stream(c, &format!("/v1/services/{}/logs?{q}", s.id), render(naming)).await;
    }
    // Not a service's id or name: an id prefix of one, or a task.
    match print_stream(c, &format!("/v1/services/{target}/logs?{q}"), render(naming)).await {
        Err(e) if not_found(&e) => {}
        other => return other,
    }
    match print_stream(c, &format!("/v1/tasks/{target}/logs?{q}"), render(naming)).await {
        Err(e) if not_found(&e) => bail!("no such task or service: {}", a.target),
        other => other,
    }
}

/// Prints a stream of lines from the daemon (NDJSON) as `render` turns them into text (lines it
/// cannot read are skipped), as they arrive; a closed pipe (`| head`) ends it quietly.
pub async fn print_stream(
    c: &Client,
    path: &str,
    mut render: impl FnMut(&[u8]) -> Option<String>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    c.get_lines(path, |line| {
        let Some(text) = render(line) else { return true };
        if let Err(e) = writeln!(out, "{text}").and_then(|_| out.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                failed = Some(e);
            }
            return false;
        }
        true
    })
    .await?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
