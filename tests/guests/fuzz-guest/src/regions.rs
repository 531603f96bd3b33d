//! The guest memory the fuzzer works in: fixed regions allocated once, whose addresses
//! it passes to the host, and the classification of any (pointer, length) pair.
//!
//! - `arena` (16 KiB): inputs are written here before each call, and small outputs may
//!   land here; it is compared with a snapshot after every call, so any byte the host
//!   writes outside the spans it may write is caught;
//! - `data` (256 KiB, filled once): large values and arbitrary spans are read from here;
//! - `big` (1 MiB): room for whole bundles;
//! - `msg` (8 KiB + 4): where the checker reads the last-error message.
//!
//! The host may only ever be given *writable* spans that lie inside `arena` or `big`, or
//! that end outside memory: anything else could let a (correct) host overwrite the
//! guest's own heap.

use core::arch::wasm32::memory_size;

pub const ARENA: usize = 16 * 1024;
pub const DATA: usize = 256 * 1024;
pub const BIG: usize = 1024 * 1024;
pub const MSG: usize = 8 * 1024;

/// One fixed region.
pub struct Region {
    ptr: *mut u8,
    pub len: usize,
}

impl Region {
    fn new(len: usize) -> Region {
        let b: &'static mut [u8] = Box::leak(vec![0u8; len].into_boxed_slice());
        Region {
            ptr: b.as_mut_ptr(),
            len,
        }
    }

    pub fn base(&self) -> u32 {
        self.ptr as usize as u32
    }

    /// The offset of `[ptr, ptr + len)` in this region if it lies inside it.
    pub fn offset_of(&self, ptr: u32, len: u32) -> Option<usize> {
        let off = u64::from(ptr).checked_sub(u64::from(self.base()))?;
        (off + u64::from(len) <= self.len as u64).then_some(off as usize)
    }

    /// A copy of `len` bytes at `off`.
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        // SAFETY: inside the leaked allocation; no reference to it is live across a host
        // call, so a short-lived shared view is sound.
        unsafe { core::slice::from_raw_parts(self.ptr.add(off), len).to_vec() }
    }

    /// Runs `f` on a view of `[off, off + len)` (no copy).
    pub fn with<R>(&self, off: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(off + len <= self.len);
        // SAFETY: as in `read`.
        f(unsafe { core::slice::from_raw_parts(self.ptr.add(off), len) })
    }

    pub fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: inside the leaked allocation; no other view is live.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) }
    }

    /// Copies the whole region into `out` (same length).
    pub fn snapshot(&self, out: &mut [u8]) {
        self.with(0, self.len, |s| out.copy_from_slice(s));
    }
}

/// What lies at a (pointer, length) pair the guest passes.
pub enum Content {
    /// Ends outside memory (the length is not 0).
    Outside,
    /// Inside a region the guest controls: these bytes.
    Known(Vec<u8>),
    /// Inside memory, bytes unknown (the guest's stack, heap, data).
    Unknown,
}

pub struct Regions {
    pub arena: Region,
    pub data: Region,
    pub big: Region,
    pub msg: Region,
}

/// Current size of memory 0 in bytes.
pub fn memory_end() -> u64 {
    memory_size(0) as u64 * 65_536
}

/// Does `[ptr, ptr + len)` lie in a memory of `end` bytes? (A zero length always does.)
pub fn inside(end: u64, ptr: u32, len: u32) -> bool {
    len == 0 || u64::from(ptr) + u64::from(len) <= end
}

impl Regions {
    pub fn new(fill: &mut crate::rng::Rng) -> Regions {
        let r = Regions {
            arena: Region::new(ARENA),
            data: Region::new(DATA),
            big: Region::new(BIG),
            msg: Region::new(MSG + 4),
        };
        let mut d = fill.bytes(DATA);
        // Some id-like text, so that arbitrary spans of `data` are sometimes valid ids.
        for chunk in d.chunks_mut(512).step_by(3) {
            for b in chunk.iter_mut() {
                *b = b"abcdefghij0123456789._-XYZ"[usize::from(*b) % 26];
            }
        }
        r.data.write(0, &d);
        r
    }

    pub fn content(&self, end: u64, ptr: u32, len: u32) -> Content {
        if len == 0 {
            return Content::Known(Vec::new());
        }
        if !inside(end, ptr, len) {
            return Content::Outside;
        }
        for region in [&self.arena, &self.data] {
            if let Some(off) = region.offset_of(ptr, len) {
                return Content::Known(region.read(off, len as usize));
            }
        }
        Content::Unknown
    }

    /// May the host be given `[ptr, ptr + len)` to write? Inside `arena` or `big`, or
    /// ending outside memory (then the host must refuse it).
    pub fn safe_output(&self, end: u64, ptr: u32, len: u32) -> bool {
        len == 0
            || !inside(end, ptr, len)
            || self.arena.offset_of(ptr, len).is_some()
            || self.big.offset_of(ptr, len).is_some()
    }
}
