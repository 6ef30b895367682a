//! The node's content-addressed image store.
//!
//! # Layout (under `<data_dir>/images`)
//!
//! - `blobs/sha256/<hex>`: image configs and layer tarballs (as received: gzip or plain tar),
//!   verified against their digest before they are renamed into place.
//! - `layers/<hex>/`: each layer blob unpacked once (by the safe [`crate::unpack`]er), shared by
//!   every image and task that uses it; `<hex>` is the layer **blob** digest.
//! - `index.json`: `name:tag` → [`ImageRecord`] (config digest, ordered layer digests).
//! - `index.lock`: `flock`ed exclusively around every read-modify-write of the index and around
//!   garbage collection, so the daemon and `shoal image` can use the store at the same time.
//! - `tmp/`: staging; everything enters the store by an atomic `rename`. Two processes unpacking
//!   the same layer race harmlessly: the first rename wins, the loser drops its copy.
//!
//! Names are normalized the Docker way: a name without tag or digest gets `:latest`.

use crate::unpack::{self, UnpackError, UnpackLimits};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image not found: {0}")]
    NotFound(String),
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("registry: {0}")]
    Registry(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing image data would leave less than the store's reserve free on its disk.
    #[error("not enough disk space for image data under {dir}: {free} bytes free, at least {reserve} must stay free")]
    DiskFull { dir: String, free: u64, reserve: u64 },
}

