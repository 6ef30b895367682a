//! Probing CRIU, the checkpoint/restore tool behind [`crate::capability::CHECKPOINT`].
//!
//! A node offers checkpoint/restore only when `criu check` passes: CRIU depends on many kernel
//! features and an old CRIU on a new kernel fails there (Debian 12's 3.17 does).
//! `scripts/install-criu.sh` provides a working one.

use std::path::Path;
use std::time::Duration;

/// How long one probe command may run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriuInfo {
    /// As `criu --version` prints it (`4.1.1`).
    pub version: String,
    /// The kernel tracks dirty memory (soft-dirty bits), which iterative pre-dumps need.
    pub mem_dirty_track: bool,
}

/// Runs `criu --version` and `criu check`; `Some` only when the check passes. `criu` may be a bare
/// name (looked up on `PATH`).
pub async fn probe(criu: &Path) -> Option<CriuInfo> {
    let out = run(criu, &["--version"]).await?;
    if !out.status.success() {
        tracing::debug!(criu = %criu.display(), "criu --version failed");
        return None;
    }
    let version = parse_version(&String::from_utf8_lossy(&out.stdout))?;
    let check = run(criu, &["check"]).await?;
    if !check.status.success() {
        tracing::info!(
            criu = %criu.display(),
            version,
            output = %String::from_utf8_lossy(&check.stdout).trim(),
            errors = %tail(&String::from_utf8_lossy(&check.stderr), 500),
            "criu check failed: checkpoint/restore is not available"
        );
        return None;
    }
    let mem_dirty_track =
        run(criu, &["check", "--feature", "mem_dirty_track"]).await.is_some_and(|o| o.status.success());
    Some(CriuInfo { version, mem_dirty_track })
}

async fn run(criu: &Path, args: &[&str]) -> Option<std::process::Output> {
    let child = tokio::process::Command::new(criu)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(criu = %criu.display(), error = %e, "criu not runnable");
            return None;
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => Some(out),
        Ok(Err(e)) => {
            tracing::debug!(criu = %criu.display(), error = %e, "running criu");
            None
        }
        Err(_) => {
            tracing::warn!(criu = %criu.display(), ?args, "criu did not answer within {PROBE_TIMEOUT:?}");
            None
        }
    }
}

/// The version from `criu --version` output (`Version: 4.1.1`, maybe followed by `GitID: ...`).
/// The last error lines of a CRIU log (else its last lines), for error messages. CRIU's warning
/// that it cannot raise its own RLIMIT_NOFILE (it runs in every sandbox) is left out.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE for self"))
        .collect();
    let pick = if errors.is_empty() { &lines[..] } else { &errors[..] };
    let tail = pick[pick.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        format!("no log at {}", log.display())
    } else {
        format!("{tail} (log: {})", log.display())
    }
}

pub fn parse_version(out: &str) -> Option<String> {
    let v = out.lines().find_map(|l| l.trim().strip_prefix("Version:"))?.trim();
    let ok = !v.is_empty()
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~' | '_'));
    ok.then(|| v.to_string())
}

/// `(major, minor)` of a version string such as `4.1.1` or `3.17`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn tail(s: &str, n: usize) -> &str {
    let s = s.trim();
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("Version: 4.1.1\n").as_deref(), Some("4.1.1"));
        assert_eq!(parse_version("Version: 3.17\nGitID: v3.17-12-gabcdef\n").as_deref(), Some("3.17"));
        assert_eq!(parse_version("  Version:   4.0 \n").as_deref(), Some("4.0"));
        assert_eq!(parse_version("criu: command not found"), None);
        assert_eq!(parse_version("Version: \n"), None);
        assert_eq!(parse_version("Version: $(rm -rf /)\n"), None);
        assert_eq!(major_minor("4.1.1"), Some((4, 1)));
        assert_eq!(major_minor("3.17"), Some((3, 17)));
        assert_eq!(major_minor("4"), Some((4, 0)));
        assert_eq!(major_minor("x"), None);
    }

    #[tokio::test]
    async fn a_missing_binary_is_none() {
        assert_eq!(probe(Path::new("/nonexistent/criu")).await, None);
    }

    #[tokio::test]
    async fn a_failing_check_is_none() {
        // A fake criu whose version parses but whose check fails.
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("criu");
        std::fs::write(
            &fake,
            "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'Version: 9.9'; exit 0; }\nexit 1\n",
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        assert_eq!(probe(&fake).await, None);
        let ok = dir.path().join("criu-ok");
        std::fs::write(&ok, "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'Version: 9.9'; exit 0; }\n[ \"$2\" = --feature ] && exit 1\necho Looks good.\n")
            .expect("write");
        std::fs::set_permissions(&ok, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        // Another test's fork may briefly hold the new script open for writing (ETXTBSY): retry.
        let mut got = None;
        for _ in 0..20 {
            got = probe(&ok).await;
            if got.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(got, Some(CriuInfo { version: "9.9".into(), mem_dirty_track: false }));
    }
}
