//! Interactive exec for oci tasks (`shoal task exec -i/-t`): `runc exec` in the foreground.
//!
//! - Without a terminal runc hands its own stdin, stdout and stderr (our pipes) to the process.
//! - With `-t`, runc makes the container's terminal itself and relays between it and a terminal
//!   of its own, which must be one: runc's stdin is put in raw mode and its size copied to the
//!   container's terminal at start and on every SIGWINCH (runc 1.1 refuses a `-t` whose stdin is
//!   not a terminal; `--console-socket` works only with `-d`, which would lose the exit code). So
//!   runc runs on a pseudo-terminal allocated here, as its session leader (`setsid --ctty`):
//!   resizing that terminal sends runc the SIGWINCH it forwards.
//! - Killing runc does not kill the process in the container, so a client that goes away kills
//!   the process runc wrote to `--pid-file` (waiting for runc to write it, as a client can leave
//!   before it did), then runc.

use shoal_driver::exec_stream::{self, BeforeKill, ExecSession, ExecStreamOptions};
use shoal_driver::DriverError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Removes the pid file when the session is over (the kill closure owns it).
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How long a kill waits for runc to write the pid file (it writes it just after the process
/// started, so a client that leaves at once can be faster).
const PID_FILE_WAIT: Duration = Duration::from_secs(5);

impl PidFile {
    fn read(&self) -> Option<rustix::process::Pid> {
        let pid = std::fs::read_to_string(&self.0).ok()?.trim().parse::<i32>().ok()?;
        rustix::process::Pid::from_raw(pid)
    }

    /// Kills the process runc started, once runc has said which it is; runc itself (`runc`, its
    /// pid) is killed by the caller afterwards.
    fn kill(&self, runc: Option<u32>) {
        let deadline = Instant::now() + PID_FILE_WAIT;
        let pid = loop {
            if let Some(p) = self.read() {
                break p;
            }
            // runc ended (or never ran): so did the process it ran, or it never started.
            if !runc.is_some_and(running) || Instant::now() >= deadline {
                tracing::debug!(file = %self.0.display(), "no pid file for the exec: killing runc only");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
            tracing::debug!(pid = pid.as_raw_nonzero().get(), error = %e, "killing an exec's process");
        }
    }
}

/// Whether `pid` is a live process (not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

pub(crate) fn exec_stream(
    runc: &Path,
    container_id: &str,
    task_dir: &Path,
    cmd: &[String],
    opts: &ExecStreamOptions,
) -> Result<ExecSession, DriverError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if cmd.first().is_none_or(|p| p.is_empty()) {
        return Err(DriverError::Invalid("exec needs a command".into()));
    }
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid_file = PidFile(task_dir.join(format!("exec-{}-{seq}.pid", std::process::id())));
    let mut c = exec_stream::command(opts.tty, runc);
    c.arg("exec");
    if opts.tty {
        c.args(["-t", "--env", "TERM=xterm"]);
    }
    c.arg("--pid-file").arg(&pid_file.0).arg(container_id).args(cmd);
    let before_kill: BeforeKill = Box::new(move |runc| pid_file.kill(runc));
    exec_stream::spawn(c, opts, Some(before_kill))
}
