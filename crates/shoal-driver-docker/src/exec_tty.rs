//! Interactive exec for docker tasks (`shoal task exec -i/-t`): the Engine's exec with `tty` and
//! stdin attached, as `docker exec -it` does (create, start attached on the hijacked connection,
//! resize, inspect for the exit code). Stdin EOF half-closes the hijacked connection, which the
//! engine passes on by closing the command's stdin. Docker has no API to end an exec: a client
//! that goes away kills its process (the engine runs on this host).

use crate::{kill_exec, map_err};
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::Docker;
use futures_util::StreamExt;
use shoal_driver::exec_stream::{
    ExecInput, ExecOutput, ExecSession, ExecStreamOptions, SessionIo, WindowSize, CHUNK,
};
use shoal_driver::DriverError;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How long the exit code may lag the end of the output.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn exec_stream(
    docker: &Docker,
    container_id: &str,
    cmd: &[String],
    opts: &ExecStreamOptions,
) -> Result<ExecSession, DriverError> {
    if cmd.first().is_none_or(|p| p.is_empty()) {
        return Err(DriverError::Invalid("exec needs a command".into()));
    }
    let mut config: ExecConfig = CreateExecOptions {
        cmd: Some(cmd.to_vec()),
        attach_stdin: Some(opts.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(opts.tty),
        // What `docker exec -t` sets.
        env: opts.tty.then(|| vec!["TERM=xterm".to_string()]),
        ..Default::default()
    }
    .into();
    // Engines from API 1.42 size the terminal from the start; older ones ignore it (resized below).
    config.console_size =
        opts.size.filter(|_| opts.tty).map(|s| vec![usize::from(s.rows), usize::from(s.cols)]);
    let exec = docker.create_exec(container_id, config).await.map_err(|e| match e {
        DockerError::DockerResponseServerError { status_code: 409, message } => {
            DriverError::Runtime(format!("the container is not running: {message}"))
        }
        e => map_err("creating the exec", e),
    })?;
    let started = docker
        .start_exec(&exec.id, Some(StartExecOptions { detach: false, tty: opts.tty, output_capacity: None }))
        .await
        .map_err(|e| map_err("starting the exec", e))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(DriverError::Runtime("the engine started the exec detached".into()));
    };
    let (session, io) = ExecSession::channel();
    tokio::spawn(run(docker.clone(), exec.id, output, input, io, *opts));
    Ok(session)
}

type OutputStream = Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>;

async fn run(
    docker: Docker,
    exec_id: String,
    mut stream: OutputStream,
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    io: SessionIo,
    opts: ExecStreamOptions,
) {
    let SessionIo { input, output } = io;
    if let Some(size) = opts.size.filter(|_| opts.tty) {
        let docker = docker.clone();
        let id = exec_id.clone();
        tokio::spawn(async move { resize(&docker, &id, size, 10).await });
    }
    let writer = tokio::spawn(write_input(input, stdin, docker.clone(), exec_id.clone()));
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = output.closed() => {
                tracing::debug!(exec = %exec_id, "exec client gone: killing the command");
                kill(&docker, &exec_id).await;
                writer.abort();
                return;
            }
        };
        let (bytes, stdout) = match item {
            None => break,
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => (message, true),
            Some(Ok(LogOutput::StdErr { message })) => (message, false),
            Some(Ok(LogOutput::StdIn { .. })) => continue,
            Some(Err(e)) => {
                writer.abort();
                kill(&docker, &exec_id).await;
                let _ = output.send(ExecOutput::Failed(format!("reading the exec's output: {e}"))).await;
                return;
            }
        };
        for chunk in bytes.chunks(CHUNK) {
            let msg =
                if stdout { ExecOutput::Stdout(chunk.to_vec()) } else { ExecOutput::Stderr(chunk.to_vec()) };
            if output.send(msg).await.is_err() {
                kill(&docker, &exec_id).await;
                writer.abort();
                return;
            }
        }
    }
    writer.abort();
    let last = match exit_code(&docker, &exec_id).await {
        Ok(code) => ExecOutput::Exit(code),
        Err(e) => ExecOutput::Failed(e.to_string()),
    };
    let _ = output.send(last).await;
}

/// Kills the exec's process; one that has not started yet (the client left at once) is waited
/// for a moment.
async fn kill(docker: &Docker, exec_id: &str) {
    let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
    loop {
        match docker.inspect_exec(exec_id).await {
            Ok(info) if info.running == Some(true) => return kill_exec(info.pid),
            // It ended.
            Ok(info) if info.exit_code.is_some() => return,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => return tracing::warn!(exec = %exec_id, "an exec that never started was not killed"),
            Err(e) => return tracing::warn!(exec = %exec_id, error = %e, "inspecting an exec to kill it"),
        }
    }
}

async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i32, DriverError> {
    let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
    loop {
        let info = docker.inspect_exec(exec_id).await.map_err(|e| map_err("inspecting the exec", e))?;
        if info.running != Some(true) {
            return Ok(info.exit_code.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DriverError::Runtime("the exec's output ended but it is still running".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sizes the exec's terminal; the engine refuses until the exec's process runs, which may be a
/// moment after the start answered, so the first size is retried (as the docker CLI does).
async fn resize(docker: &Docker, exec_id: &str, size: WindowSize, attempts: u32) {
    for attempt in 1..=attempts {
        let opts = ResizeExecOptions { height: size.rows, width: size.cols };
        match docker.resize_exec(exec_id, opts).await {
            Ok(()) => return,
            Err(e) if attempt == attempts => {
                tracing::debug!(exec = %exec_id, error = %e, "resizing an exec's terminal");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await,
        }
    }
}

async fn write_input(
    mut input: tokio::sync::mpsc::Receiver<ExecInput>,
    mut stdin: Pin<Box<dyn AsyncWrite + Send>>,
    docker: Docker,
    exec_id: String,
) {
    let mut open = true;
    while let Some(msg) = input.recv().await {
        match msg {
            ExecInput::Stdin(data) if open => {
                if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
                    open = false;
                }
            }
            ExecInput::Stdin(_) => {}
            ExecInput::StdinEof => {
                if open {
                    let _ = stdin.shutdown().await;
                    open = false;
                }
            }
            ExecInput::Resize(size) => resize(&docker, &exec_id, size, 1).await,
        }
    }
}
