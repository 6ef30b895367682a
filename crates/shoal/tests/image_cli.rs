//! `shoal image` and daemon addresses. The image commands open a store directly and never talk to
//! a daemon, so a daemon address (`-H`, `SHOAL_HOST`) must not make them act quietly on this
//! machine's default store (`/var/lib/shoal/images`, another daemon's) instead of the named one.

mod common;

use common::{Node, BIN};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A one-file rootfs tarball, enough for `image import`.
fn tiny_rootfs(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(root.join("etc/hello"), b"hi\n").expect("write");
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().expect("tar");
    assert!(st.success());
    tar
}

fn shoal(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .env_remove("SHOAL_HOST")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shoal")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Asserts that `out` is the refusal: it fails, names the daemon address and where it came from,
/// says which store it would have used, and how to pick one.
fn assert_refused(out: &Output, named_by: &str) {
    let t = text(out);
    assert!(!out.status.success(), "shoal image must refuse a daemon address without --data-dir: {t}");
    assert!(out.stdout.is_empty(), "nothing was done, nothing printed: {t}");
    for want in [named_by, "does not go through a daemon", "/var/lib/shoal/images", "--data-dir"] {
        assert!(t.contains(want), "the refusal mentions {want:?}: {t}");
    }
}

#[test]
fn a_daemon_address_without_data_dir_is_refused_not_ignored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut n = Node::new(tmp.path(), "m1");
    n.start("dev");
    let data = n.dir.join("data").display().to_string();
    let sock = format!("unix://{}", n.dir.join("shoal.sock").display());
    let tar = tiny_rootfs(tmp.path()).display().to_string();

    // The daemon's own store, named explicitly: works, with or without -H.
    let out = shoal(&["image", "--data-dir", &data, "import", &tar, "test/one"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = n.cli(&["image", "--data-dir", &data, "ls", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "test/one:latest");
    let out = n.cli(&["image", "ls", "-q", "--data-dir", &data]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "test/one:latest");

    // `shoal -H <that daemon> image ls` used to list /var/lib/shoal/images instead.
    let out = n.cli(&["image", "ls", "-q"]);
    assert_refused(&out, &format!("-H {sock}"));
    // -H after the subcommand, a tcp:// daemon, and SHOAL_HOST: the same.
    let out = shoal(&["image", "-H", &sock, "ls"], &[]);
    assert_refused(&out, &format!("-H {sock}"));
    let out = shoal(&["-H", "tcp://127.0.0.1:1", "image", "rm", "test/one"], &[]);
    assert_refused(&out, "-H tcp://127.0.0.1:1");
    let out = shoal(&["image", "load"], &[("SHOAL_HOST", &sock)]);
    assert_refused(&out, &format!("SHOAL_HOST={sock}"));
    let out = shoal(&["image", "import", &tar, "test/two"], &[("SHOAL_HOST", "tcp://127.0.0.1:1")]);
    assert_refused(&out, "SHOAL_HOST=tcp://127.0.0.1:1");

    // Nothing was removed or added anywhere it should not have been.
    let out = shoal(&["image", "--data-dir", &data, "ls", "-q"], &[("SHOAL_HOST", &sock)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "test/one:latest");
}
