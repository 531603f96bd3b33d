//! The end of a process: an `atexit` hook that waits up to `SKYLARK_EXIT_FLUSH_MS` for
//! propagation in flight, then writes this process's counters to the node's stats hash
//! (which the sweeper also does after every sweep).

use crate::context::{self, Context};
use crate::stats::{self, Counter};
use crate::store::Request;
use crate::{keys, skylog};
use std::time::Instant;

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Registers the exit flush (once per process: the engine starts once).
pub(super) fn register() {
    // SAFETY: `at_exit` is a plain function that never unwinds (it catches panics).
    let rc = unsafe { atexit(at_exit) };
    if rc != 0 {
        skylog!(
            Warn,
            "atexit failed: jobs in flight at exit wait for a later process"
        );
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let Ok(ctx) = context::get() else { return };
        if let Some(engine) = &ctx.engine {
            let deadline = ctx.config.propagation.exit_flush;
            let started = Instant::now();
            if !engine.flush(deadline) {
                skylog!(
                    Warn,
                    "exit: propagation still in flight after {} ms; the outbox keeps it for a later process",
                    started.elapsed().as_millis()
                );
            }
        }
        flush_stats_blocking(ctx);
    });
}

/// The counters taken from this process and the request adding them to the node's stats
/// hash; `None` when there is nothing to add.
fn take_stats(ctx: &Context) -> Option<(Vec<(Counter, u64)>, Request)> {
    let taken = stats::take();
    if taken.is_empty() {
        return None;
    }
    let key = keys::stats(&ctx.config.namespace, &ctx.config.node_name);
    let req = Request::Pipe(stats::pipeline(&key, &taken));
    Some((taken, req))
}

/// Puts counters whose write failed back, for a later flush.
fn write_failed(taken: &[(Counter, u64)], e: impl std::fmt::Display) {
    skylog!(Debug, "writing stats: {e}");
    stats::restore(taken);
}

/// Adds this process's counters to the node's stats hash, on the calling thread.
pub fn flush_stats_blocking(ctx: &Context) {
    if let Some((taken, req)) = take_stats(ctx) {
        if let Err(e) = ctx.local.query(&req) {
            write_failed(&taken, e);
        }
    }
}

/// Adds this process's counters to the node's stats hash, on the runtime.
pub(super) async fn flush_stats(ctx: &Context) {
    if let Some((taken, req)) = take_stats(ctx) {
        if let Err(e) = ctx.local.query_async(&req).await {
            write_failed(&taken, e);
        }
    }
}
