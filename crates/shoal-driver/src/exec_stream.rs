//! Interactive exec (`shoal task exec -i/-t`): a command in a task's context whose stdin, output
//! and exit code are streamed while it runs, on a pseudo-terminal when asked.
//!
//! A driver answers [`crate::Driver::exec_stream`] with an [`ExecSession`]: `input` takes
//! [`ExecInput`] (stdin bytes, stdin EOF, terminal resizes), `output` yields [`ExecOutput`]
//! (stdout/stderr bytes, with a terminal everything is stdout) and ends with exactly one
//! [`ExecOutput::Exit`] or [`ExecOutput::Failed`], after all of the command's output.
//! **Dropping `output` before that kills the command** (the client went away); dropping `input`
//! only means no more input. Both channels are bounded ([`CHANNEL_DEPTH`] messages of at most
//! [`CHUNK`] bytes): a client that does not read stops the command's output (it blocks on its
//! terminal or pipe), a command that does not read its stdin stops the client's input.
//!
//! For runtimes that exec through a local program (`nsenter`, `runc exec`), [`command`] and
//! [`spawn`] do the work: pipes, or a pseudo-terminal allocated here whose slave becomes the
//! command's controlling terminal (`setsid --ctty`, so no code runs between fork and exec).

use crate::DriverError;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The most bytes in one input or output message.
pub const CHUNK: usize = 32 * 1024;
/// Messages buffered each way.
pub const CHANNEL_DEPTH: usize = 16;
/// After the command exited, how long its output may stay silent before the session ends
/// without waiting for the end of its streams (a background process it started still holds them).
pub const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// A terminal's size in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// How to run an interactive exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStreamOptions {
    /// The command reads the client's stdin (docker's `-i`); without it its stdin is empty (or the
    /// terminal nobody types on).
    pub stdin: bool,
    /// A pseudo-terminal for the command's stdin, stdout and stderr (docker's `-t`).
    pub tty: bool,
    /// The terminal's size at start (with `tty`).
    pub size: Option<WindowSize>,
}

/// From the client to the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    /// The client's stdin ended: the command's stdin is closed (without a terminal; a terminal
    /// stays open, as `docker exec -t` leaves it).
    StdinEof,
    Resize(WindowSize),
}

/// From the command to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// It ended with this code (128 + signal when killed). Last message.
    Exit(i32),
    /// The session broke (the runtime failed); the command's fate is unknown. Last message.
    Failed(String),
}

/// A running interactive exec, as the agent sees it.
#[derive(Debug)]
pub struct ExecSession {
    pub input: mpsc::Sender<ExecInput>,
    pub output: mpsc::Receiver<ExecOutput>,
}

/// The driver's ends of an [`ExecSession`].
#[derive(Debug)]
pub struct SessionIo {
    pub input: mpsc::Receiver<ExecInput>,
    pub output: mpsc::Sender<ExecOutput>,
}

impl ExecSession {
    /// A session and the driver's ends of its channels.
    pub fn channel() -> (ExecSession, SessionIo) {
        let (in_tx, in_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
        (ExecSession { input: in_tx, output: out_rx }, SessionIo { input: in_rx, output: out_tx })
    }
}

/// The exit code of a finished process: its code, or 128 + the signal that killed it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// `program` in the agent's `PATH` (the command's own environment may have another).
pub fn host_program(program: &str) -> PathBuf {
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(program))
}

/// The command to pass to [`spawn`]: `program` itself in a process group of its own, or with a
/// terminal `setsid --ctty program` (a new session whose controlling terminal is its stdin, the
/// terminal's slave). Either way the process group id is the child's pid, which is what [`spawn`]
/// kills. Add the arguments, environment and user to it.
pub fn command(tty: bool, program: impl AsRef<OsStr>) -> tokio::process::Command {
    if tty {
        let mut c = tokio::process::Command::new(host_program("setsid"));
        c.arg("--ctty").arg(program);
        c
    } else {
        let mut c = tokio::process::Command::new(program);
        c.process_group(0);
        c
    }
}

/// A pseudo-terminal: the master (non-blocking, for this process) and its slave (for the command).
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn winsize(s: WindowSize) -> rustix::termios::Winsize {
    rustix::termios::Winsize { ws_row: s.rows, ws_col: s.cols, ws_xpixel: 0, ws_ypixel: 0 }
}

