//! `shoal task exec [--timeout SECS] TASK -- CMD [ARG...]`: runs a command inside a running task's
//! namespaces, on whichever node runs it (like `docker exec` / `nomad alloc exec`, without a
//! terminal), prints its output as it came and exits with its exit code.

use anyhow::{bail, Result};
use shoal_api::exec::{ExecRequest, ExecResponse, DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS};
use shoal_api::{Client, ClientError};
use std::io::Write;
use std::time::Duration;

/// The refusal of docker's `-i`/`-t`/`-it`.
pub const NO_INTERACTIVE: &str =
    "interactive exec (-i/-t) is not supported yet; run a command without a terminal";

/// The exit code for a command that cannot be started in the task (not found, not executable), as
/// a shell's and `docker exec`'s.
const CANNOT_RUN: u8 = 127;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Seconds the command may run before it is killed (1-600; `30`, `30s` or `2m`).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Keep stdin open (docker's -i): not supported yet, refused.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal (docker's -t): not supported yet, refused.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The task (id or unique id prefix; `shoal service ps` lists them).
    pub task: String,
    /// The command and its arguments, after `--` (no shell: `sh -c '...'` for one).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

fn parse_timeout(s: &str) -> Result<u64, String> {
    let secs = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => shoal_types::time::duration::parse(s)
            .map_err(|_| format!("expected seconds (30) or a duration (30s, 2m), got {s:?}"))?
            .as_secs(),
    };
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {s:?}"));
    }
    Ok(secs)
}

/// How the CLI ends after an exec: the command's exit code, and a message for stderr when the
/// command could not be started. `main` exits with it instead of printing an error.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: Option<String>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{m}"),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// A process exit status from the command's: 0-255 as it is; anything else (a driver's -1 for
/// "unknown") is 255, never a success.
fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}

/// The full id of the task `key` names (an id or a unique prefix, as `task inspect` takes); a key
/// that matches nothing goes to the daemon as it is, which says that no such task exists.
async fn resolve(c: &Client, key: &str) -> Result<String> {
    let all: Vec<shoal_types::Task> = c.get("/v1/tasks").await?;
    if all.iter().any(|t| t.id.as_str() == key) {
        return Ok(key.to_string());
    }
    let mut m = all.iter().filter(|t| t.id.as_str().starts_with(key));
    match (m.next(), m.next()) {
        (Some(t), None) => Ok(t.id.to_string()),
        (Some(_), Some(_)) => bail!("task {key} is ambiguous: give more of its id"),
        (None, _) => Ok(key.to_string()),
    }
}

pub async fn run(c: &Client, a: ExecArgs) -> Result<()> {
    if a.interactive || a.tty {
        bail!(NO_INTERACTIVE);
    }
    let id = resolve(c, &a.task).await?;
    // The daemon answers once the command has ended or was killed at its limit.
    let c = c.with_timeout(Duration::from_secs(a.timeout) + Duration::from_secs(30));
    let req = ExecRequest { cmd: a.cmd, timeout_secs: a.timeout };
    let r: ExecResponse = match c.post(&format!("/v1/tasks/{id}/exec"), &req).await {
        Ok(r) => r,
        Err(ClientError::Api { code, message, .. }) if code == "cannot_run" => {
            return Err(Exit { code: CANNOT_RUN, message: Some(message) }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(r.output.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    match exit_status(r.exit_code) {
        0 => Ok(()),
        code => Err(Exit { code, message: None }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_outside_a_byte_never_read_as_success() {
        assert_eq!([0, 7, 124, 255, 256, -1, i32::MIN].map(exit_status), [0, 7, 124, 255, 255, 255, 255]);
    }

    #[test]
    fn timeouts_are_seconds_or_durations_within_the_limit() {
        assert_eq!(parse_timeout("45"), Ok(45));
        assert_eq!(parse_timeout("2m"), Ok(120));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("601").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
