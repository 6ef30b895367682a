//! Running `ip`, `bridge`, `nft` and `conntrack`: the same tools an operator debugs with, so what
//! Shoal does can be read back and repeated by hand. Every failure carries the command and what
//! the tool printed.

use crate::NetError;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

fn describe(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args…` (with `input` on stdin) and returns its stdout.
pub(crate) async fn run_with(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NetError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd
        .spawn()
        .map_err(|e| NetError::Command { cmd: describe(program, args), message: e.to_string() })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| NetError::Command { cmd: describe(program, args), message: e.to_string() })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NetError::Command { cmd: describe(program, args), message: e.to_string() })?;
    if !out.status.success() {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // nft quotes the whole offending line, which can be thousands of elements long.
        if message.len() > 600 {
            let cut = (0..=600).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
            message.truncate(cut);
            message.push_str(" …");
        }
        if message.is_empty() {
            message = out.status.to_string();
        }
        return Err(NetError::Command { cmd: describe(program, args), message });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) async fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    run_with(program, args, None).await
}

/// `ip` (in network namespace `ns`, or this process's own when None).
pub(crate) async fn ip(ns: Option<&str>, args: &[&str]) -> Result<String, NetError> {
    match ns {
        Some(ns) => {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            run("ip", &all).await
        }
        None => run("ip", args).await,
    }
}

/// `ip -batch -` (or `bridge -batch -`): many changes in one process; `-force` goes on past a
/// failed line and the exit status still reports it.
pub(crate) async fn batch(program: &str, ns: Option<&str>, lines: &[String]) -> Result<(), NetError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-force", "-batch", "-"]);
    let mut text = lines.join("\n");
    text.push('\n');
    run_with(program, &args, Some(&text)).await.map(|_| ())
}

/// The JSON an `ip -j`/`bridge -j` command prints (empty output: an empty list).
pub(crate) async fn json(
    program: &str,
    ns: Option<&str>,
    args: &[&str],
) -> Result<serde_json::Value, NetError> {
    let mut all = Vec::new();
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.push("-j");
    all.extend_from_slice(args);
    let out = run(program, &all).await?;
    if out.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(&out).map_err(|e| NetError::Command {
        cmd: describe(program, &all),
        message: format!("unreadable JSON: {e}"),
    })
}

/// Writes a sysctl of this process's network namespace.
pub(crate) fn sysctl(key: &str, value: &str) -> Result<(), NetError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == value => Ok(()),
        _ => std::fs::write(&path, value)
            .map_err(|e| NetError::Command { cmd: format!("sysctl {key}={value}"), message: e.to_string() }),
    }
}
