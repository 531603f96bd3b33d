//! The Skylark WasmEdge plugin: the C ABI WasmEdge loads (`WasmEdge_Plugin_GetDescriptor`),
//! the `skylark` module it creates, and the trampolines that turn each host call into a
//! call on [`skylark_core::Instance`]. All behaviour lives in `skylark-core`; this crate only
//! adapts WasmEdge's C API and guarantees that no panic crosses the FFI boundary.
//!
//! `build.rs` links the library with `-z nodelete`: WasmEdge `dlclose`s plugins while
//! the process exits, and the plugin's background threads must never find its code gone.

#![allow(non_snake_case)]
// the library name must be wasmedgePluginSkylark
// Every unsafe operation sits in its own `unsafe` block with a `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod memory;
mod module;

use module::create_module;
use std::ffi::c_char;
use wasmedge_sys::ffi::{
    WasmEdge_ModuleDescriptor, WasmEdge_PluginDescriptor, WasmEdge_PluginVersionData,
};

/// Plugin API version of WasmEdge 0.14.x to 0.16.x.
const PLUGIN_API_VERSION: u32 = 4;

/// Makes the raw-pointer descriptors WasmEdge expects usable as statics; they are
/// immutable after compilation.
struct Shared<T>(T);
// SAFETY: the wrapped descriptors are never mutated and only point to static data.
unsafe impl<T> Sync for Shared<T> {}

const fn version_part(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

static MODULES: Shared<[WasmEdge_ModuleDescriptor; 1]> = Shared([WasmEdge_ModuleDescriptor {
    Name: c"skylark".as_ptr() as *const c_char,
    Description: c"skylark_put / skylark_get_bundle: workflow state in the node-local Redis"
        .as_ptr() as *const c_char,
    Create: Some(create_module),
}]);

static DESCRIPTOR: Shared<WasmEdge_PluginDescriptor> = Shared(WasmEdge_PluginDescriptor {
    Name: c"skylark".as_ptr() as *const c_char,
    Description: c"Skylark: fast, placement-aware state for serverless wasm workflows".as_ptr()
        as *const c_char,
    APIVersion: PLUGIN_API_VERSION,
    Version: WasmEdge_PluginVersionData {
        Major: version_part(env!("CARGO_PKG_VERSION_MAJOR")),
        Minor: version_part(env!("CARGO_PKG_VERSION_MINOR")),
        Patch: version_part(env!("CARGO_PKG_VERSION_PATCH")),
        Build: 0,
    },
    ModuleCount: 1,
    ProgramOptionCount: 0,
    ModuleDescriptions: &MODULES.0 as *const _ as *mut WasmEdge_ModuleDescriptor,
    ProgramOptions: std::ptr::null_mut(),
});

/// The entry point WasmEdge looks up in every plugin library.
#[no_mangle]
pub extern "C" fn WasmEdge_Plugin_GetDescriptor() -> *const WasmEdge_PluginDescriptor {
    &DESCRIPTOR.0
}
