//! Checkpoint directories and the signed archive that carries one to another node.
//!
//! A checkpoint directory ([`crate::OciDriver::checkpoint_with`]) holds:
//! - `criu/`: CRIU's images of the final dump (`criu/parent` links to the last pre-dump);
//! - `pre-N/`: the pre-dumps' images, when there were any;
//! - `rootfs-diff.tar`: the container's filesystem changes (its overlayfs upper dir) as an OCI
//!   layer: overlay whiteouts become `.wh.NAME`, opaque directories `.wh..wh..opq`;
//! - `checkpoint.json`: [`Manifest`].
//!
//! [`pack`] writes the directory as one tar (gzip by default) followed by an HMAC-SHA256 tag and a
//! magic trailer: `payload | tag (32 bytes) | "SHOALCK1"`. The tag covers a domain string, the
//! length-prefixed `binding` (the caller passes the task and cluster ids) and the payload, so an
//! archive is only accepted for the task and cluster it was made for. [`unpack_verified`] checks
//! the tag over the whole file before extracting anything, then extracts with the safe unpacker
//! ([`crate::unpack`]).

use crate::unpack::{self, UnpackError, UnpackLimits, UnpackReport};
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The trailer that ends every archive.
const MAGIC: &[u8; 8] = b"SHOALCK1";
const TAG_LEN: usize = 32;
const DOMAIN: &[u8] = b"shoal-checkpoint-v1\0";

