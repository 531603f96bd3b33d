//! Host-side logic of the Skylark WasmEdge plugin, free of any WasmEdge types so that it
//! can be unit-tested on plain Rust values. The `skylark-plugin` cdylib adapts WasmEdge's
//! C API to [`calls::Instance`] and [`memory::GuestMemory`].

pub mod calls;
pub mod config;
pub mod context;
pub mod decode;
pub mod error;
pub mod log;
pub mod memory;
pub mod pending;
pub mod runtime;
pub mod store;

pub use calls::Instance;
pub use error::CallError;
pub use memory::GuestMemory;
