//! The end of a process: an `atexit` hook that waits up to `SKYLARK_EXIT_FLUSH_MS` for
//! propagation in flight, releases the leases of the jobs still in flight then (so that
//! the next process on the node claims them at once), and writes this process's counters
//! to the node's stats hash (which the sweeper also does after every sweep).

use super::lease::Leases;
use super::slots::Slots;
use crate::cluster::Cluster;
use crate::stats::{self, Counter};
use crate::store::Request;
use crate::{keys, skylog};
use once_cell::sync::OnceCell;
use std::time::Instant;

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// What the exit flush waits for, gives up and writes to: the slots, leases and cluster
/// of the first engine started in the process.
static ENGINE: OnceCell<(&'static Slots, &'static Leases, &'static Cluster)> = OnceCell::new();

/// Registers the exit flush of the engine with `slots` and `leases` working on `cluster`
/// (once per process: a later engine is not waited for at exit; the plugin starts one).
pub(super) fn register(slots: &'static Slots, leases: &'static Leases, cluster: &'static Cluster) {
    if ENGINE.set((slots, leases, cluster)).is_err() {
        return;
    }
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
        let Some(&(slots, leases, ctx)) = ENGINE.get() else {
            return;
        };
        let deadline = ctx.config.propagation.exit_flush;
        let started = Instant::now();
        if !slots.wait_idle(deadline) {
            let released = leases.release_blocking(ctx);
            skylog!(
                Warn,
                "exit: propagation still in flight after {} ms; the outbox keeps it for a later process ({released} job(s) claimable at once)",
                started.elapsed().as_millis()
            );
        }
        flush_stats_blocking(ctx);
    });
}

/// The counters taken from this process and the request adding them to the node's stats
/// hash; `None` when there is nothing to add.
fn take_stats(ctx: &Cluster) -> Option<(Vec<(Counter, u64)>, Request)> {
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
fn flush_stats_blocking(ctx: &Cluster) {
    if let Some((taken, req)) = take_stats(ctx) {
        if let Err(e) = ctx.local.query(&req) {
            write_failed(&taken, e);
        }
    }
}

/// Adds this process's counters to the node's stats hash, on the runtime.
pub(super) async fn flush_stats(ctx: &Cluster) {
    if let Some((taken, req)) = take_stats(ctx) {
        if let Err(e) = ctx.local.query_async(&req).await {
            write_failed(&taken, e);
        }
    }
}
