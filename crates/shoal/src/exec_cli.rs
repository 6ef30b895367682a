//! `shoal task exec [-i] [-t] [--timeout SECS] TASK -- CMD [ARG...]`: runs a command inside a
//! running task's namespaces, on whichever node runs it (like `docker exec` / `nomad alloc exec`)
//! and exits with its exit code.
//!
//! - Without `-i`/`-t`: the daemon answers once the command ended (or was killed at `--timeout`)
//!   with its output, printed as it came.
//! - `-i`: the CLI's stdin streams to the command's stdin (EOF closes it) and its stdout and
//!   stderr stream back live, apart (`shoal_api::exec_stream`, an HTTP/1.1 upgrade).
//! - `-t`: the command runs on a pseudo-terminal in the task; with `-i` this terminal is put in raw
//!   mode (restored on every way out, signals included) and its size is sent at start and on
//!   every SIGWINCH. `-t` needs a terminal on stdin, as docker's does.
//!
//! The session lasts until the command exits; the CLI ending (Ctrl-C without `-t`, a signal, a
//! closed connection) kills the command. `--timeout` applies only without `-i`/`-t`.

use anyhow::{bail, Result};
use shoal_api::exec::{ExecRequest, ExecResponse, DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS};
use shoal_api::exec_stream::{read_frame, write_frame, ExecConnection, ExecStreamRequest, Frame};
use shoal_api::{Client, ClientError};
use shoal_driver::WindowSize;
use std::io::Write;
use std::time::Duration;

/// The refusal of `-t` when stdin is not a terminal (docker's words).
pub const NOT_A_TTY: &str = "the input device is not a TTY";

/// The exit code for a command that cannot be started in the task (not found, not executable), as
/// a shell's and `docker exec`'s.
const CANNOT_RUN: u8 = 127;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Seconds the command may run before it is killed (1-600; `30`, `30s` or `2m`); not with
    /// -i/-t, which last until the command exits or the CLI goes away.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Keep stdin open (docker's -i): it streams to the command's stdin, and its output streams
    /// back while it runs.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal in the task (docker's -t); stdin must be a terminal.
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
        return interactive(c, a).await;
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

/// The terminal's size, from stdin or else stdout.
fn window_size() -> Option<WindowSize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdout()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some(WindowSize { rows: ws.ws_row, cols: ws.ws_col })
}

/// The terminal on stdin in raw mode (keys go to the remote terminal as typed: Ctrl-C, Ctrl-D,
/// arrows), restored when dropped: on every return, error and panic; the signals that would end
/// the CLI without unwinding (SIGTERM, SIGHUP) end the session instead.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let saved =
            tcgetattr(std::io::stdin()).map_err(|e| anyhow::anyhow!("reading the terminal's mode: {e}"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw)
            .map_err(|e| anyhow::anyhow!("putting the terminal in raw mode: {e}"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use rustix::termios::{tcsetattr, OptionalActions};
        if let Err(e) = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved) {
            eprintln!("Error: restoring the terminal's mode: {e} (run `reset`)");
        }
    }
}

/// `-i` and/or `-t`: a streamed session.
async fn interactive(c: &Client, a: ExecArgs) -> Result<()> {
    use std::io::IsTerminal;
    if a.tty && !std::io::stdin().is_terminal() {
        bail!(NOT_A_TTY);
    }
    let id = resolve(c, &a.task).await?;
    let req = ExecStreamRequest {
        cmd: a.cmd,
        stdin: a.interactive,
        tty: a.tty,
        size: if a.tty { window_size() } else { None },
    };
    let conn = match c.exec_stream(&id, &req).await {
        Ok(conn) => conn,
        Err(ClientError::Api { code, message, .. }) if code == "cannot_run" => {
            return Err(Exit { code: CANNOT_RUN, message: Some(message) }.into());
        }
        Err(e) => return Err(e.into()),
    };
    // Raw only when the keys go to the command: with -t alone, Ctrl-C still ends the CLI (and so
    // the command), as with `docker exec -t`.
    let raw = if a.tty && a.interactive { Some(RawMode::enter()?) } else { None };
    let ended = session(conn, a.interactive, a.tty).await;
    drop(raw);
    match exit_status(ended?) {
        0 => Ok(()),
        code => Err(Exit { code, message: None }.into()),
    }
}

/// Reads stdin on a thread of its own (a blocking read that may never return must not hold the
/// async runtime at exit) and sends it as frames; EOF becomes a stdin-EOF frame.
fn pump_stdin(tx: tokio::sync::mpsc::Sender<Frame>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; shoal_driver::exec_stream::CHUNK];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Frame::StdinEof);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Frame::Stdin(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = tx.blocking_send(Frame::StdinEof);
                    return;
                }
            }
        }
    });
}

/// Writes output where it belongs; false once nobody reads it.
fn show(to_stderr: bool, bytes: &[u8]) -> Result<bool> {
    let written = if to_stderr {
        let mut e = std::io::stderr().lock();
        e.write_all(bytes).and_then(|_| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(bytes).and_then(|_| o.flush())
    };
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs the session until the command's exit code arrives; returns it.
async fn session(conn: ExecConnection, interactive: bool, tty: bool) -> Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(8);
    // One writer for stdin and resizes. It never half-closes the connection: that would read as
    // the client going away, which kills the command.
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame(&mut wr, &f).await.is_err() {
                break;
            }
        }
        // Hold the write half until the session ends (the runtime drops it).
        std::future::pending::<()>().await;
    });
    if interactive {
        pump_stdin(tx.clone());
    }
    if tty {
        let tx = tx.clone();
        let mut winch = signal(SignalKind::window_change())?;
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some(size) = window_size() {
                    if tx.send(Frame::Resize(size)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd) => f,
            _ = term.recv() => return Ok(128 + 15),
            _ = hup.recv() => return Ok(128 + 1),
        };
        match frame {
            Ok(Some(Frame::Stdout(b))) => {
                if !show(false, &b)? {
                    // Like a pipeline's SIGPIPE: stop, which ends the command.
                    return Ok(128 + 13);
                }
            }
            Ok(Some(Frame::Stderr(b))) => {
                show(true, &b)?;
            }
            Ok(Some(Frame::Exit(code))) => return Ok(code),
            Ok(Some(Frame::Error(m))) => bail!("exec failed: {m}"),
            Ok(Some(f)) => bail!("the daemon sent an unexpected frame: {f:?}"),
            Ok(None) => bail!("the connection to the daemon ended before the command did"),
            Err(e) => bail!("the connection to the daemon broke: {e}"),
        }
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
