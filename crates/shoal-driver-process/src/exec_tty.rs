//! Interactive exec for process tasks (`shoal task exec -i/-t`): the command runs as `exec` runs
//! it (the task's environment, working directory and user; `nsenter` into the task's network and
//! mount namespaces when it has its own), on pipes or on a pseudo-terminal allocated here that
//! becomes its controlling terminal (`setsid --ctty`). Killed, with its process group, when the
//! client goes away.

use crate::{exec_command, ProcessDriver};
use shoal_driver::exec_stream::{self, ExecSession, ExecStreamOptions};
use shoal_driver::{DriverError, Handle};

pub(crate) fn exec_stream(
    handle: &Handle,
    cmd: &[String],
    opts: &ExecStreamOptions,
) -> Result<ExecSession, DriverError> {
    let state = ProcessDriver::state(handle)?;
    let nsenter = exec_stream::host_program("nsenter");
    let mut c = exec_command(&state, cmd, nsenter.as_os_str(), |p| exec_stream::command(opts.tty, p))?;
    if opts.tty && !state.env.contains_key("TERM") {
        // What `docker exec -t` sets: programs that draw (top, vi, less) need to know the terminal.
        c.env("TERM", "xterm");
    }
    exec_stream::spawn(c, opts, None)
}
