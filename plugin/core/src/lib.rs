//! Host-side logic of the Skylark WasmEdge plugin, free of any WasmEdge types so that it
//! can be unit-tested on plain Rust values. The `skylark-plugin` cdylib adapts WasmEdge's
//! C API to [`calls::Instance`] and [`memory::GuestMemory`].
//!
//! A [`context::Context`] (a [`cluster::Cluster`] and, with propagation on, its
//! [`propagation::Engine`]) is built from a [`config::Config`] value; the plugin's own is
//! built from the environment on the first host call. Host calls get it from their
//! [`Instance`]; the engine is handed the cluster it works on and knows no global.
//!
//! Logging ([`log`]) never panics, whatever state stderr is in: it runs on host-call paths,
//! background threads and in an `atexit` callback, where a panic could abort the host.

// Every unsafe operation sits in its own `unsafe` block with a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod acl;
pub mod arrivals;
pub mod bundle_read;
pub mod calls;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod context;
pub mod decode;
pub mod direct;
pub mod distributed;
pub mod election;
pub mod error;
pub mod events;
pub mod fence;
pub mod fetch;
pub mod keys;
pub mod log;
pub mod malloc;
pub mod memory;
pub mod nodes;
pub mod outbox;
pub mod pending;
pub mod propagation;
pub mod reply;
pub mod reply_bound;
pub mod resp;
pub mod runtime;
pub mod script;
pub mod sigpipe;
pub mod stats;
pub mod store;
pub mod topology;
pub mod topology_watch;
pub mod write;

pub use calls::Instance;
pub use error::CallError;
pub use memory::GuestMemory;
