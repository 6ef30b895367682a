//! `shoal task exec -i/-t`, the operator's way: real `shoal daemon`s (two managers and a worker,
//! `cluster init` and join tokens), real runtimes (process, oci with runc, docker), and the CLI
//! under a real pseudo-terminal (python3's `pty` module) for `-t`: it types into a shell, resizes
//! its terminal and reads what the shell printed; `-i` pipes input into `wc -c`/`cat`. Through the
//! leader, a follower (which relays to the task's node over mTLS) and the TCP API. The command dies
//! with the CLI.

use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{eventually, Node, BIN};

/// Runs a command on a new pseudo-terminal sized by the first step, then plays the steps:
/// `{"send": s}` types s; `{"send": s, "until": u}` types s again every second until u is printed
/// after it (a resize travels apart from the keys); `{"wait": w}` waits for w; `{"resize": [r, c]}`
/// resizes the terminal (the kernel sends the CLI SIGWINCH). Then it reads until the command ends,
/// prints everything it read and exits with the command's exit code (99: a step timed out).
const CONVERSE_PY: &str = r#"
import fcntl, json, os, pty, select, struct, sys, termios, time

def winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

steps = json.loads(sys.argv[1])
rows, cols = steps.pop(0)["size"]
argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    winsize(0, rows, cols)
    os.execv(argv[0], argv)
out = b""
eof = False

def pump(deadline):
    global out, eof
    r, _, _ = select.select([fd], [], [], max(0, min(deadline - time.monotonic(), 0.2)))
    if r:
        try:
            b = os.read(fd, 65536)
        except OSError:
            b = b""
        if not b:
            eof = True
        out += b

def fail(why):
    sys.stdout.write(out.decode(errors="replace"))
    sys.stdout.write("\n[conversation] " + why + "\n")
    os.kill(pid, 9)
    sys.exit(99)

for s in steps:
    deadline = time.monotonic() + 30
    if "resize" in s:
        winsize(fd, *s["resize"])
    elif "until" in s:
        mark = len(out)
        while s["until"].encode() not in out[mark:]:
            if time.monotonic() > deadline or eof:
                fail("no %r after typing %r" % (s["until"], s["send"]))
            os.write(fd, s["send"].encode())
            again = time.monotonic() + 1
            while time.monotonic() < again and s["until"].encode() not in out[mark:] and not eof:
                pump(deadline)
    elif "send" in s:
        os.write(fd, s["send"].encode())
    elif "wait" in s:
        while s["wait"].encode() not in out:
            if time.monotonic() > deadline or eof:
                fail("no %r" % s["wait"])
            pump(deadline)
deadline = time.monotonic() + 30
while not eof:
    if time.monotonic() > deadline:
        fail("the CLI did not end")
    pump(deadline)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// How the CLI reaches a manager: its unix socket, or its TCP API with a client certificate.
#[derive(Clone)]
enum Api {
    Unix(PathBuf),
    Tcp(u16, PathBuf),
}

impl Api {
    fn of(n: &Node) -> Api {
        Api::Unix(n.dir.join("shoal.sock"))
    }

