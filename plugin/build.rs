//! Link settings of the plugin library.
//!
//! WasmEdge `dlclose`s every plugin from a static destructor while the process exits.
//! The plugin's background threads (the tokio runtime that propagates puts) are still
//! alive then: a propagation may be in flight, or the runtime's worker thread, created
//! on the first host call, may not even have been scheduled yet. Once the library is
//! unmapped, such a thread runs into unmapped code and the process dies of SIGSEGV
//! instead of exiting. Linking with `-z nodelete` makes the dynamic loader keep the
//! library mapped until the process ends, so those threads simply stop with it; jobs
//! they had not finished stay in the Redis outbox for a later process.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