impl Pty {
    fn open(size: Option<WindowSize>) -> std::io::Result<Pty> {
        use rustix::pty::OpenptFlags;
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
            Ok(s) => s,
            // Kernels before 4.13: by name.
            Err(_) => {
                let name = rustix::pty::ptsname(&master, Vec::new())?;
                use rustix::fs::{Mode, OFlags};
                rustix::fs::open(
                    name.as_c_str(),
                    OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            }
        };
        if let Some(s) = size {
            rustix::termios::tcsetwinsize(&master, winsize(s))?;
        }
        rustix::io::ioctl_fionbio(&master, true)?;
        Ok(Pty { master, slave })
    }
}

/// What is done before the command's process group is killed (e.g. kill a process that a runtime
/// started elsewhere for it), given the command's pid. It runs on a blocking thread: it may wait
/// a moment (for a pid file).
pub type BeforeKill = Box<dyn FnOnce(Option<u32>) + Send>;

/// Runs `cmd` (from [`command`]) as an interactive exec: on a new pseudo-terminal with `opts.tty`
/// (sized `opts.size`), else on pipes (stdin null without `opts.stdin`). The session ends with the
/// command's exit code once it exited and its output was read (or stayed silent for
/// [`DRAIN_IDLE`]). When the session's `output` is dropped first, `before_kill` runs and the
/// command's process group is killed.
pub fn spawn(
    mut cmd: tokio::process::Command,
    opts: &ExecStreamOptions,
    before_kill: Option<BeforeKill>,
) -> Result<ExecSession, DriverError> {
    use std::process::Stdio;
    let spawn_err = |e: std::io::Error| DriverError::runtime("starting the exec", e);
    let pty = if opts.tty {
        let pty = Pty::open(opts.size).map_err(|e| DriverError::runtime("allocating a terminal", e))?;
        cmd.stdin(Stdio::from(pty.slave.try_clone().map_err(spawn_err)?))
            .stdout(Stdio::from(pty.slave.try_clone().map_err(spawn_err)?))
            .stderr(Stdio::from(pty.slave));
        // `new` is deprecated because a borrowed fd could be closed while registered; here the
        // AsyncFd owns the OwnedFd, so the fd lives exactly as long as the registration (the sound
        // case, as in `shim::wait_shim_exit`), and no unsafe `register` is needed.
        #[allow(deprecated)]
        let master = AsyncFd::new(pty.master).map_err(spawn_err)?;
        Some(master)
    } else {
        cmd.stdin(if opts.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        None
    };
    cmd.kill_on_drop(true);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child =
        cmd.spawn().map_err(|e| DriverError::runtime(&format!("starting the exec ({program})"), e))?;
    // Our copies of the terminal's slave go with the command: the master then reads EIO once
    // the command and everything it started have closed it.
    drop(cmd);
    let (session, io) = ExecSession::channel();
    let pid = child.id();
    let (sink, sources) = match pty {
        Some(master) => {
            let master = Arc::new(master);
            (Sink::Tty(master.clone()), vec![Source::Tty(master)])
        }
        None => {
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(DriverError::Runtime("exec: missing output pipes".into()));
            };
            (Sink::Pipe(child.stdin.take()), vec![Source::Stdout(out), Source::Stderr(err)])
        }
    };
    tokio::spawn(run(child, pid, sink, sources, io, before_kill));
    Ok(session)
}

/// Where input goes.
enum Sink {
    Tty(Arc<AsyncFd<OwnedFd>>),
    Pipe(Option<tokio::process::ChildStdin>),
}

/// Where output comes from.
enum Source {
    Tty(Arc<AsyncFd<OwnedFd>>),
    Stdout(tokio::process::ChildStdout),
    Stderr(tokio::process::ChildStderr),
}

/// Output readers' activity, to tell a silent stream from a slow client after the exit.
#[derive(Default)]
struct Progress {
    reads: AtomicU64,
    sending: AtomicUsize,
}

