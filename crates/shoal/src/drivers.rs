//! The task drivers this binary offers. Each reports at start whether it works on this node
//! (the agent leaves out the ones that do not). The process and oci drivers run each task under
//! a small supervisor, this same binary as `shoal shim`.

use shoal_driver::Driver;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn shim_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

pub fn all(data_dir: &Path) -> Vec<Arc<dyn Driver>> {
    let process = shoal_driver_process::ProcessDriverConfig::new(shim_exe());
    let oci = shoal_driver_oci::OciDriverConfig::new(data_dir, shim_exe());
    vec![
        Arc::new(shoal_driver_process::ProcessDriver::new(process)),
        Arc::new(shoal_driver_oci::OciDriver::new(oci)),
        Arc::new(shoal_driver_docker::DockerDriver::new(shoal_driver_docker::DockerDriverConfig::default())),
    ]
}
