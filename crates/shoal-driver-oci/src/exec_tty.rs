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
//!   the process runc wrote to `--pid-file` (then runc exits too).

use shoal_driver::exec_stream::{self, BeforeKill, ExecSession, ExecStreamOptions};
use shoal_driver::DriverError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Removes the pid file when the session is over (the kill closure owns it).
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl PidFile {
    fn kill(&self) {
        let pid = std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse::<i32>().ok());
        match pid.and_then(rustix::process::Pid::from_raw) {
            Some(p) => {
                if let Err(e) = rustix::process::kill_process(p, rustix::process::Signal::KILL) {
                    tracing::debug!(pid = p.as_raw_nonzero().get(), error = %e, "killing an exec's process");
                }
            }
            // Not started yet: killing runc (its process group) is all there is to do.
            None => tracing::debug!(file = %self.0.display(), "no pid file for the exec yet"),
        }
    }
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
    let before_kill: BeforeKill = Box::new(move || pid_file.kill());
    exec_stream::spawn(c, opts, Some(before_kill))
}