/// The manifest's file name in a checkpoint directory.
pub const MANIFEST: &str = "checkpoint.json";
/// CRIU's images of the final dump.
pub const IMAGES_DIR: &str = "criu";
/// The filesystem changes.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a Shoal checkpoint archive")]
    NotAnArchive(PathBuf),
    #[error(
        "checkpoint archive {0} failed verification: it was modified, or it was made for another task or cluster"
    )]
    Rejected(PathBuf),
    #[error("the checkpoint key is empty")]
    EmptyKey,
    #[error("{0} exists and is not an empty directory")]
    DestNotEmpty(PathBuf),
    #[error(
        "the checkpoint stream failed verification at frame {frame}: {why} (it was modified or cut short, or made for another task or cluster)"
    )]
    StreamRejected { frame: u64, why: &'static str },
    #[error("unpacking the checkpoint archive: {0}")]
    Unpack(#[from] UnpackError),
}

pub(crate) fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CheckpointError {
    move |source| CheckpointError::Io { context: context.to_string(), source }
}

/// What a checkpoint directory says about itself (`checkpoint.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    pub format: u32,
    pub task_id: String,
    pub container_id: String,
    pub criu_version: String,
    /// Pre-dump directories, oldest first (`pre-1`...).
    pub pre_dumps: Vec<String>,
    /// The dump holds established TCP connections: the restore must allow them too.
    pub tcp_established: bool,
    pub leave_running: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, CheckpointError> {
        let p = dir.join(MANIFEST);
        let data = std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?;
        serde_json::from_slice(&data).map_err(|e| CheckpointError::Io {
            context: format!("parsing {}", p.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    pub fn write(&self, dir: &Path) -> Result<(), CheckpointError> {
        let p = dir.join(MANIFEST);
        let data = serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::Io {
            context: "encoding the manifest".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&p, data).map_err(io(format!("writing {}", p.display())))
    }
}

fn mac_context(binding: &[u8], key: &[u8]) -> Result<hmac::Context, CheckpointError> {
    mac_context_in(DOMAIN, binding, key)
}

/// An HMAC-SHA256 state under `key` that has taken `domain` and the length-prefixed `binding`
/// (the archive's and the stream's, each with its own domain).
pub(crate) fn mac_context_in(
    domain: &[u8],
    binding: &[u8],
    key: &[u8],
) -> Result<hmac::Context, CheckpointError> {
    if key.is_empty() {
        return Err(CheckpointError::EmptyKey);
    }
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    ctx.update(domain);
    ctx.update(&(binding.len() as u64).to_be_bytes());
    ctx.update(binding);
    Ok(ctx)
}

/// A writer that MACs everything written through it.
struct MacWriter<W: Write> {
    inner: W,
    ctx: hmac::Context,
    written: u64,
}

impl<W: Write> Write for MacWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Every entry under `root` (not following symlinks), parents before children, sorted by name.
pub(crate) fn walk(root: &Path) -> Result<Vec<(PathBuf, Metadata)>, CheckpointError> {
    fn rec(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, Metadata)>) -> Result<(), CheckpointError> {
        let dir = root.join(rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(format!("listing {}", dir.display())))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io(format!("listing {}", dir.display())))?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let abs = root.join(&rel);
            let meta = std::fs::symlink_metadata(&abs).map_err(io(format!("stat {}", abs.display())))?;
            let is_dir = meta.is_dir();
            out.push((rel.clone(), meta));
            if is_dir {
                rec(root, &rel, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    rec(root, Path::new(""), &mut out)?;
    Ok(out)
}

/// Opens a regular file without following a final symlink.
fn open_nofollow(p: &Path) -> Result<File, CheckpointError> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(p, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map(File::from)
        .map_err(|e| CheckpointError::Io { context: format!("opening {}", p.display()), source: e.into() })
}

/// Appends one filesystem entry (dir, regular file, symlink) to `b`; `false` when its type is
/// not one of those.
pub(crate) fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    name: &Path,
    abs: &Path,
    meta: &Metadata,
) -> Result<bool, CheckpointError> {
    let ctx = || format!("archiving {}", abs.display());
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let ft = meta.file_type();
    if ft.is_dir() {
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty()).map_err(io(ctx()))?;
    } else if ft.is_file() {
        let f = open_nofollow(abs)?;
        b.append_data(&mut h, name, f.take(meta.len())).map_err(io(ctx()))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(abs).map_err(io(ctx()))?;
        h.set_size(0);
        b.append_link(&mut h, name, target).map_err(io(ctx()))?;
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// How [`pack_with`] compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// gzip at the fastest level.
    Gzip,
}

/// [`pack_with`] with gzip.
pub fn pack(src_dir: &Path, out_file: &Path, binding: &[u8], key: &[u8]) -> Result<u64, CheckpointError> {
    pack_with(src_dir, out_file, binding, key, Compression::Gzip)
}

/// Packs the checkpoint directory `src_dir` into `out_file` (written to a temporary name, synced,
/// then renamed) and signs it for `binding` with `key`. Returns the archive's size.
pub fn pack_with(
    src_dir: &Path,
    out_file: &Path,
    binding: &[u8],
    key: &[u8],
    compression: Compression,
) -> Result<u64, CheckpointError> {
    let ctx = mac_context(binding, key)?;
    let mut tmp = out_file.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let mut w = MacWriter { inner: BufWriter::with_capacity(1 << 20, file), ctx, written: 0 };
        let entries = walk(src_dir)?;
        let write_tar = |w: &mut dyn Write| -> Result<(), CheckpointError> {
            let mut b = tar::Builder::new(w);
            for (rel, meta) in &entries {
                if !append_entry(&mut b, rel, &src_dir.join(rel), meta)? {
                    tracing::debug!(path = %rel.display(), "skipping a special file in the checkpoint");
                }
            }
            b.finish().map_err(io("finishing the archive"))
        };
        match compression {
            Compression::None => write_tar(&mut w)?,
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::fast());
                write_tar(&mut gz)?;
                gz.finish().map_err(io("compressing the archive"))?;
            }
        }
        let MacWriter { mut inner, ctx, written } = w;
        let tag = ctx.sign();
        inner.write_all(tag.as_ref()).map_err(io("writing the archive"))?;
        inner.write_all(MAGIC).map_err(io("writing the archive"))?;
        let file = inner.into_inner().map_err(|e| CheckpointError::Io {
            context: "writing the archive".into(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io("syncing the archive"))?;
        Ok(written + (TAG_LEN + MAGIC.len()) as u64)
    })();
    match result {
        Ok(size) => {
            std::fs::rename(&tmp, out_file).map_err(io(format!("renaming to {}", out_file.display())))?;
            Ok(size)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Verifies the archive `file` for `binding` and `key`, reading all of it, and only then extracts
/// it into `dest_dir` (created; it must not exist or be empty) with the safe unpacker. A tampered
/// or foreign archive is refused with [`CheckpointError::Rejected`] and nothing is written.
///
/// The file is read twice through one descriptor: the caller must keep it where nobody else can
/// write it between the two passes (the agent's data dir).
pub fn unpack_verified(
    file: &Path,
    binding: &[u8],
    key: &[u8],
    dest_dir: &Path,
) -> Result<UnpackReport, CheckpointError> {
    let mut ctx = mac_context(binding, key)?;
    let mut f = File::open(file).map_err(io(format!("opening {}", file.display())))?;
    let len = f.metadata().map_err(io(format!("stat {}", file.display())))?.len();
    let trailer = (TAG_LEN + MAGIC.len()) as u64;
    if len < trailer {
        return Err(CheckpointError::NotAnArchive(file.to_path_buf()));
    }
    let payload_len = len - trailer;
    let mut tail = [0u8; TAG_LEN + 8];
    f.seek(SeekFrom::Start(payload_len)).map_err(io(format!("reading {}", file.display())))?;
    f.read_exact(&mut tail).map_err(io(format!("reading {}", file.display())))?;
    if &tail[TAG_LEN..] != MAGIC {
        return Err(CheckpointError::NotAnArchive(file.to_path_buf()));
    }
    f.seek(SeekFrom::Start(0)).map_err(io(format!("reading {}", file.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = payload_len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f.read(&mut buf[..want]).map_err(io(format!("reading {}", file.display())))?;
        if n == 0 {
            return Err(CheckpointError::Rejected(file.to_path_buf()));
        }
        ctx.update(&buf[..n]);
        left -= n as u64;
    }
    let tag = ctx.sign();
    if !constant_time_eq(tag.as_ref(), &tail[..TAG_LEN]) {
        return Err(CheckpointError::Rejected(file.to_path_buf()));
    }

    let created = take_dest(dest_dir)?;
    f.seek(SeekFrom::Start(0)).map_err(io(format!("reading {}", file.display())))?;
    let limits = UnpackLimits { max_bytes: u64::MAX, max_entries: 1_000_000 };
    match unpack::unpack_layer(f.take(payload_len), dest_dir, limits) {
        Ok(r) => Ok(r),
        Err(e) => {
            discard_dest(dest_dir, created);
            Err(e.into())
        }
    }
}

/// Makes `dest_dir` ready to unpack into: it must be absent (it is created: `true`) or empty.
pub(crate) fn take_dest(dest_dir: &Path) -> Result<bool, CheckpointError> {
    match std::fs::read_dir(dest_dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(CheckpointError::DestNotEmpty(dest_dir.to_path_buf()));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest_dir).map_err(io(format!("creating {}", dest_dir.display())))?;
            Ok(true)
        }
        Err(_) => Err(CheckpointError::DestNotEmpty(dest_dir.to_path_buf())),
    }
}

/// Removes what a failed unpack left: the directory itself when [`take_dest`] created it.
pub(crate) fn discard_dest(dest_dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dest_dir);
    } else {
        clear_dir(dest_dir);
    }
}

fn clear_dir(dir: &Path) {
    if let Ok(it) = std::fs::read_dir(dir) {
        for e in it.flatten() {
            let p = e.path();
            let _ = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What [`write_rootfs_diff`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    pub entries: u64,
    pub whiteouts: u64,
    pub bytes: u64,
    /// Sockets, fifos and devices (other than whiteouts): not carried.
    pub skipped: u64,
}

/// Writes the overlayfs upper dir `upper` as an OCI layer tarball `out` (uncompressed): overlay
/// whiteouts (0/0 character devices) become `.wh.NAME`, opaque directories get `.wh..wh..opq`,
/// hard links stay links. Never follows symlinks. The container must be frozen or stopped.
pub fn write_rootfs_diff(upper: &Path, out: &Path) -> Result<DiffReport, CheckpointError> {
    let file = File::create(out).map_err(io(format!("creating {}", out.display())))?;
    let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let mut report = DiffReport::default();
    let mut links: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    for (rel, meta) in walk(upper)? {
        let abs = upper.join(&rel);
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let wh = rel.with_file_name(format!(".wh.{name}"));
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o600);
            h.set_mtime(meta.mtime().max(0) as u64);
            b.append_data(&mut h, &wh, std::io::empty())
                .map_err(io(format!("archiving {}", abs.display())))?;
            report.whiteouts += 1;
            continue;
        }
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &rel, first).map_err(io(format!("archiving {}", abs.display())))?;
                report.entries += 1;
                continue;
            }
            links.insert(key, rel.clone());
        }
        if append_entry(&mut b, &rel, &abs, &meta)? {
            report.entries += 1;
            if ft.is_file() {
                report.bytes += meta.len();
            }
        } else {
            tracing::debug!(path = %abs.display(), "not carrying a special file in the rootfs diff");
            report.skipped += 1;
        }
        if ft.is_dir() && is_opaque(&abs) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o600);
            b.append_data(&mut h, rel.join(".wh..wh..opq"), std::io::empty())
                .map_err(io(format!("archiving {}", abs.display())))?;
            report.whiteouts += 1;
        }
    }
    let w = b.into_inner().map_err(io(format!("writing {}", out.display())))?;
    let file = w.into_inner().map_err(|e| CheckpointError::Io {
        context: format!("writing {}", out.display()),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(format!("syncing {}", out.display())))?;
    Ok(report)
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf[..]), Ok(n) if buf[..n] == *b"y")
}

