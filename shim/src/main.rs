//! `containerd-shim-skylark-v1`: a containerd shim (runtime type `io.containerd.skylark.v1`)
//! built on runwasi's `containerd-shim-wasm` 1.0 that runs a container's wasm entrypoint
//! with WasmEdge 0.14 **after loading every WasmEdge plugin it finds**: the directories in
//! the container's `WASMEDGE_PLUGIN_PATH` (resolved inside the container's root file
//! system, as crun's WasmEdge handler does) and WasmEdge's default plugin directories. The
//! VM registers the modules of every loaded plugin, so a guest importing module `skylark`
//! (or any other plugin's module) instantiates. No annotation is needed: a container whose
//! entrypoint is an ELF program or a script (the pod's pause container) runs as an
//! ordinary Linux container; one whose entrypoint is a wasm module runs in WasmEdge.
//!
//! The engine itself is [`wasmedge`]; this file only wires it into the shim library.

mod wasmedge;

use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{version, Cli, Shim, Version};

/// The shim: its name makes containerd look for `containerd-shim-skylark-v1`.
struct SkylarkShim;

/// Runs one wasm container (one per container process).
#[derive(Default)]
struct WasmEdgeSandbox;

impl Shim for SkylarkShim {
    type Sandbox = WasmEdgeSandbox;

    fn name() -> &'static str {
        "skylark"
    }

    fn version() -> Version {
        version!()
    }
}

impl Sandbox for WasmEdgeSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let run = wasmedge::Run::from_context(ctx)?;
        Ok(run.execute()?)
    }
}

fn main() {
    SkylarkShim::run(None);
}
