//! The safe layer unpacker.
//!
//! A layer tarball comes from an untrusted image. [`unpack_layer`] extracts it into a fresh
//! directory and guarantees that nothing is ever created, modified or followed outside it:
//!
//! - **Names** are checked lexically first: absolute paths ([`UnpackError::AbsolutePath`]) and
//!   `..` components ([`UnpackError::ParentComponent`]) are rejected; `./` and empty components are
//!   dropped.
//! - **No symlink is ever followed while writing.** Every parent directory is opened with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)` starting from the layer's root directory fd, and missing
//!   parents are created with `mkdirat`. A path that goes through a symlink (`a -> /etc` followed by
//!   `a/passwd`) fails with [`UnpackError::ThroughSymlink`]. Files are created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` after removing any earlier entry of the same name.
//! - **Symlink targets** are resolved lexically against the layer root, which plays the container's
//!   `/`: absolute targets (`/bin/sh -> /bin/busybox`) are rooted there and allowed; a relative target
//!   that climbs above the root (`x -> ../../etc`) is rejected ([`UnpackError::SymlinkEscape`]).
//!   The host never follows them anyway (see above).
//! - **Hard links** must name an entry inside the layer, with the same rules as names
//!   ([`UnpackError::HardlinkEscape`]); `linkat` never follows a final symlink.
//! - **Device nodes and fifos are skipped** (logged at debug): the runtime gives every container a
//!   fresh `/dev`, and creating devices from an image is a privilege we do not hand out.
//! - **Whiteouts** become overlayfs whiteouts, since layers are stacked as overlayfs lowerdirs:
//!   `.wh.NAME` becomes a `0/0` character device `NAME`, and `.wh..wh..opq` sets
//!   `trusted.overlay.opaque=y` on its directory. Other `.wh..wh.` (aufs metadata) are skipped.
//!   `NAME` must be one plain name inside the whiteout's own directory: `.wh.` (empty), `.wh..`
//!   (the directory itself), `.wh...` (its parent — for an entry at the top, the directory that
//!   holds the layer) and anything holding `/` or NUL are rejected
//!   ([`UnpackError::InvalidWhiteout`]) before anything is removed. `.wh.` names are reserved
//!   (OCI image spec), so an entry *under* such a name (`.wh.x/y`, `.wh..wh..opq/y`) is rejected
//!   too. Every removal and directory open checks again that it was handed one plain name.
//! - **Limits**: the sum of the declared entry sizes and the entry count are capped
//!   ([`UnpackLimits`]); the check happens on the header, before any data is read.
//! - gzip (detected by magic) and uncompressed tarballs; anything else is
//!   [`UnpackError::UnsupportedCompression`].
//!
//! Ownership (numeric uid/gid from the header), mode (including setuid bits) and mtime are kept;
//! extended attributes other than the opaque marker are not.

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Caps on what one layer may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The sum of the declared sizes of all regular files.
    pub max_bytes: u64,
    /// Entries of any kind.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits { max_bytes: 32 << 30, max_entries: 1_000_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {0:?} has an absolute path")]
    AbsolutePath(String),
    #[error("layer entry {0:?} contains a `..` component")]
    ParentComponent(String),
    #[error("layer entry {0:?} has an empty or invalid name")]
    InvalidName(String),
    #[error("layer entry {path:?} is not a valid whiteout: {reason}")]
    InvalidWhiteout { path: String, reason: &'static str },
    #[error("layer entry {path:?} is a symlink to {target:?}, which escapes the layer root")]
    SymlinkEscape { path: String, target: String },
    #[error("layer entry {path:?} is a hard link to {target:?}, which is outside the layer")]
    HardlinkEscape { path: String, target: String },
    #[error("layer entry {0:?} would be written through a symlink or non-directory")]
    ThroughSymlink(String),
    #[error("layer exceeds the unpacked size limit of {limit} bytes (entry {path:?} declares {size} bytes)")]
    TooLarge { limit: u64, path: String, size: u64 },
    #[error("layer exceeds the limit of {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("unsupported layer compression (only gzip and uncompressed tar are supported)")]
    UnsupportedCompression,
    #[error("unpacking layer entry {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading layer archive: {0}")]
    Archive(#[source] std::io::Error),
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.to_string(), source }
}

