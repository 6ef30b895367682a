//! The unpacker against hostile archives. Run as root (ownership and whiteout devices).

use proptest::prelude::*;
use shoal_driver_oci::unpack::{unpack_layer, UnpackError, UnpackLimits};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

const REG: u8 = b'0';
const LINK: u8 = b'1';
const SYM: u8 = b'2';
const CHR: u8 = b'3';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

/// One raw tar entry, with the name and link name written byte for byte (no validation).
fn raw(name: &str, kind: u8, link: &str, data: &[u8], declared: Option<u64>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(99);
        old.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        let l = link.len().min(99);
        old.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
    }
    h.set_size(declared.unwrap_or(data.len() as u64));
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(if kind == DIR { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

struct Sandbox {
    _tmp: tempfile::TempDir,
    dest: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&dest).expect("dest");
    std::fs::create_dir(&outside).expect("outside");
    Sandbox { _tmp: tmp, dest, outside }
}

fn unpack(sb: &Sandbox, data: Vec<u8>) -> Result<shoal_driver_oci::unpack::UnpackReport, UnpackError> {
    unpack_layer(std::io::Cursor::new(data), &sb.dest, UnpackLimits::default())
}

fn assert_outside_untouched(sb: &Sandbox) {
    let n = std::fs::read_dir(&sb.outside).expect("read outside").count();
    assert_eq!(n, 0, "something was written outside the layer dir");
    let parent = sb.dest.parent().expect("parent");
    let mut names: Vec<_> = std::fs::read_dir(parent)
        .expect("read parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["dest".to_string(), "outside".to_string()]);
}

#[test]
fn normal_layer_unpacks_files_dirs_links() {
    let sb = sandbox();
    let data = archive(&[
        raw("./", DIR, "", b"", None),
        raw("bin/", DIR, "", b"", None),
        raw("bin/busybox", REG, "", b"#!fake\n", None),
        raw("bin/sh", SYM, "busybox", b"", None),
        raw("bin/abs", SYM, "/bin/busybox", b"", None),
        raw("usr/lib/deep/file", REG, "", b"x", None),
        raw("bin/hard", LINK, "bin/busybox", b"", None),
        raw("bin/busybox", REG, "", b"second wins\n", None),
    ]);
    let rep = unpack(&sb, data).expect("unpack");
    assert_eq!(rep.entries, 8);
    assert_eq!(std::fs::read_to_string(sb.dest.join("bin/busybox")).expect("read"), "second wins\n");
    assert_eq!(std::fs::read_link(sb.dest.join("bin/sh")).expect("link").to_str(), Some("busybox"));
    assert_eq!(std::fs::read_link(sb.dest.join("bin/abs")).expect("link").to_str(), Some("/bin/busybox"));
    assert_eq!(std::fs::read_to_string(sb.dest.join("bin/hard")).expect("hard"), "#!fake\n");
    assert_eq!(std::fs::read(sb.dest.join("usr/lib/deep/file")).expect("deep"), b"x");
    let m = std::fs::metadata(sb.dest.join("bin")).expect("meta");
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(m.mtime(), 1_700_000_000);
    assert_outside_untouched(&sb);
}

#[test]
fn gzip_layers_unpack() {
    let sb = sandbox();
    let plain = archive(&[raw("hello.txt", REG, "", b"hi", None)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).expect("gz");
    unpack(&sb, gz.finish().expect("gz")).expect("unpack");
    assert_eq!(std::fs::read(sb.dest.join("hello.txt")).expect("read"), b"hi");
}

#[test]
fn rejects_parent_components() {
    let sb = sandbox();
    let err = unpack(&sb, archive(&[raw("../evil", REG, "", b"x", None)])).expect_err("must fail");
    assert!(matches!(err, UnpackError::ParentComponent(ref p) if p == "../evil"), "{err}");
    let err = unpack(&sb, archive(&[raw("a/../../evil", REG, "", b"x", None)])).expect_err("must fail");
    assert!(matches!(err, UnpackError::ParentComponent(_)), "{err}");
    assert_outside_untouched(&sb);
}

#[test]
fn rejects_absolute_paths() {
    let sb = sandbox();
    let err = unpack(&sb, archive(&[raw("/etc/shoal-evil", REG, "", b"x", None)])).expect_err("must fail");
    assert!(matches!(err, UnpackError::AbsolutePath(ref p) if p == "/etc/shoal-evil"), "{err}");
    assert!(!Path::new("/etc/shoal-evil").exists());
}

#[test]
fn never_writes_through_a_symlink() {
    let sb = sandbox();
    // Absolute target: allowed (it means the container's /etc), but never followed on the host.
    let err = unpack(
        &sb,
        archive(&[raw("a", SYM, "/etc", b"", None), raw("a/shoal-evil-passwd", REG, "", b"x", None)]),
    )
    .expect_err("must fail");
    assert!(matches!(err, UnpackError::ThroughSymlink(_)), "{err}");
    assert!(!Path::new("/etc/shoal-evil-passwd").exists());

    let sb = sandbox();
    let target = sb.outside.display().to_string();
    let err =
        unpack(&sb, archive(&[raw("a", SYM, &target, b"", None), raw("a/passwd", REG, "", b"x", None)]))
            .expect_err("must fail");
    assert!(matches!(err, UnpackError::ThroughSymlink(_)), "{err}");
    // Replacing a symlink by a file must not write through it either.
    let sb2 = sandbox();
    let victim = sb2.outside.join("victim");
    let data = archive(&[
        raw("f", SYM, &victim.display().to_string(), b"", None),
        raw("f", REG, "", b"replaced", None),
    ]);
    unpack(&sb2, data).expect("replace");
    assert!(!victim.exists());
    assert_eq!(std::fs::read(sb2.dest.join("f")).expect("f"), b"replaced");
    assert_outside_untouched(&sb);
}

#[test]
fn rejects_escaping_symlinks() {
    let sb = sandbox();
    let err = unpack(&sb, archive(&[raw("x", SYM, "../../etc", b"", None)])).expect_err("must fail");
    assert!(matches!(err, UnpackError::SymlinkEscape { .. }), "{err}");
    let err = unpack(&sb, archive(&[raw("a/b", SYM, "../../x", b"", None)])).expect_err("must fail");
    assert!(matches!(err, UnpackError::SymlinkEscape { .. }), "{err}");
    // Climbing that stays inside is fine.
    unpack(&sb, archive(&[raw("a/c", SYM, "../lib", b"", None)])).expect("inside");
}

#[test]
fn rejects_escaping_hardlinks() {
    for target in ["/etc/shadow", "../../etc/shadow", "etc/../../shadow"] {
        let sb = sandbox();
        let err = unpack(&sb, archive(&[raw("h", LINK, target, b"", None)])).expect_err("must fail");
        assert!(matches!(err, UnpackError::HardlinkEscape { .. }), "{target}: {err}");
        assert_outside_untouched(&sb);
    }
    // Through a symlinked directory.
    let sb = sandbox();
    std::fs::write(sb.outside.join("secret"), b"s").expect("secret");
    let err = unpack(
        &sb,
        archive(&[
            raw("d", SYM, &sb.outside.display().to_string(), b"", None),
            raw("h", LINK, "d/secret", b"", None),
        ]),
    )
    .expect_err("must fail");
    assert!(matches!(err, UnpackError::HardlinkEscape { .. }), "{err}");
    assert_eq!(std::fs::metadata(sb.outside.join("secret")).expect("meta").nlink(), 1);
}

#[test]
fn huge_declared_size_is_rejected_before_reading() {
    let sb = sandbox();
    let err = unpack(&sb, archive(&[raw("big", REG, "", b"", Some(1 << 40))])).expect_err("must fail");
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("size limit"), "{err}");
}

#[test]
fn entry_and_size_caps() {
    let sb = sandbox();
    let entries: Vec<_> = (0..20).map(|i| raw(&format!("f{i}"), REG, "", b"abc", None)).collect();
    let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 10 };
    let err = unpack_layer(std::io::Cursor::new(archive(&entries)), &sb.dest, limits).expect_err("must fail");
    assert!(matches!(err, UnpackError::TooManyEntries { limit: 10 }), "{err}");
    let sb = sandbox();
    let limits = UnpackLimits { max_bytes: 30, max_entries: 100 };
    let err = unpack_layer(std::io::Cursor::new(archive(&entries)), &sb.dest, limits).expect_err("must fail");
    assert!(matches!(err, UnpackError::TooLarge { limit: 30, .. }), "{err}");
}

#[test]
fn devices_and_fifos_are_skipped() {
    let sb = sandbox();
    let rep = unpack(&sb, archive(&[raw("dev/null", CHR, "", b"", None), raw("p", FIFO, "", b"", None)]))
        .expect("unpack");
    assert_eq!(rep.skipped, 2);
    assert!(!sb.dest.join("dev/null").exists());
    assert!(!sb.dest.join("p").exists());
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let sb = sandbox();
    unpack(
        &sb,
        archive(&[
            raw("etc/", DIR, "", b"", None),
            raw("etc/.wh.motd", REG, "", b"", None),
            raw("var/.wh..wh..opq", REG, "", b"", None),
        ]),
    )
    .expect("unpack");
    let m = std::fs::symlink_metadata(sb.dest.join("etc/motd")).expect("whiteout");
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    let v = std::process::Command::new("getfattr")
        .args(["--absolute-names", "-n", "trusted.overlay.opaque", "--only-values"])
        .arg(sb.dest.join("var"))
        .output();
    if let Ok(out) = v {
        if out.status.success() {
            assert_eq!(out.stdout, b"y");
        }
    }
    let err = unpack(&sb, archive(&[raw("../.wh.x", REG, "", b"", None)])).expect_err("must fail");
    assert!(matches!(err, UnpackError::ParentComponent(_)));
}

/// Files the unpacker must never touch: one in the directory that holds the layer dir (the
/// store's `tmp/`, where other imports stage their files) and one in `outside`.
fn plant_sentinels(sb: &Sandbox) -> [std::path::PathBuf; 2] {
    let parent = sb.dest.parent().expect("parent").join("sentinel");
    let outside = sb.outside.join("sentinel");
    std::fs::write(&parent, b"other import in progress").expect("sentinel");
    std::fs::write(&outside, b"outside").expect("sentinel");
    [parent, outside]
}

fn assert_sentinels(sb: &Sandbox, sentinels: &[std::path::PathBuf; 2], case: &str) {
    for s in sentinels {
        assert!(s.is_file(), "{case}: {} was removed", s.display());
    }
    assert!(sb.dest.is_dir(), "{case}: the layer dir itself was removed");
}

#[test]
fn whiteouts_never_reach_outside_their_directory() {
    // (entry name, what an accepted whiteout would have removed)
    let cases = [
        (".wh...", "the directory holding the layer dir"),
        ("./.wh...", "the directory holding the layer dir"),
        ("a/.wh...", "the layer root"),
        (".wh..", "the layer root"),
        ("a/.wh..", "directory a"),
        (".wh.", "nothing"),
    ];
    for (name, what) in cases {
        let sb = sandbox();
        let sentinels = plant_sentinels(&sb);
        let data = archive(&[
            raw("keep", REG, "", b"k", None),
            raw("a/", DIR, "", b"", None),
            raw("a/keep", REG, "", b"k", None),
            raw(name, REG, "", b"", None),
        ]);
        let res = unpack(&sb, data);
        assert_sentinels(&sb, &sentinels, name);
        let err = res.expect_err(name);
        assert!(
            matches!(err, UnpackError::InvalidWhiteout { ref path, .. } if path == name),
            "{name} (would remove {what}): {err}"
        );
        assert!(err.to_string().contains(&format!("{name:?}")), "the error names the entry: {err}");
        assert!(sb.dest.join("keep").is_file(), "{name}: removed inside the layer");
        assert!(sb.dest.join("a/keep").is_file(), "{name}: removed inside the layer");
    }
}

#[test]
fn entries_under_reserved_whiteout_names_are_rejected() {
    for name in [".wh..wh..opq/x", ".wh.d/x", "a/.wh..wh..opq/.wh...", "a/.wh.b/c/.wh..wh..opq"] {
        let sb = sandbox();
        let sentinels = plant_sentinels(&sb);
        let err = unpack(&sb, archive(&[raw(name, REG, "", b"", None)])).expect_err(name);
        assert!(
            matches!(err, UnpackError::InvalidWhiteout { ref path, .. } if path == name),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        assert_sentinels(&sb, &sentinels, name);
        assert_eq!(std::fs::read_dir(&sb.dest).expect("dest").count(), 0, "{name}: created something");
    }
    // An opaque marker in its proper place, the layer root included, is still fine.
    let sb = sandbox();
    unpack(
        &sb,
        archive(&[raw(".wh..wh..opq", REG, "", b"", None), raw("d/.wh..wh..opq", REG, "", b"", None)]),
    )
    .expect("opaque markers");
    assert!(sb.dest.join("d").is_dir());
}

#[test]
fn a_whiteout_of_dotdot_in_an_imported_image_spares_the_store_staging_dir() {
    // `image load` and `pull` unpack through the store into `<store>/tmp/layer-…`; the store's
    // `tmp/` holds other imports' in-progress files.
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = shoal_driver_oci::ImageStore::open(tmp.path().join("images")).expect("store");
    let other = store.root().join("tmp").join("load-other-import");
    std::fs::create_dir(&other).expect("other");
    std::fs::write(other.join("f0"), b"in progress").expect("other file");
    let err = store.import(std::io::Cursor::new(archive(&[raw(".wh...", REG, "", b"", None)])), "evil:1");
    assert!(other.join("f0").is_file(), "another import's staging file was removed: {err:?}");
    let err = err.expect_err("the import must fail");
    assert!(err.to_string().contains("\".wh...\""), "the error names the entry: {err}");
    assert!(store.get("evil:1").expect("index").is_none());
}

#[test]
fn truncated_and_unsupported_archives_fail_cleanly() {
    let sb = sandbox();
    let mut data = raw("f", REG, "", &[7u8; 2000], None);
    data.truncate(1000);
    assert!(unpack(&sb, data).is_err());
    let err = unpack(&sb, vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0]).expect_err("zstd");
    assert!(matches!(err, UnpackError::UnsupportedCompression));
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just(".wh.a".to_string()),
        Just(".wh..wh..opq".to_string()),
        Just(".wh..".to_string()),
        Just(".wh...".to_string()),
        Just("etc".to_string()),
        "[a-c.]{1,4}",
    ]
}

