//! Fuzz target: the layer unpacker (`unpack_layer`, also behind `docker load`, `image import`,
//! pulls and checkpoint restores), complementing the hand-written cases in `tests/unpack.rs`.
//! Random bytes, gzip of random bytes, random sequences of hostile entries (`..`, absolute paths,
//! symlinks and hard links out of the root or to the sentinel beside it, names and links given in
//! PAX records and GNU long-name entries, huge declared sizes, duplicated entries, whiteouts,
//! devices, unknown types) and byte-mutated valid archives: no panic, no hang, errors with a
//! message, and afterwards nothing outside the target directory was touched (checked on the
//! filesystem) and nothing left inside points out of it. Run as root (ownership, whiteouts).

mod fuzz_support;

use fuzz_support::*;
use proptest::prelude::*;
use shoal_driver_oci::unpack::{sanitize_path, symlink_target_ok, unpack_layer, UnpackLimits};

const LIMITS: UnpackLimits = UnpackLimits { max_bytes: 1 << 20, max_entries: 64 };

fn run(sb: &Sandbox, data: Vec<u8>) {
    match unpack_layer(std::io::Cursor::new(data), &sb.dest, LIMITS) {
        Ok(r) => {
            assert!(r.entries <= LIMITS.max_entries);
            assert!(r.bytes <= LIMITS.max_bytes);
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
    sb.assert_outside_untouched(&[]);
    assert_contained(&sb.dest);
}

fn valid_layer() -> Vec<u8> {
    archive(&[
        raw("./", DIR, "", b"", None),
        raw("bin/", DIR, "", b"", None),
        raw("bin/busybox", REG, "", b"#!fake\n", None),
        raw("bin/sh", SYM, "busybox", b"", None),
        raw("bin/abs", SYM, "/bin/busybox", b"", None),
        raw("bin/hard", LINK, "bin/busybox", b"", None),
        raw("etc/.wh.passwd", REG, "", b"", None),
        raw("etc/.wh..wh..opq", REG, "", b"", None),
        pax(&[("path", "usr/lib/long/name/file"), ("mtime", "1.5")], false),
        raw("x", REG, "", &[7u8; 1500], None),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..4096), gz in any::<bool>()) {
        let sb = sandbox();
        run(&sb, if gz { gzip(&data) } else { data });
    }

    #[test]
    fn hostile_entries(entries in prop::collection::vec(hostile(), 1..10), dup in any::<bool>(), gz in any::<bool>()) {
        let sb = sandbox();
        let mut parts: Vec<Vec<u8>> = entries.iter().map(|h| hostile_bytes(h, &sb.outside)).collect();
        if dup {
            // Every entry twice: replacing what an earlier entry made (a file by a symlink...).
            let again = parts.clone();
            parts.extend(again);
        }
        let data = archive(&parts);
        run(&sb, if gz { gzip(&data) } else { data });
    }

    #[test]
    fn mutated_valid_layers(edits in byte_edits(), gz in any::<bool>()) {
        let sb = sandbox();
        let good = valid_layer();
        let data = if gz { mutate_bytes(gzip(&good), &edits) } else { mutate_bytes(good, &edits) };
        run(&sb, data);
    }

    #[test]
    fn path_checks_agree(name in path_str(), target in path_str()) {
        // What sanitize_path accepts has no `..` and is relative; a symlink target accepted at
        // that path stays inside.
        if let Ok(parts) = sanitize_path(&name) {
            prop_assert!(parts.iter().all(|p| p != ".." && p != "." && !p.is_empty() && !p.contains('/')));
            if symlink_target_ok(&parts, &target) {
                let mut depth = if target.starts_with('/') { 0i64 } else { parts.len().saturating_sub(1) as i64 };
                for c in target.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => depth -= 1,
                        _ => depth += 1,
                    }
                    prop_assert!(depth >= 0, "{:?} -> {:?} escapes", name, target);
                }
            }
        }
    }
}

#[test]
fn an_entry_through_a_symlink_to_the_sentinel_directory_is_refused() {
    let sb = sandbox();
    let outside = sb.outside.display().to_string();
    let data = archive(&[
        raw("esc", SYM, &outside, b"", None),
        raw("esc/file", REG, "", b"overwritten", None),
        raw("esc/dir/new", REG, "", b"new", None),
    ]);
    assert!(unpack_layer(std::io::Cursor::new(data), &sb.dest, LIMITS).is_err());
    sb.assert_outside_untouched(&[]);
}

#[test]
fn pax_and_gnu_long_names_are_checked_like_plain_names() {
    for evil in [
        archive(&[pax(&[("path", "../outside/file")], false), raw("innocent", REG, "", b"x", None)]),
        archive(&[gnu_long(GNU_LONGNAME, "/tmp/../outside/file"), raw("innocent", REG, "", b"x", None)]),
        archive(&[pax(&[("linkpath", "../outside/file")], false), raw("h", LINK, "x", b"", None)]),
        archive(&[gnu_long(GNU_LONGLINK, "../../../../etc"), raw("s", SYM, "x", b"", None)]),
        // A huge size declared in a PAX record (the header says 1 byte).
        archive(&[pax(&[("size", "1099511627776")], false), raw("f", REG, "", b"x", None)]),
    ]
    .into_iter()
    .enumerate()
    {
        let sb = sandbox();
        let r = unpack_layer(std::io::Cursor::new(evil.1), &sb.dest, LIMITS);
        assert!(r.is_err(), "case {}: {r:?}", evil.0);
        sb.assert_outside_untouched(&[]);
        assert_contained(&sb.dest);
    }
}

#[test]
fn many_entries_and_deep_paths_are_bounded() {
    let sb = sandbox();
    let deep = vec!["d"; 2000].join("/");
    let entries: Vec<Vec<u8>> = (0..200).map(|i| raw(&format!("f{i}"), REG, "", b"", None)).collect();
    let mut data = archive(&entries);
    assert!(unpack_layer(std::io::Cursor::new(data.clone()), &sb.dest, LIMITS).is_err(), "over 64 entries");
    data = archive(&[pax(&[("path", &deep)], false), raw("x", REG, "", b"x", None)]);
    let sb = sandbox();
    let _ = unpack_layer(std::io::Cursor::new(data), &sb.dest, LIMITS);
    sb.assert_outside_untouched(&[]);
}