fn rio_err(path: &str) -> impl FnOnce(rustix::io::Errno) -> UnpackError + '_ {
    move |e| UnpackError::Io { path: path.to_string(), source: e.into() }
}

/// What [`unpack_layer`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: u64,
    pub bytes: u64,
    /// Devices, fifos and unknown entry types that were skipped.
    pub skipped: u64,
}

/// Splits an archive path into normal components, rejecting absolute paths and `..`.
pub fn sanitize_path(raw: &str) -> Result<Vec<String>, UnpackError> {
    if raw.starts_with('/') {
        return Err(UnpackError::AbsolutePath(raw.to_string()));
    }
    let mut out = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => out.push(s.to_string()),
                None => return Err(UnpackError::InvalidName(raw.to_string())),
            },
            Component::CurDir => {}
            Component::ParentDir => return Err(UnpackError::ParentComponent(raw.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::AbsolutePath(raw.to_string()))
            }
        }
    }
    Ok(out)
}

/// Whether a symlink at `link` (components) pointing at `target` stays inside the root when
/// resolved lexically, with the root playing `/`.
pub fn symlink_target_ok(link: &[String], target: &str) -> bool {
    if target.is_empty() || target.contains('\0') {
        return false;
    }
    let mut stack: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link[..link.len().saturating_sub(1)].iter().map(String::as_str).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            p => stack.push(p),
        }
    }
    true
}

/// Whether `hidden` (the part of a whiteout's name after `.wh.`) names one entry inside the
/// whiteout's own directory; if not, why.
pub fn whiteout_target_ok(hidden: &str) -> Result<(), &'static str> {
    match hidden {
        "" => Err("it names no entry"),
        "." => Err("its target `.` is its own directory"),
        ".." => Err("its target `..` is outside its own directory"),
        h if h.contains('/') => Err("its target contains `/`"),
        h if h.contains('\0') => Err("its target contains NUL"),
        _ => Ok(()),
    }
}

/// Whether `name` is one plain directory entry name (not empty, `.`, `..`, no `/` or NUL): the
/// only kind of name the unpacker ever creates or removes.
fn plain_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0'))
}

/// Opens a reader over a possibly gzip-compressed tarball.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut br = BufReader::new(r);
    let head = br.fill_buf().map_err(UnpackError::Archive)?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(br)));
    }
    // zstd, bzip2, xz magics.
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
    {
        return Err(UnpackError::UnsupportedCompression);
    }
    Ok(Box::new(br))
}

struct Unpacker {
    root: OwnedFd,
    limits: UnpackLimits,
    report: UnpackReport,
}

