//! Bounds-checked access to a guest's linear memory.
//!
//! The plugin implements [`GuestMemory`] over WasmEdge's memory instance; unit tests use
//! [`VecMemory`]. Every pointer/length pair from a guest goes through [`GuestMemory::read`]
//! or [`GuestMemory::write`], which refuse anything outside the memory.

use crate::error::CallError;
use skylark_abi::Status;

/// A guest's linear memory.
pub trait GuestMemory {
    /// Current size in bytes.
    fn size(&self) -> u64;

    /// Raw view of `[ptr, ptr + len)`; only called after the range was checked against
    /// [`GuestMemory::size`].
    fn slice_unchecked(&self, ptr: u32, len: u32) -> Option<&[u8]>;

    /// Mutable raw view of `[ptr, ptr + len)`; only called after the range was checked.
    fn slice_mut_unchecked(&mut self, ptr: u32, len: u32) -> Option<&mut [u8]>;

    /// The bytes at `[ptr, ptr + len)`, or `InvalidPointer`. `what` names the argument.
    fn read(&self, ptr: u32, len: u32, what: &str) -> Result<&[u8], CallError> {
        if len == 0 {
            return Ok(&[]);
        }
        check_range(self.size(), ptr, len, what)?;
        self.slice_unchecked(ptr, len)
            .ok_or_else(|| out_of_bounds(self.size(), ptr, len, what))
    }

    /// Copies `data` to `ptr`, or `InvalidPointer` if it does not fit.
    fn write(&mut self, ptr: u32, data: &[u8], what: &str) -> Result<(), CallError> {
        if data.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(data.len())
            .map_err(|_| CallError::new(Status::Internal, format!("{what}: write too large")))?;
        let size = self.size();
        check_range(size, ptr, len, what)?;
        let dst = self
            .slice_mut_unchecked(ptr, len)
            .ok_or_else(|| out_of_bounds(size, ptr, len, what))?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Checks that `[ptr, ptr + len)` is writable without writing.
    fn check_writable(&self, ptr: u32, len: u32, what: &str) -> Result<(), CallError> {
        if len == 0 {
            return Ok(());
        }
        check_range(self.size(), ptr, len, what)
    }
}

/// Accepts `[ptr, ptr + len)` iff it lies inside a memory of `size` bytes (computed in
/// 64 bits, so no pointer/length pair can wrap around), else `InvalidPointer` naming
/// `what`. The one bounds rule behind [`GuestMemory::read`], [`GuestMemory::write`] and
/// [`GuestMemory::check_writable`]; public so that it can be fuzzed on its own.
pub fn check_range(size: u64, ptr: u32, len: u32, what: &str) -> Result<(), CallError> {
    if u64::from(ptr) + u64::from(len) > size {
        return Err(out_of_bounds(size, ptr, len, what));
    }
    Ok(())
}

fn out_of_bounds(size: u64, ptr: u32, len: u32, what: &str) -> CallError {
    CallError::new(
        Status::InvalidPointer,
        format!("{what} [{ptr}, {ptr}+{len}) lies outside guest memory of {size} bytes"),
    )
}

/// A `Vec`-backed memory for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct VecMemory(pub Vec<u8>);

impl GuestMemory for VecMemory {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn slice_unchecked(&self, ptr: u32, len: u32) -> Option<&[u8]> {
        self.0.get(ptr as usize..ptr as usize + len as usize)
    }

    fn slice_mut_unchecked(&mut self, ptr: u32, len: u32) -> Option<&mut [u8]> {
        self.0.get_mut(ptr as usize..ptr as usize + len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_outside() {
        let mut m = VecMemory(vec![0; 100]);
        m.0[10..13].copy_from_slice(b"abc");
        assert_eq!(m.read(10, 3, "x").unwrap(), b"abc");
        assert_eq!(m.read(97, 3, "x").unwrap().len(), 3);
        assert_eq!(
            m.read(98, 3, "x").unwrap_err().status,
            Status::InvalidPointer
        );
        assert_eq!(
            m.read(u32::MAX, 2, "x").unwrap_err().status,
            Status::InvalidPointer
        );
        assert_eq!(
            m.read(1, u32::MAX, "x").unwrap_err().status,
            Status::InvalidPointer
        );
        // Zero-length reads never fault, wherever they point.
        assert_eq!(m.read(u32::MAX, 0, "x").unwrap(), b"");
    }

    #[test]
    fn writes_inside_and_refuses_outside() {
        let mut m = VecMemory(vec![0; 16]);
        m.write(12, b"wxyz", "buf").unwrap();
        assert_eq!(&m.0[12..], b"wxyz");
        let e = m.write(13, b"wxyz", "buf").unwrap_err();
        assert_eq!(e.status, Status::InvalidPointer);
        assert!(e.message.contains("buf [13, 13+4)"), "{}", e.message);
        assert!(m.check_writable(0, 16, "b").is_ok());
        assert!(m.check_writable(1, 16, "b").is_err());
    }
}
