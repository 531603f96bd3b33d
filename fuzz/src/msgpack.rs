//! A small MessagePack reader and writer of our own, independent of rmp-serde, for the
//! reference model of the options (`options`) and for building well-formed blobs in
//! every encoding the format allows (`options_model`). Follows the MessagePack spec:
//! https://github.com/msgpack/msgpack/blob/master/spec.md

/// A MessagePack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    F32(f32),
    F64(f64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

/// Why a blob is not one well-formed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Ends inside a value.
    Truncated,
    /// The never-used marker 0xc1.
    Reserved,
    /// Nested deeper than the reader follows.
    TooDeep,
}

/// Deepest nesting [`parse`] follows.
pub const MAX_DEPTH: usize = 2000;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(ParseError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, ParseError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b)))
    }

    fn int(&mut self, n: usize) -> Result<i64, ParseError> {
        let u = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((u << shift) as i64) >> shift)
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > self.max_depth {
            return Err(ParseError::TooDeep);
        }
        let m = self.take(1)?[0];
        Ok(match m {
            0x00..=0x7f => Value::Int(i128::from(m)),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?.to_vec()),
            0xc0 => Value::Nil,
            0xc1 => return Err(ParseError::Reserved),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.uint(1 << (m - 0xc4))? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (m - 0xc7))? as usize;
                let t = self.int(1)? as i8;
                Value::Ext(t, self.take(n)?.to_vec())
            }
            0xca => Value::F32(f32::from_bits(self.uint(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(i128::from(self.uint(1 << (m - 0xcc))?)),
            0xd0..=0xd3 => Value::Int(i128::from(self.int(1 << (m - 0xd0))?)),
            0xd4..=0xd8 => {
                let t = self.int(1)? as i8;
                Value::Ext(t, self.take(1 << (m - 0xd4))?.to_vec())
            }
            0xd9..=0xdb => {
                let n = self.uint(1 << (m - 0xd9))? as usize;
                Value::Str(self.take(n)?.to_vec())
            }
            0xdc | 0xdd => {
                let n = self.uint(if m == 0xdc { 2 } else { 4 })? as usize;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.uint(if m == 0xde { 2 } else { 4 })? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i128::from(m as i8)),
        })
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, ParseError> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(v))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, ParseError> {
        let mut v = Vec::new();
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let x = self.value(depth + 1)?;
            v.push((k, x));
        }
        Ok(Value::Map(v))
    }
}

/// Reads one value from the start of `data`; returns it with the number of bytes it
/// takes and its nesting depth (a scalar is 0, `[[]]` is 2).
pub fn parse(data: &[u8]) -> Result<(Value, usize, usize), ParseError> {
    let mut r = Reader {
        data,
        pos: 0,
        max_depth: MAX_DEPTH,
    };
    let v = r.value(0)?;
    let depth = depth_of(&v);
    Ok((v, r.pos, depth))
}

fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        Value::Map(m) => {
            1 + m
                .iter()
                .map(|(k, x)| depth_of(k).max(depth_of(x)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Writes MessagePack, choosing among the encodings the spec allows for a value.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    fn be(&mut self, v: u64, n: usize) {
        self.out.extend(&v.to_be_bytes()[8 - n..]);
    }

    pub fn nil(&mut self) {
        self.out.push(0xc0);
    }

    pub fn bool(&mut self, b: bool) {
        self.out.push(if b { 0xc3 } else { 0xc2 });
    }

    /// A non-negative integer in the encoding `wide` picks among those that hold it
    /// (positive fixint, uint 8-64, or int 8-64 when it fits the signed range).
    pub fn uint(&mut self, v: u64, wide: u8) {
        let mut forms: Vec<(u8, usize)> = Vec::new();
        if v < 0x80 {
            forms.push((0, 0));
        }
        for (i, n) in [1usize, 2, 4, 8].into_iter().enumerate() {
            if n == 8 || v < 1u64 << (8 * n) {
                forms.push((0xcc + i as u8, n));
            }
            if n == 8 && v <= i64::MAX as u64 || n < 8 && v < 1u64 << (8 * n - 1) {
                forms.push((0xd0 + i as u8, n));
            }
        }
        let (m, n) = forms[usize::from(wide) % forms.len()];
        if n == 0 {
            self.out.push(v as u8);
        } else {
            self.out.push(m);
            self.be(v, n);
        }
    }

    /// A negative integer, in the smallest encoding.
    pub fn neg(&mut self, v: i64) {
        if v >= -32 {
            self.out.push(v as u8);
        } else {
            self.out.push(0xd3);
            self.be(v as u64, 8);
        }
    }

    pub fn f32(&mut self, v: f32) {
        self.out.push(0xca);
        self.be(u64::from(v.to_bits()), 4);
    }

    pub fn f64(&mut self, v: f64) {
        self.out.push(0xcb);
        self.be(v.to_bits(), 8);
    }

    fn header(&mut self, len: usize, fix: Option<(u8, usize)>, wide: &[u8], wide_pick: u8) {
        let mut forms: Vec<(u8, usize)> = Vec::new();
        if let Some((base, max)) = fix {
            if len <= max {
                forms.push((base, 0));
            }
        }
        for (i, m) in wide.iter().enumerate() {
            let n = [1usize, 2, 4][i + 3 - wide.len()];
            if (len as u64) < 1u64 << (8 * n) {
                forms.push((*m, n));
            }
        }
        let (m, n) = forms[usize::from(wide_pick) % forms.len()];
        if n == 0 {
            self.out.push(m | len as u8);
        } else {
            self.out.push(m);
            self.be(len as u64, n);
        }
    }

    /// A str (fixstr or str 8/16/32, picked by `wide`).
    pub fn str(&mut self, s: &[u8], wide: u8) {
        self.header(s.len(), Some((0xa0, 31)), &[0xd9, 0xda, 0xdb], wide);
        self.out.extend(s);
    }

    /// A bin (bin 8/16/32).
    pub fn bin(&mut self, s: &[u8], wide: u8) {
        self.header(s.len(), None, &[0xc4, 0xc5, 0xc6], wide);
        self.out.extend(s);
    }

    /// An array header (fixarray, array 16/32).
    pub fn array(&mut self, len: usize, wide: u8) {
        self.header(len, Some((0x90, 15)), &[0xdc, 0xdd], wide);
    }

    /// A map header (fixmap, map 16/32).
    pub fn map(&mut self, len: usize, wide: u8) {
        self.header(len, Some((0x80, 15)), &[0xde, 0xdf], wide);
    }

    /// An ext value (fixext 1 when it has one byte, else ext 8).
    pub fn ext(&mut self, t: i8, data: &[u8]) {
        if data.len() == 1 {
            self.out.extend([0xd4, t as u8, data[0]]);
        } else {
            self.out.extend([0xc7, data.len() as u8, t as u8]);
            self.out.extend(data);
        }
    }

    /// Any value, in encodings picked by `wide`.
    pub fn value(&mut self, v: &Value, wide: u8) {
        match v {
            Value::Nil => self.nil(),
            Value::Bool(b) => self.bool(*b),
            Value::Int(i) if *i >= 0 => self.uint(*i as u64, wide),
            Value::Int(i) => self.neg(*i as i64),
            Value::F32(f) => self.f32(*f),
            Value::F64(f) => self.f64(*f),
            Value::Str(s) => self.str(s, wide),
            Value::Bin(s) => self.bin(s, wide),
            Value::Array(a) => {
                self.array(a.len(), wide);
                for x in a {
                    self.value(x, wide.rotate_left(1));
                }
            }
            Value::Map(m) => {
                self.map(m.len(), wide);
                for (k, x) in m {
                    self.value(k, wide.rotate_left(1));
                    self.value(x, wide.rotate_left(2));
                }
            }
            Value::Ext(t, d) => self.ext(*t, &d[..d.len().min(255)]),
        }
    }
}