/// Unpacks the (possibly gzipped) layer tarball `archive` into `dest`, which must be an existing,
/// empty directory private to the caller. On error `dest` may hold a partial extraction: the
/// caller removes it.
pub fn unpack_layer<R: Read>(
    archive: R,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<UnpackReport, UnpackError> {
    let reader = decompress(archive)?;
    unpack_tar(reader, dest, limits)
}

/// Like [`unpack_layer`] for an already decompressed tar stream.
pub fn unpack_tar<R: Read>(
    reader: R,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<UnpackReport, UnpackError> {
    let dest_s = dest.display().to_string();
    let root = rustix::fs::open(dest, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(rio_err(&dest_s))?;
    let mut u = Unpacker { root, limits, report: UnpackReport::default() };
    let mut ar = tar::Archive::new(reader);
    // Deferred directory metadata: mtimes change as children are added.
    let mut dir_times: Vec<(Vec<String>, i64)> = Vec::new();
    for entry in ar.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        u.report.entries += 1;
        if u.report.entries > u.limits.max_entries {
            return Err(UnpackError::TooManyEntries { limit: u.limits.max_entries });
        }
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts = sanitize_path(&raw_path)?;
        let Some((name, parents)) = parts.split_last() else {
            // The root itself (`./`): nothing to create.
            continue;
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        let size = entry.size();
        if kind.is_file() || kind == tar::EntryType::Continuous {
            let total = u.report.bytes.saturating_add(size);
            if total > u.limits.max_bytes {
                return Err(UnpackError::TooLarge { limit: u.limits.max_bytes, path: raw_path, size });
            }
            u.report.bytes = total;
        }
        // Lenient about empty or garbled numeric fields (some tools leave them blank).
        let default_mode = if kind == tar::EntryType::Directory { 0o755 } else { 0o644 };
        let mode = header.mode().unwrap_or(default_mode) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);

        // Whiteouts. `.wh.` names are reserved: nothing may live under one.
        if parents.iter().any(|p| p.starts_with(".wh.")) {
            return Err(UnpackError::InvalidWhiteout {
                path: raw_path,
                reason: "a parent directory has the reserved `.wh.` prefix",
            });
        }
        if name == ".wh..wh..opq" {
            let dir = u.open_parents(parents, &raw_path)?;
            rustix::fs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
                .map_err(rio_err(&raw_path))?;
            continue;
        }
        if name.starts_with(".wh..wh.") {
            u.report.skipped += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if let Err(reason) = whiteout_target_ok(hidden) {
                return Err(UnpackError::InvalidWhiteout { path: raw_path, reason });
            }
            let dir = u.open_parents(parents, &raw_path)?;
            remove_existing(&dir, hidden, &raw_path)?;
            rustix::fs::mknodat(&dir, hidden, rustix::fs::FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(rio_err(&raw_path))?;
            continue;
        }

        let dir = u.open_parents(parents, &raw_path)?;
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Directory => {}
                    Ok(_) => {
                        remove_existing(&dir, name, &raw_path)?;
                        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700))
                            .map_err(rio_err(&raw_path))?;
                    }
                    Err(rustix::io::Errno::NOENT) => {
                        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700))
                            .map_err(rio_err(&raw_path))?;
                    }
                    Err(e) => return Err(rio_err(&raw_path)(e)),
                }
                let fd = open_dir_nofollow(&dir, name, &raw_path)?;
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::from_raw(uid as u32)),
                    Some(rustix::fs::Gid::from_raw(gid as u32)),
                )
                .map_err(rio_err(&raw_path))?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(rio_err(&raw_path))?;
                dir_times.push((parts.clone(), mtime as i64));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&dir, name, &raw_path)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(rio_err(&raw_path))?;
                let mut file = std::fs::File::from(fd);
                let copied =
                    std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(io_err(&raw_path))?;
                if copied != size {
                    return Err(UnpackError::Archive(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("entry {raw_path:?} is truncated"),
                    )));
                }
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(uid as u32)),
                    Some(rustix::fs::Gid::from_raw(gid as u32)),
                )
                .map_err(rio_err(&raw_path))?;
                // chown clears setuid bits: chmod after it.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(rio_err(&raw_path))?;
                let ts = Timespec { tv_sec: mtime as i64, tv_nsec: 0 };
                rustix::fs::futimens(&file, &Timestamps { last_access: ts, last_modification: ts })
                    .map_err(rio_err(&raw_path))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if !symlink_target_ok(&parts, &target) {
                    return Err(UnpackError::SymlinkEscape { path: raw_path, target });
                }
                remove_existing(&dir, name, &raw_path)?;
                rustix::fs::symlinkat(target.as_str(), &dir, name.as_str()).map_err(rio_err(&raw_path))?;
                rustix::fs::chownat(
                    &dir,
                    name.as_str(),
                    Some(rustix::fs::Uid::from_raw(uid as u32)),
                    Some(rustix::fs::Gid::from_raw(gid as u32)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(rio_err(&raw_path))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let tparts = match sanitize_path(&target) {
                    Ok(p) if !p.is_empty() => p,
                    _ => return Err(UnpackError::HardlinkEscape { path: raw_path, target }),
                };
                let Some((tname, tparents)) = tparts.split_last() else {
                    return Err(UnpackError::HardlinkEscape { path: raw_path, target });
                };
                let tdir = u.walk_existing(tparents).map_err(|_| UnpackError::HardlinkEscape {
                    path: raw_path.clone(),
                    target: target.clone(),
                })?;
                if tparts == parts {
                    continue;
                }
                remove_existing(&dir, name, &raw_path)?;
                rustix::fs::linkat(&tdir, tname.as_str(), &dir, name.as_str(), AtFlags::empty()).map_err(
                    |e| {
                        if e == rustix::io::Errno::NOENT {
                            UnpackError::HardlinkEscape { path: raw_path.clone(), target: target.clone() }
                        } else {
                            rio_err(&raw_path)(e)
                        }
                    },
                )?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                tracing::debug!(path = %raw_path, "skipping device node or fifo in layer");
                u.report.skipped += 1;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => {
                tracing::debug!(path = %raw_path, kind = ?other, "skipping unsupported layer entry");
                u.report.skipped += 1;
            }
        }
    }
    for (parts, mtime) in dir_times.into_iter().rev() {
        if let Some((name, parents)) = parts.split_last() {
            if let Ok(dir) = u.walk_existing(parents) {
                let ts = Timespec { tv_sec: mtime, tv_nsec: 0 };
                let _ = rustix::fs::utimensat(
                    &dir,
                    name.as_str(),
                    &Timestamps { last_access: ts, last_modification: ts },
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        }
    }
    Ok(u.report)
}

fn open_dir_nofollow<Fd: AsFd>(dir: Fd, name: &str, raw_path: &str) -> Result<OwnedFd, UnpackError> {
    if !plain_name(name) {
        return Err(UnpackError::InvalidName(raw_path.to_string()));
    }
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            UnpackError::ThroughSymlink(raw_path.to_string())
        }
        e => rio_err(raw_path)(e),
    })
}

