//! The raw host imports of module `skylark`, exactly as `ABI.md` declares them.
//!
//! Every parameter and result is an `i32`; pointers and lengths are offsets and sizes in
//! the guest's linear memory (interpreted by the host as unsigned 32-bit numbers), and every
//! function but [`skylark_version`] returns a [`Status`](crate::Status) code.
//!
//! Prefer the typed functions at the crate root. This module is public for callers that
//! need the bare ABI, e.g. tests that pass deliberately invalid pointers.
//!
//! On targets other than `wasm32` there is no host to import from: the functions here are
//! stubs with the same names and signatures that return
//! [`Status::Unsupported`](crate::Status::Unsupported) (and `skylark_version` returns 0), so
//! that code using the SDK still builds, documents and unit-tests on a development machine.

#[cfg(target_arch = "wasm32")]
mod imp {
    #[link(wasm_import_module = "skylark")]
    extern "C" {
        /// Returns the host's ABI version (2; 1 for hosts before `skylark_put_v2`).
        pub fn skylark_version() -> i32;

        /// Stores `value` as field `task` of chain `chain`'s bundle, in one round trip.
        ///
        /// # Safety
        /// The pointer/length pairs should describe readable guest memory; the host checks
        /// them and answers `InvalidPointer` otherwise.
        pub fn skylark_put(
            chain_ptr: i32,
            chain_len: i32,
            task_ptr: i32,
            task_len: i32,
            value_ptr: i32,
            value_len: i32,
            opts_ptr: i32,
            opts_len: i32,
        ) -> i32;

        /// Stores `entries_count` fields (16-byte `FieldRef` records at `entries_ptr`) of one
        /// bundle in one round trip, all or nothing.
        ///
        /// # Safety
        /// As for [`skylark_put`]; the records' own pointers are checked by the host too.
        pub fn skylark_put_many(
            chain_ptr: i32,
            chain_len: i32,
            entries_ptr: i32,
            entries_count: i32,
            opts_ptr: i32,
            opts_len: i32,
        ) -> i32;

        /// (ABI version 2) As [`skylark_put_many`], and writes `entries_count` little-endian
        /// `u64` versions at `versions_ptr`: those assigned, for an idempotent repeat those
        /// of the first put, for `ConditionFailed` those the node holds now.
        ///
        /// # Safety
        /// As for [`skylark_put_many`]; the host writes `8 * entries_count` bytes at
        /// `versions_ptr`.
        pub fn skylark_put_v2(
            chain_ptr: i32,
            chain_len: i32,
            entries_ptr: i32,
            entries_count: i32,
            opts_ptr: i32,
            opts_len: i32,
            versions_ptr: i32,
        ) -> i32;

        /// Reads a chain's whole bundle (MessagePack) into `buf`, or keeps it under a handle
        /// when `buf_cap` is too small; writes an 8-byte `GetResult` at `result_ptr`.
        ///
        /// # Safety
        /// The host writes up to `buf_cap` bytes at `buf_ptr` and 8 bytes at `result_ptr`;
        /// both must be memory the guest is prepared to have overwritten.
        pub fn skylark_get_bundle(
            chain_ptr: i32,
            chain_len: i32,
            opts_ptr: i32,
            opts_len: i32,
            buf_ptr: i32,
            buf_cap: i32,
            result_ptr: i32,
        ) -> i32;

        /// Delivers a result kept under `handle` into `buf` and forgets it.
        ///
        /// # Safety
        /// As for [`skylark_get_bundle`].
        pub fn skylark_take_result(handle: i32, buf_ptr: i32, buf_cap: i32, result_ptr: i32)
            -> i32;

        /// Forgets a result kept under `handle`.
        ///
        /// # Safety
        /// Touches no guest memory; `unsafe` only because it is a foreign function.
        pub fn skylark_drop_result(handle: i32) -> i32;

        /// Copies the message of the instance's most recent failure into `buf` (truncated to
        /// `buf_cap`) and writes its full length as a little-endian `u32` at `len_ptr`.
        ///
        /// # Safety
        /// The host writes up to `buf_cap` bytes at `buf_ptr` and 4 bytes at `len_ptr`.
        pub fn skylark_last_error(buf_ptr: i32, buf_cap: i32, len_ptr: i32) -> i32;
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
mod imp {
    use skylark_abi::Status;

    const UNSUPPORTED: i32 = Status::Unsupported as i32;

    /// Stub: there is no host outside wasm32; returns 0 (no ABI).
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_version() -> i32 {
        0
    }

    /// Stub: returns `Status::Unsupported`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_put(
        _chain_ptr: i32,
        _chain_len: i32,
        _task_ptr: i32,
        _task_len: i32,
        _value_ptr: i32,
        _value_len: i32,
        _opts_ptr: i32,
        _opts_len: i32,
    ) -> i32 {
        UNSUPPORTED
    }

    /// Stub: returns `Status::Unsupported`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_put_many(
        _chain_ptr: i32,
        _chain_len: i32,
        _entries_ptr: i32,
        _entries_count: i32,
        _opts_ptr: i32,
        _opts_len: i32,
    ) -> i32 {
        UNSUPPORTED
    }

