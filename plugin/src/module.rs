//! Creation of the `skylark` module instance and the host-function trampolines.
//!
//! Each module instance owns one `Mutex<Instance>` (freed by WasmEdge through the module's
//! finalizer); every function of the module gets a pointer to it as host data.
//!
//! Names and parameter counts come from the one table in `skylark_abi::imports`: each
//! trampoline reads as many parameters as [`imports::params`] gives for its import (a
//! compile-time constant, so an `Instance` method expecting another count does not
//! compile), and [`create_module`] checks the function list against the table with
//! [`imports::check`] before registering anything, in release builds too.
//!
//! Nothing on a host-call path may unwind into WasmEdge (a panic out of an `extern "C"`
//! function aborts the process): every trampoline and callback runs its whole body inside
//! `catch_unwind`, including the error reporting after a caught panic.

use crate::memory::FrameMemory;
use skylark_abi::imports;
use skylark_abi::Status;
use skylark_core::{skylog, GuestMemory, Instance};
use std::any::Any;
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

/// One host function as registered: its import name, the number of `i32` parameters its
/// trampoline reads, and the trampoline.
struct HostFunction {
    name: &'static str,
    reads: usize,
    func: HostFn,
}

/// A panic payload as text.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Runs one host call: reads `N` i32 parameters, finds the caller's memory, runs `body`
/// with panics caught, and stores the status as the single i32 result. Always returns
/// success to WasmEdge: failures are status codes for the guest, never traps. A panic
/// anywhere in here, even while reporting a caught panic, becomes `Status::Internal`.
///
/// # Safety
/// Must only be called by WasmEdge's host-function callback with its arguments unchanged:
/// `data` null or the `Mutex<Instance>` of [`create_module`], `frame` the calling frame,
/// `params` null or `N` values, and `returns` null or room for one value. WasmEdge passes
/// exactly `N` parameters because the function was registered with the parameter count of
/// the same table entry `N` comes from (checked in [`create_module`]).
unsafe fn dispatch<const N: usize>(
    import: &'static str,
    data: *mut c_void,
    frame: *const WasmEdge_CallingFrameContext,
    params: *const WasmEdge_Value,
    returns: *mut WasmEdge_Value,
    body: impl FnOnce(&mut Instance, Option<&mut dyn GuestMemory>, [u32; N]) -> i32,
) -> WasmEdge_Result {
    let status = catch_unwind(AssertUnwindSafe(|| {
        if data.is_null() || (N > 0 && params.is_null()) {
            return Status::Internal.code();
        }
        // SAFETY: `data` is the `Mutex<Instance>` leaked in `create_module`, freed only by
        // the module's finalizer, which WasmEdge runs after the last call of the module.
        let state = unsafe { &*(data as *const Mutex<Instance>) };
        let mut args = [0u32; N];
        for (i, a) in args.iter_mut().enumerate() {
            // SAFETY: WasmEdge passes as many values as the function type has parameters,
            // which is `N` (see the function's safety section), and `i < N`.
            *a = unsafe { WasmEdge_ValueGetI32(*params.add(i)) } as u32;
        }
        // SAFETY: `frame` is the calling frame of this host call.
        let mut mem = unsafe { FrameMemory::from_frame(frame) };
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
            Err(panic) => instance.internal_error(import, &panic_message(panic.as_ref())),
        }
    }))
    .unwrap_or(Status::Internal.code());
    if !returns.is_null() {
        // SAFETY: `returns` has room for the one result of the function type.
        unsafe { *returns = WasmEdge_ValueGenI32(status) };
    }
    WasmEdge_Result { Code: 0 }
}

/// Defines a host function for one import: the number of parameters it reads is the
/// import's count in `skylark_abi::imports::ALL`.
macro_rules! trampoline {
    ($fn_name:ident, $import:expr, |$inst:ident, $mem:ident, $a:ident| $body:expr) => {
        /// # Safety
        /// Called by WasmEdge only, as the host function registered for the import.
        unsafe extern "C" fn $fn_name(
            data: *mut c_void,
            frame: *const WasmEdge_CallingFrameContext,
            params: *const WasmEdge_Value,
            returns: *mut WasmEdge_Value,
        ) -> WasmEdge_Result {
            const N: usize = imports::params($import);
            // SAFETY: WasmEdge calls this with the arguments `dispatch` requires; the
            // function was registered with `N` parameters (see `create_module`).
            unsafe {
                dispatch::<N>($import, data, frame, params, returns, |$inst, $mem, $a| {
                    $body
                })
            }
        }
    };
}

trampoline!(host_version, imports::VERSION, |i, _m, _a| i.version());
trampoline!(host_put, imports::PUT, |i, m, a| i.put(m, a));
trampoline!(host_put_many, imports::PUT_MANY, |i, m, a| i.put_many(m, a));
trampoline!(host_put_v2, imports::PUT_V2, |i, m, a| i.put_v2(m, a));
trampoline!(host_get_bundle, imports::GET_BUNDLE, |i, m, a| i
    .get_bundle(m, a));
trampoline!(host_take_result, imports::TAKE_RESULT, |i, m, a| i
    .take_result(m, a));
trampoline!(host_drop_result, imports::DROP_RESULT, |i, _m, a| i
    .drop_result(a[0]));
trampoline!(host_last_error, imports::LAST_ERROR, |i, m, a| i
    .read_last_error(m, a));

macro_rules! host_function {
    ($import:expr, $func:ident) => {
        HostFunction {
            name: $import,
            reads: imports::params($import),
            func: $func,
        }
    };
}

