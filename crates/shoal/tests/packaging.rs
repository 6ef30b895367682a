//! Packaging conventions: the systemd unit's ExecStart with the shipped default configuration,
//! the install script (into a DESTDIR), shell completions and man pages generated from the CLI.

mod common;

use common::BIN;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The unit's ExecStart, run as systemd would (words split on spaces, no shell), with the binary
/// and the configuration's path pointing at this build and the repository's default file: the
/// daemon accepts it. `--print-config` stops it before it binds anything.
#[test]
fn the_units_exec_start_runs_with_the_default_configuration() {
    let unit = std::fs::read_to_string(repo().join("packaging/shoal.service")).expect("unit");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/local/bin/shoal", "the unit runs the installed binary");
    let config_at = words.iter().position(|w| w == "--config").expect("--config") + 1;
    assert_eq!(words[config_at], "/etc/shoal/shoal.toml");
    words[config_at] = repo().join("packaging/shoal.toml").display().to_string();
    words.push("--print-config".into());
    let printed = run(Command::new(BIN).args(&words[1..]));
    let eff: toml::Table = toml::from_str(&printed).expect("--print-config prints TOML");
    assert_eq!(eff["data_dir"].as_str(), Some("/var/lib/shoal"));
    assert_eq!(eff["listen_addr"].as_str(), Some("0.0.0.0:4242"));
    assert_eq!(eff["cert_ttl"].as_str(), Some("90d"));
    assert_eq!(eff["init"].as_bool(), Some(false));
    // Tasks outlive the daemon: stopping the unit must not kill its cgroup.
    assert!(unit.lines().any(|l| l.trim() == "KillMode=process"), "KillMode=process");
    // systemd's own check of the unit, with ExecStart naming this build (it checks the binary
    // exists). scripts/install-deps.sh installs Debian's systemd package for systemd-analyze
    // (systemd itself does not run on these machines).
    let dir = tempfile::tempdir().expect("tmp");
    let copy = dir.path().join("shoal.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/shoal", BIN)).expect("copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/install-deps.sh installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
    // And it does fail a broken unit.
    std::fs::write(&copy, unit.replace("KillMode=process", "KillMode=sometimes")).expect("copy");
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kill mode"), "systemd-analyze checks the unit");
}

#[test]
fn install_puts_everything_in_place_and_keeps_an_edited_configuration() {
    let dest = tempfile::tempdir().expect("tmp");
    let install = || {
        run(Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg(BIN)
            .env("DESTDIR", dest.path())
            .env("PREFIX", "/opt/shoal"))
    };
    install();
    let d = dest.path();
    for f in [
        "opt/shoal/bin/shoal",
        "opt/shoal/bin/shoal-shim",
        "etc/shoal/shoal.toml",
        "etc/systemd/system/shoal.service",
        "opt/shoal/share/man/man1/shoal.1",
        "opt/shoal/share/man/man1/shoal-service-create.1",
        "opt/shoal/share/man/man1/shoal-daemon.1",
        "opt/shoal/share/bash-completion/completions/shoal",
        "opt/shoal/share/zsh/site-functions/_shoal",
        "opt/shoal/share/fish/vendor_completions.d/shoal.fish",
    ] {
        assert!(d.join(f).is_file(), "{f} installed");
    }
    // The binary goes without its debug information, which lies where gdb and backtraces find
    // it through the binary's debug link.
    let sections = |f: &Path| run(Command::new("readelf").arg("-SW").arg(f));
    let bin = sections(&d.join("opt/shoal/bin/shoal"));
    assert!(!bin.contains(".debug_info") && !bin.contains(".debug_line"), "debug info in the binary: {bin}");
    let shim = sections(&d.join("opt/shoal/bin/shoal-shim"));
    assert!(!shim.contains(".debug_line"), "debug info in the shim: {shim}");
    assert!(bin.contains(".gnu_debuglink"), "no debug link: {bin}");
    let debug = d.join("usr/lib/debug/opt/shoal/bin/shoal.debug");
    assert!(sections(&debug).contains(".debug_line"), "the debug file holds the line tables");
    let size = |f: &Path| std::fs::metadata(f).expect("size").len();
    // (Test builds carry line tables only, about a third of the binary.)
    assert!(size(&d.join("opt/shoal/bin/shoal")) < size(Path::new(BIN)) * 4 / 5, "stripped");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("etc/shoal/shoal.toml")).expect("config").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the configuration may hold a token");
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/shoal.service")).expect("unit");
    assert!(unit.contains("ExecStart=/opt/shoal/bin/shoal daemon --config /etc/shoal/shoal.toml"), "{unit}");
    // An operator's edit survives a reinstall (an upgrade).
    std::fs::write(d.join("etc/shoal/shoal.toml"), "hostname = \"edited\"\n").expect("edit");
    install();
    let kept = std::fs::read_to_string(d.join("etc/shoal/shoal.toml")).expect("config");
    assert_eq!(kept, "hostname = \"edited\"\n");
    // The installed binary reads the installed configuration.
    let printed = run(Command::new(d.join("opt/shoal/bin/shoal"))
        .args(["daemon", "--print-config", "--config"])
        .arg(d.join("etc/shoal/shoal.toml")));
    assert!(printed.contains("hostname = \"edited\""), "{printed}");
}

#[test]
fn completions_cover_the_commands() {
    let bash = run(Command::new(BIN).args(["completion", "bash"]));
    assert!(
        bash.contains("complete -F") && bash.contains("service") && bash.contains("--constraint"),
        "bash"
    );
    let zsh = run(Command::new(BIN).args(["completion", "zsh"]));
    assert!(zsh.starts_with("#compdef shoal") && zsh.contains("service"), "zsh");
    let fish = run(Command::new(BIN).args(["completion", "fish"]));
    assert!(fish.contains("complete -c shoal") && fish.contains("service"), "fish");
    let bad = Command::new(BIN).args(["completion", "tcsh"]).output().expect("run");
    assert!(!bad.status.success());
}

#[test]
fn man_pages_are_generated_for_every_visible_command() {
    let dir = tempfile::tempdir().expect("tmp");
    run(Command::new(BIN).args(["man", "--out"]).arg(dir.path()));
    let page = std::fs::read_to_string(dir.path().join("shoal-service-create.1")).expect("page");
    assert!(page.contains(".TH") && page.contains("constraint"), "a man page with the flags");
    let daemon = std::fs::read_to_string(dir.path().join("shoal-daemon.1")).expect("page");
    assert!(daemon.contains("print\\-config"), "the daemon's page documents --print-config");
    // The per-task shim is not for users: no page.
    assert!(!dir.path().join("shoal-shim.1").exists());
    let count = std::fs::read_dir(dir.path()).expect("dir").count();
    assert!(count > 60, "a page per command, got {count}");
}
