//! Names of the host module and its functions, as a guest imports them.
//!
//! Every function takes and returns `i32` values only (pointers and lengths are guest
//! memory offsets in bytes) and returns a [`crate::Status`] code.

/// The import module every Skylark host function lives in.
pub const MODULE: &str = "skylark";

/// `() -> abi_version`
pub const VERSION: &str = "skylark_version";
/// `(chain_ptr, chain_len, task_ptr, task_len, value_ptr, value_len, opts_ptr, opts_len) -> status`
pub const PUT: &str = "skylark_put";
/// `(chain_ptr, chain_len, entries_ptr, entries_count, opts_ptr, opts_len) -> status`
pub const PUT_MANY: &str = "skylark_put_many";
/// `(chain_ptr, chain_len, opts_ptr, opts_len, buf_ptr, buf_cap, result_ptr) -> status`
pub const GET_BUNDLE: &str = "skylark_get_bundle";
/// `(handle, buf_ptr, buf_cap, result_ptr) -> status`
pub const TAKE_RESULT: &str = "skylark_take_result";
/// `(handle) -> status`
pub const DROP_RESULT: &str = "skylark_drop_result";
/// `(buf_ptr, buf_cap, len_ptr) -> status`
pub const LAST_ERROR: &str = "skylark_last_error";

/// Every import with its number of `i32` parameters (each returns one `i32`).
pub const ALL: &[(&str, usize)] = &[
    (VERSION, 0),
    (PUT, 8),
    (PUT_MANY, 6),
    (GET_BUNDLE, 7),
    (TAKE_RESULT, 4),
    (DROP_RESULT, 1),
    (LAST_ERROR, 3),
];