fn ioc(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// One image in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// `sha256:<hex>` of the config blob; also the image id.
    pub config_digest: String,
    /// Layer blob digests, base layer first.
    pub layers: Vec<String>,
    /// Sum of the layer blob sizes.
    pub size: u64,
    /// Seconds since the epoch when it entered this store.
    pub added_at: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

/// What a task needs from an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedImage {
    pub name: String,
    pub config_digest: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` as in the image config.
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    /// Unpacked layer directories, base layer first.
    pub layer_dirs: Vec<PathBuf>,
}

/// The subset of the image config (OCI or Docker) we read; lenient about `null`s.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    pub config: Option<RunConfig>,
    pub rootfs: Option<RootFs>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RunConfig {
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// Adds `:latest` to a name with neither tag nor digest.
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::InvalidReference(name.to_string()));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        Ok(name.to_string())
    } else {
        Ok(format!("{name}:latest"))
    }
}

/// The longest image reference accepted from another node or a task spec.
pub const MAX_REFERENCE_LEN: usize = 512;

/// Checks an image reference that comes from elsewhere (another node, a URL path): Docker's
/// characters only (`[A-Za-z0-9._/:@-]`), no empty, `.` or `..` path component, no leading `/`,
/// at most one `@` followed by a well-formed sha256 digest, at most [`MAX_REFERENCE_LEN`] bytes.
pub fn validate_reference(reference: &str) -> Result<(), StoreError> {
    let bad = || StoreError::InvalidReference(reference.chars().take(80).collect());
    if reference.is_empty() || reference.len() > MAX_REFERENCE_LEN {
        return Err(bad());
    }
    if !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/:@-".contains(&b)) {
        return Err(bad());
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if name.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.')) {
        return Err(bad());
    }
    if let Some(d) = digest {
        hex_of(d).map_err(|_| bad())?;
    }
    Ok(())
}

/// Checks a `sha256:<64 lowercase hex>` digest (the only form the store names files by).
pub fn validate_digest(digest: &str) -> Result<(), StoreError> {
    hex_of(digest).map(|_| ())
}

fn hex_of(digest: &str) -> Result<&str, StoreError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| StoreError::InvalidArchive(format!("unsupported digest {digest:?} (only sha256)")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(StoreError::InvalidArchive(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

/// A reader that hashes what passes through it.
struct HashingReader<'a, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    /// Checks the disk every [`SPACE_CHECK_EVERY`] bytes read (what is read is written).
    space: Option<&'a SpaceGuard>,
    checked_at: u64,
}

impl<'a, R> HashingReader<'a, R> {
    fn new(inner: R, space: Option<&'a SpaceGuard>) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0, space, checked_at: 0 }
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(g) = self.space {
            if self.count == 0 || self.count - self.checked_at >= SPACE_CHECK_EVERY {
                self.checked_at = self.count;
                g.check().map_err(std::io::Error::other)?;
            }
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// How often (bytes) a copy or unpack looks at the free space left.
const SPACE_CHECK_EVERY: u64 = 8 << 20;
/// What image data must leave free on the store's disk by default.
pub const DEFAULT_MIN_FREE: u64 = 512 << 20;

/// Refuses to go on when the store's disk has less than `reserve` bytes free.
#[derive(Clone, Debug)]
struct SpaceGuard {
    dir: PathBuf,
    reserve: u64,
}

impl SpaceGuard {
    fn check(&self) -> Result<(), StoreError> {
        let st = rustix::fs::statvfs(&self.dir).map_err(|e| StoreError::Io {
            context: format!("statvfs {}", self.dir.display()),
            source: e.into(),
        })?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.reserve {
            return Err(StoreError::DiskFull {
                dir: self.dir.display().to_string(),
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

/// The store error inside an I/O error from a [`HashingReader`] (disk full), or the I/O error.
fn space_or(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |e| {
        let full = e.get_ref().and_then(|inner| inner.downcast_ref::<StoreError>()).and_then(|se| match se {
            StoreError::DiskFull { dir, free, reserve } => {
                Some(StoreError::DiskFull { dir: dir.clone(), free: *free, reserve: *reserve })
            }
            _ => None,
        });
        full.unwrap_or(StoreError::Io { context, source: e })
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The store. Cheap to construct; holds no open files.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    limits: UnpackLimits,
    /// Bytes that writing image data must leave free on the store's disk.
    min_free: u64,
}

/// An exclusive `flock` on `index.lock`, released on drop.
struct IndexLock {
    _file: File,
}

impl ImageStore {
    /// Opens (creating) the store at `root` (normally `<data_dir>/images`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for d in ["blobs/sha256", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(ioc(format!("creating {}", root.join(d).display())))?;
        }
        Ok(ImageStore { root, limits: UnpackLimits::default(), min_free: DEFAULT_MIN_FREE })
    }

    /// Replaces the free space image data must leave on the store's disk.
    pub fn with_min_free(mut self, bytes: u64) -> Self {
        self.min_free = bytes;
        self
    }

    fn space(&self) -> SpaceGuard {
        SpaceGuard { dir: self.root.clone(), reserve: self.min_free }
    }

    /// Replaces the unpack limits (per layer).
    pub fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// Where the unpacked layer with blob digest `digest` lives.
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("layers").join(hex_of(digest)?))
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root.join("tmp").join(format!("{what}-{}-{n}-{nanos}", std::process::id()))
    }

    fn lock(&self) -> Result<IndexLock, StoreError> {
        let path = self.root.join("index.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ioc(format!("opening {}", path.display())))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| StoreError::Io {
            context: format!("locking {}", path.display()),
            source: e.into(),
        })?;
        Ok(IndexLock { _file: file })
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("index.json");
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| StoreError::Io {
                context: format!("parsing {}", path.display()),
                source: e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ioc(format!("reading {}", path.display()))(e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.root.join("index.json");
        let tmp = self.tmp_path("index");
        let data = serde_json::to_vec_pretty(index)
            .map_err(|e| StoreError::Io { context: "encoding the index".into(), source: e.into() })?;
        let mut f = File::create(&tmp).map_err(ioc(format!("writing {}", tmp.display())))?;
        f.write_all(&data).map_err(ioc(format!("writing {}", tmp.display())))?;
        f.sync_all().map_err(ioc(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(ioc(format!("renaming into {}", path.display())))
    }

    /// Copies `r` into the blob store, verifying `expected` when given; returns (digest, size).
    pub fn put_blob(&self, r: impl Read, expected: Option<&str>) -> Result<(String, u64), StoreError> {
        let tmp = self.tmp_path("blob");
        let res = (|| {
            let guard = self.space();
            let mut hr = HashingReader::new(r, Some(&guard));
            let mut f = File::create(&tmp).map_err(ioc(format!("writing {}", tmp.display())))?;
            std::io::copy(&mut hr, &mut f).map_err(space_or("copying a blob".into()))?;
            f.sync_all().map_err(ioc("syncing a blob"))?;
            let digest = format!("sha256:{:x}", hr.hasher.finalize());
            if let Some(exp) = expected {
                if exp != digest {
                    return Err(StoreError::DigestMismatch {
                        what: "blob".into(),
                        expected: exp.into(),
                        actual: digest,
                    });
                }
            }
            let dst = self.blob_path(&digest)?;
            std::fs::rename(&tmp, &dst).map_err(ioc(format!("renaming into {}", dst.display())))?;
            Ok((digest, hr.count))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    pub fn put_blob_bytes(&self, data: &[u8], expected: Option<&str>) -> Result<(String, u64), StoreError> {
        self.put_blob(data, expected)
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Unpacks the layer blob `digest` once (no-op when it already is), verifying the
    /// uncompressed stream against `diff_id` when given.
    pub fn ensure_layer(&self, digest: &str, diff_id: Option<&str>) -> Result<PathBuf, StoreError> {
        let dst = self.layer_dir(digest)?;
        if dst.is_dir() {
            return Ok(dst);
        }
        let blob = self.blob_path(digest)?;
        let file = File::open(&blob).map_err(ioc(format!("opening {}", blob.display())))?;
        let staging = self.tmp_path("layer");
        std::fs::create_dir(&staging).map_err(ioc(format!("creating {}", staging.display())))?;
        let res = (|| {
            let reader = unpack::decompress(file)
                .map_err(|source| StoreError::Unpack { digest: digest.into(), source })?;
            let guard = self.space();
            guard.check()?;
            let mut hr = HashingReader::new(reader, Some(&guard));
            unpack::unpack_tar(&mut hr, &staging, self.limits)
                .map_err(|source| StoreError::Unpack { digest: digest.into(), source })?;
            // Hash the rest (tar padding) so the diff id covers the whole stream.
            std::io::copy(&mut hr, &mut std::io::sink()).map_err(ioc("reading a layer"))?;
            if let Some(exp) = diff_id {
                let actual = format!("sha256:{:x}", hr.hasher.finalize());
                if actual != exp {
                    return Err(StoreError::DigestMismatch {
                        what: format!("layer {digest} (diff id)"),
                        expected: exp.into(),
                        actual,
                    });
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        match std::fs::rename(&staging, &dst) {
            Ok(()) => Ok(dst),
            Err(_) if dst.is_dir() => {
                // Someone else unpacked it first.
                let _ = std::fs::remove_dir_all(&staging);
                Ok(dst)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(ioc(format!("renaming into {}", dst.display()))(e))
            }
        }
    }

    /// Records a complete image (config and layer blobs present), unpacking its layers first.
    pub fn commit_image(
        &self,
        name: &str,
        config_digest: &str,
        layers: &[String],
    ) -> Result<ImageRecord, StoreError> {
        let name = normalize_name(name)?;
        // Names also come from archives (`RepoTags`, OCI annotations): only what other nodes
        // and the API accept as a reference is recorded.
        validate_reference(&name)?;
        let cfg = self.read_config(config_digest)?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
            return Err(StoreError::InvalidArchive(format!(
                "the config lists {} diff ids for {} layers",
                diff_ids.len(),
                layers.len()
            )));
        }
        let mut size = 0;
        for (i, l) in layers.iter().enumerate() {
            self.ensure_layer(l, diff_ids.get(i).map(String::as_str))?;
            size += std::fs::metadata(self.blob_path(l)?).map(|m| m.len()).unwrap_or(0);
        }
        let rec = ImageRecord {
            name: name.clone(),
            config_digest: config_digest.to_string(),
            layers: layers.to_vec(),
            size,
            added_at: now_secs(),
        };
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        idx.images.insert(name, rec.clone());
        self.write_index(&idx)?;
        Ok(rec)
    }

    fn read_config(&self, digest: &str) -> Result<ConfigFile, StoreError> {
        let p = self.blob_path(digest)?;
        let data = std::fs::read(&p).map_err(ioc(format!("reading config {}", p.display())))?;
        serde_json::from_slice(&data)
            .map_err(|e| StoreError::InvalidArchive(format!("image config {digest}: {e}")))
    }

    /// All images, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.read_index()?.images.into_values().collect())
    }

    /// The image `name` names: `name:tag`, or a pinned reference (`name@sha256:…`,
    /// `name:tag@sha256:…`), found by its config digest (the record of that name first, else any
    /// name with that digest).
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let norm = normalize_name(name)?;
        let index = self.read_index()?;
        let Some((base, digest)) = norm.split_once('@') else {
            return Ok(index.images.get(&norm).cloned());
        };
        hex_of(digest).map_err(|_| StoreError::InvalidReference(name.to_string()))?;
        let base = normalize_name(base).unwrap_or_default();
        let by_name = index.images.get(&base).filter(|r| r.config_digest == digest);
        Ok(by_name.or_else(|| index.images.values().find(|r| r.config_digest == digest)).cloned())
    }

    /// A blob's path and size, for serving it to another node.
    pub fn blob_file(&self, digest: &str) -> Result<(PathBuf, u64), StoreError> {
        let p = self.blob_path(digest)?;
        let meta = std::fs::metadata(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(digest.to_string()),
            _ => ioc(format!("reading {}", p.display()))(e),
        })?;
        if !meta.is_file() {
            return Err(StoreError::NotFound(digest.to_string()));
        }
        Ok((p, meta.len()))
    }

    /// The image's run config and its layer directories (unpacking any that are missing).
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage, StoreError> {
        let rec = self.get(name)?.ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let cfg = self.read_config(&rec.config_digest)?;
        let mut layer_dirs = Vec::new();
        for l in &rec.layers {
            layer_dirs.push(self.ensure_layer(l, None)?);
        }
        let rc = cfg.config.unwrap_or_default();
        Ok(ResolvedImage {
            name: rec.name,
            config_digest: rec.config_digest,
            entrypoint: rc.entrypoint.unwrap_or_default(),
            cmd: rc.cmd.unwrap_or_default(),
            env: rc.env.unwrap_or_default(),
            workdir: rc.working_dir.unwrap_or_default(),
            user: rc.user.unwrap_or_default(),
            layer_dirs,
        })
    }

    /// Removes `name` from the index, then every blob and unpacked layer no image references
    /// any more, except layers that a mounted overlay still uses (a running task).
    pub fn remove(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let norm = normalize_name(name)?;
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let rec = idx.images.remove(&norm).ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        self.write_index(&idx)?;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for r in idx.images.values() {
            keep.insert(r.config_digest.clone());
            keep.extend(r.layers.iter().cloned());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut gone: Vec<String> = rec.layers.clone();
        gone.push(rec.config_digest.clone());
        for d in gone.iter().filter(|d| !keep.contains(*d)) {
            if let Ok(ld) = self.layer_dir(d) {
                if ld.exists() {
                    if mounts.contains(&ld.display().to_string()) {
                        tracing::info!(layer = %d, "keeping an unpacked layer a mounted task still uses");
                        continue;
                    }
                    let trash = self.tmp_path("gc");
                    if std::fs::rename(&ld, &trash).is_ok() {
                        let _ = std::fs::remove_dir_all(&trash);
                    }
                }
            }
            if let Ok(bp) = self.blob_path(d) {
                let _ = std::fs::remove_file(bp);
            }
        }
        Ok(rec)
    }

    /// Imports a rootfs tarball (plain or gzip) as a one-layer image named `name`, like
    /// `docker import`.
    pub fn import(&self, rootfs_tar: impl Read, name: &str) -> Result<ImageRecord, StoreError> {
        let name = normalize_name(name)?;
        let (layer, _) = self.put_blob(rootfs_tar, None)?;
        // The diff id is the digest of the uncompressed stream: compute it while unpacking.
        let file = File::open(self.blob_path(&layer)?).map_err(ioc("opening the imported layer"))?;
        let reader = unpack::decompress(file)
            .map_err(|source| StoreError::Unpack { digest: layer.clone(), source })?;
        let mut hr = HashingReader::new(reader, None);
        std::io::copy(&mut hr, &mut std::io::sink()).map_err(ioc("reading the imported layer"))?;
        let diff_id = format!("sha256:{:x}", hr.hasher.finalize());
        let cfg = ConfigFile {
            architecture: Some(std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
            os: Some("linux".into()),
            config: Some(RunConfig {
                env: Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]),
                ..RunConfig::default()
            }),
            rootfs: Some(RootFs { kind: "layers".into(), diff_ids: vec![diff_id] }),
        };
        self.put_config_and_commit(&name, &cfg, &[layer])
    }

    pub(crate) fn put_config_and_commit(
        &self,
        name: &str,
        cfg: &ConfigFile,
        layers: &[String],
    ) -> Result<ImageRecord, StoreError> {
        let data = serde_json::to_vec(cfg)
            .map_err(|e| StoreError::Io { context: "encoding a config".into(), source: e.into() })?;
        let (config_digest, _) = self.put_blob_bytes(&data, None)?;
        self.commit_image(name, &config_digest, layers)
    }

    /// Loads a `docker save` archive or an OCI image layout tarball. Images without a name in
    /// the archive get `default_name` (an error when there is none). Returns the loaded images.
    pub fn load(
        &self,
        archive: impl Read,
        default_name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let staging = self.tmp_path("load");
        std::fs::create_dir(&staging).map_err(ioc(format!("creating {}", staging.display())))?;
        let res = self.load_inner(archive, &staging, default_name);
        let _ = std::fs::remove_dir_all(&staging);
        res
    }

    fn load_inner(
        &self,
        archive: impl Read,
        staging: &Path,
        default_name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        // Copy every regular file of the outer archive into a flat staging dir, keyed by its
        // sanitized path: no archive path ever becomes a host path.
        let reader = unpack::decompress(archive)
            .map_err(|source| StoreError::Unpack { digest: "archive".into(), source })?;
        let mut ar = tar::Archive::new(reader);
        let mut files: HashMap<String, PathBuf> = HashMap::new();
        let mut symlinks: HashMap<String, String> = HashMap::new();
        let mut total: u64 = 0;
        for (n, entry) in ar.entries().map_err(ioc("reading the archive"))?.enumerate() {
            let mut entry = entry.map_err(ioc("reading the archive"))?;
            if n as u64 > self.limits.max_entries {
                return Err(StoreError::InvalidArchive("too many entries".into()));
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Ok(parts) = unpack::sanitize_path(&raw) else { continue };
            let key = parts.join("/");
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    total = total.saturating_add(entry.size());
                    if total > self.limits.max_bytes {
                        return Err(StoreError::InvalidArchive(format!(
                            "archive exceeds the size limit of {} bytes",
                            self.limits.max_bytes
                        )));
                    }
                    let p = staging.join(format!("f{n}"));
                    let mut f = File::create(&p).map_err(ioc("staging an archive file"))?;
                    std::io::copy(&mut entry, &mut f).map_err(ioc("staging an archive file"))?;
                    files.insert(key, p);
                }
                tar::EntryType::Symlink => {
                    // docker save links duplicate layers; resolve within the archive only.
                    if let Ok(Some(t)) = entry.link_name() {
                        let t = t.to_string_lossy().into_owned();
                        let mut base: Vec<&str> =
                            parts[..parts.len().saturating_sub(1)].iter().map(String::as_str).collect();
                        for c in t.split('/') {
                            match c {
                                "" | "." => {}
                                ".." => {
                                    base.pop();
                                }
                                c => base.push(c),
                            }
                        }
                        symlinks.insert(key, base.join("/"));
                    }
                }
                _ => {}
            }
        }
        let lookup = |name: &str| -> Result<PathBuf, StoreError> {
            let parts = unpack::sanitize_path(name).map_err(|e| StoreError::InvalidArchive(e.to_string()))?;
            let mut key = parts.join("/");
            for _ in 0..8 {
                if let Some(p) = files.get(&key) {
                    return Ok(p.clone());
                }
                match symlinks.get(&key) {
                    Some(t) => key = t.clone(),
                    None => break,
                }
            }
            Err(StoreError::InvalidArchive(format!("missing file {name:?}")))
        };
        if files.contains_key("manifest.json") {
            self.load_docker(&lookup, default_name)
        } else if files.contains_key("index.json") {
            self.load_oci_layout(&lookup, default_name)
        } else {
            Err(StoreError::InvalidArchive(
                "neither a docker-archive (manifest.json) nor an OCI image layout (index.json)".into(),
            ))
        }
    }

    fn load_docker(
        &self,
        lookup: &dyn Fn(&str) -> Result<PathBuf, StoreError>,
        default_name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
            #[serde(rename = "Layers")]
            layers: Vec<String>,
        }
        let data = std::fs::read(lookup("manifest.json")?).map_err(ioc("reading manifest.json"))?;
        let entries: Vec<Entry> = serde_json::from_slice(&data)
            .map_err(|e| StoreError::InvalidArchive(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let cfg_file = File::open(lookup(&e.config)?).map_err(ioc("reading the config"))?;
            // The config file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
            let stem = e.config.rsplit('/').next().unwrap_or(&e.config).trim_end_matches(".json");
            let expected = format!("sha256:{stem}");
            let expected = hex_of(&expected).is_ok().then_some(expected);
            let (config_digest, _) = self.put_blob(cfg_file, expected.as_deref())?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let f = File::open(lookup(l)?).map_err(ioc("reading a layer"))?;
                let (d, _) = self.put_blob(f, None)?;
                layers.push(d);
            }
            let mut names = e.repo_tags.unwrap_or_default();
            if names.is_empty() {
                names.push(
                    default_name
                        .ok_or_else(|| {
                            StoreError::InvalidArchive("the image has no RepoTags; give it a name".into())
                        })?
                        .to_string(),
                );
            }
            for n in names {
                out.push(self.commit_image(&n, &config_digest, &layers)?);
            }
        }
        Ok(out)
    }

    fn load_oci_layout(
        &self,
        lookup: &dyn Fn(&str) -> Result<PathBuf, StoreError>,
        default_name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
        let read_blob = |digest: &str| -> Result<Vec<u8>, StoreError> {
            let hex = hex_of(digest)?;
            let data =
                std::fs::read(lookup(&format!("blobs/sha256/{hex}"))?).map_err(ioc("reading a blob"))?;
            let actual = format!("sha256:{:x}", Sha256::digest(&data));
            if actual != digest {
                return Err(StoreError::DigestMismatch {
                    what: "blob".into(),
                    expected: digest.into(),
                    actual,
                });
            }
            Ok(data)
        };
        let idx_data = std::fs::read(lookup("index.json")?).map_err(ioc("reading index.json"))?;
        let index: ImageIndex = serde_json::from_slice(&idx_data)
            .map_err(|e| StoreError::InvalidArchive(format!("index.json: {e}")))?;
        let mut out = Vec::new();
        for desc in index.manifests() {
            let ann = desc.annotations().clone().unwrap_or_default();
            let name = ann
                .get("io.containerd.image.name")
                .cloned()
                .or_else(|| {
                    ann.get("org.opencontainers.image.ref.name").map(|r| match default_name {
                        // A bare tag names a tag of the default name.
                        Some(d) if !r.contains('/') && !r.contains(':') => {
                            format!("{}:{r}", d.rsplit_once(':').map(|(a, _)| a).unwrap_or(d))
                        }
                        _ => r.clone(),
                    })
                })
                .or_else(|| default_name.map(str::to_string))
                .ok_or_else(|| {
                    StoreError::InvalidArchive("an image in index.json has no name; give it a name".into())
                })?;
            let mut manifest_digest = desc.digest().to_string();
            if matches!(desc.media_type(), MediaType::ImageIndex) {
                let nested: ImageIndex = serde_json::from_slice(&read_blob(&manifest_digest)?)
                    .map_err(|e| StoreError::InvalidArchive(format!("nested index: {e}")))?;
                let arch = std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64");
                let pick = nested
                    .manifests()
                    .iter()
                    .find(|m| m.platform().as_ref().is_some_and(|p| p.architecture().to_string() == arch))
                    .or_else(|| nested.manifests().first())
                    .ok_or_else(|| StoreError::InvalidArchive("empty nested index".into()))?;
                manifest_digest = pick.digest().to_string();
            }
            let manifest: ImageManifest = serde_json::from_slice(&read_blob(&manifest_digest)?)
                .map_err(|e| StoreError::InvalidArchive(format!("manifest {manifest_digest}: {e}")))?;
            let cfg_digest = manifest.config().digest().to_string();
            self.put_blob_bytes(&read_blob(&cfg_digest)?, Some(&cfg_digest))?;
            let mut layers = Vec::new();
            for l in manifest.layers() {
                let d = l.digest().to_string();
                let f = File::open(lookup(&format!("blobs/sha256/{}", hex_of(&d)?))?)
                    .map_err(ioc("reading a layer"))?;
                self.put_blob(f, Some(&d))?;
                layers.push(d);
            }
            out.push(self.commit_image(&name, &cfg_digest, &layers)?);
        }
        Ok(out)
    }

    /// Pulls `reference` from its registry (anonymous), over plain HTTP when `insecure_http`.
    pub async fn pull(&self, reference: &str, insecure_http: bool) -> Result<ImageRecord, StoreError> {
        use oci_client::client::{ClientConfig, ClientProtocol};
        use oci_client::secrets::RegistryAuth;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r: oci_client::Reference =
            reference.parse().map_err(|_| StoreError::InvalidReference(reference.to_string()))?;
        let client = oci_client::Client::new(ClientConfig {
            protocol: if insecure_http { ClientProtocol::Http } else { ClientProtocol::Https },
            ..ClientConfig::default()
        });
        let (manifest, _digest, config) = client
            .pull_manifest_and_config(&r, &RegistryAuth::Anonymous)
            .await
            .map_err(|e| StoreError::Registry(format!("pulling {reference}: {e}")))?;
        self.put_blob_bytes(config.as_bytes(), Some(&manifest.config.digest))?;
        let mut layers = Vec::new();
        for l in &manifest.layers {
            if l.media_type.contains("zstd") {
                return Err(StoreError::Unpack {
                    digest: l.digest.clone(),
                    source: UnpackError::UnsupportedCompression,
                });
            }
            if !self.has_blob(&l.digest) {
                let tmp = self.tmp_path("pull");
                let f = tokio::fs::File::create(&tmp).await.map_err(ioc("creating a download file"))?;
                let res = client.pull_blob(&r, l, f).await;
                if let Err(e) = res {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(StoreError::Registry(format!("pulling layer {}: {e}", l.digest)));
                }
                let store = self.clone();
                let digest = l.digest.clone();
                let t2 = tmp.clone();
                let put = tokio::task::spawn_blocking(move || {
                    let f = File::open(&t2).map_err(ioc("reading a download"))?;
                    store.put_blob(f, Some(&digest))
                })
                .await
                .map_err(|e| StoreError::Registry(format!("join: {e}")))?;
                let _ = std::fs::remove_file(&tmp);
                put?;
            }
            layers.push(l.digest.clone());
        }
        let name = normalize_name(reference)?;
        let store = self.clone();
        let cfg_digest = manifest.config.digest.clone();
        tokio::task::spawn_blocking(move || store.commit_image(&name, &cfg_digest, &layers))
            .await
            .map_err(|e| StoreError::Registry(format!("join: {e}")))?
    }

    /// Pushes the local image `name` to `reference` (anonymous), over plain HTTP when
    /// `insecure_http`. Blobs are sent from memory: meant for tests and small images.
    pub async fn push(&self, name: &str, reference: &str, insecure_http: bool) -> Result<(), StoreError> {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        use oci_client::secrets::RegistryAuth;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rec = self.get(name)?.ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let r: oci_client::Reference =
            reference.parse().map_err(|_| StoreError::InvalidReference(reference.to_string()))?;
        let mut layers = Vec::new();
        for l in &rec.layers {
            let p = self.blob_path(l)?;
            let data = tokio::fs::read(&p).await.map_err(ioc(format!("reading {}", p.display())))?;
            let media_type = if data.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            layers.push(ImageLayer::new(data, media_type.to_string(), None));
        }
        let cp = self.blob_path(&rec.config_digest)?;
        let config = tokio::fs::read(&cp).await.map_err(ioc(format!("reading {}", cp.display())))?;
        let config = Config::new(config, "application/vnd.oci.image.config.v1+json".to_string(), None);
        let client = oci_client::Client::new(ClientConfig {
            protocol: if insecure_http { ClientProtocol::Http } else { ClientProtocol::Https },
            ..ClientConfig::default()
        });
        client
            .push(&r, &layers, config, &RegistryAuth::Anonymous, None)
            .await
            .map_err(|e| StoreError::Registry(format!("pushing {reference}: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_from_elsewhere_are_checked() {
        for ok in ["busybox", "busybox:latest", "reg:5000/a/b:1", &format!("a:1@{D}"), &format!("a@{D}")] {
            assert!(validate_reference(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_REFERENCE_LEN + 1);
        for bad in [
            "",
            "../etc/passwd",
            "a/../b",
            "/abs",
            "a//b",
            "a/./b",
            "a/.hidden",
            "a b",
            "a\nb",
            "a@sha256:xyz",
            "a@md5:00",
            &format!("a@{D}@{D}"),
            &format!("a@{}", D.to_uppercase()),
            long.as_str(),
        ] {
            assert!(validate_reference(bad).is_err(), "{bad:?}");
        }
        assert!(validate_digest(D).is_ok());
        for bad in ["sha256:../../x", "sha256:", "sha512:00", &D[..70]] {
            assert!(validate_digest(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pinned_reference_resolves_by_digest() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ImageStore::open(dir.path().join("images")).expect("store");
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello", &b"hi"[..]).expect("append");
        let data = tar.into_inner().expect("tar");
        let rec = store.import(&data[..], "demo:1").expect("import");
        let pinned = format!("demo:1@{}", rec.config_digest);
        assert_eq!(store.get(&pinned).expect("get").map(|r| r.name), Some("demo:1".into()));
        let other_name = format!("other@{}", rec.config_digest);
        assert_eq!(store.get(&other_name).expect("get").map(|r| r.name), Some("demo:1".into()));
        assert!(store.get(&format!("demo:1@{D}")).expect("get").is_none());
        assert!(store.resolve(&pinned).is_ok());
        let (path, size) = store.blob_file(&rec.layers[0]).expect("blob");
        assert_eq!(size, data.len() as u64);
        assert!(path.starts_with(store.root()));
        assert!(matches!(store.blob_file(D), Err(StoreError::NotFound(_))));
    }
}
