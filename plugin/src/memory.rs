//! [`GuestMemory`] over the calling module's WasmEdge memory instance.

use skylark_core::GuestMemory;
use wasmedge_sys::ffi::{
    WasmEdge_CallingFrameContext, WasmEdge_CallingFrameGetMemoryInstance,
    WasmEdge_MemoryInstanceContext, WasmEdge_MemoryInstanceGetMemoryType,
    WasmEdge_MemoryInstanceGetPageSize, WasmEdge_MemoryInstanceGetPointer,
    WasmEdge_MemoryTypeGetLimit,
};

const PAGE: u64 = 65_536;

/// Memory 0 of the module that made the host call. Valid for the duration of that call:
/// the guest is suspended, so the memory can neither grow nor move meanwhile.
pub struct FrameMemory {
    ctx: *mut WasmEdge_MemoryInstanceContext,
    size: u64,
}

impl FrameMemory {
    /// The calling module's memory 0, or `None` if it has none or it is shared (threads
    /// proposal): another thread could change an id in a shared memory between its check
    /// and its use, so the host refuses to read one (issue 16, Low).
    ///
    /// # Safety
    /// `frame` must be the calling frame WasmEdge passed to the running host function.
    pub unsafe fn from_frame(frame: *const WasmEdge_CallingFrameContext) -> Option<FrameMemory> {
        if frame.is_null() {
            return None;
        }
        // SAFETY: `frame` is the live calling frame of the running host call (caller's
        // contract); WasmEdge returns null when the module has no memory 0.
        let ctx = unsafe { WasmEdge_CallingFrameGetMemoryInstance(frame, 0) };
        if ctx.is_null() {
            return None;
        }
        // SAFETY: `ctx` is the non-null memory instance just obtained from the frame; its
        // type lives as long as the instance.
        let ty = unsafe { WasmEdge_MemoryInstanceGetMemoryType(ctx) };
        if ty.is_null() {
            return None;
        }
        // SAFETY: `ty` is the non-null memory type of `ctx`.
        if unsafe { WasmEdge_MemoryTypeGetLimit(ty) }.Shared {
            return None;
        }
        // SAFETY: `ctx` is the non-null memory instance just obtained from the frame.
        let pages = unsafe { WasmEdge_MemoryInstanceGetPageSize(ctx) };
        // At most 2^32 pages of 2^16 bytes: no overflow in u64.
        let size = u64::from(pages) * PAGE;
        Some(FrameMemory { ctx, size })
    }
}

impl GuestMemory for FrameMemory {
    fn size(&self) -> u64 {
        self.size
    }

    fn slice_unchecked(&self, ptr: u32, len: u32) -> Option<&[u8]> {
        // SAFETY: WasmEdge returns null unless [ptr, ptr+len) is inside the memory, which
        // stays mapped and unchanged while the host call runs.
        unsafe {
            let p = WasmEdge_MemoryInstanceGetPointer(self.ctx, ptr, len);
            (!p.is_null()).then(|| std::slice::from_raw_parts(p, len as usize))
        }
    }

    fn slice_mut_unchecked(&mut self, ptr: u32, len: u32) -> Option<&mut [u8]> {
        // SAFETY: as above; `&mut self` makes this the only view handed out.
        unsafe {
            let p = WasmEdge_MemoryInstanceGetPointer(self.ctx, ptr, len);
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p, len as usize))
        }
    }
}
