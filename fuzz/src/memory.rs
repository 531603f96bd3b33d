//! Target `memory`: the bounds rule for guest pointers and lengths
//! (`skylark_core::memory::check_range`) and the `GuestMemory` accessors built on it.
//!
//! Memory sizes include the extremes a wasm32 guest can have (0, 4 GiB - 1, exactly
//! 4 GiB, and sizes no guest has). Asserts:
//! - `check_range` accepts exactly the spans inside the memory (reference computed in
//!   128 bits), so an accepted span's last byte is always below the size, and rejects
//!   with `InvalidPointer` and a message naming the argument;
//! - `read`, `write` and `check_writable` accept a span iff it is empty or inside, never
//!   ask the memory for an unchecked span (a probe memory panics if they do), and a
//!   read returns exactly the bytes at the span;
//! - on a real `VecMemory`, a write changes exactly `[ptr, ptr + len)` to the data and a
//!   rejected write changes nothing.

use super::input::{span_fits, Input};
use skylark_abi::Status;
use skylark_core::memory::{check_range, GuestMemory, VecMemory};

const BACKING: usize = 4096;

/// Claims `size` bytes; hands out views only of spans the caller checked (panics
/// otherwise) and only up to [`BACKING`] bytes long (`None` beyond, as if unmapped).
struct Probe {
    size: u64,
    zeros: Vec<u8>,
}

impl GuestMemory for Probe {
    fn size(&self) -> u64 {
        self.size
    }

    fn slice_unchecked(&self, ptr: u32, len: u32) -> Option<&[u8]> {
        assert!(
            span_fits(self.size, ptr, len),
            "slice_unchecked({ptr}, {len}) on a memory of {} bytes",
            self.size
        );
        self.zeros.get(..len as usize)
    }

    fn slice_mut_unchecked(&mut self, ptr: u32, len: u32) -> Option<&mut [u8]> {
        assert!(
            span_fits(self.size, ptr, len),
            "slice_mut_unchecked({ptr}, {len}) on a memory of {} bytes",
            self.size
        );
        self.zeros.get_mut(..len as usize)
    }
}

fn size_from(inp: &mut Input) -> u64 {
    match inp.u8() % 7 {
        0 => u64::from(inp.u16()) % (BACKING as u64 + 1),
        1 => 1 << 32,
        2 => (1 << 32) - 1,
        3 => (1 << 32) + 1,
        4 => inp.u64(),
        5 => 0,
        _ => u64::from(inp.u32()),
    }
}

fn assert_invalid_pointer(e: &skylark_core::CallError, what: &str) {
    assert_eq!(e.status, Status::InvalidPointer, "{e}");
    assert!(
        e.message.contains(what),
        "message {:?} names no argument",
        e.message
    );
}

pub fn check(data: &[u8]) {
    let mut inp = Input::new(data);
    let size = size_from(&mut inp);
    let ptr = inp.ptr_like(size);
    let len = inp.ptr_like(size);
    let fits = span_fits(size, ptr, len);

    match check_range(size, ptr, len, "arg-x") {
        Ok(()) => {
            assert!(fits, "accepted [{ptr}, +{len}) in {size} bytes");
            if len > 0 {
                assert!(u64::from(ptr) + u64::from(len) - 1 < size);
            }
        }
        Err(e) => {
            assert!(!fits, "rejected [{ptr}, +{len}) in {size} bytes");
            assert_invalid_pointer(&e, "arg-x");
        }
    }

    let mut probe = Probe {
        size,
        zeros: vec![0; BACKING],
    };
    let backed = len as usize <= BACKING;
    match probe.read(ptr, len, "arg-r") {
        Ok(s) => {
            assert!(len == 0 || fits);
            assert_eq!(s.len(), len as usize);
        }
        Err(e) => {
            assert!(
                len != 0 && (!fits || !backed),
                "read of a valid span refused"
            );
            assert_invalid_pointer(&e, "arg-r");
        }
    }
    match probe.check_writable(ptr, len, "arg-c") {
        Ok(()) => assert!(len == 0 || fits),
        Err(e) => {
            assert!(len != 0 && !fits);
            assert_invalid_pointer(&e, "arg-c");
        }
    }
    let payload = inp.bytes(BACKING);
    let wlen = payload.len() as u32;
    match probe.write(ptr, payload, "arg-w") {
        Ok(()) => assert!(payload.is_empty() || span_fits(size, ptr, wlen)),
        Err(e) => {
            assert!(!payload.is_empty() && !span_fits(size, ptr, wlen));
            assert_invalid_pointer(&e, "arg-w");
        }
    }

    // A real memory: contents and write extent.
    if size <= BACKING as u64 {
        let pattern: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let mut m = VecMemory(pattern.clone());
        match m.read(ptr, len, "arg-r") {
            Ok(s) if len > 0 => assert_eq!(s, &pattern[ptr as usize..(ptr + len) as usize]),
            Ok(s) => assert!(s.is_empty()),
            Err(e) => {
                assert!(len != 0 && !fits);
                assert_invalid_pointer(&e, "arg-r");
            }
        }
        match m.write(ptr, payload, "arg-w") {
            Ok(()) => {
                let mut expect = pattern.clone();
                if !payload.is_empty() {
                    expect[ptr as usize..ptr as usize + payload.len()].copy_from_slice(payload);
                }
                assert_eq!(m.0, expect, "write touched bytes outside its span");
            }
            Err(e) => {
                assert!(!payload.is_empty() && !span_fits(size, ptr, wlen));
                assert_invalid_pointer(&e, "arg-w");
                assert_eq!(m.0, pattern, "a refused write changed memory");
            }
        }
    }
}
