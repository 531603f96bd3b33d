//! Fixed-layout little-endian structures passed through guest memory.
//!
//! wasm32 is little-endian and these are plain `u32` records, so a guest can pass a
//! `#[repr(C)]` array of them directly; the host decodes them from bytes with bounds checks.

/// One field of a multi-field put: where the task id and the value bytes are in guest
/// memory. Values stay where the guest has them; nothing is re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct FieldRef {
    pub task_ptr: u32,
    pub task_len: u32,
    pub value_ptr: u32,
    pub value_len: u32,
}

impl FieldRef {
    /// Size of one record in guest memory.
    pub const SIZE: usize = 16;

    /// Decodes one record from exactly [`Self::SIZE`] bytes.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        FieldRef {
            task_ptr: word(0),
            task_len: word(4),
            value_ptr: word(8),
            value_len: word(12),
        }
    }

    /// Encodes the record as guest memory holds it.
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        for (i, w) in [self.task_ptr, self.task_len, self.value_ptr, self.value_len]
            .into_iter()
            .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// What `skylark_get_bundle` and `skylark_take_result` write at `result_ptr`: the full
/// length of the encoded result and, when the buffer was too small, the handle under which
/// the host keeps it for `skylark_take_result` (0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct GetResult {
    pub len: u32,
    pub handle: u32,
}

impl GetResult {
    /// Size of the record in guest memory.
    pub const SIZE: usize = 8;

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        GetResult {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            handle: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[..4].copy_from_slice(&self.len.to_le_bytes());
        out[4..].copy_from_slice(&self.handle.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_ref_layout_is_four_le_words() {
        let f = FieldRef {
            task_ptr: 1,
            task_len: 0x0203,
            value_ptr: 0x0405_0607,
            value_len: u32::MAX,
        };
        let b = f.to_bytes();
        assert_eq!(&b[..4], &[1, 0, 0, 0]);
        assert_eq!(&b[4..8], &[3, 2, 0, 0]);
        assert_eq!(&b[8..12], &[7, 6, 5, 4]);
        assert_eq!(&b[12..], &[0xff; 4]);
        assert_eq!(FieldRef::from_bytes(&b), f);
        assert_eq!(std::mem::size_of::<FieldRef>(), FieldRef::SIZE);
    }

    #[test]
    fn get_result_round_trips() {
        let r = GetResult {
            len: 8 << 20,
            handle: 7,
        };
        assert_eq!(GetResult::from_bytes(&r.to_bytes()), r);
        assert_eq!(std::mem::size_of::<GetResult>(), GetResult::SIZE);
    }
}
