//! The table layout of a bundle (ABI version 2, get option `layout = "table"`): a fixed
//! header, a table of fields (offsets, lengths, version) and a table of placement
//! entries, followed by the raw bytes. The host writes it once into guest memory from the
//! store's reply; a guest reads fields in place as borrowed slices, with no decoding
//! beyond the bounds checks of [`View::parse`]. ABI.md, "Bundle table layout", is the
//! same description for other languages.
//!
//! All numbers are little-endian; every offset counts from the start of the layout.

use crate::wire::{Source, Tier};

/// The first four bytes: no MessagePack bundle starts with them (a bundle is a map, whose
/// first byte is `0x80..=0x8f`, `0xde` or `0xdf`; `S` is `0x53`).
pub const MAGIC: [u8; 4] = *b"SKT1";

/// Size of the header: `magic[4]`, then the `u32`s `len`, `field_count`,
/// `placement_count`, `chain_off`, `chain_len`, `node_off`, `node_len`, `tier`
/// (0 local, 1 neighbour, 2 global) and `reserved` (0).
pub const HEADER_SIZE: usize = 40;

/// Size of one field record: the `u32`s `name_off`, `name_len`, `value_off`,
/// `value_len`, then the `u64` `version` (0: none).
pub const FIELD_SIZE: usize = 24;

/// Size of one placement record: the `u32`s `task_off`, `task_len`, `node_off`,
/// `node_len`.
pub const PLACEMENT_SIZE: usize = 16;

/// One field as the host lays it out: name, value, version (0: none).
pub type FieldIn<'a> = (&'a [u8], &'a [u8], u64);

/// Where each piece of a bundle goes: the header and tables (small, built here) at
/// offset 0, then the borrowed bytes each at its offset. The host copies the pieces
/// straight into guest memory ([`Plan::pieces`]); nothing of a value is copied twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Header, field table and placement table.
    pub head: Vec<u8>,
    /// `(offset, bytes)`: names, values, the chain, the node and placement strings.
    pub pieces: Vec<(usize, &'a [u8])>,
    /// Total length of the layout.
    pub len: usize,
}

/// The layout is too large for the ABI's 32-bit offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge(pub u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a bundle table of {} bytes exceeds 4 GiB", self.0)
    }
}

impl std::error::Error for TooLarge {}

fn tier_code(t: Tier) -> u32 {
    match t {
        Tier::Local => 0,
        Tier::Neighbour => 1,
        Tier::Global => 2,
    }
}

fn tier_of(code: u32) -> Option<Tier> {
    match code {
        0 => Some(Tier::Local),
        1 => Some(Tier::Neighbour),
        2 => Some(Tier::Global),
        _ => None,
    }
}

/// Lays out a bundle. `fields` and `placement` must each be sorted by name and free of
/// duplicates (the guest finds names by binary search); the caller guarantees both.
pub fn plan<'a>(
    chain: &'a str,
    source: &'a Source,
    fields: &[FieldIn<'a>],
    placement: &[(&'a str, &'a str)],
) -> Result<Plan<'a>, TooLarge> {
    let tables = HEADER_SIZE + fields.len() * FIELD_SIZE + placement.len() * PLACEMENT_SIZE;
    let mut pieces = Vec::with_capacity(2 + 2 * fields.len() + 2 * placement.len());
    let mut at = tables as u64;
    let mut put = |bytes: &'a [u8]| -> (u32, u32) {
        let off = at;
        at += bytes.len() as u64;
        pieces.push((off as usize, bytes));
        // Checked once `at` is final (below): every offset and length is at most `at`.
        (off as u32, bytes.len() as u32)
    };
    let chain_at = put(chain.as_bytes());
    let node_at = put(source.node.as_bytes());
    let mut field_recs = Vec::with_capacity(fields.len());
    for (name, value, version) in fields {
        field_recs.push((put(name), put(value), *version));
    }
    let mut placed_recs = Vec::with_capacity(placement.len());
    for (task, node) in placement {
        placed_recs.push((put(task.as_bytes()), put(node.as_bytes())));
    }
    if at > u64::from(u32::MAX) {
        return Err(TooLarge(at));
    }
    let mut head = Vec::with_capacity(tables);
    head.extend_from_slice(&MAGIC);
    for w in [
        at as u32,
        fields.len() as u32,
        placement.len() as u32,
        chain_at.0,
        chain_at.1,
        node_at.0,
        node_at.1,
        tier_code(source.tier),
        0,
    ] {
        head.extend_from_slice(&w.to_le_bytes());
    }
    for ((no, nl), (vo, vl), version) in field_recs {
        for w in [no, nl, vo, vl] {
            head.extend_from_slice(&w.to_le_bytes());
        }
        head.extend_from_slice(&version.to_le_bytes());
    }
    for ((to, tl), (no, nl)) in placed_recs {
        for w in [to, tl, no, nl] {
            head.extend_from_slice(&w.to_le_bytes());
        }
    }
    debug_assert_eq!(head.len(), tables);
    Ok(Plan {
        head,
        pieces,
        len: at as usize,
    })
}

