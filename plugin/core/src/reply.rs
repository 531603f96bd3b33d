//! What a `skylark_get_bundle` delivers into guest memory: the MessagePack encoding
//! (ABI.md, "Bundle encoding"), or the table layout (`skylark_abi::table`, get option
//! `layout = "table"`) written straight from the bundle as read, one copy of each value
//! and no encoding. A reply that does not fit the guest's buffer waits under a handle
//! (`pending`) in the same form, so the table layout is not built twice nor copied
//! into an intermediate buffer.

use crate::error::CallError;
use crate::fetch::Found;
use crate::memory::GuestMemory;
use skylark_abi::table::{self, FieldIn, Plan};
use skylark_abi::Status;

/// A result of `skylark_get_bundle`, ready to be written into guest memory.
#[derive(Debug)]
pub enum Reply {
    /// The MessagePack encoding.
    Encoded(Vec<u8>),
    /// The bundle, to be laid out as a table of `len` bytes when written.
    Table {
        chain: String,
        found: Found,
        len: usize,
    },
}

impl Reply {
    /// Length in bytes of what [`Reply::write`] writes.
    pub fn len(&self) -> usize {
        match self {
            Reply::Encoded(b) => b.len(),
            Reply::Table { len, .. } => *len,
        }
    }

    /// True if the reply is empty (never for a bundle).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the reply at `ptr` (`InvalidPointer` if it does not fit there).
    pub fn write(&self, mem: &mut dyn GuestMemory, ptr: u32) -> Result<(), CallError> {
        match self {
            Reply::Encoded(b) => mem.write(ptr, b, "result buffer"),
            Reply::Table { chain, found, .. } => {
                let plan = plan(chain, found)?;
                write_plan(mem, ptr, &plan)
            }
        }
    }
}

/// Checks `found` against `max_bundle_bytes` as [`crate::calls::encode`] does and
/// prepares its table layout.
pub fn table(max_bundle_bytes: u32, chain: &str, found: Found) -> Result<Reply, CallError> {
    let total: u64 = found
        .fields
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum();
    if total > u64::from(max_bundle_bytes) {
        return Err(CallError::new(
            Status::BundleTooLarge,
            format!(
                "bundle of chain {chain:?} holds {total} bytes; SKYLARK_MAX_BUNDLE_BYTES is {max_bundle_bytes}"
            ),
        ));
    }
    let len = plan(chain, &found)?.len;
    Ok(Reply::Table {
        chain: chain.to_string(),
        found,
        len,
    })
}

/// The layout of `found`: fields and placement sorted by name, a later duplicate winning
/// (as in the MessagePack encoding's maps); field names must be UTF-8.
fn plan<'a>(chain: &'a str, found: &'a Found) -> Result<Plan<'a>, CallError> {
    let mut fields: Vec<FieldIn<'a>> = Vec::with_capacity(found.fields.len());
    for (k, v) in &found.fields {
        if std::str::from_utf8(k).is_err() {
            return Err(CallError::new(
                Status::StoreError,
                format!("bundle of chain {chain:?} has a field name that is not UTF-8"),
            ));
        }
        fields.push((k, v, crate::keys::version(&found.versions, k)));
    }
    fields.reverse();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut placement: Vec<(&str, &str)> = found
        .placement
        .iter()
        .rev()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    placement.sort_by(|a, b| a.0.cmp(b.0));
    placement.dedup_by(|later, earlier| later.0 == earlier.0);
    table::plan(chain, &found.source, &fields, &placement)
        .map_err(|e| CallError::new(Status::BundleTooLarge, e.to_string()))
}

/// Writes `plan` at `ptr`: the range is checked once, then each piece is copied in.
fn write_plan(mem: &mut dyn GuestMemory, ptr: u32, plan: &Plan<'_>) -> Result<(), CallError> {
    let what = "result buffer";
    let len = u32::try_from(plan.len)
        .map_err(|_| CallError::new(Status::Internal, format!("{what}: write too large")))?;
    mem.check_writable(ptr, len, what)?;
    let dst = mem.slice_mut_unchecked(ptr, len).ok_or_else(|| {
        CallError::new(
            Status::InvalidPointer,
            format!("{what} [{ptr}, {ptr}+{len}) lies outside guest memory"),
        )
    })?;
    let head = dst
        .get_mut(..plan.head.len())
        .ok_or_else(|| overrun(what))?;
    head.copy_from_slice(&plan.head);
    for (off, bytes) in &plan.pieces {
        dst.get_mut(*off..*off + bytes.len())
            .ok_or_else(|| overrun(what))?
            .copy_from_slice(bytes);
    }
    Ok(())
}

fn overrun(what: &str) -> CallError {
    CallError::new(
        Status::Internal,
        format!("{what}: a piece of the bundle table lies beyond its length"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;
    use skylark_abi::table::View;
    use skylark_abi::wire::{Source, Tier};

    fn found() -> Found {
        let mut versions = crate::keys::Versions::new();
        versions.insert(b"b".to_vec(), 42);
        Found {
            fields: vec![
                (b"b".to_vec(), vec![1, 2, 3]),
                (b"a".to_vec(), b"first".to_vec()),
                (b"a".to_vec(), b"second".to_vec()),
            ],
            placement: vec![("b".into(), "n2".into()), ("a".into(), "n1".into())],
            versions,
            source: Source {
                tier: Tier::Global,
                node: "cloud".into(),
            },
        }
    }

    #[test]
    fn a_table_reply_is_written_in_place_sorted_with_later_duplicates_winning() {
        let r = table(1 << 20, "ch", found()).unwrap();
        let mut m = VecMemory(vec![0xee; 8 + r.len() + 8]);
        r.write(&mut m, 8).unwrap();
        assert_eq!(&m.0[..8], &[0xee; 8], "nothing written before the buffer");
        assert_eq!(&m.0[8 + r.len()..], &[0xee; 8], "nothing after it");
        let b = &m.0[8..8 + r.len()];
        let v = View::parse(b).unwrap();
        assert_eq!(&b[v.chain.clone()], b"ch");
        assert_eq!(v.source(b).tier, Tier::Global);
        let fields: Vec<(&[u8], &[u8], u64)> = v
            .fields
            .iter()
            .map(|f| (&b[f.name.clone()], &b[f.value.clone()], f.version))
            .collect();
        assert_eq!(
            fields,
            [
                (&b"a"[..], &b"second"[..], 0),
                (&b"b"[..], &[1u8, 2, 3][..], 42)
            ]
        );
        let placed: Vec<(&[u8], &[u8])> = v
            .placement
            .iter()
            .map(|(t, n)| (&b[t.clone()], &b[n.clone()]))
            .collect();
        assert_eq!(placed, [(&b"a"[..], &b"n1"[..]), (&b"b"[..], &b"n2"[..])]);
    }

    #[test]
    fn limits_and_bounds() {
        let e = table(10, "ch", found()).unwrap_err();
        assert_eq!(e.status, Status::BundleTooLarge);
        let r = table(1 << 20, "ch", found()).unwrap();
        let mut m = VecMemory(vec![0; r.len() - 1]);
        assert_eq!(
            r.write(&mut m, 0).unwrap_err().status,
            Status::InvalidPointer
        );
        assert!(m.0.iter().all(|b| *b == 0), "nothing written");
    }
}