/// Unpacks a rootfs diff written by [`write_rootfs_diff`] into `upper` (empty; before the overlay
/// is mounted) with the safe unpacker, which turns `.wh.` entries back into overlay whiteouts.
pub fn apply_rootfs_diff(diff: &Path, upper: &Path) -> Result<UnpackReport, CheckpointError> {
    let f = File::open(diff).map_err(io(format!("opening {}", diff.display())))?;
    Ok(unpack::unpack_layer(f, upper, UnpackLimits::default())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        std::fs::create_dir_all(dir.join("criu")).expect("mkdir");
        std::fs::create_dir_all(dir.join("pre-1")).expect("mkdir");
        std::fs::write(dir.join("criu/pages-1.img"), vec![7u8; 200_000]).expect("write");
        std::fs::write(dir.join("pre-1/pages-1.img"), b"older").expect("write");
        std::os::unix::fs::symlink("../pre-1", dir.join("criu/parent")).expect("symlink");
        std::fs::write(dir.join(MANIFEST), b"{}").expect("write");
    }

    #[test]
    fn round_trip() {
        for compression in [Compression::Gzip, Compression::None] {
            let t = tempfile::tempdir().expect("tempdir");
            let src = t.path().join("src");
            sample(&src);
            let ar = t.path().join("ck.shoal");
            let size = pack_with(&src, &ar, b"task1/cluster1", b"secret", compression).expect("pack");
            assert_eq!(size, std::fs::metadata(&ar).expect("stat").len());
            assert!(!t.path().join("ck.shoal.partial").exists());
            let dest = t.path().join("dest");
            unpack_verified(&ar, b"task1/cluster1", b"secret", &dest).expect("unpack");
            assert_eq!(std::fs::read(dest.join("criu/pages-1.img")).expect("read"), vec![7u8; 200_000]);
            assert_eq!(std::fs::read_link(dest.join("criu/parent")).expect("link"), Path::new("../pre-1"));
            assert_eq!(std::fs::read(dest.join("criu/parent/pages-1.img")).expect("read"), b"older");
            // A non-empty destination is refused.
            assert!(matches!(
                unpack_verified(&ar, b"task1/cluster1", b"secret", &dest),
                Err(CheckpointError::DestNotEmpty(_))
            ));
        }
    }

    #[test]
    fn tampering_and_foreign_archives_are_refused_before_extracting() {
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        sample(&src);
        let ar = t.path().join("ck.shoal");
        pack(&src, &ar, b"task1/cluster1", b"secret").expect("pack");
        let dest = t.path().join("dest");
        let refused =
            |r: Result<UnpackReport, CheckpointError>| matches!(r, Err(CheckpointError::Rejected(_)));
        assert!(refused(unpack_verified(&ar, b"task2/cluster1", b"secret", &dest)));
        assert!(refused(unpack_verified(&ar, b"task1/cluster1", b"other", &dest)));
        // The binding is length-prefixed: moving bytes between it and the payload does not help.
        assert!(refused(unpack_verified(&ar, b"task1/cluster", b"secret", &dest)));
        let good = std::fs::read(&ar).expect("read");
        for pos in [0, 10, good.len() / 2, good.len() - 40, good.len() - 9] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            std::fs::write(&ar, &bad).expect("write");
            assert!(refused(unpack_verified(&ar, b"task1/cluster1", b"secret", &dest)), "flip at {pos}");
        }
        // Truncated, or the trailer gone.
        std::fs::write(&ar, &good[..good.len() - 1]).expect("write");
        assert!(matches!(
            unpack_verified(&ar, b"task1/cluster1", b"secret", &dest),
            Err(CheckpointError::NotAnArchive(_))
        ));
        std::fs::write(&ar, b"short").expect("write");
        assert!(matches!(
            unpack_verified(&ar, b"task1/cluster1", b"secret", &dest),
            Err(CheckpointError::NotAnArchive(_))
        ));
        assert!(!dest.exists(), "nothing may be extracted from a refused archive");
        assert!(matches!(pack(&src, &ar, b"x", b""), Err(CheckpointError::EmptyKey)));
        let msg = CheckpointError::Rejected(ar.clone()).to_string();
        assert!(msg.contains("failed verification"), "{msg}");
    }

    #[test]
    fn a_signed_archive_is_still_unpacked_safely() {
        // A validly signed archive with an escaping symlink (a key holder gone bad) is still refused.
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::os::unix::fs::symlink("../../../etc", src.join("evil")).expect("symlink");
        let ar = t.path().join("ck.shoal");
        pack(&src, &ar, b"b", b"k").expect("pack");
        let dest = t.path().join("dest");
        assert!(matches!(
            unpack_verified(&ar, b"b", b"k", &dest),
            Err(CheckpointError::Unpack(UnpackError::SymlinkEscape { .. }))
        ));
        assert!(!dest.exists());
    }

    #[test]
    fn rootfs_diff_round_trip() {
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("tmp/sub")).expect("mkdir");
        std::fs::write(upper.join("tmp/count"), b"42\n").expect("write");
        std::fs::hard_link(upper.join("tmp/count"), upper.join("tmp/sub/count2")).expect("link");
        std::os::unix::fs::symlink("/tmp/count", upper.join("tmp/link")).expect("symlink");
        let whiteouts = rustix::process::geteuid().is_root();
        if whiteouts {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                upper.join("tmp/deleted"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .expect("mknod");
            rustix::fs::setxattr(
                upper.join("tmp/sub"),
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .expect("xattr");
        }
        let out = t.path().join("diff.tar");
        let r = write_rootfs_diff(&upper, &out).expect("diff");
        assert_eq!(r.bytes, 3);
        let dest = t.path().join("upper2");
        std::fs::create_dir(&dest).expect("mkdir");
        apply_rootfs_diff(&out, &dest).expect("apply");
        assert_eq!(std::fs::read(dest.join("tmp/count")).expect("read"), b"42\n");
        let (a, b) = (
            std::fs::metadata(dest.join("tmp/count")).expect("stat"),
            std::fs::metadata(dest.join("tmp/sub/count2")).expect("stat"),
        );
        assert_eq!(a.ino(), b.ino());
        assert_eq!(std::fs::read_link(dest.join("tmp/link")).expect("link"), Path::new("/tmp/count"));
        if whiteouts {
            assert_eq!(r.whiteouts, 2);
            let m = std::fs::symlink_metadata(dest.join("tmp/deleted")).expect("whiteout");
            assert!(m.file_type().is_char_device() && m.rdev() == 0);
            assert!(is_opaque(&dest.join("tmp/sub")));
            assert!(!is_opaque(&dest.join("tmp")));
        }
    }
}
