//! `shoal-shim shim TASK_DIR`: the per-task supervisor (`shoal_driver::shim`) as a binary of its
//! own. Every process and oci task has one running beside it, and each start executes it twice;
//! this binary holds only the shim's code, so it maps, relocates and touches a fraction of what
//! the whole `shoal` binary does (see BENCHMARKS.md, issue 19). The daemon uses it when it lies
//! next to `shoal`, and `shoal shim` otherwise: both take the same arguments.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match shoal_driver::shim::task_dir_from_args(&args) {
        Some(task_dir) => std::process::exit(shoal_driver::shim::run(task_dir)),
        None => {
            eprintln!("usage: shoal-shim shim TASK_DIR (started by the shoal daemon's drivers)");
            std::process::exit(2)
        }
    }
}