/// Removes whatever `name` is in `dir` (a whole tree for directories) without following links.
fn remove_existing<Fd: AsFd>(dir: Fd, name: &str, raw_path: &str) -> Result<(), UnpackError> {
    // Defence in depth: `..` here would empty the directory that holds the layer.
    if !plain_name(name) {
        return Err(UnpackError::InvalidName(raw_path.to_string()));
    }
    let dir = dir.as_fd();
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(rio_err(raw_path)(e)),
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
            let sub = open_dir_nofollow(dir, name, raw_path)?;
            remove_tree_contents(&sub, raw_path)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(rio_err(raw_path))
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(rio_err(raw_path)),
    }
}

fn remove_tree_contents(dir: &OwnedFd, raw_path: &str) -> Result<(), UnpackError> {
    let mut names = Vec::new();
    {
        let dup =
            rustix::fs::openat(dir, ".", OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(rio_err(raw_path))?;
        let rd = rustix::fs::Dir::read_from(&dup).map_err(rio_err(raw_path))?;
        for ent in rd {
            let ent = ent.map_err(rio_err(raw_path))?;
            let n = ent.file_name().to_string_lossy().into_owned();
            if n != "." && n != ".." {
                names.push(n);
            }
        }
    }
    for n in names {
        remove_existing(dir, &n, raw_path)?;
    }
    Ok(())
}

impl Unpacker {
    /// Opens (creating as needed) the directory holding an entry, never following a symlink.
    fn open_parents(&self, parents: &[String], raw_path: &str) -> Result<OwnedFd, UnpackError> {
        let mut cur = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rio_err(raw_path))?;
        for p in parents {
            match rustix::fs::mkdirat(&cur, p.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(rio_err(raw_path)(e)),
            }
            cur = open_dir_nofollow(&cur, p, raw_path)?;
        }
        Ok(cur)
    }

    /// Opens an existing directory inside the root, never following a symlink.
    fn walk_existing(&self, parents: &[String]) -> Result<OwnedFd, UnpackError> {
        let mut cur = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(rio_err(""))?;
        for p in parents {
            cur = open_dir_nofollow(&cur, p, "")?;
        }
        Ok(cur)
    }
}

/// The path of an entry inside `root` (for tests and callers that need it).
pub fn entry_path(root: &Path, parts: &[String]) -> PathBuf {
    parts.iter().fold(root.to_path_buf(), |p, c| p.join(c))
}
