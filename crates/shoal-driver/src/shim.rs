//! The per-task shim (being written by the process-driver work).

/// Entry point of `shoal shim TASK_DIR`; returns the shim's exit code.
pub fn run(task_dir: &std::path::Path) -> i32 {
    eprintln!("shoal shim {}: the shim is not built yet", task_dir.display());
    2
}