impl Plan<'_> {
    /// The whole layout as one buffer (tests, tools; the host writes the pieces instead).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        out[..self.head.len()].copy_from_slice(&self.head);
        for (off, bytes) in &self.pieces {
            out[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
        out
    }
}

/// True if `bytes` starts as a table layout (else it is the MessagePack encoding).
pub fn is_table(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// A byte range of the layout.
pub type Span = std::ops::Range<usize>;

/// One field of a parsed layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAt {
    pub name: Span,
    pub value: Span,
    /// 0: the field has no version.
    pub version: u64,
}

/// A checked reading of a layout: every span lies inside the buffer and every name,
/// the chain and the node are UTF-8. Values are not looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub chain: Span,
    pub node: Span,
    pub tier: Tier,
    /// In the order of the table (ascending names, as the host writes them).
    pub fields: Vec<FieldAt>,
    /// `(task, node)` spans.
    pub placement: Vec<(Span, Span)>,
}

/// A layout that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid bundle table: {}", self.0)
    }
}

impl std::error::Error for Invalid {}

fn word(b: &[u8], at: usize) -> Result<u32, Invalid> {
    b.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| Invalid(format!("truncated at byte {at}")))
}

fn dword(b: &[u8], at: usize) -> Result<u64, Invalid> {
    b.get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| Invalid(format!("truncated at byte {at}")))
}

fn span(b: &[u8], off: u32, len: u32, what: &str) -> Result<Span, Invalid> {
    let (off, len) = (off as usize, len as usize);
    match off.checked_add(len) {
        Some(end) if end <= b.len() => Ok(off..end),
        _ => Err(Invalid(format!(
            "{what} [{off}, {off}+{len}) lies outside the {} bytes",
            b.len()
        ))),
    }
}

fn text(b: &[u8], s: &Span, what: &str) -> Result<(), Invalid> {
    std::str::from_utf8(&b[s.clone()])
        .map(drop)
        .map_err(|_| Invalid(format!("{what} is not UTF-8")))
}

impl View {
    /// Checks and reads the tables of `b` (linear in the number of fields and in the
    /// length of names, not of values).
    pub fn parse(b: &[u8]) -> Result<View, Invalid> {
        if !is_table(b) {
            return Err(Invalid("no magic".into()));
        }
        let len = word(b, 4)? as usize;
        if len != b.len() {
            return Err(Invalid(format!(
                "says {len} bytes, the buffer holds {}",
                b.len()
            )));
        }
        let (nf, np) = (word(b, 8)? as usize, word(b, 12)? as usize);
        let tables = nf
            .checked_mul(FIELD_SIZE)
            .and_then(|f| {
                np.checked_mul(PLACEMENT_SIZE)
                    .and_then(|p| f.checked_add(p))
            })
            .and_then(|t| t.checked_add(HEADER_SIZE))
            .filter(|t| *t <= b.len())
            .ok_or_else(|| Invalid(format!("{nf} fields and {np} placements do not fit")))?;
        let chain = span(b, word(b, 16)?, word(b, 20)?, "chain")?;
        let node = span(b, word(b, 24)?, word(b, 28)?, "node")?;
        text(b, &chain, "chain")?;
        text(b, &node, "node")?;
        let tier = word(b, 32)?;
        let tier = tier_of(tier).ok_or_else(|| Invalid(format!("unknown tier {tier}")))?;
        let mut fields = Vec::with_capacity(nf);
        for i in 0..nf {
            let at = HEADER_SIZE + i * FIELD_SIZE;
            let name = span(b, word(b, at)?, word(b, at + 4)?, "field name")?;
            let value = span(b, word(b, at + 8)?, word(b, at + 12)?, "field value")?;
            text(b, &name, "a field name")?;
            if let Some(prev) = fields.last() {
                let prev: &FieldAt = prev;
                if b[prev.name.clone()] >= b[name.clone()] {
                    return Err(Invalid(format!("field {i} is out of order")));
                }
            }
            fields.push(FieldAt {
                name,
                value,
                version: dword(b, at + 16)?,
            });
        }
        let mut placement = Vec::with_capacity(np);
        for i in 0..np {
            let at = HEADER_SIZE + nf * FIELD_SIZE + i * PLACEMENT_SIZE;
            let task = span(b, word(b, at)?, word(b, at + 4)?, "placement task")?;
            let node = span(b, word(b, at + 8)?, word(b, at + 12)?, "placement node")?;
            text(b, &task, "a placement task")?;
            text(b, &node, "a placement node")?;
            placement.push((task, node));
        }
        debug_assert!(tables <= b.len());
        Ok(View {
            chain,
            node,
            tier,
            fields,
            placement,
        })
    }

