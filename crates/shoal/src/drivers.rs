//! The task drivers this binary offers. Each reports at start whether it works on this node
//! (the agent leaves out the ones that do not). The process and oci drivers run each task under
//! a small supervisor, `shoal-shim` (or this same binary as `shoal shim`).

use shoal_driver::Driver;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shim the drivers start: `shoal-shim` next to this binary (small: see its source), or this
/// binary itself as `shoal shim` when there is none (a binary copied alone).
fn shim_exe() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    shim_beside(&me).unwrap_or(me)
}

/// `shoal-shim` in `exe`'s directory, when it is an executable file.
fn shim_beside(exe: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let shim = exe.with_file_name(SHIM_BIN);
    let meta = std::fs::metadata(&shim).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(shim)
}

const SHIM_BIN: &str = "shoal-shim";

pub fn all(data_dir: &Path) -> Vec<Arc<dyn Driver>> {
    let shim = shim_exe();
    tracing::debug!(shim = %shim.display(), "task supervisor");
    let process = shoal_driver_process::ProcessDriverConfig::new(&shim);
    let oci = shoal_driver_oci::OciDriverConfig::new(data_dir, &shim);
    vec![
        Arc::new(shoal_driver_process::ProcessDriver::new(process)),
        Arc::new(shoal_driver_oci::OciDriver::new(oci)),
        Arc::new(shoal_driver_docker::DockerDriver::new(shoal_driver_docker::DockerDriverConfig::default())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_shim_beside_the_binary_is_used_only_when_it_is_an_executable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("shoal");
        assert_eq!(shim_beside(&exe), None, "none there");
        let shim = dir.path().join(SHIM_BIN);
        std::fs::write(&shim, b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(shim_beside(&exe), None, "not executable");
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(shim_beside(&exe), Some(shim.clone()));
        std::fs::remove_file(&shim).expect("rm");
        std::fs::create_dir(&shim).expect("mkdir");
        assert_eq!(shim_beside(&exe), None, "a directory");
    }
}
