//! Interactive exec for process tasks (`shoal task exec -i/-t`): the command runs as `exec` runs
//! it (the task's environment, working directory and user; `nsenter` into the task's network and
//! mount namespaces when it has its own), on pipes or on a pseudo-terminal allocated here that
//! becomes its controlling terminal (`setsid --ctty`). Killed, with its process group, when the
//! client goes away.

use crate::{resolve_program, ProcessDriver, DEFAULT_PATH};
use shoal_driver::exec_stream::{self, ExecSession, ExecStreamOptions};
use shoal_driver::{DriverError, Handle};

pub(crate) fn exec_stream(
    handle: &Handle,
    cmd: &[String],
    opts: &ExecStreamOptions,
) -> Result<ExecSession, DriverError> {
    let state = ProcessDriver::state(handle)?;
    let Some(program) = cmd.first() else {
        return Err(DriverError::Invalid("exec needs a command".into()));
    };
    let path_var = state.env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
    let resolved = resolve_program(program, path_var, &state.cwd)
        .ok_or_else(|| DriverError::Invalid(format!("executable not found: {program}")))?;
    let mut c = if state.own_namespaces {
        let mut c = exec_stream::command(opts.tty, exec_stream::host_program("nsenter"));
        c.arg(format!("--target={}", state.launched.child_pid)).args(["--net", "--mount"]);
        if let Some(g) = state.gid {
            c.arg(format!("--setgid={g}"));
        }
        if let Some(u) = state.uid {
            c.arg(format!("--setuid={u}"));
        }
        c.arg("--").arg(resolved);
        c
    } else {
        let mut c = exec_stream::command(opts.tty, resolved);
        if let Some(g) = state.gid {
            c.gid(g);
        }
        if let Some(u) = state.uid {
            c.uid(u);
        }
        c
    };
    c.args(&cmd[1..]).env_clear().envs(&state.env).current_dir(&state.cwd);
    if opts.tty && !state.env.contains_key("TERM") {
        // What `docker exec -t` sets: programs that draw (top, vi, less) need to know the terminal.
        c.env("TERM", "xterm");
    }
    exec_stream::spawn(c, opts, None)
}