async fn run(
    mut child: tokio::process::Child,
    pid: Option<u32>,
    sink: Sink,
    sources: Vec<Source>,
    io: SessionIo,
    before_kill: Option<BeforeKill>,
) {
    let SessionIo { input, output } = io;
    let progress = Arc::new(Progress::default());
    let mut readers = JoinSet::new();
    for s in sources {
        readers.spawn(read_source(s, output.clone(), progress.clone()));
    }
    let writer = tokio::spawn(write_input(input, sink));
    let status = tokio::select! {
        s = child.wait() => s,
        () = output.closed() => {
            tracing::debug!(pid, "exec client gone: killing the command");
            if let Some(f) = before_kill {
                let _ = tokio::task::spawn_blocking(move || f(pid)).await;
            }
            if let Some(p) = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            writer.abort();
            readers.abort_all();
            return;
        }
    };
    writer.abort();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            readers.abort_all();
            let _ = output.send(ExecOutput::Failed(format!("waiting for the command: {e}"))).await;
            return;
        }
    };
    // Everything the command wrote, unless something it left behind keeps the stream open.
    loop {
        let before = progress.reads.load(Ordering::Relaxed);
        tokio::select! {
            r = readers.join_next() => if r.is_none() { break },
            () = output.closed() => {
                readers.abort_all();
                return;
            }
            () = tokio::time::sleep(DRAIN_IDLE) => {
                let idle = progress.reads.load(Ordering::Relaxed) == before
                    && progress.sending.load(Ordering::Relaxed) == 0;
                if idle {
                    readers.abort_all();
                    break;
                }
            }
        }
    }
    let _ = output.send(ExecOutput::Exit(exit_code(status))).await;
}

async fn send_output(output: &mpsc::Sender<ExecOutput>, progress: &Progress, msg: ExecOutput) -> bool {
    progress.reads.fetch_add(1, Ordering::Relaxed);
    progress.sending.fetch_add(1, Ordering::Relaxed);
    let sent = output.send(msg).await.is_ok();
    progress.sending.fetch_sub(1, Ordering::Relaxed);
    sent
}

async fn read_source(source: Source, output: mpsc::Sender<ExecOutput>, progress: Arc<Progress>) {
    let mut buf = vec![0u8; CHUNK];
    match source {
        Source::Tty(master) => loop {
            let Ok(mut guard) = master.readable().await else { return };
            match guard
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut buf[..]).map_err(std::io::Error::from))
            {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    if !send_output(&output, &progress, ExecOutput::Stdout(buf[..n].to_vec())).await {
                        return;
                    }
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: nobody holds the slave any more.
                Ok(Err(_)) => return,
                Err(_would_block) => {}
            }
        },
        Source::Stdout(mut r) => read_pipe(&mut r, &mut buf, &output, &progress, ExecOutput::Stdout).await,
        Source::Stderr(mut r) => read_pipe(&mut r, &mut buf, &output, &progress, ExecOutput::Stderr).await,
    }
}

async fn read_pipe(
    r: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    output: &mpsc::Sender<ExecOutput>,
    progress: &Progress,
    wrap: fn(Vec<u8>) -> ExecOutput,
) {
    loop {
        match r.read(buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !send_output(output, progress, wrap(buf[..n].to_vec())).await {
                    return;
                }
            }
        }
    }
}

async fn write_input(mut input: mpsc::Receiver<ExecInput>, mut sink: Sink) {
    while let Some(msg) = input.recv().await {
        match (msg, &mut sink) {
            (ExecInput::Stdin(data), Sink::Tty(master)) => {
                if write_fd(master, &data).await.is_err() {
                    return;
                }
            }
            (ExecInput::Stdin(data), Sink::Pipe(stdin)) => {
                if let Some(w) = stdin {
                    if w.write_all(&data).await.is_err() {
                        *stdin = None;
                    }
                }
            }
            (ExecInput::StdinEof, Sink::Pipe(stdin)) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            (ExecInput::StdinEof, Sink::Tty(_)) => {}
            (ExecInput::Resize(size), Sink::Tty(master)) => {
                if let Err(e) = rustix::termios::tcsetwinsize(master.get_ref(), winsize(size)) {
                    tracing::debug!(error = %e, "resizing an exec's terminal");
                }
            }
            (ExecInput::Resize(_), Sink::Pipe(_)) => {}
        }
    }
}

