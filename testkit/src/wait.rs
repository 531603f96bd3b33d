//! Polling with a deadline instead of sleeping a fixed time.

use std::time::{Duration, Instant};

/// Polls `cond` every `every` until it holds; panics with `what` once `timeout` has
/// passed and a last check still fails.
pub fn eventually_every(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(every);
    }
    assert!(cond(), "timed out after {timeout:?} waiting for: {what}");
}

/// [`eventually_every`] polling every 20 ms.
pub fn eventually(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    eventually_every(what, timeout, Duration::from_millis(20), cond)
}
