//! `shoal service logs [-f] [--tail N] [--since 10m|RFC3339] [-t] SERVICE`: the lines of every
//! task of a service, from whichever nodes ran them, prefixed with `name.slot.task@node |` like
//! `docker service logs`.

use anyhow::{Context, Result};
use shoal_api::logs::LogRecord;
use shoal_api::Client;
use std::io::Write;
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The service (name or id).
    pub service: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Only lines since a time: a duration ago (`10m`, `2h`) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Show each line's timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Print the lines without the task prefix.
    #[arg(long)]
    pub raw: bool,
}

fn since_nanos(s: &str) -> Result<u64> {
    let t = match shoal_types::time::duration::parse(s) {
        Ok(d) => SystemTime::now().checked_sub(d).context("--since is too far back")?,
        Err(_) => humantime::parse_rfc3339_weak(s)
            .with_context(|| format!("--since {s:?}: give a duration (10m) or an RFC 3339 time"))?,
    };
    Ok(shoal_types::Timestamp::from_system_time(t).as_nanos())
}

pub async fn run(c: &Client, a: LogsArgs) -> Result<()> {
    let mut q = format!("follow={}", a.follow);
    if let Some(t) = a.tail {
        q.push_str(&format!("&tail={t}"));
    }
    if let Some(s) = &a.since {
        q.push_str(&format!("&since={}", since_nanos(s)?));
    }
    let path = format!("/v1/services/{}/logs?{q}", a.service);
    print_stream(c, &path, |line| {
        let r = serde_json::from_slice::<LogRecord>(line).ok()?;
        let mut text = String::new();
        if !a.raw {
            text.push_str(&r.source);
            text.push_str("    | ");
        }
        if a.timestamps {
            text.push_str(&shoal_api::logs::record_time(&r).to_string());
            text.push(' ');
        }
        text.push_str(&r.line);
        Some(text)
    })
    .await
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
