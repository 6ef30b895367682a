//! Shared by the fuzz targets (`fuzz_unpack`, `fuzz_store`, `fuzz_checkpoint`): hostile tar
//! entries written byte for byte, a sandbox with sentinels beside the target directory, and the
//! check that nothing outside the target was touched and nothing inside points out of it.
#![allow(dead_code)]

use proptest::prelude::*;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const REG: u8 = b'0';
pub const LINK: u8 = b'1';
pub const SYM: u8 = b'2';
pub const CHR: u8 = b'3';
pub const DIR: u8 = b'5';
pub const FIFO: u8 = b'6';
pub const PAX: u8 = b'x';
pub const PAX_GLOBAL: u8 = b'g';
pub const GNU_LONGNAME: u8 = b'L';
pub const GNU_LONGLINK: u8 = b'K';

/// One raw tar entry: the name and link name written byte for byte (no validation), `declared`
/// overriding the size in the header (the data written is `data` either way).
pub fn raw(name: &str, kind: u8, link: &str, data: &[u8], declared: Option<u64>) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        let l = link.len().min(100);
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

/// A PAX extended header record set (`path=`, `linkpath=`, `size=`…) for the next entry.
pub fn pax(records: &[(&str, &str)], global: bool) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        // The length counts its own digits.
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    raw("././@PaxHeader", if global { PAX_GLOBAL } else { PAX }, "", &data, None)
}

/// A GNU long name (`L`) or long link (`K`) entry for the next entry.
pub fn gnu_long(kind: u8, name: &str) -> Vec<u8> {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    raw("././@LongLink", kind, "", &data, None)
}

pub fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

/// A temporary directory holding the target `dest` (created empty) and, beside it, `outside`
/// with a sentinel file and directory that no archive may touch.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub dest: PathBuf,
    pub outside: PathBuf,
}

pub const SENTINEL_DATA: &[u8] = b"do not touch";

pub fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&dest).expect("dest");
    std::fs::create_dir_all(outside.join("dir")).expect("outside");
    std::fs::write(outside.join("file"), SENTINEL_DATA).expect("sentinel");
    Sandbox { tmp, dest, outside }
}

impl Sandbox {
    /// The sentinels are as they were, and the temporary directory holds only `dest` and
    /// `outside` (plus `extra`, names the caller created there).
    pub fn assert_outside_untouched(&self, extra: &[&str]) {
        let mut names: Vec<String> = std::fs::read_dir(&self.outside)
            .expect("read outside")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dir", "file"], "something was written in the sentinel directory");
        assert_eq!(std::fs::read_dir(self.outside.join("dir")).expect("read dir").count(), 0);
        let meta = std::fs::symlink_metadata(self.outside.join("file")).expect("sentinel");
        assert!(meta.is_file());
        assert_eq!(meta.nlink(), 1, "the sentinel file was hard-linked from inside");
        assert_eq!(std::fs::read(self.outside.join("file")).expect("sentinel"), SENTINEL_DATA);
        let top: Vec<String> = std::fs::read_dir(self.tmp.path())
            .expect("read tmp")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "dest" && !extra.contains(&n.as_str()))
            .collect();
        assert_eq!(top, ["outside"], "something was written beside the target directory");
    }
}

/// Every symlink under `root` resolves (lexically, with `root` as `/`) inside `root`, and no
/// entry is a device other than an overlay whiteout (0/0 character device).
pub fn assert_contained(root: &Path) {
    fn walk(root: &Path, rel: &mut Vec<String>) {
        let dir = rel.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let Ok(rd) = std::fs::read_dir(&dir) else { return };
        for e in rd {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(e.path()).expect("stat");
            let ft = meta.file_type();
            use std::os::unix::fs::FileTypeExt;
            if ft.is_symlink() {
                let target = std::fs::read_link(e.path()).expect("readlink");
                let target = target.to_string_lossy();
                let mut stack: Vec<&str> = if target.starts_with('/') {
                    Vec::new()
                } else {
                    rel.iter().map(String::as_str).collect()
                };
                for part in target.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => assert!(stack.pop().is_some(), "{name} -> {target} escapes the root"),
                        p => stack.push(p),
                    }
                }
            } else if ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
                panic!("{} is a device or fifo", e.path().display());
            } else if ft.is_char_device() {
                assert_eq!(meta.rdev(), 0, "{} is a device other than a whiteout", e.path().display());
            } else if ft.is_dir() {
                rel.push(name);
                walk(root, rel);
                rel.pop();
            }
        }
    }
    walk(root, &mut Vec::new());
}

