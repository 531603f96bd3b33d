//! Creation of the `skylark` module instance and the host-function trampolines.
//!
//! Each module instance owns one `Mutex<Instance>` (freed by WasmEdge through the module's
//! finalizer); every function of the module gets a pointer to it as host data.

use crate::memory::FrameMemory;
use skylark_abi::{imports, Status};
use skylark_core::{GuestMemory, Instance};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use wasmedge_sys::ffi::*;

type HostFn = unsafe extern "C" fn(
    *mut c_void,
    *const WasmEdge_CallingFrameContext,
    *const WasmEdge_Value,
    *mut WasmEdge_Value,
) -> WasmEdge_Result;

/// Runs one host call: reads `N` i32 parameters, finds the caller's memory, runs `body`
/// with panics caught, and stores the status as the single i32 result. Always returns
/// success to WasmEdge: failures are status codes for the guest, never traps.
unsafe fn dispatch<const N: usize>(
    import: &str,
    data: *mut c_void,
    frame: *const WasmEdge_CallingFrameContext,
    params: *const WasmEdge_Value,
    returns: *mut WasmEdge_Value,
    body: impl FnOnce(&mut Instance, Option<&mut dyn GuestMemory>, [u32; N]) -> i32,
) -> WasmEdge_Result {
    let status = if data.is_null() || (N > 0 && params.is_null()) {
        Status::Internal.code()
    } else {
        let state = &*(data as *const Mutex<Instance>);
        let mut args = [0u32; N];
        for (i, a) in args.iter_mut().enumerate() {
            *a = WasmEdge_ValueGetI32(*params.add(i)) as u32;
        }
        let mut mem = FrameMemory::from_frame(frame);
        let mut instance = state.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            body(
                &mut instance,
                mem.as_mut().map(|m| m as &mut dyn GuestMemory),
                args,
            )
        }));
        match outcome {
            Ok(code) => code,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                instance.internal_error(import, &what)
            }
        }
    };
    if !returns.is_null() {
        *returns = WasmEdge_ValueGenI32(status);
    }
    WasmEdge_Result { Code: 0 }
}

macro_rules! trampoline {
    ($fn_name:ident, $import:expr, $n:literal, |$inst:ident, $mem:ident, $a:ident| $body:expr) => {
        unsafe extern "C" fn $fn_name(
            data: *mut c_void,
            frame: *const WasmEdge_CallingFrameContext,
            params: *const WasmEdge_Value,
            returns: *mut WasmEdge_Value,
        ) -> WasmEdge_Result {
            dispatch::<$n>($import, data, frame, params, returns, |$inst, $mem, $a| {
                $body
            })
        }
    };
}

trampoline!(host_version, imports::VERSION, 0, |i, _m, _a| i.version());
trampoline!(host_put, imports::PUT, 8, |i, m, a| i.put(m, a));
trampoline!(host_put_many, imports::PUT_MANY, 6, |i, m, a| i
    .put_many(m, a));
trampoline!(host_get_bundle, imports::GET_BUNDLE, 7, |i, m, a| i
    .get_bundle(m, a));
trampoline!(host_take_result, imports::TAKE_RESULT, 4, |i, m, a| i
    .take_result(m, a));
trampoline!(host_drop_result, imports::DROP_RESULT, 1, |i, _m, a| i
    .drop_result(a[0]));
trampoline!(host_last_error, imports::LAST_ERROR, 3, |i, m, a| i
    .read_last_error(m, a));

/// The functions of the module, by import name.
fn functions() -> [(&'static str, HostFn); 7] {
    [
        (imports::VERSION, host_version),
        (imports::PUT, host_put),
        (imports::PUT_MANY, host_put_many),
        (imports::GET_BUNDLE, host_get_bundle),
        (imports::TAKE_RESULT, host_take_result),
        (imports::DROP_RESULT, host_drop_result),
        (imports::LAST_ERROR, host_last_error),
    ]
}

unsafe extern "C" fn finalize(data: *mut c_void) {
    if !data.is_null() {
        drop(Box::from_raw(data as *mut Mutex<Instance>));
    }
}

unsafe fn wasm_string(s: &str) -> WasmEdge_String {
    WasmEdge_StringCreateByBuffer(s.as_ptr() as *const _, s.len() as u32)
}

/// Adds one `(i32 x params) -> i32` host function to `module`.
unsafe fn add_function(
    module: *mut WasmEdge_ModuleInstanceContext,
    name: &str,
    params: usize,
    func: HostFn,
    data: *mut c_void,
) -> bool {
    let i32t = WasmEdge_ValTypeGenI32();
    let param_types = vec![i32t; params];
    let result_types = [i32t];
    let ty = WasmEdge_FunctionTypeCreate(
        param_types.as_ptr(),
        params as u32,
        result_types.as_ptr(),
        1,
    );
    if ty.is_null() {
        return false;
    }
    let f = WasmEdge_FunctionInstanceCreate(ty, Some(func), data, 0);
    WasmEdge_FunctionTypeDelete(ty);
    if f.is_null() {
        return false;
    }
    let name = wasm_string(name);
    WasmEdge_ModuleInstanceAddFunction(module, name, f);
    WasmEdge_StringDelete(name);
    true
}

/// `Create` of the module descriptor: builds a fresh `skylark` module instance.
pub unsafe extern "C" fn create_module(
    _desc: *const WasmEdge_ModuleDescriptor,
) -> *mut WasmEdge_ModuleInstanceContext {
    let built = catch_unwind(|| {
        let data = Box::into_raw(Box::new(Mutex::new(Instance::new()))) as *mut c_void;
        let name = wasm_string(imports::MODULE);
        let module = WasmEdge_ModuleInstanceCreateWithData(name, data, Some(finalize));
        WasmEdge_StringDelete(name);
        if module.is_null() {
            finalize(data);
            return std::ptr::null_mut();
        }
        for ((import, params), (name, func)) in imports::ALL.iter().zip(functions()) {
            debug_assert_eq!(*import, name);
            if !add_function(module, name, *params, func, data) {
                // Deleting the module runs the finalizer, which frees `data`.
                WasmEdge_ModuleInstanceDelete(module);
                return std::ptr::null_mut();
            }
        }
        module
    });
    built.unwrap_or(std::ptr::null_mut())
}
