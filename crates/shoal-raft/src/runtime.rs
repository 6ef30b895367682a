//! Raft's own runtime: one worker thread, separate from the runtime that serves the API, the
//! dispatcher and the controllers.
//!
//! A follower stands for election when the leader's heartbeat (every 50 ms by default) has not
//! arrived for 210–350 ms. On the shared runtime, a burst of API work — a hundred CLI calls at
//! once, each a TLS handshake and a read-index round — queued the heartbeat tasks behind it on
//! a busy 2-core machine, the followers timed out, and the leader changed under the load it was
//! serving (requests failed with "stopped leading before it answered"). Here the Raft core, its
//! replication streams, its timers and the connections other managers open for Raft RPCs (they
//! offer the ALPN protocol [`RAFT_ALPN`], see [`crate::transport`]) run on threads that API work
//! never occupies. The worker thread also asks the kernel for a higher priority (nice −10), so
//! that other processes on a loaded machine do not delay a heartbeat either; without the
//! privilege for that (not root) it runs at the normal priority and says so once in the log.
//!
//! One thread, not two: with two, the 1,000-node load test's single manager created 10,000
//! tasks in 6.7–7.1 s instead of 5.0 s (four threads of one process on 2 cores, next to the
//! simulated nodes); with one it is back to 5.1 s, and the burst test still never lost its
//! leader (0 of 14 runs on one loaded core; 2 of 12 failed with Raft on the shared runtime).
//!
//! One runtime serves every Raft member of the process (the daemon has one; tests may start
//! several). It lives as long as the process.

use std::sync::OnceLock;

/// The ALPN protocol a Raft client offers: Raft RPCs over HTTP/2. A connection that negotiates
/// it is served here.
pub const RAFT_ALPN: &[u8] = b"shoal-raft/2";

/// The nice value asked for the worker threads (lower runs first; −20 is the most).
const NICE: i32 = -10;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The handle of Raft's runtime, built on first use.
pub fn handle() -> Result<tokio::runtime::Handle, String> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("raft")
                .enable_all()
                // Only worker threads unpark: the blocking pool (snapshots, large encodes)
                // keeps the normal priority.
                .on_thread_unpark(raise_priority_once)
                .build()
                .map_err(|e| format!("cannot start Raft's runtime: {e}"))
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
        .map_err(Clone::clone)
}

/// Runs `fut` on Raft's runtime and waits for it.
pub(crate) async fn run<F>(fut: F) -> Result<F::Output, String>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle()?.spawn(fut).await.map_err(|e| format!("Raft's runtime: {e}"))
}

/// A task on Raft's runtime that is aborted when this is dropped (as a task of the caller's
/// runtime would be when its owner goes away).
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn raise_priority_once() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if DONE.with(|d| d.replace(true)) {
        return;
    }
    // On Linux, PRIO_PROCESS with no pid sets the calling thread's nice value only.
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            tracing::info!(error = %e, nice = NICE, "Raft's threads keep the normal priority (raising it needs root or CAP_SYS_NICE)");
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raft_work_runs_on_its_own_named_threads() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let name = rt
            .block_on(super::run(async { std::thread::current().name().map(str::to_string) }))
            .expect("ran");
        assert_eq!(name.as_deref(), Some("raft"));
    }
}
