//! The raw Skylark imports, declared here (not through the SDK) so that the host sees
//! exactly the arguments the fuzzer picked.

use skylark_abi::imports;

#[link(wasm_import_module = "skylark")]
extern "C" {
    fn skylark_version() -> i32;
    fn skylark_put(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32, g: i32, h: i32) -> i32;
    fn skylark_put_many(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32) -> i32;
    fn skylark_put_v2(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32, g: i32) -> i32;
    fn skylark_get_bundle(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32, g: i32) -> i32;
    fn skylark_take_result(a: i32, b: i32, c: i32, d: i32) -> i32;
    fn skylark_drop_result(a: i32) -> i32;
    fn skylark_last_error(a: i32, b: i32, c: i32) -> i32;
}

/// One import of the `skylark` module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Import {
    Version,
    Put,
    PutMany,
    GetBundle,
    TakeResult,
    DropResult,
    LastError,
    PutV2,
}

impl Import {
    pub const ALL: [Import; 8] = [
        Import::Version,
        Import::Put,
        Import::PutMany,
        Import::GetBundle,
        Import::TakeResult,
        Import::DropResult,
        Import::LastError,
        Import::PutV2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Import::Version => imports::VERSION,
            Import::Put => imports::PUT,
            Import::PutMany => imports::PUT_MANY,
            Import::GetBundle => imports::GET_BUNDLE,
            Import::TakeResult => imports::TAKE_RESULT,
            Import::DropResult => imports::DROP_RESULT,
            Import::LastError => imports::LAST_ERROR,
            Import::PutV2 => imports::PUT_V2,
        }
    }

    pub fn index(self) -> usize {
        Import::ALL.iter().position(|i| *i == self).unwrap_or(0)
    }
}

/// Calls `import` with `a` (unused trailing words ignored), as `i32`s.
pub fn call(import: Import, a: &[u32; 8]) -> i32 {
    let w = a.map(|x| x as i32);
    // SAFETY: the imports take and return plain i32 values; whatever they write goes to
    // guest memory the fuzzer chose (its own regions, or outside memory).
    unsafe {
        match import {
            Import::Version => skylark_version(),
            Import::Put => skylark_put(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]),
            Import::PutMany => skylark_put_many(w[0], w[1], w[2], w[3], w[4], w[5]),
            Import::GetBundle => skylark_get_bundle(w[0], w[1], w[2], w[3], w[4], w[5], w[6]),
            Import::TakeResult => skylark_take_result(w[0], w[1], w[2], w[3]),
            Import::DropResult => skylark_drop_result(w[0]),
            Import::LastError => skylark_last_error(w[0], w[1], w[2]),
            Import::PutV2 => skylark_put_v2(w[0], w[1], w[2], w[3], w[4], w[5], w[6]),
        }
    }
}
