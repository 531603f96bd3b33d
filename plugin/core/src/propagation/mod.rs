//! Background propagation: after a put's node-local write (which recorded a job in the
//! outbox), elect the node where the successor will most likely run and copy the chain's
//! bundle there and then to the global store (the consumer's copy first, `copy`), off the
//! guest's thread.
//!
//! Rules:
//! - **Backpressure.** At most `SKYLARK_QUEUE_LEN` jobs are in flight per process. A put
//!   that finds the queue full still records its job in the outbox, due at once, and
//!   returns; the next outbox sweep (of this or any later process on the node) runs it.
//!   Puts never block on propagation and nothing is dropped.
//! - **One chain, one copy at a time.** Jobs of a chain run in order; a job waits
//!   `SKYLARK_LINGER_MS` before it reads the bundle, and jobs of the same chain submitted
//!   meanwhile (or while an earlier one runs) merge into one, which copies the latest
//!   bundle once. An older snapshot never overwrites a newer one.
//! - **Retries.** A failed copy is retried with exponential backoff (`SKYLARK_RETRY_BASE_MS`,
//!   doubling, at most 10 s). After `SKYLARK_RETRIES` failures the elected node is excluded
//!   and the job re-elected (the next candidate, or this node); the global copy is retried
//!   until the bundle's TTL has passed.
//! - **Nothing lost.** Progress is written back to the outbox before every wait; a job is
//!   removed only when all its copies are acknowledged. Jobs of processes that died are
//!   claimed by the sweeps of later processes once their lease has run out. A process
//!   renews the leases of the jobs it runs (or holds waiting behind their chain), so a
//!   job that takes longer than a lease is not copied again by another process. A job that
//!   cannot tell its copies yet (no topology loaded and no global store) waits for them.
//! - **Exit.** At process exit the plugin waits up to `SKYLARK_EXIT_FLUSH_MS` for jobs in
//!   flight (a function's wasmedge process usually exits right after its put). What is
//!   still running then is not stopped: the runtime's threads end with the process, and
//!   their jobs stay in the outbox for a later process, their leases released so that
//!   the next process on the node claims them at once. The plugin library is linked never
//!   to be unloaded (`plugin/build.rs`), so WasmEdge's `dlclose` at exit cannot unmap the
//!   code those threads run.
//!
//! The [`Engine`] owns what it works with (the [`Cluster`](crate::cluster::Cluster): store,
//! nodes, topology, events) and is handed to what needs it; it knows no global context.
//! Modules: `engine` (queue slots, chains, the outbox sweeper, submission), `slots` (the
//! slot guard), `job` (one job's attempts, retries, finish and clean-up), `elect` (where a
//! copy goes), `copy` (one round of fenced copies), `sending` (the records of copies on their way, for
//! readers on their targets), `lease` (renewing and releasing the
//! outbox leases of jobs in flight), `exit` (the `atexit` flush and stats).

mod copy;
mod elect;
mod engine;
mod exit;
mod job;
mod lease;
pub mod sending;
mod slots;

pub use engine::Engine;
pub use slots::Slot;