/// The functions of the module, by import name.
fn functions() -> [HostFunction; 8] {
    [
        host_function!(imports::VERSION, host_version),
        host_function!(imports::PUT, host_put),
        host_function!(imports::PUT_MANY, host_put_many),
        host_function!(imports::GET_BUNDLE, host_get_bundle),
        host_function!(imports::TAKE_RESULT, host_take_result),
        host_function!(imports::DROP_RESULT, host_drop_result),
        host_function!(imports::LAST_ERROR, host_last_error),
        host_function!(imports::PUT_V2, host_put_v2),
    ]
}

/// Frees a module instance's `Mutex<Instance>`.
///
/// # Safety
/// Called by WasmEdge only, once, with the host data given to
/// `WasmEdge_ModuleInstanceCreateWithData` in [`create_module`].
unsafe extern "C" fn finalize(data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` came from `Box::into_raw` in `create_module` and is freed only here.
    let state = unsafe { Box::from_raw(data as *mut Mutex<Instance>) };
    if catch_unwind(AssertUnwindSafe(|| drop(state))).is_err() {
        skylog!(Error, "dropping a module instance panicked");
    }
}

/// A WasmEdge string holding a copy of `s`; the caller deletes it.
fn wasm_string(s: &str) -> WasmEdge_String {
    // SAFETY: the pointer and length describe `s`, which WasmEdge copies. Import names
    // are short constants, far below `u32::MAX` bytes.
    unsafe { WasmEdge_StringCreateByBuffer(s.as_ptr() as *const _, s.len() as u32) }
}

/// Adds one `(i32 x params) -> i32` host function to `module`.
///
/// # Safety
/// `module` must be a live module instance and `data` the host data `func` expects.
unsafe fn add_function(
    module: *mut WasmEdge_ModuleInstanceContext,
    name: &str,
    params: usize,
    func: HostFn,
    data: *mut c_void,
) -> bool {
    let Ok(count) = u32::try_from(params) else {
        return false;
    };
    // SAFETY: a plain constructor without preconditions.
    let i32t = unsafe { WasmEdge_ValTypeGenI32() };
    let param_types = vec![i32t; params];
    let result_types = [i32t];
    // SAFETY: both arrays hold as many types as the counts passed; WasmEdge copies them.
    let ty = unsafe {
        WasmEdge_FunctionTypeCreate(param_types.as_ptr(), count, result_types.as_ptr(), 1)
    };
    if ty.is_null() {
        return false;
    }
    // SAFETY: `ty` is live; `func` and `data` belong together (caller's contract). The
    // function instance copies the type, so deleting `ty` afterwards is fine.
    let f = unsafe { WasmEdge_FunctionInstanceCreate(ty, Some(func), data, 0) };
    // SAFETY: `ty` was created above and is not used after this.
    unsafe { WasmEdge_FunctionTypeDelete(ty) };
    if f.is_null() {
        return false;
    }
    let name = wasm_string(name);
    // SAFETY: `module` is live (caller's contract); the module takes ownership of `f` and
    // copies `name`, which is deleted right after.
    unsafe {
        WasmEdge_ModuleInstanceAddFunction(module, name, f);
        WasmEdge_StringDelete(name);
    }
    true
}

/// Builds the module; `None` (after logging why) if anything fails.
fn build_module() -> Option<*mut WasmEdge_ModuleInstanceContext> {
    let fns = functions();
    if let Err(e) = imports::check(fns.iter().map(|f| (f.name, f.reads))) {
        skylog!(Error, "not registering module skylark: {e}");
        return None;
    }
    let data = Box::into_raw(Box::new(Mutex::new(Instance::new()))) as *mut c_void;
    let name = wasm_string(imports::MODULE);
    // SAFETY: `data` is a valid pointer whose only owner from now on is the module, which
    // frees it through `finalize`; `name` is copied and deleted right after.
    let module = unsafe {
        let module = WasmEdge_ModuleInstanceCreateWithData(name, data, Some(finalize));
        WasmEdge_StringDelete(name);
        module
    };
    if module.is_null() {
        // SAFETY: no module took `data`, so it is still ours to free.
        unsafe { finalize(data) };
        skylog!(Error, "WasmEdge could not create module skylark");
        return None;
    }
    for imp in imports::ALL {
        // `check` above found exactly one function per import, reading `imp.params`.
        let Some(f) = fns.iter().find(|f| f.name == imp.name) else {
            continue;
        };
        // SAFETY: `module` was created above and `data` is the host data every
        // trampoline expects.
        if !unsafe { add_function(module, imp.name, imp.params, f.func, data) } {
            // SAFETY: deleting the module runs the finalizer, which frees `data`.
            unsafe { WasmEdge_ModuleInstanceDelete(module) };
            skylog!(Error, "WasmEdge could not add function {}", imp.name);
            return None;
        }
    }
    Some(module)
}

/// `Create` of the module descriptor: builds a fresh `skylark` module instance, or
/// returns null (WasmEdge then reports that the module could not be created).
///
/// # Safety
/// Called by WasmEdge only; the descriptor is not used.
pub unsafe extern "C" fn create_module(
    _desc: *const WasmEdge_ModuleDescriptor,
) -> *mut WasmEdge_ModuleInstanceContext {
    let module = catch_unwind(build_module)
        .ok()
        .flatten()
        .unwrap_or(std::ptr::null_mut());
    if !module.is_null() {
        // The guest runs next: configuration, propagation and the node-local connection
        // get ready meanwhile, on a thread of their own (the call returns at once).
        let _ = catch_unwind(skylark_core::context::prewarm);
    }
    module
}
