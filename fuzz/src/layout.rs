//! Target `layout`: the fixed records passed through guest memory (`FieldRef`, 16 bytes;
//! `GetResult`, 8 bytes). Asserts that decoding reads four (two) little-endian `u32`
//! words in declaration order and that bytes -> record -> bytes and
//! record -> bytes -> record are identities.

use skylark_abi::layout::{FieldRef, GetResult};

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

pub fn check(data: &[u8]) {
    for chunk in data.chunks_exact(FieldRef::SIZE) {
        let mut raw = [0u8; FieldRef::SIZE];
        raw.copy_from_slice(chunk);
        let f = FieldRef::from_bytes(&raw);
        assert_eq!(
            [f.task_ptr, f.task_len, f.value_ptr, f.value_len],
            [word(&raw, 0), word(&raw, 4), word(&raw, 8), word(&raw, 12)]
        );
        assert_eq!(f.to_bytes(), raw);
        assert_eq!(FieldRef::from_bytes(&f.to_bytes()), f);
    }
    for chunk in data.chunks_exact(GetResult::SIZE) {
        let mut raw = [0u8; GetResult::SIZE];
        raw.copy_from_slice(chunk);
        let r = GetResult::from_bytes(&raw);
        assert_eq!([r.len, r.handle], [word(&raw, 0), word(&raw, 4)]);
        assert_eq!(r.to_bytes(), raw);
        assert_eq!(GetResult::from_bytes(&r.to_bytes()), r);
    }
}
