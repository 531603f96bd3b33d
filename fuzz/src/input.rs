//! Turns fuzzer bytes into values. Reading past the end yields zeros, so every input,
//! however short, decodes to some operation; [`Input::ptr_like`] shapes a `u32` like the
//! pointers and lengths a hostile guest passes (edges of memory, wrap-around, `i32`
//! sign boundary), which random words alone would rarely hit.

/// A cursor over fuzzer bytes.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A pointer or length for a memory of `size` bytes: a mode byte, then a word.
    /// Encode with [`ptr_raw`] to get an exact value back.
    pub fn ptr_like(&mut self, size: u64) -> u32 {
        let mode = self.u8() % 8;
        let v = self.u32();
        let size32 = u32::try_from(size).unwrap_or(u32::MAX);
        match mode {
            0 => v & 0xff,
            1 => (u64::from(v) % size.saturating_add(1)) as u32,
            2 => size32.saturating_sub(v % 33),
            3 => v,
            4 => u32::MAX - (v % 33),
            5 => 0x8000_0000u32.wrapping_add(v % 33).wrapping_sub(16),
            6 => size32.saturating_add(v % 33),
            _ => v % 4096,
        }
    }
}

/// The bytes [`Input::ptr_like`] decodes to exactly `v`.
pub fn ptr_raw(v: u32) -> [u8; 5] {
    let w = v.to_le_bytes();
    [3, w[0], w[1], w[2], w[3]]
}

/// Reference id rule, written from ABI.md independently of `skylark_abi::ids`:
/// 1 to 128 bytes from `A-Z a-z 0-9 . _ -`.
pub fn id_allowed_byte(b: u8) -> bool {
    matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-')
}

/// Reference: is `id` a valid chain or task id?
pub fn id_ok(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| id_allowed_byte(*b))
}

/// Reference bounds rule: does `[ptr, ptr + len)` lie in a memory of `size` bytes?
/// Computed in 128 bits, independently of the host's 64-bit check.
pub fn span_fits(size: u64, ptr: u32, len: u32) -> bool {
    u128::from(ptr) + u128::from(len) <= u128::from(size)
}

/// Reference read: the bytes a guest passes at `(ptr, len)`, `None` if outside `mem`.
/// A zero length is valid wherever it points.
pub fn span(mem: &[u8], ptr: u32, len: u32) -> Option<&[u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if !span_fits(mem.len() as u64, ptr, len) {
        return None;
    }
    Some(&mem[ptr as usize..ptr as usize + len as usize])
}