    /// `shoal -H ... task exec ARGS...`.
    fn exec_args(&self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Api::Unix(p) => vec!["-H".into(), format!("unix://{}", p.display())],
            Api::Tcp(port, certs) => vec![
                "-H".into(),
                format!("tcp://127.0.0.1:{port}"),
                "--tls-dir".into(),
                certs.display().to_string(),
            ],
        };
        v.extend(["task".to_string(), "exec".to_string()]);
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(self.exec_args(args)).env_remove("SHOAL_HOST").env_remove("SHOAL_TLS_DIR");
        c
    }

    /// `task exec ARGS` with `input` on its stdin (written by a thread, so a large input cannot
    /// deadlock against the output).
    fn piped(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the CLI");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("the CLI");
        writer.join().expect("writer");
        out
    }

    /// `task exec ARGS` on a pseudo-terminal of `rows` x `cols`, playing `steps`.
    fn converse(&self, script: &Path, size: (u16, u16), steps: &[Value], args: &[&str]) -> Output {
        let mut all = vec![json!({"size": [size.0, size.1]})];
        all.extend_from_slice(steps);
        Command::new("python3")
            .arg(script)
            .arg(Value::from(all).to_string())
            .arg(BIN)
            .args(self.exec_args(args))
            .env_remove("SHOAL_HOST")
            .env_remove("SHOAL_TLS_DIR")
            .output()
            .expect("python3")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn converse_script(dir: &Path) -> PathBuf {
    let p = dir.join("converse.py");
    std::fs::write(&p, CONVERSE_PY).expect("write the pty script");
    p
}

/// `shoal task exec -it TASK -- sh` in a terminal of 33x101: the shell sees that size, then the
/// new one after a resize, computes `hi-3` (the typed line only holds `$((1+2))`) and exits 3.
fn shell_session(api: &Api, script: &Path, task: &str, stty: &str) {
    let steps = [
        json!({"send": format!("{stty}\r"), "until": "33 101"}),
        json!({"resize": [20, 70]}),
        json!({"send": format!("{stty}\r"), "until": "20 70"}),
        json!({"send": "echo hi-$((1+2))\r"}),
        json!({"wait": "hi-3"}),
        json!({"send": "exit 3\r"}),
    ];
    let out = api.converse(script, (33, 101), &steps, &["-it", task, "--", "sh"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{said}{}", text(&out.stderr));
    assert!(said.contains("hi-3") && said.contains("33 101") && said.contains("20 70"), "{said}");
}

/// `-i`: stdin to `wc -c` (to EOF), and stdout and stderr kept apart with the exit code.
fn piped_input(api: &Api, task: &str, wc: &[&str]) {
    let mut args = vec!["-i", task, "--"];
    args.extend_from_slice(wc);
    let out = api.piped(&args, b"hello");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "5");
    let out = api.piped(&["-i", task, "--", "sh", "-c", "cat; echo err >&2; exit 5"], b"abc");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str()), ("abc", "err\n"));
}

/// Whether a process runs `sleep SECS` (exactly) on this machine.
fn sleeping(secs: &str) -> bool {
    let want = format!("sleep\0{secs}\0");
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes())
            && common::alive(e.file_name().to_str().and_then(|p| p.parse().ok()).unwrap_or(0))
    })
}