fn path_str() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..5)).prop_map(|(abs, parts)| {
        let p = parts.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

#[derive(Clone, Debug)]
enum Kind {
    File,
    Dir,
    Sym,
    Hard,
    Fifo,
}

fn entry() -> impl Strategy<Value = (Kind, String, String, bool)> {
    (
        prop_oneof![Just(Kind::File), Just(Kind::Dir), Just(Kind::Sym), Just(Kind::Hard), Just(Kind::Fifo)],
        path_str(),
        path_str(),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn hostile_archives_never_escape((entries, gzip) in (prop::collection::vec(entry(), 1..12), any::<bool>())) {
        let sb = sandbox();
        let outside = sb.outside.display().to_string();
        let raws: Vec<Vec<u8>> = entries
            .iter()
            .map(|(k, name, target, target_outside)| {
                // Point some absolute targets at the sentinel directory next to the layer dir.
                let target = if *target_outside { format!("{outside}/{}", target.trim_start_matches('/')) } else { target.clone() };
                match k {
                    Kind::File => raw(name, REG, "", b"data", None),
                    Kind::Dir => raw(name, DIR, "", b"", None),
                    Kind::Sym => raw(name, SYM, &target, b"", None),
                    Kind::Hard => raw(name, LINK, &target, b"", None),
                    Kind::Fifo => raw(name, FIFO, "", b"", None),
                }
            })
            .collect();
        let mut data = archive(&raws);
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&data).expect("gz");
            data = gz.finish().expect("gz");
        }
        let _ = unpack(&sb, data);
        assert_outside_untouched(&sb);
    }
}
