//! A task's secrets and configs on its node: files in a tmpfs of the task's own (memory, never a
//! disk), which each driver binds into the task read-only at their targets.
//!
//! The agent calls [`materialize`] before the driver prepares the task and [`release`] when the
//! task's files go; both are idempotent. The tmpfs is `<task_dir>/secrets` (mode 0700, so only
//! root on the node can open it there); its files are named by their position in the task's
//! list, owned and moded as the task's references ask.

use crate::DriverError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file of a task's tmpfs and where the task finds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFile {
    /// The file on the node (in the task's tmpfs).
    pub source: PathBuf,
    /// The absolute path in the task.
    pub target: String,
}

/// One file to place: its content, where it goes in the task, its owner and mode.
pub struct FileContent<'a> {
    pub data: &'a [u8],
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The task's tmpfs.
pub fn secrets_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("secrets")
}

fn is_mount_point(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = dir.to_string_lossy();
    // Field 5 is the mount point (spaces escaped as \040, which a task directory never has).
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

/// Mounts the task's tmpfs (sized to what it holds) and writes `files` into it. Fails with the
/// reason (no privilege to mount, for one) and leaves nothing mounted then.
pub fn materialize(task_dir: &Path, files: &[FileContent<'_>]) -> Result<Vec<SecretFile>, DriverError> {
    let dir = secrets_dir(task_dir);
    let err = |what: &str, e: std::io::Error| DriverError::Runtime(format!("secrets: {what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(|e| err("creating the tmpfs directory", e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| err("protecting the tmpfs directory", e))?;
    if !is_mount_point(&dir) {
        // Pages of 4 KiB per file at least, and room for the inodes.
        let bytes: usize = files.iter().map(|f| f.data.len().div_ceil(4096) * 4096 + 4096).sum();
        let opts = format!("mode=0700,size={},nr_inodes={}", bytes + 65536, files.len() + 16);
        let opts = std::ffi::CString::new(opts).map_err(|e| DriverError::Runtime(e.to_string()))?;
        use rustix::mount::MountFlags as F;
        rustix::mount::mount("tmpfs", &dir, "tmpfs", F::NOSUID | F::NODEV | F::NOEXEC, Some(opts.as_c_str()))
            .map_err(|e| err("mounting a tmpfs (the agent must run as root)", e.into()))?;
    }
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let path = dir.join(i.to_string());
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(f.data)?;
            std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid))?;
            file.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
            Ok(())
        };
        if let Err(e) = write() {
            release(task_dir);
            return Err(err(&format!("writing the file for {}", f.target), e));
        }
        out.push(SecretFile { source: path, target: f.target.clone() });
    }
    Ok(out)
}

/// Unmounts the task's tmpfs (its files vanish with it) and removes the directory. Idempotent.
pub fn release(task_dir: &Path) {
    let dir = secrets_dir(task_dir);
    while is_mount_point(&dir) {
        if let Err(e) = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(dir = %dir.display(), error = %e, "unmounting a task's secrets failed");
            return;
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn files_live_in_a_tmpfs_that_release_removes() {
        assert!(root(), "the agent and its tests run as root (they mount)");
        let tmp = tempfile::tempdir().expect("tmp");
        let files = [
            FileContent { data: b"hunter2", target: "/run/secrets/pw".into(), uid: 0, gid: 0, mode: 0o444 },
            FileContent { data: b"x=1\n", target: "/etc/app.conf".into(), uid: 1000, gid: 1000, mode: 0o400 },
        ];
        let placed = materialize(tmp.path(), &files).expect("materialize");
        assert_eq!(placed.len(), 2);
        assert!(is_mount_point(&secrets_dir(tmp.path())), "a tmpfs");
        assert_eq!(std::fs::read(&placed[0].source).expect("read"), b"hunter2");
        let meta = std::fs::metadata(&placed[1].source).expect("meta");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1000, 1000, 0o400));
        let dir_mode = std::fs::metadata(secrets_dir(tmp.path())).expect("dir").mode() & 0o7777;
        assert_eq!(dir_mode, 0o700);
        // Again (an agent restarted mid-way): the same mount, rewritten files.
        materialize(tmp.path(), &files).expect("again");
        release(tmp.path());
        assert!(!is_mount_point(&secrets_dir(tmp.path())));
        assert!(!secrets_dir(tmp.path()).exists(), "nothing left");
        release(tmp.path());
    }
}
