//! Helpers shared by the tests that run real `shoal` processes.

use std::time::{Duration, Instant};

/// Polls `f` until it returns Some, or fails the test after `secs`.
pub fn eventually<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_or(secs, f, || format!("timed out waiting for {what}"))
}

/// Like [`eventually`], with a failure message built only when it times out (e.g. a log).
pub fn eventually_or<T>(secs: u64, mut f: impl FnMut() -> Option<T>, why: impl FnOnce() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
