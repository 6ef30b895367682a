//! Interactive exec (`shoal task exec -i/-t`): the agent's part is the same check as
//! [`Agent::exec_task`] (a task this node runs now), then the driver's
//! [`Driver::exec_stream`](shoal_driver::Driver::exec_stream), whose session the API streams.

use crate::{Agent, ExecError};
use shoal_driver::{DriverError, ExecSession, ExecStreamOptions};
use shoal_types::TaskId;

impl Agent {
    /// Starts `cmd` inside a running task's namespaces through its driver, with its input and
    /// output streamed (see [`shoal_driver::exec_stream`]; dropping the session's output kills
    /// the command). Refused like [`Agent::exec_task`]; a driver that cannot do it says so
    /// ([`ExecError::Driver`] with [`DriverError::Unsupported`]).
    pub async fn exec_task_stream(
        &self,
        id: &TaskId,
        cmd: &[String],
        opts: &ExecStreamOptions,
    ) -> Result<ExecSession, ExecError> {
        if cmd.first().is_none_or(|p| p.is_empty()) {
            return Err(ExecError::EmptyCommand);
        }
        let (driver, handle) = self.running_task_handle(id)?;
        tracing::info!(task = %id, driver = driver.name(), tty = opts.tty, stdin = opts.stdin, "interactive exec in a task");
        driver.exec_stream(&handle, cmd, opts).await.map_err(|e| match e {
            DriverError::Invalid(why) => ExecError::CannotRun(why),
            DriverError::NotFound(_) => ExecError::Ended(id.clone()),
            e => ExecError::Driver(e),
        })
    }
}