/// The CLI killed mid-session: the command in the task goes too.
fn killed_with_the_cli(api: &Api, task: &str) {
    // Unique on this machine: the tests of this file run at once.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = format!("{}{seq:02}", 100_000 + std::process::id());
    let script = format!("echo started; exec sleep {secs}");
    let mut cli = api
        .command(&["-i", task, "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the CLI");
    let mut line = String::new();
    std::io::BufReader::new(cli.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert_eq!(line, "started\n");
    // `exec sleep` follows the echo a moment later.
    eventually(20, "the command to run", || sleeping(&secs).then_some(()));
    cli.kill().expect("kill the CLI");
    cli.wait().expect("reap the CLI");
    eventually(20, "the command to die with the CLI", || (!sleeping(&secs)).then_some(()));
}

/// A raw request on a node's API socket; the status line's code.
fn raw_status(n: &Node, request: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(n.dir.join("shoal.sock")).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

#[test]
fn interactive_exec_with_processes_through_any_manager_and_the_tcp_api() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = converse_script(tmp.path());
    let tcp_port = common::free_port();
    let (m1, m2, w1) =
        common::two_managers_and_a_worker(tmp.path(), &["--api-addr", &format!("127.0.0.1:{tcp_port}")]);
    let (leader, follower) = common::leader_and_follower(&m1, &m2);
    let certs = tmp.path().join("certs");
    leader.ok(&["cluster", "client-cert", "--out", certs.to_str().expect("utf8"), "--name", "ops"]);
    let tcp = Api::Tcp(tcp_port, certs);

    let mut tasks = Vec::new();
    for (name, host) in [("on-worker", "w1"), ("on-manager", "m1")] {
        let constraint = format!("node.hostname=={host}");
        leader.ok(&[
            "service",
            "create",
            "--name",
            name,
            "--driver",
            "process",
            "--constraint",
            &constraint,
            "sleep",
            "300",
        ]);
        tasks.push(common::one_running_task(leader, name, 60));
    }
    let (on_worker, on_manager) = (tasks[0].as_str(), tasks[1].as_str());

    // -i through every manager (in-process on m1 for its own task, relayed over mTLS otherwise)
    // and the TCP API.
    for api in [Api::of(leader), Api::of(follower), tcp.clone()] {
        for task in [on_worker, on_manager] {
            piped_input(&api, task, &["wc", "-c"]);
        }
    }
    // More than every buffer on the way holds: nothing lost, nothing stuck.
    let big = vec![b'x'; 4 << 20];
    let out = Api::of(follower).piped(&["-i", on_worker, "--", "wc", "-c"], &big);
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "4194304"), "{}", text(&out.stderr));
    let out = Api::of(leader).piped(
        &["-i", on_manager, "--", "sh", "-c", "cat | wc -c; cat /dev/zero | head -c 3000000 | wc -c"],
        &big,
    );
    assert_eq!(text(&out.stdout).split_whitespace().collect::<Vec<_>>(), ["4194304", "3000000"]);

    // -it: a shell on a terminal, through a follower to the worker and through the TCP API.
    shell_session(&Api::of(follower), &script, on_worker, "stty size");
    shell_session(&tcp, &script, on_manager, "stty size");
    // -t alone: a terminal (stdin too), no input; the exit code still comes back.
    let out = Api::of(leader).converse(
        &script,
        (24, 80),
        &[],
        &["-t", on_worker, "--", "sh", "-c", "tty -s && echo tty-$((40+2)); exit 4"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("tty-42"), "{}", text(&out.stdout));

    // -t without a terminal on stdin is refused, as docker refuses it; nothing runs.
    for flags in [&["-it"][..], &["-t"], &["--tty", "-i"]] {
        let mut args = flags.to_vec();
        args.extend_from_slice(&[on_worker, "--", "sh"]);
        let out = Api::of(leader).piped(&args, b"exit 0\n");
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(
            text(&out.stderr).contains("the input device is not a TTY"),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    // A command that cannot run: a shell's 127 and the reason.
    let out = Api::of(follower).piped(&["-i", on_worker, "--", "no-such-command-here"], b"");
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot run \"no-such-command-here\""), "{}", text(&out.stderr));
    // A task that does not exist.
    let out = Api::of(follower).piped(&["-i", "no-such-task", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("task no-such-task not found"), "{}", text(&out.stderr));

    // The CLI going away kills the command: on the worker through the follower, and on m1
    // in-process.
    killed_with_the_cli(&Api::of(follower), on_worker);
    killed_with_the_cli(&Api::of(&m1), on_manager);

    // The endpoint streams only over an upgraded connection.
    let body = r#"{"cmd": ["true"]}"#;
    let (status, resp) = raw_status(
        leader,
        &format!(
            "POST /v1/tasks/{on_worker}/exec/stream HTTP/1.1\r\nHost: shoal\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 426, "{resp}");
    assert!(resp.contains("upgrade_required"), "{resp}");

    common::remove_services_and_wait(leader, &["on-worker", "on-manager"], &[&m1, &m2, &w1]);
}

#[test]
fn interactive_exec_in_oci_containers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = converse_script(tmp.path());
    let mut m = Node::new(tmp.path(), "oci");
    m.start("dev");
    let tar = common::busybox_rootfs(tmp.path());
    common::import_image(&[&m], &tar, "exec-it:1");
    m.ok(&["service", "create", "--name", "box", "--driver", "oci", "exec-it:1", "sleep", "300"]);
    let task = common::one_running_task(&m, "box", 60);
    let api = Api::of(&m);
    // The image has busybox and a few applets: the others through busybox.
    shell_session(&api, &script, &task, "busybox stty size");
    piped_input(&api, &task, &["busybox", "wc", "-c"]);
    killed_with_the_cli(&api, &task);
    common::remove_services_and_wait(&m, &["box"], &[&m]);
}

#[test]
fn interactive_exec_in_docker_containers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = converse_script(tmp.path());
    let image = common::DockerImage::import(tmp.path(), "shoal-exec-it");
    let mut m = Node::new(tmp.path(), "dck");
    m.start("dev");
    m.ok(&["service", "create", "--name", "box", "--driver", "docker", &image.0, "sleep", "300"]);
    let task = common::one_running_task(&m, "box", 60);
    let api = Api::of(&m);
    shell_session(&api, &script, &task, "busybox stty size");
    piped_input(&api, &task, &["busybox", "wc", "-c"]);
    killed_with_the_cli(&api, &task);
    common::remove_services_and_wait(&m, &["box"], &[&m]);
}