/// Path components an attacker likes.
pub fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("dest".to_string()),
        Just("outside".to_string()),
        Just("file".to_string()),
        Just(".wh.a".to_string()),
        Just(".wh..wh..opq".to_string()),
        Just(".wh..".to_string()),
        Just("\u{e9}".to_string()),
        Just("a\\b".to_string()),
        "[a-c.]{1,4}",
    ]
}

pub fn path_str() -> impl Strategy<Value = String> {
    (0u8..4, prop::collection::vec(component(), 1..5)).prop_map(|(lead, parts)| {
        let p = parts.join("/");
        match lead {
            0 => format!("/{p}"),
            1 => format!("./{p}"),
            2 => format!("{p}/"),
            _ => p,
        }
    })
}

/// One hostile entry: how it is named (plain header, PAX `path`, GNU long name), its kind, its
/// name and link, whether the link points into the sentinel directory, and its declared size.
#[derive(Clone, Debug)]
pub struct Hostile {
    pub naming: u8,
    pub kind: u8,
    pub name: String,
    pub link: String,
    pub link_outside: bool,
    pub declared: Option<u64>,
}

pub fn hostile() -> impl Strategy<Value = Hostile> {
    (
        0u8..4,
        prop::sample::select(&[REG, REG, DIR, SYM, SYM, LINK, LINK, CHR, FIFO, b'7', b'S', b'Z'][..]),
        path_str(),
        path_str(),
        any::<bool>(),
        prop_oneof![
            8 => Just(None),
            1 => Just(Some(u64::MAX)),
            1 => Just(Some(1 << 40)),
            1 => (0u64..2000).prop_map(Some),
        ],
    )
        .prop_map(|(naming, kind, name, link, link_outside, declared)| Hostile {
            naming,
            kind,
            name,
            link,
            link_outside,
            declared,
        })
}

/// The bytes of one hostile entry; `outside` is the sentinel directory's absolute path.
pub fn hostile_bytes(h: &Hostile, outside: &Path) -> Vec<u8> {
    let link = if h.link_outside {
        match h.kind {
            LINK => format!("../outside/{}", h.link.trim_start_matches('/')),
            _ => format!("{}/{}", outside.display(), h.link.trim_start_matches('/')),
        }
    } else {
        h.link.clone()
    };
    let data: &[u8] = if h.kind == REG { b"payload" } else { b"" };
    match h.naming {
        // The name in a PAX record; the header holds an innocent one.
        1 => [
            pax(&[("path", &h.name), ("linkpath", &link)], false),
            raw("innocent", h.kind, "x", data, h.declared),
        ]
        .concat(),
        // GNU long name and link.
        2 => [
            gnu_long(GNU_LONGNAME, &h.name),
            gnu_long(GNU_LONGLINK, &link),
            raw("innocent", h.kind, "x", data, h.declared),
        ]
        .concat(),
        // A global PAX header first (it must not rename later entries out of the root).
        3 => [pax(&[("path", &h.name)], true), raw(&h.name, h.kind, &link, data, h.declared)].concat(),
        _ => raw(&h.name, h.kind, &link, data, h.declared),
    }
}

/// Byte-level edits of an archive: flips, truncation, insertions, zeroed blocks.
pub fn mutate_bytes(mut data: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, how) in edits {
        let i = at.index(data.len() + 1);
        match how {
            0 if i < data.len() => data[i] ^= byte | 1,
            1 => data.truncate(i),
            2 => data.insert(i, *byte),
            3 => {
                let end = (i + 512).min(data.len());
                data[i..end].fill(0);
            }
            4 if i < data.len() => data[i] = b'0' + (byte % 8),
            _ => {}
        }
    }
    data
}

pub fn byte_edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..5), 1..5)
}
