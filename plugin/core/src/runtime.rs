//! The process-wide tokio runtime that drives all store I/O, created on first use so that
//! loading the plugin costs nothing.
//!
//! Host calls are synchronous; [`run`] spawns a future on the runtime and waits for its
//! answer on a channel. That works whether or not the calling thread is itself inside some
//! other tokio runtime (where `block_on` would panic), and a deadline bounds every wait.
//!
//! The runtime is never shut down: its threads end with the process, whatever they are
//! doing (the exit flush in `propagation` bounds how long exit waits for them). That is safe
//! only because the plugin library is never unloaded (`plugin/build.rs`): WasmEdge
//! `dlclose`s plugins at exit, and a thread of this runtime, even one not yet scheduled,
//! would otherwise run into unmapped code.

use crate::error::CallError;
use once_cell::sync::Lazy;
use skylark_abi::Status;
use std::future::Future;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::Duration;
use tokio::runtime::Runtime;

static RUNTIME: Lazy<Result<Runtime, String>> = Lazy::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("skylark-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the plugin's I/O runtime: {e}"))
});

/// The runtime, for spawning background work.
pub fn handle() -> Result<&'static Runtime, CallError> {
    RUNTIME
        .as_ref()
        .map_err(|e| CallError::new(Status::Internal, e.clone()))
}

/// Runs `fut` on the plugin runtime and waits at most `deadline` for its result. A future
/// that does not finish in time yields `StoreTimeout` and is cancelled.
pub fn run<T, F>(deadline: Duration, fut: F) -> Result<T, CallError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, CallError>> + Send + 'static,
{
    let rt = handle()?;
    let (tx, rx) = sync_channel(1);
    rt.spawn(async move {
        let result = match tokio::time::timeout(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error(deadline)),
        };
        // The waiter may have given up already; nothing to do then.
        let _ = tx.send(result);
    });
    // The task enforces the deadline itself; the margin only guards against a stalled runtime.
    match rx.recv_timeout(deadline + Duration::from_millis(500)) {
        Ok(result) => result,
        Err(RecvTimeoutError::Timeout) => Err(timeout_error(deadline)),
        Err(RecvTimeoutError::Disconnected) => Err(CallError::new(
            Status::Internal,
            "store task ended without an answer (it panicked)",
        )),
    }
}

fn timeout_error(deadline: Duration) -> CallError {
    CallError::new(
        Status::StoreTimeout,
        format!(
            "no answer within {} ms (SKYLARK_TIMEOUT_MS)",
            deadline.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_result() {
        assert_eq!(run(Duration::from_secs(1), async { Ok(7) }), Ok(7));
    }

    #[test]
    fn times_out_slow_futures() {
        let started = std::time::Instant::now();
        let r: Result<(), _> = run(Duration::from_millis(50), async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        });
        assert_eq!(r.unwrap_err().status, Status::StoreTimeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_panicking_task_is_an_internal_error() {
        let r: Result<(), _> = run(Duration::from_secs(1), async { panic!("boom") });
        assert_eq!(r.unwrap_err().status, Status::Internal);
    }

    #[test]
    fn works_from_inside_another_tokio_runtime() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = outer.block_on(async { run(Duration::from_secs(1), async { Ok(1) }) });
        assert_eq!(r, Ok(1));
    }
}