    /// Stub: returns `Status::Unsupported`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_put_v2(
        _chain_ptr: i32,
        _chain_len: i32,
        _entries_ptr: i32,
        _entries_count: i32,
        _opts_ptr: i32,
        _opts_len: i32,
        _versions_ptr: i32,
    ) -> i32 {
        UNSUPPORTED
    }

    /// Stub: returns `Status::Unsupported`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_get_bundle(
        _chain_ptr: i32,
        _chain_len: i32,
        _opts_ptr: i32,
        _opts_len: i32,
        _buf_ptr: i32,
        _buf_cap: i32,
        _result_ptr: i32,
    ) -> i32 {
        UNSUPPORTED
    }

    /// Stub: returns `Status::Unsupported`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_take_result(
        _handle: i32,
        _buf_ptr: i32,
        _buf_cap: i32,
        _result_ptr: i32,
    ) -> i32 {
        UNSUPPORTED
    }

    /// Stub: returns `Status::Unsupported`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_drop_result(_handle: i32) -> i32 {
        UNSUPPORTED
    }

    /// Stub: returns `Status::Unsupported` and writes nothing.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only to match the wasm32 import.
    pub unsafe fn skylark_last_error(_buf_ptr: i32, _buf_cap: i32, _len_ptr: i32) -> i32 {
        UNSUPPORTED
    }
}

pub use imp::*;

/// A guest-memory address as the ABI passes it. Lossless on wasm32; on other targets the
/// stubs ignore it anyway.
#[inline]
pub(crate) fn addr<T>(ptr: *const T) -> i32 {
    ptr as usize as u32 as i32
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use skylark_abi::Status;

    #[test]
    fn host_stubs_report_unsupported() {
        // SAFETY: the non-wasm stubs touch no memory.
        unsafe {
            assert_eq!(skylark_version(), 0);
            assert_eq!(
                skylark_put(0, 0, 0, 0, 0, 0, 0, 0),
                Status::Unsupported.code()
            );
            assert_eq!(
                skylark_put_many(0, 0, 0, 0, 0, 0),
                Status::Unsupported.code()
            );
            assert_eq!(
                skylark_put_v2(0, 0, 0, 0, 0, 0, 0),
                Status::Unsupported.code()
            );
            assert_eq!(
                skylark_get_bundle(0, 0, 0, 0, 0, 0, 0),
                Status::Unsupported.code()
            );
            assert_eq!(skylark_take_result(1, 0, 0, 0), Status::Unsupported.code());
            assert_eq!(skylark_drop_result(1), Status::Unsupported.code());
            assert_eq!(skylark_last_error(0, 0, 0), Status::Unsupported.code());
        }
    }
}
