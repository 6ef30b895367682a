//! Atomic writes of key and certificate files with fixed permissions.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::encoding::hex_lower;
use crate::PkiError;

/// Mode of private files (keys): owner read/write only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of public files (certificates).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io { op, path: path.to_path_buf(), source }
}

/// Writes `contents` to `path` with mode 0600, atomically: a temporary file in the same
/// directory, created with mode 0600 (never readable by others, not even briefly), synced and
/// renamed over `path`. Readers see either the old or the new file, never a partial one.
pub fn write_private_file(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<(), PkiError> {
    write_atomic(path.as_ref(), contents.as_ref(), PRIVATE_FILE_MODE)
}

/// Like [`write_private_file`] but with mode 0644, for certificates.
pub fn write_public_file(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<(), PkiError> {
    write_atomic(path.as_ref(), contents.as_ref(), PUBLIC_FILE_MODE)
}

/// Reads a PEM file into a string, checking that it looks like PEM. The content is never put
/// into errors.
pub fn read_pem_file(path: impl AsRef<Path>) -> Result<String, PkiError> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    if !text.contains("-----BEGIN ") {
        return Err(PkiError::InvalidPem { what: "file", reason: "no PEM block found" });
    }
    Ok(text)
}

fn temp_path(path: &Path) -> Result<PathBuf, PkiError> {
    let name = path.file_name().ok_or_else(|| PkiError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let mut suffix = [0u8; 8];
    SystemRandom::new().fill(&mut suffix).map_err(|_| PkiError::Random)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", hex_lower(&suffix)));
    Ok(path.with_file_name(tmp_name))
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = temp_path(path)?;
    let result = (|| {
        // create_new: never follow or reuse something already at the temporary path.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        // The umask may have narrowed the mode; set it exactly (never wider than `mode`).
        file.set_permissions(Permissions::from_mode(mode)).map_err(io_err("setting permissions of", &tmp))?;
        file.write_all(contents).map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename durable; failure here does not undo the (already visible) write.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