async fn write_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects a session's output until its last message, failing after `secs`.
    async fn finish(s: &mut ExecSession, secs: u64) -> (Vec<u8>, Vec<u8>, ExecOutput) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, s.output.recv())
                .await
                .unwrap_or_else(|_| panic!("no end within {secs}s: {}", String::from_utf8_lossy(&out)))
                .expect("the session ends with Exit or Failed");
            match msg {
                ExecOutput::Stdout(b) => out.extend(b),
                ExecOutput::Stderr(b) => err.extend(b),
                last => return (out, err, last),
            }
        }
    }

    #[tokio::test]
    async fn pipes_carry_stdin_to_eof_and_keep_stdout_and_stderr_apart() {
        let mut c = command(false, "sh");
        c.args(["-c", "wc -c; echo oops >&2; exit 4"]);
        let opts = ExecStreamOptions { stdin: true, ..Default::default() };
        let mut s = spawn(c, &opts, None).expect("spawn");
        s.input.send(ExecInput::Stdin(b"hello".to_vec())).await.expect("send");
        s.input.send(ExecInput::Stdin(b" world".to_vec())).await.expect("send");
        s.input.send(ExecInput::StdinEof).await.expect("send");
        let (out, err, last) = finish(&mut s, 20).await;
        assert_eq!(String::from_utf8_lossy(&out).trim(), "11");
        assert_eq!(err, b"oops\n");
        assert_eq!(last, ExecOutput::Exit(4));
    }

    /// Reads a session's output until it holds `marker`, failing after `secs`.
    async fn read_until(s: &mut ExecSession, marker: &str, secs: u64) -> String {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !String::from_utf8_lossy(&out).contains(marker) {
            match tokio::time::timeout_at(deadline, s.output.recv()).await {
                Ok(Some(ExecOutput::Stdout(b))) => out.extend(b),
                other => panic!("{marker:?} never came ({other:?}): {}", String::from_utf8_lossy(&out)),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_terminal_is_the_commands_controlling_tty_with_the_size_asked() {
        let mut c = command(true, "sh");
        c.arg("-i");
        let size = WindowSize { rows: 33, cols: 101 };
        let opts = ExecStreamOptions { stdin: true, tty: true, size: Some(size) };
        let mut s = spawn(c, &opts, None).expect("spawn");
        // The terminal echoes what is typed: the markers are computed, so only the command's
        // output holds them. `tty -s`: stdin is a terminal; /dev/tty opens only for a process
        // that has a controlling terminal.
        let line = "stty size; tty -s && echo tty-$((40+2)); echo x > /dev/tty && echo hi-$((1+2))\n";
        s.input.send(ExecInput::Stdin(line.as_bytes().to_vec())).await.expect("send");
        let text = read_until(&mut s, "hi-3", 20).await;
        assert!(text.contains("33 101") && text.contains("tty-42"), "{text}");
        s.input.send(ExecInput::Resize(WindowSize { rows: 20, cols: 70 })).await.expect("send");
        s.input.send(ExecInput::Stdin(b"stty size; exit 3\n".to_vec())).await.expect("send");
        let (out, err, last) = finish(&mut s, 20).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("20 70"), "{text}");
        assert!(err.is_empty(), "a terminal has one stream");
        assert_eq!(last, ExecOutput::Exit(3));
    }

    #[tokio::test]
    async fn dropping_the_output_kills_the_command_and_runs_before_kill() {
        for tty in [false, true] {
            let mut c = command(tty, "sh");
            c.args(["-c", "echo $$; exec sleep 1000"]);
            let opts = ExecStreamOptions { stdin: true, tty, size: None };
            let (ran_tx, ran_rx) = std::sync::mpsc::channel();
            let mut s =
                spawn(c, &opts, Some(Box::new(move |_| ran_tx.send(()).unwrap_or_default()))).expect("spawn");
            let mut got = Vec::new();
            let pid: u32 = loop {
                match tokio::time::timeout(Duration::from_secs(20), s.output.recv()).await {
                    Ok(Some(ExecOutput::Stdout(b))) => got.extend(b),
                    other => panic!("no pid: {other:?}"),
                }
                if let Some(p) =
                    String::from_utf8_lossy(&got).trim().parse().ok().filter(|_| got.ends_with(b"\n"))
                {
                    break p;
                }
            };
            drop(s);
            let alive = || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while alive() {
                assert!(std::time::Instant::now() < deadline, "tty={tty}: {pid} still runs");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ran_rx.recv_timeout(Duration::from_secs(5)).expect("before_kill ran");
        }
    }
}