    /// The source as the layout names it.
    pub fn source(&self, b: &[u8]) -> Source {
        Source {
            tier: self.tier,
            node: String::from_utf8_lossy(&b[self.node.clone()]).into_owned(),
        }
    }

    /// The index of field `name` (binary search over the sorted table).
    pub fn find(&self, b: &[u8], name: &[u8]) -> Option<usize> {
        self.fields
            .binary_search_by(|f| b[f.name.clone()].cmp(name))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let src = Source {
            tier: Tier::Neighbour,
            node: "sat3".into(),
        };
        let fields: Vec<FieldIn> = vec![(b"a", b"xyz", 7), (b"b", b"", 0), (b"c", &[0, 255], 9)];
        let p = plan("c-1", &src, &fields, &[("a", "n1")]).unwrap();
        assert_eq!(p.len, p.to_vec().len());
        p.to_vec()
    }

    #[test]
    fn round_trips() {
        let b = sample();
        assert!(is_table(&b));
        let v = View::parse(&b).unwrap();
        assert_eq!(&b[v.chain.clone()], b"c-1");
        assert_eq!(v.source(&b).node, "sat3");
        assert_eq!(v.tier, Tier::Neighbour);
        assert_eq!(v.fields.len(), 3);
        assert_eq!(&b[v.fields[0].value.clone()], b"xyz");
        assert_eq!(v.fields[0].version, 7);
        assert_eq!(&b[v.fields[1].value.clone()], b"");
        assert_eq!(&b[v.fields[2].value.clone()], &[0, 255]);
        assert_eq!(v.find(&b, b"c"), Some(2));
        assert_eq!(v.find(&b, b"d"), None);
        let (t, n) = &v.placement[0];
        assert_eq!((&b[t.clone()], &b[n.clone()]), (&b"a"[..], &b"n1"[..]));
    }

    #[test]
    fn header_layout_is_as_documented() {
        let b = sample();
        assert_eq!(&b[..4], b"SKT1");
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 1);
        let first_value_off = u32::from_le_bytes(b[48..52].try_into().unwrap()) as usize;
        assert_eq!(&b[first_value_off..first_value_off + 3], b"xyz");
        assert_eq!(u64::from_le_bytes(b[56..64].try_into().unwrap()), 7);
    }

    #[test]
    fn refuses_every_broken_layout_without_panicking() {
        let b = sample();
        // Every truncation and every single-byte change of the tables parses or is
        // refused, never panics; a truncation is always refused (the length is wrong).
        for n in 0..b.len() {
            assert!(View::parse(&b[..n]).is_err(), "truncated to {n}");
        }
        let tables = HEADER_SIZE + 3 * FIELD_SIZE + PLACEMENT_SIZE;
        for i in 0..tables {
            for x in [0u8, 1, 0x7f, 0xff] {
                let mut c = b.clone();
                c[i] = x;
                let _ = View::parse(&c);
            }
        }
        let mut c = b.clone();
        c[8] = 0xff;
        c[9] = 0xff;
        c[10] = 0xff;
        c[11] = 0xff;
        assert!(View::parse(&c).is_err());
        assert!(!is_table(b"\x85\xa5chain"));
    }

    #[test]
    fn unsorted_fields_are_refused() {
        let src = Source::default();
        let fields: Vec<FieldIn> = vec![(b"b", b"1", 0), (b"a", b"2", 0)];
        let b = plan("c", &src, &fields, &[]).unwrap().to_vec();
        assert!(View::parse(&b).unwrap_err().0.contains("out of order"));
    }
}
